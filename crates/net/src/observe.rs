//! What envelopd tells its operator: Prometheus metrics, the last decisions (without content)
//! and the health of the provider's servers, for the loopback status page.
//!
//! One set per process, reached through [`get`]: every session of both listeners reports into
//! it, and passing a handle through every context would add nothing but noise.
//!
//! The metrics use `prometheus-client`, the Prometheus project's Rust client, which writes the
//! OpenMetrics text format Prometheus scrapes.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// How many decisions the status page keeps.
pub const RECENT: usize = 50;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MessageLabels {
    decision: String,
    cipher: String,
    signed: String,
    reply: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProtoLabels {
    proto: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpenedLabels {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CertLabels {
    kind: String,
    address: String,
    serial: String,
}

/// One message decision as the status page shows it: who sent, how many recipients, what was
/// done; never a subject or body.
#[derive(Clone, Debug)]
pub struct RecentDecision {
    /// When the client got its reply.
    pub at: SystemTime,
    /// The envelope sender.
    pub from: String,
    /// How many recipients.
    pub recipients: usize,
    /// `encrypted`, `plaintext`, `split`, `refuse`, `error`, …
    pub decision: String,
    /// The content cipher, or `-`.
    pub cipher: String,
    /// The identity that signed, or `-`.
    pub signed_as: String,
    /// The reply code the client got.
    pub reply: u16,
}

/// What envelopd last saw of one of the provider's servers.
#[derive(Clone, Debug, Default)]
pub struct Health {
    /// `host:port (tls)`.
    pub target: String,
    /// The last time a connection and greeting worked.
    pub last_ok: Option<SystemTime>,
    /// The last failure and what it was.
    pub last_error: Option<(SystemTime, String)>,
}

/// A certificate whose expiry is exported.
pub struct Expiry {
    /// `identity`, `recipient` or `anchor`.
    pub kind: &'static str,
    /// The e-mail address (or subject, for anchors).
    pub address: String,
    /// The serial number, hex.
    pub serial: String,
    /// notAfter.
    pub not_after: SystemTime,
}

/// The process's metrics and status records.
pub struct Observe {
    registry: Registry,
    messages: Family<MessageLabels, Counter>,
    upstream_errors: Family<ProtoLabels, Counter>,
    sessions_open: Family<ProtoLabels, Gauge>,
    sessions: Family<ProtoLabels, Counter>,
    refused: Family<ProtoLabels, Counter>,
    failed_logins: Counter,
    opened: Family<OpenedLabels, Counter>,
    expiry: Family<CertLabels, Gauge>,
    delivery: Histogram,
    open_time: Histogram,
    recent: Mutex<VecDeque<RecentDecision>>,
    health: Mutex<HashMap<&'static str, Health>>,
    /// When the process started.
    pub started: SystemTime,
}

/// The process-wide metrics and status records.
pub fn get() -> &'static Observe {
    static O: OnceLock<Observe> = OnceLock::new();
    O.get_or_init(Observe::new)
}

impl Observe {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("envelopd");
        let messages = Family::<MessageLabels, Counter>::default();
        registry.register(
            "messages",
            "Messages submitted, by decision, content cipher, signing and the client's reply class",
            messages.clone(),
        );
        let upstream_errors = Family::<ProtoLabels, Counter>::default();
        registry.register(
            "upstream_errors",
            "Failures reaching or talking to the provider's servers",
            upstream_errors.clone(),
        );
        let sessions_open = Family::<ProtoLabels, Gauge>::default();
        registry.register(
            "sessions_open",
            "Client sessions open now",
            sessions_open.clone(),
        );
        let sessions = Family::<ProtoLabels, Counter>::default();
        registry.register("sessions", "Client sessions accepted", sessions.clone());
        let refused = Family::<ProtoLabels, Counter>::default();
        registry.register(
            "connections_refused",
            "Connections refused by the connection limits",
            refused.clone(),
        );
        let failed_logins = Counter::default();
        registry.register(
            "failed_logins",
            "Logins the provider refused",
            failed_logins.clone(),
        );
        let opened = Family::<OpenedLabels, Counter>::default();
        registry.register(
            "imap_smime_opened",
            "S/MIME messages opened for reading (IMAP and POP3; the name is kept for dashboards), by result (decrypted, signed_only, failed)",
            opened.clone(),
        );
        let expiry = Family::<CertLabels, Gauge>::default();
        registry.register(
            "certificate_expiry_timestamp_seconds",
            "When each own, recipient and anchor certificate expires (Unix time)",
            expiry.clone(),
        );
        let delivery = Histogram::new(exponential_buckets(0.005, 2.0, 14));
        registry.register(
            "smtp_delivery_seconds",
            "From the end of the client's message to the reply it got (signing, encryption, relay)",
            delivery.clone(),
        );
        let open_time = Histogram::new(exponential_buckets(0.0005, 2.0, 14));
        registry.register(
            "imap_open_seconds",
            "Decrypting and verifying one S/MIME message for reading",
            open_time.clone(),
        );
        Observe {
            registry,
            messages,
            upstream_errors,
            sessions_open,
            sessions,
            refused,
            failed_logins,
            opened,
            expiry,
            delivery,
            open_time,
            recent: Mutex::new(VecDeque::with_capacity(RECENT)),
            health: Mutex::new(HashMap::new()),
            started: SystemTime::now(),
        }
    }

    /// Records one submitted message's decision and how long the client waited for its reply.
    pub fn message(&self, d: RecentDecision, took: Duration) {
        let class = format!("{}xx", d.reply / 100);
        self.messages
            .get_or_create(&MessageLabels {
                decision: d.decision.clone(),
                cipher: d.cipher.clone(),
                signed: if d.signed_as == "-" { "no" } else { "yes" }.into(),
                reply: class,
            })
            .inc();
        self.delivery.observe(took.as_secs_f64());
        let mut r = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        if r.len() == RECENT {
            r.pop_front();
        }
        r.push_back(d);
    }

    /// The last decisions, newest first.
    pub fn recent(&self) -> Vec<RecentDecision> {
        let r = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        r.iter().rev().cloned().collect()
    }

    /// A client session began (`proto` is `smtp`, `imap` or `pop3`).
    pub fn session_started(&self, proto: &str) {
        let l = ProtoLabels {
            proto: proto.into(),
        };
        self.sessions.get_or_create(&l).inc();
        self.sessions_open.get_or_create(&l).inc();
    }

    /// A client session ended.
    pub fn session_ended(&self, proto: &str) {
        self.sessions_open
            .get_or_create(&ProtoLabels {
                proto: proto.into(),
            })
            .dec();
    }

    /// Client sessions of `proto` open now.
    pub fn open_sessions(&self, proto: &str) -> i64 {
        self.sessions_open
            .get_or_create(&ProtoLabels {
                proto: proto.into(),
            })
            .get()
    }

    /// A connection was refused by the limits.
    pub fn refused(&self, proto: &str) {
        self.refused
            .get_or_create(&ProtoLabels {
                proto: proto.into(),
            })
            .inc();
    }

    /// The provider refused a login.
    pub fn failed_login(&self) {
        self.failed_logins.inc();
    }

    /// An S/MIME message was opened for reading with `result` after `took`.
    pub fn opened(&self, result: &str, took: Duration) {
        self.opened
            .get_or_create(&OpenedLabels {
                result: result.into(),
            })
            .inc();
        self.open_time.observe(took.as_secs_f64());
    }

    /// The provider's `proto` server at `target` answered as it should.
    pub fn upstream_ok(&self, proto: &'static str, target: String) {
        let mut h = self.health.lock().unwrap_or_else(|e| e.into_inner());
        let e = h.entry(proto).or_default();
        e.target = target;
        e.last_ok = Some(SystemTime::now());
    }

    /// Reaching or talking to the provider's `proto` server at `target` failed with `why`.
    pub fn upstream_error(&self, proto: &'static str, target: String, why: &str) {
        self.upstream_errors
            .get_or_create(&ProtoLabels {
                proto: proto.into(),
            })
            .inc();
        let mut h = self.health.lock().unwrap_or_else(|e| e.into_inner());
        let e = h.entry(proto).or_default();
        e.target = target;
        e.last_error = Some((SystemTime::now(), why.chars().take(200).collect()));
    }

    /// What is known of the provider's servers, by protocol.
    pub fn health(&self) -> Vec<(&'static str, Health)> {
        let h = self.health.lock().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<_> = h.iter().map(|(k, v)| (*k, v.clone())).collect();
        v.sort_by_key(|(k, _)| *k);
        v
    }

    /// The metrics in the OpenMetrics text format, with the certificate expiry gauges set
    /// from `certs` (the store changes at run time, so they are taken at each scrape).
    pub fn encode(&self, certs: &[Expiry]) -> String {
        self.expiry.clear();
        for c in certs {
            let at = c
                .not_after
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0);
            self.expiry
                .get_or_create(&CertLabels {
                    kind: c.kind.into(),
                    address: c.address.clone(),
                    serial: c.serial.clone(),
                })
                .set(at);
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
