//! Helpers shared by the binary's integration tests.
// Each test file uses a different subset.
#![allow(dead_code)]

pub mod lab;
pub mod provider;

use std::path::PathBuf;

/// `../shared/vectors` beside the checkout, or `ENVELOPD_VECTORS`.
pub fn vectors() -> PathBuf {
    testkit::vectors()
}

/// The RFC 9216 vector directory.
pub fn rfc9216() -> PathBuf {
    vectors().join("rfc9216")
}
