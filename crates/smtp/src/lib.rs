//! envelopd's SMTP side: the client session as a sans-I/O [`core`] (every reply, pipelining,
//! STARTTLS, AUTH passed through, DATA and BDAT, limits) driven over real connections by
//! [`session`]; the end of each transaction (the policy's decision, the copies, the provider's
//! answer as the client's reply) in `deliver`; the [`upstream`] client that relays each
//! transaction to the provider; and [`outgoing`], which turns a submitted message and the
//! decision into the exact copies sent. What every listener shares (accept loop, limits, TLS
//! targets, metrics) is in the `net` crate.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod core;
mod deliver;
#[doc(hidden)]
pub mod fuzz_targets;
pub mod outgoing;
pub mod session;
pub mod upstream;
