//! One proxied IMAP connection. Client commands and server responses stream through as bytes,
//! except: FETCHes that ask for message content (rewritten and answered from the shown
//! message), capability lists (what envelopd cannot keep consistent is hidden), and the few
//! commands envelopd answers itself (STARTTLS, COMPRESS). LOGIN and AUTHENTICATE pass through:
//! the server checks the password; envelopd keeps only the login name (for its cache key).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use certstore::CertStore;
use net::conn::Conn;
use net::target::TargetTls;
use smime::Identity;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

pub use crate::cache::Cache;
use crate::cache::{CacheKey, MailboxKey};
use crate::fetch::{self, FetchPlan};
use crate::frame::{literal_at_end, FrameError, Framer, Piece, Splitter};
use crate::present::{needs_presentation, present, Presentation};

/// The longest command or response line (literals excluded).
pub const MAX_LINE: usize = 64 * 1024;

/// The provider's IMAP server: host, port and transport security, as for SMTP.
pub type ImapTarget = net::target::Target;

/// A private key for decrypting, and the logins that may use it.
pub struct BoundKey {
    /// The identity's addresses.
    pub addresses: Vec<String>,
    /// Further provider logins allowed to use it (a shared practice mailbox's users).
    pub logins: Vec<String>,
    /// The key and its certificate.
    pub identity: Identity,
}

impl BoundKey {
    /// Whether a session logged in as `login` may decrypt with this key.
    pub fn usable_by(&self, login: &str) -> bool {
        certstore::login_may_use(&self.addresses, &self.logins, login)
    }
}

/// Everything the IMAP sessions share.
pub struct ImapContext {
    /// The provider's IMAP server.
    pub upstream: ImapTarget,
    /// The practice's keys with who may use them: a session decrypts only with the keys its
    /// login is entitled to ([`certstore::login_may_use`], the rule signing follows too).
    pub keys: Vec<BoundKey>,
    /// Trust anchors and certificates, shared with the SMTP side: certificates learnt from
    /// verified signed mail are added here and used for encrypting at once.
    pub store: Arc<std::sync::RwLock<CertStore>>,
    /// Where learnt certificates are also written (DER files), to survive a restart.
    pub harvest_dir: Option<std::path::PathBuf>,
    /// Shown messages.
    pub cache: Mutex<Cache>,
    /// The largest literal accepted from the server (a stored message).
    pub max_literal: u64,
    /// How long connecting and the TLS handshake may take.
    pub connect_timeout: Duration,
    /// How long a client may be silent (IDLE clients re-issue every 29 minutes).
    pub client_timeout: Duration,
    /// The practice's own encryption certificates, with the logins and addresses they are for:
    /// plaintext appended to Sent or Drafts is stored encrypted to them.
    pub own_certs: Vec<(Vec<String>, smime::Cert)>,
    /// Mailbox names (last hierarchy level, any case) whose appended mail is encrypted.
    pub encrypt_appends_to: Vec<String>,
    /// Connection limits of the listener.
    pub limits: net::conn::Limits,
    /// How long one command line may take to arrive (slowloris bound).
    pub command_timeout: Duration,
    /// Failed-login counting, shared with the SMTP listener.
    pub auth_throttle: Arc<net::conn::AuthThrottle>,
    /// Header protection for those copies (RFC 9788; the Subject hidden from the server);
    /// changed by a configuration reload.
    pub header_protection: std::sync::RwLock<smime::Protection>,
    /// TLS offered to mail programs (STARTTLS or implicit), if configured.
    pub client_tls: Option<net::target::ClientTls>,
}

/// The usual names of Sent and Drafts folders (Thunderbird, Outlook, Apple Mail, German
/// clients; `Entw&APw-rfe` is "Entwürfe" in IMAP's modified UTF-7).
pub const DEFAULT_ENCRYPTED_FOLDERS: &[&str] = &[
    "Sent",
    "Sent Items",
    "Sent Messages",
    "Sent Mail",
    "Drafts",
    "Gesendet",
    "Gesendete Elemente",
    "Gesendete Objekte",
    "Entw&APw-rfe",
];

/// A message the client is appending to a folder envelopd encrypts.
struct AppendCapture {
    /// The command line up to the literal's `{`.
    prefix: Vec<u8>,
    tag: String,
    left: u64,
    data: Vec<u8>,
    too_big: bool,
    cert: smime::Cert,
}

/// Accepts mail programs until `shutdown` turns true; one task per connection. IMAP sessions
/// hold no message in flight that a restart could lose, so they are closed at once (clients
/// reconnect).
pub async fn serve(
    listener: TcpListener,
    ctx: Arc<ImapContext>,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    let limits = net::conn::Limits {
        refusal: (!ctx.client_tls.as_ref().is_some_and(|t| t.implicit))
            .then_some(&b"* BYE envelopd: too many connections, try again later\r\n"[..]),
        ..ctx.limits.clone()
    };
    net::conn::serve_connections(
        listener,
        shutdown,
        "imap",
        Duration::ZERO,
        limits,
        move |stream, peer, _| run(stream, peer, ctx.clone()),
    )
    .await
}

struct Session {
    client: Conn,
    peer: std::net::SocketAddr,
    up: Conn,
    ctx: Arc<ImapContext>,
    framer: Framer,
    splitter: Splitter,
    pending: Option<FetchPlan>,
    /// The mailbox of the pending FETCH (so each response's lookup needs no new key).
    pending_box: Option<MailboxKey>,
    held: Vec<Vec<u8>>,
    login: Option<String>,
    /// A login name claimed by a LOGIN or AUTHENTICATE still waiting for the server's answer:
    /// it becomes `login` only on OK, so a failed attempt never lends its name (and that
    /// user's cached messages) to the session.
    claimed: Option<(String, Option<String>)>,
    mailbox: Option<String>,
    selecting: Option<(String, String)>,
    uidvalidity: Option<u32>,
    next_tag: u64,
    /// Client commands sent to the server and not yet answered.
    in_flight: usize,
    append: Option<AppendCapture>,
    /// Output for the client not yet written.
    out: Vec<u8>,
    /// The client sent LOGOUT.
    logged_out: bool,
    /// Lines from the client that are not commands: SASL responses after AUTHENTICATE (until
    /// its tagged answer) or the DONE that ends IDLE. They pass through uncounted.
    continuation: Option<Continuation>,
    /// The rest of a refused command with non-synchronizing literals (`{n+}`) is still
    /// arriving: it is dropped, never sent to the server.
    discarding: bool,
    /// A command spanning literals, collected (bounded by [`crate::command::MAX_NOTED`]) until
    /// its last line, so that its login or mailbox name is read by imap-codec from the whole
    /// command.
    assembling: Option<Vec<u8>>,
    /// The command being assembled outgrew the bound: it is passed on but names nobody.
    assembly_overflowed: bool,
}

/// What the client's next lines are, when they are not commands.
enum Continuation {
    /// AUTHENTICATE with this tag and mechanism; whether the login name is still to be read.
    Sasl {
        tag: String,
        mechanism: String,
        name_pending: bool,
    },
    /// IDLE: the next line is DONE.
    Idle,
}

async fn run(
    client: TcpStream,
    peer: std::net::SocketAddr,
    ctx: Arc<ImapContext>,
) -> std::io::Result<()> {
    let mut client = Conn::Plain(client);
    if let Some(tls) = ctx.client_tls.clone().filter(|t| t.implicit) {
        if !client.accept_tls(tls.config, ctx.connect_timeout).await {
            return Ok(());
        }
    }
    let o = net::observe::get();
    let (up, greeting, framer) = match connect(&ctx).await {
        Ok(x) => {
            o.upstream_ok("imap", ctx.upstream.describe());
            x
        }
        Err(why) => {
            o.upstream_error("imap", ctx.upstream.describe(), &why);
            tracing::warn!(reason = %why, "IMAP server not usable");
            let bye = format!("* BYE envelopd cannot reach the mail server: {why}\r\n");
            let _ = client.write_all(bye.as_bytes()).await;
            return Ok(());
        }
    };
    let mut s = Session {
        client,
        peer,
        up,
        ctx,
        framer,
        splitter: Splitter::new(MAX_LINE),
        pending: None,
        pending_box: None,
        held: Vec::new(),
        login: None,
        claimed: None,
        mailbox: None,
        selecting: None,
        uidvalidity: None,
        next_tag: 2,
        in_flight: 0,
        append: None,
        out: Vec::new(),
        logged_out: false,
        continuation: None,
        discarding: false,
        assembling: None,
        assembly_overflowed: false,
    };
    let greeting = s.caps(&greeting);
    s.send_client(&greeting).await?;
    let result = s.pump().await;
    let _ = s.client.shutdown().await;
    result
}

/// Connects to the IMAP server as a session would (TLS, certificate check, greeting) and
/// returns the greeting a mail program would see; for `envelopd check`.
pub async fn probe(ctx: &ImapContext) -> Result<String, String> {
    let (mut up, greeting, _) = connect(ctx).await?;
    let _ = up.write_all(b"envelopd9 LOGOUT\r\n").await;
    let _ = up.flush().await;
    Ok(String::from_utf8_lossy(&greeting).trim().to_string())
}

/// Connects (with TLS as configured) and returns the connection, the greeting for the client
/// and the framer holding anything the server sent after it.
async fn connect(ctx: &ImapContext) -> Result<(Conn, Vec<u8>, Framer), String> {
    let t = &ctx.upstream;
    let tcp = timeout(
        ctx.connect_timeout,
        TcpStream::connect((t.host.as_str(), t.port)),
    )
    .await
    .map_err(|_| "connection timed out".to_string())?
    .map_err(|e| e.to_string())?;
    let _ = tcp.set_nodelay(true);
    let mut up = Conn::Plain(tcp);
    let name = rustls_pki_types::ServerName::try_from(t.host.clone())
        .map_err(|_| format!("{} is not a valid TLS server name", t.host))?;
    if let TargetTls::Implicit(cfg) = &t.tls {
        timeout(
            ctx.connect_timeout,
            up.upgrade_client(cfg.clone(), name.clone()),
        )
        .await
        .map_err(|_| "TLS handshake timed out".to_string())?
        .map_err(|e| format!("TLS with the mail server failed: {e}"))?;
    }
    let mut framer = Framer::new(MAX_LINE, ctx.max_literal);
    let greeting = read_message(&mut up, &mut framer, ctx.connect_timeout).await?;
    if !greeting.starts_with(b"* OK") && !greeting.starts_with(b"* PREAUTH") {
        return Err(format!(
            "the server refused: {}",
            String::from_utf8_lossy(&greeting).trim()
        ));
    }
    if let TargetTls::Starttls(cfg) = &t.tls {
        up.write_all(b"envelopd0 STARTTLS\r\n")
            .await
            .map_err(|e| e.to_string())?;
        up.flush().await.map_err(|e| e.to_string())?;
        loop {
            let m = read_message(&mut up, &mut framer, ctx.connect_timeout).await?;
            if m.starts_with(b"envelopd0 ") {
                if !m.starts_with(b"envelopd0 OK") {
                    return Err(
                        "the server refused STARTTLS; envelopd reads no mail without TLS".into(),
                    );
                }
                break;
            }
        }
        if framer.has_buffered() {
            return Err("the server sent data before the TLS handshake".into());
        }
        timeout(ctx.connect_timeout, up.upgrade_client(cfg.clone(), name))
            .await
            .map_err(|_| "TLS handshake timed out".to_string())?
            .map_err(|e| format!("TLS with the mail server failed: {e}"))?;
        // IMAP has no second greeting after STARTTLS: ask for the capabilities and greet the
        // client with them.
        up.write_all(b"envelopd1 CAPABILITY\r\n")
            .await
            .map_err(|e| e.to_string())?;
        up.flush().await.map_err(|e| e.to_string())?;
        let mut caps = String::new();
        loop {
            let m = read_message(&mut up, &mut framer, ctx.connect_timeout).await?;
            if let Some(rest) = m.strip_prefix(b"* CAPABILITY ") {
                caps = String::from_utf8_lossy(rest).trim().to_string();
            }
            if m.starts_with(b"envelopd1 ") {
                break;
            }
        }
        let greeting = format!(
            "* OK [CAPABILITY {}] envelopd ready\r\n",
            filter_tokens(&caps)
        );
        return Ok((up, greeting.into_bytes(), framer));
    }
    Ok((up, filter_capabilities(&greeting), framer))
}

async fn read_message(
    up: &mut Conn,
    framer: &mut Framer,
    limit: Duration,
) -> Result<Vec<u8>, String> {
    loop {
        match framer.next_message() {
            Ok(Some(m)) => return Ok(m),
            Ok(None) => {}
            Err(e) => return Err(format!("the server sent {e}")),
        }
        let mut chunk = [0u8; 16384];
        let n = timeout(limit, up.read(&mut chunk))
            .await
            .map_err(|_| "the server did not answer in time".to_string())?
            .map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("the server closed the connection".into());
        }
        framer.push(&chunk[..n]);
    }
}

impl Framer {
    /// True when bytes after the last complete message are buffered.
    pub fn has_buffered(&self) -> bool {
        self.buffered() > 0
    }
}

/// Whether a capability may be shown to the client. Hidden: what would show or search
/// ciphertext, or change framing envelopd relies on (COMPRESS, BINARY, CATENATE, URLAUTH,
/// URL-PARTIAL, PREVIEW, SNIPPET, NOTIFY, OBJECTID, SAVEDATE, UTF8=, IMAP4rev2, STARTTLS and
/// LOGINDISABLED, since envelopd itself talks TLS to the server), and the SEARCH variants whose
/// BODY/TEXT keys would silently miss encrypted mail (ESEARCH, SEARCHRES, CONTEXT, SORT, THREAD).
pub fn keep_capability(cap: &str) -> bool {
    let c = cap.to_ascii_uppercase();
    let hidden_prefixes = [
        "COMPRESS",
        "BINARY",
        "CATENATE",
        "URLAUTH",
        "URL-PARTIAL",
        "PREVIEW",
        "SNIPPET",
        "NOTIFY",
        "OBJECTID",
        "SAVEDATE",
        "UTF8=",
        "IMAP4REV2",
        "STARTTLS",
        "LOGINDISABLED",
        "MULTIAPPEND",
        "SEARCH=FUZZY",
        // Search variants envelopd does not answer for encrypted mail: clients fall back to
        // plain SEARCH, which it does answer.
        "ESEARCH",
        "SEARCHRES",
        "CONTEXT=",
        "SORT",
        "ESORT",
        "THREAD=",
        "X-",
        "XAPPLE",
    ];
    !hidden_prefixes.iter().any(|p| c.starts_with(p))
}

fn filter_tokens(list: &str) -> String {
    list.split_ascii_whitespace()
        .filter(|c| keep_capability(c))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Removes hidden capabilities from a `* CAPABILITY` response or a `[CAPABILITY ...]` code.
pub fn filter_capabilities(message: &[u8]) -> Vec<u8> {
    filter_capabilities_with(message, &[])
}

/// Like [`filter_capabilities`], adding envelopd's own capabilities (STARTTLS, LOGINDISABLED).
pub fn filter_capabilities_with(message: &[u8], extra: &[&str]) -> Vec<u8> {
    let text = String::from_utf8_lossy(message);
    let with = |list: &str| {
        let mut t = filter_tokens(list);
        for e in extra {
            t.push(' ');
            t.push_str(e);
        }
        t
    };
    if let Some(rest) = text.strip_prefix("* CAPABILITY ") {
        return format!("* CAPABILITY {}\r\n", with(rest.trim_end())).into_bytes();
    }
    if let Some(start) = text.find("[CAPABILITY ") {
        if let Some(len) = text[start..].find(']') {
            let inner = &text[start + "[CAPABILITY ".len()..start + len];
            let mut out = text[..start].to_string();
            out.push_str(&format!("[CAPABILITY {}]", with(inner)));
            out.push_str(&text[start + len + 1..]);
            return out.into_bytes();
        }
    }
    message.to_vec()
}

fn tag_of(message: &[u8]) -> &[u8] {
    let end = memchr::memchr(b' ', message).unwrap_or(message.len());
    &message[..end]
}

/// The first words of a command line, upper-cased: (tag, name, next word).
fn command_words(line: &[u8]) -> (String, String, String) {
    let text = String::from_utf8_lossy(line);
    let mut w = text.split_ascii_whitespace();
    let tag = w.next().unwrap_or("").to_string();
    let name = w.next().unwrap_or("").to_ascii_uppercase();
    let next = w.next().unwrap_or("").to_string();
    (tag, name, next)
}

impl Session {
    async fn send_client(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.queue_client(bytes);
        self.flush_client().await
    }

    /// Collects output for the client; [`Self::flush_client`] sends it in one write (a folder
    /// listing is a thousand small responses: one syscall each would dominate).
    fn queue_client(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
    }

    async fn flush_client(&mut self) -> std::io::Result<()> {
        if !self.out.is_empty() {
            let out = std::mem::take(&mut self.out);
            // A mail program that stops reading in the middle of a large FETCH is dropped after
            // one command timeout without progress, not held (with its Dovecot connection)
            // forever; a slow one that keeps reading gets all of it.
            self.client.send_all(&out, self.ctx.command_timeout).await?;
            self.out = out;
            self.out.clear();
        }
        Ok(())
    }

    async fn send_server(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.up.send_all(bytes, self.ctx.command_timeout).await
    }

    async fn bye(&mut self, why: &str) -> std::io::Result<()> {
        tracing::warn!(reason = why, "closing the session");
        let line = format!("* BYE envelopd: {why}\r\n");
        self.send_client(line.as_bytes()).await
    }

    async fn pump(&mut self) -> std::io::Result<()> {
        let mut cbuf = vec![0u8; 16384];
        let mut sbuf = vec![0u8; 65536];
        // A command line must arrive whole within command_timeout, however slowly its bytes
        // trickle in (slowloris); an idle client gets the autologout time.
        let mut partial_since: Option<std::time::Instant> = None;
        loop {
            let client_open = self.pending.is_none();
            let wait = match partial_since {
                Some(t) => self.ctx.command_timeout.saturating_sub(t.elapsed()),
                None => self.ctx.client_timeout,
            };
            tokio::select! {
                r = timeout(wait, self.client.read(&mut cbuf)), if client_open => {
                    let n = match r {
                        Ok(r) => r?,
                        Err(_) if partial_since.is_some() => {
                            return self.bye("a command line took too long to arrive").await
                        }
                        Err(_) => return self.bye("autologout: no command for too long").await,
                    };
                    if n == 0 {
                        return Ok(());
                    }
                    self.splitter.push(&cbuf[..n]);
                    if let Err(e) = self.client_pieces().await? {
                        return self.bye(&format!("the mail program sent {e}")).await;
                    }
                    partial_since = if self.splitter.partial_line() {
                        partial_since.or_else(|| Some(std::time::Instant::now()))
                    } else {
                        None
                    };
                }
                r = self.up.read(&mut sbuf) => {
                    let n = r?;
                    if n == 0 {
                        if self.logged_out {
                            // The normal end: the server said BYE to LOGOUT and closed.
                            self.flush_client().await?;
                            return Ok(());
                        }
                        return self.bye("the mail server closed the connection").await;
                    }
                    self.framer.push(&sbuf[..n]);
                    loop {
                        match self.framer.next_message() {
                            Ok(Some(m)) => self.server_message(m).await?,
                            Ok(None) => break,
                            Err(e) => {
                                self.flush_client().await?;
                                return self.bye(&format!("the mail server sent {e}")).await;
                            }
                        }
                    }
                    self.flush_client().await?;
                    if self.pending.is_none() {
                        // Commands the client sent while a FETCH was being answered.
                        if let Err(e) = self.client_pieces().await? {
                            return self.bye(&format!("the mail program sent {e}")).await;
                        }
                    }
                }
            }
        }
    }

    /// The capability list as this client may see it: hidden ones removed; STARTTLS while it can
    /// still be used; LOGINDISABLED off loopback until TLS protects the connection.
    fn caps(&self, m: &[u8]) -> Vec<u8> {
        let mut extra = Vec::new();
        if !self.client.is_tls() && self.ctx.client_tls.as_ref().is_some_and(|t| !t.implicit) {
            extra.push("STARTTLS");
        }
        if !self.login_allowed() {
            extra.push("LOGINDISABLED");
        }
        filter_capabilities_with(m, &extra)
    }

    /// Passwords cross the network only under TLS: in the clear only from this machine.
    fn login_allowed(&self) -> bool {
        self.client.is_tls() || self.peer.ip().is_loopback()
    }

    /// Client STARTTLS (RFC 9051 §6.2.1): OK, then the handshake; plaintext sent after the
    /// command is discarded, not executed under TLS.
    async fn client_starttls(&mut self, tag: &str) -> std::io::Result<bool> {
        let Some(tls) = self
            .ctx
            .client_tls
            .clone()
            .filter(|t| !t.implicit && !self.client.is_tls())
        else {
            let r = format!("{tag} NO TLS is not available here\r\n");
            self.send_client(r.as_bytes()).await?;
            return Ok(true);
        };
        let r = format!("{tag} OK Begin TLS negotiation now\r\n");
        self.send_client(r.as_bytes()).await?;
        self.splitter = Splitter::new(MAX_LINE);
        Ok(self
            .client
            .accept_tls(tls.config, self.ctx.connect_timeout)
            .await)
    }

    /// Forwards buffered client pieces until a FETCH needs its answer first.
    async fn client_pieces(&mut self) -> std::io::Result<Result<(), FrameError>> {
        while self.pending.is_none() {
            let piece = match self.splitter.next_piece() {
                Ok(Some(p)) => p,
                Ok(None) => break,
                Err(e) => return Ok(Err(e)),
            };
            if self.append.is_some() {
                self.append_piece(piece).await?;
                continue;
            }
            if let (Some(_), Piece::Line { bytes, .. }) = (&self.continuation, &piece) {
                self.continuation_line(bytes);
                self.send_server(bytes).await?;
                continue;
            }
            if self.discarding {
                match &piece {
                    Piece::Literal(_) => continue,
                    Piece::Line {
                        bytes,
                        first: false,
                    } => {
                        self.discarding = literal_at_end(bytes).is_some();
                        continue;
                    }
                    Piece::Line { first: true, .. } => self.discarding = false,
                }
            }
            match piece {
                Piece::Line { bytes, first: true } if literal_at_end(&bytes).is_none() => {
                    self.command(bytes).await?;
                }
                Piece::Line { bytes, first: true } if self.refuse_literal_login(&bytes).await? => {}
                Piece::Line { bytes, first: true } if self.start_append(&bytes).await? => {}
                Piece::Line { bytes, first } => {
                    if first {
                        self.in_flight += 1;
                        self.assembling = Some(Vec::new());
                        self.assembly_overflowed = false;
                    }
                    self.assemble(&bytes);
                    if literal_at_end(&bytes).is_none() {
                        // The command's last line: what it means, from the whole of it.
                        let whole = self.assembling.take();
                        if let (Some(whole), false) = (whole, self.assembly_overflowed) {
                            self.note_command(&whole);
                        }
                    }
                    self.send_server(&bytes).await?;
                }
                Piece::Literal(bytes) => {
                    self.assemble(&bytes);
                    self.send_server(&bytes).await?
                }
            }
        }
        Ok(Ok(()))
    }

    /// Adds a piece of a multi-line command to the one being assembled, within the bound.
    fn assemble(&mut self, bytes: &[u8]) {
        if let Some(buf) = self.assembling.as_mut() {
            if buf.len() + bytes.len() > crate::command::MAX_NOTED {
                // Too long to be a name worth keeping: the command is passed on, and names
                // nobody (no cache, no keys for a login that cannot be read). Nothing of it is
                // parsed later: a literal's bytes must never pass for a command of their own.
                buf.clear();
                self.assembly_overflowed = true;
            } else if !self.assembly_overflowed {
                buf.extend_from_slice(bytes);
            }
        }
    }

    /// Why this session may not log in now (cleartext off this machine, or too many failed
    /// logins), as the tagged answer for `tag`; `user` is the claimed name, when known.
    fn login_refusal(&self, tag: &str, user: Option<&str>) -> Option<String> {
        if !self.login_allowed() {
            return Some(format!("{tag} NO [PRIVACYREQUIRED] use STARTTLS first: passwords do not cross the network in the clear\r\n"));
        }
        let wait = self.ctx.auth_throttle.blocked(self.peer.ip(), user)?;
        tracing::warn!(peer = %self.peer, "login refused: too many failed logins");
        Some(format!(
            "{tag} NO [UNAVAILABLE] too many failed logins; try again in {} minutes\r\n",
            wait.as_secs() / 60 + 1
        ))
    }

    /// LOGIN or AUTHENTICATE whose name or password comes as a literal gets the same checks as
    /// the one-line form, before its `+`: otherwise a literal would be a way around the
    /// cleartext rule and the failed-login lock. True when the command was refused.
    async fn refuse_literal_login(&mut self, line: &[u8]) -> std::io::Result<bool> {
        let (tag, name, _) = command_words(line);
        if !matches!(name.as_str(), "LOGIN" | "AUTHENTICATE") {
            return Ok(false);
        }
        let user = (name == "LOGIN")
            .then(|| crate::command::login_before_literal(line))
            .flatten();
        let Some(refusal) = self.login_refusal(&tag, user.as_deref()) else {
            return Ok(false);
        };
        self.send_client(refusal.as_bytes()).await?;
        let open = memchr::memrchr(b'{', line).expect("a literal marker");
        if line[open..].contains(&b'+') {
            // LITERAL+: the data is on its way regardless; drop it and the rest of the command.
            self.discarding = true;
        } else {
            self.splitter.cancel_literal();
        }
        Ok(true)
    }

    /// The keys this session's login may decrypt with (none before a login).
    fn keys(&self) -> Vec<&Identity> {
        let Some(login) = self.login.as_deref() else {
            return Vec::new();
        };
        self.ctx
            .keys
            .iter()
            .filter(|k| k.usable_by(login))
            .map(|k| &k.identity)
            .collect()
    }

    /// The own encryption certificate for this session's login, if it has one.
    fn own_cert(&self) -> Option<smime::Cert> {
        let login = self.login.as_deref()?;
        self.ctx
            .own_certs
            .iter()
            // The names are the identity's addresses and logins together; as `logins` they
            // match by the address rule or as a user name in any ASCII case.
            .find(|(names, _)| certstore::login_may_use(&[], names, login))
            .map(|(_, c)| c.clone())
    }

    /// Starts capturing `APPEND <Sent or Drafts> ... {n}` so the message can be stored
    /// encrypted; false when the command is not such an APPEND (it then passes unchanged).
    async fn start_append(&mut self, line: &[u8]) -> std::io::Result<bool> {
        let (tag, name, _) = command_words(line);
        if name != "APPEND" {
            return Ok(false);
        }
        let Some(mailbox) = crate::command::append_mailbox(line) else {
            return Ok(false);
        };
        let leaf = mailbox
            .rsplit(['/', '.'])
            .next()
            .unwrap_or(&mailbox)
            .to_ascii_lowercase();
        if !self
            .ctx
            .encrypt_appends_to
            .iter()
            .any(|f| f.to_ascii_lowercase() == leaf)
        {
            return Ok(false);
        }
        let Some(cert) = self.own_cert() else {
            return Ok(false);
        };
        let n = literal_at_end(line).expect("checked by the caller");
        let open = memchr::memrchr(b'{', line).expect("a literal marker");
        let sync = !line[open..].contains(&b'+');
        let too_big = n > self.ctx.max_literal / 2;
        if too_big && sync {
            // The client waits for "+" before sending the literal: refusing now costs nothing.
            let r = format!("{tag} NO [TOOBIG] the message is too big for envelopd\r\n");
            self.send_client(r.as_bytes()).await?;
            self.splitter.cancel_literal();
            return Ok(true);
        }
        if sync {
            self.send_client(b"+ Ready for literal data\r\n").await?;
        }
        self.append = Some(AppendCapture {
            prefix: line[..open].to_vec(),
            tag,
            left: n,
            data: Vec::with_capacity(if too_big { 0 } else { n as usize }),
            too_big,
            cert,
        });
        Ok(true)
    }

    async fn append_piece(&mut self, piece: Piece) -> std::io::Result<()> {
        let cap = self.append.as_mut().expect("capturing");
        match piece {
            Piece::Literal(bytes) => {
                cap.left = cap.left.saturating_sub(bytes.len() as u64);
                if !cap.too_big {
                    cap.data.extend_from_slice(&bytes);
                }
                Ok(())
            }
            Piece::Line { bytes, .. } => {
                let cap = self.append.take().expect("capturing");
                if bytes != b"\r\n" && bytes != b"\n" {
                    // MULTIAPPEND (more messages in one command) is hidden; a client that tries
                    // it anyway gets a clear refusal for the whole command.
                    let r = format!(
                        "{} NO envelopd stores one message per APPEND here\r\n",
                        cap.tag
                    );
                    if literal_at_end(&bytes).is_some() {
                        self.splitter.cancel_literal();
                    }
                    return self.send_client(r.as_bytes()).await;
                }
                if cap.too_big {
                    let r = format!(
                        "{} NO [TOOBIG] the message is too big for envelopd\r\n",
                        cap.tag
                    );
                    return self.send_client(r.as_bytes()).await;
                }
                self.finish_append(cap).await
            }
        }
    }

    /// Stores the captured message encrypted to the user's own certificate (unless it already is
    /// S/MIME), with the client's tag, so the server's answer (APPENDUID …) reaches the client.
    async fn finish_append(&mut self, cap: AppendCapture) -> std::io::Result<()> {
        let message = if smime::message::kind(&cap.data) == smime::message::Kind::Plain {
            let opts = smime::EncryptOptions::default();
            let encrypted = smime::Prepared::own_copy(
                &cap.data,
                *self
                    .ctx
                    .header_protection
                    .read()
                    .unwrap_or_else(|e| e.into_inner()),
            )
            .and_then(|p| p.encrypt(std::slice::from_ref(&cap.cert), &opts));
            match encrypted {
                Ok(m) => {
                    tracing::info!(
                        size = cap.data.len(),
                        "appended message stored encrypted to the own certificate"
                    );
                    m
                }
                Err(e) => {
                    let r = format!(
                        "{} NO envelopd could not encrypt the message: {e}\r\n",
                        cap.tag
                    );
                    return self.send_client(r.as_bytes()).await;
                }
            }
        } else {
            cap.data
        };
        self.quiesce().await?;
        let mut line = cap.prefix;
        line.extend_from_slice(format!("{{{}}}\r\n", message.len()).as_bytes());
        self.send_server(&line).await?;
        loop {
            let m = read_message(&mut self.up, &mut self.framer, Duration::from_secs(300))
                .await
                .map_err(std::io::Error::other)?;
            if m.starts_with(b"+") {
                break;
            }
            if tag_of(&m) == cap.tag.as_bytes() {
                // Refused before the literal (quota, no such folder): that is the answer.
                return self.send_client(&m).await;
            }
            let c = self.caps(&m);
            self.send_client(&c).await?;
        }
        self.in_flight += 1;
        let mut data = message;
        data.extend_from_slice(b"\r\n");
        self.send_server(&data).await
    }

    /// Remembers what a whole command (literals included) means for the session: the login
    /// name claimed, the mailbox selected, a SASL exchange or IDLE starting. Read by imap-codec;
    /// a command it cannot parse claims nothing (no cache, no keys), whatever the server makes
    /// of it.
    fn note_command(&mut self, command: &[u8]) {
        use crate::command::Meaning;
        let Some((tag, meaning)) = crate::command::parse(command) else {
            return;
        };
        match meaning {
            Meaning::Login(name) => self.claimed = Some((tag, Some(name))),
            Meaning::Logout => self.logged_out = true,
            Meaning::Select(mailbox) => {
                self.selecting = Some((tag, mailbox));
                self.mailbox = None;
                self.uidvalidity = None;
            }
            Meaning::Authenticate { mechanism, initial } => {
                // The login name comes from the initial response (SASL-IR) or the first
                // response line; the password is never kept.
                let name = initial
                    .as_deref()
                    .and_then(|ir| net::login::sasl_name(&mechanism, ir));
                self.claimed = Some((tag.clone(), name));
                self.continuation = Some(Continuation::Sasl {
                    tag,
                    mechanism,
                    name_pending: initial.is_none(),
                });
            }
            Meaning::Idle => self.continuation = Some(Continuation::Idle),
            Meaning::Other => {}
        }
    }

    /// A non-command line from the client (SASL response or DONE): what it tells envelopd.
    fn continuation_line(&mut self, line: &[u8]) {
        match &mut self.continuation {
            Some(Continuation::Sasl {
                mechanism,
                name_pending,
                ..
            }) if *name_pending => {
                let text = String::from_utf8_lossy(line);
                let name = sasl_login(mechanism, text.trim().as_bytes());
                if let Some((_, claimed)) = self.claimed.as_mut() {
                    *claimed = name;
                }
                *name_pending = false;
            }
            Some(Continuation::Sasl { .. }) => {}
            Some(Continuation::Idle) => self.continuation = None,
            None => {}
        }
    }

    async fn command(&mut self, line: Vec<u8>) -> std::io::Result<()> {
        let (tag, name, next) = command_words(&line);
        let is_fetch = name == "FETCH" || (name == "UID" && next.eq_ignore_ascii_case("FETCH"));
        if is_fetch {
            // In a mailbox envelopd has seen, it knows which messages it shows in its form and
            // asks the server for nothing more than the client does (plus the UID).
            let known = self
                .mailbox_key()
                .is_some_and(|k| self.ctx.cache.lock().is_ok_and(|c| c.knows(&k)));
            if let Some((rewritten, plan)) = fetch::plan_with(&line, !known) {
                self.pending = Some(plan);
                // Taken from the first answer: a SELECT still in flight may change it.
                self.pending_box = None;
                self.held.clear();
                self.in_flight += 1;
                return self.send_server(&rewritten).await;
            }
        }
        let is_search = name == "SEARCH" || (name == "UID" && next.eq_ignore_ascii_case("SEARCH"));
        if is_search && self.mailbox.is_some() {
            if let Some(plan) = crate::search::plan(&line) {
                return self.search(plan).await;
            }
        }
        if matches!(name.as_str(), "LOGIN" | "AUTHENTICATE") {
            let user = match crate::command::parse(&line) {
                Some((_, crate::command::Meaning::Login(n))) => Some(n),
                Some((_, crate::command::Meaning::Authenticate { mechanism, initial })) => {
                    initial.and_then(|ir| net::login::sasl_name(&mechanism, &ir))
                }
                _ => None,
            };
            if let Some(r) = self.login_refusal(&tag, user.as_deref()) {
                return self.send_client(r.as_bytes()).await;
            }
        }
        match name.as_str() {
            "STARTTLS" => {
                if !self.client_starttls(&tag).await? {
                    return Err(std::io::Error::other("TLS handshake failed"));
                }
                return Ok(());
            }
            "COMPRESS" => {
                let r = format!("{tag} NO COMPRESS is not available through envelopd\r\n");
                return self.send_client(r.as_bytes()).await;
            }
            _ => self.note_command(&line),
        }
        self.in_flight += 1;
        self.send_server(&line).await
    }

    async fn server_message(&mut self, m: Vec<u8>) -> std::io::Result<()> {
        if let Some(plan) = &self.pending {
            if tag_of(&m) == plan.tag.as_bytes() {
                return self.complete_fetch(m).await;
            }
        }
        // The session's state follows every answer at once, also while a FETCH is pending: a
        // client may pipeline SELECT and FETCH, and the FETCH's responses belong to the
        // mailbox that SELECT opened.
        self.note_server(&m);
        if self.pending.is_some() {
            if self.pending_box.is_none() {
                self.pending_box = self.mailbox_key();
            }
            // Until something must wait for envelopd's own fetch, answers stream on (FETCH
            // responses may come in any order); after that, everything keeps its order.
            if self.held.is_empty() {
                if let Some(out) = self.answer_now(&m) {
                    self.queue_client(&out);
                    return Ok(());
                }
            }
            self.held.push(m);
            return Ok(());
        }
        let out = self.caps(&m);
        self.send_client(&out).await
    }

    /// Follows one server answer (other than the pending FETCH's tagged reply): the mailbox's
    /// UIDVALIDITY, commands completed, the login that succeeded, the mailbox selected.
    fn note_server(&mut self, m: &[u8]) {
        if m.starts_with(b"* ") {
            if let Some(v) = uidvalidity(m) {
                self.uidvalidity = Some(v);
                // A pending FETCH belongs to the mailbox now being opened.
                self.pending_box = None;
            }
        } else if !m.starts_with(b"+") {
            self.in_flight = self.in_flight.saturating_sub(1);
            if let Some(Continuation::Sasl { tag, .. }) = &self.continuation {
                if tag_of(m) == tag.as_bytes() {
                    self.continuation = None;
                }
            }
            if let Some((tag, name)) = &self.claimed {
                if tag_of(m) == tag.as_bytes() {
                    if m[tag.len()..].starts_with(b" OK") {
                        self.login = name.clone();
                    } else if m[tag.len()..].starts_with(b" NO") {
                        self.ctx
                            .auth_throttle
                            .failed(self.peer.ip(), name.as_deref());
                    }
                    self.claimed = None;
                }
            }
        }
        if let Some((tag, mailbox)) = &self.selecting {
            if tag_of(m) == tag.as_bytes() {
                if m[tag.len()..].starts_with(b" OK") {
                    self.mailbox = Some(mailbox.clone());
                    self.pending_box = None;
                }
                self.selecting = None;
            }
        }
    }

    /// Waits until the server has answered every client command already sent, forwarding
    /// those answers, so that what envelopd asks next cannot be mixed up with them.
    async fn quiesce(&mut self) -> std::io::Result<()> {
        while self.in_flight > 0 {
            let m = read_message(&mut self.up, &mut self.framer, Duration::from_secs(600))
                .await
                .map_err(std::io::Error::other)?;
            // Boxed: answering a message may itself wait for the server (a cycle in types only;
            // no FETCH is pending here, so it does not recurse at run time).
            Box::pin(self.server_message(m)).await?;
        }
        Ok(())
    }

    /// Runs one command of envelopd's own; returns its untagged responses and the tagged one.
    async fn internal(&mut self, command: &[u8]) -> std::io::Result<(Vec<Vec<u8>>, Vec<u8>)> {
        let tag = format!("ENVLPD.{}", self.next_tag);
        self.next_tag += 1;
        let mut line = tag.clone().into_bytes();
        line.push(b' ');
        line.extend_from_slice(command);
        self.send_server(&line).await?;
        let mut untagged = Vec::new();
        loop {
            let m = read_message(&mut self.up, &mut self.framer, Duration::from_secs(600))
                .await
                .map_err(std::io::Error::other)?;
            if tag_of(&m) == tag.as_bytes() {
                return Ok((untagged, m));
            }
            untagged.push(m);
        }
    }

    /// The shown form of the stored messages `uids` (from the cache, or fetched, opened and
    /// cached); also returns unrelated responses that arrived meanwhile, for the client.
    async fn presentations(
        &mut self,
        uids: &[u32],
    ) -> std::io::Result<(HashMap<u32, Arc<Presentation>>, Vec<Vec<u8>>)> {
        let mut shown = HashMap::new();
        let mut missing = Vec::new();
        for &uid in uids {
            let cached = self
                .cache_key(uid)
                .and_then(|k| self.ctx.cache.lock().ok()?.get(&k));
            match cached {
                Some(p) => {
                    shown.insert(uid, p);
                }
                None => missing.push(uid),
            }
        }
        let mut extra = Vec::new();
        if !missing.is_empty() {
            // envelopd's own command must not interleave with the client's.
            self.quiesce().await?;
        }
        // In batches, so one command line stays short.
        for batch in missing.chunks(500) {
            let line = fetch::fetch_whole("", batch);
            let (untagged, _tagged) = self.internal(&line[1..]).await?;
            for m in untagged {
                match fetch::parse_response(&m) {
                    Some(r)
                        if r.whole_body().is_some()
                            && r.uid().is_some_and(|u| batch.contains(&u)) =>
                    {
                        let uid = r.uid().expect("checked");
                        let stored = r.whole_body().expect("checked");
                        let p = {
                            let store = self.ctx.store.read().unwrap_or_else(|e| e.into_inner());
                            let keys = self.keys();
                            Arc::new(present(&stored, &keys, &store, SystemTime::now()))
                        };
                        self.learn(&p);
                        tracing::info!(uid, status = %p.status, "showing a protected message");
                        if let Some(k) = self.cache_key(uid) {
                            if let Ok(mut c) = self.ctx.cache.lock() {
                                c.insert(k, p.clone());
                            }
                        }
                        shown.insert(uid, p);
                    }
                    _ => extra.push(m),
                }
            }
        }
        Ok((shown, extra))
    }

    /// Answers a SEARCH with BODY/TEXT keys for encrypted messages too (see [`crate::search`]).
    async fn search(&mut self, plan: crate::search::SearchPlan) -> std::io::Result<()> {
        use crate::search::parse_search_response;
        self.quiesce().await?;
        let mut extra = Vec::new();
        let numbers = |untagged: Vec<Vec<u8>>, extra: &mut Vec<Vec<u8>>| {
            let mut found = Vec::new();
            for m in untagged {
                match parse_search_response(&m) {
                    Some(n) => found.extend(n),
                    None => extra.push(m),
                }
            }
            found
        };
        let (untagged, tagged) = self.internal(&plan.original("")).await?;
        if !tagged[tag_of(&tagged).len()..].starts_with(b" OK") {
            // The server's refusal (a bad charset, a syntax error) is the client's answer.
            let mut reply = plan.tag.clone().into_bytes();
            reply.extend_from_slice(&tagged[tag_of(&tagged).len()..]);
            for m in untagged {
                self.send_client(&m).await?;
            }
            return self.send_client(&reply).await;
        }
        let server_answer = numbers(untagged, &mut extra);
        let (untagged, _) = self
            .internal(b"UID SEARCH HEADER Content-Type pkcs7\r\n")
            .await?;
        let protected = numbers(untagged, &mut extra);
        let (shown, more) = self.presentations(&protected).await?;
        extra.extend(more);
        let mut groups: HashMap<Vec<bool>, Vec<u32>> = HashMap::new();
        for (uid, p) in &shown {
            groups
                .entry(plan.answers(&p.message))
                .or_default()
                .push(*uid);
        }
        let mut result: Vec<u32> = server_answer
            .into_iter()
            .filter(|u| !shown.contains_key(u))
            .collect();
        for (answers, mut uids) in groups {
            uids.sort_unstable();
            let (untagged, _) = self.internal(&plan.for_group("", &uids, &answers)).await?;
            result.extend(numbers(untagged, &mut extra));
        }
        result.sort_unstable();
        result.dedup();
        if !plan.uid && !result.is_empty() {
            let set: Vec<String> = result.iter().map(u32::to_string).collect();
            let (untagged, _) = self
                .internal(format!("SEARCH UID {}\r\n", set.join(",")).as_bytes())
                .await?;
            result = numbers(untagged, &mut extra);
        }
        tracing::info!(
            encrypted = shown.len(),
            "SEARCH answered for encrypted messages too"
        );
        let mut out = Vec::new();
        for m in extra {
            out.extend_from_slice(&self.caps(&m));
        }
        let list: Vec<String> = result.iter().map(u32::to_string).collect();
        if list.is_empty() {
            out.extend_from_slice(b"* SEARCH\r\n");
        } else {
            out.extend_from_slice(format!("* SEARCH {}\r\n", list.join(" ")).as_bytes());
        }
        out.extend_from_slice(
            format!(
                "{} OK SEARCH completed (envelopd also searched {} encrypted messages)\r\n",
                plan.tag,
                shown.len()
            )
            .as_bytes(),
        );
        self.send_client(&out).await
    }

    /// The answer to one response of a pending FETCH, if it can be given without fetching the
    /// stored message (plain, or shown form cached); `None`: it must wait.
    fn answer_now(&self, m: &[u8]) -> Option<Vec<u8>> {
        let plan = self.pending.as_ref()?;
        if plan.marker {
            if let Some((stripped, marker)) = fetch::split_marker(m, plan) {
                let needs = needs_presentation(
                    &fetch::marker_content_type(&marker),
                    fetch::marker_has_status(&marker),
                );
                if let Some(uid) = fetch::quick_uid(m) {
                    self.set_kind(uid, needs);
                }
                if !needs {
                    return Some(stripped);
                }
            }
        } else if let Some(uid) = fetch::quick_uid(m) {
            match self.kind(uid) {
                // A message known to be plain passes as the server sent it, unparsed.
                Some(false) if plan.shows_uid() => return Some(m.to_vec()),
                // A shown message answered before from the same server response.
                Some(true) => {
                    if let Some(a) = self.cached(uid).and_then(|p| p.sections.answer(plan, m)) {
                        return Some(a);
                    }
                }
                _ => {}
            }
        }
        let Some(r) = m
            .starts_with(b"* ")
            .then(|| fetch::parse_response(m))
            .flatten()
        else {
            return Some(self.caps(m));
        };
        if !self.judge(&r, plan)? {
            return Some(fetch::rewrite(r, plan, None));
        }
        let shown = self.cached(r.uid()?)?;
        let answer = fetch::rewrite_memo(r, plan, Some(&shown.message), &shown.sections);
        shown.sections.keep_answer(plan, m, &answer);
        Some(answer)
    }

    /// The shown form of the stored message `uid`, if it is in the cache.
    fn cached(&self, uid: u32) -> Option<Arc<Presentation>> {
        let k = self.cache_key(uid)?;
        self.ctx.cache.lock().ok()?.get(&k)
    }

    /// Whether a response of the pending FETCH must be answered from the shown message; `None`
    /// when envelopd does not know yet (no marker asked for, and a UID it has not classified).
    fn judge(&self, r: &fetch::FetchResponse, plan: &FetchPlan) -> Option<bool> {
        if plan.marker {
            let needs = needs_shown_form(r);
            if let (Some(uid), true) = (r.uid(), r.marker().is_some()) {
                self.set_kind(uid, needs);
            }
            return Some(needs);
        }
        if !r.has_content() {
            return Some(false);
        }
        let Some(uid) = r.uid() else {
            tracing::warn!("a FETCH response without the UID envelopd asked for; passed unchanged");
            return Some(false);
        };
        self.kind(uid)
    }

    fn mailbox_key(&self) -> Option<MailboxKey> {
        Some((
            self.login.clone()?,
            self.mailbox.clone()?,
            self.uidvalidity?,
        ))
    }

    fn kind(&self, uid: u32) -> Option<bool> {
        let k = self.pending_box.as_ref()?;
        self.ctx.cache.lock().ok()?.kind(k, uid)
    }

    fn set_kind(&self, uid: u32, shown: bool) {
        if let (Some(k), Ok(mut c)) = (&self.pending_box, self.ctx.cache.lock()) {
            c.set_kind(k, uid, shown);
        }
    }

    /// Asks the server which of `uids` envelopd must show in its form (their marker fields);
    /// returns the answers, and unrelated responses that arrived meanwhile, for the client.
    async fn classify(
        &mut self,
        uids: &[u32],
    ) -> std::io::Result<(HashMap<u32, bool>, Vec<Vec<u8>>)> {
        self.quiesce().await?;
        let mut kinds = HashMap::new();
        let mut extra = Vec::new();
        for batch in uids.chunks(500) {
            let (untagged, _tagged) = self.internal(&fetch::classify(batch)).await?;
            for m in untagged {
                match fetch::parse_response(&m) {
                    Some(r)
                        if r.marker().is_some() && r.uid().is_some_and(|u| batch.contains(&u)) =>
                    {
                        let (uid, needs) = (r.uid().expect("checked"), needs_shown_form(&r));
                        self.set_kind(uid, needs);
                        kinds.insert(uid, needs);
                    }
                    _ => extra.push(m),
                }
            }
        }
        Ok((kinds, extra))
    }

    /// Keeps what a verified signature taught: the sender's encryption certificate (in the shared
    /// store, and in the harvest directory if configured) and their client's capabilities.
    fn learn(&self, p: &Presentation) {
        if p.harvest.is_empty() && p.capabilities.is_empty() {
            return;
        }
        let mut store = self.ctx.store.write().unwrap_or_else(|e| e.into_inner());
        for (address, caps) in &p.capabilities {
            store.set_capabilities(address, caps.clone());
        }
        for (address, cert) in &p.preferred {
            store.set_preferred(address, cert.clone());
        }
        for (address, cert) in &p.harvest {
            if store.learn(cert.clone()) {
                tracing::info!(%address, subject = %cert.subject(), "learnt an encryption certificate from verified signed mail");
                if let Some(dir) = &self.ctx.harvest_dir {
                    let name = format!(
                        "{}-{}.der",
                        address.replace(['/', '\\'], "_"),
                        fingerprint(cert)
                    );
                    let tmp = dir.join(format!(".{name}.tmp"));
                    let saved = std::fs::create_dir_all(dir)
                        .and_then(|_| std::fs::write(&tmp, cert.der()))
                        .and_then(|_| std::fs::rename(&tmp, dir.join(&name)));
                    if let Err(e) = saved {
                        tracing::warn!(error = %e, dir = %dir.display(), "could not save a learnt certificate");
                    }
                }
            }
        }
    }

    fn cache_key(&self, uid: u32) -> Option<CacheKey> {
        Some((
            self.login.clone()?,
            self.mailbox.clone()?,
            self.uidvalidity?,
            uid,
        ))
    }

    /// The FETCH's tagged reply has come: answer every held response, then pass the reply.
    async fn complete_fetch(&mut self, tagged: Vec<u8>) -> std::io::Result<()> {
        let plan = self.pending.take().expect("a pending FETCH");
        let held = std::mem::take(&mut self.held);
        let mut parsed: Vec<Option<(fetch::FetchResponse, Option<bool>)>> =
            Vec::with_capacity(held.len());
        let mut unknown = Vec::new();
        for m in &held {
            let r = if m.starts_with(b"* ") {
                fetch::parse_response(m)
            } else {
                None
            };
            let Some(r) = r else {
                parsed.push(None);
                continue;
            };
            let needs = self.judge(&r, &plan);
            match needs {
                None => unknown.extend(r.uid()),
                Some(false) if plan.marker && r.marker().is_none() => tracing::warn!(
                    "a FETCH response without the fields envelopd asked for; passed unchanged"
                ),
                _ => {}
            }
            parsed.push(Some((r, needs)));
        }
        self.in_flight = self.in_flight.saturating_sub(1);
        let (classified, mut after) = if unknown.is_empty() {
            (HashMap::new(), Vec::new())
        } else {
            self.classify(&unknown).await?
        };
        // A message the server no longer describes counts as one to show: envelopd then
        // tries to open it, and passes the server's items only if that fails too.
        let decide = |r: &fetch::FetchResponse, needs: Option<bool>| {
            needs.unwrap_or_else(|| {
                r.uid()
                    .and_then(|u| classified.get(&u).copied())
                    .unwrap_or(true)
            })
        };
        let needed: Vec<u32> = parsed
            .iter()
            .flatten()
            .filter(|(r, needs)| decide(r, *needs))
            .filter_map(|(r, _)| r.uid())
            .collect();
        let (shown, more) = self.presentations(&needed).await?;
        after.extend(more);
        let mut out = Vec::new();
        for (m, p) in held.into_iter().zip(parsed) {
            match p {
                Some((r, needs)) => {
                    let view = if decide(&r, needs) {
                        r.uid().and_then(|u| shown.get(&u))
                    } else {
                        None
                    };
                    out.extend_from_slice(&match view {
                        Some(p) => fetch::rewrite_memo(r, &plan, Some(&p.message), &p.sections),
                        None => fetch::rewrite(r, &plan, None),
                    });
                }
                None => out.extend_from_slice(&self.caps(&m)),
            }
        }
        out.extend_from_slice(&self.caps(&tagged));
        for m in after {
            out.extend_from_slice(&self.caps(&m));
        }
        self.send_client(&out).await
    }
}

/// The login name in a SASL response: PLAIN's authentication identity, LOGIN's user name.
fn sasl_login(mechanism: &str, response: &[u8]) -> Option<String> {
    let raw = smime::mime::base64_decode(response).ok()?;
    net::login::sasl_name(mechanism, &raw)
}

/// Whether a FETCH response's message must be shown in envelopd's form (S/MIME, or carrying a
/// status header), judged by the header fields envelopd asked for.
fn needs_shown_form(r: &fetch::FetchResponse) -> bool {
    r.marker().is_some_and(|mk| {
        needs_presentation(
            &fetch::marker_content_type(&mk),
            fetch::marker_has_status(&mk),
        )
    })
}

/// The first 16 hex digits of a certificate's SHA-256 (for file names).
fn fingerprint(cert: &smime::Cert) -> String {
    cert.sha256()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `* OK [UIDVALIDITY n]`.
fn uidvalidity(m: &[u8]) -> Option<u32> {
    // Only `* OK [UIDVALIDITY n]` (RFC 3501 §7.1): this runs for every untagged answer, and a
    // FETCH response's literal may be megabytes long.
    const CODE: &[u8] = b"* OK [UIDVALIDITY ";
    if !m.get(..CODE.len())?.eq_ignore_ascii_case(CODE) {
        return None;
    }
    let text = String::from_utf8_lossy(m);
    let start = CODE.len();
    let end = text[start..].find(']')? + start;
    text[start..end].trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_that_would_show_ciphertext_are_hidden() {
        let caps = b"* CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE SORT LITERAL+ MOVE CONDSTORE QRESYNC BINARY CATENATE URL-PARTIAL COMPRESS=DEFLATE PREVIEW SNIPPET=FUZZY STARTTLS UIDPLUS SPECIAL-USE\r\n";
        assert_eq!(
            filter_capabilities(caps),
            b"* CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ MOVE CONDSTORE QRESYNC UIDPLUS SPECIAL-USE\r\n"
        );
        assert_eq!(
            filter_capabilities(b"a OK [CAPABILITY IMAP4rev1 COMPRESS=DEFLATE IDLE] Logged in\r\n"),
            b"a OK [CAPABILITY IMAP4rev1 IDLE] Logged in\r\n"
        );
        assert_eq!(filter_capabilities(b"* 3 EXISTS\r\n"), b"* 3 EXISTS\r\n");
    }
}
