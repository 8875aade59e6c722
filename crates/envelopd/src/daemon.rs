//! `envelopd run`: builds the shared context from the configuration (certificate store,
//! identities with the logins that may use their keys, policy), opens the SMTP, IMAP and POP3
//! listeners, the status page and the revocation fetcher, reloads on SIGHUP and drains open
//! sessions on SIGINT/SIGTERM.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use certstore::CertStore;
use net::target::{ClientTls, Target, TargetTls};
use smtp::session::{Context, SenderIdentity};

use crate::config::{Config, TlsMode};
use crate::keyfiles::read_certs;

/// Runs the proxy until interrupted.
pub fn run(cfg: Config, config_path: std::path::PathBuf) -> Result<()> {
    // Logs go to stderr (journald picks them up); RUST_LOG=debug for more. Never bodies, keys
    // or passwords: only sizes, counts, addresses in refusals and decisions.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if cfg.log.format == crate::config::LogFormat::Json {
        // One JSON object per line (fields, span and target kept apart) for log collectors.
        logs.json().init();
    } else {
        // Colour codes only for a person at a terminal, never in log files or the journal.
        logs.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }
    let upstream = upstream_target(&cfg)?;
    let client_tls = client_tls(&cfg)?;
    let Loaded {
        store,
        identities,
        decryption_keys,
        own_certs,
    } = load(&cfg)?;
    // The IMAP and POP3 sides open mail with the same keys, by the same login rule.
    let decryption_keys = Arc::new(decryption_keys);
    // One store for both sides: what the IMAP side learns, the SMTP side encrypts to.
    let store = Arc::new(std::sync::RwLock::new(store));
    // Failed logins count across both protocols.
    let auth_throttle = Arc::new(net::conn::AuthThrottle::default());
    start_revocation(&cfg, &store);
    let own_for_status = own_certificates(&identities);
    watch_own_certificates(own_for_status.clone());
    let imap = match (&cfg.imap, &cfg.upstream.imap) {
        (Some(l), Some(_)) => {
            let target = imap_target(&cfg)?.expect("upstream.imap is set");
            Some((
                l.listen,
                Arc::new(imap::session::ImapContext {
                    auth_throttle: auth_throttle.clone(),
                    limits: net::conn::Limits {
                        total: l.max_connections.max(1),
                        per_ip: l.max_connections_per_ip.max(1),
                        refusal: None,
                        proxy_protocol: l.proxy_protocol,
                        proxy_from: l.proxy_from.clone(),
                    },
                    upstream: target,
                    keys: decryption_keys.clone(),
                    store: store.clone(),
                    harvest_dir: cfg.certificates.harvested.clone(),
                    cache: std::sync::Mutex::new(imap::session::Cache::new(l.cache_mb << 20)),
                    max_literal: 2 * cfg.smtp.max_message_size as u64 + (1 << 20),
                    connect_timeout: Duration::from_secs(30),
                    client_timeout: Duration::from_secs(31 * 60),
                    command_timeout: Duration::from_secs(l.command_timeout.max(1)),
                    own_certs,
                    client_tls: listener_tls(l.tls, l.cert.as_deref(), l.key.as_deref(), "imap")?,
                    header_protection: std::sync::RwLock::new(own_copy_protection(&cfg)),
                    encrypt_appends_to: match (l.encrypt_appends, l.encrypted_folders.is_empty()) {
                        (false, _) => Vec::new(),
                        (true, true) => imap::session::DEFAULT_ENCRYPTED_FOLDERS
                            .iter()
                            .map(|s| s.to_string())
                            .collect(),
                        (true, false) => l.encrypted_folders.clone(),
                    },
                }),
            ))
        }
        _ => None,
    };
    let pop3 = match (&cfg.pop3, &cfg.upstream.pop3) {
        (Some(l), Some(_)) => {
            let target = pop3_target(&cfg)?.expect("upstream.pop3 is set");
            Some((
                l.listen,
                Arc::new(pop3::session::Pop3Context {
                    auth_throttle: auth_throttle.clone(),
                    limits: net::conn::Limits {
                        total: l.max_connections.max(1),
                        per_ip: l.max_connections_per_ip.max(1),
                        refusal: None,
                        proxy_protocol: l.proxy_protocol,
                        proxy_from: l.proxy_from.clone(),
                    },
                    upstream: target,
                    keys: decryption_keys.clone(),
                    store: store.clone(),
                    harvest_dir: cfg.certificates.harvested.clone(),
                    cache: std::sync::Mutex::new(pop3::session::Cache::new(l.cache_mb << 20)),
                    // What the SMTP side accepts, encrypted (base64 and the envelope).
                    max_message: 2 * cfg.smtp.max_message_size + (1 << 20),
                    connect_timeout: Duration::from_secs(30),
                    // RFC 1939 §3: an autologout timer of at least 10 minutes.
                    client_timeout: Duration::from_secs(10 * 60),
                    command_timeout: Duration::from_secs(l.command_timeout.max(1)),
                    client_tls: listener_tls(l.tls, l.cert.as_deref(), l.key.as_deref(), "pop3")?,
                }),
            ))
        }
        _ => None,
    };
    let ctx = Arc::new(Context {
        upstream,
        tls: client_tls,
        require_auth: cfg.smtp.auth_required(),
        hostname: "envelopd".into(),
        store: store.clone(),
        identities,
        rules: std::sync::RwLock::new(rules_of(&cfg)),
        directory: directories(&cfg),
        auth_throttle,
        limits: net::conn::Limits {
            total: cfg.smtp.max_connections.max(1),
            per_ip: cfg.smtp.max_connections_per_ip.max(1),
            refusal: None,
            proxy_protocol: cfg.smtp.proxy_protocol,
            proxy_from: cfg.smtp.proxy_from.clone(),
        },
        max_size: cfg.smtp.max_message_size,
        max_recipients: cfg.smtp.max_recipients.max(1),
        timeouts: cfg.upstream.smtp.timeouts(),
        client_timeout: Duration::from_secs(cfg.smtp.client_timeout.max(1)),
    });
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(cfg.smtp.listen)
            .await
            .with_context(|| format!("cannot listen on {}", cfg.smtp.listen))?;
        tracing::info!(
            listen = %cfg.smtp.listen,
            upstream = %ctx.upstream.describe(),
            auth_required = ctx.require_auth,
            "envelopd is running; Ctrl-C stops"
        );
        let (stop, stopped) = tokio::sync::watch::channel(false);
        // SIGINT (Ctrl-C) and SIGTERM (systemd, docker stop) stop gracefully: no new
        // connections, messages in flight are finished.
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("installing the SIGTERM handler")?;
        tokio::spawn(async move {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            tracing::info!("stopping: finishing open sessions first");
            let _ = stop.send(true);
        });
        // SIGHUP: the listeners' TLS certificates and the certificate directories are read again.
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .context("installing the SIGHUP handler")?;
        let reload_store = store.clone();
        let reload_dirs: Vec<std::path::PathBuf> = cfg
            .certificates
            .recipients
            .iter()
            .chain(cfg.certificates.harvested.iter())
            .cloned()
            .collect();
        let crl_files = cfg.certificates.crls.clone();
        let reload_ctx = ctx.clone();
        let reload_imap = imap.as_ref().map(|(_, c)| c.clone());
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                // The policy section is read again; a configuration that does not load keeps
                // the rules in force (and says why).
                match Config::load(&config_path) {
                    Ok(new) => {
                        *reload_ctx.rules.write().unwrap_or_else(|e| e.into_inner()) = rules_of(&new);
                        if let Some(imap) = &reload_imap {
                            *imap.header_protection.write().unwrap_or_else(|e| e.into_inner()) =
                                own_copy_protection(&new);
                        }
                        tracing::info!(fallback = ?new.policy.fallback, overrides = new.policy.overrides.len(), "policy reloaded (listener, provider and identity changes need a restart)");
                    }
                    Err(e) => tracing::error!("configuration not reloaded, the previous policy stays in force: {e:#}"),
                }
                let (tls_ok, tls_failed) = crate::tls::reload_all();
                let added = {
                    let mut s = reload_store.write().unwrap_or_else(|e| e.into_inner());
                    let before = s.certs().len() + s.intermediates().len();
                    for d in &reload_dirs {
                        let (_, errors) = s.load_certs(d);
                        for e in errors {
                            tracing::warn!("skipped {e}");
                        }
                    }
                    s.certs().len() + s.intermediates().len() - before
                };
                let crls = crate::revocation::Fetcher::new(reload_store.clone(), None, Duration::ZERO)
                    .load_files(&crl_files);
                tracing::info!(tls_reloaded = tls_ok, tls_failed, certificates_added = added, crl_files = crls, "reloaded on SIGHUP");
            }
        });
        let status_task = match &cfg.status {
            Some(st) => {
                let l = tokio::net::TcpListener::bind(st.listen)
                    .await
                    .with_context(|| format!("cannot listen on {} (status)", st.listen))?;
                let mut listeners = vec![(
                    "SMTP".to_string(),
                    format!("{} ({})", cfg.smtp.listen, cfg.smtp.tls),
                )];
                if let Some(i) = &cfg.imap {
                    listeners.push(("IMAP".into(), format!("{} ({})", i.listen, i.tls)));
                }
                if let Some(p) = &cfg.pop3 {
                    listeners.push(("POP3".into(), format!("{} ({})", p.listen, p.tls)));
                }
                let status = Arc::new(crate::status::Status {
                    store: store.clone(),
                    own: own_for_status.clone(),
                    listeners,
                });
                tracing::info!(listen = %st.listen, "status page and metrics at http://{}/", st.listen);
                Some(tokio::spawn(crate::status::serve(l, status, stopped.clone())))
            }
            None => None,
        };
        let imap_task = match imap {
            Some((listen, ictx)) => {
                let l = tokio::net::TcpListener::bind(listen)
                    .await
                    .with_context(|| format!("cannot listen on {listen}"))?;
                tracing::info!(%listen, upstream = %format!("{}:{}", ictx.upstream.host, ictx.upstream.port), "IMAP proxy listening");
                Some(tokio::spawn(imap::session::serve(l, ictx, stopped.clone())))
            }
            None => None,
        };
        let pop3_task = match pop3 {
            Some((listen, pctx)) => {
                let l = tokio::net::TcpListener::bind(listen)
                    .await
                    .with_context(|| format!("cannot listen on {listen}"))?;
                tracing::info!(%listen, upstream = %pctx.upstream.describe(), "POP3 proxy listening");
                Some(tokio::spawn(pop3::session::serve(l, pctx, stopped.clone())))
            }
            None => None,
        };
        smtp::session::serve(listener, ctx, stopped)
            .await
            .context("listener failed")?;
        if let Some(t) = imap_task {
            let _ = t.await;
        }
        if let Some(t) = pop3_task {
            let _ = t.await;
        }
        if let Some(t) = status_task {
            let _ = t.await;
        }
        tracing::info!("stopped");
        Ok(())
    })
}

/// Header protection for the copies the IMAP side stores encrypted (Sent, Drafts): never a
/// Legacy Display part, which only the sender's own client would see.
fn own_copy_protection(cfg: &Config) -> smime::Protection {
    if cfg.policy.header_protection == crate::config::OnOff::On {
        smime::Protection::Cipher {
            legacy_display: false,
        }
    } else {
        smime::Protection::Off
    }
}

/// What a reload may change for running sessions: policy, header protection, sender binding.
fn rules_of(cfg: &Config) -> smtp::session::Rules {
    smtp::session::Rules {
        policy: cfg.policy.to_policy(),
        header_protection: cfg.policy.header_protection(),
        refuse_foreign_sender: cfg.policy.refuse_foreign_sender(),
    }
}

/// The TLS set-up for one of the provider's servers.
fn target_tls(up: &crate::config::UpstreamServer, section: &str) -> Result<TargetTls> {
    Ok(match up.tls {
        TlsMode::None => TargetTls::None,
        mode => {
            let config = crate::tls::client_config(up.system_roots, up.ca_file.as_deref())
                .with_context(|| section.to_string())?;
            if mode == TlsMode::Implicit {
                TargetTls::Implicit(config)
            } else {
                TargetTls::Starttls(config)
            }
        }
    })
}

/// What the configuration's files hold: the certificate store (anchors, recipients, learnt
/// certificates, the practice's own), the signing identities, every decryption key and the own
/// encryption certificates.
pub struct Loaded {
    /// Anchors and certificates.
    pub store: CertStore,
    /// The practice's signing identities.
    pub identities: Vec<SenderIdentity>,
    /// Every private key, for decrypting incoming mail.
    pub decryption_keys: Vec<imap::session::BoundKey>,
    /// Own encryption certificates with the logins and addresses they belong to.
    pub own_certs: Vec<(Vec<String>, smime::Cert)>,
}

/// The configured LDAP directories, if any.
pub fn directories(cfg: &Config) -> Option<Arc<directory::Directories>> {
    if cfg.directories.is_empty() {
        return None;
    }
    let dirs = cfg
        .directories
        .iter()
        .map(|d| directory::Directory {
            url: d.url.clone(),
            base: d.base.clone(),
            filter: d.filter.clone(),
            timeout: Duration::from_secs(d.timeout.max(1)),
        })
        .collect();
    Some(Arc::new(directory::Directories::new(
        dirs,
        Duration::from_secs(cfg.certificates.directory_ttl),
        Duration::from_secs(cfg.certificates.directory_negative_ttl),
    )))
}

/// The practice's own certificates (signing and separate encryption ones), each with the
/// addresses of its identity.
fn own_certificates(identities: &[SenderIdentity]) -> Vec<(String, smime::Cert)> {
    identities
        .iter()
        .flat_map(|i| {
            let who = i.addresses.join(", ");
            std::iter::once((who.clone(), i.identity.cert.clone()))
                .chain(i.encryption_cert.clone().map(|c| (who, c)))
        })
        .collect()
}

/// Days before expiry from which the practice's own certificates are warned about (daily).
pub const EXPIRY_WARNINGS: [u64; 3] = [30, 14, 7];

/// Logs a warning for every own certificate that expires within 30 days, at start and then once
/// a day: louder (error level) in the last 7 days, and after expiry.
fn watch_own_certificates(certs: Vec<(String, smime::Cert)>) {
    let check = move || {
        let now = std::time::SystemTime::now();
        for (who, cert) in &certs {
            let until = cert.validity().1;
            let date = smime::cert::fmt_time(until);
            match until.duration_since(now) {
                Err(_) => tracing::error!(
                    identity = %who,
                    subject = %cert.subject(),
                    "own certificate EXPIRED on {date}: mail is no longer signed with it and correspondents cannot encrypt to it; install the renewed certificate"
                ),
                Ok(left) => {
                    let days = left.as_secs() / 86400;
                    if days < EXPIRY_WARNINGS[2] {
                        tracing::error!(identity = %who, subject = %cert.subject(), days, "own certificate expires on {date}: renew it now");
                    } else if days < EXPIRY_WARNINGS[1] {
                        tracing::warn!(identity = %who, subject = %cert.subject(), days, "own certificate expires on {date} (in {days} days): renew it soon");
                    } else if days < EXPIRY_WARNINGS[0] {
                        tracing::warn!(identity = %who, subject = %cert.subject(), days, "own certificate expires on {date} (in {days} days): order the renewal");
                    }
                }
            }
        }
    };
    check();
    let _ = std::thread::Builder::new()
        .name("expiry-watch".into())
        .spawn(move || loop {
            std::thread::sleep(Duration::from_secs(86400));
            check();
        });
}

/// Loads local and cached CRLs and starts the thread that keeps the distribution points'
/// CRLs current (unless revocation checking is off).
fn start_revocation(cfg: &Config, store: &Arc<std::sync::RwLock<CertStore>>) {
    let c = &cfg.certificates;
    if c.revocation == crate::config::RevocationSetting::Off {
        tracing::info!("revocation checking is off");
        return;
    }
    let fetcher = Arc::new(crate::revocation::Fetcher::new(
        store.clone(),
        c.crl_cache.clone(),
        Duration::from_secs(c.crl_timeout.max(1)),
    ));
    let files = fetcher.load_files(&c.crls);
    let cached = fetcher.load_cache();
    tracing::info!(
        mode = ?c.revocation,
        crl_files = files,
        cached,
        distribution_points = store.read().map(|s| s.crl_urls().len()).unwrap_or(0),
        "revocation checking"
    );
    fetcher.spawn(Duration::from_secs(c.crl_interval.max(1)));
}

/// Reads every certificate and key the configuration names.
pub fn load(cfg: &Config) -> Result<Loaded> {
    let mut store = CertStore::new();
    store.set_revocation_mode(cfg.certificates.revocation.into());
    for a in &cfg.certificates.anchors {
        store
            .load_anchors(a)
            .with_context(|| "loading trust anchors".to_string())?;
    }
    if cfg.certificates.system_anchors {
        store.load_system_roots()?;
    }
    if let Some(dir) = &cfg.certificates.recipients {
        let (n, errors) = store.load_certs(dir);
        tracing::info!(count = n, dir = %dir.display(), "recipient certificates loaded");
        for e in errors {
            tracing::warn!("skipped {e}");
        }
    }
    if let Some(dir) = cfg.certificates.harvested.as_ref().filter(|d| d.exists()) {
        let (n, errors) = store.load_certs(dir);
        tracing::info!(count = n, dir = %dir.display(), "certificates learnt earlier loaded");
        for e in errors {
            tracing::warn!("skipped {e}");
        }
    }
    let mut identities = Vec::new();
    // Every key of every identity may be needed to decrypt incoming mail, each for its logins.
    let mut decryption_keys = Vec::new();
    let mut own_certs = Vec::new();
    for id in &cfg.identities {
        let source = id.key_source();
        // Loaded once: the signing identity is one of the keys that decrypt.
        let (signing, mut keys) = source
            .load_keys()
            .with_context(|| format!("identity {}", id.addresses.join(", ")))?;
        for c in &id.chain {
            keys[signing].chain.extend(read_certs(c)?);
        }
        let keys: Vec<std::sync::Arc<smime::Identity>> =
            keys.into_iter().map(std::sync::Arc::new).collect();
        let identity = keys[signing].clone();
        let encryption_cert = match &id.encryption_cert {
            Some(p) => read_certs(p)?.into_iter().next(),
            None => None,
        };
        if let Some(enc) = encryption_cert
            .as_ref()
            .filter(|e| !crate::keyfiles::has_key_for(keys.iter().map(|k| &**k), e))
        {
            // Not fatal (a mail program may hold that key), but what is encrypted to it
            // cannot be shown decrypted here; `envelopd check` says so too.
            tracing::warn!(
                identity = %id.addresses.join(", "),
                certificate = %enc.subject(),
                "no private key for the identity's encryption certificate: Sent copies and mail encrypted to it cannot be opened by envelopd (give encryption_key)"
            );
        }
        // Each key decrypts only for the logins this identity allows (as for signing).
        decryption_keys.extend(keys.into_iter().map(|k| imap::session::BoundKey {
            addresses: id.addresses.clone(),
            logins: id.logins.clone(),
            identity: k,
        }));
        // The practice's own certificates are part of the store: mail to colleagues (or to
        // oneself) is encrypted like any other.
        store.add_cert(identity.cert.clone());
        for c in identity.chain.iter().chain(encryption_cert.iter()) {
            store.add_cert(c.clone());
        }
        own_certs.push((
            id.addresses
                .iter()
                .chain(&id.logins)
                .cloned()
                .collect::<Vec<_>>(),
            encryption_cert
                .clone()
                .unwrap_or_else(|| identity.cert.clone()),
        ));
        identities.push(SenderIdentity::new(
            id.addresses.clone(),
            identity,
            encryption_cert,
            id.logins.clone(),
        ));
    }
    Ok(Loaded {
        store,
        identities,
        decryption_keys,
        own_certs,
    })
}

/// The provider's IMAP server with its TLS trust, if configured.
pub fn imap_target(cfg: &Config) -> Result<Option<imap::session::ImapTarget>> {
    let Some(up) = &cfg.upstream.imap else {
        return Ok(None);
    };
    Ok(Some(imap::session::ImapTarget {
        host: up
            .host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
        port: up.imap_port(),
        tls: target_tls(up, "upstream.imap")?,
    }))
}

/// The provider's POP3 server with its TLS trust, if configured.
pub fn pop3_target(cfg: &Config) -> Result<Option<pop3::session::Pop3Target>> {
    let Some(up) = &cfg.upstream.pop3 else {
        return Ok(None);
    };
    Ok(Some(pop3::session::Pop3Target {
        host: up
            .host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
        port: up.pop3_port(),
        tls: target_tls(up, "upstream.pop3")?,
    }))
}

/// The provider's server with its TLS trust, as the SMTP session uses it.
pub fn upstream_target(cfg: &Config) -> Result<Target> {
    let up = &cfg.upstream.smtp;
    let tls = target_tls(up, "upstream.smtp")?;
    Ok(Target {
        host: up
            .host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
        port: up.port(),
        tls,
    })
}

/// The TLS offered to mail programs, if configured.
pub fn client_tls(cfg: &Config) -> Result<Option<ClientTls>> {
    let l = &cfg.smtp;
    listener_tls(l.tls, l.cert.as_deref(), l.key.as_deref(), "smtp")
}

/// The TLS a listener (`what`: smtp, imap or pop3) offers mail programs, if any.
pub fn listener_tls(
    mode: TlsMode,
    cert: Option<&std::path::Path>,
    key: Option<&std::path::Path>,
    what: &str,
) -> Result<Option<ClientTls>> {
    match (mode, cert, key) {
        (TlsMode::None, _, _) => Ok(None),
        (mode, Some(cert), Some(key)) => Ok(Some(ClientTls {
            config: crate::tls::server_config(cert, key)
                .with_context(|| format!("{what} listener TLS"))?,
            implicit: mode == TlsMode::Implicit,
        })),
        _ => anyhow::bail!("{what}: TLS for mail programs needs cert and key"),
    }
}
