//! The SMTP core without sockets or a runtime: a scripted provider answers its work, the
//! transcript records what the client would read and what the provider would be asked.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proptest::prelude::*;

use super::*;

/// The failed-login lock and sender binding, recorded.
#[derive(Default)]
struct TestGate {
    failed: Mutex<Vec<Option<String>>>,
    locked: bool,
}

impl Gate for TestGate {
    fn refuse_sender(&self, login: &str, address: &str) -> Option<Reply> {
        (address.starts_with("doctor@") && login != "doctor@praxis.example")
            .then(|| Reply::new(550, "5.7.1", format!("{login} may not send as {address}")))
    }
    fn locked(&self, _peer: IpAddr, _login: Option<&str>) -> Option<Duration> {
        self.locked.then_some(Duration::from_secs(600))
    }
    fn login_failed(&self, _peer: IpAddr, login: Option<&str>) {
        self.failed.lock().unwrap().push(login.map(str::to_string));
    }
}

/// A provider answering the core's work, and the transcript of one session.
struct Sim {
    core: Core,
    gate: Arc<TestGate>,
    caps: Vec<&'static str>,
    reachable: bool,
    /// Replies to hand out instead of the provider's usual ones, in order.
    scripted: VecDeque<Result<Reply, Reply>>,
    /// What the provider was asked, in order ("connect", "MAIL FROM:<a>|RCPT TO:<b>", …).
    asked: Vec<String>,
    /// Secret lines the provider saw (to check what passed through).
    secrets: Vec<Vec<u8>>,
    delivered: Vec<Delivery>,
    closed: bool,
    dropped: usize,
    tls_ok: bool,
}

const CAPS: &[&str] = &[
    "PIPELINING",
    "SIZE 10000000",
    "AUTH PLAIN LOGIN",
    "8BITMIME",
    "SMTPUTF8",
    "DSN",
];

fn config(peer: &str, starttls: bool) -> Config {
    Config {
        hostname: "envelopd.test".into(),
        starttls,
        secure: false,
        peer: peer.parse().unwrap(),
        require_auth: false,
        max_size: 1_000_000,
        max_recipients: 5,
    }
}

impl Sim {
    fn new() -> Self {
        Self::with(config("127.0.0.1", true), CAPS)
    }

    fn with(cfg: Config, caps: &[&'static str]) -> Self {
        let gate = Arc::new(TestGate::default());
        Sim {
            core: Core::new(cfg, gate.clone()),
            gate,
            caps: caps.to_vec(),
            reachable: true,
            scripted: VecDeque::new(),
            asked: Vec::new(),
            secrets: Vec::new(),
            delivered: Vec::new(),
            closed: false,
            dropped: 0,
            tls_ok: true,
        }
    }

    fn provider_reply(&mut self, line: &str) -> Result<Reply, Reply> {
        if let Some(r) = self.scripted.pop_front() {
            return r;
        }
        Ok(if line.contains("refused@") {
            Reply::new(550, "5.1.1", "no such user")
        } else {
            Reply::new(250, "2.0.0", "ok")
        })
    }

    fn auth_reply(&mut self, line: &[u8]) -> Result<Reply, Reply> {
        if let Some(r) = self.scripted.pop_front() {
            return r;
        }
        let text = String::from_utf8_lossy(line).to_string();
        Ok(match text.as_str() {
            "AUTH LOGIN" => Reply::new(334, "", "VXNlcm5hbWU6"),
            // base64("doctor@praxis.example")
            "ZG9jdG9yQHByYXhpcy5leGFtcGxl" => Reply::new(334, "", "UGFzc3dvcmQ6"),
            // base64("secret")
            "c2VjcmV0" => Reply::new(235, "2.7.0", "accepted"),
            "*" => Reply::new(501, "5.7.0", "cancelled"),
            t if t.starts_with("AUTH PLAIN ") => {
                // base64("\0doctor@praxis.example\0secret")
                if t.ends_with("AGRvY3RvckBwcmF4aXMuZXhhbXBsZQBzZWNyZXQ=") {
                    Reply::new(235, "2.7.0", "accepted")
                } else {
                    Reply::new(535, "5.7.8", "bad credentials")
                }
            }
            _ => Reply::new(535, "5.7.8", "bad credentials"),
        })
    }

    /// Runs the core until it wants input (or closes); returns what the client read.
    fn run(&mut self) -> String {
        let mut out = Vec::new();
        loop {
            match self.core.poll() {
                Step::Send(b) => out.extend_from_slice(&b),
                Step::Read { .. } => break,
                Step::Close => {
                    self.closed = true;
                    break;
                }
                Step::DropProvider => self.dropped += 1,
                Step::Do(work) => {
                    let answer = match work {
                        Work::Connect => {
                            self.asked.push("connect".into());
                            if self.reachable {
                                Answer::Connected(ProviderInfo::from_capabilities(
                                    self.caps.iter().map(|c| c.to_string()).collect(),
                                ))
                            } else {
                                Answer::Unreachable(Reply::new(451, "4.4.1", "provider down"))
                            }
                        }
                        Work::Relay(lines) => {
                            self.asked.push(lines.join("|"));
                            Answer::Replies(lines.iter().map(|l| self.provider_reply(l)).collect())
                        }
                        Work::Secret(line) => {
                            self.asked.push("secret".into());
                            self.secrets.push(line.to_vec());
                            Answer::Replies(vec![self.auth_reply(&line)])
                        }
                        Work::StartTls => {
                            self.asked.push("starttls".into());
                            Answer::Tls(self.tls_ok)
                        }
                        Work::Deliver(d) => {
                            self.asked.push(format!("deliver {}", d.rcpts.join(",")));
                            let reply = Reply::new(
                                250,
                                "2.0.0",
                                format!("queued {} bytes", d.message.len()),
                            );
                            self.delivered.push(*d);
                            Answer::Delivered {
                                reply,
                                provider_lost: false,
                            }
                        }
                    };
                    self.core.answer(answer);
                }
            }
        }
        String::from_utf8(out).unwrap()
    }

    fn say(&mut self, bytes: &str) -> String {
        self.core.receive(bytes.as_bytes());
        self.run()
    }

    fn start(&mut self) -> String {
        let greeting = self.run();
        assert!(
            greeting.starts_with("220 envelopd.test ESMTP"),
            "{greeting}"
        );
        self.say("EHLO client\r\n")
    }
}

fn codes(text: &str) -> Vec<u16> {
    text.lines()
        .filter(|l| l.len() > 3 && l.as_bytes()[3] == b' ')
        .map(|l| l[..3].parse().unwrap())
        .collect()
}

#[test]
fn ehlo_offers_what_the_provider_has_and_what_envelopd_adds() {
    let mut sim = Sim::new();
    let ehlo = sim.start();
    for keyword in [
        "SIZE",
        "8BITMIME",
        "PIPELINING",
        "CHUNKING",
        "SMTPUTF8",
        "DSN",
        "STARTTLS",
        "AUTH PLAIN LOGIN",
    ] {
        assert!(ehlo.contains(keyword), "{keyword} missing: {ehlo}");
    }
    assert_eq!(sim.asked, ["connect"]);
    // SIZE leaves room for base64 and the signature under the provider's 10 MB; ours is less.
    assert!(ehlo.contains("250-SIZE 1000000\r\n"), "{ehlo}");

    let mut bare = Sim::with(config("127.0.0.1", false), &["SIZE 1000000", "AUTH LOGIN"]);
    let ehlo = bare.start();
    for absent in ["SMTPUTF8", "DSN", "STARTTLS", "PLAIN"] {
        assert!(!ehlo.contains(absent), "{absent} offered: {ehlo}");
    }
    assert!(ehlo.contains("AUTH LOGIN"), "{ehlo}");
    // The provider's 1 MB, less the room for base64 and a signature.
    assert!(
        ehlo.contains(&format!("SIZE {}", (1_000_000 - 65536) / 4 * 3)),
        "{ehlo}"
    );
}

#[test]
fn an_unreachable_provider_still_gets_ehlo_and_mail_says_why() {
    let mut sim = Sim::new();
    sim.reachable = false;
    let ehlo = sim.start();
    assert_eq!(codes(&ehlo), [250]);
    let r = sim.say("MAIL FROM:<a@praxis.example>\r\n");
    assert!(r.starts_with("451 4.4.1 provider down"), "{r}");
    // Each command that needs the provider tries again.
    assert_eq!(sim.asked, ["connect", "connect"]);
    sim.reachable = true;
    let r = sim.say("MAIL FROM:<a@praxis.example>\r\n");
    assert_eq!(codes(&r), [250]);
}

#[test]
fn a_pipelined_envelope_goes_to_the_provider_in_one_write_and_gets_replies_in_order() {
    let mut sim = Sim::new();
    sim.start();
    let r = sim.say(
        "MAIL FROM:<a@praxis.example>\r\nRCPT TO:<b@x.example>\r\nRCPT TO:<refused@x.example>\r\nRCPT TO:<c@x.example>\r\nDATA\r\n",
    );
    assert_eq!(
        sim.asked[1],
        "MAIL FROM:<a@praxis.example>|RCPT TO:<b@x.example>|RCPT TO:<refused@x.example>|RCPT TO:<c@x.example>"
    );
    assert_eq!(codes(&r), [250, 250, 550, 250, 354]);
    let r = sim.say("Subject: hi\r\n\r\n..dot\r\n.\r\n");
    assert_eq!(codes(&r), [250]);
    let d = &sim.delivered[0];
    assert_eq!(d.rcpts, ["b@x.example", "c@x.example"]);
    assert_eq!(d.message, b"Subject: hi\r\n\r\n.dot\r\n");
    assert_eq!(d.from, "a@praxis.example");
}

#[test]
fn without_provider_pipelining_each_rcpt_goes_alone() {
    let mut sim = Sim::with(config("127.0.0.1", false), &["AUTH PLAIN"]);
    sim.start();
    let r =
        sim.say("MAIL FROM:<a@p.example>\r\nRCPT TO:<b@x.example>\r\nRCPT TO:<c@x.example>\r\n");
    assert_eq!(codes(&r), [250, 250, 250]);
    assert_eq!(
        &sim.asked[1..],
        [
            "MAIL FROM:<a@p.example>",
            "RCPT TO:<b@x.example>",
            "RCPT TO:<c@x.example>"
        ]
    );
}

#[test]
fn every_split_of_a_session_gives_the_same_replies() {
    let session = "EHLO c\r\nMAIL FROM:<a@p.example>\r\nRCPT TO:<b@x.example>\r\nDATA\r\nline\r\n..x\r\n.\r\nNOOP\r\nQUIT\r\n";
    let whole = {
        let mut sim = Sim::new();
        sim.run();
        sim.say(session)
    };
    assert_eq!(codes(&whole), [250, 250, 250, 354, 250, 250, 221]);
    proptest!(ProptestConfig::with_cases(64), |(cuts in proptest::collection::vec(0..session.len(), 0..12))| {
        let mut cuts = cuts;
        cuts.sort();
        cuts.dedup();
        let mut sim = Sim::new();
        sim.run();
        let mut got = String::new();
        let mut at = 0;
        for c in cuts.into_iter().chain([session.len()]) {
            got.push_str(&sim.say(&session[at..c]));
            at = c;
        }
        prop_assert_eq!(&got, &whole);
        prop_assert_eq!(&sim.delivered[0].message, b"line\r\n.x\r\n");
        prop_assert!(sim.closed);
    });
}

#[test]
fn starttls_forgets_everything_and_drops_injected_plaintext() {
    let mut sim = Sim::new();
    sim.start();
    let r = sim.say("AUTH PLAIN AGRvY3RvckBwcmF4aXMuZXhhbXBsZQBzZWNyZXQ=\r\n");
    assert_eq!(codes(&r), [235]);
    assert_eq!(sim.core.login(), Some("doctor@praxis.example"));
    // CVE-2011-0411: a command sent in the clear right behind STARTTLS must not run under TLS.
    let r = sim.say("STARTTLS\r\nMAIL FROM:<injected@evil.example>\r\n");
    assert_eq!(codes(&r), [220]);
    assert!(sim.core.secure());
    assert_eq!(sim.core.login(), None);
    assert!(!sim.asked.iter().any(|a| a.contains("injected")));
    // EHLO must come again, and AUTH is offered again (STARTTLS no longer).
    let r = sim.say("MAIL FROM:<a@p.example>\r\n");
    assert!(r.starts_with("503 5.5.1 say EHLO first"), "{r}");
    let ehlo = sim.say("EHLO client\r\n");
    assert!(
        ehlo.contains("AUTH PLAIN LOGIN") && !ehlo.contains("STARTTLS"),
        "{ehlo}"
    );
    let r = sim.say("STARTTLS\r\n");
    assert!(r.starts_with("454"), "{r}");
}

#[test]
fn starttls_with_an_open_transaction_resets_it_at_the_provider() {
    let mut sim = Sim::new();
    sim.start();
    sim.say("MAIL FROM:<a@p.example>\r\n");
    sim.say("STARTTLS\r\n");
    assert_eq!(sim.asked.last().unwrap(), "RSET");
    sim.say("EHLO again\r\n");
    let r = sim.say("RCPT TO:<b@x.example>\r\n");
    assert!(r.starts_with("503 5.5.1 need MAIL"), "{r}");
}

#[test]
fn a_failed_handshake_ends_the_session() {
    let mut sim = Sim::new();
    sim.start();
    sim.tls_ok = false;
    sim.say("STARTTLS\r\n");
    assert!(sim.closed);
}

#[test]
fn auth_login_passes_through_line_by_line_and_names_the_login() {
    let mut sim = Sim::new();
    sim.start();
    let r = sim.say("AUTH LOGIN\r\n");
    assert_eq!(r, "334 VXNlcm5hbWU6\r\n");
    let r = sim.say("ZG9jdG9yQHByYXhpcy5leGFtcGxl\r\n");
    assert_eq!(r, "334 UGFzc3dvcmQ6\r\n");
    let r = sim.say("c2VjcmV0\r\n");
    assert!(r.starts_with("235 2.7.0"), "{r}");
    assert_eq!(sim.core.login(), Some("doctor@praxis.example"));
    assert_eq!(
        sim.secrets,
        [
            &b"AUTH LOGIN"[..],
            b"ZG9jdG9yQHByYXhpcy5leGFtcGxl",
            b"c2VjcmV0"
        ]
    );
    let r = sim.say("AUTH LOGIN\r\n");
    assert!(r.starts_with("503 5.5.1 already"), "{r}");
    let ehlo = sim.say("EHLO c\r\n");
    assert!(!ehlo.contains("AUTH"), "{ehlo}");
}

#[test]
fn a_refused_login_is_counted_and_a_lock_refuses_before_the_provider() {
    let mut sim = Sim::new();
    sim.start();
    // base64("\0doctor@praxis.example\0wrong")
    let r = sim.say("AUTH PLAIN AGRvY3RvckBwcmF4aXMuZXhhbXBsZQB3cm9uZw==\r\n");
    assert_eq!(codes(&r), [535]);
    assert_eq!(sim.core.login(), None);
    assert_eq!(
        *sim.gate.failed.lock().unwrap(),
        [Some("doctor@praxis.example".to_string())]
    );

    let mut locked = Sim::new();
    locked.gate = Arc::new(TestGate {
        locked: true,
        ..Default::default()
    });
    locked.core = Core::new(config("127.0.0.1", true), locked.gate.clone());
    locked.start();
    let asked = locked.asked.len();
    let r = locked.say("AUTH PLAIN AGRvY3RvckBwcmF4aXMuZXhhbXBsZQBzZWNyZXQ=\r\n");
    assert!(r.starts_with("454 4.7.0 too many failed logins"), "{r}");
    assert_eq!(locked.asked.len(), asked, "the provider was asked");
}

#[test]
fn auth_in_the_clear_off_this_machine_is_refused_and_not_offered() {
    let mut sim = Sim::with(config("192.0.2.7", true), CAPS);
    let ehlo = sim.start();
    assert!(!ehlo.contains("AUTH"), "{ehlo}");
    let r = sim.say("AUTH PLAIN AGRvY3RvckBwcmF4aXMuZXhhbXBsZQBzZWNyZXQ=\r\n");
    assert!(r.starts_with("538 5.7.11"), "{r}");
    assert!(sim.secrets.is_empty());
}

#[test]
fn an_overlong_auth_line_drops_the_half_done_provider_exchange() {
    let mut sim = Sim::new();
    sim.start();
    sim.say("AUTH LOGIN\r\n");
    let long = "A".repeat(MAX_AUTH_LINE + 10);
    let r = sim.say(&format!("{long}\r\n"));
    assert!(r.starts_with("500 5.5.6"), "{r}");
    assert_eq!(sim.dropped, 1);
    // The next command needs the provider again: a fresh connection.
    sim.say("MAIL FROM:<a@p.example>\r\n");
    assert_eq!(sim.asked.last().unwrap(), "MAIL FROM:<a@p.example>");
    assert_eq!(sim.asked.iter().filter(|a| *a == "connect").count(), 2);
}

#[test]
fn the_provider_hanging_up_mid_auth_is_a_4xx_and_a_fresh_connection_later() {
    let mut sim = Sim::new();
    sim.start();
    sim.scripted
        .push_back(Err(Reply::new(451, "4.4.1", "provider connection lost")));
    let r = sim.say("AUTH LOGIN\r\n");
    assert!(r.starts_with("451 4.4.1"), "{r}");
    assert_eq!(sim.dropped, 1);
}

#[test]
fn a_login_may_not_send_as_another_users_identity() {
    let mut sim = Sim::new();
    sim.start();
    // base64("\0nurse@praxis.example\0secret") is refused by the script: log in as doctor,
    // then try the binding the other way round with a login the gate refuses.
    sim.say("AUTH PLAIN AGRvY3RvckBwcmF4aXMuZXhhbXBsZQBzZWNyZXQ=\r\n");
    let r = sim.say("MAIL FROM:<doctor@praxis.example>\r\n");
    assert_eq!(codes(&r), [250]);
    sim.say("RSET\r\n");
    let mut other = Sim::new();
    other.start();
    other.scripted.push_back(Ok(Reply::new(235, "2.7.0", "ok")));
    // base64("\0nurse@praxis.example\0pw")
    other.say("AUTH PLAIN AG51cnNlQHByYXhpcy5leGFtcGxlAHB3\r\n");
    assert_eq!(other.core.login(), Some("nurse@praxis.example"));
    let r = other.say("MAIL FROM:<doctor@praxis.example>\r\n");
    assert!(
        r.starts_with("550 5.7.1 nurse@praxis.example may not send as"),
        "{r}"
    );
}

#[test]
fn require_auth_refuses_mail_before_login() {
    let mut cfg = config("127.0.0.1", false);
    cfg.require_auth = true;
    let mut sim = Sim::with(cfg, CAPS);
    sim.start();
    let r = sim.say("MAIL FROM:<a@p.example>\r\n");
    assert!(r.starts_with("530 5.7.0"), "{r}");
}

#[test]
fn the_recipient_limit_defers_the_rest() {
    let mut sim = Sim::new();
    sim.start();
    let rcpts: String = (0..7)
        .map(|i| format!("RCPT TO:<r{i}@x.example>\r\n"))
        .collect();
    let r = sim.say(&format!("MAIL FROM:<a@p.example>\r\n{rcpts}"));
    assert_eq!(codes(&r), [250, 250, 250, 250, 250, 250, 452, 452]);
    assert_eq!(sim.asked[1].matches("RCPT").count(), 5);
}

#[test]
fn mail_parameters_reach_the_provider_only_as_it_understands_them() {
    let mut sim = Sim::new();
    sim.start();
    sim.say("MAIL FROM:<a@p.example> BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=x1\r\n");
    assert_eq!(
        sim.asked[1],
        "MAIL FROM:<a@p.example> BODY=8BITMIME RET=HDRS ENVID=x1 SMTPUTF8"
    );
    let mut plain = Sim::with(config("127.0.0.1", false), &["PIPELINING"]);
    plain.start();
    let r = plain.say("MAIL FROM:<a@p.example> BODY=8BITMIME RET=HDRS\r\n");
    assert_eq!(codes(&r), [250]);
    assert_eq!(plain.asked[1], "MAIL FROM:<a@p.example>");
    plain.say("RSET\r\n");
    let r = plain.say("MAIL FROM:<a@p.example> SMTPUTF8\r\n");
    assert!(r.starts_with("555 5.5.4 SMTPUTF8"), "{r}");
}

#[test]
fn oversized_data_is_read_to_the_end_refused_and_reset() {
    let mut cfg = config("127.0.0.1", false);
    cfg.max_size = 100;
    let mut sim = Sim::with(cfg, &["PIPELINING"]);
    sim.start();
    sim.say("MAIL FROM:<a@p.example>\r\nRCPT TO:<b@x.example>\r\n");
    let r = sim.say(&format!("DATA\r\n{}\r\n.\r\nNOOP\r\n", "x".repeat(500)));
    assert_eq!(codes(&r), [354, 552, 250]);
    assert!(sim.delivered.is_empty());
    assert_eq!(sim.asked.last().unwrap(), "RSET");
    let r = sim.say("MAIL FROM:<a@p.example> SIZE=500\r\n");
    assert!(r.starts_with("552 5.3.4"), "{r}");
}

#[test]
fn bdat_chunks_are_joined_and_a_foreign_command_aborts_them() {
    let mut sim = Sim::new();
    sim.start();
    sim.say("MAIL FROM:<a@p.example>\r\nRCPT TO:<b@x.example>\r\n");
    let r = sim.say("BDAT 6\r\nHello BDAT 7 LAST\r\nworld\r\n");
    assert_eq!(codes(&r), [250, 250]);
    assert_eq!(sim.delivered[0].message, b"Hello world\r\n");

    sim.say("MAIL FROM:<a@p.example>\r\nRCPT TO:<b@x.example>\r\n");
    let r = sim.say("BDAT 3\r\nabcDATA\r\n");
    assert_eq!(codes(&r), [250, 503]);
    assert_eq!(sim.asked.last().unwrap(), "RSET");
    let r = sim.say("BDAT 2 LAST\r\nab");
    assert!(r.starts_with("503 5.5.1 need MAIL before BDAT"), "{r}");
    // The refused chunk's bytes were read past, not taken for a command.
    let r = sim.say("NOOP\r\n");
    assert_eq!(codes(&r), [250]);
    assert_eq!(sim.delivered.len(), 1);
}

#[test]
fn a_client_leaving_mid_data_never_completes_the_provider_transaction() {
    let mut sim = Sim::new();
    sim.start();
    sim.say("MAIL FROM:<a@p.example>\r\nRCPT TO:<b@x.example>\r\nDATA\r\nhalf a mess");
    sim.core.client_closed();
    sim.run();
    assert!(sim.closed);
    assert_eq!(sim.dropped, 1);
    assert!(sim.delivered.is_empty());
}

#[test]
fn shutdown_and_timeouts_say_421_and_close() {
    let mut sim = Sim::new();
    sim.start();
    sim.core.shutting_down();
    let r = sim.run();
    assert!(r.starts_with("421 4.3.2"), "{r}");
    assert!(sim.closed);
    assert_eq!(sim.dropped, 0);

    let mut sim = Sim::new();
    sim.start();
    sim.say("MAIL FROM:<a@p.example>\r\nRCPT TO:<b@x.example>\r\nDATA\r\n");
    sim.core.timed_out();
    let r = sim.run();
    assert!(r.starts_with("421 4.4.2"), "{r}");
    assert_eq!(sim.dropped, 1);
}

#[test]
fn a_partial_command_line_is_reported_so_the_driver_can_time_the_whole_line() {
    let mut sim = Sim::new();
    sim.start();
    sim.core.receive(b"NO");
    let step = sim.core.poll();
    assert!(
        matches!(
            step,
            Step::Read {
                between_commands: true,
                partial: true
            }
        ),
        "{step:?}"
    );
    sim.core.receive(b"OP\r\n");
    assert!(matches!(sim.core.poll(), Step::Send(_)));
    assert!(matches!(
        sim.core.poll(),
        Step::Read {
            between_commands: true,
            partial: false
        }
    ));
}

#[test]
fn bad_commands_get_errors_and_the_session_goes_on() {
    let mut sim = Sim::new();
    sim.start();
    let long = "X".repeat(5000);
    let r = sim.say(&format!(
        "FOO\r\nMAIL FROM:<no-at>\r\nRCPT TO:<b@x.example>\r\nDATA\r\nEXPN list\r\n{long}\r\nHELO again\r\n"
    ));
    let c = codes(&r);
    assert_eq!(c[0], 500);
    assert!(c.contains(&503) && c.last() == Some(&250), "{r}");
    assert!(!sim.closed);
}

#[test]
fn a_provider_lost_mid_envelope_gives_4xx_and_a_new_connection_next_time() {
    let mut sim = Sim::new();
    sim.start();
    sim.scripted
        .push_back(Err(Reply::new(451, "4.4.1", "provider connection lost")));
    let r = sim.say("MAIL FROM:<a@p.example>\r\n");
    assert!(r.starts_with("451"), "{r}");
    assert_eq!(sim.dropped, 1);
    let r = sim.say("MAIL FROM:<a@p.example>\r\n");
    assert_eq!(codes(&r), [250]);
    assert_eq!(sim.asked.iter().filter(|a| *a == "connect").count(), 2);
}

#[test]
fn an_answer_nobody_asked_for_ends_the_session() {
    let mut sim = Sim::new();
    sim.start();
    sim.core.answer(Answer::Tls(true));
    sim.run();
    assert!(sim.closed);
    assert!(!sim.core.secure());
}

#[test]
fn ehlo_or_helo_in_a_transaction_resets_it_at_the_provider() {
    for greeting in ["EHLO again\r\n", "HELO again\r\n"] {
        let mut sim = Sim::new();
        sim.start();
        sim.say("MAIL FROM:<a@p.example>\r\nRCPT TO:<b@x.example>\r\n");
        let r = sim.say(greeting);
        assert_eq!(sim.asked.last().unwrap(), "RSET", "{greeting}");
        assert_eq!(codes(&r), [250]);
        let r = sim.say("DATA\r\n");
        assert!(r.starts_with("503 5.5.1 need MAIL"), "{r}");
    }
}
