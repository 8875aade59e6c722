//! envelopd's IMAP side: a proxy between a mail program and the provider's IMAP server that
//! shows S/MIME messages decrypted and verified, with a status header the reader can trust,
//! while the server keeps only the stored (encrypted) copy.
//!
//! [`present`] decides what a message looks like to the client, [`structure`] and [`fetch`]
//! answer every FETCH form from those bytes, [`frame`] splits the byte streams into IMAP
//! messages (bounded), [`core`] is one connection's protocol state without I/O, and
//! [`session`] drives it over real connections.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod cache;
pub mod command;
pub mod core;
pub mod fetch;
pub mod frame;
pub mod present;
pub mod search;
pub mod session;
pub mod structure;

/// Entry points for the fuzz targets in `fuzz/` (and their stable replay in the tests): every
/// parser of bytes from the server or the mail program, with small limits.
#[doc(hidden)]
pub mod fuzz_targets {
    use crate::frame::{Framer, Splitter};

    /// Bytes from the server: framing, FETCH parsing and rewriting, structure of a message.
    pub fn server(data: &[u8]) {
        let mut framer = Framer::new(4096, 1 << 16);
        framer.push(data);
        let (_, plan) = crate::fetch::plan(
            b"a FETCH 1:* (BODY.PEEK[] BODY[1.2] BODY[HEADER.FIELDS (From)] BODY.PEEK[]<3.9> RFC822.SIZE BODYSTRUCTURE BODY RFC822.HEADER RFC822.TEXT)\r\n",
        )
        .expect("a content FETCH");
        while let Ok(Some(m)) = framer.next_message() {
            let _ = crate::fetch::quick_uid(&m);
            if let Some(r) = crate::fetch::parse_response(&m) {
                let _ = r.marker();
                let _ = r.whole_body();
                let _ = r.has_content();
                let memo = crate::fetch::SectionMemo::default();
                let _ = crate::fetch::rewrite_memo(r, &plan, Some(data), &memo);
            }
            let _ = crate::session::filter_capabilities(&m);
        }
        message(data);
    }

    /// A message as shown: its structure and sections.
    pub fn message(data: &[u8]) {
        let _ = crate::structure::body_structure(data, true);
        for p in [&[1u32][..], &[1, 1], &[2, 1, 3]] {
            let part = crate::structure::part(p);
            let _ = crate::structure::section(
                data,
                Some(&imap_codec::imap_types::fetch::Section::Part(part.clone())),
            );
            let _ = crate::structure::section(
                data,
                Some(&imap_codec::imap_types::fetch::Section::Mime(part)),
            );
        }
    }

    /// Bytes from the mail program: splitting, what a command means for the session (login,
    /// mailbox, SASL), FETCH and SEARCH plans.
    pub fn client(data: &[u8]) {
        // The whole input as one command, literals included, as the session assembles it.
        let _ = crate::command::parse(data);
        let _ = crate::command::login_before_literal(data);
        let _ = crate::command::append_mailbox(data);
        let _ = net::login::sasl_name("PLAIN", data);
        let mut s = Splitter::new(4096);
        s.push(data);
        while let Ok(Some(piece)) = s.next_piece() {
            if let crate::frame::Piece::Line { bytes, .. } = piece {
                let _ = crate::command::parse(&bytes);
                let _ = crate::fetch::plan(&bytes);
                let _ = crate::fetch::plan_with(&bytes, false);
                if let Some(p) = crate::search::plan(&bytes) {
                    let _ = p.original("t");
                    let _ = p.for_group("t", &[1, 2], &vec![true; p.keys.len()]);
                    let _ = p.answers(data);
                }
            }
        }
    }
}
