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

/// Entry points for the fuzz targets in `fuzz/` (and their stable replay in the tests).
#[doc(hidden)]
pub mod fuzz_targets {
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, SystemTime};

    use crate::cache::Cache;
    use crate::core::{Answer, Config, Core, Env, ServerCaps, Step, Work};

    struct Shared(Mutex<Cache>);
    impl Env for Shared {
        fn cache(&self) -> &Mutex<Cache> {
            &self.0
        }
        fn locked(&self, _: std::net::IpAddr, user: Option<&str>) -> Option<Duration> {
            (user == Some("locked")).then_some(Duration::from_secs(60))
        }
        fn login_failed(&self, _: std::net::IpAddr, _: Option<&str>) {}
    }

    fn core(caps: ServerCaps) -> Core {
        let cfg = Config {
            secure: false,
            starttls: true,
            peer: "127.0.0.1".parse().expect("an address"),
            max_message: 1 << 16,
            workers: 2,
        };
        let env: Arc<dyn Env> = Arc::new(Shared(Mutex::new(Cache::new(1 << 16))));
        Core::new(cfg, env, b"+OK fuzz <1@x>\r\n", caps)
    }

    /// Runs the core's steps until it waits; `server` answers what it sends (if given).
    fn settle(
        core: &mut Core,
        mut server: Option<&mut crate::core::sim::Server>,
        out: &mut Vec<u8>,
    ) {
        let store = certstore::CertStore::new();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        for _ in 0..100_000 {
            match core.poll() {
                Step::ToClient(b) => {
                    if out.len() < 1 << 16 {
                        out.extend_from_slice(&b);
                    }
                }
                Step::ToServer(b) => {
                    if let Some(s) = server.as_deref_mut() {
                        let reply = s.input(&b);
                        core.from_server(&reply);
                    }
                }
                Step::Do(Work::Present { messages, .. }) => {
                    let shown = messages
                        .into_iter()
                        .map(|m| Arc::new(present::present_owned(m.bytes, &[], &store, now)))
                        .collect();
                    core.answer(Answer::Presented(shown));
                }
                Step::Do(Work::StartTls) => core.answer(Answer::Tls(true)),
                Step::Close | Step::Idle => return,
            }
        }
        panic!("the core did not settle");
    }

    /// The mail program's bytes (in pieces split at 0xff) through the core against the
    /// in-memory server holding a plain message, a sealed one, one with a forged status and
    /// one that is not S/MIME at all despite its type. Returns what the client read.
    pub fn client(data: &[u8]) -> Vec<u8> {
        let mut server = crate::core::sim::Server::new(vec![
            b"From: a@x.example\r\nSubject: plain\r\n\r\nhello\r\n.dot\r\n".to_vec(),
            b"From: a@x.example\r\nContent-Type: application/pkcs7-mime; smime-type=enveloped-data\r\nContent-Transfer-Encoding: base64\r\n\r\nMIAGCSqGSIb3DQEHA6CAMIACAQA=\r\n".to_vec(),
            b"X-Envelopd: decrypted=aes-256-gcm; signature=valid\r\nSubject: forged\r\n\r\nx".to_vec(),
            b"Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; boundary=b\r\n\r\n--b\r\n\r\nx\r\n--b--\r\n".to_vec(),
        ]);
        server.password = "p".into();
        let caps = ServerCaps::parse(Some(&server.capa_lines()));
        let mut core = core(caps);
        let mut out = Vec::new();
        settle(&mut core, Some(&mut server), &mut out);
        for piece in data.split(|b| *b == 0xff) {
            core.from_client(piece);
            settle(&mut core, Some(&mut server), &mut out);
        }
        core.client_closed();
        settle(&mut core, Some(&mut server), &mut out);
        out
    }

    /// The server's bytes (in pieces split at 0xff) as the answers to a logged-in client's
    /// pipelined STAT, LIST, RETR, TOP, UIDL, DELE, RSET and QUIT.
    pub fn server(data: &[u8]) {
        let caps = ServerCaps::parse(Some(b"TOP\r\nUIDL\r\nUSER\r\nPIPELINING\r\nSASL PLAIN\r\n"));
        let mut core = core(caps);
        let mut out = Vec::new();
        core.from_client(b"USER u\r\nPASS p\r\nSTAT\r\nLIST\r\nRETR 1\r\nTOP 2 0\r\nLIST 3\r\nUIDL\r\nDELE 1\r\nRSET\r\nRETR 2\r\nQUIT\r\n");
        settle(&mut core, None, &mut out);
        for piece in data.split(|b| *b == 0xff) {
            core.from_server(piece);
            settle(&mut core, None, &mut out);
        }
        core.server_closed();
        settle(&mut core, None, &mut out);
    }
}
