//! Reading key material from disk: permission checks on secret files, passwords from a file or
//! an environment variable (never from the command line or the configuration), and identities
//! from PKCS#12 or PKCS#8 + certificate. Shared by the `smime` tool and the daemon.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use smime::{Cert, Identity, PrivateKey};
use zeroize::Zeroizing;

/// Where an identity's key comes from.
#[derive(Debug, Clone, Default)]
pub struct KeySource {
    /// A PKCS#12 file.
    pub pkcs12: Option<PathBuf>,
    /// A PKCS#8/PKCS#1 key file (with `cert`).
    pub key: Option<PathBuf>,
    /// The certificate(s) for `key`.
    pub cert: Option<PathBuf>,
    /// A file whose first line is the password.
    pub password_file: Option<PathBuf>,
    /// An environment variable holding the password.
    pub password_env: Option<String>,
    /// The PKCS#11 module of a token key (`key` a `pkcs11:` URI).
    pub module: Option<PathBuf>,
    /// A second key for decrypting (a separate encryption key; file or PKCS#11 URI).
    pub encryption_key: Option<PathBuf>,
    /// The certificate of `encryption_key`.
    pub encryption_cert: Option<PathBuf>,
    /// Accept secret files other users can read.
    pub allow_insecure: bool,
}

/// Whether a configured key is a PKCS#11 URI (a key in a token) rather than a file.
pub fn is_token_uri(key: &Path) -> bool {
    key.to_str().is_some_and(|k| k.starts_with("pkcs11:"))
}

/// Whether one of `keys` is the private key of `cert` (mail encrypted to `cert` can be opened).
pub fn has_key_for<'a>(keys: impl IntoIterator<Item = &'a Identity>, cert: &Cert) -> bool {
    keys.into_iter()
        .any(|k| k.cert == *cert || k.key.matches(cert))
}

/// Reads certificates (PEM or DER) from a file, naming the file in errors.
pub fn read_certs(path: &Path) -> Result<Vec<Cert>> {
    let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    smime::parse_certificates(&data).with_context(|| format!("in {}", path.display()))
}

/// Reads a secret file, refusing files that group or others can read unless allowed.
pub fn read_secret_file(path: &Path, allow_insecure: bool) -> Result<Zeroizing<Vec<u8>>> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    let mode = meta.permissions().mode();
    if mode & 0o077 != 0 && !allow_insecure {
        bail!(
            "{} is readable by other users (mode {:o}); run `chmod 600 {}` or pass --allow-insecure-key-file",
            path.display(),
            mode & 0o777,
            path.display()
        );
    }
    Ok(Zeroizing::new(
        std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
    ))
}

impl KeySource {
    /// The password, if one is configured.
    pub fn password(&self) -> Result<Option<Zeroizing<String>>> {
        if let Some(p) = &self.password_file {
            let raw = read_secret_file(p, self.allow_insecure)?;
            let text = std::str::from_utf8(&raw).context("the password file is not UTF-8")?;
            let first = text.lines().next().unwrap_or("");
            return Ok(Some(Zeroizing::new(first.to_string())));
        }
        if let Some(var) = &self.password_env {
            let v = std::env::var(var)
                .with_context(|| format!("environment variable {var} is not set"))?;
            return Ok(Some(Zeroizing::new(v)));
        }
        Ok(None)
    }

    /// Loads the signing identity: key, its certificate, and the rest of the chain (from a
    /// PKCS#12 file with several keys, the one whose certificate may sign).
    pub fn load(&self) -> Result<Identity> {
        let pw = self.password()?;
        if let Some(p12) = &self.pkcs12 {
            let data = read_secret_file(p12, self.allow_insecure)?;
            let pw = pw.context(
                "a PKCS#12 file needs a password (password file or environment variable)",
            )?;
            return Identity::from_pkcs12(&data, &pw)
                .with_context(|| format!("in {}", p12.display()));
        }
        self.load_key_and_cert(pw)
    }

    /// Loads every key of the source once, with the position of the signing identity among
    /// them (the one [`KeySource::load`] gives): the daemon signs with that one and decrypts
    /// with all, so a PKCS#12 file is decrypted and a token opened once, not twice.
    pub fn load_keys(&self) -> Result<(usize, Vec<Identity>)> {
        let all = self.load_all()?;
        let signing = if self.pkcs12.is_some() {
            Identity::signing_position(&all)
        } else {
            0
        };
        Ok((signing, all))
    }

    /// Loads every key of the source (a PKCS#12 file may hold a signing and an encryption key).
    pub fn load_all(&self) -> Result<Vec<Identity>> {
        if let Some(p12) = &self.pkcs12 {
            let pw = self
                .password()?
                .context("a PKCS#12 file needs a password")?;
            let data = read_secret_file(p12, self.allow_insecure)?;
            return Identity::all_from_pkcs12(&data, &pw)
                .with_context(|| format!("in {}", p12.display()));
        }
        let mut all = vec![self.load_key_and_cert(self.password()?)?];
        if let (Some(key), Some(cert)) = (&self.encryption_key, &self.encryption_cert) {
            let second = KeySource {
                key: Some(key.clone()),
                cert: Some(cert.clone()),
                encryption_key: None,
                encryption_cert: None,
                ..self.clone()
            };
            all.push(second.load_key_and_cert(self.password()?)?);
        }
        Ok(all)
    }

    fn load_key_and_cert(&self, pw: Option<Zeroizing<String>>) -> Result<Identity> {
        if let Some(uri) = self.key.as_deref().filter(|k| is_token_uri(k)) {
            return self.load_token(uri.to_str().unwrap_or_default(), pw);
        }
        let (Some(key), Some(cert)) = (&self.key, &self.cert) else {
            bail!("give a key and its certificate, or a PKCS#12 file");
        };
        let data = read_secret_file(key, self.allow_insecure)?;
        let key_obj = PrivateKey::load(&data, pw.as_ref().map(|p| p.as_bytes()))
            .with_context(|| format!("in {}", key.display()))?;
        Identity::new(key_obj, read_certs(cert)?)
            .with_context(|| format!("{} and {}", key.display(), cert.display()))
    }

    /// A key in a PKCS#11 token: the token signs and decrypts, the key never leaves it; the
    /// certificate from `cert`, else the one stored beside the key in the token.
    fn load_token(&self, uri: &str, pin: Option<Zeroizing<String>>) -> Result<Identity> {
        let opened = certstore::token::open(uri, self.module.as_deref(), pin)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let certs = match &self.cert {
            Some(c) => read_certs(c)?,
            None => opened.cert.into_iter().collect(),
        };
        if certs.is_empty() {
            bail!("the token holds no certificate for the key {uri}: give its certificate (cert = … / --cert)");
        }
        Identity::new(PrivateKey::external(opened.key), certs)
            .with_context(|| format!("the key {uri} and its certificate"))
    }
}
