//! envelopd's SMTP side. So far: [`outgoing`], which turns a submitted message and the policy's
//! decision into the exact copies sent upstream. The client-facing session and the upstream
//! client (transactional relay, AUTH pass-through, TLS) build on it.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

#[doc(hidden)]
pub mod fuzz_targets;
pub mod outgoing;
pub mod session;
pub mod upstream;
