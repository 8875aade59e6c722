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
            // The stored message cut out before parsing is the one the full parse finds.
            if let Some((skeleton, range)) = crate::fetch::hollow_body(&m, 1) {
                let hollow = crate::fetch::parse_response(&skeleton);
                if hollow.as_ref().and_then(|r| r.whole_body()) == Some(&[][..]) {
                    if let Some(whole) = crate::fetch::parse_response(&m) {
                        assert_eq!(whole.whole_body(), Some(&m[range]));
                        assert_eq!(whole.uid(), hollow.and_then(|r| r.uid()));
                    }
                }
            }
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

    /// One whole session against the in-memory server ([`crate::core::sim`]): the input is the
    /// mail program's bytes, in pieces (split at 0xff, "pause here"); the server's mailbox holds
    /// a plain message, an S/MIME one (opened by the real [`crate::present::present`] without
    /// keys) and one with a forged status. Every FETCH, SEARCH, APPEND, IDLE and SASL path of
    /// the core is reachable in process. Returns the start of what the client read.
    pub fn session(data: &[u8]) -> Vec<u8> {
        use crate::core::{Answer, Config, Core, Env, Step, Work};
        use std::sync::{Arc, Mutex};
        use std::time::{Duration, SystemTime};

        struct Shared(Mutex<crate::cache::Cache>);
        impl Env for Shared {
            fn cache(&self) -> &Mutex<crate::cache::Cache> {
                &self.0
            }
            fn locked(&self, _: std::net::IpAddr, user: Option<&str>) -> Option<Duration> {
                (user == Some("locked")).then_some(Duration::from_secs(60))
            }
            fn login_failed(&self, _: std::net::IpAddr, _: Option<&str>) {}
            fn own_cert(&self, _: &str) -> Option<smime::Cert> {
                None
            }
            fn encrypts_appends_to(&self, folder: &str) -> bool {
                folder.eq_ignore_ascii_case("Sent")
            }
        }

        let mut server = crate::core::sim::Server::new(vec![
            b"From: a@x.example\r\nSubject: plain\r\n\r\nhello\r\n".to_vec(),
            b"From: a@x.example\r\nContent-Type: application/pkcs7-mime; smime-type=enveloped-data\r\nContent-Transfer-Encoding: base64\r\n\r\nMIAGCSqGSIb3DQEHA6CAMIACAQA=\r\n".to_vec(),
            b"X-Envelopd: signature=valid\r\nFrom: boss@x.example\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\nx\r\n--b--\r\n".to_vec(),
        ]);
        let env = Arc::new(Shared(Mutex::new(crate::cache::Cache::new(1 << 20))));
        let cfg = Config {
            secure: false,
            starttls: true,
            peer: std::net::IpAddr::from([127, 0, 0, 1]),
            max_literal: 1 << 16,
        };
        let mut core = Core::new(
            cfg,
            env,
            crate::core::sim::GREETING,
            Framer::new(4096, 1 << 16),
        );
        let store = certstore::CertStore::new();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let mut pieces = data.split(|b| *b == 0xff);
        let mut out = Vec::new();
        let mut from_server: Vec<Vec<u8>> = Vec::new();
        loop {
            match core.poll() {
                Step::ToClient(b) => {
                    if out.len() < 65536 {
                        out.extend_from_slice(&b);
                    }
                }
                Step::ToClientShown(p, range) => {
                    if out.len() < 65536 {
                        out.extend_from_slice(&p.message[range]);
                    }
                }
                Step::ToServer(b) => from_server.push(server.receive(&b)),
                Step::Do(Work::Present { messages, .. }) => {
                    let shown = messages
                        .iter()
                        .map(|m| Arc::new(crate::present::present(&m.bytes, &[], &store, now)))
                        .collect();
                    core.answer(Answer::Presented(shown));
                }
                // Opened at once (the order openings finish in is the session tests' part).
                Step::Open { message, .. } => {
                    let shown = crate::present::present(&message.bytes, &[], &store, now);
                    core.opened(message.uid, Arc::new(shown));
                }
                Step::Do(Work::Encrypt { message, .. }) => {
                    core.answer(Answer::Encrypted(Ok(message)));
                }
                Step::Do(Work::StartTls) => core.answer(Answer::Tls(data.len() % 2 == 0)),
                Step::Close => break,
                Step::Idle => {
                    if !from_server.is_empty() && core.reading_server() {
                        let bytes = from_server.remove(0);
                        core.from_server(&bytes);
                    } else if core.reading_client() {
                        match pieces.next() {
                            Some(p) => core.from_client(p),
                            None => core.client_closed(),
                        }
                    } else {
                        // Waiting for a server that has nothing more to say: it hangs up.
                        core.server_closed();
                    }
                }
            }
        }
        out
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
