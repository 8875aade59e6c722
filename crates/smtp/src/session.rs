//! The client-facing SMTP session: commands parsed with `smtp-proto`, MAIL and RCPT relayed to
//! the provider with its replies, the message collected at DATA, transformed by the policy, and
//! sent; **the client's final reply is the provider's reply to the transformed message**. There is
//! no local queue: if the provider does not take the message, the client gets 4xx/5xx and keeps it.
//!
//! AUTH PLAIN and LOGIN are relayed to the provider, which checks the user's own password:
//! envelopd stores none and logs none. Clients may use STARTTLS or implicit TLS; off loopback,
//! AUTH is offered only over TLS and required before MAIL.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use certstore::CertStore;
use policy::{decide, Decision, Identities, MessageFacts, PolicyConfig};
use smime::{Cert, Identity, SignOptions};
use smtp_proto::request::receiver::{
    BdatReceiver, DataReceiver, DummyDataReceiver, RequestReceiver,
};
use smtp_proto::Request;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::time::timeout;
use zeroize::Zeroizing;

use crate::outgoing::{copies, Refusal};
use crate::upstream::{Reply, Timeouts, Upstream};
use net::conn::Conn;
use net::target::{ClientTls, Target};

/// The longest AUTH line accepted (RFC 4954 §4: 12288 octets).
const MAX_AUTH_LINE: usize = 12288;

/// One signing identity and the sender addresses it may sign for.
pub struct SenderIdentity {
    /// The addresses (the certificate must name each).
    pub addresses: Vec<String>,
    /// Key and certificates.
    pub identity: Identity,
    /// A separate encryption certificate for the Sent copy, if any.
    pub encryption_cert: Option<Cert>,
    /// Provider login names (besides the addresses) whose sessions may sign with this key.
    pub logins: Vec<String>,
}

impl SenderIdentity {
    /// Whether a session authenticated as `login` may sign with this key: the login is one of
    /// its addresses or listed in `logins`. A colleague logged in as someone else on the LAN
    /// gateway can then never produce mail signed as the doctor.
    pub fn usable_by(&self, login: &str) -> bool {
        certstore::login_may_use(&self.addresses, &self.logins, login)
    }
}

/// Everything a session needs, shared by all sessions.
pub struct Context {
    /// The provider's submission server.
    pub upstream: Target,
    /// TLS for mail programs, if configured.
    pub tls: Option<ClientTls>,
    /// Whether clients must authenticate before MAIL (always, off loopback).
    pub require_auth: bool,
    /// The name envelopd uses in EHLO and its greeting.
    pub hostname: String,
    /// Certificates and trust anchors, shared with the IMAP side, which adds certificates it
    /// learns from verified signed mail.
    pub store: Arc<std::sync::RwLock<CertStore>>,
    /// The practice's signing identities.
    pub identities: Vec<SenderIdentity>,
    /// The outgoing policy, header protection and sender binding: read again on SIGHUP, taken
    /// once per message.
    pub rules: std::sync::RwLock<Rules>,
    /// Connection limits of the listener.
    pub limits: net::conn::Limits,
    /// Failed-login counting, shared with the IMAP listener.
    pub auth_throttle: Arc<net::conn::AuthThrottle>,
    /// LDAP directories asked for recipients without a usable certificate (with deadlines).
    pub directory: Option<Arc<directory::Directories>>,
    /// The largest message accepted (bytes), unless the provider announces less.
    pub max_size: usize,
    /// The most recipients per message.
    pub max_recipients: usize,
    /// Waits towards the provider.
    pub timeouts: Timeouts,
    /// How long a client may be silent.
    pub client_timeout: Duration,
}

/// The parts of the configuration a reload (SIGHUP) may change for sessions already running.
#[derive(Clone)]
pub struct Rules {
    /// The outgoing policy.
    pub policy: PolicyConfig,
    /// Header protection (RFC 9788) for signed and encrypted copies.
    pub header_protection: crate::outgoing::HeaderProtection,
    /// Refuse (550 5.7.1) a logged-in user's message whose envelope sender or From is another
    /// user's signing identity, instead of sending it unsigned (enforcement mode).
    pub refuse_foreign_sender: bool,
}

impl Context {
    /// The rules as they are now.
    pub fn rules(&self) -> Rules {
        self.rules.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Asks the directories (in parallel, each with its deadline) for every recipient without a
/// usable certificate, and keeps what validates for that recipient.
pub async fn complete_from_directory(
    store: &Arc<std::sync::RwLock<CertStore>>,
    dir: Arc<directory::Directories>,
    rcpts: &[String],
    now: SystemTime,
) {
    let missing: Vec<String> = {
        let s = store.read().unwrap_or_else(|e| e.into_inner());
        rcpts
            .iter()
            .filter(|r| s.encryption_cert(r, now).is_err())
            .cloned()
            .collect()
    };
    let mut lookups = tokio::task::JoinSet::new();
    for r in missing {
        let dir = dir.clone();
        lookups.spawn(async move {
            let certs = dir.lookup(&r).await;
            (r, certs)
        });
    }
    while let Some(Ok((address, certs))) = lookups.join_next().await {
        if certs.is_empty() {
            continue;
        }
        let mut s = store.write().unwrap_or_else(|e| e.into_inner());
        for c in certs {
            match s.validate(&c, certstore::Purpose::Encrypt, &address, &[], now) {
                Ok(_) => {
                    if s.learn(c.clone()) {
                        tracing::info!(%address, subject = %c.subject(), "using a certificate from the directory");
                    }
                }
                Err(e) => tracing::info!(%address, "directory certificate not usable: {e}"),
            }
        }
    }
}

/// The identity whose addresses include `address`.
fn identity_for<'a>(identities: &'a [SenderIdentity], address: &str) -> Option<&'a SenderIdentity> {
    identities
        .iter()
        .find(|i| i.addresses.iter().any(|a| smime::same_mailbox(a, address)))
}

/// The identities as one session sees them: only those its login may use (all of them without
/// a login); what the policy asks about the sender.
pub struct SessionIdentities<'a> {
    identities: &'a [SenderIdentity],
    login: Option<&'a str>,
    store: &'a CertStore,
}

impl<'a> SessionIdentities<'a> {
    /// The view of `identities` for a session logged in as `login`, checked against `store`.
    pub fn new(
        identities: &'a [SenderIdentity],
        login: Option<&'a str>,
        store: &'a CertStore,
    ) -> Self {
        SessionIdentities {
            identities,
            login,
            store,
        }
    }

    /// The identity that would sign for `address` in this session.
    pub fn identity_for(&self, address: &str) -> Option<&'a SenderIdentity> {
        let i = identity_for(self.identities, address)?;
        match self.login {
            Some(login) if !i.usable_by(login) => {
                tracing::info!(%address, login, "not signing: this login may not use that key");
                None
            }
            _ => Some(i),
        }
    }
}

impl Identities for SessionIdentities<'_> {
    fn can_sign_as(&self, address: &str) -> bool {
        self.identity_for(address).is_some_and(|i| {
            self.store
                .validate(
                    &i.identity.cert,
                    certstore::Purpose::Sign,
                    address,
                    &i.identity.chain,
                    SystemTime::now(),
                )
                .is_ok()
        })
    }

    fn own_encryption_cert(&self, address: &str) -> Option<Cert> {
        let i = identity_for(self.identities, address)?;
        let cert = i
            .encryption_cert
            .clone()
            .unwrap_or_else(|| i.identity.cert.clone());
        self.store
            .validate(
                &cert,
                certstore::Purpose::Encrypt,
                address,
                &i.identity.chain,
                SystemTime::now(),
            )
            .is_ok()
            .then_some(cert)
    }
}

/// How long open sessions may take to finish after shutdown was asked for.
pub const DRAIN_TIME: Duration = Duration::from_secs(60);

/// Accepts clients until `shutdown` turns true; one task per connection. Then stops accepting,
/// tells idle sessions goodbye (421), lets sessions in the middle of a message finish (at most
/// [`DRAIN_TIME`]) and returns: a message being relayed is never cut off by a restart.
pub async fn serve(
    listener: TcpListener,
    ctx: Arc<Context>,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    let limits = net::conn::Limits {
        refusal: (!ctx.tls.as_ref().is_some_and(|t| t.implicit))
            .then_some(&b"421 4.7.0 envelopd: too many connections, try again later\r\n"[..]),
        ..ctx.limits.clone()
    };
    net::conn::serve_connections(
        listener,
        shutdown,
        "smtp",
        DRAIN_TIME,
        limits,
        move |stream, peer, stop| Session::new(Conn::Plain(stream), peer, ctx.clone(), stop).run(),
    )
    .await
}

/// One session on an accepted connection (the fuzz harness drives sessions this way).
pub(crate) async fn serve_one(
    client: Conn,
    peer: SocketAddr,
    ctx: Arc<Context>,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    Session::new(client, peer, ctx, shutdown).run().await
}

struct Session {
    client: Conn,
    peer: SocketAddr,
    ctx: Arc<Context>,
    shutdown: tokio::sync::watch::Receiver<bool>,
    inbuf: Vec<u8>,
    helo: bool,
    mail_from: Option<String>,
    /// MAIL parameters passed on to the provider (` BODY=8BITMIME`, ` SMTPUTF8`, DSN's
    /// ` RET=… ENVID=…`).
    mail_params: String,
    rcpts: Vec<String>,
    /// Each recipient's RCPT parameters for the provider (DSN's ` NOTIFY=… ORCPT=…`), in the
    /// order of `rcpts`: a separately sent copy carries its recipients' own.
    rcpt_params: Vec<String>,
    upstream: Option<Upstream>,
    /// The login the provider accepted, once AUTH succeeded.
    login: Option<String>,
    /// A message arriving in BDAT chunks; `None` outside BDAT.
    chunks: Option<Vec<u8>>,
    chunks_too_big: bool,
    /// When the partial command line in `inbuf` began to arrive.
    line_started: Option<std::time::Instant>,
    /// The current message's audit facts: decision, cipher, signing identity, copies.
    audit: (&'static str, String, String, usize),
}

enum Flow {
    Continue,
    Quit,
}

impl Session {
    fn new(
        client: Conn,
        peer: SocketAddr,
        ctx: Arc<Context>,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        Session {
            client,
            peer,
            ctx,
            shutdown,
            inbuf: Vec::with_capacity(4096),
            helo: false,
            mail_from: None,
            mail_params: String::new(),
            rcpts: Vec::new(),
            rcpt_params: Vec::new(),
            upstream: None,
            login: None,
            chunks: None,
            chunks_too_big: false,
            line_started: None,
            audit: ("-", String::new(), String::new(), 0),
        }
    }

    async fn send(&mut self, reply: &Reply) -> std::io::Result<()> {
        self.send_raw(reply.line().as_bytes()).await
    }

    /// The replies to commands a pipelining client sent together, in one write.
    async fn send_replies(&mut self, replies: &[Reply]) -> std::io::Result<Flow> {
        let text: String = replies.iter().map(Reply::line).collect();
        self.send_raw(text.as_bytes()).await?;
        Ok(Flow::Continue)
    }

    async fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        // A client that reads nothing for the client timeout is dropped (`send_all` flushes, so
        // a reply behind TLS leaves now).
        self.client.send_all(bytes, self.ctx.client_timeout).await
    }

    /// Reads more client input. Between commands (`idle`) a shutdown ends the session with 421;
    /// in the middle of a message it does not, so the message can still be delivered.
    async fn fill(&mut self, idle: bool) -> std::io::Result<bool> {
        let mut chunk = [0u8; 8192];
        // Between commands the whole command line must arrive within the timeout, not each
        // byte of it: a client trickling a byte at a time (slowloris) is cut off like a silent
        // one (RFC 5321 §4.5.3.2: 5 minutes per command).
        let client_timeout = match self.line_started.filter(|_| idle) {
            Some(t) => self.ctx.client_timeout.saturating_sub(t.elapsed()),
            None => self.ctx.client_timeout,
        };
        let n = if idle {
            if *self.shutdown.borrow() {
                let _ = self
                    .send(&Reply::new(
                        421,
                        "4.3.2",
                        "envelopd is shutting down, try again shortly",
                    ))
                    .await;
                return Ok(false);
            }
            let mut shutdown = self.shutdown.clone();
            tokio::select! {
                r = timeout(client_timeout, self.client.read(&mut chunk)) => r,
                _ = shutdown.changed() => {
                    let _ = self.send(&Reply::new(421, "4.3.2", "envelopd is shutting down, try again shortly")).await;
                    return Ok(false);
                }
            }
        } else {
            timeout(client_timeout, self.client.read(&mut chunk)).await
        };
        let n = match n {
            Ok(r) => r?,
            Err(_) => {
                let _ = self
                    .send(&Reply::new(421, "4.4.2", "timeout, closing"))
                    .await;
                return Ok(false);
            }
        };
        self.inbuf.extend_from_slice(&chunk[..n]);
        Ok(n > 0)
    }

    fn secure(&self) -> bool {
        self.client.is_tls()
    }

    /// AUTH is offered over TLS, or in the clear only to a program on this machine.
    fn auth_allowed_here(&self) -> bool {
        self.secure() || self.peer.ip().is_loopback()
    }

    async fn run(mut self) -> std::io::Result<()> {
        if let Some(tls) = self.ctx.tls.clone().filter(|t| t.implicit) {
            if !self
                .client
                .accept_tls(tls.config, self.ctx.timeouts.connect)
                .await
            {
                return Ok(());
            }
        }
        let greeting = Reply::new(220, "", format!("{} ESMTP envelopd", self.ctx.hostname));
        self.send(&greeting).await?;
        let mut receiver = RequestReceiver::default();
        loop {
            // Parse as many commands as are buffered (pipelining), then read more.
            let mut iter = self.inbuf.iter();
            let parsed = receiver.ingest(&mut iter).map(|r| r.into_owned());
            let consumed = self.inbuf.len() - iter.as_slice().len();
            self.inbuf.drain(..consumed);
            let flow = match parsed {
                Ok(req) => {
                    self.line_started = None;
                    self.handle(req).await?
                }
                Err(smtp_proto::Error::NeedsMoreData { .. }) => {
                    // Part of a command is in the parser: its line is now on the clock.
                    if consumed > 0 && self.line_started.is_none() {
                        self.line_started = Some(std::time::Instant::now());
                    }
                    if !self.fill(true).await? {
                        break;
                    }
                    continue;
                }
                Err(e) => {
                    self.line_started = None;
                    self.send(&syntax_reply(&e)).await?;
                    Flow::Continue
                }
            };
            if let Flow::Quit = flow {
                break;
            }
        }
        if let Some(up) = self.upstream.take() {
            up.quit().await;
        }
        let _ = self.client.shutdown().await;
        Ok(())
    }

    async fn handle(&mut self, req: Request<String>) -> std::io::Result<Flow> {
        if self.chunks.is_some()
            && !matches!(
                req,
                Request::Bdat { .. } | Request::Rset | Request::Quit | Request::Noop { .. }
            )
        {
            // RFC 3030 §2: only BDAT, RSET, QUIT and NOOP inside a BDAT transaction.
            self.abort_chunks().await;
            self.send(&Reply::new(
                503,
                "5.5.1",
                "BDAT transaction aborted: only BDAT may follow BDAT",
            ))
            .await?;
            return Ok(Flow::Continue);
        }
        let reply = match req {
            Request::Ehlo { host: _ } => {
                self.reset().await;
                self.helo = true;
                let text = self.ehlo_reply().await;
                self.send_raw(text.as_bytes()).await?;
                return Ok(Flow::Continue);
            }
            Request::Helo { host: _ } => {
                self.reset().await;
                self.helo = true;
                Reply::new(250, "", self.ctx.hostname.clone())
            }
            Request::Mail { from } => {
                // A pipelining client's RCPTs behind MAIL go to the provider in the same write.
                let replies = match self.mail(from).await {
                    Ok(mail) => {
                        let group = self.buffered_rcpts();
                        self.relayed(Some(mail), group).await
                    }
                    Err(refusal) => vec![refusal],
                };
                return self.send_replies(&replies).await;
            }
            Request::Rcpt { to } => {
                let mut group = vec![to];
                group.extend(self.buffered_rcpts());
                let replies = self.relayed(None, group).await;
                return self.send_replies(&replies).await;
            }
            Request::Data => return self.data().await.map(|_| Flow::Continue),
            Request::Bdat {
                chunk_size,
                is_last,
            } => return self.bdat(chunk_size, is_last).await.map(|_| Flow::Continue),
            Request::Rset => {
                self.reset().await;
                Reply::new(250, "2.0.0", "OK")
            }
            Request::Noop { .. } => Reply::new(250, "2.0.0", "OK"),
            Request::Quit => {
                self.send(&Reply::new(221, "2.0.0", "Bye")).await?;
                return Ok(Flow::Quit);
            }
            Request::Vrfy { .. } => {
                Reply::new(252, "2.5.0", "cannot verify, but will try to deliver")
            }
            Request::StartTls => return self.starttls().await,
            Request::Auth {
                mechanism,
                initial_response,
            } => self.auth(mechanism, initial_response).await?,
            other => Reply::new(502, "5.5.1", format!("{} is not supported", other.name())),
        };
        self.send(&reply).await?;
        Ok(Flow::Continue)
    }

    /// Connects to the provider if not yet connected; the error is the client's reply.
    async fn ensure_upstream(&mut self) -> Result<&mut Upstream, Reply> {
        if self.upstream.is_none() {
            let up = Upstream::connect(&self.ctx.upstream, &self.ctx.hostname, self.ctx.timeouts)
                .await
                .inspect_err(|r| tracing::warn!(reason = %r.text, "provider not usable"))?;
            self.upstream = Some(up);
        }
        Ok(self.upstream.as_mut().expect("connected above"))
    }

    /// The SIZE envelopd announces: its own limit, or less if the provider's limit leaves less
    /// room after signing and encrypting (base64 adds a third, the signature a few KiB).
    fn size_limit(&self) -> usize {
        let ours = self.ctx.max_size;
        match self.upstream.as_ref().and_then(|u| u.size_limit) {
            Some(theirs) => ours.min(theirs.saturating_sub(64 * 1024) / 4 * 3),
            None => ours,
        }
    }

    /// The EHLO reply: envelopd's own extensions, plus what it relays when the provider has it.
    /// The provider is contacted now so AUTH and SMTPUTF8 match what it really offers; if it
    /// cannot be reached, EHLO still succeeds and MAIL or AUTH report the problem.
    async fn ehlo_reply(&mut self) -> String {
        let reachable = self.ensure_upstream().await.is_ok();
        let mut lines = vec![
            self.ctx.hostname.clone(),
            format!("SIZE {}", self.size_limit()),
            "8BITMIME".into(),
            "ENHANCEDSTATUSCODES".into(),
            "PIPELINING".into(),
            "CHUNKING".into(),
        ];
        let up = self.upstream.as_ref();
        if up.is_some_and(|u| u.has("SMTPUTF8")) {
            lines.push("SMTPUTF8".into());
        }
        // Delivery status notifications are the provider's to give: offered when it offers them.
        if up.is_some_and(|u| u.has("DSN")) {
            lines.push("DSN".into());
        }
        if self.ctx.tls.as_ref().is_some_and(|t| !t.implicit) && !self.secure() {
            lines.push("STARTTLS".into());
        }
        if self.auth_allowed_here() && self.login.is_none() {
            let mechs: Vec<&str> = ["PLAIN", "LOGIN"]
                .into_iter()
                .filter(|m| !reachable || up.is_some_and(|u| u.offers_auth(m)))
                .collect();
            if !mechs.is_empty() {
                lines.push(format!("AUTH {}", mechs.join(" ")));
            }
        }
        let mut text = String::new();
        for (i, l) in lines.iter().enumerate() {
            let sep = if i + 1 == lines.len() { ' ' } else { '-' };
            text.push_str(&format!("250{sep}{l}\r\n"));
        }
        text
    }

    async fn starttls(&mut self) -> std::io::Result<Flow> {
        let Some(tls) = self.ctx.tls.clone().filter(|_| !self.secure()) else {
            self.send(&Reply::new(454, "4.7.0", "TLS not available"))
                .await?;
            return Ok(Flow::Continue);
        };
        if !self.helo {
            self.send(&Reply::new(503, "5.5.1", "say EHLO first"))
                .await?;
            return Ok(Flow::Continue);
        }
        self.send(&Reply::new(220, "2.0.0", "ready to start TLS"))
            .await?;
        // Anything the client sent after STARTTLS in the clear would otherwise count as sent
        // over TLS (command injection, CVE-2011-0411): it is thrown away.
        if !self.inbuf.is_empty() {
            tracing::info!(
                bytes = self.inbuf.len(),
                "discarding plaintext sent after STARTTLS"
            );
            self.inbuf.clear();
        }
        if !self
            .client
            .accept_tls(tls.config, self.ctx.timeouts.connect)
            .await
        {
            return Ok(Flow::Quit);
        }
        // RFC 3207 §4.2: everything learnt before TLS is forgotten.
        self.reset().await;
        self.helo = false;
        self.login = None;
        Ok(Flow::Continue)
    }

    /// Relays AUTH PLAIN or LOGIN to the provider line by line. The password passes through
    /// memory that is wiped afterwards and is never logged; only the login name is kept, to
    /// decide which keys this session may sign with.
    async fn auth(&mut self, mechanism: u64, initial: String) -> std::io::Result<Reply> {
        let initial = Zeroizing::new(initial);
        if !self.helo {
            return Ok(Reply::new(503, "5.5.1", "say EHLO first"));
        }
        if self.login.is_some() {
            return Ok(Reply::new(503, "5.5.1", "already authenticated"));
        }
        if self.mail_from.is_some() {
            return Ok(Reply::new(
                503,
                "5.5.1",
                "AUTH is not allowed during a transaction",
            ));
        }
        if !self.auth_allowed_here() {
            return Ok(Reply::new(
                538,
                "5.7.11",
                "encryption required: use STARTTLS first",
            ));
        }
        let early_name = (mechanism == smtp_proto::AUTH_PLAIN && !initial.is_empty())
            .then(|| login_name("PLAIN", &[Zeroizing::new(initial.as_bytes().to_vec())]))
            .flatten();
        if let Some(wait) = self
            .ctx
            .auth_throttle
            .blocked(self.peer.ip(), early_name.as_deref())
        {
            tracing::warn!(peer = %self.peer, "login refused: too many failed logins");
            return Ok(Reply::new(
                454,
                "4.7.0",
                format!(
                    "too many failed logins; try again in {} minutes",
                    wait.as_secs() / 60 + 1
                ),
            ));
        }
        let name = match mechanism {
            smtp_proto::AUTH_PLAIN => "PLAIN",
            smtp_proto::AUTH_LOGIN => "LOGIN",
            _ => {
                return Ok(Reply::new(
                    504,
                    "5.5.4",
                    "only AUTH PLAIN and LOGIN are supported",
                ))
            }
        };
        let up = match self.ensure_upstream().await {
            Ok(up) => up,
            Err(r) => {
                return Ok(Reply::new(
                    454,
                    "4.7.0",
                    format!("cannot check the password now: {}", r.text),
                ))
            }
        };
        if !up.offers_auth(name) {
            return Ok(Reply::new(
                504,
                "5.5.4",
                format!("the provider does not offer AUTH {name}"),
            ));
        }
        let mut line = Zeroizing::new(format!("AUTH {name}").into_bytes());
        let mut responses: Vec<Zeroizing<Vec<u8>>> = Vec::new();
        if !initial.is_empty() {
            line.push(b' ');
            line.extend_from_slice(initial.as_bytes());
            responses.push(Zeroizing::new(initial.as_bytes().to_vec()));
        }
        let mut reply = self.relay_secret(&line).await;
        while let Ok(r) = &reply {
            if r.code != 334 {
                break;
            }
            let challenge = format!("334 {}\r\n", r.text);
            self.send_raw(challenge.as_bytes()).await?;
            let Some(answer) = self.read_line(MAX_AUTH_LINE).await? else {
                return Ok(Reply::new(500, "5.5.6", "authentication line too long"));
            };
            responses.push(Zeroizing::new(answer.to_vec()));
            reply = self.relay_secret(&answer).await;
        }
        let reply = match reply {
            Ok(r) => r,
            Err(r) => {
                self.upstream = None;
                return Ok(r);
            }
        };
        // Only 235 (RFC 4954) counts: a server that says 250 to AUTH has not checked anything.
        if reply.code == 235 {
            let login = login_name(name, &responses);
            tracing::info!(
                login = login.as_deref().unwrap_or("?"),
                "authenticated by the provider"
            );
            self.login = Some(login.unwrap_or_default());
        } else {
            tracing::info!(code = reply.code, "the provider refused the login");
            if reply.code == 535 {
                let login = login_name(name, &responses);
                self.ctx
                    .auth_throttle
                    .failed(self.peer.ip(), login.as_deref());
            }
        }
        Ok(reply)
    }

    async fn relay_secret(&mut self, line: &[u8]) -> Result<Reply, Reply> {
        match self.upstream.as_mut() {
            Some(up) => up.secret_line(line).await,
            None => Err(Reply::new(451, "4.4.1", "provider connection lost")),
        }
    }

    /// One raw line from the client (without CRLF), or `None` if it is longer than `max`.
    async fn read_line(&mut self, max: usize) -> std::io::Result<Option<Zeroizing<Vec<u8>>>> {
        loop {
            if let Some(end) = memchr::memchr(b'\n', &self.inbuf) {
                if end > max {
                    self.inbuf.drain(..=end);
                    return Ok(None);
                }
                let mut line = Zeroizing::new(self.inbuf.drain(..=end).collect::<Vec<u8>>());
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Ok(Some(line));
            }
            if self.inbuf.len() > max {
                self.inbuf.clear();
                return Ok(None);
            }
            if !self.fill(false).await? {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "client left during AUTH",
                ));
            }
        }
    }

    async fn reset(&mut self) {
        if self.mail_from.is_some() {
            if let Some(up) = self.upstream.as_mut() {
                if up.command("RSET").await.is_err() {
                    self.upstream = None;
                }
            }
        }
        self.mail_from = None;
        self.mail_params.clear();
        self.rcpts.clear();
        self.rcpt_params.clear();
        self.chunks = None;
        self.chunks_too_big = false;
    }

    async fn abort_chunks(&mut self) {
        self.reset().await;
    }

    /// The refusal for a logged-in user sending as an identity that is not theirs, when
    /// enforcement asks for it (otherwise such mail goes out unsigned).
    fn foreign_sender(&self, address: &str) -> Option<Reply> {
        let login = self.login.as_deref()?;
        if !self.ctx.rules().refuse_foreign_sender {
            return None;
        }
        let i = identity_for(&self.ctx.identities, address)?;
        (!i.usable_by(login)).then(|| {
            tracing::warn!(%address, login, "refused: this login may not send as that identity");
            Reply::new(
                550,
                "5.7.1",
                format!("{login} may not send as {address} (envelopd binds each signing identity to its users)"),
            )
        })
    }

    /// MAIL, checked here (EHLO, no open transaction, authentication, who may send as whom,
    /// the size); what passes is the command for the provider, sent by [`Self::relayed`].
    async fn mail(&mut self, from: smtp_proto::MailFrom<String>) -> Result<PendingMail, Reply> {
        if !self.helo {
            return Err(Reply::new(503, "5.5.1", "say EHLO first"));
        }
        if self.mail_from.is_some() {
            return Err(Reply::new(503, "5.5.1", "nested MAIL command"));
        }
        if self.ctx.require_auth && self.login.is_none() {
            return Err(Reply::new(530, "5.7.0", "authentication required"));
        }
        if let Some(refusal) = self.foreign_sender(&from.address) {
            return Err(refusal);
        }
        let limit = self.size_limit();
        if from.size > limit {
            return Err(Reply::new(
                552,
                "5.3.4",
                format!("message too big (limit {limit} bytes)"),
            ));
        }
        let mut params = String::new();
        let smtputf8 = from.flags & smtp_proto::MAIL_SMTPUTF8 != 0;
        let up = self.ensure_upstream().await?;
        // BODY=8BITMIME only to a provider that announced it (RFC 6152 §3): envelopd always
        // offers 8BITMIME to mail programs and makes the message 7-bit itself otherwise
        // (`outgoing::to_7bit`).
        if from.flags & smtp_proto::MAIL_BODY_8BITMIME != 0 && up.has("8BITMIME") {
            params.push_str(" BODY=8BITMIME");
        }
        if up.has("DSN") {
            params.push_str(&crate::upstream::dsn_mail_params(&from));
        }
        if smtputf8 {
            if !up.has("SMTPUTF8") {
                return Err(Reply::new(555, "5.5.4", "SMTPUTF8 is not available"));
            }
            params.push_str(" SMTPUTF8");
        }
        Ok(PendingMail {
            address: from.address,
            params,
        })
    }

    /// The RCPT commands a pipelining client sent right behind the one being handled, taken
    /// out of the input (only when the provider pipelines too, so they can go on together).
    /// Stops at the first other command or incomplete line, which the main loop then reads.
    fn buffered_rcpts(&mut self) -> Vec<smtp_proto::RcptTo<String>> {
        let mut found = Vec::new();
        if !self.upstream.as_ref().is_some_and(|u| u.has("PIPELINING")) {
            return found;
        }
        let mut receiver = RequestReceiver::default();
        let mut taken = 0;
        while found.len() < crate::upstream::PIPELINE_GROUP {
            let mut iter = self.inbuf[taken..].iter();
            let Ok(Request::Rcpt { to }) = receiver.ingest(&mut iter) else {
                break;
            };
            taken = self.inbuf.len() - iter.as_slice().len();
            found.push(to.into_owned());
        }
        self.inbuf.drain(..taken);
        found
    }

    /// A checked MAIL (if any) and the RCPTs sent with it or on their own: one, or several a
    /// pipelining client sent together. Each RCPT is checked here (MAIL first, the recipient
    /// limit); MAIL and the RCPTs that pass go to the provider in one write, with DSN
    /// parameters when it offers DSN (without it they are dropped, as envelopd then does not
    /// offer DSN either); each command gets one reply, in order. A distant provider answers
    /// MAIL and ten recipients in one round trip instead of eleven.
    async fn relayed(
        &mut self,
        mail: Option<PendingMail>,
        group: Vec<smtp_proto::RcptTo<String>>,
    ) -> Vec<Reply> {
        let mut replies: Vec<Option<Reply>> = Vec::with_capacity(group.len());
        let mut lines = Vec::new();
        if let Some(m) = &mail {
            lines.push(format!("MAIL FROM:<{}>{}", m.address, m.params));
        }
        let mut sent = Vec::new();
        let dsn = self.upstream.as_ref().is_some_and(|u| u.has("DSN"));
        for to in group {
            if self.mail_from.is_none() && mail.is_none() {
                replies.push(Some(Reply::new(503, "5.5.1", "need MAIL before RCPT")));
            } else if self.rcpts.len() + sent.len() >= self.ctx.max_recipients {
                // Counted as if every earlier one were accepted: at worst a recipient is
                // deferred (4xx, the client sends it again) when others before it were refused.
                replies.push(Some(Reply::new(
                    452,
                    "4.5.3",
                    format!("too many recipients (at most {})", self.ctx.max_recipients),
                )));
            } else {
                let params = if dsn {
                    crate::upstream::dsn_rcpt_params(&to)
                } else {
                    String::new()
                };
                lines.push(format!("RCPT TO:<{}>{params}", to.address));
                sent.push((to.address, params));
                replies.push(None);
            }
        }
        let answers = match self.upstream.as_mut() {
            Some(up) if !lines.is_empty() => up.pipelined(&lines).await,
            Some(_) => Vec::new(),
            None => vec![Err(Reply::new(451, "4.4.1", "provider connection lost")); lines.len()],
        };
        let mut answers = answers.into_iter();
        let mut out = Vec::with_capacity(replies.len() + 1);
        if let Some(m) = mail {
            out.push(match answers.next().expect("one per line") {
                Ok(r) => {
                    if r.is_positive() {
                        self.mail_from = Some(m.address);
                        self.mail_params = m.params;
                    }
                    r
                }
                Err(r) => {
                    self.upstream = None;
                    r
                }
            });
        }
        let mut sent = sent.into_iter();
        for r in replies {
            out.push(r.unwrap_or_else(|| {
                let (address, params) = sent.next().expect("one per line");
                match answers.next().expect("one per line") {
                    // The provider refused MAIL and (against RFC 5321) took a RCPT anyway:
                    // there is no transaction, so the client hears what it would without
                    // pipelining.
                    Ok(r) if r.is_positive() && self.mail_from.is_none() => {
                        Reply::new(503, "5.5.1", "need MAIL before RCPT")
                    }
                    Ok(r) => {
                        if r.is_positive() {
                            self.rcpts.push(address);
                            self.rcpt_params.push(params);
                        }
                        r
                    }
                    Err(r) => {
                        self.upstream = None;
                        r
                    }
                }
            }));
        }
        out
    }

    /// Collects the message, decides, sends, and answers with the provider's final reply.
    async fn data(&mut self) -> std::io::Result<()> {
        if self.mail_from.is_none() {
            return self
                .send(&Reply::new(503, "5.5.1", "need MAIL before DATA"))
                .await;
        }
        if self.rcpts.is_empty() {
            return self
                .send(&Reply::new(554, "5.5.1", "no valid recipients"))
                .await;
        }
        self.send(&Reply::new(354, "", "end data with <CR><LF>.<CR><LF>"))
            .await?;
        let limit = self.size_limit();
        let mut message = Vec::with_capacity(64 * 1024);
        let mut receiver = DataReceiver::new();
        let mut too_big = false;
        loop {
            let mut iter = self.inbuf.iter();
            let done = if too_big {
                // Keep reading to the end of the data, but do not keep it.
                let mut sink = Vec::new();
                receiver.ingest(&mut iter, &mut sink)
            } else {
                receiver.ingest(&mut iter, &mut message)
            };
            let consumed = self.inbuf.len() - iter.as_slice().len();
            self.inbuf.drain(..consumed);
            if message.len() > limit {
                too_big = true;
                message = Vec::new();
            }
            if done {
                break;
            }
            if !self.fill(false).await? {
                // The client went away mid-DATA: nothing was sent, nothing is lost.
                self.upstream = None;
                return Ok(());
            }
        }
        let reply = if too_big {
            self.reset().await;
            Reply::new(
                552,
                "5.3.4",
                format!("message too big (limit {limit} bytes)"),
            )
        } else {
            self.deliver(message).await
        };
        self.mail_from = None;
        self.mail_params.clear();
        self.rcpts.clear();
        self.rcpt_params.clear();
        self.send(&reply).await
    }

    /// One BDAT chunk (RFC 3030): collected like DATA, delivered after the LAST chunk.
    async fn bdat(&mut self, size: usize, last: bool) -> std::io::Result<()> {
        let problem = if self.mail_from.is_none() {
            Some(Reply::new(503, "5.5.1", "need MAIL before BDAT"))
        } else if self.rcpts.is_empty() {
            Some(Reply::new(554, "5.5.1", "no valid recipients"))
        } else {
            None
        };
        let limit = self.size_limit();
        let keep = problem.is_none() && !self.chunks_too_big;
        let mut chunk = Vec::new();
        if keep && size <= limit {
            let mut receiver = BdatReceiver::new(size, last);
            let mut buf = self.chunks.take().unwrap_or_default();
            loop {
                let mut iter = self.inbuf.iter();
                let done = receiver.ingest(&mut iter, &mut buf);
                let consumed = self.inbuf.len() - iter.as_slice().len();
                self.inbuf.drain(..consumed);
                if done {
                    break;
                }
                if !self.fill(false).await? {
                    self.upstream = None;
                    return Ok(());
                }
            }
            chunk = buf;
        } else {
            // The chunk's bytes must still be read past, or they would be taken for commands.
            let mut receiver = DummyDataReceiver::new_bdat(size);
            loop {
                let mut iter = self.inbuf.iter();
                let done = receiver.ingest(&mut iter);
                let consumed = self.inbuf.len() - iter.as_slice().len();
                self.inbuf.drain(..consumed);
                if done {
                    break;
                }
                if !self.fill(false).await? {
                    self.upstream = None;
                    return Ok(());
                }
            }
            if problem.is_none() {
                self.chunks_too_big = true;
            }
        }
        if let Some(r) = problem {
            return self.send(&r).await;
        }
        if chunk.len() > limit {
            self.chunks_too_big = true;
            chunk = Vec::new();
        }
        if !last {
            self.chunks = Some(chunk);
            let r = Reply::new(250, "2.0.0", format!("{size} octets received"));
            return self.send(&r).await;
        }
        let reply = if self.chunks_too_big {
            self.reset().await;
            Reply::new(
                552,
                "5.3.4",
                format!("message too big (limit {limit} bytes)"),
            )
        } else {
            self.chunks = None;
            self.deliver(chunk).await
        };
        self.mail_from = None;
        self.mail_params.clear();
        self.rcpts.clear();
        self.rcpt_params.clear();
        self.chunks = None;
        self.chunks_too_big = false;
        self.send(&reply).await
    }

    /// Transforms and relays one message; then writes its audit line.
    async fn deliver(&mut self, message: Vec<u8>) -> Reply {
        self.audit = ("error", "-".into(), "-".into(), 0);
        let rcpts = self.rcpts.clone();
        let from = self.mail_from.clone().unwrap_or_default();
        let started = std::time::Instant::now();
        let reply = self.deliver_inner(message).await;
        let (decision, cipher, signed_as, copies) = &self.audit;
        net::observe::get().message(
            net::observe::RecentDecision {
                at: SystemTime::now(),
                from: if from.is_empty() {
                    "<>".into()
                } else {
                    from.clone()
                },
                recipients: rcpts.len(),
                decision: decision.to_string(),
                cipher: cipher.clone(),
                signed_as: signed_as.clone(),
                reply: reply.code,
            },
            started.elapsed(),
        );
        tracing::info!(
            target: "envelopd::audit",
            "audit v1 proto=smtp peer={} login={} from={} rcpts={} decision={decision} cipher={cipher} signed_as={signed_as} copies={copies} reply={}",
            self.peer.ip(),
            audit_word(self.login.as_deref().unwrap_or("-")),
            audit_word(if from.is_empty() { "<>" } else { &from }),
            audit_word(&rcpts.join(",")),
            reply.code
        );
        reply
    }

    async fn deliver_inner(&mut self, message: Vec<u8>) -> Reply {
        let rcpts = self.rcpts.clone();
        let from = self.mail_from.clone().unwrap_or_default();
        let params = self.mail_params.clone();
        let facts = MessageFacts::from_message(&message, rcpts.clone());
        if let Some(refusal) = facts.from.as_deref().and_then(|f| self.foreign_sender(f)) {
            self.audit.0 = "refused";
            self.reset().await;
            return refusal;
        }
        let now = SystemTime::now();
        let rules = self.ctx.rules();
        if let Some(dir) = self.ctx.directory.clone() {
            complete_from_directory(&self.ctx.store, dir, &rcpts, now).await;
        }
        // Decided and transformed under the store's read lock, released before any network wait.
        let prepared = {
            let store = self.ctx.store.read().unwrap_or_else(|e| e.into_inner());
            let ids = SessionIdentities::new(&self.ctx.identities, self.login.as_deref(), &store);
            let decision = decide(&facts, &store, &ids, &rules.policy, now);
            let signer = match &decision {
                Decision::Deliver {
                    sign_as: Some(a), ..
                } => ids.identity_for(a),
                _ => None,
            };
            let encryption_cert = signer.and_then(|i| i.encryption_cert.clone());
            let signer = signer.map(|i| &i.identity);
            let opts = SignOptions {
                digest: None,
                rsa_padding: smime::RsaPadding::Pkcs1v15,
                signing_time: now,
                encryption_cert,
            };
            log_decision(&decision, rcpts.len(), message.len());
            self.audit = audit_of(&decision);
            copies(
                &message,
                &rcpts,
                &decision,
                signer,
                &opts,
                rules.header_protection,
            )
        };
        // A provider without 8BITMIME gets 7-bit copies, or the client a refusal (RFC 6152 §3).
        let eight_bit_ok = self.upstream.as_ref().is_some_and(|u| u.has("8BITMIME"));
        let prepared = prepared.and_then(|mut out| {
            if !eight_bit_ok {
                for copy in &mut out {
                    crate::outgoing::to_7bit(copy, facts.already_protected)?;
                }
            }
            Ok(out)
        });
        let out = match prepared {
            Ok(c) => c,
            Err(Refusal::Policy {
                code,
                enhanced,
                text,
            }) => {
                self.reset().await;
                return Reply::new(code, enhanced, text);
            }
            Err(Refusal::Crypto(e)) => {
                tracing::error!(error = %e, "signing or encryption failed");
                self.reset().await;
                return Reply::new(
                    451,
                    "4.7.0",
                    format!("envelopd could not sign or encrypt the message: {e}"),
                );
            }
        };
        drop(message);
        let Some(up) = self.upstream.as_mut() else {
            return Reply::new(451, "4.4.1", "provider connection lost");
        };
        // The common case: one copy for exactly the recipients already given to the provider,
        // so the open transaction continues and the provider's reply is the client's reply.
        if out.len() == 1 && out[0].recipients == rcpts {
            return match up.data(&out[0].message).await {
                Ok(r) => r,
                Err(r) => {
                    self.upstream = None;
                    r
                }
            };
        }
        // Several copies (Bcc privacy, split): one transaction each.
        if let Err(r) = up.command("RSET").await {
            self.upstream = None;
            return r;
        }
        let mut delivered: Vec<&str> = Vec::new();
        for copy in &out {
            let rcpt_params: Vec<&str> = copy
                .recipients
                .iter()
                .map(|r| {
                    rcpts
                        .iter()
                        .position(|x| x == r)
                        .map_or("", |i| self.rcpt_params[i].as_str())
                })
                .collect();
            match up
                .transaction(
                    &from,
                    &params,
                    &copy.recipients,
                    &rcpt_params,
                    &copy.message,
                )
                .await
            {
                Ok(r) if r.is_positive() => {
                    delivered.extend(copy.recipients.iter().map(String::as_str))
                }
                Ok(r) | Err(r) => {
                    if delivered.is_empty() {
                        // Nothing went out: the client gets the provider's answer and keeps the message.
                        return r;
                    }
                    // Some copies are out and cannot be recalled: say exactly who has it.
                    return Reply::new(
                        554,
                        "5.0.0",
                        format!(
                            "partly delivered: accepted for {}; refused for {}: {} {}",
                            delivered.join(", "),
                            copy.recipients.join(", "),
                            r.code,
                            r.text
                        ),
                    );
                }
            }
        }
        Reply::new(
            250,
            "2.0.0",
            format!("delivered in {} separately protected copies", out.len()),
        )
    }
}

/// A MAIL command that passed envelopd's checks, on its way to the provider.
struct PendingMail {
    /// The sender address.
    address: String,
    /// The parameters for the provider (BODY, SMTPUTF8, DSN).
    params: String,
}

/// The login name from the client's AUTH responses, read as the IMAP side reads it
/// ([`net::login::sasl_name`]). The password part is never copied out.
fn login_name(mechanism: &str, responses: &[Zeroizing<Vec<u8>>]) -> Option<String> {
    let first = responses.first()?;
    let decoded = Zeroizing::new(smime::mime::base64_decode(first).ok()?);
    net::login::sasl_name(mechanism, &decoded)
}

/// A value for the audit line: no spaces or control characters, so the line stays one line of
/// `key=value` words whatever a client sends as an address.
fn audit_word(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_whitespace() || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .take(2000)
        .collect()
}

/// The audit facts of a decision: what was done (`encrypted`, `split`, `signed`, `plaintext`,
/// `refused`, `passthrough`), the cipher, the signing identity and the number of copies.
fn audit_of(decision: &Decision) -> (&'static str, String, String, usize) {
    match decision {
        Decision::PassThrough => ("passthrough", "-".into(), "-".into(), 1),
        Decision::Refuse { .. } => ("refused", "-".into(), "-".into(), 0),
        Decision::Deliver {
            sign_as,
            deliveries,
            ..
        } => {
            let encrypted: Vec<_> = deliveries
                .iter()
                .filter_map(|d| d.encrypt.as_ref())
                .collect();
            let what = if !encrypted.is_empty() && encrypted.len() == deliveries.len() {
                "encrypted"
            } else if !encrypted.is_empty() {
                "split"
            } else if sign_as.is_some() {
                "signed"
            } else {
                "plaintext"
            };
            let mut ciphers: Vec<String> = encrypted
                .iter()
                .map(|e| e.cipher.label().to_ascii_lowercase())
                .collect();
            ciphers.dedup();
            (
                what,
                if ciphers.is_empty() {
                    "-".into()
                } else {
                    ciphers.join(",")
                },
                sign_as.clone().unwrap_or_else(|| "-".into()),
                deliveries.len(),
            )
        }
    }
}

/// One event per decision: what was done, to how many, never who wrote what.
fn log_decision(decision: &Decision, recipients: usize, size: usize) {
    match decision {
        Decision::PassThrough => {
            tracing::info!(
                recipients,
                size,
                "already protected by the client: passed through"
            )
        }
        Decision::Refuse { text, .. } => {
            tracing::info!(recipients, size, reason = %text, "refused")
        }
        Decision::Deliver {
            sign_as,
            deliveries,
            unprotected,
        } => {
            let encrypted = deliveries.iter().filter(|d| d.encrypt.is_some()).count();
            // Debug only: the audit line after the provider's answer says the same at info level,
            // and a second line per message cost about 1 % of the proxy's CPU.
            tracing::debug!(
                recipients,
                size,
                signed_as = sign_as.as_deref().unwrap_or("-"),
                copies = deliveries.len(),
                encrypted_copies = encrypted,
                "sending"
            );
            for (address, why) in unprotected {
                tracing::warn!(%address, reason = %why, "sent unencrypted (policy fallback)");
            }
        }
    }
}

fn syntax_reply(e: &smtp_proto::Error) -> Reply {
    match e {
        smtp_proto::Error::UnknownCommand => Reply::new(500, "5.5.2", "unknown command"),
        smtp_proto::Error::ResponseTooLong => Reply::new(500, "5.5.6", "line too long"),
        smtp_proto::Error::InvalidSenderAddress => Reply::new(501, "5.1.7", "bad sender address"),
        smtp_proto::Error::InvalidRecipientAddress => {
            Reply::new(501, "5.1.3", "bad recipient address")
        }
        smtp_proto::Error::SyntaxError { syntax } => {
            Reply::new(501, "5.5.2", format!("syntax: {syntax}"))
        }
        smtp_proto::Error::InvalidParameter { param } => {
            Reply::new(501, "5.5.4", format!("invalid parameter {param}"))
        }
        smtp_proto::Error::UnsupportedParameter { param } => {
            Reply::new(504, "5.5.4", format!("unsupported parameter {param}"))
        }
        other => Reply::new(500, "5.5.2", format!("{other:?}")),
    }
}
