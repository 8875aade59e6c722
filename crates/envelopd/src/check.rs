//! `envelopd check`: reads the configuration and reports, in plain words, what envelopd would
//! work with: listener, provider reachability, trust anchors, recipient certificates, each
//! identity with its certificate and expiry, and the policy. Exit status 0 only without problems.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use certstore::{CertStore, Purpose};

use crate::config::{Config, FallbackSetting, IdentityConfig, TlsMode};
use crate::keyfiles::read_certs;

/// Certificates that expire within this many days are reported as a warning.
const EXPIRY_WARNING_DAYS: u64 = 30;

/// The report: lines of (severity, text) and whether anything is a problem.
#[derive(Debug, Default)]
pub struct Report {
    lines: Vec<(Level, String)>,
}

/// How serious a line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Fine.
    Ok,
    /// Works, but needs attention soon.
    Warning,
    /// envelopd cannot work like this.
    Problem,
}

impl Report {
    fn push(&mut self, level: Level, text: impl Into<String>) {
        self.lines.push((level, text.into()));
    }

    /// True when no line is a problem.
    pub fn ready(&self) -> bool {
        self.lines.iter().all(|(l, _)| *l != Level::Problem)
    }

    /// The report as text, one line per finding and a summary.
    pub fn render(&self, config_path: &Path) -> String {
        let mut out = format!("envelopd configuration check: {}\n", config_path.display());
        for (level, text) in &self.lines {
            let tag = match level {
                Level::Ok => "ok     ",
                Level::Warning => "warning",
                Level::Problem => "PROBLEM",
            };
            let _ = writeln!(out, "  {tag}  {text}");
        }
        let problems = self
            .lines
            .iter()
            .filter(|(l, _)| *l == Level::Problem)
            .count();
        let warnings = self
            .lines
            .iter()
            .filter(|(l, _)| *l == Level::Warning)
            .count();
        let _ = if problems == 0 {
            writeln!(out, "result: ready ({warnings} warning(s))")
        } else {
            writeln!(
                out,
                "result: {problems} problem(s) to fix before envelopd can run"
            )
        };
        out
    }
}

/// Runs every check of a configuration at time `now`.
pub fn check(cfg: &Config, now: SystemTime, probe_upstream: bool) -> Report {
    let mut r = Report::default();
    let l = &cfg.smtp;
    let how = match l.tls {
        TlsMode::None => "no TLS",
        TlsMode::Starttls => "STARTTLS",
        TlsMode::Implicit => "implicit TLS",
    };
    let login = if l.auth_required() {
        "login required"
    } else {
        "login optional"
    };
    r.push(
        Level::Ok,
        format!(
            "mail programs send through {} (SMTP, {how}, {login})",
            l.listen
        ),
    );
    if l.tls != TlsMode::None {
        match crate::daemon::client_tls(cfg) {
            Ok(_) => r.push(Level::Ok, "listener TLS certificate and key load and match"),
            Err(e) => r.push(Level::Problem, format!("{e:#}")),
        }
    }

    if let (Some(i), Some(iup)) = (&cfg.imap, &cfg.upstream.imap) {
        r.push(
            Level::Ok,
            format!(
                "mail programs read through {} (IMAP; S/MIME shown decrypted and verified; {} MiB cache in memory)",
                i.listen, i.cache_mb
            ),
        );
        let target = format!("{}:{}", iup.host, iup.imap_port());
        if probe_upstream {
            match probe_imap(cfg) {
                Ok(greeting) => r.push(
                    Level::Ok,
                    format!("IMAP server {target}: reachable, TLS as configured; it greets with: {greeting}"),
                ),
                Err(e) => r.push(Level::Problem, format!("IMAP server {target}: {e}")),
            }
        }
    }
    if let (Some(p), Some(pup)) = (&cfg.pop3, &cfg.upstream.pop3) {
        r.push(
            Level::Ok,
            format!(
                "programs that fetch by POP3 read through {} (S/MIME shown decrypted and verified, as on IMAP; {} MiB cache in memory)",
                p.listen, p.cache_mb
            ),
        );
        if p.tls != TlsMode::None {
            match crate::daemon::listener_tls(p.tls, p.cert.as_deref(), p.key.as_deref(), "pop3") {
                Ok(_) => r.push(
                    Level::Ok,
                    "POP3 listener TLS certificate and key load and match",
                ),
                Err(e) => r.push(Level::Problem, format!("{e:#}")),
            }
        }
        let target = format!("{}:{}", pup.host, pup.pop3_port());
        if probe_upstream {
            match probe_pop3(cfg) {
                Ok(greeting) => r.push(
                    Level::Ok,
                    format!("POP3 server {target}: reachable, TLS as configured; it greets with: {greeting}"),
                ),
                Err(e) => r.push(Level::Problem, format!("POP3 server {target}: {e}")),
            }
        }
    }
    let up = &cfg.upstream.smtp;
    let mode = match up.tls {
        TlsMode::Implicit => "implicit TLS (SMTPS)",
        TlsMode::Starttls => "STARTTLS",
        TlsMode::None => "no TLS (this machine only)",
    };
    let target = format!("{}:{}", up.host, up.port());
    if probe_upstream {
        match probe(cfg) {
            Ok(found) => r.push(Level::Ok, format!("provider {target} with {mode}: {found}")),
            Err(e) => r.push(
                Level::Problem,
                format!("provider {target} with {mode}: not reachable: {e}"),
            ),
        }
    } else {
        r.push(
            Level::Ok,
            format!("provider {target} with {mode} (not contacted)"),
        );
    }

    match (&up.ca_file, up.system_roots) {
        (None, false) if up.tls != TlsMode::None => r.push(
            Level::Problem,
            "provider: no CA to check its TLS certificate (set ca_file or system_roots = true)",
        ),
        (Some(f), _) => match read_certs(f) {
            Ok(cs) => r.push(
                Level::Ok,
                format!(
                    "provider certificate checked against {} CA(s) from {}{}",
                    cs.len(),
                    f.display(),
                    if up.system_roots {
                        " and the system CAs"
                    } else {
                        ""
                    }
                ),
            ),
            Err(e) => r.push(Level::Problem, format!("provider CA file: {e:#}")),
        },
        _ => {}
    }

    let mut store = CertStore::new();
    store.set_revocation_mode(cfg.certificates.revocation.into());
    for a in &cfg.certificates.anchors {
        match store.load_anchors(a) {
            Ok(n) => r.push(
                Level::Ok,
                format!("trust anchors: {n} CA certificate(s) from {}", a.display()),
            ),
            Err(e) => r.push(Level::Problem, format!("trust anchors: {e}")),
        }
    }
    if cfg.certificates.system_anchors {
        match store.load_system_roots() {
            Ok(n) => r.push(
                Level::Ok,
                format!("trust anchors: {n} from the system store"),
            ),
            Err(e) => r.push(Level::Problem, format!("trust anchors: {e}")),
        }
    }
    if store.anchors().is_empty() {
        r.push(
            Level::Problem,
            "no trust anchors: no certificate can be trusted, so nothing would be encrypted or verified",
        );
    }
    if let Some(dir) = &cfg.certificates.recipients {
        let (n, errors) = store.load_certs(dir);
        let level = if errors.is_empty() {
            Level::Ok
        } else {
            Level::Warning
        };
        r.push(
            level,
            format!("recipient certificates: {n} loaded from {}", dir.display()),
        );
        for e in errors {
            r.push(Level::Warning, format!("skipped {e}"));
        }
    }

    if let Some(dir) = &cfg.certificates.harvested {
        check_harvested(&mut r, dir, &mut store);
    }
    check_revocation(&mut r, cfg, &mut store, now);
    if cfg.certificates.recipients.is_some() {
        let usable = store
            .certs()
            .iter()
            .filter(|c| {
                c.mailboxes()
                    .iter()
                    .any(|m| store.validate(c, Purpose::Encrypt, m, &[], now).is_ok())
            })
            .count();
        r.push(
            Level::Ok,
            format!("{usable} recipient certificate(s) valid for encryption today"),
        );
    }

    check_directories(&mut r, cfg, probe_upstream);

    if cfg.identities.is_empty() {
        r.push(
            Level::Warning,
            "no identities: outgoing mail will not be signed",
        );
    }
    // Whether envelopd decrypts for readers (IMAP or POP3), which makes the keys it holds matter.
    let reads = (cfg.imap.is_some() && cfg.upstream.imap.is_some())
        || (cfg.pop3.is_some() && cfg.upstream.pop3.is_some());
    for id in &cfg.identities {
        check_identity(&mut r, id, &store, now, reads);
    }

    let p = &cfg.policy;
    let rules = p.to_policy();
    let fallback = match p.fallback {
        FallbackSetting::Plaintext => "send it unencrypted (and say so in the log)",
        FallbackSetting::Refuse => "refuse it (550 5.7.1 naming the addresses)",
        FallbackSetting::Split => "encrypt for those who can read it, unencrypted for the rest",
    };
    r.push(
        Level::Ok,
        format!(
            "policy: when not every recipient has a valid certificate, {fallback}; {} override(s); AES-GCM for {}{}",
            rules.overrides.len(),
            if rules.gcm_capable.is_empty() {
                "nobody yet (AES-CBC, which Outlook reads)".to_string()
            } else {
                rules.gcm_capable.join(", ")
            },
            if rules.require_aead { "; AES-GCM required" } else { "" }
        ),
    );
    r
}

/// The directory where certificates learnt from verified signed mail are kept: what it holds
/// (the daemon loads it as this does) and whether new ones can be written there.
fn check_harvested(r: &mut Report, dir: &Path, store: &mut CertStore) {
    if dir.is_dir() {
        let (n, errors) = store.load_certs(dir);
        r.push(
            Level::Ok,
            format!(
                "certificates learnt from verified signed mail: {n} kept in {}",
                dir.display()
            ),
        );
        for e in errors {
            r.push(Level::Warning, format!("skipped {e}"));
        }
    } else if dir.exists() {
        r.push(
            Level::Warning,
            format!(
                "certificates.harvested = {}: a file, not a directory: certificates learnt from \
                 signed mail cannot be saved there and are forgotten at a restart",
                dir.display()
            ),
        );
        return;
    }
    let lost = "certificates learnt from signed mail are then kept in memory only and forgotten \
                at a restart";
    if writable(r, "certificates.harvested", dir, lost) && !dir.is_dir() {
        r.push(
            Level::Ok,
            format!(
                "certificates learnt from verified signed mail will be kept in {} (created on first use)",
                dir.display()
            ),
        );
    }
}

/// The LDAP directories recipient certificates are looked up in, each asked once (unless
/// `probe`): one that does not answer is a warning, since mail then goes on as if the recipient
/// had no certificate (the policy decides), not a reason not to run.
fn check_directories(r: &mut Report, cfg: &Config, probe: bool) {
    let Some(dirs) = crate::daemon::directories(cfg) else {
        return;
    };
    if !probe {
        for d in &cfg.directories {
            r.push(
                Level::Ok,
                format!(
                    "recipient certificates looked up in {} under \"{}\" (not contacted)",
                    d.url, d.base
                ),
            );
        }
        return;
    }
    let answers = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(dirs.probe()),
        Err(e) => {
            r.push(Level::Warning, format!("directories not asked: {e}"));
            return;
        }
    };
    // The answers come in the order the directories are configured.
    for (d, answer) in cfg.directories.iter().zip(answers) {
        match answer {
            Ok(()) => r.push(
                Level::Ok,
                format!(
                    "directory {}: answers searches under \"{}\"; recipient certificates are looked up there",
                    d.url, d.base
                ),
            ),
            Err(e) => r.push(
                Level::Warning,
                format!(
                    "directory {}: {e}; recipients without a certificate here are treated as \
                     having none until it answers",
                    d.url
                ),
            ),
        }
    }
}

/// Whether the daemon can write files into `dir` (or create it: the deepest existing directory
/// on the way must take a file), tried with a file written and removed again; if not, a warning
/// naming `setting` and what follows from it.
fn writable(r: &mut Report, setting: &str, dir: &Path, consequence: &str) -> bool {
    let ok = dir.ancestors().find(|d| d.is_dir()).is_some_and(|d| {
        let probe = d.join(".envelopd-check.tmp");
        std::fs::File::create_new(&probe)
            .and_then(|_| std::fs::remove_file(&probe))
            .is_ok()
    });
    if !ok {
        r.push(
            Level::Warning,
            format!(
                "{setting} = {}: cannot be written (read-only, or no permission; under systemd add \
                 it to ReadWritePaths=): {consequence}",
                dir.display()
            ),
        );
    }
    ok
}

/// The revocation setting and the CRLs envelopd holds without going online (local files and the
/// cache of earlier runs); the daemon fetches the rest.
fn check_revocation(r: &mut Report, cfg: &Config, store: &mut CertStore, now: SystemTime) {
    let c = &cfg.certificates;
    let mode = match c.revocation {
        crate::config::RevocationSetting::Off => {
            r.push(
                Level::Warning,
                "revocation: off (revoked certificates would still be used)",
            );
            return;
        }
        crate::config::RevocationSetting::Prefer => {
            "prefer (a certificate whose status cannot be found out is still used)"
        }
        crate::config::RevocationSetting::Require => {
            "require (a certificate whose status cannot be found out is not used)"
        }
    };
    if let Some(dir) = &c.crl_cache {
        writable(
            r,
            "certificates.crl_cache",
            dir,
            "CRLs are then fetched again after every restart, and until then a certificate's status is unknown",
        );
    }
    let (loaded, files, cached) = crate::revocation::with_local_crls(c, std::mem::take(store));
    *store = loaded;
    r.push(
        Level::Ok,
        format!(
            "revocation: {mode}; {files} local CRL(s), {cached} cached; {} distribution point(s) fetched by the daemon",
            store.crl_urls().len()
        ),
    );
    for crl in store.revocation().crls() {
        let next = crl.next_update();
        let stale = next.is_some_and(|n| n < now);
        let sha1 = crl.signed_with_sha1();
        r.push(
            if stale || sha1 {
                Level::Warning
            } else {
                Level::Ok
            },
            format!(
                "CRL of \"{}\" ({} revoked) from {}: next update {}{}{}",
                crl.issuer(),
                crl.revoked_count(),
                crl.source(),
                next.map(smime::cert::fmt_time)
                    .unwrap_or_else(|| "not announced".into()),
                if stale { ", out of date" } else { "" },
                if sha1 {
                    "; signed with SHA-1, so it can show revocations but not that a certificate is good"
                } else {
                    ""
                }
            ),
        );
    }
}

fn check_identity(
    r: &mut Report,
    id: &IdentityConfig,
    store: &CertStore,
    now: SystemTime,
    reads: bool,
) {
    let who = id.addresses.join(", ");
    // The very keys `envelopd run` loads (the signing one and every other, such as a separate
    // encryption key), so a key the daemon would refuse is a problem here too.
    let (signing, mut keys) = match id.key_source().load_keys() {
        Ok(k) => k,
        Err(e) => {
            r.push(Level::Problem, format!("identity {who}: {e:#}"));
            return;
        }
    };
    for c in &id.chain {
        match read_certs(c) {
            Ok(cs) => keys[signing].chain.extend(cs),
            Err(e) => r.push(Level::Problem, format!("identity {who}: {e:#}")),
        }
    }
    let identity = &keys[signing];
    let cert = &identity.cert;
    let (_, until) = cert.validity();
    let days = until
        .duration_since(now)
        .map(|d| d.as_secs() / 86400)
        .unwrap_or(0);
    for address in &id.addresses {
        match store.validate(cert, Purpose::Sign, address, &identity.chain, now) {
            Ok(_) => {
                let level = if days < EXPIRY_WARNING_DAYS {
                    Level::Warning
                } else {
                    Level::Ok
                };
                r.push(
                    level,
                    format!(
                        "identity {address}: {}, certificate \"{}\" from \"{}\", valid until {} ({days} days): can sign",
                        if identity.key.is_external() {
                            format!("{} (the key cannot leave the token)", identity.key.describe())
                        } else {
                            format!("{} key", identity.key.describe())
                        },
                        cert.subject(),
                        cert.issuer(),
                        smime::cert::fmt_time(until)
                    ),
                );
            }
            Err(e) => r.push(
                Level::Problem,
                format!("identity {address}: cannot sign: {e}"),
            ),
        }
    }
    if let Some(p) = &id.encryption_cert {
        match read_certs(p) {
            Ok(mut cs) if !cs.is_empty() => {
                let enc = cs.remove(0);
                let ok = id.addresses.iter().all(|a| {
                    store
                        .validate(&enc, Purpose::Encrypt, a, &identity.chain, now)
                        .map_err(|e| {
                            r.push(
                                Level::Problem,
                                format!("identity {a}: encryption certificate: {e}"),
                            )
                        })
                        .is_ok()
                });
                if ok {
                    r.push(
                        Level::Ok,
                        format!(
                            "identity {who}: Sent copies are encrypted to \"{}\" too",
                            enc.subject()
                        ),
                    );
                }
                if !crate::keyfiles::has_key_for(&keys, &enc) {
                    r.push(
                        // envelopd runs like this (a mail program may hold that key), so a
                        // warning, but one that says what will not open.
                        Level::Warning,
                        format!(
                            "identity {who}: no private key here for the encryption certificate \"{}\" \
                             (give encryption_key, or a PKCS#12 file holding both keys): Sent copies \
                             and mail from correspondents who saw it announced in a signature are \
                             encrypted to it, and envelopd {}",
                            enc.subject(),
                            if reads {
                                "cannot open them for reading"
                            } else {
                                "could not open them (only a mail program holding that key can)"
                            }
                        ),
                    );
                }
            }
            Ok(_) => r.push(
                Level::Problem,
                format!("identity {who}: {} holds no certificate", p.display()),
            ),
            Err(e) => r.push(Level::Problem, format!("identity {who}: {e:#}")),
        }
    }
    if reads {
        report_decryption_keys(r, id, &keys, signing);
    }
}

/// Which keys open incoming mail for an identity, and for which logins (a session decrypts only
/// with the keys of the identities its login may use).
fn report_decryption_keys(
    r: &mut Report,
    id: &IdentityConfig,
    keys: &[smime::Identity],
    signing: usize,
) {
    let names: Vec<String> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| {
            format!(
                "\"{}\"{}",
                k.cert.subject(),
                if i == signing { " (also signs)" } else { "" }
            )
        })
        .collect();
    let mut logins: Vec<&str> = id.addresses.iter().map(String::as_str).collect();
    logins.extend(id.logins.iter().map(String::as_str));
    r.push(
        Level::Ok,
        format!(
            "identity {}: incoming mail is opened with {} key(s), {}, for the logins {}",
            id.addresses.join(", "),
            keys.len(),
            names.join(", "),
            logins.join(", ")
        ),
    );
}

/// Connects to the provider's IMAP server exactly as an IMAP session will.
fn probe_imap(cfg: &Config) -> Result<String, String> {
    let target = crate::daemon::imap_target(cfg)
        .map_err(|e| format!("{e:#}"))?
        .ok_or("no [upstream.imap]")?;
    let ctx = imap::session::ImapContext {
        limits: net::conn::Limits::default(),
        command_timeout: Duration::from_secs(120),
        auth_throttle: Default::default(),
        upstream: target,
        keys: Default::default(),
        store: std::sync::Arc::new(std::sync::RwLock::new(certstore::CertStore::new())),
        harvest_dir: None,
        cache: std::sync::Mutex::new(imap::session::Cache::new(0)),
        max_literal: 1 << 20,
        connect_timeout: Duration::from_secs(10),
        client_timeout: Duration::from_secs(10),
        own_certs: Vec::new(),
        encrypt_appends_to: Vec::new(),
        header_protection: std::sync::RwLock::new(smime::Protection::Off),
        client_tls: None,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(imap::session::probe(&ctx))
}

/// Connects to the provider's POP3 server exactly as a POP3 session will.
fn probe_pop3(cfg: &Config) -> Result<String, String> {
    let target = crate::daemon::pop3_target(cfg)
        .map_err(|e| format!("{e:#}"))?
        .ok_or("no [upstream.pop3]")?;
    let ctx = pop3::session::Pop3Context {
        limits: net::conn::Limits::default(),
        command_timeout: Duration::from_secs(120),
        auth_throttle: Default::default(),
        upstream: target,
        keys: Default::default(),
        store: std::sync::Arc::new(std::sync::RwLock::new(certstore::CertStore::new())),
        harvest_dir: None,
        cache: std::sync::Mutex::new(pop3::session::Cache::new(0)),
        max_message: 1 << 20,
        connect_timeout: Duration::from_secs(10),
        client_timeout: Duration::from_secs(10),
        client_tls: None,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(pop3::session::probe(&ctx))
}

/// Connects to the provider exactly as the daemon will (TLS, certificate check, EHLO) and
/// says what it found.
fn probe(cfg: &Config) -> Result<String, String> {
    let target = crate::daemon::upstream_target(cfg).map_err(|e| format!("{e:#}"))?;
    let timeouts = smtp::upstream::Timeouts {
        connect: Duration::from_secs(10),
        command: Duration::from_secs(10),
        data_end: Duration::from_secs(10),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let start = Instant::now();
        let up = smtp::upstream::Upstream::connect(&target, "envelopd-check", timeouts)
            .await
            .map_err(|r| r.text)?;
        let ms = start.elapsed().as_millis();
        let mut found = vec![format!("reachable ({ms} ms)")];
        if up.is_tls() {
            found.push("TLS certificate valid".into());
        }
        let mechs: Vec<&str> = ["PLAIN", "LOGIN"]
            .into_iter()
            .filter(|m| up.offers_auth(m))
            .collect();
        found.push(if mechs.is_empty() {
            "offers no password login (AUTH PLAIN/LOGIN)".into()
        } else {
            format!("accepts logins with AUTH {}", mechs.join(" "))
        });
        if let Some(n) = up.info.size_limit {
            found.push(format!("takes messages up to {} MB", n / 1_000_000));
        }
        // Delivery receipts are the provider's to send: say whether a receipt request from a
        // mail program will get anywhere.
        found.push(if up.has("DSN") {
            "sends delivery receipts on request (DSN)".into()
        } else {
            "sends no delivery receipts (no DSN): mail programs' receipt requests are dropped"
                .into()
        });
        up.quit().await;
        Ok(found.join(", "))
    })
}
