//! The outgoing-mail policy: for one message and its envelope, decide whether envelopd signs it,
//! encrypts it (to whom, with which cipher, in how many copies) or refuses it with an SMTP reply.
//!
//! Pure logic over the certificate store: no crypto, no I/O. The rules:
//! - mail the client already protected (S/MIME or PGP) passes through untouched;
//! - sign when an identity exists for the From address (the identity must name that address);
//! - encrypt when **every** recipient has a valid certificate, adding the sender's own encryption
//!   certificate so the Sent copy stays readable;
//! - otherwise the fallback decides (per recipient, with address and domain overrides):
//!   `plaintext` sends everything unencrypted, `refuse` answers 550 5.7.1 naming each address
//!   without a usable certificate and why, `split` encrypts for those who can read it and sends
//!   plaintext to the rest;
//! - Bcc privacy: a Bcc recipient never shares an encrypted copy (whose RecipientInfos would
//!   reveal them) with anyone else, and the Bcc header is removed from every copy.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::time::SystemTime;

use certstore::{CertStore, Rejection};
use smime::{same_mailbox, Address, Cert, ContentCipher};

/// What to do with recipients that have no valid certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fallback {
    /// Send unencrypted (what practice software does today); the default.
    #[default]
    Plaintext,
    /// Refuse the message with a 550 5.7.1 reply naming the addresses and reasons.
    Refuse,
    /// Encrypt for the recipients who can read it, plaintext for the rest.
    Split,
}

/// A fallback for one address (`alice@x.org`) or a whole domain (`x.org`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Override {
    /// An address or a domain.
    pub pattern: String,
    /// The fallback that applies to it.
    pub fallback: Fallback,
}

/// The policy settings.
#[derive(Debug, Clone, Default)]
pub struct PolicyConfig {
    /// The fallback for recipients without a valid certificate.
    pub fallback: Fallback,
    /// Per-address and per-domain fallbacks; an address beats its domain.
    pub overrides: Vec<Override>,
    /// Addresses or domains known to read AES-GCM (AuthEnvelopedData); others get AES-CBC,
    /// because Outlook cannot open AuthEnvelopedData (RFC 8551 §2.7).
    pub gcm_capable: Vec<String>,
    /// Never fall back to AES-CBC: recipients without GCM count as having no usable certificate.
    pub require_aead: bool,
}

impl PolicyConfig {
    /// The fallback for one recipient.
    pub fn fallback_for(&self, address: &str) -> Fallback {
        let exact = self
            .overrides
            .iter()
            .find(|o| o.pattern.contains('@') && same_mailbox(&o.pattern, address));
        let by_domain = self
            .overrides
            .iter()
            .find(|o| !o.pattern.contains('@') && in_domain(address, &o.pattern));
        exact.or(by_domain).map_or(self.fallback, |o| o.fallback)
    }

    fn gcm_for(&self, address: &str) -> bool {
        self.gcm_capable.iter().any(|p| {
            if p.contains('@') {
                same_mailbox(p, address)
            } else {
                in_domain(address, p)
            }
        })
    }
}

/// Whether `address` is in `domain` under the one address rule (IDNA, any case).
fn in_domain(address: &str, domain: &str) -> bool {
    Address::parse(address).is_ok_and(|a| a.in_domain(domain))
}

/// The facts about one message the policy needs.
#[derive(Debug, Clone)]
pub struct MessageFacts {
    /// The From header's address.
    pub from: Option<String>,
    /// Envelope recipients (RCPT TO), in order.
    pub recipients: Vec<String>,
    /// Addresses in the To and Cc headers: envelope recipients not among them are Bcc.
    pub visible: Vec<String>,
    /// The client already signed or encrypted the message (S/MIME or PGP).
    pub already_protected: bool,
}

impl MessageFacts {
    /// Reads From, To, Cc and the protection state from a message's header.
    pub fn from_message(message: &[u8], recipients: Vec<String>) -> Self {
        let e = smime::mime::split(message);
        let ct = smime::mime::content_type(e.header);
        let already_protected = smime::message::kind(message) != smime::message::Kind::Plain
            || matches!(
                ct.mime_type.as_str(),
                "multipart/encrypted" | "application/pgp-encrypted"
            )
            || (ct.mime_type == "multipart/signed"
                && ct
                    .param("protocol")
                    .is_some_and(|p| p.eq_ignore_ascii_case("application/pgp-signature")));
        MessageFacts {
            from: smime::mime::from_address(e.header),
            visible: smime::mime::visible_recipients(e.header),
            recipients,
            already_protected,
        }
    }

    fn is_bcc(&self, rcpt: &str) -> bool {
        // The recipient parsed once, not once per visible address.
        let wanted = Address::parse(rcpt).ok();
        !self.visible.iter().any(|v| {
            v.eq_ignore_ascii_case(rcpt)
                || wanted
                    .as_ref()
                    .is_some_and(|w| Address::parse(v).is_ok_and(|v| v == *w))
        })
    }
}

/// One upstream transaction: who gets this copy and how it is protected.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The envelope recipients of this copy.
    pub recipients: Vec<String>,
    /// Encryption for this copy, or None for plaintext.
    pub encrypt: Option<Encryption>,
}

/// How a copy is encrypted.
#[derive(Debug, Clone)]
pub struct Encryption {
    /// Recipient certificates, the sender's own encryption certificate last if there is one.
    pub certs: Vec<Cert>,
    /// The content cipher.
    pub cipher: ContentCipher,
}

/// The outcome for a message.
#[derive(Debug, Clone)]
pub enum Decision {
    /// Relay unchanged (the client protected it already).
    PassThrough,
    /// Refuse with this SMTP reply; nothing is sent.
    Refuse {
        /// The reply code (550).
        code: u16,
        /// The enhanced status code (5.7.1).
        enhanced: &'static str,
        /// The reply text, naming each address and the reason.
        text: String,
    },
    /// Send these copies; sign each with the identity for `sign_as` first, if set.
    Deliver {
        /// The address of the signing identity.
        sign_as: Option<String>,
        /// One upstream transaction per copy.
        deliveries: Vec<Delivery>,
        /// Recipients sent plaintext because they lack a usable certificate, with the reason.
        unprotected: Vec<(String, String)>,
    },
}

/// What the policy may know about the sender: their identities and own encryption certificate.
pub trait Identities {
    /// True when a signing identity exists that names exactly this address.
    fn can_sign_as(&self, address: &str) -> bool;
    /// The sender's own encryption certificate (for the Sent copy), if any.
    fn own_encryption_cert(&self, address: &str) -> Option<Cert>;
}

/// Decides what to do with a message.
pub fn decide(
    facts: &MessageFacts,
    store: &CertStore,
    ids: &dyn Identities,
    cfg: &PolicyConfig,
    at: SystemTime,
) -> Decision {
    // Recipients whose clients announced AES-GCM in verified signed mail count as configured.
    let learnt: Vec<String> = facts
        .recipients
        .iter()
        .filter(|a| store.announces_gcm(a))
        .cloned()
        .collect();
    let extended;
    let cfg = if learnt.is_empty() {
        cfg
    } else {
        let mut c = cfg.clone();
        c.gcm_capable.extend(learnt);
        extended = c;
        &extended
    };
    if facts.already_protected {
        return Decision::PassThrough;
    }
    let sign_as = facts.from.clone().filter(|f| ids.can_sign_as(f));
    let own = facts
        .from
        .as_deref()
        .and_then(|f| ids.own_encryption_cert(f));

    let mut usable: Vec<(String, Cert)> = Vec::new();
    let mut lacking: Vec<(String, String)> = Vec::new();
    for r in &facts.recipients {
        match usable_cert(store, cfg, r, at) {
            Ok(c) => usable.push((r.clone(), c)),
            Err(why) => lacking.push((r.clone(), why)),
        }
    }

    if lacking.is_empty() {
        return Decision::Deliver {
            sign_as,
            deliveries: encrypted_copies(facts, &usable, own.as_ref(), cfg),
            unprotected: Vec::new(),
        };
    }
    let refusing: Vec<&(String, String)> = lacking
        .iter()
        .filter(|(a, _)| cfg.fallback_for(a) == Fallback::Refuse)
        .collect();
    if !refusing.is_empty() {
        let list: Vec<String> = refusing
            .iter()
            .map(|(a, why)| format!("{a} ({why})"))
            .collect();
        return Decision::Refuse {
            code: 550,
            enhanced: "5.7.1",
            text: format!(
                "Encryption required, but no valid certificate for: {}",
                list.join("; ")
            ),
        };
    }
    let split = lacking
        .iter()
        .all(|(a, _)| cfg.fallback_for(a) == Fallback::Split);
    if split && !usable.is_empty() {
        let mut deliveries = encrypted_copies(facts, &usable, own.as_ref(), cfg);
        deliveries.push(Delivery {
            recipients: lacking.iter().map(|(a, _)| a.clone()).collect(),
            encrypt: None,
        });
        return Decision::Deliver {
            sign_as,
            deliveries,
            unprotected: lacking,
        };
    }
    Decision::Deliver {
        sign_as,
        deliveries: vec![Delivery {
            recipients: facts.recipients.clone(),
            encrypt: None,
        }],
        unprotected: lacking,
    }
}

/// The certificate to encrypt to `address`, or why there is none.
fn usable_cert(
    store: &CertStore,
    cfg: &PolicyConfig,
    address: &str,
    at: SystemTime,
) -> Result<Cert, String> {
    let cert = store.encryption_cert(address, at).map_err(|e| match e {
        Rejection::NoCertificate(_) => "no certificate".to_string(),
        other => other.to_string(),
    })?;
    if cfg.require_aead && !cfg.gcm_for(address) {
        return Err("not known to support AES-GCM, which this policy requires".into());
    }
    Ok(cert)
}

/// Recipients with their certificates, as grouped into one copy.
type Group<'a> = Vec<&'a (String, Cert)>;

/// To and Cc recipients share one encrypted copy; each Bcc recipient gets a copy of their own,
/// so no RecipientInfo reveals a Bcc recipient to anyone else.
fn encrypted_copies(
    facts: &MessageFacts,
    usable: &[(String, Cert)],
    own: Option<&Cert>,
    cfg: &PolicyConfig,
) -> Vec<Delivery> {
    let make = |group: Group<'_>| {
        let gcm = group.iter().all(|(a, _)| cfg.gcm_for(a));
        let mut certs: Vec<Cert> = group.iter().map(|(_, c)| c.clone()).collect();
        if let Some(o) = own {
            if !certs.contains(o) {
                certs.push(o.clone());
            }
        }
        Delivery {
            recipients: group.iter().map(|(a, _)| a.clone()).collect(),
            encrypt: Some(Encryption {
                certs,
                cipher: if gcm {
                    ContentCipher::Aes256Gcm
                } else {
                    ContentCipher::Aes256Cbc
                },
            }),
        }
    };
    let (bcc, visible): (Group<'_>, Group<'_>) = usable.iter().partition(|(a, _)| facts.is_bcc(a));
    let mut out = Vec::new();
    if !visible.is_empty() {
        out.push(make(visible));
    }
    out.extend(bcc.into_iter().map(|b| make(vec![b])));
    out
}
