//! envelopd's IMAP side: a proxy between a mail program and the provider's IMAP server that
//! shows S/MIME messages decrypted and verified, with a status header the reader can trust,
//! while the server keeps only the stored (encrypted) copy.
//!
//! [`present`] decides what a message looks like to the client, [`structure`] and [`fetch`]
//! answer every FETCH form from those bytes, [`frame`] splits the byte streams into IMAP
//! messages (bounded), and [`session`] runs one proxied connection.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod fetch;
pub mod frame;
pub mod present;
pub mod search;
pub mod session;
pub mod structure;
