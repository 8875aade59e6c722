//! Where a protocol proxy reaches the provider: host, port and transport security, and the TLS
//! envelopd offers its own clients. Shared by every protocol side.

use std::sync::Arc;

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
}

/// TLS offered to mail programs.
#[derive(Clone)]
pub struct ClientTls {
    /// Certificate and key.
    pub config: Arc<rustls::ServerConfig>,
    /// TLS from the first byte (SMTPS, IMAPS) instead of STARTTLS.
    pub implicit: bool,
}
