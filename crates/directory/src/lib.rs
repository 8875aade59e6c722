//! Recipient certificates from LDAP directories, as CAs and health networks publish them:
//! `(mail=ADDRESS)` under a base DN, certificates from `userCertificate;binary`. Every lookup
//! has a deadline and its result (found or not) is cached for a time, so a slow or absent
//! directory never holds up mail for long, and never twice for the same address. What is found
//! is only a candidate: the caller validates it like any other certificate.
//!
//! Built on `ldap3` (async, tokio), without TLS: the certificates are public and trusted only
//! through their chain, and the search reveals no more than the recipient address the message
//! goes to anyway.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ldap3::{LdapConnAsync, LdapConnSettings, Scope, SearchEntry};
use smime::Cert;

/// One directory to search.
#[derive(Debug, Clone)]
pub struct Directory {
    /// `ldap://host:port`.
    pub url: String,
    /// Where to search (subtree).
    pub base: String,
    /// The filter, with `{address}` replaced by the (escaped) recipient address.
    pub filter: String,
    /// How long one lookup may take, connection included.
    pub timeout: Duration,
}

/// The configured directories with the cache of their answers.
#[derive(Debug)]
pub struct Directories {
    dirs: Vec<Directory>,
    ttl: Duration,
    negative_ttl: Duration,
    cache: Mutex<HashMap<String, (Instant, Vec<Cert>)>>,
}

/// The most certificates taken from one lookup.
const MAX_CERTS: usize = 16;

impl Directories {
    /// Directories searched in order; answers are kept for `ttl` (found) or `negative_ttl`.
    pub fn new(dirs: Vec<Directory>, ttl: Duration, negative_ttl: Duration) -> Self {
        Directories {
            dirs,
            ttl,
            negative_ttl,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// True when no directory is configured.
    pub fn is_empty(&self) -> bool {
        self.dirs.is_empty()
    }

    /// The certificates the directories publish for `address` (from the cache when fresh);
    /// empty when none is found, a directory fails, or its deadline passes (logged).
    pub async fn lookup(&self, address: &str) -> Vec<Cert> {
        // Cached under the one address rule's key (any case, either IDN form: one entry).
        let key = smime::Address::parse(address)
            .map(|a| a.key().to_string())
            .unwrap_or_else(|_| address.to_ascii_lowercase());
        if let Some((until, certs)) = self
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            if Instant::now() < *until {
                return certs.clone();
            }
        }
        let mut found = Vec::new();
        for d in &self.dirs {
            match tokio::time::timeout(d.timeout, search(d, address)).await {
                Ok(Ok(certs)) if !certs.is_empty() => {
                    tracing::info!(%address, url = %d.url, count = certs.len(), "certificates found in the directory");
                    found = certs;
                    break;
                }
                Ok(Ok(_)) => {
                    tracing::debug!(%address, url = %d.url, "no certificate in the directory")
                }
                Ok(Err(e)) => {
                    tracing::warn!(%address, url = %d.url, "directory lookup failed: {e}")
                }
                Err(_) => {
                    tracing::warn!(%address, url = %d.url, timeout = ?d.timeout, "directory lookup timed out")
                }
            }
        }
        let ttl = if found.is_empty() {
            self.negative_ttl
        } else {
            self.ttl
        };
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() > 10_000 {
            cache.clear();
        }
        cache.insert(key, (Instant::now() + ttl, found.clone()));
        found
    }

    /// Searches each directory once for an address nobody has (`envelopd check`), in the order
    /// they were given: whether each answered within its deadline, or why not (unreachable, a
    /// base DN the server does not hold, a filter it refuses).
    pub async fn probe(&self) -> Vec<Result<(), String>> {
        let mut out = Vec::new();
        for d in &self.dirs {
            out.push(
                match tokio::time::timeout(d.timeout, search(d, "envelopd-check@invalid")).await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(e)) => Err(e),
                    Err(_) => Err(format!("no answer within {} s", d.timeout.as_secs())),
                },
            );
        }
        out
    }
}

/// One search in one directory.
async fn search(d: &Directory, address: &str) -> Result<Vec<Cert>, String> {
    let settings = LdapConnSettings::new().set_conn_timeout(d.timeout);
    let (conn, mut ldap) = LdapConnAsync::with_settings(settings, &d.url)
        .await
        .map_err(|e| e.to_string())?;
    ldap3::drive!(conn);
    // Directory mail attributes are IA5 strings (ASCII), so a domain written in Unicode
    // (`bücher.example`, as an SMTPUTF8 client gives it) is searched for in A-labels
    // (`xn--bcher-kva.example`), the form a directory can hold; the local part as written.
    let ascii = smime::Address::parse(address)
        .map(|a| a.with_ascii_domain())
        .unwrap_or_else(|_| address.to_string());
    let filter = d
        .filter
        .replace("{address}", &ldap3::ldap_escape(ascii.as_str()));
    let (entries, _) = ldap
        .with_timeout(d.timeout)
        .search(
            &d.base,
            Scope::Subtree,
            &filter,
            vec!["userCertificate;binary"],
        )
        .await
        .map_err(|e| e.to_string())?
        .success()
        .map_err(|e| e.to_string())?;
    let mut certs = Vec::new();
    for entry in entries {
        let e = SearchEntry::construct(entry);
        for (name, values) in &e.bin_attrs {
            if !name.to_ascii_lowercase().starts_with("usercertificate") {
                continue;
            }
            for v in values {
                if let Ok(c) = Cert::from_der(v) {
                    if certs.len() < MAX_CERTS && !certs.contains(&c) {
                        certs.push(c);
                    }
                }
            }
        }
    }
    let _ = ldap.unbind().await;
    Ok(certs)
}
