//! Where a protocol proxy reaches the provider: host, port and transport security, and the TLS
//! envelopd offers its own clients. Shared by every protocol side.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::conn::Conn;

/// Where and how to reach the provider's server (SMTP submission, IMAP, POP3).
#[derive(Clone)]
pub struct Target {
    /// Host name (checked against the TLS certificate) or IP address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Transport security.
    pub tls: TargetTls,
}

/// Transport security towards the provider.
#[derive(Clone)]
pub enum TargetTls {
    /// No TLS (only ever configured for a server on this machine).
    None,
    /// TLS from the first byte (SMTPS).
    Implicit(Arc<rustls::ClientConfig>),
    /// STARTTLS, required: a provider that does not offer it gets no mail.
    Starttls(Arc<rustls::ClientConfig>),
}

impl Target {
    /// `host:port (tls mode)`, for logs.
    pub fn describe(&self) -> String {
        let mode = match self.tls {
            TargetTls::None => "no TLS",
            TargetTls::Implicit(_) => "implicit TLS",
            TargetTls::Starttls(_) => "STARTTLS",
        };
        format!("{}:{} ({mode})", self.host, self.port)
    }

    /// A connection to the server within `limit` (no Nagle: commands are small and answered
    /// one by one), already TLS where the target is implicit TLS; why not, in words for the
    /// log and the mail program.
    pub async fn open(&self, limit: Duration) -> Result<Conn, String> {
        let tcp = timeout(limit, TcpStream::connect((self.host.as_str(), self.port)))
            .await
            .map_err(|_| "connection timed out".to_string())?
            .map_err(|e| e.to_string())?;
        let _ = tcp.set_nodelay(true);
        let mut conn = Conn::Plain(tcp);
        if let TargetTls::Implicit(config) = &self.tls {
            self.handshake(&mut conn, config.clone(), limit).await?;
        }
        Ok(conn)
    }

    /// The TLS handshake after the protocol's STARTTLS (STLS) command was accepted; a target
    /// without STARTTLS leaves the connection as it is.
    pub async fn start_tls(&self, conn: &mut Conn, limit: Duration) -> Result<(), String> {
        match &self.tls {
            TargetTls::Starttls(config) => self.handshake(conn, config.clone(), limit).await,
            _ => Ok(()),
        }
    }

    async fn handshake(
        &self,
        conn: &mut Conn,
        config: Arc<rustls::ClientConfig>,
        limit: Duration,
    ) -> Result<(), String> {
        let name = rustls_pki_types::ServerName::try_from(self.host.clone())
            .map_err(|_| format!("{} is not a valid TLS server name", self.host))?;
        timeout(limit, conn.upgrade_client(config, name))
            .await
            .map_err(|_| "TLS handshake timed out".to_string())?
            .map_err(|e| format!("TLS with the mail server failed: {e}"))
    }
}

/// TLS offered to mail programs.
#[derive(Clone)]
pub struct ClientTls {
    /// Certificate and key.
    pub config: Arc<rustls::ServerConfig>,
    /// TLS from the first byte (SMTPS, IMAPS) instead of STARTTLS.
    pub implicit: bool,
}
