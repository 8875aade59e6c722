//! What the mail program is shown for one stored message: the S/MIME layers opened (only those
//! that make up the whole message, so nothing nested inside other content is ever spliced into
//! the text), every incoming copy of the status header removed, and envelopd's own status header
//! on top. Pure: the keys, the certificate store and the time are parameters.
//!
//! The status header, one line, `;`-separated `name=value` pairs in this order:
//!
//! ```text
//! X-Envelopd: decrypted=aes-256-gcm; signature=valid; signer=alice@example.org
//! X-Envelopd: decrypted=aes-256-cbc; integrity=none; signature=none
//! X-Envelopd: decrypted=no; signature=from-mismatch; signer=mallory@example.org
//! X-Envelopd: decrypted=failed; reason="no key for this message"; signature=none
//! ```
//!
//! - `decrypted` is the content cipher (`aes-128-gcm`, `aes-256-cbc`, `3des-cbc` …), `no` when
//!   the message was not encrypted, or `failed` (the message is then shown as stored, with
//!   `reason`). `integrity=none` follows for CBC ciphers (no integrity protection, Efail-prone),
//!   `weak` for 3DES.
//! - `signature` is `valid` (every signer verified, chained to a trust anchor, valid for the From
//!   address, signed attributes present), `invalid` (with `reason`), `untrusted` (no trusted CA
//!   issued the signer's certificate), `from-mismatch` (the certificate is not for the From
//!   address) or `none`. `signer` names the first signer's address.

use std::time::SystemTime;

use certstore::{CertStore, Purpose, Rejection};
use smime::{mime, Identity, Layer, VerifyOptions};

/// The name of envelopd's status header field.
pub const STATUS_FIELD: &str = "X-Envelopd";

/// What the client is shown for one message.
#[derive(Debug, Clone)]
pub struct Presentation {
    /// The whole message as the client sees it (CRLF line ends).
    pub message: Vec<u8>,
    /// The status header's value.
    pub status: String,
    /// Certificates from valid signatures, to be kept for encrypting to their owners.
    pub harvest: Vec<(String, smime::Cert)>,
}

/// True when the stored message needs a presentation of its own: its outermost layer is S/MIME,
/// or it carries a status header (which must not reach the client unchecked).
pub fn needs_presentation(content_type: &str, has_status_field: bool) -> bool {
    let ct = mime::content_type(format!("Content-Type: {content_type}\r\n").as_bytes());
    has_status_field
        || matches!(
            ct.mime_type.as_str(),
            "application/pkcs7-mime" | "application/x-pkcs7-mime" | "multipart/signed"
        )
}

/// Opens a stored message for display.
pub fn present(
    stored: &[u8],
    keys: &[Identity],
    store: &CertStore,
    at: SystemTime,
) -> Presentation {
    let opts = VerifyOptions {
        anchors: store.anchors().to_vec(),
        at,
    };
    let mut parts: Vec<String> = Vec::new();
    let mut harvest = Vec::new();
    let (inner, signature) = match smime::open(stored, keys, &opts) {
        Ok(opened) => {
            let mut decrypted = None;
            let mut signature = "signature=none".to_string();
            for layer in &opened.layers {
                match layer {
                    Layer::Encrypted(cipher) => decrypted = Some(*cipher),
                    Layer::Signed(v) => {
                        signature = signature_status(v, store, at, &mut harvest);
                    }
                }
            }
            match decrypted {
                Some(c) => {
                    parts.push(format!("decrypted={}", c.label().to_ascii_lowercase()));
                    if c.is_weak() {
                        parts.push("weak".into());
                    }
                    if !c.is_aead() {
                        parts.push("integrity=none".into());
                    }
                }
                None => parts.push("decrypted=no".into()),
            }
            (opened.message, signature)
        }
        Err(e) => {
            parts.push("decrypted=failed".into());
            parts.push(format!("reason={}", quote(&e.to_string())));
            (stored.to_vec(), "signature=none".to_string())
        }
    };
    parts.push(signature);
    let status = parts.join("; ");
    let mut message = Vec::with_capacity(inner.len() + 128);
    message.extend_from_slice(format!("{STATUS_FIELD}: {status}\r\n").as_bytes());
    message.extend_from_slice(&mime::without_fields(
        &to_crlf(&inner),
        &[&STATUS_FIELD.to_ascii_lowercase()],
    ));
    Presentation {
        message,
        status,
        harvest,
    }
}

fn to_crlf(data: &[u8]) -> Vec<u8> {
    mime::to_crlf(data).into_owned()
}

/// A value as a quoted string without anything that could end the header line.
fn quote(text: &str) -> String {
    let clean: String = text
        .chars()
        .filter(|c| !c.is_control())
        .map(|c| if c == '"' { '\'' } else { c })
        .take(200)
        .collect();
    format!("\"{clean}\"")
}

fn signature_status(
    v: &smime::Verified,
    store: &CertStore,
    at: SystemTime,
    harvest: &mut Vec<(String, smime::Cert)>,
) -> String {
    let from = v.from.clone().unwrap_or_default();
    let Some(first) = v.signers.first() else {
        return "signature=invalid; reason=\"no signer\"".into();
    };
    let signer = first
        .emails
        .first()
        .map(|e| format!("; signer={}", e.replace(['"', ';', '\r', '\n', ' '], "")))
        .unwrap_or_default();
    for s in &v.signers {
        let Some(cert) = &s.cert else {
            return format!(
                "signature=invalid; reason={}{signer}",
                quote("the signer's certificate is missing")
            );
        };
        // The store's verdict on the certificate for the From address, with the chain the
        // message carried (it may supply a missing intermediate).
        let verdict = store.validate(cert, Purpose::Sign, &from, &v.certificates, at);
        match (&s.problem, verdict) {
            (None, Ok(_)) => {}
            (_, Err(Rejection::WrongAddress { .. })) | (_, Err(Rejection::NoCertificate(_))) => {
                return format!("signature=from-mismatch{signer}");
            }
            (_, Err(Rejection::Untrusted { .. })) => return format!("signature=untrusted{signer}"),
            (Some(p), _) => return format!("signature=invalid; reason={}{signer}", quote(p)),
            (None, Err(e)) => {
                return format!(
                    "signature=invalid; reason={}{signer}",
                    quote(&e.to_string())
                )
            }
        }
    }
    // Every signer is valid: their certificates may be kept for encrypting to them later.
    for s in &v.signers {
        if let (Some(cert), Some(addr)) = (&s.cert, s.emails.first()) {
            harvest.push((addr.clone(), cert.clone()));
        }
    }
    format!("signature=valid{signer}")
}
