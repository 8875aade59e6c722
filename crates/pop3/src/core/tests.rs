//! The core against the in-memory server ([`super::sim`]): every command, the sizes rule, the
//! login rules, pipelining, and a server that misbehaves.

use super::sim::Server;
use super::*;
use proptest::prelude::*;
use std::time::SystemTime;

struct TestEnv {
    cache: Mutex<Cache>,
    locked: bool,
    failed: Mutex<Vec<Option<String>>>,
}

impl Env for TestEnv {
    fn cache(&self) -> &Mutex<Cache> {
        &self.cache
    }
    fn locked(&self, _: IpAddr, _: Option<&str>) -> Option<Duration> {
        self.locked.then_some(Duration::from_secs(120))
    }
    fn login_failed(&self, _: IpAddr, user: Option<&str>) {
        self.failed.lock().unwrap().push(user.map(str::to_string));
    }
}

fn env() -> Arc<TestEnv> {
    Arc::new(TestEnv {
        cache: Mutex::new(Cache::new(1 << 20)),
        locked: false,
        failed: Mutex::new(Vec::new()),
    })
}

/// The shown form the harness makes: a "sealed" message (pkcs7-mime whose body is the base64
/// of the inner message) opened, everything else through the real [`present::present`]
/// without keys (which shows a failed decryption or removes a forged status).
fn show(stored: &[u8]) -> Presentation {
    let split = smime::mime::split(stored);
    let header = String::from_utf8_lossy(split.header).to_ascii_lowercase();
    if header.contains("application/pkcs7-mime") {
        if let Ok(inner) = smime::mime::base64_decode(split.body) {
            let mut message = b"X-Envelopd: decrypted=test; signature=none\r\n".to_vec();
            message.extend_from_slice(&inner);
            return Presentation {
                status: "decrypted=test; signature=none".into(),
                ..Presentation::as_stored(message)
            };
        }
    }
    present::present(
        stored,
        &[],
        &certstore::CertStore::new(),
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
    )
}

fn sealed(inner: &[u8]) -> Vec<u8> {
    let mut m = b"From: a@x.example\r\nContent-Type: application/pkcs7-mime; smime-type=enveloped-data\r\nContent-Transfer-Encoding: base64\r\n\r\n".to_vec();
    m.extend_from_slice(&smime::mime::base64_lines(inner));
    m
}

struct Harness {
    core: Core,
    server: Server,
    env: Arc<TestEnv>,
    closed: bool,
    presented: usize,
}

impl Harness {
    fn new(messages: Vec<Vec<u8>>) -> Self {
        Self::with(Server::new(messages), env(), "127.0.0.1")
    }

    fn with(server: Server, env: Arc<TestEnv>, peer: &str) -> Self {
        let caps = ServerCaps::parse(Some(&server.capa_lines()));
        let cfg = Config {
            secure: false,
            starttls: true,
            peer: peer.parse().unwrap(),
            max_message: 1 << 20,
            workers: 2,
        };
        let core = Core::new(cfg, env.clone(), &server.greeting(), caps);
        Harness {
            core,
            server,
            env,
            closed: false,
            presented: 0,
        }
    }

    /// Runs the core until it waits for the client; returns what the client got.
    fn run(&mut self) -> Vec<u8> {
        let mut got = Vec::new();
        loop {
            match self.core.poll() {
                Step::ToClient(b) => got.extend_from_slice(&b),
                Step::ToServer(b) => {
                    let reply = self.server.input(&b);
                    // Fed in small pieces, as a network would.
                    for piece in reply.chunks(7) {
                        self.core.from_server(piece);
                    }
                }
                Step::Do(Work::Present { messages, .. }) => {
                    self.presented += messages.len();
                    let shown = messages
                        .into_iter()
                        .map(|m| {
                            let p = Arc::new(show(&m.bytes));
                            if let Some(k) = m.key {
                                self.env
                                    .cache
                                    .lock()
                                    .unwrap()
                                    .insert(k, p.clone(), Instant::now());
                            }
                            p
                        })
                        .collect();
                    self.core.answer(Answer::Presented(shown));
                }
                Step::Do(Work::StartTls) => self.core.answer(Answer::Tls(true)),
                Step::Close => {
                    self.closed = true;
                    return got;
                }
                Step::Idle => return got,
            }
        }
    }

    fn send(&mut self, text: &str) -> String {
        self.core.from_client(text.as_bytes());
        String::from_utf8_lossy(&self.run()).into_owned()
    }

    fn cmd(&mut self, line: &str) -> String {
        self.send(&format!("{line}\r\n"))
    }

    fn login(&mut self) {
        let greeting = String::from_utf8_lossy(&self.run()).into_owned();
        assert!(greeting.starts_with("+OK"), "{greeting}");
        assert!(self.cmd("USER u").starts_with("+OK"));
        assert!(self.cmd("PASS p").starts_with("+OK"));
    }
}

/// The content of a multi-line reply (status line, stuffing and terminator removed).
fn content(reply: &str) -> (String, Vec<u8>) {
    let (status, rest) = reply.split_once("\r\n").expect("status line");
    assert!(
        rest.ends_with("\r\n.\r\n") || rest == ".\r\n",
        "terminated: {reply:?}"
    );
    let body = &rest[..rest.len() - 3];
    let mut out = Vec::new();
    crate::wire::unstuff_into(body.as_bytes(), true, &mut out);
    (status.to_string(), out)
}

fn mailbox() -> Vec<Vec<u8>> {
    vec![
        b"From: a@x.example\r\nSubject: plain\r\n\r\nhello\r\n.hidden dot line\r\n".to_vec(),
        sealed(b"From: a@x.example\r\nSubject: secret\r\n\r\nthe secret text\r\n.dot\r\nline 3\r\n"),
        b"From: a@x.example\r\nX-Envelopd: decrypted=aes-256-gcm; signature=valid\r\nSubject: forged\r\n\r\nbody\r\n".to_vec(),
        sealed(b"From: b@x.example\r\nSubject: no line end\r\n\r\nlast line"),
    ]
}

#[test]
fn greeting_loses_the_apop_banner_and_apop_is_refused() {
    let mut h = Harness::new(mailbox());
    let g = String::from_utf8_lossy(&h.run()).into_owned();
    assert_eq!(g, "+OK Sim ready.\r\n");
    assert!(h.cmd("APOP u 0123456789abcdef").starts_with("-ERR [AUTH]"));
    let capa = h.cmd("CAPA");
    assert!(capa.starts_with("+OK"), "{capa}");
    for want in [
        "TOP\r\n",
        "UIDL\r\n",
        "USER\r\n",
        "SASL PLAIN LOGIN\r\n",
        "STLS\r\n",
        "RESP-CODES\r\n",
        "PIPELINING\r\n",
        "EXPIRE NEVER\r\n",
    ] {
        assert!(capa.contains(want), "{want} in {capa}");
    }
    assert!(
        !capa.contains("CRAM-MD5"),
        "a mechanism envelopd cannot read is hidden: {capa}"
    );
    assert!(capa.ends_with("\r\n.\r\n"));
}

#[test]
fn sizes_agree_with_what_retr_and_top_send() {
    let mut h = Harness::new(mailbox());
    h.login();
    let stat = h.cmd("STAT");
    let list = h.cmd("LIST");
    let (_, listing) = content(&list);
    let sizes: Vec<(u32, u64)> = String::from_utf8(listing)
        .unwrap()
        .lines()
        .map(|l| {
            let (n, s) = l.split_once(' ').unwrap();
            (n.parse().unwrap(), s.parse().unwrap())
        })
        .collect();
    assert_eq!(sizes.len(), 4);
    let total: u64 = sizes.iter().map(|s| s.1).sum();
    assert_eq!(stat, format!("+OK 4 {total}\r\n"));
    assert!(list.starts_with(&format!("+OK 4 messages ({total} octets)")));
    for (n, size) in &sizes {
        assert_eq!(h.cmd(&format!("LIST {n}")), format!("+OK {n} {size}\r\n"));
        let retr = h.cmd(&format!("RETR {n}"));
        let (status, body) = content(&retr);
        assert_eq!(status, format!("+OK {size} octets"), "message {n}");
        assert_eq!(body.len() as u64, *size, "message {n}");
        let (_, top) = content(&h.cmd(&format!("TOP {n} 0")));
        let header_end = crate::wire::header_end(&body);
        assert_eq!(top, &body[..header_end], "TOP {n} 0 is RETR's header");
        let (_, top1) = content(&h.cmd(&format!("TOP {n} 1")));
        assert_eq!(top1, crate::wire::top(&body, 1), "TOP {n} 1");
    }
    let mut text = |n| String::from_utf8(content(&h.cmd(&format!("RETR {n}"))).1).unwrap();
    assert_eq!(
        text(1),
        "From: a@x.example\r\nSubject: plain\r\n\r\nhello\r\n.hidden dot line\r\n",
        "a plain message passes as stored"
    );
    let secret = text(2);
    assert!(secret.starts_with("X-Envelopd: decrypted=test"), "{secret}");
    assert!(
        secret.contains("\r\n.dot\r\n"),
        "dot lines survive: {secret}"
    );
    let forged = text(3);
    assert_eq!(
        forged.matches("X-Envelopd:").count(),
        1,
        "the forged status is replaced: {forged}"
    );
    assert!(
        forged.starts_with("X-Envelopd: decrypted=no; signature=none"),
        "{forged}"
    );
    assert!(text(4).ends_with("last line\r\n"));
    // UIDL is the server's, unchanged.
    assert_eq!(h.cmd("UIDL 2"), "+OK 2 uid00000002\r\n");
    let (_, uidl) = content(&h.cmd("UIDL"));
    assert_eq!(
        String::from_utf8(uidl).unwrap(),
        "1 uid00000001\r\n2 uid00000002\r\n3 uid00000003\r\n4 uid00000004\r\n"
    );
}

#[test]
fn a_second_session_lists_from_what_the_first_learnt() {
    let env = env();
    let mut first = Harness::with(Server::new(mailbox()), env.clone(), "127.0.0.1");
    first.login();
    let list1 = first.cmd("LIST");
    assert_eq!(
        first.presented, 3,
        "the sealed ones and the forged one opened"
    );
    let mut second = Harness::with(Server::new(mailbox()), env.clone(), "127.0.0.1");
    second.login();
    // The same lines; the first listing's status line went out before the total was known.
    let list2 = second.cmd("LIST");
    assert_eq!(content(&list2).1, content(&list1).1);
    assert!(list1.starts_with("+OK 4 messages\r\n"), "{list1}");
    assert!(
        list2.starts_with("+OK 4 messages (359 octets)\r\n"),
        "{list2}"
    );
    assert_eq!(second.presented, 0, "nothing opened again");
    assert!(
        !second
            .server
            .received
            .iter()
            .any(|v| v == "RETR" || v == "TOP"),
        "{:?}",
        second.server.received
    );
    // A different login does not see (or reuse) the first login's shown forms.
    let mut other = Harness::with(Server::new(mailbox()), env, "127.0.0.1");
    let _ = other.run();
    other.cmd("USER v");
    other.cmd("PASS p");
    other.cmd("LIST");
    assert_eq!(other.presented, 3);
}

/// Sends LIST and drives the core by hand until it waits or ends: what the client got, how
/// many lines it had when each batch was handed out to be opened, and whether the session
/// ended. Batches are opened (`open`), or the server goes away at the first one.
fn list_by_hand(h: &mut Harness, open: bool) -> (String, Vec<usize>, bool) {
    h.core.from_client(b"LIST\r\n");
    let mut got = Vec::new();
    let mut at_batches = Vec::new();
    let closed = loop {
        match h.core.poll() {
            Step::ToClient(b) => got.extend_from_slice(&b),
            Step::ToServer(b) => {
                let reply = h.server.input(&b);
                h.core.from_server(&reply);
            }
            Step::Do(Work::Present { messages, .. }) => {
                at_batches.push(String::from_utf8_lossy(&got).lines().count());
                if !open {
                    h.core.server_closed();
                    continue;
                }
                let shown = messages
                    .into_iter()
                    .map(|m| Arc::new(show(&m.bytes)))
                    .collect();
                h.core.answer(Answer::Presented(shown));
            }
            Step::Idle => break false,
            Step::Close => break true,
            Step::Do(Work::StartTls) => unreachable!(),
        }
    };
    (String::from_utf8(got).unwrap(), at_batches, closed)
}

/// A listing that needs many messages opened is written as their sizes become known: the
/// status line and the first lines reach the client before the last batch is opened (a
/// client's read timeout does not run out on a large mailbox), and the whole is the listing
/// a second LIST gives at once. If the server goes away in the middle, the listing just stops
/// (no terminator, no -ERR line that would read as one of its lines).
#[test]
fn a_long_listing_goes_out_as_it_is_worked_out() {
    let messages: Vec<Vec<u8>> = (0..10)
        .map(|i| {
            sealed(format!("From: a@x.example\r\nSubject: {i}\r\n\r\nbody {i}\r\n").as_bytes())
        })
        .collect();
    let mut h = Harness::new(messages.clone());
    h.login();
    let (got, at_batches, closed) = list_by_hand(&mut h, true);
    assert!(!closed);
    // Batches of four (two per worker): the status line before the first, its four lines
    // before the second, eight before the third.
    assert_eq!(at_batches, vec![1, 5, 9], "{got}");
    let first = got;
    assert!(first.starts_with("+OK 10 messages\r\n"), "{first}");
    let again = h.cmd("LIST");
    assert_eq!(content(&first).1, content(&again).1);
    assert_eq!(
        content(&first).1.iter().filter(|b| **b == b'\n').count(),
        10
    );

    // The server gone in the middle of a listing: the client's listing stops unterminated.
    let mut h = Harness::new(messages);
    h.login();
    let (got, _, closed) = list_by_hand(&mut h, false);
    assert!(closed, "the session must end");
    assert_eq!(got, "+OK 10 messages\r\n", "{got}");
}

#[test]
fn dele_and_rset_are_the_servers_and_listings_follow() {
    let mut h = Harness::new(mailbox());
    h.login();
    let before = h.cmd("STAT");
    assert!(h.cmd("DELE 2").starts_with("+OK"));
    let after = h.cmd("STAT");
    assert_ne!(before, after);
    assert!(after.starts_with("+OK 3 "), "{after}");
    assert!(
        h.cmd("RETR 2").starts_with("-ERR"),
        "a deleted message is gone"
    );
    assert!(h.cmd("LIST 2").starts_with("-ERR"));
    assert!(!content(&h.cmd("LIST")).1.starts_with(b"2 "));
    assert!(h.cmd("RSET").starts_with("+OK"));
    assert_eq!(h.cmd("STAT"), before);
    assert!(h.cmd("DELE 1").starts_with("+OK"));
    assert!(h.cmd("QUIT").starts_with("+OK"));
    assert!(h.closed);
    assert_eq!(h.server.expunged, vec![1], "QUIT deletes at the server");
}

#[test]
fn closing_without_quit_deletes_nothing() {
    let mut h = Harness::new(mailbox());
    h.login();
    assert!(h.cmd("DELE 1").starts_with("+OK"));
    h.core.client_closed();
    let _ = h.run();
    assert!(h.closed);
    assert!(h.server.expunged.is_empty());
    assert!(!h.server.received.iter().any(|v| v == "QUIT"));
}

#[test]
fn pipelined_commands_are_answered_in_order() {
    let mut h = Harness::new(mailbox());
    let _ = h.run();
    let all = h.send("USER u\r\nPASS p\r\nSTAT\r\nRETR 2\r\nLIST 1\r\nNOOP\r\nQUIT\r\n");
    let expected_order = [
        "+OK\r\n",
        "+OK Logged in.",
        "+OK 4 ",
        "octets\r\n",
        "+OK 1 ",
        "+OK\r\n",
        "+OK Logging out.",
    ];
    let mut at = 0;
    for e in expected_order {
        let found = all[at..]
            .find(e)
            .unwrap_or_else(|| panic!("{e:?} after {at} in {all:?}"));
        at += found + e.len();
    }
    assert!(h.closed);
}

#[test]
fn commands_in_the_wrong_state_and_bad_arguments() {
    let mut h = Harness::new(mailbox());
    let _ = h.run();
    for c in ["STAT", "RETR 1", "LIST", "DELE 1", "UIDL", "TOP 1 0"] {
        assert!(h.cmd(c).starts_with("-ERR log in first"), "{c}");
    }
    assert!(h.cmd("PASS p").starts_with("-ERR"), "PASS before USER");
    assert!(h.cmd("XTND XMIT").starts_with("-ERR"));
    h.cmd("USER u");
    assert!(h.cmd("PASS wrong").starts_with("-ERR"));
    assert_eq!(
        h.env.failed.lock().unwrap().as_slice(),
        &[Some("u".to_string())]
    );
    h.login_again();
    for c in [
        "RETR",
        "RETR x",
        "RETR 0",
        "RETR 1 2",
        "TOP 1",
        "TOP 1 -1",
        "LIST 99999999999",
        "DELE",
        "USER u",
        "STLS",
    ] {
        assert!(h.cmd(c).starts_with("-ERR"), "{c}");
    }
    assert!(h.cmd("RETR 9").starts_with("-ERR no such message"));
    assert!(h.cmd("LIST 9").starts_with("-ERR no such message"));
    assert!(h.cmd("NOOP").starts_with("+OK"), "the session goes on");
}

impl Harness {
    fn login_again(&mut self) {
        assert!(self.cmd("USER u").starts_with("+OK"));
        assert!(self.cmd("PASS p").starts_with("+OK"));
    }
}

#[test]
fn overlong_lines_get_an_error_and_the_session_goes_on() {
    let mut h = Harness::new(mailbox());
    let _ = h.run();
    let long = "X".repeat(MAX_LINE + 10);
    let r = h.send(&format!("{long}\r\nNOOP\r\n"));
    assert!(r.starts_with("-ERR envelopd: line too long"), "{r}");
    // Sent in pieces too: bounded, then one error.
    let mut got = String::new();
    for _ in 0..10 {
        got.push_str(&h.send(&"Y".repeat(MAX_LINE / 4)));
    }
    got.push_str(&h.cmd(""));
    assert_eq!(got.matches("-ERR").count(), 1, "{got}");
    h.login_again();
}

#[test]
fn passwords_do_not_cross_the_network_in_the_clear() {
    let mut h = Harness::with(Server::new(mailbox()), env(), "192.0.2.7");
    let _ = h.run();
    let capa = h.cmd("CAPA");
    assert!(!capa.contains("USER") && !capa.contains("SASL"), "{capa}");
    assert!(capa.contains("STLS"));
    assert!(h.cmd("USER u").starts_with("-ERR [AUTH] use STLS first"));
    assert!(h
        .cmd("AUTH PLAIN AHUAcA==")
        .starts_with("-ERR [AUTH] use STLS first"));
    assert!(h.server.received.iter().all(|v| v != "USER" && v != "AUTH"));
    // Plaintext pipelined behind STLS is dropped, not obeyed under TLS.
    let r = h.send("STLS\r\nUSER u\r\n");
    assert_eq!(r, "+OK Begin TLS negotiation\r\n");
    assert!(h.server.received.iter().all(|v| v != "USER"));
    let capa = h.cmd("CAPA");
    assert!(capa.contains("USER") && !capa.contains("STLS"), "{capa}");
    h.login_again();
    assert!(h.cmd("STAT").starts_with("+OK 4"));
}

#[test]
fn a_locked_login_is_refused_before_the_server_sees_it() {
    let env = Arc::new(TestEnv {
        cache: Mutex::new(Cache::new(1 << 20)),
        locked: true,
        failed: Mutex::new(Vec::new()),
    });
    let mut h = Harness::with(Server::new(mailbox()), env, "127.0.0.1");
    let _ = h.run();
    assert!(h
        .cmd("USER u")
        .starts_with("-ERR [SYS/TEMP] too many failed logins"));
    assert!(h.cmd("AUTH PLAIN AHUAcA==").starts_with("-ERR [SYS/TEMP]"));
    assert!(h.server.received.is_empty());
}

#[test]
fn sasl_plain_with_and_without_initial_response() {
    let mut h = Harness::new(mailbox());
    let _ = h.run();
    // "\0u\0p"
    assert!(h.cmd("AUTH PLAIN AHUAcA==").starts_with("+OK"));
    assert_eq!(h.core.login(), Some("u"));
    let mut h = Harness::new(mailbox());
    let _ = h.run();
    assert_eq!(h.cmd("AUTH PLAIN"), "+ \r\n");
    assert!(h.cmd("AHUAcA==").starts_with("+OK"));
    assert_eq!(h.core.login(), Some("u"));
    assert!(h.cmd("STAT").starts_with("+OK 4"));
    // Cancelled: the server's answer, and the session can log in again.
    let mut h = Harness::new(mailbox());
    let _ = h.run();
    assert_eq!(h.cmd("AUTH PLAIN"), "+ \r\n");
    assert!(h.cmd("*").starts_with("-ERR"));
    assert_eq!(h.core.login(), None);
    assert!(h
        .cmd("AUTH CRAM-MD5")
        .starts_with("-ERR [AUTH] mechanism not available"));
    h.login_again();
}

#[test]
fn a_server_that_lies_about_sizes_or_closes_mid_retr() {
    // Sizes: envelopd lists what it sends for shown messages; plain ones are the server's.
    let mut server = Server::new(mailbox());
    server.size_lie = 5;
    let mut h = Harness::with(server, env(), "127.0.0.1");
    h.login();
    let (_, listing) = content(&h.cmd("LIST"));
    let listing = String::from_utf8(listing).unwrap();
    let size2: u64 = listing
        .lines()
        .nth(1)
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let (_, body) = content(&h.cmd("RETR 2"));
    assert_eq!(body.len() as u64, size2);
    // Closed in the middle of a reply: the client gets no terminator, the session ends.
    let mut h = Harness::new(mailbox());
    h.login();
    h.core.from_client(b"RETR 1\r\n");
    let mut got = Vec::new();
    loop {
        match h.core.poll() {
            Step::ToServer(b) => {
                let reply = h.server.input(&b);
                h.core.from_server(&reply[..reply.len() / 2]);
                h.core.server_closed();
            }
            Step::ToClient(b) => got.extend_from_slice(&b),
            Step::Close => break,
            Step::Idle => panic!("the session must end"),
            Step::Do(_) => unreachable!(),
        }
    }
    assert!(
        !got.ends_with(b"\r\n.\r\n"),
        "a cut reply is not made complete"
    );
    // Closed while envelopd waits: the client is told.
    let mut h = Harness::new(mailbox());
    h.login();
    h.core.from_client(b"STAT\r\n");
    let mut got = Vec::new();
    loop {
        match h.core.poll() {
            Step::ToServer(_) => h.core.server_closed(),
            Step::ToClient(b) => got.extend_from_slice(&b),
            Step::Close => break,
            other => panic!("{other:?}"),
        }
    }
    assert!(String::from_utf8_lossy(&got)
        .starts_with("-ERR [SYS/TEMP] envelopd: the mail server closed"));
}

#[test]
fn a_server_without_pipelining_gets_one_command_at_a_time() {
    let mut server = Server::new(mailbox());
    server.pipelining = false;
    let mut h = Harness::with(server, env(), "127.0.0.1");
    h.login();
    // The harness answers each write at once; one request per write proves the window.
    h.core.from_client(b"LIST\r\n");
    let mut writes = 0;
    loop {
        match h.core.poll() {
            Step::ToServer(b) => {
                writes += 1;
                assert_eq!(
                    memchr::memchr_iter(b'\n', &b).count(),
                    1,
                    "{}",
                    String::from_utf8_lossy(&b)
                );
                let reply = h.server.input(&b);
                h.core.from_server(&reply);
            }
            Step::Do(Work::Present { messages, .. }) => {
                let shown = messages.iter().map(|m| Arc::new(show(&m.bytes))).collect();
                h.core.answer(Answer::Presented(shown));
            }
            Step::ToClient(_) => {}
            Step::Idle => break,
            other => panic!("{other:?}"),
        }
    }
    assert!(writes >= 2 + 4, "{writes} writes: {:?}", h.server.received);
}

#[test]
fn a_message_too_large_to_open_stays_on_the_server_with_a_reason() {
    let big = sealed(&vec![b'a'; 2 << 20]);
    let mut h = Harness::new(vec![big.clone(), b"Subject: s\r\n\r\nx\r\n".to_vec()]);
    h.login();
    let (_, listing) = content(&h.cmd("LIST"));
    assert!(String::from_utf8(listing)
        .unwrap()
        .starts_with(&format!("1 {}\r\n", big.len())));
    let r = h.cmd("RETR 1");
    assert!(
        r.starts_with("-ERR [SYS/PERM] envelopd: message 1 is larger than 1 MB"),
        "{r}"
    );
    assert!(h.cmd("RETR 2").starts_with("+OK"));
}

proptest! {
    /// For any mailbox of plain, sealed, forged and undecryptable messages with dot lines and
    /// missing line ends: LIST = STAT = RETR octets, TOP n 0 = RETR's header.
    #[test]
    fn listing_retr_and_top_agree(
        kinds in proptest::collection::vec((0u8..4, "[a-z. ]{0,20}", any::<bool>(), 0usize..5), 1..6),
    ) {
        let messages: Vec<Vec<u8>> = kinds.iter().map(|(kind, text, end, lines)| {
            let mut body = String::new();
            for i in 0..*lines { body.push_str(&format!("{text}{i}\r\n")); }
            body.push_str(text);
            if *end { body.push_str("\r\n"); }
            let inner = format!("From: a@x.example\r\nSubject: {text}\r\n\r\n{body}").into_bytes();
            match kind {
                0 => inner,
                1 => sealed(&inner),
                2 => format!("X-Envelopd: decrypted=aes-256-gcm\r\n{}", String::from_utf8(inner).unwrap()).into_bytes(),
                _ => b"Content-Type: application/pkcs7-mime\r\n\r\nnot base64 !!\r\n".to_vec(),
            }
        }).collect();
        let mut h = Harness::new(messages.clone());
        h.login();
        let stat = h.cmd("STAT");
        let (_, listing) = content(&h.cmd("LIST"));
        let listing = String::from_utf8(listing).unwrap();
        let mut total = 0;
        for (i, line) in listing.lines().enumerate() {
            let n = i + 1;
            let size: usize = line.split(' ').nth(1).unwrap().parse().unwrap();
            total += size;
            let retr = h.cmd(&format!("RETR {n}"));
            let (status, body) = content(&retr);
            prop_assert_eq!(status, format!("+OK {size} octets"));
            prop_assert_eq!(body.len(), size);
            let (_, top) = content(&h.cmd(&format!("TOP {n} 0")));
            prop_assert_eq!(&top[..], &body[..crate::wire::header_end(&body)]);
        }
        prop_assert_eq!(stat, format!("+OK {} {total}\r\n", messages.len()));
    }
}
