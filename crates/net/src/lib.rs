//! What every envelopd listener shares, whatever its mail protocol: the accept loop with
//! connection limits, PROXY protocol v2 and graceful shutdown ([`conn`]), the failed-login lock
//! shared by all protocols and the one way to read a login name ([`login`]), the metrics and
//! status registry ([`observe`]), and where the provider is and how envelopd speaks TLS to it
//! and to mail programs ([`target`]), and the pool the cryptography runs on ([`cpu`]). Protocol crates (`smtp`, `imap`) depend on this one, never
//! on each other.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod conn;
pub mod cpu;
pub mod login;
pub mod observe;
pub mod target;
