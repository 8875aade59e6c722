//! envelopd's S/MIME core: pure `message in -> message out` transforms.
//!
//! Sign (`multipart/signed`), encrypt (AES-GCM AuthEnvelopedData or AES-CBC EnvelopedData),
//! decrypt and verify whole mail messages, interoperable with OpenSSL, gpgsm and NSS. No sockets,
//! no files, no clock: time is a parameter, keys and certificates are passed in as bytes.
//!
//! ASN.1 types come from RustCrypto (`der`, `cms`, `x509-cert`, `spki`, `pkcs8`); every
//! cryptographic primitive runs on `aws-lc-rs` (constant-time RSA, hardware AES-GCM), because the
//! `rsa` crate carries the unfixed Marvin timing advisory (RUSTSEC-2023-0071) on exactly the
//! decryption path a mail reader exposes. BER input is normalised first ([`ber`]).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod address;
pub mod alg;
pub mod ber;
pub mod cert;
pub mod envelope;
mod ess;
pub mod hp;
pub mod keys;
pub mod message;
pub mod mime;
pub mod sigalg;
pub mod signed;

pub use address::{same_mailbox, Address, AddressError};
pub use alg::{ContentCipher, Digest};
pub use cert::{parse_certificates, Cert};
pub use envelope::{EncryptOptions, KeyTransport};
pub use hp::Protection;
pub use keys::{ExternalKey, ExternalKind, Identity, PrivateKey, RsaPadding};
pub use message::{
    decrypt, decrypt_owned, encrypt, encrypt_owned, open, sign, sign_and_encrypt, verify,
    verify_owned, Decrypted, Layer, OpenedMessage, Prepared, Verified,
};
pub use signed::{SignOptions, SignerReport};

/// Everything that can go wrong, with the context a user needs.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The CMS/DER structure is damaged or not what it claims to be.
    #[error("malformed S/MIME data: {0}")]
    Malformed(String),
    /// The MIME structure around the CMS data is wrong.
    #[error("malformed MIME: {0}")]
    Mime(String),
    /// An algorithm or feature envelopd refuses or does not implement.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// A certificate could not be parsed or used.
    #[error("certificate: {0}")]
    Certificate(String),
    /// A private key could not be loaded or used.
    #[error("private key: {0}")]
    Key(String),
    /// A signature does not verify.
    #[error("bad signature: {0}")]
    BadSignature(String),
    /// The signer certificate does not chain to a trusted anchor or is not valid now.
    #[error("untrusted signer: {0}")]
    Untrusted(String),
    /// Decryption failed: wrong key, or the message was damaged or tampered with.
    #[error("decryption failed: wrong key, or the message was damaged or tampered with")]
    DecryptFailed,
    /// None of the given keys is a recipient of the message.
    #[error("the message is not encrypted for any of the given keys (recipients: {0})")]
    NoRecipient(String),
    /// The input is not the kind of S/MIME message the operation needs.
    #[error("not an S/MIME message of this kind: {0}")]
    NotSmime(String),
}

/// Entry points shared by the `cargo fuzz` targets in `fuzz/` and the corpus replay test, so that
/// both exercise exactly the same code on untrusted input.
#[doc(hidden)]
pub mod fuzz_targets {
    /// BER/DER normalisation and every CMS parser on arbitrary bytes.
    pub fn cms(data: &[u8]) {
        if let Ok(der) = crate::ber::normalize(data) {
            let _ = crate::envelope::split_content_info(&der);
            if let Ok(ci) = crate::signed::parse_content_info(&der) {
                let _ = crate::signed::verify_cms(&ci, Some(b"content"));
                let _ = crate::signed::verify_cms(&ci, None);
            }
        }
    }

    /// Message-level decryption and layer opening with a real key on arbitrary messages.
    pub fn decrypt(data: &[u8], keys: &[crate::Identity]) {
        let _ = crate::decrypt(data, keys);
        let copied = crate::open(data, keys);
        // Opening in the message's own buffer gives the same, and a message it cannot open
        // back unchanged (a damaged content key may unwrap to a random one: then only whether
        // the CBC padding happens to hold may differ).
        match (copied, crate::message::open_owned(data.to_vec(), keys)) {
            (Ok(a), Ok(b)) => assert!(a.message == b.message && a.layers.len() == b.layers.len()),
            (Err(a), Err((b, back))) => {
                assert_eq!(a.to_string(), b.to_string());
                assert!(back == data, "the message did not come back unchanged");
            }
            (Ok(_), Err((crate::Error::DecryptFailed, back))) => assert!(back == data),
            (Err(crate::Error::DecryptFailed), Ok(_)) => {}
            (a, b) => panic!("open and open_owned differ: {:?} / {:?}", a.err(), b.err()),
        }
    }

    /// MIME splitting, header parsing, canonicalisation and signature verification.
    pub fn mime(data: &[u8]) {
        let e = crate::mime::split(data);
        let _ = crate::mime::fields(e.header);
        let ct = crate::mime::content_type(e.header);
        if let Some(b) = ct.param("boundary") {
            let _ = crate::mime::split_multipart(e.body, b);
        }
        if let Ok(c) = crate::mime::canonicalize(data) {
            // Canonical output is 7-bit clean (bodies re-encoded) — the point of canonicalising.
            let c2 = crate::mime::split(&c);
            assert!(crate::mime::to_crlf(c2.body).len() == c2.body.len());
        }
        let _ = crate::mime::base64_decode(e.body);
        // Header protection on untrusted payloads (reading) and on any submitted message.
        let _ = crate::hp::unprotect_payload(data);
        let _ = crate::hp::protect(
            data,
            crate::hp::Protection::Cipher {
                legacy_display: true,
            },
        );
        let o = crate::mime::originators(e.header);
        let _ = o.single_from().map(|f| o.other_senders(f));
        let _ = crate::verify(data);
    }
}
