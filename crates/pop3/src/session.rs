//! One proxied POP3 connection: a thin tokio driver around the sans-I/O [`crate::core`]. It
//! connects to the server (implicit TLS or STLS, certificate checked), reads both connections
//! with timeouts and does the core's work: opening stored messages with the login's keys on
//! the CPU pool ([`present`]), learning from valid signatures, keeping shown forms in the
//! [`Cache`], TLS with the client. It decides nothing.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use certstore::CertStore;
use net::conn::Conn;
use net::target::TargetTls;
use present::{BoundKey, Presentation};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

pub use crate::cache::Cache;
use crate::core::{Answer, Config, Core, Env, ServerCaps, Step, Stored, Work};
use crate::wire::MultiLine;

/// How long the server may take to answer a command the client waits for.
const SERVER_WAIT: Duration = Duration::from_secs(600);

/// The provider's POP3 server: host, port and transport security, as for SMTP and IMAP.
pub type Pop3Target = net::target::Target;

/// Everything the POP3 sessions share.
pub struct Pop3Context {
    /// The provider's POP3 server.
    pub upstream: Pop3Target,
    /// The practice's keys with who may use them (the same rule as on IMAP).
    pub keys: Arc<Vec<BoundKey>>,
    /// Trust anchors and certificates, shared with the other sides.
    pub store: Arc<std::sync::RwLock<CertStore>>,
    /// Where learnt certificates are also written.
    pub harvest_dir: Option<std::path::PathBuf>,
    /// Shown messages and their sizes.
    pub cache: Mutex<Cache>,
    /// The largest stored message envelopd opens.
    pub max_message: usize,
    /// How long connecting and the TLS handshake may take.
    pub connect_timeout: Duration,
    /// How long a client may be silent between commands (RFC 1939 §3: at least 10 minutes).
    pub client_timeout: Duration,
    /// How long one command line may take to arrive (slowloris bound).
    pub command_timeout: Duration,
    /// Connection limits of the listener.
    pub limits: net::conn::Limits,
    /// Failed-login counting, shared with the SMTP and IMAP listeners.
    pub auth_throttle: Arc<net::conn::AuthThrottle>,
    /// TLS offered to mail programs (STLS or implicit), if configured.
    pub client_tls: Option<net::target::ClientTls>,
}

impl Env for Pop3Context {
    fn cache(&self) -> &Mutex<Cache> {
        &self.cache
    }

    fn locked(&self, peer: IpAddr, user: Option<&str>) -> Option<Duration> {
        self.auth_throttle.blocked(peer, user)
    }

    fn login_failed(&self, peer: IpAddr, user: Option<&str>) {
        self.auth_throttle.failed(peer, user)
    }
}

/// Accepts mail programs until `shutdown` turns true; one task per connection. A POP3 session
/// holds nothing a restart could lose (deletions take effect only at the client's QUIT), so
/// sessions are closed at once.
pub async fn serve(
    listener: TcpListener,
    ctx: Arc<Pop3Context>,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    let limits = net::conn::Limits {
        refusal: (!ctx.client_tls.as_ref().is_some_and(|t| t.implicit))
            .then_some(&b"-ERR [SYS/TEMP] envelopd: too many connections, try again later\r\n"[..]),
        ..ctx.limits.clone()
    };
    net::conn::serve_connections(
        listener,
        shutdown,
        "pop3",
        Duration::ZERO,
        limits,
        move |stream, peer, _| run(stream, peer, ctx.clone()),
    )
    .await
}

/// The driver around one [`Core`].
async fn run(
    client: TcpStream,
    peer: std::net::SocketAddr,
    ctx: Arc<Pop3Context>,
) -> std::io::Result<()> {
    let Some((mut client, (mut up, greeting, caps))) = net::conn::start_reading_session(
        client,
        ctx.client_tls.as_ref(),
        ctx.connect_timeout,
        "pop3",
        &ctx.upstream,
        connect(&ctx),
        |why| format!("-ERR [SYS/TEMP] envelopd cannot reach the mail server: {why}\r\n"),
    )
    .await
    else {
        return Ok(());
    };
    let cfg = Config {
        secure: client.is_tls(),
        starttls: ctx.client_tls.as_ref().is_some_and(|t| !t.implicit),
        peer: peer.ip(),
        max_message: ctx.max_message,
        workers: net::cpu::width(),
    };
    let env: Arc<dyn Env> = ctx.clone();
    let mut core = Core::new(cfg, env, &greeting, caps);
    let result = drive(&mut core, &mut client, &mut up, &ctx).await;
    let _ = client.shutdown().await;
    result
}

async fn drive(
    core: &mut Core,
    client: &mut Conn,
    up: &mut Conn,
    ctx: &Arc<Pop3Context>,
) -> std::io::Result<()> {
    let mut cbuf = vec![0u8; 16384];
    let mut sbuf = vec![0u8; 65536];
    let mut clock = net::conn::LineClock::default();
    loop {
        loop {
            match core.poll() {
                // A program that stops reading in the middle of a large RETR is dropped after
                // one command timeout without progress.
                Step::ToClient(bytes) => client.send_all(&bytes, ctx.command_timeout).await?,
                Step::ToServer(bytes) => up.send_all(&bytes, ctx.command_timeout).await?,
                Step::Do(work) => {
                    let answer = perform(ctx, client, work).await;
                    core.answer(answer);
                }
                Step::Close => return Ok(()),
                Step::Idle => break,
            }
        }
        let wait = clock.wait(ctx.command_timeout, ctx.client_timeout);
        tokio::select! {
            r = timeout(wait, client.read(&mut cbuf)), if core.reading_client() => {
                match r {
                    Ok(Ok(0)) => core.client_closed(),
                    Ok(Ok(n)) => core.from_client(&cbuf[..n]),
                    Ok(Err(e)) => return Err(e),
                    Err(_) => core.timed_out(),
                }
                clock.note(core.partial_line());
            }
            r = timeout(SERVER_WAIT, up.read(&mut sbuf)), if core.reading_server() => {
                match r {
                    Ok(Ok(0)) => core.server_closed(),
                    Ok(Ok(n)) => core.from_server(&sbuf[..n]),
                    Ok(Err(e)) => return Err(e),
                    Err(_) => core.server_timed_out(),
                }
            }
            else => return Ok(()),
        }
    }
}

/// Does one piece of the core's work.
async fn perform(ctx: &Arc<Pop3Context>, client: &mut Conn, work: Work) -> Answer {
    match work {
        Work::Present { login, messages } => {
            // Every message of the batch on the CPU pool at once (one per core); the answers
            // keep the batch's order.
            let jobs = messages.into_iter().map(|m| {
                let ctx = ctx.clone();
                let login = login.clone();
                move || show(&ctx, login.as_deref(), m)
            });
            Answer::Presented(net::cpu::run_all(jobs).await)
        }
        Work::StartTls => match ctx.client_tls.clone() {
            Some(tls) => Answer::Tls(client.accept_tls(tls.config, ctx.connect_timeout).await),
            None => Answer::Tls(false),
        },
    }
}

/// Opens one stored message with the keys `login` may use, learns from it and keeps its shown
/// form.
fn show(ctx: &Pop3Context, login: Option<&str>, m: Stored) -> Arc<Presentation> {
    let p = {
        let keys = present::keys_for(&ctx.keys, login);
        Arc::new(present::present_shared(
            m.bytes,
            &keys,
            &ctx.store,
            SystemTime::now(),
        ))
    };
    present::learn(&ctx.store, ctx.harvest_dir.as_deref(), &p);
    tracing::info!(number = m.number, status = %p.status, "showing a protected message");
    if let Some(k) = m.key {
        if let Ok(mut c) = ctx.cache.lock() {
            c.insert(k, p.clone(), std::time::Instant::now());
        }
    }
    p
}

/// Connects to the POP3 server as a session would and returns its greeting; for `envelopd
/// check`.
pub async fn probe(ctx: &Pop3Context) -> Result<String, String> {
    let (mut up, greeting, _) = connect(ctx).await?;
    let _ = up.write_all(b"QUIT\r\n").await;
    let _ = up.flush().await;
    Ok(String::from_utf8_lossy(&greeting).trim().to_string())
}

/// Connects (TLS as configured), reads the greeting and the server's capabilities.
async fn connect(ctx: &Pop3Context) -> Result<(Conn, Vec<u8>, ServerCaps), String> {
    let t = &ctx.upstream;
    let mut up = t.open(ctx.connect_timeout).await?;
    let mut buf = Vec::new();
    let greeting = read_line(&mut up, &mut buf, ctx.connect_timeout).await?;
    if !greeting.starts_with(b"+OK") {
        return Err(format!(
            "the server refused: {}",
            String::from_utf8_lossy(&greeting).trim()
        ));
    }
    if let TargetTls::Starttls(_) = &t.tls {
        up.write_all(b"STLS\r\n").await.map_err(|e| e.to_string())?;
        up.flush().await.map_err(|e| e.to_string())?;
        let reply = read_line(&mut up, &mut buf, ctx.connect_timeout).await?;
        if !reply.starts_with(b"+OK") {
            return Err("the server refused STLS; envelopd reads no mail without TLS".into());
        }
        if !buf.is_empty() {
            return Err("the server sent data before the TLS handshake".into());
        }
        t.start_tls(&mut up, ctx.connect_timeout).await?;
    }
    up.write_all(b"CAPA\r\n").await.map_err(|e| e.to_string())?;
    up.flush().await.map_err(|e| e.to_string())?;
    let status = read_line(&mut up, &mut buf, ctx.connect_timeout).await?;
    let caps = if status.starts_with(b"+OK") {
        let lines = read_multi(&mut up, &mut buf, ctx.connect_timeout).await?;
        ServerCaps::parse(Some(&lines))
    } else {
        ServerCaps::parse(None)
    };
    if !buf.is_empty() {
        return Err("the server sent more than it was asked for".into());
    }
    Ok((up, greeting, caps))
}

/// One line from the server during the set-up (bounded).
async fn read_line(up: &mut Conn, buf: &mut Vec<u8>, limit: Duration) -> Result<Vec<u8>, String> {
    loop {
        if let Some(end) = memchr::memchr(b'\n', buf) {
            return Ok(buf.drain(..=end).collect());
        }
        if buf.len() > crate::core::MAX_LINE {
            return Err("the server sent an overlong line".into());
        }
        fill(up, buf, limit).await?;
    }
}

/// A multi-line answer during the set-up (bounded), byte-stuffing removed.
async fn read_multi(up: &mut Conn, buf: &mut Vec<u8>, limit: Duration) -> Result<Vec<u8>, String> {
    let mut m = MultiLine::new();
    let mut out = Vec::new();
    let mut bol = true;
    loop {
        let t = m.take(buf);
        bol = crate::wire::unstuff_into(&buf[..t.content], bol, &mut out);
        buf.drain(..t.consumed);
        if t.ended {
            return Ok(out);
        }
        if out.len() > crate::core::MAX_LINE {
            return Err("the server's capability list is too long".into());
        }
        fill(up, buf, limit).await?;
    }
}

async fn fill(up: &mut Conn, buf: &mut Vec<u8>, limit: Duration) -> Result<(), String> {
    let mut chunk = [0u8; 4096];
    let n = timeout(limit, up.read(&mut chunk))
        .await
        .map_err(|_| "the server did not answer in time".to_string())?
        .map_err(|e| e.to_string())?;
    if n == 0 {
        return Err("the server closed the connection".into());
    }
    buf.extend_from_slice(&chunk[..n]);
    Ok(())
}
