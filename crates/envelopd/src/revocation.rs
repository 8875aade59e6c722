//! Keeps revocation data current: CRLs from local files, from the disk cache of earlier runs,
//! and from the HTTP distribution points of every certificate in the store, fetched in a
//! background thread with deadlines (never on a mail session's path) and refreshed before their
//! `nextUpdate`. A failed fetch is retried with growing pauses and never removes a CRL already
//! held; what the store then decides follows `revocation = "require" | "prefer" | "off"`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use certstore::revocation::{Crl, MAX_CRL_SIZE};
use certstore::CertStore;

/// How long a CRL fetched without a `nextUpdate` is used before it is fetched again.
const MAX_AGE: Duration = Duration::from_secs(24 * 3600);
/// The first pause after a failed fetch; doubled per failure up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(60);
/// The longest pause between attempts on a failing URL.
const MAX_BACKOFF: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone, Default)]
struct UrlState {
    /// When the held CRL from this URL should be replaced.
    due: Option<SystemTime>,
    /// Consecutive failures and when the last attempt was.
    failures: u32,
    last_attempt: Option<SystemTime>,
}

impl UrlState {
    /// After failures: whether the pause (doubling from a minute up to an hour) has passed.
    fn retry_due(&self, now: SystemTime) -> bool {
        let pause = FIRST_BACKOFF
            .saturating_mul(1 << self.failures.min(6))
            .min(MAX_BACKOFF);
        self.last_attempt.is_none_or(|t| now >= t + pause)
    }
}

/// The CRL fetcher: one per daemon, shared by its background thread.
pub struct Fetcher {
    store: Arc<RwLock<CertStore>>,
    cache: Option<PathBuf>,
    timeout: Duration,
    urls: Mutex<HashMap<String, UrlState>>,
}

impl Fetcher {
    /// A fetcher for `store`; fetched CRLs are kept in `cache` (a directory) if given.
    pub fn new(store: Arc<RwLock<CertStore>>, cache: Option<PathBuf>, timeout: Duration) -> Self {
        Fetcher {
            store,
            cache,
            timeout,
            urls: Mutex::new(HashMap::new()),
        }
    }

    /// Loads CRL files (or directories of them) named in the configuration; a file that is not
    /// a usable CRL is reported and skipped. Returns how many were taken.
    pub fn load_files(&self, paths: &[PathBuf]) -> usize {
        let mut n = 0;
        for file in paths.iter().flat_map(|p| files_of(p)) {
            match std::fs::read(&file) {
                Ok(data) => match self.add(&data, &file.display().to_string()) {
                    Ok(_) => n += 1,
                    Err(e) => tracing::warn!(file = %file.display(), "CRL not used: {e}"),
                },
                Err(e) => tracing::warn!(file = %file.display(), "cannot read the CRL: {e}"),
            }
        }
        n
    }

    /// Loads the CRLs cached by earlier runs (checked again: the trust anchors may have changed).
    pub fn load_cache(&self) -> usize {
        let Some(dir) = &self.cache else {
            return 0;
        };
        let mut n = 0;
        for file in files_of(dir) {
            let Ok(data) = std::fs::read(&file) else {
                continue;
            };
            let url = std::fs::read_to_string(file.with_extension("url")).unwrap_or_default();
            if url.is_empty() {
                continue;
            }
            if let Ok(crl) = self.add(&data, url.trim()) {
                self.mark_fetched(url.trim(), &crl);
                n += 1;
            }
        }
        n
    }

    fn add(&self, data: &[u8], source: &str) -> Result<Crl, String> {
        let store = self.store.read().unwrap_or_else(|e| e.into_inner());
        store.add_crl(data, source)
    }

    fn mark_fetched(&self, url: &str, crl: &Crl) {
        let now = SystemTime::now();
        // Fetch again before the CA's next update: a tenth of the CRL's period early (at least
        // an hour), so a practice is never left with a stale list when the CA is punctual.
        let due = match crl.next_update() {
            Some(next) => {
                let period = next
                    .duration_since(crl.this_update())
                    .unwrap_or(Duration::ZERO);
                let margin = (period / 10).max(Duration::from_secs(3600));
                next.checked_sub(margin)
                    .unwrap_or(next)
                    .max(now + FIRST_BACKOFF)
            }
            None => now + MAX_AGE,
        };
        let mut urls = self.urls.lock().unwrap_or_else(|e| e.into_inner());
        urls.insert(
            url.to_string(),
            UrlState {
                due: Some(due.min(now + MAX_AGE)),
                failures: 0,
                last_attempt: Some(now),
            },
        );
    }

    /// The distribution points whose CRL should be (re)fetched now.
    fn due_urls(&self) -> Vec<String> {
        let wanted = self
            .store
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .crl_urls();
        let now = SystemTime::now();
        let urls = self.urls.lock().unwrap_or_else(|e| e.into_inner());
        wanted
            .into_iter()
            .filter(|u| match urls.get(u) {
                None => true,
                Some(s) if s.failures > 0 => s.retry_due(now),
                Some(s) => s.due.is_none_or(|d| now >= d),
            })
            .collect()
    }

    /// Asks OCSP responders about the certificates whose status the CRLs leave unknown (the
    /// second source). Returns (answered, failed).
    fn refresh_ocsp(&self) -> (usize, usize) {
        let now = SystemTime::now();
        let candidates = self
            .store
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .ocsp_candidates(now);
        let (mut ok, mut failed) = (0, 0);
        for (cert, issuer, url) in candidates {
            let key = format!(
                "ocsp {url} {}",
                hex(cert.parsed().tbs_certificate().serial_number().as_bytes())
            );
            {
                let urls = self.urls.lock().unwrap_or_else(|e| e.into_inner());
                if urls
                    .get(&key)
                    .is_some_and(|s| s.failures > 0 && !s.retry_due(now))
                {
                    continue;
                }
            }
            let answer = certstore::ocsp::request(&cert, &issuer)
                .and_then(|req| post_ocsp(&url, &req, self.timeout))
                .and_then(|resp| certstore::ocsp::read_response(&resp, &cert, &issuer, now));
            let mut urls = self.urls.lock().unwrap_or_else(|e| e.into_inner());
            let state = urls.entry(key).or_default();
            state.last_attempt = Some(now);
            match answer {
                Ok(a) => {
                    ok += 1;
                    state.failures = 0;
                    tracing::info!(url = %url, subject = %cert.subject(), status = ?a.status, "OCSP answer");
                    self.store
                        .read()
                        .unwrap_or_else(|e| e.into_inner())
                        .revocation()
                        .add_ocsp(&cert, &issuer, a);
                }
                Err(e) => {
                    failed += 1;
                    state.failures = state.failures.saturating_add(1);
                    tracing::warn!(url = %url, subject = %cert.subject(), "OCSP query failed: {e}");
                }
            }
        }
        (ok, failed)
    }

    /// One round: fetches every due CRL, then asks OCSP about what is still unknown. Returns
    /// (fetched, failed).
    pub fn refresh(&self) -> (usize, usize) {
        let (ok, failed) = self.refresh_crls();
        let (o, f) = self.refresh_ocsp();
        (ok + o, failed + f)
    }

    fn refresh_crls(&self) -> (usize, usize) {
        let (mut ok, mut failed) = (0, 0);
        for url in self.due_urls() {
            match fetch(&url, self.timeout).and_then(|data| {
                let crl = self.add(&data, &url)?;
                Ok((crl, data))
            }) {
                Ok((crl, data)) => {
                    ok += 1;
                    tracing::info!(
                        url = %url,
                        issuer = %crl.issuer(),
                        revoked = crl.revoked_count(),
                        sha1 = crl.signed_with_sha1(),
                        next_update = %crl.next_update().map(smime::cert::fmt_time).unwrap_or_else(|| "none".into()),
                        "CRL fetched"
                    );
                    self.mark_fetched(&url, &crl);
                    self.save(&url, &data);
                }
                Err(e) => {
                    failed += 1;
                    let mode = self
                        .store
                        .read()
                        .unwrap_or_else(|e| e.into_inner())
                        .revocation_mode();
                    tracing::warn!(
                        url = %url,
                        ?mode,
                        "CRL could not be fetched: {e}; certificates from this CA have an unknown revocation status until it can"
                    );
                    let mut urls = self.urls.lock().unwrap_or_else(|e| e.into_inner());
                    let s = urls.entry(url.clone()).or_default();
                    s.failures = s.failures.saturating_add(1);
                    s.last_attempt = Some(SystemTime::now());
                }
            }
        }
        (ok, failed)
    }

    fn save(&self, url: &str, data: &[u8]) {
        let Some(dir) = &self.cache else {
            return;
        };
        let name = hex(
            &aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, url.as_bytes()).as_ref()[..12],
        );
        let write = || -> std::io::Result<()> {
            std::fs::create_dir_all(dir)?;
            let tmp = dir.join(format!("{name}.tmp"));
            std::fs::write(&tmp, data)?;
            std::fs::rename(&tmp, dir.join(format!("{name}.crl")))?;
            std::fs::write(dir.join(format!("{name}.url")), url)
        };
        if let Err(e) = write() {
            tracing::warn!(dir = %dir.display(), "cannot cache the CRL: {e}");
        }
    }

    /// Runs [`Fetcher::refresh`] every `interval` in a thread of its own.
    pub fn spawn(self: Arc<Self>, interval: Duration) -> std::thread::JoinHandle<()> {
        std::thread::Builder::new()
            .name("crl-fetcher".into())
            .spawn(move || loop {
                self.refresh();
                std::thread::sleep(interval);
            })
            .expect("starting the CRL thread")
    }
}

/// The store with the CRLs available without going online (local files, the cache of earlier
/// runs), for the commands that do not run the fetcher; with how many of each were taken.
pub fn with_local_crls(
    c: &crate::config::Certificates,
    store: CertStore,
) -> (CertStore, usize, usize) {
    let shared = Arc::new(RwLock::new(store));
    let fetcher = Fetcher::new(shared.clone(), c.crl_cache.clone(), Duration::ZERO);
    let files = fetcher.load_files(&c.crls);
    let cached = fetcher.load_cache();
    drop(fetcher);
    let store = std::mem::take(&mut *shared.write().unwrap_or_else(|e| e.into_inner()));
    (store, files, cached)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn files_of(p: &Path) -> Vec<PathBuf> {
    if p.is_dir() {
        let mut v: Vec<PathBuf> = std::fs::read_dir(p)
            .map(|d| {
                d.filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|f| {
                        f.is_file()
                            && !matches!(
                                f.extension().and_then(|x| x.to_str()),
                                Some("url" | "tmp")
                            )
                    })
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    } else {
        vec![p.to_path_buf()]
    }
}

/// A plain-HTTP client with one deadline for the whole exchange; HTTP errors are answers.
fn http_agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .build()
        .into()
}

/// POSTs an OCSP request (RFC 6960 appendix A) with one deadline and a size limit.
fn post_ocsp(url: &str, request: &[u8], timeout: Duration) -> Result<Vec<u8>, String> {
    if !url.starts_with("http://") {
        return Err("only http:// OCSP responders are asked".into());
    }
    let agent = http_agent(timeout);
    let mut resp = agent
        .post(url)
        .header("Content-Type", "application/ocsp-request")
        .send(request)
        .map_err(|e| format!("HTTP request failed: {e}"))?;
    if resp.status() != 200 {
        return Err(format!("the responder answered HTTP {}", resp.status()));
    }
    resp.body_mut()
        .with_config()
        .limit(certstore::ocsp::MAX_OCSP_SIZE as u64)
        .read_to_vec()
        .map_err(|e| format!("reading the OCSP answer failed: {e}"))
}

/// GETs a CRL over plain HTTP with one deadline for the whole exchange and a size limit.
pub fn fetch(url: &str, timeout: Duration) -> Result<Vec<u8>, String> {
    if !url.starts_with("http://") {
        return Err("only http:// distribution points are fetched (RFC 5280 §4.2.1.13)".into());
    }
    let agent = http_agent(timeout);
    let mut resp = agent
        .get(url)
        .call()
        .map_err(|e| format!("HTTP request failed: {e}"))?;
    if resp.status() != 200 {
        return Err(format!("the server answered HTTP {}", resp.status()));
    }
    resp.body_mut()
        .with_config()
        .limit(MAX_CRL_SIZE as u64)
        .read_to_vec()
        .map_err(|e| format!("reading the CRL failed: {e}"))
}
