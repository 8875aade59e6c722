//! One connection type for every socket the proxy holds: plain TCP, TLS as a client (towards
//! the provider) or TLS as a server (towards mail programs). STARTTLS swaps the variant in place,
//! so the session code reads and writes the same way before and after the upgrade. Also the
//! accept loop the SMTP and IMAP listeners share.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A plain or TLS-protected TCP connection.
pub enum Conn {
    /// No TLS (yet).
    Plain(TcpStream),
    /// TLS towards a server.
    Client(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    /// TLS towards a client.
    Server(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    /// Left behind while a handshake is under way; every I/O on it fails.
    Gone,
}

/// [`Conn::send_all`] for any writer (the writing half of a split connection).
pub async fn send_all<W: AsyncWrite + Unpin>(
    w: &mut W,
    bytes: &[u8],
    limit: Duration,
) -> io::Result<()> {
    use tokio::io::AsyncWriteExt;
    for piece in bytes.chunks(WRITE_PIECE) {
        tokio::time::timeout(limit, w.write_all(piece)).await??;
    }
    // TLS buffers records: without a flush the last of it may never leave.
    tokio::time::timeout(limit, w.flush()).await?
}

/// The slowloris bound on a client's lines, the same for SMTP, IMAP and POP3: a line that has
/// begun must arrive whole within one line timeout, however slowly its bytes trickle in;
/// between lines the idle timeout applies.
#[derive(Debug, Default)]
pub struct LineClock(Option<std::time::Instant>);

impl LineClock {
    /// Notes whether part of a line is in: the clock starts with a line's first bytes and stops
    /// when the line is whole.
    pub fn note(&mut self, partial: bool) {
        if !partial {
            self.0 = None;
        } else if self.0.is_none() {
            self.0 = Some(std::time::Instant::now());
        }
    }

    /// Whether a line is partly in (its clock runs).
    pub fn running(&self) -> bool {
        self.0.is_some()
    }

    /// How long the next read may wait: what is left of `line` while a line is partly in,
    /// otherwise `idle`.
    pub fn wait(&self, line: Duration, idle: Duration) -> Duration {
        match self.0 {
            Some(started) => line.saturating_sub(started.elapsed()),
            None => idle,
        }
    }
}

/// How much must leave within one write timeout (see [`Conn::send_all`]).
pub const WRITE_PIECE: usize = 64 * 1024;

impl Conn {
    /// Writes and flushes `bytes`, giving up (`TimedOut`) when a piece of [`WRITE_PIECE`] bytes
    /// cannot leave within `limit`. The limit is on progress, not on the whole (RFC 5321
    /// §4.5.3.2.5 sets it per send): 30 MiB over a practice's 1 Mbit/s uplink take four minutes
    /// and must not fail for that while they keep moving, but a peer that stops reading is given
    /// up on after one `limit` instead of holding the session forever.
    pub async fn send_all(&mut self, bytes: &[u8], limit: Duration) -> io::Result<()> {
        send_all(self, bytes, limit).await
    }

    /// True once TLS protects the connection.
    pub fn is_tls(&self) -> bool {
        matches!(self, Conn::Client(_) | Conn::Server(_))
    }

    /// Starts TLS as a client; the plain stream must not have unread bytes buffered above it.
    pub async fn upgrade_client(
        &mut self,
        config: Arc<rustls::ClientConfig>,
        name: ServerName<'static>,
    ) -> io::Result<()> {
        let Conn::Plain(tcp) = std::mem::replace(self, Conn::Gone) else {
            return Err(io::Error::other("TLS is already active"));
        };
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await?;
        *self = Conn::Client(Box::new(tls));
        Ok(())
    }

    /// Starts TLS as a server.
    pub async fn upgrade_server(&mut self, config: Arc<rustls::ServerConfig>) -> io::Result<()> {
        let Conn::Plain(tcp) = std::mem::replace(self, Conn::Gone) else {
            return Err(io::Error::other("TLS is already active"));
        };
        let tls = tokio_rustls::TlsAcceptor::from(config).accept(tcp).await?;
        *self = Conn::Server(Box::new(tls));
        Ok(())
    }
}

impl Conn {
    /// Starts TLS towards a mail program within `limit`; false (logged) when the handshake
    /// failed or timed out, and the session should end.
    pub async fn accept_tls(&mut self, config: Arc<rustls::ServerConfig>, limit: Duration) -> bool {
        match tokio::time::timeout(limit, self.upgrade_server(config)).await {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                tracing::info!(error = %e, "TLS handshake with the mail program failed");
                false
            }
            Err(_) => {
                tracing::info!("TLS handshake with the mail program timed out");
                false
            }
        }
    }
}

/// How every reading session (IMAP, POP3) starts: TLS with the mail program first where it
/// is implicit, then the provider's server (`connect`); when that server cannot be used, the
/// mail program hears why in its protocol's words (`refusal`), the status page and the log
/// say so, and there is no session (`None`).
pub async fn start_reading_session<T>(
    client: TcpStream,
    client_tls: Option<&crate::target::ClientTls>,
    limit: Duration,
    protocol: &'static str,
    upstream: &crate::target::Target,
    connect: impl Future<Output = Result<T, String>>,
    refusal: impl FnOnce(&str) -> String,
) -> Option<(Conn, T)> {
    let mut client = Conn::Plain(client);
    if let Some(tls) = client_tls.filter(|t| t.implicit) {
        if !client.accept_tls(tls.config.clone(), limit).await {
            return None;
        }
    }
    let o = crate::observe::get();
    match connect.await {
        Ok(x) => {
            o.upstream_ok(protocol, upstream.describe());
            Some((client, x))
        }
        Err(why) => {
            o.upstream_error(protocol, upstream.describe(), &why);
            tracing::warn!(protocol, reason = %why, "mail server not usable");
            let _ =
                tokio::io::AsyncWriteExt::write_all(&mut client, refusal(&why).as_bytes()).await;
            None
        }
    }
}

/// How many connections a listener takes, and what a refused one is told.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Open connections at most, in all.
    pub total: usize,
    /// Open connections at most from one IP address.
    pub per_ip: usize,
    /// The line a refused client gets (`421 …` / `* BYE …`); none on implicit-TLS listeners,
    /// where plaintext would only confuse the client's TLS handshake.
    pub refusal: Option<&'static [u8]>,
    /// Every connection starts with a PROXY protocol v2 header (HAProxy in front): the client
    /// address is taken from it; connections without one are closed.
    pub proxy_protocol: bool,
    /// The balancers allowed to send PROXY headers; a connection from anywhere else is closed
    /// (a client must not be able to claim another address, least of all a loopback one).
    pub proxy_from: Vec<IpAddr>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            total: 1000,
            per_ip: 100,
            refusal: None,
            proxy_protocol: false,
            proxy_from: Vec::new(),
        }
    }
}

/// Accepts connections until `shutdown` turns true, one task each (`handle` gets the stream,
/// the peer and the shutdown signal), each in a tracing span with the protocol, a session number
/// and the peer; a broken connection ends only its own session. Connections beyond `limits`
/// (in all, or from one address) are told so and closed at once, so one misbehaving machine
/// cannot take the service from the others. Then stops accepting and lets open sessions finish
/// for at most `drain` before closing them.
pub async fn serve_connections<F, Fut>(
    listener: TcpListener,
    mut shutdown: watch::Receiver<bool>,
    proto: &'static str,
    drain: Duration,
    limits: Limits,
    handle: F,
) -> io::Result<()>
where
    F: Fn(TcpStream, SocketAddr, watch::Receiver<bool>) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = io::Result<()>> + Send + 'static,
{
    use tracing::Instrument;
    let mut sessions = tokio::task::JoinSet::new();
    let mut next_id: u64 = 0;
    let per_ip: Arc<Mutex<HashMap<IpAddr, usize>>> = Arc::default();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    // Out of file descriptors and the like: wait a moment rather than spin or
                    // stop serving everyone.
                    Err(e) => {
                        tracing::warn!(proto, error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                if sessions.len() >= limits.total {
                    tracing::warn!(proto, %peer, open = sessions.len(), "connection refused: too many connections");
                    crate::observe::get().refused(proto);
                    refuse(&mut sessions, stream, limits.refusal);
                    continue;
                }
                // Replies are small and each waits for the next command: no Nagle delay.
                let _ = stream.set_nodelay(true);
                next_id += 1;
                let id = next_id;
                let (per_ip, limits, handle, stop) =
                    (per_ip.clone(), limits.clone(), handle.clone(), shutdown.clone());
                sessions.spawn(async move {
                    let mut stream = stream;
                    let peer = if limits.proxy_protocol {
                        if !limits.proxy_from.contains(&peer.ip()) {
                            tracing::warn!(proto, %peer, "closed: PROXY protocol listener, and this is not a configured balancer");
                            return;
                        }
                        match tokio::time::timeout(Duration::from_secs(5), read_proxy_header(&mut stream)).await {
                            Ok(Ok(Some(real))) => real,
                            Ok(Ok(None)) => peer,
                            Ok(Err(e)) => {
                                tracing::warn!(proto, %peer, "closed: no valid PROXY protocol header ({e})");
                                return;
                            }
                            Err(_) => {
                                tracing::warn!(proto, %peer, "closed: no PROXY protocol header in time");
                                return;
                            }
                        }
                    } else {
                        peer
                    };
                    let from_peer = {
                        let m = per_ip.lock().unwrap_or_else(|e| e.into_inner());
                        *m.get(&peer.ip()).unwrap_or(&0)
                    };
                    if from_peer >= limits.per_ip {
                        tracing::warn!(proto, %peer, from_peer, "connection refused: too many connections from this address");
                        crate::observe::get().refused(proto);
                        if let Some(line) = limits.refusal {
                            let _ = tokio::time::timeout(
                                Duration::from_secs(1),
                                tokio::io::AsyncWriteExt::write_all(&mut stream, line),
                            )
                            .await;
                        }
                        return;
                    }
                    let _counted = PeerCount::new(per_ip, peer.ip());
                    let _open = OpenSession::new(proto);
                    let span = tracing::info_span!("session", proto, id, %peer);
                    async move {
                        tracing::debug!("connected");
                        if let Err(e) = handle(stream, peer, stop).await {
                            tracing::info!(error = %e, "connection ended");
                        }
                    }
                    .instrument(span)
                    .await;
                });
            }
            _ = shutdown.changed() => break,
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
        }
    }
    drop(listener);
    tracing::info!(
        proto,
        open = sessions.len(),
        "no new connections; letting open sessions finish"
    );
    let wait = async { while sessions.join_next().await.is_some() {} };
    if tokio::time::timeout(drain, wait).await.is_err() {
        tracing::warn!(
            proto,
            open = sessions.len(),
            "sessions still open after the drain time; closing them"
        );
        sessions.abort_all();
    }
    Ok(())
}

/// Counts a session as open in the metrics until dropped (also when its task is aborted).
struct OpenSession(&'static str);

impl OpenSession {
    fn new(proto: &'static str) -> Self {
        crate::observe::get().session_started(proto);
        OpenSession(proto)
    }
}

impl Drop for OpenSession {
    fn drop(&mut self) {
        crate::observe::get().session_ended(self.0);
    }
}

/// Tells a refused client so (briefly, in the background) and closes.
fn refuse(
    sessions: &mut tokio::task::JoinSet<()>,
    mut stream: TcpStream,
    line: Option<&'static [u8]>,
) {
    if let Some(line) = line {
        sessions.spawn(async move {
            let _ = tokio::time::timeout(
                Duration::from_secs(1),
                tokio::io::AsyncWriteExt::write_all(&mut stream, line),
            )
            .await;
        });
    }
}

/// The PROXY protocol v2 signature (HAProxy's proxy-protocol.txt §2.2).
const PROXY_V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

/// Reads a PROXY protocol v2 header: the client's address for PROXY, `None` for LOCAL (the
/// balancer's own health check). Parsed by the `ppp` crate; at most 16 + 1024 bytes.
async fn read_proxy_header(stream: &mut TcpStream) -> io::Result<Option<SocketAddr>> {
    use tokio::io::AsyncReadExt;
    let mut fixed = [0u8; 16];
    stream.read_exact(&mut fixed).await?;
    if &fixed[..12] != PROXY_V2_SIGNATURE {
        return Err(io::Error::other(
            "the connection does not start with a PROXY v2 header",
        ));
    }
    let len = u16::from_be_bytes([fixed[14], fixed[15]]) as usize;
    if len > 1024 {
        return Err(io::Error::other("PROXY header too long"));
    }
    let mut all = fixed.to_vec();
    all.resize(16 + len, 0);
    stream.read_exact(&mut all[16..]).await?;
    let header = ppp::v2::Header::try_from(&all[..])
        .map_err(|e| io::Error::other(format!("malformed PROXY header: {e:?}")))?;
    if header.command == ppp::v2::Command::Local {
        return Ok(None);
    }
    Ok(match header.addresses {
        ppp::v2::Addresses::IPv4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        ppp::v2::Addresses::IPv6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        _ => None,
    })
}

/// One open connection counted against its address; uncounted when the session ends.
struct PeerCount {
    map: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl PeerCount {
    fn new(map: Arc<Mutex<HashMap<IpAddr, usize>>>, ip: IpAddr) -> Self {
        *map.lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(ip)
            .or_insert(0) += 1;
        PeerCount { map, ip }
    }
}

impl Drop for PeerCount {
    fn drop(&mut self) {
        let mut m = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = m.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

fn gone() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        "connection lost during TLS setup",
    )
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Client(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Server(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Gone => Poll::Ready(Err(gone())),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Client(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Server(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Gone => Poll::Ready(Err(gone())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Client(s) => Pin::new(s).poll_flush(cx),
            Conn::Server(s) => Pin::new(s).poll_flush(cx),
            Conn::Gone => Poll::Ready(Err(gone())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Client(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Server(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Gone => Poll::Ready(Ok(())),
        }
    }
}

/// Failed logins per client address and per login name: after `max_failures` within `window`,
/// further attempts are refused without asking the provider until the window has passed, so a
/// password cannot be guessed through envelopd (and the provider does not lock the practice's
/// account because of someone else's guessing). Shared by the SMTP and IMAP listeners.
#[derive(Debug)]
pub struct AuthThrottle {
    max_failures: u32,
    window: Duration,
    entries: Mutex<HashMap<String, (std::time::Instant, u32)>>,
}

impl AuthThrottle {
    /// At most `max_failures` failed logins per address and per name within `window`.
    pub fn new(max_failures: u32, window: Duration) -> Self {
        AuthThrottle {
            max_failures: max_failures.max(1),
            window,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn keys(ip: IpAddr, user: Option<&str>) -> Vec<String> {
        let mut k = vec![format!("ip {ip}")];
        if let Some(u) = user.filter(|u| !u.is_empty()) {
            k.push(format!("user {}", u.to_ascii_lowercase()));
        }
        k
    }

    /// How long logins from `ip` (or for `user`) stay refused; `None` when allowed.
    pub fn blocked(&self, ip: IpAddr, user: Option<&str>) -> Option<Duration> {
        let now = std::time::Instant::now();
        let m = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        Self::keys(ip, user)
            .iter()
            .filter_map(|k| m.get(k))
            .filter(|(start, n)| *n >= self.max_failures && now < *start + self.window)
            .map(|(start, _)| *start + self.window - now)
            .max()
    }

    /// Counts a failed login.
    pub fn failed(&self, ip: IpAddr, user: Option<&str>) {
        crate::observe::get().failed_login();
        let now = std::time::Instant::now();
        let mut m = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if m.len() > 100_000 {
            m.retain(|_, (start, _)| now < *start + self.window);
        }
        for k in Self::keys(ip, user) {
            let e = m.entry(k).or_insert((now, 0));
            if now >= e.0 + self.window {
                *e = (now, 0);
            }
            e.1 += 1;
        }
    }
}

impl Default for AuthThrottle {
    fn default() -> Self {
        AuthThrottle::new(5, Duration::from_secs(15 * 60))
    }
}

#[cfg(test)]
mod tests {
    use super::LineClock;
    use std::time::Duration;

    #[test]
    fn a_line_gets_one_line_timeout_from_its_first_bytes_and_none_between_lines() {
        let (line, idle) = (Duration::from_secs(30), Duration::from_secs(1800));
        let mut clock = LineClock::default();
        assert!(!clock.running());
        assert_eq!(clock.wait(line, idle), idle);
        clock.note(true);
        std::thread::sleep(Duration::from_millis(20));
        // More bytes of the same line do not restart its clock.
        clock.note(true);
        assert!(clock.running());
        let left = clock.wait(line, idle);
        assert!(left <= line - Duration::from_millis(20), "{left:?}");
        clock.note(false);
        assert!(!clock.running());
        assert_eq!(clock.wait(line, idle), idle);
    }
}
