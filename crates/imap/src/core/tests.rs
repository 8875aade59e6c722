//! The IMAP core without sockets or a runtime, against the in-memory server of [`super::sim`]:
//! what the mail program reads, what the server is asked, in which order.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use super::sim::{Server, GREETING};
use super::*;

struct TestEnv {
    cache: Mutex<Cache>,
    failed: Mutex<Vec<Option<String>>>,
    locked: bool,
    cert: smime::Cert,
}

impl Env for TestEnv {
    fn cache(&self) -> &Mutex<Cache> {
        &self.cache
    }
    fn locked(&self, _peer: IpAddr, _user: Option<&str>) -> Option<Duration> {
        self.locked.then_some(Duration::from_secs(300))
    }
    fn login_failed(&self, _peer: IpAddr, user: Option<&str>) {
        self.failed.lock().unwrap().push(user.map(str::to_string));
    }
    fn own_cert(&self, login: &str) -> Option<smime::Cert> {
        (login == "doc").then(|| self.cert.clone())
    }
    fn encrypts_appends_to(&self, folder: &str) -> bool {
        folder.eq_ignore_ascii_case("Sent")
    }
}

fn cert() -> smime::Cert {
    let pem = std::fs::read(testkit::vectors().join("rfc9216/alice.encrypt.crt")).unwrap();
    smime::cert::parse_certificates(&pem).unwrap().remove(0)
}

/// What the test's "S/MIME" looks like: `Content-Type: application/pkcs7-mime` and the inner
/// message in base64. The harness opens it as the driver would open real S/MIME.
fn sealed(inner: &[u8]) -> Vec<u8> {
    let mut m = b"From: a@x.example\r\nSubject: sealed\r\nMIME-Version: 1.0\r\nContent-Type: application/pkcs7-mime; smime-type=enveloped-data\r\nContent-Transfer-Encoding: base64\r\n\r\n".to_vec();
    m.extend_from_slice(&smime::mime::base64_lines(inner));
    m
}

const PLAIN: &[u8] =
    b"From: a@x.example\r\nSubject: plain\r\nContent-Type: text/plain\r\n\r\nhello plain\r\n";
const INNER: &[u8] = b"From: a@x.example\r\nSubject: the real subject\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nsecret findings of the doctor\r\n--b\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0x\r\n--b--\r\n";
const FORGED: &[u8] = b"X-Envelopd: decrypted=aes-256-gcm; signature=valid\r\nFrom: boss@x.example\r\nSubject: forged\r\nContent-Type: text/plain\r\n\r\ntrust me\r\n";

/// The shown form the harness makes: sealed messages opened, everything else through the real
/// [`crate::present::present`] without keys (which removes a forged status).
fn show(stored: &[u8]) -> Presentation {
    let split = smime::mime::split(stored);
    let header = String::from_utf8_lossy(split.header).to_ascii_lowercase();
    if header.contains("application/pkcs7-mime") {
        let inner = smime::mime::base64_decode(split.body).unwrap();
        let mut message = b"X-Envelopd: decrypted=test; signature=none\r\n".to_vec();
        message.extend_from_slice(&inner);
        return ::present::Presentation {
            status: "decrypted=test; signature=none".into(),
            ..::present::Presentation::as_stored(message)
        }
        .into();
    }
    crate::present::present(
        stored,
        &[],
        &certstore::CertStore::new(),
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
    )
}

struct Sim {
    core: Core,
    server: Server,
    env: Arc<TestEnv>,
    /// Server output not yet given to the core (while `hold` is set, or the core reads no
    /// further), and how much of the first was given.
    held: VecDeque<Vec<u8>>,
    fed: usize,
    hold: bool,
    presented: Vec<u32>,
    encrypted: usize,
    closed: bool,
    tls_ok: bool,
    /// The most FETCH responses the core held at once.
    max_held: usize,
    /// The most shown forms the core kept for a pending FETCH at once.
    max_shown: usize,
    /// Stored messages handed out to open beside the session, not yet opened.
    opens: VecDeque<Stored>,
    /// One opened (and cached) but not yet reported: reported after the next one is opened,
    /// as when the cache has a shown form a moment before the session hears of it.
    lagged: Option<(u32, Arc<Presentation>)>,
    /// Openings so far (odd ones come from the back: they finish in any order).
    finished: usize,
    /// The most bytes the core read ahead of the client at once.
    max_ahead: usize,
}

fn config(peer: &str) -> Config {
    Config {
        secure: false,
        starttls: true,
        peer: peer.parse().unwrap(),
        max_literal: 1 << 20,
    }
}

impl Sim {
    fn new(messages: Vec<Vec<u8>>) -> Self {
        Self::with(messages, config("127.0.0.1"), false)
    }

    fn with(messages: Vec<Vec<u8>>, cfg: Config, locked: bool) -> Self {
        let env = Arc::new(TestEnv {
            cache: Mutex::new(Cache::new(1 << 24)),
            failed: Mutex::new(Vec::new()),
            locked,
            cert: cert(),
        });
        let core = Core::new(cfg, env.clone(), GREETING, Framer::new(MAX_LINE, 1 << 20));
        Sim {
            core,
            server: Server::new(messages),
            env,
            held: VecDeque::new(),
            fed: 0,
            hold: false,
            presented: Vec::new(),
            encrypted: 0,
            closed: false,
            tls_ok: true,
            max_held: 0,
            max_shown: 0,
            opens: VecDeque::new(),
            lagged: None,
            finished: 0,
            max_ahead: 0,
        }
    }

    /// Runs until the core is idle; returns what the client read.
    fn run(&mut self) -> String {
        let mut out = Vec::new();
        loop {
            self.max_held = self.max_held.max(self.core.held.len());
            self.max_shown = self.max_shown.max(self.core.shown_here.len());
            self.max_ahead = self.max_ahead.max(self.core.ahead);
            // A shown form is kept only while its response waits.
            for uid in self.core.shown_here.keys() {
                assert!(
                    self.core
                        .held
                        .iter()
                        .any(|m| fetch::quick_uid(m) == Some(*uid)),
                    "the shown form of {uid} outlived its response"
                );
            }
            match self.core.poll() {
                Step::ToClient(b) => out.extend_from_slice(&b),
                Step::ToClientShown(p, range) => out.extend_from_slice(&p.message[range]),
                Step::ToServer(b) => {
                    let reply = self.server.receive(&b);
                    if !reply.is_empty() {
                        self.held.push_back(reply);
                    }
                }
                Step::Open { message, .. } => self.opens.push_back(message),
                Step::Do(work) => {
                    let answer = match work {
                        Work::Present { messages, .. } => {
                            Answer::Presented(messages.into_iter().map(|m| self.open(m)).collect())
                        }
                        Work::Encrypt { message, .. } => {
                            self.encrypted += 1;
                            Answer::Encrypted(Ok(sealed(&message)))
                        }
                        Work::StartTls => Answer::Tls(self.tls_ok),
                    };
                    self.core.answer(answer);
                }
                Step::Close => {
                    self.closed = true;
                    break;
                }
                Step::Idle => {
                    if self.hold || self.held.is_empty() || !self.core.reading_server() {
                        // The server has nothing to say, or the core reads no further: an
                        // opening finishes (the oldest or the latest: in any order), and the
                        // one before it is reported.
                        self.finished += 1;
                        let next = if self.finished % 2 == 0 {
                            self.opens.pop_front()
                        } else {
                            self.opens.pop_back()
                        };
                        let opened = next.map(|m| (m.uid, self.open(m)));
                        let report = match opened {
                            Some(o) => self.lagged.replace(o),
                            None => self.lagged.take(),
                        };
                        match report {
                            Some((uid, shown)) => {
                                self.core.opened(uid, shown);
                                continue;
                            }
                            None if self.lagged.is_some() => continue,
                            None => break,
                        }
                    }
                    // The server's output arrives in pieces, as from a socket.
                    let reply = self.held.front().unwrap();
                    let end = reply.len().min(self.fed + 64 * 1024);
                    let piece = reply[self.fed..end].to_vec();
                    self.fed = end;
                    if end == reply.len() {
                        self.held.pop_front();
                        self.fed = 0;
                    }
                    self.core.from_server(&piece);
                }
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Opens a stored message as the driver would, keeping it in the cache.
    fn open(&mut self, m: Stored) -> Arc<Presentation> {
        self.presented.push(m.uid);
        let p = Arc::new(show(&m.bytes));
        if let Some(k) = m.key {
            self.env.cache.lock().unwrap().insert(k, p.clone());
        }
        p
    }

    fn say(&mut self, text: &str) -> String {
        self.say_bytes(text.as_bytes())
    }

    fn say_bytes(&mut self, bytes: &[u8]) -> String {
        self.core.from_client(bytes);
        self.run()
    }

    fn login(&mut self) {
        self.run();
        let r = self.say("l1 LOGIN doc pw\r\n");
        assert!(r.contains("l1 OK"), "{r}");
        let r = self.say("s1 SELECT INBOX\r\n");
        assert!(r.contains("s1 OK"), "{r}");
    }
}

/// What the client must read for each stored message: the shown form of an S/MIME one, a plain
/// one as stored.
fn shown_forms(stored: &[Vec<u8>]) -> Vec<Vec<u8>> {
    stored
        .iter()
        .map(|m| {
            if !String::from_utf8_lossy(m).contains("application/pkcs7-mime") {
                m.clone()
            } else {
                show(m).shown.message
            }
        })
        .collect()
}

/// What a server storing `messages` would answer to `command` (the client's view to expect).
fn direct(messages: Vec<Vec<u8>>, command: &str) -> String {
    let mut s = Server::new(messages);
    String::from_utf8_lossy(&s.receive(command.as_bytes())).into_owned()
}

#[test]
fn the_greeting_hides_what_envelopd_cannot_keep_consistent() {
    let mut sim = Sim::new(vec![]);
    let g = sim.run();
    assert!(
        g.starts_with("* OK [CAPABILITY IMAP4rev1 LITERAL+ SASL-IR AUTH=PLAIN IDLE STARTTLS]"),
        "{g}"
    );
    for hidden in ["COMPRESS", "ESEARCH", "MULTIAPPEND", "LOGINDISABLED"] {
        assert!(!g.contains(hidden), "{hidden}: {g}");
    }
    let mut lan = Sim::with(vec![], config("192.0.2.9"), false);
    let g = lan.run();
    assert!(g.contains("LOGINDISABLED"), "{g}");
    let r = lan.say("c CAPABILITY\r\n");
    assert!(
        r.contains("* CAPABILITY IMAP4rev1 LITERAL+ IDLE STARTTLS LOGINDISABLED\r\n"),
        "{r}"
    );
}

#[test]
fn a_login_counts_only_after_the_servers_ok_and_failures_are_counted() {
    let mut sim = Sim::new(vec![]);
    sim.run();
    let r = sim.say("a LOGIN doc wrong\r\n");
    assert!(r.starts_with("a NO"), "{r}");
    assert_eq!(sim.core.login(), None);
    assert_eq!(*sim.env.failed.lock().unwrap(), [Some("doc".to_string())]);
    let r = sim.say("b LOGIN \"Doc\" {2}\r\n");
    assert_eq!(r, "+ go on\r\n");
    let r = sim.say("pw\r\n");
    assert!(r.starts_with("b OK"), "{r}");
    assert_eq!(sim.core.login(), Some("doc"));
}

#[test]
fn authenticate_passes_through_and_the_name_comes_from_the_response() {
    let mut sim = Sim::new(vec![]);
    sim.run();
    let r = sim.say("a AUTHENTICATE PLAIN\r\n");
    assert_eq!(r, "+ \r\n");
    // base64("\0doc\0pw"): the continuation line is not a command, and passes unchanged.
    let r = sim.say("AGRvYwBwdw==\r\n");
    assert!(r.starts_with("a OK"), "{r}");
    assert_eq!(sim.core.login(), Some("doc"));
    assert!(sim
        .server
        .received
        .iter()
        .all(|c| !c.contains("AGRvYwBwdw")));

    let mut ir = Sim::new(vec![]);
    ir.run();
    let r = ir.say("a AUTHENTICATE PLAIN AGRvYwB3cm9uZw==\r\n");
    assert!(r.starts_with("a NO"), "{r}");
    assert_eq!(ir.core.login(), None);
    assert_eq!(*ir.env.failed.lock().unwrap(), [Some("doc".to_string())]);
}

#[test]
fn passwords_never_cross_the_lan_in_the_clear_and_starttls_starts_afresh() {
    let mut sim = Sim::with(vec![], config("192.0.2.9"), false);
    sim.run();
    for attempt in [
        "a LOGIN doc pw\r\n",
        "b AUTHENTICATE PLAIN AGRvYwBwdw==\r\n",
    ] {
        let r = sim.say(attempt);
        assert!(r.contains("NO [PRIVACYREQUIRED]"), "{r}");
    }
    // A literal does not get around it: refused before the "+".
    let r = sim.say("c LOGIN doc {2}\r\n");
    assert!(r.starts_with("c NO [PRIVACYREQUIRED]"), "{r}");
    assert!(sim.server.received.is_empty(), "{:?}", sim.server.received);
    // STARTTLS; a command injected behind it in the clear is dropped, not run under TLS.
    let r = sim.say("d STARTTLS\r\ne LOGIN doc pw\r\n");
    assert_eq!(r, "d OK Begin TLS negotiation now\r\n");
    assert!(sim.core.secure());
    assert!(sim.server.received.is_empty(), "{:?}", sim.server.received);
    let r = sim.say("f CAPABILITY\r\n");
    assert!(
        !r.contains("STARTTLS") && !r.contains("LOGINDISABLED"),
        "{r}"
    );
    let r = sim.say("g LOGIN doc pw\r\n");
    assert!(r.starts_with("g OK"), "{r}");
    let r = sim.say("h STARTTLS\r\n");
    assert!(r.starts_with("h NO"), "{r}");
}

#[test]
fn a_failed_handshake_ends_the_session() {
    let mut sim = Sim::new(vec![]);
    sim.run();
    sim.tls_ok = false;
    sim.say("a STARTTLS\r\n");
    assert!(sim.closed);
}

#[test]
fn a_locked_login_is_refused_before_the_server_sees_it() {
    let mut sim = Sim::with(vec![], config("127.0.0.1"), true);
    sim.run();
    let r = sim.say("a LOGIN doc pw\r\n");
    assert!(
        r.starts_with("a NO [UNAVAILABLE] too many failed logins"),
        "{r}"
    );
    let r = sim.say("b LOGIN doc {2+}\r\npw\r\nc NOOP\r\n");
    assert!(r.starts_with("b NO [UNAVAILABLE]"), "{r}");
    // The LITERAL+ data was dropped with its command; the next command runs.
    assert!(r.contains("c OK"), "{r}");
    assert_eq!(sim.server.received, ["c NOOP"]);
}

#[test]
fn idle_passes_done_through_and_the_session_goes_on() {
    let mut sim = Sim::new(vec![PLAIN.to_vec()]);
    sim.login();
    let r = sim.say("i IDLE\r\n");
    assert_eq!(r, "+ idling\r\n");
    let r = sim.say("DONE\r\n");
    assert!(r.starts_with("i OK"), "{r}");
    let r = sim.say("n NOOP\r\n");
    assert!(r.starts_with("n OK"), "{r}");
}

/// Every FETCH form, cold and warm: the client reads exactly what a server storing the shown
/// message would send; plain messages pass as the server sent them.
#[test]
fn every_fetch_form_is_answered_from_the_shown_message() {
    // The fourth is large enough (over 64 KiB) to be moved out of its response, not copied.
    let large = String::from_utf8_lossy(INNER).replace("JVBERi0x", &"JVBERi0x\r\n".repeat(12_000));
    let stored = vec![
        PLAIN.to_vec(),
        sealed(INNER),
        FORGED.to_vec(),
        sealed(large.as_bytes()),
    ];
    let shown: Vec<Vec<u8>> = stored
        .iter()
        .enumerate()
        .map(|(i, m)| {
            if i == 0 {
                m.clone()
            } else {
                show(m).shown.message
            }
        })
        .collect();
    assert!(String::from_utf8_lossy(&shown[2]).contains("signature=none"));
    let forms = [
        "BODY[]",
        "BODY.PEEK[]",
        "BODY.PEEK[HEADER]",
        "BODY[TEXT]",
        "BODY[1]",
        "BODY[2]",
        "BODY[1.MIME]",
        "BODY.PEEK[HEADER.FIELDS (Subject X-Envelopd)]",
        "BODY.PEEK[HEADER.FIELDS.NOT (Subject)]",
        "BODY[]<0.30>",
        "BODY[TEXT]<5.10>",
        "RFC822",
        "RFC822.HEADER",
        "RFC822.TEXT",
        "RFC822.SIZE",
        "BODYSTRUCTURE",
        "BODY",
        "ENVELOPE",
        "(FLAGS RFC822.SIZE BODY.PEEK[HEADER.FIELDS (From Subject)])",
        "ALL",
        "FULL",
    ];
    let mut sim = Sim::new(stored);
    sim.login();
    for (round, warm) in ["cold", "warm"].iter().enumerate() {
        for (i, form) in forms.iter().enumerate() {
            let command = format!("f{round}x{i} FETCH 1:4 {form}\r\n");
            let got = sim.say(&command);
            let want = direct(shown.clone(), &command);
            assert_eq!(got, want, "{warm} {form}");
        }
    }
    // Each protected message was opened once; the plain one never.
    let mut opened = sim.presented.clone();
    opened.sort();
    assert_eq!(opened, [2, 3, 4]);
}

#[test]
fn uid_fetch_keeps_uids_and_plain_messages_pass_unparsed() {
    let mut sim = Sim::new(vec![PLAIN.to_vec(), sealed(INNER)]);
    sim.login();
    let r = sim.say("u UID FETCH 1:* (BODY.PEEK[TEXT])\r\n");
    assert!(r.contains("hello plain"), "{r}");
    assert!(r.contains("secret findings of the doctor"), "{r}");
    assert!(
        r.contains("(UID 1 BODY[TEXT] {13}\r\nhello plain\r\n)"),
        "{r}"
    );
    assert!(r.ends_with("u OK fetched\r\n"), "{r}");
    // The client's UIDs and nothing of envelopd's marker.
    assert!(
        !r.contains("X-ENVELOPD") && !r.contains("Content-Type)"),
        "{r}"
    );
}

#[test]
fn pipelined_commands_wait_for_the_fetch_and_keep_their_order() {
    let mut sim = Sim::new(vec![PLAIN.to_vec(), sealed(INNER), sealed(INNER)]);
    sim.login();
    sim.hold = true;
    let r = sim.say("a NOOP\r\nb FETCH 1:2 (BODY[])\r\nc NOOP\r\n");
    assert_eq!(r, "");
    // The NOOP before and the FETCH went to the server; the NOOP behind waits.
    let sent: Vec<_> = sim.server.received[2..].to_vec();
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert!(
        sent[1].starts_with("b FETCH 1:2 (BODY[] UID BODY.PEEK[HEADER.FIELDS"),
        "{sent:?}"
    );
    assert!(!sim.core.reading_client());
    sim.hold = false;
    let r = sim.run();
    let a = r.find("a OK").unwrap();
    let one = r.find("hello plain").unwrap();
    let two = r.find("secret findings").unwrap();
    let b = r.find("b OK").unwrap();
    let c = r.find("c OK").unwrap();
    assert!(a < one && one < two && two < b && b < c, "{r}");
    // The S/MIME message was opened from the FETCH's own BODY[]: nothing fetched again.
    assert!(
        !sim.server.received.iter().any(|c| c.starts_with("ENVLPD.")),
        "{:?}",
        sim.server.received
    );
    // With only a header asked for, envelopd fetches the stored message itself, between the
    // FETCH's end and the client's next command.
    sim.hold = true;
    sim.say("d FETCH 3 (BODY.PEEK[HEADER.FIELDS (Subject)])\r\ne NOOP\r\n");
    sim.hold = false;
    let r = sim.run();
    assert!(r.contains("the real subject") && r.contains("e OK"), "{r}");
    let own = sim
        .server
        .received
        .iter()
        .position(|c| c.starts_with("ENVLPD."))
        .unwrap();
    let next = sim
        .server
        .received
        .iter()
        .position(|c| c == "e NOOP")
        .unwrap();
    assert!(own < next, "{:?}", sim.server.received);
}

#[test]
fn a_second_login_never_sees_the_first_ones_cache() {
    let mut sim = Sim::new(vec![sealed(INNER)]);
    sim.login();
    sim.say("f FETCH 1 BODY[]\r\n");
    assert_eq!(sim.presented, [1]);
    // The same connection, another user: a fresh LOGIN, so a fresh key and another opening.
    sim.server.password = "other".into();
    let r = sim.say("l2 LOGIN nurse other\r\ns2 SELECT INBOX\r\n");
    assert!(r.contains("s2 OK"), "{r}");
    sim.say("g FETCH 1 BODY[]\r\n");
    assert_eq!(sim.presented, [1, 1]);
}

#[test]
fn search_finds_text_inside_protected_messages() {
    let mut sim = Sim::new(vec![PLAIN.to_vec(), sealed(INNER), PLAIN.to_vec()]);
    sim.login();
    let r = sim.say("s SEARCH BODY \"secret findings\"\r\n");
    assert!(r.contains("* SEARCH 2\r\n"), "{r}");
    assert!(
        r.contains("s OK SEARCH completed (envelopd also searched 1 encrypted messages)"),
        "{r}"
    );
    let r = sim.say("t UID SEARCH BODY \"hello plain\"\r\n");
    assert!(r.contains("* SEARCH 1 3\r\n"), "{r}");
    let r = sim.say("u SEARCH NOT BODY \"secret findings\"\r\n");
    assert!(r.contains("* SEARCH 1 3\r\n"), "{r}");
}

#[test]
fn sent_copies_are_stored_encrypted_and_other_appends_pass() {
    let mut sim = Sim::new(vec![]);
    sim.login();
    let msg = "Subject: draft\r\n\r\nnotes\r\n";
    let r = sim.say(&format!("a APPEND Sent (\\Seen) {{{}}}\r\n", msg.len()));
    assert_eq!(r, "+ Ready for literal data\r\n");
    let r = sim.say(&format!("{msg}\r\n"));
    assert!(r.starts_with("a OK [APPENDUID 42 1]"), "{r}");
    assert_eq!(sim.encrypted, 1);
    assert!(String::from_utf8_lossy(&sim.server.messages[0].1).contains("application/pkcs7-mime"));
    // INBOX appends are not envelopd's business.
    let r = sim.say(&format!("b APPEND INBOX {{{}+}}\r\n{msg}\r\n", msg.len()));
    assert!(r.starts_with("b OK"), "{r}");
    assert_eq!(sim.server.messages[1].1, msg.as_bytes());
    // MULTIAPPEND is refused whole.
    let r = sim.say(&format!("c APPEND Sent {{{}}}\r\n", msg.len()));
    assert!(r.starts_with('+'));
    let r = sim.say(&format!("{msg} {{3}}\r\n"));
    assert!(
        r.contains("c NO envelopd stores one message per APPEND"),
        "{r}"
    );
    assert_eq!(sim.server.messages.len(), 2);
}

/// The folder name may come as a literal (`APPEND {4}` CRLF `Sent ...`): read before anything
/// goes to the server, it decides as a quoted one does. Before, such an APPEND passed unread and
/// the Sent copy was stored in plain text.
#[test]
fn a_folder_name_sent_as_a_literal_decides_like_a_quoted_one() {
    let mut sim = Sim::new(vec![]);
    sim.login();
    let msg = "Subject: draft\r\n\r\nnotes\r\n";
    // Synchronizing literals: envelopd asks for the name, then for the message.
    assert_eq!(sim.say("a APPEND {4}\r\n"), "+ Ready for literal data\r\n");
    let r = sim.say(&format!("Sent (\\Seen) {{{}}}\r\n", msg.len()));
    assert_eq!(r, "+ Ready for literal data\r\n");
    let r = sim.say(&format!("{msg}\r\n"));
    assert!(r.starts_with("a OK [APPENDUID 42 1]"), "{r}");
    assert_eq!(sim.encrypted, 1);
    assert!(String::from_utf8_lossy(&sim.server.messages[0].1).contains("application/pkcs7-mime"));
    // Non-synchronizing (LITERAL+), in one go, to a folder that keeps what it is given.
    let r = sim.say(&format!(
        "b APPEND {{5+}}\r\nINBOX {{{}+}}\r\n{msg}\r\n",
        msg.len()
    ));
    assert!(r.starts_with("b OK"), "{r}");
    assert_eq!(sim.server.messages[1].1, msg.as_bytes());
    assert_eq!(sim.encrypted, 1);
    // A name with a quote and a backslash in it reaches the server quoted, and is still "Sent"
    // by its last part.
    let name = "Arch\\iv \"alt\"/Sent";
    let r = sim.say(&format!(
        "c APPEND {{{}+}}\r\n{name} {{{}+}}\r\n{msg}\r\n",
        name.len(),
        msg.len()
    ));
    assert!(r.starts_with("c OK"), "{r}");
    assert_eq!(sim.encrypted, 2);
    // A name that cannot be quoted (8-bit) and one longer than any folder name are refused, and
    // nothing of the message reaches the server.
    let r = sim.say(&format!(
        "d APPEND {{4+}}\r\nS\u{e9}t {{{}+}}\r\n{msg}\r\ne NOOP\r\n",
        msg.len()
    ));
    assert!(
        r.contains("d NO envelopd cannot pass on this mailbox name"),
        "{r}"
    );
    assert!(r.contains("e OK"), "{r}");
    let r = sim.say("f APPEND {5000}\r\ng NOOP\r\n");
    assert!(
        r.starts_with("f NO envelopd reads mailbox names of at most 4096 bytes"),
        "{r}"
    );
    assert!(r.contains("g OK"), "{r}");
    assert_eq!(sim.server.messages.len(), 3);
}

#[test]
fn an_oversized_sent_copy_is_refused_before_its_literal() {
    let mut cfg = config("127.0.0.1");
    cfg.max_literal = 100;
    let mut sim = Sim::with(vec![], cfg, false);
    sim.login();
    let r = sim.say("a APPEND Sent {500}\r\nb NOOP\r\n");
    assert!(r.starts_with("a NO [TOOBIG]"), "{r}");
    assert!(r.contains("b OK"), "{r}");
}

#[test]
fn a_server_that_goes_away_gets_a_bye_except_after_logout() {
    let mut sim = Sim::new(vec![]);
    sim.login();
    sim.core.server_closed();
    let r = sim.run();
    assert_eq!(
        r,
        "* BYE envelopd: the mail server closed the connection\r\n"
    );
    assert!(sim.closed);

    let mut sim = Sim::new(vec![]);
    sim.login();
    let r = sim.say("z LOGOUT\r\n");
    assert!(r.contains("z OK"), "{r}");
    sim.core.server_closed();
    assert_eq!(sim.run(), "");
    assert!(sim.closed);
}

#[test]
fn garbage_from_either_side_ends_with_a_bye_not_a_panic() {
    let mut sim = Sim::new(vec![]);
    sim.run();
    let long = "x".repeat(MAX_LINE + 10);
    let r = sim.say(&long);
    assert!(
        r.starts_with("* BYE envelopd: the mail program sent"),
        "{r}"
    );
    assert!(sim.closed);

    let mut sim = Sim::new(vec![]);
    sim.run();
    sim.core.from_server(b"* 1 FETCH (BODY[] {99999999999}\r\n");
    let r = sim.run();
    assert!(r.starts_with("* BYE envelopd: the mail server sent"), "{r}");
}

#[test]
fn timeouts_say_why() {
    let mut sim = Sim::new(vec![]);
    sim.run();
    sim.core.server_timed_out();
    assert!(sim.run().contains("the mail server did not answer in time"));
    let mut sim = Sim::new(vec![]);
    sim.run();
    sim.core.timed_out(true);
    assert!(sim.run().contains("a command line took too long"));
    let mut sim = Sim::new(vec![]);
    sim.run();
    sim.core.timed_out(false);
    assert!(sim.run().contains("autologout"));
}

#[test]
fn compress_is_answered_by_envelopd() {
    let mut sim = Sim::new(vec![]);
    sim.login();
    let r = sim.say("c COMPRESS DEFLATE\r\n");
    assert_eq!(r, "c NO COMPRESS is not available through envelopd\r\n");
}

#[test]
fn an_answer_nobody_asked_for_ends_the_session() {
    let mut sim = Sim::new(vec![]);
    sim.run();
    sim.core.answer(Answer::Tls(true));
    sim.run();
    assert!(sim.closed);
    assert!(!sim.core.secure());
}

/// A sync of `stored` (`UID FETCH 1:* (UID BODY.PEEK[])`) through the core, checked against
/// what the server would send with envelopd's shown forms in place; the harness after it.
fn synced(stored: Vec<Vec<u8>>) -> Sim {
    let shown = shown_forms(&stored);
    let mut sim = Sim::new(stored);
    sim.login();
    let command = "f UID FETCH 1:* (UID BODY.PEEK[])\r\n";
    let got = sim.say(command);
    assert_eq!(got, direct(shown, command));
    sim
}

#[test]
fn a_folder_sync_is_opened_as_it_arrives_in_order_and_never_fetched_twice() {
    let inner = |i: usize| {
        format!("From: a@x.example\r\nSubject: number {i}\r\nContent-Type: text/plain\r\n\r\nfinding {i}\r\n")
            .into_bytes()
    };
    let mut stored: Vec<Vec<u8>> = (0..12).map(|i| sealed(&inner(i))).collect();
    stored.insert(5, PLAIN.to_vec());
    // Large ones (moved out of their responses while they wait), protected and plain.
    let large = |i: usize| {
        let mut m = inner(i);
        m.extend(std::iter::repeat_n(b'y', 200_000 + i));
        m
    };
    stored.insert(3, sealed(&large(100)));
    stored.insert(9, large(101));
    let sim = synced(stored);
    // Opened from the FETCH's own responses while they arrived (finishing in any order), and
    // no second fetch of the bodies.
    assert_eq!(sim.presented.len(), 13);
    // Shown forms are let go once their response is sent (the cache keeps what fits).
    assert!(sim.core.shown_here.is_empty() && sim.core.held.is_empty());
    assert_eq!(sim.core.ahead, 0);
    assert!(
        !sim.server
            .received
            .iter()
            .any(|c| c.contains("ENVLPD") && c.contains("BODY.PEEK[])")),
        "{:?}",
        sim.server.received
    );
}

#[test]
fn new_messages_in_a_known_folder_are_opened_as_they_arrive_not_held_to_the_end() {
    // The folder was listed before (envelopd knows what its messages are, and asks for no
    // extra fields any more); then twelve new ones arrive, large and small, S/MIME and plain.
    let mut sim = Sim::new(vec![PLAIN.to_vec(), sealed(INNER)]);
    sim.login();
    let r = sim.say("l FETCH 1:* (UID BODY.PEEK[HEADER.FIELDS (Subject)])\r\n");
    assert!(r.contains("l OK"), "{r}");
    let mut stored = vec![PLAIN.to_vec(), sealed(INNER)];
    for i in 0..12u32 {
        let mut m = format!("From: a@x.example\r\nSubject: new {i}\r\n\r\n").into_bytes();
        m.extend(std::iter::repeat_n(b'z', 100_000 * (i as usize % 3)));
        let m = if i % 2 == 0 { sealed(&m) } else { m };
        sim.server.messages.push((3 + i, m.clone()));
        stored.push(m);
    }
    let shown = shown_forms(&stored);
    sim.max_held = 0;
    let command = "f UID FETCH 1:* (UID BODY.PEEK[])\r\n";
    let got = sim.say(command);
    assert_eq!(got, direct(shown, command));
    // Opened from the FETCH's own responses, never fetched a second time.
    let own: Vec<&String> = sim
        .server
        .received
        .iter()
        .filter(|c| c.starts_with("ENVLPD") && c.contains("BODY.PEEK[]"))
        .collect();
    assert!(own.len() <= 1, "{own:?}");
    assert!(own.iter().all(|c| c.contains("UID FETCH 2 ")), "{own:?}");
}

#[test]
fn envelopds_own_fetches_of_stored_messages_are_bounded_in_bytes() {
    // Sixteen protected messages of about 680 KB stored each: a listing needs their shown
    // headers, so envelopd fetches them itself, never more than 8 MiB in one command.
    let big = |i: usize| {
        let mut m = format!("From: a@x.example\r\nSubject: big {i}\r\n\r\n").into_bytes();
        m.extend(std::iter::repeat_n(b'x', 500_000));
        sealed(&m)
    };
    let stored: Vec<Vec<u8>> = (0..16).map(big).collect();
    let sizes: Vec<usize> = stored.iter().map(Vec::len).collect();
    let mut sim = Sim::new(stored);
    sim.login();
    let r = sim.say("l FETCH 1:* (UID BODY.PEEK[HEADER.FIELDS (Subject)])\r\n");
    for i in 0..16 {
        assert!(r.contains(&format!("Subject: big {i}\r\n")), "{i}");
    }
    let fetches: Vec<&String> = sim
        .server
        .received
        .iter()
        .filter(|c| c.starts_with("ENVLPD.") && c.ends_with("(UID BODY.PEEK[])"))
        .collect();
    assert!(fetches.len() >= 2, "{fetches:?}");
    for f in &fetches {
        let set = f.split(' ').nth(3).unwrap();
        let uids: Vec<usize> = set.split(',').map(|u| u.parse().unwrap()).collect();
        let bytes: usize = uids.iter().map(|u| sizes[u - 1]).sum();
        assert!(uids.len() == 1 || bytes <= 8 << 20, "{f}: {bytes} bytes");
    }
    assert_eq!(sim.presented.len(), 16);
}

#[test]
fn a_sync_reads_the_server_no_further_ahead_than_its_bound_while_messages_open() {
    // 24 protected messages of about 0.95 MB stored: more than AHEAD_BYTES together. The
    // openings finish only when the core reads no further (the latest first), so it reads as
    // far ahead as it lets itself.
    let inner = |i: usize| {
        let mut m = format!("From: a@x.example\r\nSubject: scan {i}\r\n\r\n").into_bytes();
        m.extend(std::iter::repeat_n(b'a' + (i % 26) as u8, 700_000));
        m
    };
    let mut stored: Vec<Vec<u8>> = (0..24).map(|i| sealed(&inner(i))).collect();
    stored.insert(7, PLAIN.to_vec());
    let total: usize = stored.iter().map(Vec::len).sum();
    assert!(total > AHEAD_BYTES + (4 << 20), "{total}");
    let largest = stored.iter().map(Vec::len).max().unwrap();
    let sim = synced(stored);
    assert_eq!(sim.presented.len(), 24);
    // It did read ahead (more than one message opening at a time), but no further than the
    // bound and the piece and message that crossed it.
    assert!(sim.max_ahead > 4 * largest, "{}", sim.max_ahead);
    assert!(
        sim.max_ahead <= AHEAD_BYTES + 64 * 1024 + 2 * largest,
        "{} bytes ahead",
        sim.max_ahead
    );
    assert_eq!(sim.core.ahead, 0);
    assert!(sim.core.shown_here.is_empty());
}
