//! Helpers shared by the integration tests of every envelopd crate: where the public test
//! vectors are, and running the real `openssl` command.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::path::PathBuf;
use std::process::{Command, Stdio};

/// `../shared/vectors` beside the checkout, or `ENVELOPD_VECTORS`.
pub fn vectors() -> PathBuf {
    std::env::var_os("ENVELOPD_VECTORS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/vectors")
        })
}

/// A file of the RFC 9216 vectors.
pub fn rfc9216(name: &str) -> PathBuf {
    vectors().join("rfc9216").join(name)
}

/// Runs `openssl` with `args`; panics with its error output if it fails.
pub fn openssl_ok(args: &[&str]) {
    let o = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl is installed");
    assert!(
        o.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Runs `openssl` with `args` and `input` on stdin; its stdout, or its error output.
pub fn openssl_pipe(args: &[&str], input: &[u8]) -> Result<Vec<u8>, String> {
    use std::io::Write;
    let mut c = Command::new("openssl")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl is installed");
    c.stdin.take().unwrap().write_all(input).unwrap();
    let o = c.wait_with_output().unwrap();
    if o.status.success() {
        Ok(o.stdout)
    } else {
        Err(String::from_utf8_lossy(&o.stderr).to_string())
    }
}
