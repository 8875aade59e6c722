//! From a submitted message and the policy's [`Decision`] to the copies sent upstream: each with
//! its envelope recipients and its bytes, signed once, encrypted per group, Bcc header removed.

use policy::{Decision, Delivery};
use smime::{EncryptOptions, Identity, KeyTransport, Prepared, SignOptions};

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

/// Builds the upstream copies for a message. `signer` is the identity the decision asked to
/// sign with (looked up by the caller from `sign_as`); `recipients` are all envelope recipients
/// (used when the message passes through untouched).
pub fn copies(
    message: &[u8],
    recipients: &[String],
    decision: &Decision,
    signer: Option<&Identity>,
    sign_opts: &SignOptions,
) -> Result<Vec<Copy>, Refusal> {
    let deliveries: &[Delivery] = match decision {
        Decision::PassThrough => {
            return Ok(vec![Copy {
                recipients: recipients.to_vec(),
                message: smime::mime::without_fields(message, &["bcc"]),
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
    let needs_prepared = signed || deliveries.iter().any(|d| d.encrypt.is_some());
    let prepared = if needs_prepared {
        Some(Prepared::new(message, signer.map(|id| (id, sign_opts))).map_err(Refusal::Crypto)?)
    } else {
        None
    };
    let mut out = Vec::with_capacity(deliveries.len());
    for d in deliveries {
        let bytes = match (&d.encrypt, &prepared) {
            (Some(enc), Some(p)) => {
                let opts = EncryptOptions {
                    cipher: enc.cipher,
                    key_transport: KeyTransport::RsaPkcs1v15,
                };
                p.encrypt(&enc.certs, &opts).map_err(Refusal::Crypto)?
            }
            (None, Some(p)) if signed => p.to_message(),
            // Unsigned plaintext goes out as the client wrote it, minus Bcc.
            _ => smime::mime::without_fields(message, &["bcc"]),
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
