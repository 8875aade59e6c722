//! Helpers shared by the binary's integration tests.
// Each test file uses a different subset.
#![allow(dead_code)]

use std::path::PathBuf;

/// `../shared/vectors` beside the checkout, or `ENVELOPD_VECTORS`.
pub fn vectors() -> PathBuf {
    std::env::var_os("ENVELOPD_VECTORS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/vectors")
        })
}

/// The RFC 9216 vector directory.
pub fn rfc9216() -> PathBuf {
    vectors().join("rfc9216")
}
