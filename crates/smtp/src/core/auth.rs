//! AUTH passed through: envelopd's own checks (EHLO first, TLS off this machine, the
//! failed-login lock), then each line to the provider and each challenge back, until the
//! provider says yes or no. The password is only ever in wiped memory and never logged; the
//! login name is kept to decide which keys the session may sign with.

use zeroize::Zeroizing;

use super::{Auth, Core, Step, Then, Wait, Work};
use crate::upstream::Reply;
use smtp_proto::Request;

impl Core {
    /// Starts relaying AUTH PLAIN or LOGIN: envelopd's own checks, then the first line to the
    /// provider. The password passes through memory that is wiped afterwards.
    pub(super) fn auth(
        &mut self,
        mechanism: u64,
        initial: Zeroizing<String>,
        req: &Request<String>,
    ) {
        if !self.helo {
            return self.reply(Reply::new(503, "5.5.1", "say EHLO first"));
        }
        if self.login.is_some() {
            return self.reply(Reply::new(503, "5.5.1", "already authenticated"));
        }
        if self.mail_from.is_some() {
            return self.reply(Reply::new(
                503,
                "5.5.1",
                "AUTH is not allowed during a transaction",
            ));
        }
        if !self.auth_allowed_here() {
            return self.reply(Reply::new(
                538,
                "5.7.11",
                "encryption required: use STARTTLS first",
            ));
        }
        let early_name = (mechanism == smtp_proto::AUTH_PLAIN && !initial.is_empty())
            .then(|| login_name("PLAIN", &[Zeroizing::new(initial.as_bytes().to_vec())]))
            .flatten();
        if let Some(wait) = self.gate.locked(self.cfg.peer, early_name.as_deref()) {
            tracing::warn!(peer = %self.cfg.peer, "login refused: too many failed logins");
            return self.reply(Reply::new(
                454,
                "4.7.0",
                format!(
                    "too many failed logins; try again in {} minutes",
                    wait.as_secs() / 60 + 1
                ),
            ));
        }
        let name = match mechanism {
            smtp_proto::AUTH_PLAIN => "PLAIN",
            smtp_proto::AUTH_LOGIN => "LOGIN",
            _ => {
                return self.reply(Reply::new(
                    504,
                    "5.5.4",
                    "only AUTH PLAIN and LOGIN are supported",
                ))
            }
        };
        let offered = match self.need_provider(req) {
            Ok(Some(up)) => up.offers_auth(name),
            Ok(None) => return,
            Err(r) => {
                return self.reply(Reply::new(
                    454,
                    "4.7.0",
                    format!("cannot check the password now: {}", r.text),
                ))
            }
        };
        if !offered {
            return self.reply(Reply::new(
                504,
                "5.5.4",
                format!("the provider does not offer AUTH {name}"),
            ));
        }
        let mut line = Zeroizing::new(format!("AUTH {name}").into_bytes());
        let mut auth = Auth {
            mechanism: name,
            responses: Vec::new(),
        };
        if !initial.is_empty() {
            line.push(b' ');
            line.extend_from_slice(initial.as_bytes());
            auth.responses
                .push(Zeroizing::new(initial.as_bytes().to_vec()));
        }
        self.work(Work::Secret(line), Then::Auth(auth));
    }

    /// The provider's reply to an AUTH line: another challenge for the client, or the end.
    pub(super) fn auth_reply(&mut self, auth: Auth, reply: Result<Reply, Reply>) {
        let reply = match reply {
            Ok(r) if r.code == 334 => {
                let challenge = format!("334 {}\r\n", r.text);
                self.steps.push_back(Step::Send(challenge.into_bytes()));
                self.wait = Wait::AuthLine(auth);
                return;
            }
            Ok(r) => r,
            Err(r) => {
                self.provider = None;
                self.steps.push_back(Step::DropProvider);
                return self.reply(r);
            }
        };
        // Only 235 (RFC 4954) counts: a server that says 250 to AUTH has not checked anything.
        if reply.code == 235 {
            let login = login_name(auth.mechanism, &auth.responses);
            tracing::info!(
                login = login.as_deref().unwrap_or("?"),
                "authenticated by the provider"
            );
            self.login = Some(login.unwrap_or_default());
        } else {
            tracing::info!(code = reply.code, "the provider refused the login");
            if reply.code == 535 {
                let login = login_name(auth.mechanism, &auth.responses);
                self.gate.login_failed(self.cfg.peer, login.as_deref());
            }
        }
        self.reply(reply);
    }

    pub(super) fn auth_response(&mut self, mut auth: Auth, line: Zeroizing<Vec<u8>>) {
        auth.responses.push(line.clone());
        self.work(Work::Secret(line), Then::Auth(auth));
    }

    /// One raw line from the client (without CRLF): `None` if none is complete yet,
    /// `Some(None)` if it is longer than `max` (and has been thrown away).
    pub(super) fn take_line(&mut self, max: usize) -> Option<Option<Zeroizing<Vec<u8>>>> {
        if let Some(end) = memchr::memchr(b'\n', &self.inbuf) {
            if end > max {
                self.inbuf.drain(..=end);
                return Some(None);
            }
            let mut line = Zeroizing::new(self.inbuf.drain(..=end).collect::<Vec<u8>>());
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            return Some(Some(line));
        }
        if self.inbuf.len() > max {
            self.inbuf.clear();
            return Some(None);
        }
        None
    }
}

/// The login name from the client's AUTH responses, read as the IMAP side reads it
/// ([`net::login::sasl_name`]). The password part is never copied out.
fn login_name(mechanism: &str, responses: &[Zeroizing<Vec<u8>>]) -> Option<String> {
    let first = responses.first()?;
    let decoded = Zeroizing::new(smime::mime::base64_decode(first).ok()?);
    net::login::sasl_name(mechanism, &decoded)
}
