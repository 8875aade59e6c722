//! One proxied IMAP connection: a thin tokio driver around the sans-I/O [`crate::core`], which
//! decides everything the mail program and the server see. The driver connects to the server
//! (TLS and its certificate check, STARTTLS towards the server), reads and writes both
//! connections with timeouts, and does the core's work: opening stored messages with the
//! login's keys ([`crate::present`]), learning from valid signatures, keeping shown forms in
//! the [`Cache`], encrypting appends, TLS with the client.

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use certstore::CertStore;
use net::conn::Conn;
use net::target::TargetTls;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

pub use crate::cache::Cache;
use crate::core::{Answer, Config, Core, Env, Step, Stored, Work};
use crate::frame::Framer;
use crate::present::Presentation;

/// How long the server may take to go on with an answer the client is waiting for.
const SERVER_WAIT: Duration = Duration::from_secs(600);

/// The longest command or response line (literals excluded).
pub const MAX_LINE: usize = 64 * 1024;

/// The provider's IMAP server: host, port and transport security, as for SMTP.
pub type ImapTarget = net::target::Target;

pub use ::present::BoundKey;

/// Everything the IMAP sessions share.
pub struct ImapContext {
    /// The provider's IMAP server.
    pub upstream: ImapTarget,
    /// The practice's keys with who may use them: a session decrypts only with the keys its
    /// login is entitled to ([`certstore::login_may_use`], the rule signing follows too).
    pub keys: Arc<Vec<BoundKey>>,
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

/// The tokio driver around one [`Core`]: reads and writes both connections, does the work the
/// core hands out (opening stored messages, encrypting appends, TLS), and decides nothing.
async fn run(
    client: TcpStream,
    peer: std::net::SocketAddr,
    ctx: Arc<ImapContext>,
) -> std::io::Result<()> {
    let Some((mut client, (mut up, greeting, framer))) = net::conn::start_reading_session(
        client,
        ctx.client_tls.as_ref(),
        ctx.connect_timeout,
        "imap",
        &ctx.upstream,
        connect(&ctx),
        |why| format!("* BYE envelopd cannot reach the mail server: {why}\r\n"),
    )
    .await
    else {
        return Ok(());
    };
    let cfg = Config {
        secure: client.is_tls(),
        starttls: ctx.client_tls.as_ref().is_some_and(|t| !t.implicit),
        peer: peer.ip(),
        max_literal: ctx.max_literal,
    };
    let env: Arc<dyn Env> = ctx.clone();
    let mut core = Core::new(cfg, env, &greeting, framer);
    let result = drive(&mut core, &mut client, &mut up, &ctx).await;
    let _ = client.shutdown().await;
    result
}

async fn drive(
    core: &mut Core,
    client: &mut Conn,
    up: &mut Conn,
    ctx: &Arc<ImapContext>,
) -> std::io::Result<()> {
    let mut side = ClientSide::new(std::mem::replace(client, Conn::Gone), ctx.command_timeout);
    let result = drive_split(core, &mut side, up, ctx).await;
    // What is queued still goes out (a BYE, the last answers) before the connection closes.
    let joined = side.join().await;
    match (result, joined) {
        (Err(e), _) | (Ok(()), Err(e)) => Err(e),
        (Ok(()), Ok(conn)) => {
            *client = conn;
            Ok(())
        }
    }
}

async fn drive_split(
    core: &mut Core,
    side: &mut ClientSide,
    up: &mut Conn,
    ctx: &Arc<ImapContext>,
) -> std::io::Result<()> {
    let mut cbuf = vec![0u8; 16384];
    // A command line must arrive whole within command_timeout, however slowly its bytes
    // trickle in (slowloris); an idle client gets the autologout time.
    let mut clock = net::conn::LineClock::default();
    // Stored messages opening on the CPU pool beside the session: it goes on reading the
    // server and writing the client meanwhile (dropped with the session).
    let mut opening = tokio::task::JoinSet::new();
    loop {
        loop {
            match core.poll() {
                Step::ToClient(bytes) => side.send(Out::Bytes(bytes))?,
                Step::ToClientShown(shown, range) => side.send(Out::Shown(shown, range))?,
                Step::ToServer(bytes) => up.send_all(&bytes, ctx.command_timeout).await?,
                Step::Do(Work::StartTls) => {
                    // The handshake follows the client's last answer ("begin TLS") on the
                    // whole connection.
                    let ok = match ctx.client_tls.clone() {
                        Some(tls) => side.accept_tls(tls.config, ctx.connect_timeout).await?,
                        None => false,
                    };
                    core.answer(Answer::Tls(ok));
                }
                Step::Do(work) => {
                    let answer = perform(ctx, work).await;
                    core.answer(answer);
                }
                Step::Open { login, message } => {
                    let ctx = ctx.clone();
                    opening.spawn(async move {
                        let uid = message.uid;
                        let shown = net::cpu::run(move || show(&ctx, login.as_deref(), message));
                        (uid, shown.await)
                    });
                }
                Step::Close => return Ok(()),
                Step::Idle => break,
            }
        }
        let wait = clock.wait(ctx.command_timeout, ctx.client_timeout);
        // Neither side is read while the client has more than WRITE_AHEAD waiting for it (what
        // the session makes comes from what it reads), but openings still finish meanwhile.
        let room = !side.full();
        let ClientSide { read, writer, .. } = side;
        let taken = writer.taken.clone();
        tokio::select! {
            r = timeout(wait, read.read(&mut cbuf)), if room && core.reading_client() => {
                match r {
                    Ok(Ok(0)) => core.client_closed(),
                    Ok(Ok(n)) => core.from_client(&cbuf[..n]),
                    Ok(Err(e)) => return Err(e),
                    Err(_) => core.timed_out(clock.running()),
                }
                clock.note(core.partial_line());
            }
            // While the client waits for the server (a FETCH being answered, envelopd's own
            // commands), the server must answer within SERVER_WAIT; otherwise it may stay
            // silent as long as it likes (IDLE).
            r = timeout(
                if core.reading_client() { Duration::MAX } else { SERVER_WAIT },
                read_server(up, core),
            ), if room && core.reading_server() => {
                match r {
                    Ok(Ok(0)) => core.server_closed(),
                    Ok(Ok(_)) => core.server_read(),
                    Ok(Err(e)) => return Err(e),
                    Err(_) => core.server_timed_out(),
                }
            }
            Some(done) = opening.join_next(), if !opening.is_empty() => match done {
                Ok((uid, shown)) => core.opened(uid, shown),
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(e) => return Err(std::io::Error::other(e)),
            },
            // The writer took up what waited: there is room again.
            () = taken.notified(), if !room => {}
            // Writing to the client failed (it stopped reading, or went away).
            r = writer.failed(), if !room || core.reading_client() || core.reading_server() => {
                return Err(r)
            }
            else => return Ok(()),
        }
    }
}

/// Reads the server's next bytes straight into the core's framer.
async fn read_server(up: &mut Conn, core: &mut Core) -> std::io::Result<usize> {
    up.read_buf(&mut core.server_space()).await
}

/// What goes to the client.
enum Out {
    /// Bytes.
    Bytes(Vec<u8>),
    /// A range of a shown message.
    Shown(Arc<Presentation>, std::ops::Range<usize>),
}

impl Out {
    fn bytes(&self) -> &[u8] {
        match self {
            Out::Bytes(b) => b,
            Out::Shown(p, r) => &p.message[r.clone()],
        }
    }
}

/// How many bytes of answers may wait for the client's writer (besides the one it is writing)
/// before the session stops reading: it reads and opens the next messages while the last ones
/// are written, a large one included, but a slow client holds it back.
const WRITE_AHEAD: usize = 4 << 20;

/// The client's connection split in two: the session reads it, and a task of its own writes
/// it, so that writing a large answer (the kernel's copying, and TCP's work for the client's
/// side of the loopback) runs on another core while the session reads from the server and
/// opens the next messages. Queuing never waits: the session looks at [`ClientSide::full`]
/// before reading more (so it never stalls with messages to dispatch while a large answer is
/// written).
struct ClientSide {
    read: tokio::io::ReadHalf<Conn>,
    writer: Writer,
    limit: Duration,
}

/// The task writing to the client, and the bytes waiting for it.
struct Writer {
    tx: tokio::sync::mpsc::UnboundedSender<Out>,
    /// Bytes queued and not yet taken up by the task.
    queued: Arc<AtomicUsize>,
    /// Signalled whenever the task takes up the next piece.
    taken: Arc<tokio::sync::Notify>,
    /// `None` once its outcome was taken.
    task: Option<tokio::task::JoinHandle<std::io::Result<tokio::io::WriteHalf<Conn>>>>,
}

impl ClientSide {
    fn new(conn: Conn, limit: Duration) -> Self {
        let (read, write) = tokio::io::split(conn);
        ClientSide {
            read,
            writer: Writer::start(write, limit),
            limit,
        }
    }

    /// Queues `out` for the client. An error when writing has already failed.
    fn send(&mut self, out: Out) -> std::io::Result<()> {
        let n = out.bytes().len();
        self.writer.queued.fetch_add(n, Ordering::SeqCst);
        if self.writer.tx.send(out).is_err() {
            return Err(std::io::Error::other("writing to the mail program failed"));
        }
        Ok(())
    }

    /// Whether more than [`WRITE_AHEAD`] bytes wait for the writer.
    fn full(&self) -> bool {
        self.writer.queued.load(Ordering::SeqCst) > WRITE_AHEAD
    }

    /// Everything queued written, the connection whole again.
    async fn join(self) -> std::io::Result<Conn> {
        let ClientSide { read, writer, .. } = self;
        let Writer { tx, task, .. } = writer;
        drop(tx);
        let write = match task {
            Some(task) => task.await.map_err(std::io::Error::other)??,
            None => return Err(std::io::Error::other("writing to the mail program failed")),
        };
        Ok(read.unsplit(write))
    }

    /// TLS with the client on the whole connection, once everything queued is written.
    async fn accept_tls(
        &mut self,
        config: Arc<rustls::ServerConfig>,
        limit: Duration,
    ) -> std::io::Result<bool> {
        let placeholder = ClientSide::new(Conn::Gone, self.limit);
        let mut conn = std::mem::replace(self, placeholder).join().await?;
        let ok = conn.accept_tls(config, limit).await;
        *self = ClientSide::new(conn, self.limit);
        Ok(ok)
    }
}

impl Writer {
    fn start(mut write: tokio::io::WriteHalf<Conn>, limit: Duration) -> Self {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Out>();
        let queued = Arc::new(AtomicUsize::new(0));
        let taken = Arc::new(tokio::sync::Notify::new());
        let task = tokio::spawn({
            let (queued, taken) = (queued.clone(), taken.clone());
            async move {
                while let Some(out) = rx.recv().await {
                    queued.fetch_sub(out.bytes().len(), Ordering::SeqCst);
                    taken.notify_one();
                    // A mail program that stops reading in the middle of a large FETCH is
                    // dropped after one command timeout without progress, not held (with its
                    // server connection) forever; a slow one that keeps reading gets all of it.
                    net::conn::send_all(&mut write, out.bytes(), limit).await?;
                }
                Ok(write)
            }
        });
        Writer {
            tx,
            queued,
            taken,
            task: Some(task),
        }
    }

    /// Waits until writing fails, and says why; never returns while writing works.
    async fn failed(&mut self) -> std::io::Error {
        let Some(task) = self.task.as_mut() else {
            return std::future::pending().await;
        };
        let outcome = task.await;
        self.task = None;
        match outcome {
            Ok(Err(e)) => e,
            Ok(Ok(_)) => std::io::Error::other("writing to the mail program ended"),
            Err(e) => std::io::Error::other(e),
        }
    }
}

/// Opens a batch of stored messages: every message on the CPU pool at once (one per core);
/// the answers keep the batch's order.
async fn present_batch(
    ctx: Arc<ImapContext>,
    login: Option<String>,
    messages: Vec<Stored>,
) -> Answer {
    let jobs = messages.into_iter().map(|m| {
        let ctx = ctx.clone();
        let login = login.clone();
        move || show(&ctx, login.as_deref(), m)
    });
    Answer::Presented(net::cpu::run_all(jobs).await)
}

/// Does one piece of the core's work (TLS with the client is the driver's own).
async fn perform(ctx: &Arc<ImapContext>, work: Work) -> Answer {
    match work {
        Work::Present { login, messages } => present_batch(ctx.clone(), login, messages).await,
        Work::Encrypt { message, cert } => {
            let protection = *ctx
                .header_protection
                .read()
                .unwrap_or_else(|e| e.into_inner());
            let size = message.len();
            let encrypted = net::cpu::run(move || {
                let opts = smime::EncryptOptions::default();
                smime::Prepared::own_copy(&message, protection)
                    .and_then(|p| p.encrypt(std::slice::from_ref(&cert), &opts))
            })
            .await;
            if encrypted.is_ok() {
                tracing::info!(
                    size,
                    "appended message stored encrypted to the own certificate"
                );
            }
            Answer::Encrypted(encrypted.map_err(|e| e.to_string()))
        }
        Work::StartTls => unreachable!("the driver starts TLS itself"),
    }
}

impl Env for ImapContext {
    fn cache(&self) -> &Mutex<Cache> {
        &self.cache
    }

    fn locked(&self, peer: IpAddr, user: Option<&str>) -> Option<Duration> {
        self.auth_throttle.blocked(peer, user)
    }

    fn login_failed(&self, peer: IpAddr, user: Option<&str>) {
        self.auth_throttle.failed(peer, user)
    }

    fn own_cert(&self, login: &str) -> Option<smime::Cert> {
        self.own_certs
            .iter()
            // The names are the identity's addresses and logins together; as `logins` they
            // match by the address rule or as a user name in any ASCII case.
            .find(|(names, _)| certstore::login_may_use(&[], names, login))
            .map(|(_, c)| c.clone())
    }

    fn encrypts_appends_to(&self, folder: &str) -> bool {
        self.encrypt_appends_to
            .iter()
            .any(|f| f.eq_ignore_ascii_case(folder))
    }
}

/// Opens one stored message with the keys `login` may use, learns from it and caches its shown
/// form (on the CPU pool: decrypting and verifying are the expensive part of reading).
fn show(ctx: &ImapContext, login: Option<&str>, m: Stored) -> Arc<Presentation> {
    let p = {
        let keys = ::present::keys_for(&ctx.keys, login);
        Arc::new(crate::present::present_shared(
            m.bytes,
            &keys,
            &ctx.store,
            SystemTime::now(),
        ))
    };
    ::present::learn(&ctx.store, ctx.harvest_dir.as_deref(), &p);
    tracing::info!(uid = m.uid, status = %p.status, "showing a protected message");
    if let Some(k) = m.key {
        if let Ok(mut c) = ctx.cache.lock() {
            c.insert(k, p.clone());
        }
    }
    p
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
    let mut up = t.open(ctx.connect_timeout).await?;
    let mut framer = Framer::new(MAX_LINE, ctx.max_literal);
    let greeting = read_message(&mut up, &mut framer, ctx.connect_timeout).await?;
    if !greeting.starts_with(b"* OK") && !greeting.starts_with(b"* PREAUTH") {
        return Err(format!(
            "the server refused: {}",
            String::from_utf8_lossy(&greeting).trim()
        ));
    }
    if let TargetTls::Starttls(_) = &t.tls {
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
        t.start_tls(&mut up, ctx.connect_timeout).await?;
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
