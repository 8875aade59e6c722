//! The client-facing SMTP session: a thin tokio driver around the sans-I/O [`crate::core`]. The
//! core decides every reply; the driver reads and writes the client's connection (timeouts,
//! STARTTLS, shutdown), talks to the provider through [`crate::upstream`], and runs the end of
//! each transaction in [`crate::deliver`]. **The client's final reply is the provider's reply
//! to the transformed message**: there is no local queue, so if the provider does not take the
//! message, the client gets 4xx/5xx and keeps it.
//!
//! AUTH PLAIN and LOGIN are relayed to the provider, which checks the user's own password:
//! envelopd stores none and logs none. Clients may use STARTTLS or implicit TLS; off loopback,
//! AUTH is offered only over TLS and required before MAIL.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use std::net::IpAddr;

use certstore::CertStore;
use policy::{Identities, PolicyConfig};
use smime::{Cert, Identity};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::time::timeout;

use crate::core::{lost, Answer, Config, Core, Gate, Step, Work};
use crate::upstream::{Reply, Timeouts, Upstream};
use net::conn::Conn;
use net::target::{ClientTls, Target};

/// One signing identity and the sender addresses it may sign for.
pub struct SenderIdentity {
    /// The addresses (the certificate must name each).
    pub addresses: Vec<String>,
    /// Key and certificates (shared with the reading side, which decrypts with the same key).
    pub identity: std::sync::Arc<Identity>,
    /// A separate encryption certificate for the Sent copy, if any.
    pub encryption_cert: Option<Cert>,
    /// Provider login names (besides the addresses) whose sessions may sign with this key.
    pub logins: Vec<String>,
    /// `addresses` parsed once (those that are addresses): every message's sender is looked up
    /// here two or three times, and parsing both sides of each comparison every time was a
    /// tenth of the policy's work per message.
    parsed: Vec<smime::Address>,
}

impl SenderIdentity {
    /// An identity signing for `addresses` (and usable by `logins`) with `identity`.
    pub fn new(
        addresses: Vec<String>,
        identity: impl Into<std::sync::Arc<Identity>>,
        encryption_cert: Option<Cert>,
        logins: Vec<String>,
    ) -> Self {
        let identity = identity.into();
        let parsed = addresses
            .iter()
            .filter_map(|a| smime::Address::parse(a).ok())
            .collect();
        SenderIdentity {
            addresses,
            identity,
            encryption_cert,
            logins,
            parsed,
        }
    }

    /// True when one of the identity's addresses is `address` (the one comparison rule).
    pub fn signs_for(&self, address: &smime::Address) -> bool {
        self.parsed.contains(address)
    }

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
    let wanted = smime::Address::parse(address).ok()?;
    identities.iter().find(|i| i.signs_for(&wanted))
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

/// The tokio driver around one [`Core`]: reads and writes the client's connection, talks to
/// the provider, and hands every outcome back to the core. It decides nothing itself.
struct Session {
    client: Conn,
    peer: SocketAddr,
    ctx: Arc<Context>,
    shutdown: tokio::sync::watch::Receiver<bool>,
    upstream: Option<Upstream>,
}

impl Gate for Context {
    fn refuse_sender(&self, login: &str, address: &str) -> Option<Reply> {
        if !self.rules().refuse_foreign_sender {
            return None;
        }
        let i = identity_for(&self.identities, address)?;
        (!i.usable_by(login)).then(|| {
            tracing::warn!(%address, login, "refused: this login may not send as that identity");
            Reply::new(
                550,
                "5.7.1",
                format!("{login} may not send as {address} (envelopd binds each signing identity to its users)"),
            )
        })
    }

    fn locked(&self, peer: IpAddr, login: Option<&str>) -> Option<Duration> {
        self.auth_throttle.blocked(peer, login)
    }

    fn login_failed(&self, peer: IpAddr, login: Option<&str>) {
        self.auth_throttle.failed(peer, login)
    }
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
            upstream: None,
        }
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
        let cfg = Config {
            hostname: self.ctx.hostname.clone(),
            starttls: self.ctx.tls.as_ref().is_some_and(|t| !t.implicit),
            secure: self.client.is_tls(),
            peer: self.peer.ip(),
            require_auth: self.ctx.require_auth,
            max_size: self.ctx.max_size,
            max_recipients: self.ctx.max_recipients,
        };
        let gate: Arc<dyn Gate> = self.ctx.clone();
        let mut core = Core::new(cfg, gate);
        // The clock of the command line now arriving: the whole line must arrive within the
        // client timeout, not each byte of it, so a client trickling a byte at a time
        // (slowloris) is cut off like a silent one (RFC 5321 §4.5.3.2: 5 minutes per command).
        let mut clock = net::conn::LineClock::default();
        let mut chunk = vec![0u8; 8192];
        loop {
            match core.poll() {
                // A client that reads nothing for the client timeout is dropped (`send_all`
                // flushes, so a reply behind TLS leaves now).
                Step::Send(bytes) => {
                    self.client
                        .send_all(&bytes, self.ctx.client_timeout)
                        .await?
                }
                Step::Read {
                    between_commands,
                    partial,
                } => {
                    clock.note(partial);
                    let wait = clock.wait(self.ctx.client_timeout, self.ctx.client_timeout);
                    match self.read(&mut chunk, wait, between_commands).await? {
                        Input::Bytes(n) => core.receive(&chunk[..n]),
                        Input::Closed => core.client_closed(),
                        Input::TimedOut => core.timed_out(),
                        Input::ShuttingDown => core.shutting_down(),
                    }
                }
                Step::Do(work) => {
                    let answer = self.perform(work).await;
                    core.answer(answer);
                }
                Step::DropProvider => self.upstream = None,
                Step::Close => break,
            }
        }
        if let Some(up) = self.upstream.take() {
            up.quit().await;
        }
        let _ = self.client.shutdown().await;
        Ok(())
    }

    /// Reads more client input. Between commands a shutdown ends the session; in the middle of
    /// a message it does not, so the message can still be delivered.
    async fn read(
        &mut self,
        chunk: &mut [u8],
        wait: Duration,
        between_commands: bool,
    ) -> std::io::Result<Input> {
        if between_commands && *self.shutdown.borrow() {
            return Ok(Input::ShuttingDown);
        }
        let mut shutdown = self.shutdown.clone();
        let stop = async {
            if between_commands {
                let _ = shutdown.changed().await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            r = timeout(wait, self.client.read(chunk)) => match r {
                Ok(Ok(0)) => Ok(Input::Closed),
                Ok(Ok(n)) => Ok(Input::Bytes(n)),
                Ok(Err(e)) => Err(e),
                Err(_) => Ok(Input::TimedOut),
            },
            _ = stop => Ok(Input::ShuttingDown),
        }
    }

    /// Does one piece of the core's work and says how it went.
    async fn perform(&mut self, work: Work) -> Answer {
        match work {
            Work::Connect => {
                match Upstream::connect(&self.ctx.upstream, &self.ctx.hostname, self.ctx.timeouts)
                    .await
                {
                    Ok(up) => {
                        let info = up.info.clone();
                        self.upstream = Some(up);
                        Answer::Connected(info)
                    }
                    Err(r) => Answer::Unreachable(r),
                }
            }
            Work::Relay(lines) => {
                let answers = match self.upstream.as_mut() {
                    Some(up) => up.pipelined(&lines).await,
                    None => vec![Err(lost()); lines.len()],
                };
                if answers.iter().any(Result::is_err) {
                    self.upstream = None;
                }
                Answer::Replies(answers)
            }
            Work::Secret(line) => {
                let answer = match self.upstream.as_mut() {
                    Some(up) => up.secret_line(&line).await,
                    None => Err(lost()),
                };
                if answer.is_err() {
                    self.upstream = None;
                }
                Answer::Replies(vec![answer])
            }
            Work::StartTls => match self.ctx.tls.clone() {
                Some(tls) => Answer::Tls(
                    self.client
                        .accept_tls(tls.config, self.ctx.timeouts.connect)
                        .await,
                ),
                None => Answer::Tls(false),
            },
            Work::Deliver(delivery) => {
                let reply =
                    crate::deliver::deliver(&self.ctx, &mut self.upstream, self.peer, *delivery)
                        .await;
                Answer::Delivered {
                    reply,
                    provider_lost: self.upstream.is_none(),
                }
            }
        }
    }
}

/// What a read from the client brought.
enum Input {
    Bytes(usize),
    Closed,
    TimedOut,
    ShuttingDown,
}
