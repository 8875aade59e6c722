//! The end of a transaction, on the driver's side of the core: the policy decides
//! ([`policy::decide`], a pure function), [`crate::outgoing::copies`] makes the copies, and the
//! provider's answer to them is the client's reply. Then the audit line and the status page's
//! entry are written.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use policy::{decide, Decision, MessageFacts};
use smime::SignOptions;

use crate::core::{Delivery, Gate};
use crate::outgoing::{copies, Refusal};
use crate::session::{complete_from_directory, Context, Rules, SessionIdentities};
use crate::upstream::{Reply, Upstream};

/// The audit facts of one message: decision, cipher, signing identity, number of copies.
pub(crate) type Audit = (&'static str, String, String, usize);

/// Transforms and relays one message in the open provider transaction; then writes its audit
/// line. `upstream` is `None` afterwards if the provider connection was lost.
pub(crate) async fn deliver(
    ctx: &Arc<Context>,
    upstream: &mut Option<Upstream>,
    peer: SocketAddr,
    d: Delivery,
) -> Reply {
    let mut audit: Audit = ("error", "-".into(), "-".into(), 0);
    let started = std::time::Instant::now();
    let rcpts = d.rcpts.clone();
    let from = d.from.clone();
    let login = d.login.clone();
    let reply = deliver_inner(ctx, upstream, d, &mut audit).await;
    let (decision, cipher, signed_as, copies) = &audit;
    net::observe::get().message(
        net::observe::RecentDecision {
            at: SystemTime::now(),
            from: if from.is_empty() {
                "<>".into()
            } else {
                from.clone()
            },
            recipients: rcpts.len(),
            decision: decision.to_string(),
            cipher: cipher.clone(),
            signed_as: signed_as.clone(),
            reply: reply.code,
        },
        started.elapsed(),
    );
    tracing::info!(
        target: "envelopd::audit",
        "audit v1 proto=smtp peer={} login={} from={} rcpts={} decision={decision} cipher={cipher} signed_as={signed_as} copies={copies} reply={}",
        peer.ip(),
        audit_word(login.as_deref().unwrap_or("-")),
        audit_word(if from.is_empty() { "<>" } else { &from }),
        audit_word(&rcpts.join(",")),
        reply.code
    );
    reply
}

/// What one message becomes: the policy's decision (as audit facts) and the exact copies to
/// send, 7-bit where the provider lacks 8BITMIME, or the refusal. Pure: the daemon runs it on
/// the CPU pool, the fuzz harness in process.
#[allow(clippy::too_many_arguments)]
pub(crate) fn prepare(
    message: Vec<u8>,
    rcpts: &[String],
    facts: &MessageFacts,
    store: &certstore::CertStore,
    ids: &SessionIdentities<'_>,
    rules: &Rules,
    eight_bit_ok: bool,
    now: SystemTime,
) -> (Result<Vec<crate::outgoing::Copy>, Refusal>, Audit) {
    let decision = decide(facts, store, ids, &rules.policy, now);
    let signer = match &decision {
        Decision::Deliver {
            sign_as: Some(a), ..
        } => ids.identity_for(a),
        _ => None,
    };
    let encryption_cert = signer.and_then(|i| i.encryption_cert.clone());
    let signer = signer.map(|i| &*i.identity);
    let opts = SignOptions {
        digest: None,
        rsa_padding: smime::RsaPadding::Pkcs1v15,
        signing_time: now,
        encryption_cert,
    };
    log_decision(&decision, rcpts.len(), message.len());
    let audit = audit_of(&decision);
    let prepared = copies(
        message,
        rcpts,
        &decision,
        signer,
        &opts,
        rules.header_protection,
    )
    .and_then(|mut out| {
        if !eight_bit_ok {
            for copy in &mut out {
                crate::outgoing::to_7bit(copy, facts.already_protected)?;
            }
        }
        Ok(out)
    });
    (prepared, audit)
}

/// Ends the open provider transaction after a refusal; a provider that does not answer is
/// dropped.
async fn rset(upstream: &mut Option<Upstream>) {
    if let Some(up) = upstream.as_mut() {
        if up.command("RSET").await.is_err() {
            *upstream = None;
        }
    }
}

async fn deliver_inner(
    ctx: &Arc<Context>,
    upstream: &mut Option<Upstream>,
    d: Delivery,
    audit: &mut Audit,
) -> Reply {
    let Delivery {
        from,
        params,
        rcpts,
        rcpt_params,
        message,
        login,
    } = d;
    let facts = MessageFacts::from_message(&message, rcpts.clone());
    let foreign = login
        .as_deref()
        .zip(facts.from.as_deref())
        .and_then(|(l, f)| ctx.refuse_sender(l, f));
    if let Some(refusal) = foreign {
        audit.0 = "refused";
        rset(upstream).await;
        return refusal;
    }
    let now = SystemTime::now();
    let rules = ctx.rules();
    if let Some(dir) = ctx.directory.clone() {
        complete_from_directory(&ctx.store, dir, &rcpts, now).await;
    }
    // A provider without 8BITMIME gets 7-bit copies, or the client a refusal (RFC 6152 §3).
    let eight_bit_ok = upstream.as_ref().is_some_and(|u| u.has("8BITMIME"));
    // Decided and transformed on the CPU pool (signing and encrypting are most of the work),
    // under the store's read lock, released before any network wait.
    let job = {
        let ctx = ctx.clone();
        let rcpts = rcpts.clone();
        move || {
            let store = ctx.store.read().unwrap_or_else(|e| e.into_inner());
            let ids = SessionIdentities::new(&ctx.identities, login.as_deref(), &store);
            prepare(
                message,
                &rcpts,
                &facts,
                &store,
                &ids,
                &rules,
                eight_bit_ok,
                now,
            )
        }
    };
    let (prepared, decided) = net::cpu::run(job).await;
    *audit = decided;
    let out = match prepared {
        Ok(c) => c,
        Err(Refusal::Policy {
            code,
            enhanced,
            text,
        }) => {
            rset(upstream).await;
            return Reply::new(code, enhanced, text);
        }
        Err(Refusal::Crypto(e)) => {
            tracing::error!(error = %e, "signing or encryption failed");
            rset(upstream).await;
            return Reply::new(
                451,
                "4.7.0",
                format!("envelopd could not sign or encrypt the message: {e}"),
            );
        }
    };
    let Some(up) = upstream.as_mut() else {
        return Reply::new(451, "4.4.1", "provider connection lost");
    };
    // The common case: one copy for exactly the recipients already given to the provider,
    // so the open transaction continues and the provider's reply is the client's reply.
    if out.len() == 1 && out[0].recipients == rcpts {
        return match up.data(&out[0].message).await {
            Ok(r) => r,
            Err(r) => {
                *upstream = None;
                r
            }
        };
    }
    // Several copies (Bcc privacy, split): one transaction each.
    if let Err(r) = up.command("RSET").await {
        *upstream = None;
        return r;
    }
    let mut delivered: Vec<&str> = Vec::new();
    for copy in &out {
        let params_of: Vec<&str> = copy
            .recipients
            .iter()
            .map(|r| {
                rcpts
                    .iter()
                    .position(|x| x == r)
                    .map_or("", |i| rcpt_params[i].as_str())
            })
            .collect();
        match up
            .transaction(&from, &params, &copy.recipients, &params_of, &copy.message)
            .await
        {
            Ok(r) if r.is_positive() => {
                delivered.extend(copy.recipients.iter().map(String::as_str))
            }
            Ok(r) | Err(r) => {
                if delivered.is_empty() {
                    // Nothing went out: the client gets the provider's answer and keeps the message.
                    return r;
                }
                // Some copies are out and cannot be recalled: say exactly who has it.
                return Reply::new(
                    554,
                    "5.0.0",
                    format!(
                        "partly delivered: accepted for {}; refused for {}: {} {}",
                        delivered.join(", "),
                        copy.recipients.join(", "),
                        r.code,
                        r.text
                    ),
                );
            }
        }
    }
    Reply::new(
        250,
        "2.0.0",
        format!("delivered in {} separately protected copies", out.len()),
    )
}

/// A value for the audit line: no spaces or control characters, so the line stays one line of
/// `key=value` words whatever a client sends as an address.
fn audit_word(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_whitespace() || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .take(2000)
        .collect()
}

/// The audit facts of a decision: what was done (`encrypted`, `split`, `signed`, `plaintext`,
/// `refused`, `passthrough`), the cipher, the signing identity and the number of copies.
fn audit_of(decision: &Decision) -> (&'static str, String, String, usize) {
    match decision {
        Decision::PassThrough => ("passthrough", "-".into(), "-".into(), 1),
        Decision::Refuse { .. } => ("refused", "-".into(), "-".into(), 0),
        Decision::Deliver {
            sign_as,
            deliveries,
            ..
        } => {
            let encrypted: Vec<_> = deliveries
                .iter()
                .filter_map(|d| d.encrypt.as_ref())
                .collect();
            let what = if !encrypted.is_empty() && encrypted.len() == deliveries.len() {
                "encrypted"
            } else if !encrypted.is_empty() {
                "split"
            } else if sign_as.is_some() {
                "signed"
            } else {
                "plaintext"
            };
            let mut ciphers: Vec<String> = encrypted
                .iter()
                .map(|e| e.cipher.label().to_ascii_lowercase())
                .collect();
            ciphers.dedup();
            (
                what,
                if ciphers.is_empty() {
                    "-".into()
                } else {
                    ciphers.join(",")
                },
                sign_as.clone().unwrap_or_else(|| "-".into()),
                deliveries.len(),
            )
        }
    }
}

/// One event per decision: what was done, to how many, never who wrote what.
fn log_decision(decision: &Decision, recipients: usize, size: usize) {
    match decision {
        Decision::PassThrough => {
            tracing::info!(
                recipients,
                size,
                "already protected by the client: passed through"
            )
        }
        Decision::Refuse { text, .. } => {
            tracing::info!(recipients, size, reason = %text, "refused")
        }
        Decision::Deliver {
            sign_as,
            deliveries,
            unprotected,
        } => {
            let encrypted = deliveries.iter().filter(|d| d.encrypt.is_some()).count();
            // Debug only: the audit line after the provider's answer says the same at info level,
            // and a second line per message cost about 1 % of the proxy's CPU.
            tracing::debug!(
                recipients,
                size,
                signed_as = sign_as.as_deref().unwrap_or("-"),
                copies = deliveries.len(),
                encrypted_copies = encrypted,
                "sending"
            );
            for (address, why) in unprotected {
                tracing::warn!(%address, reason = %why, "sent unencrypted (policy fallback)");
            }
        }
    }
}
