//! envelopd's SMTP side: the client-facing [`session`] (STARTTLS, AUTH passed through,
//! pipelining, BDAT, DSN, the policy's decision per message), the [`upstream`] client that relays
//! each transaction to the provider and answers the client only with the provider's reply, and
//! [`outgoing`], which turns a submitted message and the decision into the exact copies sent.
//! What every listener shares (accept loop, limits, TLS targets, metrics) is in the `net` crate.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod core;
mod deliver;
#[doc(hidden)]
pub mod fuzz_targets;
pub mod outgoing;
pub mod session;
pub mod upstream;
