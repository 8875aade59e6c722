//! One connection type for every socket the proxy holds: plain TCP, TLS as a client (towards
//! the provider) or TLS as a server (towards mail programs). STARTTLS swaps the variant in place,
//! so the session code reads and writes the same way before and after the upgrade. Also the
//! accept loop the SMTP and IMAP listeners share.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
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

impl Conn {
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

/// Accepts connections until `shutdown` turns true, one task each (`handle` gets the stream,
/// the peer and the shutdown signal), each in a tracing span with the protocol, a session number
/// and the peer; a broken connection ends only its own session. Then stops accepting and lets
/// open sessions finish for at most `drain` before closing them.
pub async fn serve_connections<F, Fut>(
    listener: TcpListener,
    mut shutdown: watch::Receiver<bool>,
    proto: &'static str,
    drain: Duration,
    handle: F,
) -> io::Result<()>
where
    F: Fn(TcpStream, SocketAddr, watch::Receiver<bool>) -> Fut,
    Fut: Future<Output = io::Result<()>> + Send + 'static,
{
    use tracing::Instrument;
    let mut sessions = tokio::task::JoinSet::new();
    let mut next_id: u64 = 0;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = accepted?;
                // Replies are small and each waits for the next command: no Nagle delay.
                let _ = stream.set_nodelay(true);
                next_id += 1;
                let span = tracing::info_span!("session", proto, id = next_id, %peer);
                let session = handle(stream, peer, shutdown.clone());
                sessions.spawn(
                    async move {
                        tracing::debug!("connected");
                        if let Err(e) = session.await {
                            tracing::info!(error = %e, "connection ended");
                        }
                    }
                    .instrument(span),
                );
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
