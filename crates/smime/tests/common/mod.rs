//! Helpers shared by the integration tests: where the public vectors are, and loading them.
// Each test file uses a different subset of these helpers.
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use smime::{Cert, Identity, PrivateKey, SignOptions};

/// `../shared/vectors` beside the checkout, or `ENVELOPD_VECTORS`.
pub fn vectors() -> PathBuf {
    testkit::vectors()
}

/// Reads a vector file, naming it when it is missing.
pub fn read(rel: &str) -> Vec<u8> {
    let p = vectors().join(rel);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e} (set ENVELOPD_VECTORS)", p.display()))
}

/// The first certificate of a vector file.
pub fn cert(rel: &str) -> Cert {
    smime::parse_certificates(&read(rel)).unwrap().remove(0)
}

/// A key with its certificate(s).
pub fn identity(key: &str, crt: &str) -> Identity {
    Identity::new(
        PrivateKey::load(&read(key), None).unwrap(),
        smime::parse_certificates(&read(crt)).unwrap(),
    )
    .unwrap()
}

/// 2030-01-01, inside the validity of both vector sets.
pub fn at() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_893_456_000)
}

/// Default signing options at [`at`].
pub fn sign_opts() -> SignOptions {
    SignOptions {
        digest: None,
        rsa_padding: smime::RsaPadding::Pkcs1v15,
        signing_time: at(),
        encryption_cert: None,
    }
}
