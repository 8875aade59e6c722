//! `envelopd explain --from A --to B [--cc C] [--bcc D]`: what the proxy would do with such a
//! message and why, recipient by recipient, from the same configuration, certificates and policy
//! the daemon uses (no mail is sent). For people, or `--json` for scripts.

use std::time::SystemTime;

use anyhow::Result;
use policy::{decide, Decision, MessageFacts};
use serde_json::json;
use smtp::session::SessionIdentities;

use crate::config::Config;

/// The message to explain.
pub struct Question {
    /// The sender (From and envelope sender).
    pub from: String,
    /// To recipients.
    pub to: Vec<String>,
    /// Cc recipients.
    pub cc: Vec<String>,
    /// Bcc recipients (envelope only).
    pub bcc: Vec<String>,
}

/// The explanation, as text and as JSON.
pub fn explain(cfg: &Config, q: &Question, at: SystemTime) -> Result<(String, serde_json::Value)> {
    let mut loaded = crate::daemon::load(cfg)?;
    // The CRLs held locally (files, the daemon's cache): explain does not go online.
    loaded.store = crate::revocation::with_local_crls(&cfg.certificates, loaded.store).0;
    let recipients_all: Vec<String> = q.to.iter().chain(&q.cc).chain(&q.bcc).cloned().collect();
    // Recipients without a certificate are looked up in the directories, as the daemon does.
    if let Some(dirs) = crate::daemon::directories(cfg) {
        let shared = std::sync::Arc::new(std::sync::RwLock::new(std::mem::take(&mut loaded.store)));
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(smtp::session::complete_from_directory(
                &shared,
                dirs,
                &recipients_all,
                at,
            ));
        loaded.store = std::mem::take(&mut *shared.write().unwrap_or_else(|e| e.into_inner()));
    }
    let store = &loaded.store;
    let mut header = format!("From: {}\r\n", q.from);
    if !q.to.is_empty() {
        header.push_str(&format!("To: {}\r\n", q.to.join(", ")));
    }
    if !q.cc.is_empty() {
        header.push_str(&format!("Cc: {}\r\n", q.cc.join(", ")));
    }
    header.push_str("Subject: explain\r\n\r\nx\r\n");
    let recipients: Vec<String> = q.to.iter().chain(&q.cc).chain(&q.bcc).cloned().collect();
    let facts = MessageFacts::from_message(header.as_bytes(), recipients.clone());
    let ids = SessionIdentities::new(&loaded.identities, None, store);
    let policy = cfg.policy.to_policy();
    let decision = decide(&facts, store, &ids, &policy, at);

    let mut lines = Vec::new();
    let mut rows = Vec::new();
    let fallback_name = |a: &str| format!("{:?}", policy.fallback_for(a)).to_lowercase();
    let why_not = |a: &str| -> String {
        match store.encryption_cert(a, at) {
            Ok(_) => "certificate valid".into(),
            Err(e) => e.to_string(),
        }
    };
    match &decision {
        Decision::PassThrough => lines.push("already protected: passed through unchanged".into()),
        Decision::Refuse {
            code,
            enhanced,
            text,
        } => {
            lines.push(format!("refused: {code} {enhanced} {text}"));
            for a in &recipients {
                let reason = why_not(a);
                lines.push(format!("  {a}: {reason} (policy '{}')", fallback_name(a)));
                rows.push(json!({"address": a, "outcome": "refused", "reason": reason}));
            }
        }
        Decision::Deliver {
            sign_as,
            deliveries,
            unprotected,
        } => {
            lines.push(match sign_as {
                Some(a) => format!("signed as {a}"),
                None => format!("not signed: no valid signing key for {}", q.from),
            });
            for d in deliveries {
                for a in &d.recipients {
                    let (outcome, detail) = match &d.encrypt {
                        Some(e) => (
                            "encrypted",
                            format!(
                                "encrypted with {} ({} certificate(s) in the envelope{})",
                                e.cipher.label(),
                                e.certs.len(),
                                if d.recipients.len() == 1 && q.bcc.contains(a) {
                                    ", a copy of its own: Bcc"
                                } else {
                                    ""
                                }
                            ),
                        ),
                        None => {
                            let reason = unprotected
                                .iter()
                                .find(|(u, _)| u == a)
                                .map(|(_, r)| r.clone())
                                .unwrap_or_else(|| match why_not(a) {
                                    r if r == "certificate valid" => {
                                        "certificate valid, but not every recipient has one".into()
                                    }
                                    r => r,
                                });
                            (
                                "plaintext",
                                format!("{reason} → plaintext under policy '{}'", fallback_name(a)),
                            )
                        }
                    };
                    lines.push(format!("  {a}: {detail}"));
                    rows.push(json!({"address": a, "outcome": outcome, "detail": detail}));
                }
            }
        }
    }
    let outcome = match &decision {
        Decision::PassThrough => "pass-through",
        Decision::Refuse { .. } => "refused",
        Decision::Deliver { .. } => "delivered",
    };
    let value = json!({"from": q.from, "outcome": outcome, "recipients": rows});
    Ok((lines.join("\n") + "\n", value))
}
