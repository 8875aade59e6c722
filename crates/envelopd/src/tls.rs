//! TLS set-up for both sides of the proxy, on rustls with the aws-lc-rs provider (the same
//! constant-time primitives as the S/MIME core): whom envelopd trusts when it connects to the
//! provider, and the certificate it shows mail programs on the LAN.

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::keyfiles::read_secret_file;

/// Where Debian keeps the system CA bundle (`SSL_CERT_FILE` overrides it).
const SYSTEM_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn read_pem_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&data)
        .collect::<Result<_, _>>()
        .with_context(|| format!("{} is not a PEM certificate file", path.display()))?;
    if certs.is_empty() {
        bail!("{} holds no PEM certificate", path.display());
    }
    Ok(certs)
}

/// The trust for the provider's certificate: the system store and/or one extra CA file.
pub fn client_config(
    system_roots: bool,
    ca_file: Option<&Path>,
) -> Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    if system_roots {
        let bundle = std::env::var_os("SSL_CERT_FILE")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| SYSTEM_BUNDLE.into());
        let certs = read_pem_certs(&bundle).with_context(|| {
            "the system CA store is missing (install the ca-certificates package, or set system_roots = false and give ca_file)"
        })?;
        // A few odd roots in a system bundle must not stop the daemon.
        roots.add_parsable_certificates(certs);
    }
    if let Some(ca) = ca_file {
        for c in read_pem_certs(ca)? {
            roots
                .add(c)
                .with_context(|| format!("{} holds an unusable CA certificate", ca.display()))?;
        }
    }
    if roots.is_empty() {
        bail!("no CA is trusted for the provider's TLS certificate: set system_roots = true or give ca_file");
    }
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context("TLS set-up")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The certificate and key shown to mail programs; the key file must be private (0600). The
/// pair is read again on SIGHUP ([`reload_all`]), so a renewed certificate takes effect without
/// a restart and without touching open sessions.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>> {
    let resolver = Arc::new(ReloadableCert {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
        current: std::sync::RwLock::new(load_certified(cert, key)?),
    });
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context("TLS set-up")?
        .with_no_client_auth()
        .with_cert_resolver(resolver.clone());
    RELOADABLE
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(resolver);
    Ok(Arc::new(config))
}

fn load_certified(cert: &Path, key: &Path) -> Result<Arc<rustls::sign::CertifiedKey>> {
    let chain = read_pem_certs(cert)?;
    let raw = read_secret_file(key, false)?;
    let key_der = PrivateKeyDer::from_pem_slice(&raw)
        .with_context(|| format!("{} is not a PEM private key", key.display()))?;
    let signing = provider()
        .key_provider
        .load_private_key(key_der)
        .context("the listener's private key is unusable")?;
    let certified = rustls::sign::CertifiedKey::new(chain, signing);
    certified
        .keys_match()
        .context("the listener's certificate and key do not match")?;
    Ok(Arc::new(certified))
}

/// A listener certificate that can be replaced while running.
#[derive(Debug)]
struct ReloadableCert {
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
    current: std::sync::RwLock<Arc<rustls::sign::CertifiedKey>>,
}

impl rustls::server::ResolvesServerCert for ReloadableCert {
    fn resolve(
        &self,
        _hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }
}

/// Every listener certificate of this process, for SIGHUP.
static RELOADABLE: std::sync::Mutex<Vec<Arc<ReloadableCert>>> = std::sync::Mutex::new(Vec::new());

/// Reads every listener's certificate and key again; a pair that fails to load keeps the old
/// one in service (and is reported). Returns (reloaded, failed).
pub fn reload_all() -> (usize, usize) {
    let all = RELOADABLE.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let (mut ok, mut failed) = (0, 0);
    for r in all {
        match load_certified(&r.cert, &r.key) {
            Ok(new) => {
                *r.current.write().unwrap_or_else(|e| e.into_inner()) = new;
                ok += 1;
            }
            Err(e) => {
                tracing::error!(cert = %r.cert.display(), "TLS certificate not reloaded, the old one stays: {e:#}");
                failed += 1;
            }
        }
    }
    (ok, failed)
}

/// `envelopd tls selfsigned`: a self-signed ECDSA P-256 certificate for the listeners of a first
/// setup, for `names` (host names or IP addresses), valid `days`. The key is written mode 0600
/// and never overwritten. Returns what to tell the user (paths, SHA-256 fingerprint).
pub fn selfsigned(names: &[String], cert_out: &Path, key_out: &Path, days: u32) -> Result<String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    anyhow::ensure!(
        !names.is_empty(),
        "name the host (--name praxis-server.local, or an IP address)"
    );
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| anyhow::anyhow!("generating the key: {e}"))?;
    let mut params = rcgen::CertificateParams::new(names.to_vec())
        .map_err(|e| anyhow::anyhow!("invalid name: {e}"))?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, names[0].clone());
    let now = std::time::SystemTime::now();
    params.not_before = now.into();
    params.not_after = (now + std::time::Duration::from_secs(u64::from(days) * 86400)).into();
    let cert = params
        .self_signed(&key)
        .map_err(|e| anyhow::anyhow!("signing the certificate: {e}"))?;
    let key_pem = zeroize::Zeroizing::new(key.serialize_pem());
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(key_out)
        .with_context(|| format!("{} exists already (not overwritten)", key_out.display()))?;
    f.write_all(key_pem.as_bytes())?;
    let mut c = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(cert_out)
        .with_context(|| format!("{} exists already (not overwritten)", cert_out.display()))?;
    c.write_all(cert.pem().as_bytes())?;
    let fp = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, cert.der());
    let fp: Vec<String> = fp.as_ref().iter().map(|b| format!("{b:02X}")).collect();
    Ok(format!(
        "wrote {} and {} (key mode 0600), valid {days} days for {}
         SHA-256 fingerprint (compare it when a mail program asks to trust the certificate):
  {}
         use it in proxy.toml, e.g.
  [smtp]
  tls = \"starttls\"
  cert = \"{}\"
  key = \"{}\"
",
        cert_out.display(),
        key_out.display(),
        names.join(", "),
        fp.join(":"),
        cert_out.display(),
        key_out.display()
    ))
}
