//! Entry point shared by the `cargo fuzz` target `smtp` in `fuzz/` and the corpus replay test,
//! so that both exercise exactly the same code on untrusted input.
//!
//! The fuzzer plays the mail program against the sans-I/O [`crate::core`], in process: no
//! runtime, no sockets. Its work is answered by an always-willing provider written here (EHLO
//! with AUTH and the usual extensions, any login after a LOGIN exchange, any sender and
//! recipient), and each delivered message goes through the real policy and
//! [`crate::outgoing::copies`] with an empty certificate store, so commands, AUTH exchanges,
//! DATA, BDAT and the message parsing behind them are all reached.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::core::{Answer, Config, Core, Delivery, Gate, ProviderInfo, Step, Work};
use crate::upstream::Reply;

struct Nobody;

impl Gate for Nobody {
    fn refuse_sender(&self, _login: &str, address: &str) -> Option<Reply> {
        address
            .starts_with("doctor@")
            .then(|| Reply::new(550, "5.7.1", "not yours"))
    }
    fn locked(&self, _peer: IpAddr, login: Option<&str>) -> Option<Duration> {
        (login == Some("locked")).then_some(Duration::from_secs(60))
    }
    fn login_failed(&self, _peer: IpAddr, _login: Option<&str>) {}
}

/// What the policy and the S/MIME core make of one message (no keys, no certificates: the
/// policy's fallback decides), through the daemon's own [`crate::deliver::prepare`], as the
/// provider's reply.
fn deliver(d: &Delivery) -> Reply {
    let store = certstore::CertStore::new();
    let ids = crate::session::SessionIdentities::new(&[], d.login.as_deref(), &store);
    let facts = policy::MessageFacts::from_message(&d.message, d.rcpts.clone());
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let rules = crate::session::Rules {
        policy: policy::PolicyConfig::default(),
        header_protection: crate::outgoing::HeaderProtection {
            enabled: true,
            legacy_display: false,
        },
        refuse_foreign_sender: true,
    };
    let (prepared, _) = crate::deliver::prepare(
        d.message.clone(),
        &d.rcpts,
        &facts,
        &store,
        &ids,
        &rules,
        true,
        now,
    );
    match prepared {
        Ok(out) => Reply::new(250, "2.0.0", format!("queued {} copies", out.len())),
        Err(crate::outgoing::Refusal::Policy {
            code,
            enhanced,
            text,
        }) => Reply::new(code, enhanced, text),
        Err(crate::outgoing::Refusal::Crypto(e)) => Reply::new(451, "4.7.0", e.to_string()),
    }
}

fn provider(work: Work, secrets: &mut usize) -> Answer {
    match work {
        Work::Connect => Answer::Connected(ProviderInfo::from_capabilities(
            [
                "AUTH PLAIN LOGIN",
                "8BITMIME",
                "SMTPUTF8",
                "PIPELINING",
                "DSN",
                "SIZE 2000000",
            ]
            .map(String::from)
            .to_vec(),
        )),
        Work::Relay(lines) => Answer::Replies(
            lines
                .iter()
                .map(|l| {
                    Ok(if l.contains("@refused") {
                        Reply::new(550, "5.1.1", "no")
                    } else {
                        Reply::new(250, "2.0.0", "ok")
                    })
                })
                .collect(),
        ),
        Work::Secret(line) => {
            *secrets += 1;
            let r = if line.as_slice() == b"AUTH LOGIN" || (*secrets % 3 == 2) {
                Reply::new(334, "", "VXNlcm5hbWU6")
            } else if line.ends_with(b"=") {
                Reply::new(535, "5.7.8", "no")
            } else {
                Reply::new(235, "2.7.0", "ok")
            };
            Answer::Replies(vec![Ok(r)])
        }
        Work::StartTls => Answer::Tls(*secrets % 2 == 0),
        Work::Deliver(d) => Answer::Delivered {
            reply: deliver(&d),
            provider_lost: false,
        },
    }
}

/// One SMTP session fed `data` as the client's bytes; returns the start of the replies (the
/// replay test checks that a well-formed transaction reaches the provider). The input arrives
/// in pieces (split at the byte values 0xff, which stand for "pause here"), so commands are
/// also seen split across reads; the end of the input is the client hanging up.
pub fn session(data: &[u8]) -> Vec<u8> {
    let cfg = Config {
        hostname: "fuzz".into(),
        starttls: true,
        secure: false,
        peer: IpAddr::from([127, 0, 0, 1]),
        require_auth: false,
        max_size: 1 << 20,
        max_recipients: 50,
    };
    let mut core = Core::new(cfg, Arc::new(Nobody));
    let mut replies = Vec::new();
    let mut secrets = 0;
    let mut pieces = data.split(|b| *b == 0xff);
    loop {
        match core.poll() {
            Step::Send(b) => {
                if replies.len() < 65536 {
                    replies.extend_from_slice(&b);
                }
            }
            Step::Read { .. } => match pieces.next() {
                Some(piece) => core.receive(piece),
                None => core.client_closed(),
            },
            Step::Do(work) => core.answer(provider(work, &mut secrets)),
            Step::DropProvider => {}
            Step::Close => break,
        }
    }
    replies
}
