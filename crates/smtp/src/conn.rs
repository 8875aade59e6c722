//! One connection type for every socket the SMTP side holds: plain TCP, TLS as a client (towards
//! the provider) or TLS as a server (towards mail programs). STARTTLS swaps the variant in place,
//! so the session code reads and writes the same way before and after the upgrade.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

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
