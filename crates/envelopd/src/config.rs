//! `proxy.toml`: the daemon's configuration, parsed strictly (unknown keys are errors, so a typo
//! never silently turns a setting off) and checked for the rules that keep a practice safe:
//! plaintext upstream only on loopback, passwords never inline, one key source per identity.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

/// The whole configuration file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where mail clients connect.
    #[serde(default)]
    pub smtp: SmtpListener,
    /// Where mail clients read mail (absent: no IMAP proxy).
    pub imap: Option<ImapListener>,
    /// Where programs that fetch by POP3 read mail (absent: no POP3 proxy).
    pub pop3: Option<Pop3Listener>,
    /// The provider.
    pub upstream: Upstream,
    /// Trust anchors and recipient certificates.
    #[serde(default)]
    pub certificates: Certificates,
    /// The practice's own keys, one entry per key.
    #[serde(default, rename = "identity")]
    pub identities: Vec<IdentityConfig>,
    /// What to do when not every recipient has a certificate.
    #[serde(default)]
    pub policy: PolicySection,
    /// LDAP directories asked for recipient certificates envelopd does not have.
    #[serde(default, rename = "directory")]
    pub directories: Vec<DirectoryConfig>,
    /// The loopback status page and Prometheus metrics (absent: not served).
    pub status: Option<StatusSection>,
    /// How the log is written.
    #[serde(default)]
    pub log: LogSection,
}

/// The status page and metrics endpoint.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusSection {
    /// Address and port (loopback only: the page names correspondents).
    pub listen: SocketAddr,
}

/// The log's form.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSection {
    /// `text` (default) or `json` (one JSON object per line, for log collectors).
    #[serde(default)]
    pub format: LogFormat,
}

/// A log line's form.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// One LDAP directory.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectoryConfig {
    /// `ldap://host:port`.
    pub url: String,
    /// The base DN searched (subtree).
    pub base: String,
    /// The search filter; `{address}` is the recipient address.
    #[serde(default = "default_directory_filter")]
    pub filter: String,
    /// Deadline for one lookup, in seconds.
    #[serde(default = "default_directory_timeout")]
    pub timeout: u64,
}

fn default_directory_filter() -> String {
    "(mail={address})".into()
}

fn default_directory_timeout() -> u64 {
    5
}

/// The client-facing SMTP listener.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpListener {
    /// Address and port to listen on.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// TLS towards mail programs: `none` (loopback only), `starttls` or `implicit`.
    #[serde(default = "no_tls")]
    pub tls: TlsMode,
    /// The listener's TLS certificate chain (PEM).
    pub cert: Option<PathBuf>,
    /// The listener's TLS private key (PEM, PKCS#8/PKCS#1/SEC1; mode 0600).
    pub key: Option<PathBuf>,
    /// Require AUTH before MAIL (always on off loopback).
    #[serde(default)]
    pub require_auth: bool,
    /// The largest message accepted, in bytes (less if the provider's limit leaves less room).
    #[serde(default = "default_max_size")]
    pub max_message_size: usize,
    /// Open connections at most (further ones get 421 and are closed).
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Seconds a client may take for one command line (or be silent) before 421.
    #[serde(default = "default_smtp_client_timeout")]
    pub client_timeout: u64,
    /// Connections come through a balancer sending PROXY protocol v2 headers.
    #[serde(default)]
    pub proxy_protocol: bool,
    /// The balancers' addresses (required with `proxy_protocol`).
    #[serde(default)]
    pub proxy_from: Vec<std::net::IpAddr>,
    /// Open connections at most from one IP address.
    #[serde(default = "default_max_connections_per_ip")]
    pub max_connections_per_ip: usize,
    /// Recipients per message at most (more get 452 4.5.3; RFC 5321 asks for at least 100).
    #[serde(default = "default_max_recipients")]
    pub max_recipients: usize,
}

fn default_max_recipients() -> usize {
    1000
}

fn default_smtp_client_timeout() -> u64 {
    300
}

fn default_imap_command_timeout() -> u64 {
    120
}

fn default_max_connections() -> usize {
    1000
}

fn default_max_connections_per_ip() -> usize {
    100
}

fn default_max_size() -> usize {
    50 << 20
}

fn no_tls() -> TlsMode {
    TlsMode::None
}

impl Default for SmtpListener {
    fn default() -> Self {
        SmtpListener {
            listen: default_listen(),
            tls: TlsMode::None,
            cert: None,
            key: None,
            require_auth: false,
            max_message_size: default_max_size(),
            max_connections: default_max_connections(),
            max_connections_per_ip: default_max_connections_per_ip(),
            max_recipients: default_max_recipients(),
            client_timeout: default_smtp_client_timeout(),
            proxy_protocol: false,
            proxy_from: Vec::new(),
        }
    }
}

impl SmtpListener {
    /// Whether clients must log in: configured, or forced because the listener is on the LAN.
    pub fn auth_required(&self) -> bool {
        self.require_auth || !self.listen.ip().is_loopback()
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 10587))
}

/// The client-facing IMAP listener.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImapListener {
    /// Address and port to listen on.
    #[serde(default = "default_imap_listen")]
    pub listen: SocketAddr,
    /// TLS towards mail programs: `none` (loopback only), `starttls` or `implicit` (IMAPS).
    #[serde(default = "no_tls")]
    pub tls: TlsMode,
    /// The listener's TLS certificate chain (PEM).
    pub cert: Option<PathBuf>,
    /// The listener's TLS private key (PEM; mode 0600).
    pub key: Option<PathBuf>,
    /// Decrypted messages kept in memory, in MiB (never written to disk).
    #[serde(default = "default_cache_mb")]
    pub cache_mb: usize,
    /// Open connections at most (further ones get `* BYE` and are closed).
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Seconds one command line may take to arrive, however slowly (idle clients get 31 min).
    #[serde(default = "default_imap_command_timeout")]
    pub command_timeout: u64,
    /// Connections come through a balancer sending PROXY protocol v2 headers.
    #[serde(default)]
    pub proxy_protocol: bool,
    /// The balancers' addresses (required with `proxy_protocol`).
    #[serde(default)]
    pub proxy_from: Vec<std::net::IpAddr>,
    /// Open connections at most from one IP address.
    #[serde(default = "default_max_connections_per_ip")]
    pub max_connections_per_ip: usize,
    /// Store plaintext the mail program appends to Sent or Drafts encrypted to the own
    /// certificate, so the provider never holds a plaintext copy of what went out encrypted.
    #[serde(default = "yes")]
    pub encrypt_appends: bool,
    /// The folders that applies to (last hierarchy level, any case); empty: the usual names.
    #[serde(default)]
    pub encrypted_folders: Vec<String>,
}

/// The client-facing POP3 listener (practice software that fetches by POP3).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pop3Listener {
    /// Address and port to listen on.
    #[serde(default = "default_pop3_listen")]
    pub listen: SocketAddr,
    /// TLS towards mail programs: `none` (loopback only), `starttls` (STLS) or `implicit`
    /// (POP3S).
    #[serde(default = "no_tls")]
    pub tls: TlsMode,
    /// The listener's TLS certificate chain (PEM).
    pub cert: Option<PathBuf>,
    /// The listener's TLS private key (PEM; mode 0600).
    pub key: Option<PathBuf>,
    /// Decrypted messages kept in memory, in MiB (never written to disk); their sizes are
    /// remembered beyond that, so LIST stays cheap for programs that poll.
    #[serde(default = "default_cache_mb")]
    pub cache_mb: usize,
    /// Open connections at most (further ones get `-ERR` and are closed).
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Seconds one command line may take to arrive, however slowly (idle clients get 10 min).
    #[serde(default = "default_imap_command_timeout")]
    pub command_timeout: u64,
    /// Connections come through a balancer sending PROXY protocol v2 headers.
    #[serde(default)]
    pub proxy_protocol: bool,
    /// The balancers' addresses (required with `proxy_protocol`).
    #[serde(default)]
    pub proxy_from: Vec<std::net::IpAddr>,
    /// Open connections at most from one IP address.
    #[serde(default = "default_max_connections_per_ip")]
    pub max_connections_per_ip: usize,
}

fn default_pop3_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 10110))
}

fn default_imap_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 10143))
}

fn default_cache_mb() -> usize {
    // Within the daemon's memory bound (64 MiB + twice the largest message being read).
    32
}

/// The provider's servers.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    /// The outgoing (submission) server.
    pub smtp: UpstreamServer,
    /// The incoming (IMAP) server, needed with an `[imap]` section.
    pub imap: Option<UpstreamServer>,
    /// The incoming (POP3) server, needed with a `[pop3]` section.
    pub pop3: Option<UpstreamServer>,
}

/// One upstream server.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamServer {
    /// Host name or IP address.
    pub host: String,
    /// Port; defaults to 465 for implicit TLS, 587 otherwise.
    pub port: Option<u16>,
    /// How the connection is protected.
    pub tls: TlsMode,
    /// An extra CA file to trust for the provider's TLS certificate.
    pub ca_file: Option<PathBuf>,
    /// Whether the system's CA store is trusted for the provider's certificate.
    #[serde(default = "yes")]
    pub system_roots: bool,
    /// Seconds to wait for each reply (RFC 5321 §4.5.3.2: 5 minutes); the end of the message
    /// gets twice as long.
    #[serde(default = "default_timeout")]
    pub timeout: u64,
}

fn default_timeout() -> u64 {
    300
}

fn yes() -> bool {
    true
}

impl UpstreamServer {
    /// The waits towards this server.
    pub fn timeouts(&self) -> smtp::upstream::Timeouts {
        let t = std::time::Duration::from_secs(self.timeout.max(1));
        smtp::upstream::Timeouts {
            connect: t.min(std::time::Duration::from_secs(30)),
            command: t,
            data_end: 2 * t,
        }
    }

    /// The effective port for IMAP: 993 for implicit TLS, 143 otherwise.
    pub fn imap_port(&self) -> u16 {
        self.port.unwrap_or(match self.tls {
            TlsMode::Implicit => 993,
            _ => 143,
        })
    }

    /// The effective port for POP3: 995 for implicit TLS, 110 otherwise.
    pub fn pop3_port(&self) -> u16 {
        self.port.unwrap_or(match self.tls {
            TlsMode::Implicit => 995,
            _ => 110,
        })
    }

    /// The effective port.
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(match self.tls {
            TlsMode::Implicit => 465,
            _ => 587,
        })
    }
}

/// Transport security towards the provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// TLS from the first byte (SMTPS, port 465).
    Implicit,
    /// Plain connection upgraded with STARTTLS (port 587); refusing servers are an error.
    Starttls,
    /// No TLS: allowed only to a server on this machine.
    None,
}

impl std::fmt::Display for TlsMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TlsMode::Implicit => "implicit TLS",
            TlsMode::Starttls => "STARTTLS",
            TlsMode::None => "no TLS",
        })
    }
}

/// Certificate sources.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Certificates {
    /// Trust anchor files or directories (PEM or DER).
    #[serde(default)]
    pub anchors: Vec<PathBuf>,
    /// Also trust the system's CA store for S/MIME.
    #[serde(default)]
    pub system_anchors: bool,
    /// A directory (or file) of recipient certificates, any file names.
    pub recipients: Option<PathBuf>,
    /// Where certificates learnt from verified signed mail are kept (absent: in memory only).
    pub harvested: Option<PathBuf>,
    /// Revocation checking: `prefer` (default), `require` or `off`.
    #[serde(default)]
    pub revocation: RevocationSetting,
    /// Local CRL files or directories (for CAs without a reachable distribution point).
    #[serde(default)]
    pub crls: Vec<PathBuf>,
    /// Where fetched CRLs are kept across restarts (absent: in memory only).
    pub crl_cache: Option<PathBuf>,
    /// Deadline for one CRL download, in seconds.
    #[serde(default = "default_crl_timeout")]
    pub crl_timeout: u64,
    /// How often the distribution points are looked at, in seconds (each CRL is fetched again
    /// only before its nextUpdate, or after a failure with growing pauses).
    #[serde(default = "default_crl_interval")]
    pub crl_interval: u64,
    /// How long a certificate found in a directory is used before asking again, in seconds.
    #[serde(default = "default_directory_ttl")]
    pub directory_ttl: u64,
    /// How long "not in the directory" is remembered, in seconds.
    #[serde(default = "default_directory_negative_ttl")]
    pub directory_negative_ttl: u64,
}

fn default_directory_ttl() -> u64 {
    86400
}

fn default_directory_negative_ttl() -> u64 {
    3600
}

fn default_crl_timeout() -> u64 {
    10
}

fn default_crl_interval() -> u64 {
    60
}

/// `revocation` as written in the file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RevocationSetting {
    /// No revocation checks.
    Off,
    /// Use revocation data when it can be had.
    #[default]
    Prefer,
    /// Certificates with unknown status are not used.
    Require,
}

impl From<RevocationSetting> for certstore::RevocationMode {
    fn from(r: RevocationSetting) -> Self {
        match r {
            RevocationSetting::Off => certstore::RevocationMode::Off,
            RevocationSetting::Prefer => certstore::RevocationMode::Prefer,
            RevocationSetting::Require => certstore::RevocationMode::Require,
        }
    }
}

/// One of the practice's keys and the addresses it signs for.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    /// The sender addresses this key belongs to.
    pub addresses: Vec<String>,
    /// A PKCS#12 file with key and certificates.
    pub pkcs12: Option<PathBuf>,
    /// A PKCS#8/PKCS#1 key file (with `cert`), or a key in a token: a PKCS#11 URI
    /// (`pkcs11:token=…;object=…`, RFC 7512).
    pub key: Option<PathBuf>,
    /// The certificate for `key` (for a token key: optional, else the token's own).
    pub cert: Option<PathBuf>,
    /// The PKCS#11 module for a token key (unless its URI has `module-path`).
    pub module: Option<PathBuf>,
    /// A file holding the token's PIN (first line; mode 0600), unless the URI has `pin-source`.
    pub pin_file: Option<PathBuf>,
    /// An environment variable holding the token's PIN.
    pub pin_env: Option<String>,
    /// Further certificates to send along (intermediate CAs).
    #[serde(default)]
    pub chain: Vec<PathBuf>,
    /// A separate encryption certificate (for the Sent copy and SMIMEEncryptionKeyPreference).
    pub encryption_cert: Option<PathBuf>,
    /// The private key of `encryption_cert` when it is not in `pkcs12` (a file, or a PKCS#11
    /// URI in the same token as `key`): incoming mail is decrypted with it too.
    pub encryption_key: Option<PathBuf>,
    /// A file holding the password (first line).
    pub password_file: Option<PathBuf>,
    /// An environment variable holding the password.
    pub password_env: Option<String>,
    /// Provider logins (besides the addresses) whose sessions may sign with this key.
    #[serde(default)]
    pub logins: Vec<String>,
}

impl IdentityConfig {
    /// Where this identity's key comes from (secret files must be private: no override here).
    pub fn key_source(&self) -> crate::keyfiles::KeySource {
        crate::keyfiles::KeySource {
            pkcs12: self.pkcs12.clone(),
            key: self.key.clone(),
            cert: self.cert.clone(),
            // A token's PIN is its password.
            password_file: self.password_file.clone().or_else(|| self.pin_file.clone()),
            password_env: self.password_env.clone().or_else(|| self.pin_env.clone()),
            module: self.module.clone(),
            encryption_key: self.encryption_key.clone(),
            encryption_cert: self.encryption_cert.clone(),
            allow_insecure: false,
        }
    }

    /// Whether the key lives in a PKCS#11 token.
    pub fn in_token(&self) -> bool {
        self.key
            .as_deref()
            .is_some_and(crate::keyfiles::is_token_uri)
    }
}

/// The policy section.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySection {
    /// `plaintext` (default), `refuse` or `split`.
    #[serde(default)]
    pub fallback: FallbackSetting,
    /// Never fall back to AES-CBC.
    #[serde(default)]
    pub require_aead: bool,
    /// Domains or addresses known to read AES-GCM.
    #[serde(default)]
    pub gcm_capable: Vec<String>,
    /// Per-domain or per-address fallbacks.
    #[serde(default, rename = "override")]
    pub overrides: Vec<OverrideSetting>,
    /// RFC 9788 header protection: `on` (default) or `off`.
    #[serde(default)]
    pub header_protection: OnOff,
    /// Put the real Subject at the top of the text of encrypted mail, for readers without
    /// RFC 9788 support (off by default: the text stays exactly as written).
    #[serde(default)]
    pub legacy_display: bool,
    /// What happens when a logged-in user sends as another user's signing identity:
    /// `unsigned` (sent, never signed as them) or `refuse` (550). The default follows the
    /// fallback: `refuse` when `fallback = "refuse"` (enforcement), `unsigned` otherwise.
    #[serde(default)]
    pub foreign_sender: Option<ForeignSender>,
}

/// The answer to a user sending as someone else's identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ForeignSender {
    /// Relay the message unsigned.
    Unsigned,
    /// Refuse it with 550 5.7.1.
    Refuse,
}

impl PolicySection {
    /// Whether a user's message sent as another user's identity is refused.
    pub fn refuse_foreign_sender(&self) -> bool {
        match self.foreign_sender {
            Some(f) => f == ForeignSender::Refuse,
            None => self.fallback == FallbackSetting::Refuse,
        }
    }
}

/// A switch written as `"on"` or `"off"`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnOff {
    /// Enabled.
    #[default]
    On,
    /// Disabled.
    Off,
}

/// The fallback as written in the file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FallbackSetting {
    /// Send unencrypted.
    #[default]
    Plaintext,
    /// Refuse with 550 5.7.1.
    Refuse,
    /// Encrypt where possible, plaintext for the rest.
    Split,
}

/// One override.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OverrideSetting {
    /// An address or a domain.
    pub pattern: String,
    /// Its fallback.
    pub fallback: FallbackSetting,
}

impl From<FallbackSetting> for policy::Fallback {
    fn from(f: FallbackSetting) -> Self {
        match f {
            FallbackSetting::Plaintext => policy::Fallback::Plaintext,
            FallbackSetting::Refuse => policy::Fallback::Refuse,
            FallbackSetting::Split => policy::Fallback::Split,
        }
    }
}

impl PolicySection {
    /// The header protection the SMTP side applies.
    pub fn header_protection(&self) -> smtp::outgoing::HeaderProtection {
        smtp::outgoing::HeaderProtection {
            enabled: self.header_protection == OnOff::On,
            legacy_display: self.legacy_display,
        }
    }

    /// The policy crate's settings.
    pub fn to_policy(&self) -> policy::PolicyConfig {
        policy::PolicyConfig {
            fallback: self.fallback.into(),
            overrides: self
                .overrides
                .iter()
                .map(|o| policy::Override {
                    pattern: o.pattern.clone(),
                    fallback: o.fallback.into(),
                })
                .collect(),
            gcm_capable: self.gcm_capable.clone(),
            require_aead: self.require_aead,
        }
    }
}

impl Config {
    /// Reads and checks a configuration file; relative paths are taken from its directory.
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the configuration {}", path.display()))?;
        let mut cfg = Self::parse(&text).with_context(|| format!("in {}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        cfg.resolve_credentials(std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from))?;
        cfg.resolve_paths(base);
        Ok(cfg)
    }

    /// `password_file = "credential:NAME"` is the systemd credential NAME (`LoadCredential=`),
    /// so key passwords need not lie in /etc/envelopd at all.
    fn resolve_credentials(&mut self, dir: Option<PathBuf>) -> Result<()> {
        for id in &mut self.identities {
            let Some(name) = id
                .password_file
                .as_ref()
                .and_then(|p| p.to_str())
                .and_then(|p| p.strip_prefix("credential:"))
                .map(str::to_string)
            else {
                continue;
            };
            if name.is_empty() || name.contains('/') || name == ".." {
                bail!("password_file = \"credential:{name}\": give the credential's name as in LoadCredential=");
            }
            let Some(dir) = &dir else {
                bail!(
                    "password_file = \"credential:{name}\" needs systemd's LoadCredential={name}:… for the service (CREDENTIALS_DIRECTORY is not set)"
                );
            };
            id.password_file = Some(dir.join(name));
        }
        Ok(())
    }

    /// Parses and checks configuration text.
    pub fn parse(text: &str) -> Result<Config> {
        if text.lines().any(|l| {
            l.trim_start().starts_with("password ") || l.trim_start().starts_with("password=")
        }) {
            bail!("passwords are never written into the configuration: use password_file or password_env");
        }
        let cfg: Config = toml::from_str(text).map_err(|e| anyhow::anyhow!("{e}"))?;
        cfg.check()?;
        Ok(cfg)
    }

    fn check(&self) -> Result<()> {
        let up = &self.upstream.smtp;
        if up.tls == TlsMode::None && !is_loopback_host(&up.host) {
            bail!(
                "upstream.smtp: tls = \"none\" is only allowed to a server on this machine, not to {}",
                up.host
            );
        }
        match (&self.imap, &self.upstream.imap) {
            (Some(_), None) => bail!("[imap] needs [upstream.imap]: the provider's IMAP server"),
            (Some(i), Some(_)) if !i.listen.ip().is_loopback() && i.tls == TlsMode::None => bail!(
                "imap.listen = {}: listening beyond this machine needs TLS (tls = \"starttls\" or \"implicit\", with cert and key)",
                i.listen
            ),
            (Some(i), Some(_)) if i.tls != TlsMode::None && (i.cert.is_none() || i.key.is_none()) => {
                bail!("imap: TLS for mail programs needs cert and key (PEM files)")
            }
            _ => {}
        }
        if let Some(up) = &self.upstream.imap {
            if up.tls == TlsMode::None && !is_loopback_host(&up.host) {
                bail!(
                    "upstream.imap: tls = \"none\" is only allowed to a server on this machine, not to {}",
                    up.host
                );
            }
        }
        match (&self.pop3, &self.upstream.pop3) {
            (Some(_), None) => bail!("[pop3] needs [upstream.pop3]: the provider's POP3 server"),
            (Some(p), Some(_)) if !p.listen.ip().is_loopback() && p.tls == TlsMode::None => bail!(
                "pop3.listen = {}: listening beyond this machine needs TLS (tls = \"starttls\" or \"implicit\", with cert and key)",
                p.listen
            ),
            (Some(p), Some(_)) if p.tls != TlsMode::None && (p.cert.is_none() || p.key.is_none()) => {
                bail!("pop3: TLS for mail programs needs cert and key (PEM files)")
            }
            (Some(p), _) if p.proxy_protocol && p.proxy_from.is_empty() => {
                bail!("pop3: proxy_protocol needs proxy_from = [\"<the balancer's address>\"]: otherwise any client could claim any address")
            }
            _ => {}
        }
        if let Some(up) = &self.upstream.pop3 {
            if up.tls == TlsMode::None && !is_loopback_host(&up.host) {
                bail!(
                    "upstream.pop3: tls = \"none\" is only allowed to a server on this machine, not to {}",
                    up.host
                );
            }
        }
        let l = &self.smtp;
        if l.tls != TlsMode::None && (l.cert.is_none() || l.key.is_none()) {
            bail!("smtp: TLS for mail programs needs cert and key (PEM files)");
        }
        if l.proxy_protocol && l.proxy_from.is_empty() {
            bail!("smtp: proxy_protocol needs proxy_from = [\"<the balancer's address>\"]: otherwise any client could claim any address");
        }
        if let Some(i) = &self.imap {
            if i.proxy_protocol && i.proxy_from.is_empty() {
                bail!("imap: proxy_protocol needs proxy_from = [\"<the balancer's address>\"]: otherwise any client could claim any address");
            }
        }
        if let Some(st) = self
            .status
            .as_ref()
            .filter(|s| !s.listen.ip().is_loopback())
        {
            // The page names correspondents and the metrics carry addresses: this machine only.
            bail!(
                "status.listen = {}: the status page and metrics are served on loopback only (e.g. 127.0.0.1:9187); scrape from elsewhere through an SSH tunnel or a local Prometheus",
                st.listen
            );
        }
        if !l.listen.ip().is_loopback() && l.tls == TlsMode::None {
            // Passwords and patient data would cross the LAN in the clear.
            bail!(
                "smtp.listen = {}: listening beyond this machine needs TLS (tls = \"starttls\" or \"implicit\", with cert and key); authentication is then always required",
                l.listen
            );
        }
        for (i, id) in self.identities.iter().enumerate() {
            let n = i + 1;
            if id.addresses.is_empty() {
                bail!("identity {n}: give the sender addresses it signs for (addresses = [...])");
            }
            match (&id.pkcs12, &id.key, &id.cert) {
                (Some(_), None, None) | (None, Some(_), Some(_)) => {}
                (None, Some(_), None) if id.in_token() => {}
                _ => bail!(
                    "identity {n} ({}): give either pkcs12, or key and cert",
                    id.addresses[0]
                ),
            }
            if id.pkcs12.is_some() && id.password_file.is_none() && id.password_env.is_none() {
                bail!(
                    "identity {n} ({}): a PKCS#12 file needs password_file or password_env",
                    id.addresses[0]
                );
            }
            if id.encryption_key.is_some() && id.encryption_cert.is_none() {
                bail!(
                    "identity {n} ({}): encryption_key needs encryption_cert (its certificate)",
                    id.addresses[0]
                );
            }
            if !id.in_token()
                && (id.module.is_some() || id.pin_file.is_some() || id.pin_env.is_some())
            {
                bail!(
                    "identity {n} ({}): module, pin_file and pin_env are for a key in a token (key = \"pkcs11:…\")",
                    id.addresses[0]
                );
            }
            if [
                id.password_file.is_some(),
                id.password_env.is_some(),
                id.pin_file.is_some(),
                id.pin_env.is_some(),
            ]
            .iter()
            .filter(|x| **x)
            .count()
                > 1
            {
                bail!(
                    "identity {n} ({}): give password_file or password_env, not both",
                    id.addresses[0]
                );
            }
        }
        Ok(())
    }

    fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        self.certificates.anchors.iter_mut().for_each(fix);
        if let Some(p) = self.certificates.recipients.as_mut() {
            fix(p);
        }
        // What envelopd writes (learnt certificates, the CRL cache) goes to systemd's state
        // directory when there is one: /etc stays read-only for the service.
        let state = std::env::var_os("STATE_DIRECTORY").map(PathBuf::from);
        let fix_state = |p: &mut PathBuf| match &state {
            Some(dir) if p.is_relative() => *p = dir.join(&*p),
            _ => fix(p),
        };
        if let Some(p) = self.certificates.harvested.as_mut() {
            fix_state(p);
        }
        self.certificates.crls.iter_mut().for_each(fix);
        if let Some(p) = self.certificates.crl_cache.as_mut() {
            fix_state(p);
        }
        if let Some(p) = self.upstream.smtp.ca_file.as_mut() {
            fix(p);
        }
        if let Some(p) = self.upstream.imap.as_mut().and_then(|i| i.ca_file.as_mut()) {
            fix(p);
        }
        if let Some(p) = self.upstream.pop3.as_mut().and_then(|i| i.ca_file.as_mut()) {
            fix(p);
        }
        for p in [&mut self.smtp.cert, &mut self.smtp.key]
            .into_iter()
            .flatten()
        {
            fix(p);
        }
        // The IMAP listener's TLS files too (they were taken relative to the working directory).
        if let Some(i) = self.imap.as_mut() {
            for p in [&mut i.cert, &mut i.key].into_iter().flatten() {
                fix(p);
            }
        }
        if let Some(i) = self.pop3.as_mut() {
            for p in [&mut i.cert, &mut i.key].into_iter().flatten() {
                fix(p);
            }
        }
        for id in &mut self.identities {
            // A PKCS#11 URI is not a file name.
            let token = id.in_token();
            let enc_token = id
                .encryption_key
                .as_deref()
                .is_some_and(crate::keyfiles::is_token_uri);
            let (mut no_file, mut no_file2) = (None, None);
            for p in [
                &mut id.pkcs12,
                if token { &mut no_file } else { &mut id.key },
                if enc_token {
                    &mut no_file2
                } else {
                    &mut id.encryption_key
                },
                &mut id.cert,
                &mut id.encryption_cert,
                &mut id.password_file,
                &mut id.pin_file,
                &mut id.module,
            ]
            .into_iter()
            .flatten()
            {
                fix(p);
            }
            id.chain.iter_mut().for_each(fix);
        }
    }
}

/// True for `localhost` and loopback addresses.
pub fn is_loopback_host(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "[upstream.smtp]\nhost = \"mail.example.org\"\ntls = \"starttls\"\n";

    #[test]
    fn minimal_config_gets_safe_defaults() {
        let c = Config::parse(MINIMAL).unwrap();
        assert_eq!(c.smtp.listen, "127.0.0.1:10587".parse().unwrap());
        assert_eq!(c.upstream.smtp.port(), 587);
        assert_eq!(c.policy.fallback, FallbackSetting::Plaintext);
        assert!(c.upstream.smtp.system_roots);
    }

    #[test]
    fn passwords_can_come_from_systemd_credentials() {
        let text = format!(
            "{MINIMAL}[[identity]]\naddresses = [\"a@x.org\"]\npkcs12 = \"a.p12\"\npassword_file = \"credential:a.pass\"\n"
        );
        let mut c = Config::parse(&text).unwrap();
        c.resolve_credentials(Some(PathBuf::from("/run/credentials/envelopd.service")))
            .unwrap();
        assert_eq!(
            c.identities[0].password_file.as_deref(),
            Some(Path::new("/run/credentials/envelopd.service/a.pass"))
        );
        let mut c = Config::parse(&text).unwrap();
        let e = c.resolve_credentials(None).unwrap_err().to_string();
        assert!(e.contains("LoadCredential=a.pass"), "{e}");
        let mut c = Config::parse(&text.replace("a.pass", "../etc/shadow")).unwrap();
        assert!(c
            .resolve_credentials(Some(PathBuf::from("/run/x")))
            .is_err());
    }

    #[test]
    fn foreign_senders_are_refused_under_enforcement_unless_said_otherwise() {
        let parse =
            |extra: &str| -> Config { toml::from_str(&format!("{MINIMAL}{extra}")).unwrap() };
        assert!(!parse("").policy.refuse_foreign_sender());
        assert!(parse("[policy]\nfallback = \"refuse\"\n")
            .policy
            .refuse_foreign_sender());
        assert!(
            !parse("[policy]\nfallback = \"refuse\"\nforeign_sender = \"unsigned\"\n")
                .policy
                .refuse_foreign_sender()
        );
        assert!(parse("[policy]\nforeign_sender = \"refuse\"\n")
            .policy
            .refuse_foreign_sender());
    }

    #[test]
    fn unsafe_or_mistyped_settings_are_refused_with_a_reason() {
        let cases = [
            (MINIMAL.replace("starttls", "none"), "only allowed to a server on this machine"),
            (format!("{MINIMAL}[policy]\nfallbak = \"refuse\"\n"), "unknown field `fallbak`"),
            (format!("{MINIMAL}[policy]\nfallback = \"maybe\"\n"), "unknown variant `maybe`"),
            (
                format!("{MINIMAL}[status]\nlisten = \"0.0.0.0:9187\"\n"),
                "served on loopback only",
            ),
            (
                format!("{MINIMAL}[policy]\nforeign_sender = \"maybe\"\n"),
                "unknown variant `maybe`",
            ),
            (format!("{MINIMAL}[log]\nformat = \"xml\"\n"), "unknown variant `xml`"),
            (
                format!("{MINIMAL}[policy]\nheader_protection = \"yes\"\n"),
                "unknown variant `yes`",
            ),
            (format!("{MINIMAL}[[identity]]\naddresses = [\"a@x.org\"]\npkcs12 = \"a.p12\"\npassword = \"secret\"\n"), "never written into the configuration"),
            (format!("{MINIMAL}[[identity]]\naddresses = [\"a@x.org\"]\npkcs12 = \"a.p12\"\n"), "needs password_file or password_env"),
            (format!("{MINIMAL}[[identity]]\naddresses = [\"a@x.org\"]\nkey = \"a.key\"\n"), "either pkcs12, or key and cert"),
            (format!("{MINIMAL}[smtp]\nlisten = \"0.0.0.0:587\"\n"), "listening beyond this machine needs TLS"),
            (format!("{MINIMAL}[smtp]\ntls = \"starttls\"\n"), "needs cert and key"),
            (format!("{MINIMAL}[pop3]\n"), "[pop3] needs [upstream.pop3]"),
            (
                format!("{MINIMAL}[pop3]\nlisten = \"0.0.0.0:995\"\n[upstream.pop3]\nhost = \"pop.example.org\"\ntls = \"implicit\"\n"),
                "pop3.listen = 0.0.0.0:995: listening beyond this machine needs TLS",
            ),
            (
                format!("{MINIMAL}[pop3]\ntls = \"implicit\"\n[upstream.pop3]\nhost = \"pop.example.org\"\ntls = \"implicit\"\n"),
                "pop3: TLS for mail programs needs cert and key",
            ),
            (
                format!("{MINIMAL}[pop3]\n[upstream.pop3]\nhost = \"pop.example.org\"\ntls = \"none\"\n"),
                "upstream.pop3: tls = \"none\" is only allowed to a server on this machine",
            ),
            (
                format!("{MINIMAL}[pop3]\nproxy_protocol = true\n[upstream.pop3]\nhost = \"pop.example.org\"\ntls = \"implicit\"\n"),
                "pop3: proxy_protocol needs proxy_from",
            ),
        ];
        for (text, want) in cases {
            let err = format!("{:#}", Config::parse(&text).unwrap_err());
            assert!(err.contains(want), "{want:?} not in {err:?}");
        }
        let loopback = MINIMAL
            .replace("starttls", "none")
            .replace("mail.example.org", "127.0.0.1");
        assert_eq!(Config::parse(&loopback).unwrap().upstream.smtp.port(), 587);
        let pop3 = Config::parse(&format!(
            "{MINIMAL}[pop3]\n[upstream.pop3]\nhost = \"pop.example.org\"\ntls = \"implicit\"\n"
        ))
        .unwrap();
        assert_eq!(pop3.upstream.pop3.unwrap().pop3_port(), 995);
        assert_eq!(pop3.pop3.unwrap().listen.port(), 10110);
    }

    #[test]
    fn a_lan_listener_with_tls_always_requires_authentication() {
        let lan = format!(
            "{MINIMAL}[smtp]\nlisten = \"0.0.0.0:587\"\ntls = \"starttls\"\ncert = \"c.pem\"\nkey = \"k.pem\"\n"
        );
        let c = Config::parse(&lan).unwrap();
        assert!(c.smtp.auth_required());
        assert!(!Config::parse(MINIMAL).unwrap().smtp.auth_required());
    }

    #[test]
    fn relative_paths_are_taken_from_the_config_directory() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("proxy.toml");
        std::fs::write(
            &p,
            format!(
                "{MINIMAL}[certificates]\nanchors = [\"anchors\"]\nrecipients = \"/abs/certs\"\n"
            ),
        )
        .unwrap();
        let c = Config::load(&p).unwrap();
        assert_eq!(c.certificates.anchors[0], d.path().join("anchors"));
        assert_eq!(
            c.certificates.recipients.as_deref(),
            Some(Path::new("/abs/certs"))
        );
    }
}

#[cfg(test)]
mod example {
    /// The documented example at the repository root must always be a valid configuration.
    #[test]
    fn repository_proxy_toml_parses() {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proxy.toml");
        let c = super::Config::load(&p).unwrap();
        assert_eq!(c.identities.len(), 1);
        assert_eq!(c.policy.overrides.len(), 1);
        assert_eq!(
            c.policy.to_policy().fallback_for("x@klinikum.example"),
            policy::Fallback::Refuse
        );
    }
}
