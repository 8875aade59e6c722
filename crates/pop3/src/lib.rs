//! envelopd's POP3 side: a proxy between a program that fetches mail by POP3 (practice
//! software, fetchmail, Outlook's POP accounts) and the provider's POP3 server that shows
//! S/MIME messages decrypted and verified, exactly as the IMAP side shows them (one
//! presentation, [`present`]), while the server keeps only the stored copy.
//!
//! [`wire`] is POP3's bounded framing, [`core`] one connection's protocol state without I/O,
//! [`cache`] what sessions remember between them, and [`session`] drives the core over real
//! connections.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod cache;
pub mod core;
pub mod session;
pub mod wire;
