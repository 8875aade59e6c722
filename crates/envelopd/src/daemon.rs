//! `envelopd run`: builds the shared context from the configuration (certificate store,
//! identities, policy), opens the SMTP listener and serves until Ctrl-C / SIGINT.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use certstore::CertStore;
use smtp::session::{Context, SenderIdentity};

use crate::config::{Config, TlsMode};
use crate::keyfiles::read_certs;

/// Runs the proxy until interrupted.
pub fn run(cfg: Config) -> Result<()> {
    // Logs go to stderr (journald picks them up); RUST_LOG=debug for more. Never bodies, keys
    // or passwords: only sizes, counts, addresses in refusals and decisions.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let up = &cfg.upstream.smtp;
    if up.tls != TlsMode::None {
        bail!(
            "upstream.smtp: tls = \"{}\" is not implemented yet in this version; only a provider on this machine (tls = \"none\") can be used",
            match up.tls {
                TlsMode::Implicit => "implicit",
                TlsMode::Starttls => "starttls",
                TlsMode::None => "none",
            }
        );
    }
    let mut store = CertStore::new();
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
    let mut identities = Vec::new();
    for id in &cfg.identities {
        let source = id.key_source();
        let mut identity = source
            .load()
            .with_context(|| format!("identity {}", id.addresses.join(", ")))?;
        for c in &id.chain {
            identity.chain.extend(read_certs(c)?);
        }
        let encryption_cert = match &id.encryption_cert {
            Some(p) => read_certs(p)?.into_iter().next(),
            None => None,
        };
        // The practice's own certificates are part of the store: mail to colleagues (or to
        // oneself) is encrypted like any other.
        store.add_cert(identity.cert.clone());
        for c in identity.chain.iter().chain(encryption_cert.iter()) {
            store.add_cert(c.clone());
        }
        identities.push(SenderIdentity {
            addresses: id.addresses.clone(),
            identity,
            encryption_cert,
        });
    }
    let ctx = Arc::new(Context {
        upstream: format!("{}:{}", up.host, up.port()),
        hostname: "envelopd".into(),
        store,
        identities,
        policy: cfg.policy.to_policy(),
        max_size: 50 << 20,
        max_recipients: 1000,
        timeouts: Default::default(),
        client_timeout: Duration::from_secs(300),
    });
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(cfg.smtp.listen)
            .await
            .with_context(|| format!("cannot listen on {}", cfg.smtp.listen))?;
        tracing::info!(listen = %cfg.smtp.listen, upstream = %ctx.upstream, "envelopd is running; Ctrl-C stops");
        let (stop, stopped) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                tracing::info!("stopping: finishing open sessions first");
                let _ = stop.send(true);
            }
        });
        smtp::session::serve(listener, ctx, stopped)
            .await
            .context("listener failed")?;
        tracing::info!("stopped");
        Ok(())
    })
}
