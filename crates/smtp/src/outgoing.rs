//! From a submitted message and the policy's [`Decision`] to the copies sent upstream: each with
//! its envelope recipients and its bytes, signed once, encrypted per group, Bcc header removed.

use policy::{Decision, Delivery};
use smime::{EncryptOptions, Identity, KeyTransport, Prepared, Protection, SignOptions};

/// Header protection (RFC 9788) for the copies envelopd signs or encrypts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderProtection {
    /// Copy the header fields into the protected payload; encrypted copies show `[...]` as
    /// their outer Subject.
    pub enabled: bool,
    /// Also put the real Subject at the top of the text of encrypted copies, for readers that
    /// do not know RFC 9788.
    pub legacy_display: bool,
}

impl Default for HeaderProtection {
    fn default() -> Self {
        HeaderProtection {
            enabled: true,
            legacy_display: false,
        }
    }
}

impl HeaderProtection {
    fn for_encrypted(self) -> Protection {
        if self.enabled {
            Protection::Cipher {
                legacy_display: self.legacy_display,
            }
        } else {
            Protection::Off
        }
    }

    fn for_signed(self) -> Protection {
        if self.enabled {
            Protection::Clear
        } else {
            Protection::Off
        }
    }
}

/// One upstream transaction.
#[derive(Debug, Clone)]
pub struct Copy {
    /// RCPT TO for this copy.
    pub recipients: Vec<String>,
    /// The message as sent.
    pub message: Vec<u8>,
    /// Whether it is encrypted.
    pub encrypted: bool,
    /// Whether it is signed (by envelopd).
    pub signed: bool,
}

/// Why no copies can be made.
#[derive(Debug)]
pub enum Refusal {
    /// The policy refused the message: send this reply to the client.
    Policy {
        /// SMTP reply code.
        code: u16,
        /// Enhanced status code.
        enhanced: &'static str,
        /// Reply text.
        text: String,
    },
    /// Signing or encryption failed (a broken key or certificate): a local error, 451 4.7.0
    /// so the client keeps the message and retries.
    Crypto(smime::Error),
}

/// Makes a copy 7-bit for a provider without 8BITMIME (RFC 6152 §3: convert, or refuse): every
/// 8-bit or long-lined body part re-encoded (text as quoted-printable, the rest as base64), as
/// signing does. A message the mail program itself signed or encrypted (`client_protected`)
/// cannot be converted without breaking it, and header fields in raw UTF-8 need SMTPUTF8: both
/// are refused with 554 5.6.3, and the mail program keeps the message.
pub fn to_7bit(copy: &mut Copy, client_protected: bool) -> Result<(), Refusal> {
    if smime::mime::is_7bit_safe(&copy.message) {
        return Ok(());
    }
    let refuse = |why: &str| Refusal::Policy {
        code: 554,
        enhanced: "5.6.3",
        text: format!("the provider does not accept 8-bit mail and {why}"),
    };
    if client_protected {
        return Err(refuse(
            "this message was signed or encrypted by the mail program: converting it would break it",
        ));
    }
    let converted = smime::mime::canonicalize(&copy.message)
        .map_err(|e| refuse(&format!("the message cannot be converted ({e})")))?;
    if !smime::mime::is_7bit_safe(&converted) {
        return Err(refuse(
            "the message header holds 8-bit text (UTF-8 header fields need SMTPUTF8)",
        ));
    }
    tracing::info!(
        before = copy.message.len(),
        after = converted.len(),
        "converted to 7-bit for a provider without 8BITMIME"
    );
    copy.message = converted;
    Ok(())
}

/// Builds the upstream copies for a message. `signer` is the identity the decision asked to
/// sign with (looked up by the caller from `sign_as`); `recipients` are all envelope recipients
/// (used when the message passes through untouched).
pub fn copies(
    message: Vec<u8>,
    recipients: &[String],
    decision: &Decision,
    signer: Option<&Identity>,
    sign_opts: &SignOptions,
    hp: HeaderProtection,
) -> Result<Vec<Copy>, Refusal> {
    let deliveries: &[Delivery] = match decision {
        Decision::PassThrough => {
            return Ok(vec![Copy {
                recipients: recipients.to_vec(),
                message: smime::mime::without_fields(&message, &["bcc"]),
                encrypted: false,
                signed: false,
            }])
        }
        Decision::Refuse {
            code,
            enhanced,
            text,
        } => {
            return Err(Refusal::Policy {
                code: *code,
                enhanced,
                text: text.clone(),
            })
        }
        Decision::Deliver { deliveries, .. } => deliveries,
    };
    let signed = signer.is_some();
    let signer = signer.map(|id| (id, sign_opts));
    // Encrypted copies and signed-only copies carry different payloads once headers are
    // protected (hp="cipher" vs hp="clear"), so each kind is prepared (and signed) once.
    let any_encrypted = deliveries.iter().any(|d| d.encrypt.is_some());
    let any_signed_plain = signed && deliveries.iter().any(|d| d.encrypt.is_none());
    let mut for_encrypted = if any_encrypted {
        Some(Prepared::new(&message, signer, hp.for_encrypted()).map_err(Refusal::Crypto)?)
    } else {
        None
    };
    let for_signed = match (&for_encrypted, any_signed_plain) {
        (Some(p), true) if !hp.enabled => Some(p.clone()),
        (_, true) => {
            Some(Prepared::new(&message, signer, hp.for_signed()).map_err(Refusal::Crypto)?)
        }
        (_, false) => None,
    };
    // A large message is held at most twice: once prepared, the client's own bytes are let go
    // unless an unsigned plaintext copy still needs them, and the last encrypted copy is
    // encrypted in the prepared buffer itself.
    let message = (!signed && deliveries.iter().any(|d| d.encrypt.is_none())).then_some(message);
    let last_encrypted = deliveries.iter().rposition(|d| d.encrypt.is_some());
    let mut out = Vec::with_capacity(deliveries.len());
    for (i, d) in deliveries.iter().enumerate() {
        let bytes = match (&d.encrypt, &for_signed) {
            (Some(enc), _) => {
                let opts = EncryptOptions {
                    cipher: enc.cipher,
                    key_transport: KeyTransport::RsaPkcs1v15,
                };
                let encrypted = if Some(i) == last_encrypted {
                    let p = for_encrypted.take().expect("prepared above");
                    p.into_encrypted(&enc.certs, &opts)
                } else {
                    let p = for_encrypted.as_ref().expect("prepared above");
                    p.encrypt(&enc.certs, &opts)
                };
                encrypted.map_err(Refusal::Crypto)?
            }
            (None, Some(p)) => p.to_message(),
            // Unsigned plaintext goes out as the client wrote it, minus Bcc.
            _ => smime::mime::without_fields(
                message
                    .as_deref()
                    .expect("kept for unsigned plaintext copies"),
                &["bcc"],
            ),
        };
        out.push(Copy {
            recipients: d.recipients.clone(),
            message: bytes,
            encrypted: d.encrypt.is_some(),
            signed,
        });
    }
    Ok(out)
}
