//! One proxied POP3 connection as a state machine without I/O: the driver in
//! [`crate::session`] feeds it the mail program's bytes, the server's bytes and the outcome of
//! the work it asked for, and it answers with the next [`Step`].
//!
//! Commands pass to the server one client command at a time (a pipelining client's commands
//! wait in a bounded buffer), replies pass back, except:
//! - RETR and TOP of a message shown in envelopd's form (S/MIME, or carrying a status header)
//!   are answered from the one presentation the IMAP side shows too ([`present::present`]);
//! - LIST and STAT are answered by envelopd with the sizes RETR then sends: the sizes of shown
//!   messages are worked out by opening them (on every core, in bounded batches) and remembered
//!   per login and UIDL, so a program that leaves mail on the server and polls pays once;
//! - CAPA lists what envelopd supports, the greeting loses its APOP timestamp (APOP cannot be
//!   passed on and hides the login name), STLS is envelopd's own.
//!
//! UIDL, DELE, RSET, NOOP and QUIT are the server's: envelopd deletes and changes nothing.
//! USER/PASS and AUTH pass through (the server checks the password); envelopd keeps the login
//! name, which decides the keys the session decrypts with.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use present::Presentation;

use crate::cache::{Cache, Fact, Key};
use crate::wire::{self, MultiLine};

mod serve;
#[doc(hidden)]
pub mod sim;
#[cfg(test)]
mod tests;

/// The longest command line (RFC 2449 allows 255 octets; SASL responses with OAuth tokens are
/// longer).
pub const MAX_LINE: usize = 16 * 1024;

/// The longest status line or listing line from the server.
const MAX_STATUS: usize = 64 * 1024;

/// The most client bytes buffered while a command is being answered (pipelined commands).
const MAX_PIPELINED: usize = 64 * 1024;

/// The most messages a mailbox may hold for envelopd to list it (about 100 bytes each).
const MAX_MESSAGES: usize = 200_000;

/// The most stored bytes opened together when sizes are worked out.
const BATCH_BYTES: u64 = 8 << 20;

/// Requests in flight at once to a server that announced PIPELINING.
const WINDOW: usize = 32;

/// Output of a shown message goes to the client in pieces of this size.
const WRITE_WINDOW: usize = 256 * 1024;

/// The part of a header section kept to classify a message (the rest is read and dropped).
const MAX_HEADER: usize = 256 * 1024;

/// What a session is configured with when it starts.
#[derive(Debug, Clone)]
pub struct Config {
    /// Whether the client connection is protected by TLS.
    pub secure: bool,
    /// Whether STLS can be offered to the client.
    pub starttls: bool,
    /// The client's address (passwords in the clear only from this machine; the login lock).
    pub peer: IpAddr,
    /// The largest stored message envelopd opens.
    pub max_message: usize,
    /// How many messages the driver opens at once (the CPU pool's width).
    pub workers: usize,
}

/// What the server announced in its CAPA answer (RFC 2449).
#[derive(Debug, Clone, Default)]
pub struct ServerCaps {
    /// TOP.
    pub top: bool,
    /// UIDL.
    pub uidl: bool,
    /// USER (or no CAPA at all: RFC 1939's USER/PASS is then assumed).
    pub user: bool,
    /// SASL mechanisms, upper case.
    pub sasl: Vec<String>,
    /// PIPELINING.
    pub pipelining: bool,
    /// AUTH-RESP-CODE.
    pub auth_resp_code: bool,
    /// EXPIRE and LOGIN-DELAY lines, passed on as the server wrote them.
    pub policy: Vec<String>,
}

impl ServerCaps {
    /// Reads a CAPA answer's lines (without the status line and terminator); `None`: the server
    /// answered CAPA with -ERR, so it speaks plain RFC 1939.
    pub fn parse(lines: Option<&[u8]>) -> Self {
        let Some(lines) = lines else {
            return ServerCaps {
                top: true,
                uidl: true,
                user: true,
                ..Default::default()
            };
        };
        let mut caps = ServerCaps::default();
        for line in String::from_utf8_lossy(lines).lines() {
            let mut words = line.split_ascii_whitespace();
            let Some(name) = words.next() else { continue };
            match name.to_ascii_uppercase().as_str() {
                "TOP" => caps.top = true,
                "UIDL" => caps.uidl = true,
                "USER" => caps.user = true,
                "PIPELINING" => caps.pipelining = true,
                "AUTH-RESP-CODE" => caps.auth_resp_code = true,
                "SASL" => caps.sasl = words.map(|w| w.to_ascii_uppercase()).collect(),
                "EXPIRE" | "LOGIN-DELAY" => caps.policy.push(line.trim().to_string()),
                _ => {}
            }
        }
        caps
    }
}

/// SASL mechanisms envelopd passes on: those whose response names the login
/// ([`net::login::sasl_name`]), so the session gets the keys that login may use.
const SASL_PASSED: &[&str] = &["PLAIN", "LOGIN", "XOAUTH2", "OAUTHBEARER"];

/// The questions the core asks about shared state it must not own.
pub trait Env: Send + Sync {
    /// Shown messages and what is known about stored ones.
    fn cache(&self) -> &Mutex<Cache>;
    /// How long logins from this client (or for this name) are locked, if they are.
    fn locked(&self, peer: IpAddr, user: Option<&str>) -> Option<Duration>;
    /// Counts a login the server refused.
    fn login_failed(&self, peer: IpAddr, user: Option<&str>);
}

/// Work the driver does for the core; the outcome comes back through [`Core::answer`].
#[derive(Debug)]
pub enum Work {
    /// Show stored messages (decrypt with the login's keys only, verify, learn, keep each under
    /// its key): [`Answer::Presented`], in the same order; opened on every core at once.
    Present {
        /// The session's login.
        login: Option<String>,
        /// The messages as stored on the server.
        messages: Vec<Stored>,
    },
    /// TLS with the client (after STLS): [`Answer::Tls`].
    StartTls,
}

/// A stored message to be shown.
#[derive(Debug)]
pub struct Stored {
    /// Its number in this session.
    pub number: u32,
    /// Where its shown form is kept (none when the server has no UIDL).
    pub key: Option<Key>,
    /// The message as stored (byte-stuffing removed).
    pub bytes: Vec<u8>,
}

/// The outcome of [`Work`].
pub enum Answer {
    /// The shown messages, in the order asked.
    Presented(Vec<Arc<Presentation>>),
    /// Whether the TLS handshake with the client succeeded.
    Tls(bool),
}

/// The next thing the driver does.
#[derive(Debug)]
pub enum Step {
    /// Write these bytes to the client.
    ToClient(Vec<u8>),
    /// Write these bytes to the server.
    ToServer(Vec<u8>),
    /// Do this and report with [`Core::answer`] before asking for the next step.
    Do(Work),
    /// End the session.
    Close,
    /// Nothing to do until more input arrives.
    Idle,
}

/// What a client command that needs the message list or a message waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    Stat,
    List(Option<u32>),
    Retr(u32),
    Top(u32, u64),
}

/// What the session is doing for the client.
#[derive(Debug, PartialEq, Eq)]
enum Task {
    /// The next client command may be read.
    Ready,
    /// A command passed to the server; its reply goes to the client.
    Relaying,
    /// The server asked for the next SASL response (`+ …`); the client's next line is it.
    SaslResponse,
    /// The TLS handshake with the client is under way.
    Tls,
    /// A command envelopd answers from the message list or a shown message.
    Serving(Want),
    /// Sizes or a message are being opened.
    Presenting(Want),
    /// Replies to a command that failed on the way are read and dropped.
    Draining,
    /// The session ends once the output is written.
    Closed,
}

/// The two states of RFC 1939 envelopd tells apart (UPDATE is the server's, after QUIT).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Authorization,
    Transaction,
}

/// A request sent (or to be sent) to the server, answered in order.
#[derive(Debug)]
struct Req {
    line: Vec<u8>,
    multi: bool,
    purpose: Purpose,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    /// The reply goes to the client as it is; then this.
    Relay(After),
    /// envelopd's LIST.
    List,
    /// envelopd's UIDL.
    Uidl,
    /// envelopd's `TOP n 0`, to classify message n.
    Header(u32),
    /// envelopd's `RETR n`, to show message n.
    Retr(u32),
    /// A reply no longer wanted (its command failed on the way).
    Drop,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum After {
    Nothing,
    Pass,
    Sasl,
    Dele(u32),
    Rset,
    Quit,
}

/// The reply being read for the oldest request in flight.
#[derive(Debug, Default)]
struct Reading {
    status: Option<Vec<u8>>,
    multi: MultiLine,
    bol: bool,
    data: Vec<u8>,
    too_big: bool,
}

/// One message of the mailbox as envelopd knows it.
#[derive(Debug, Clone)]
struct Entry {
    stored: u64,
    uid: Option<String>,
    /// Whether it is shown in envelopd's form, when known.
    form: Option<bool>,
    /// Its header was asked for (a failed `TOP n 0` leaves `form` unknown).
    header_asked: bool,
    /// Its shown size, when worked out.
    shown: Option<u64>,
}

/// A shown message going to the client in windows.
struct Outgoing {
    message: Arc<Presentation>,
    end: usize,
    pos: usize,
    bol: bool,
}

/// One proxied POP3 connection.
pub struct Core {
    cfg: Config,
    env: Arc<dyn Env>,
    caps: ServerCaps,
    client_in: Vec<u8>,
    skipping: bool,
    server_in: Vec<u8>,
    out: VecDeque<Step>,
    outgoing: Option<Outgoing>,
    sent: VecDeque<Req>,
    queued: VecDeque<Req>,
    reading: Option<Reading>,
    task: Task,
    phase: Phase,
    user: Option<String>,
    login: Option<String>,
    sasl: Option<String>,
    index: Option<BTreeMap<u32, Entry>>,
    deleted: BTreeSet<u32>,
    batch: Vec<Stored>,
    presenting: Vec<u32>,
    awaiting: bool,
    /// A LIST of the whole mailbox whose status line went out before every size was known: how
    /// many of its lines have gone out since (the rest follow as batches are opened).
    listed: Option<usize>,
}

impl Core {
    /// A session whose server greeted with `greeting` and announced `caps`; the client is
    /// greeted at once.
    pub fn new(cfg: Config, env: Arc<dyn Env>, greeting: &[u8], caps: ServerCaps) -> Self {
        let mut core = Core {
            cfg,
            env,
            caps,
            client_in: Vec::new(),
            skipping: false,
            server_in: Vec::new(),
            out: VecDeque::new(),
            outgoing: None,
            sent: VecDeque::new(),
            queued: VecDeque::new(),
            reading: None,
            task: Task::Ready,
            phase: Phase::Authorization,
            user: None,
            login: None,
            sasl: None,
            index: None,
            deleted: BTreeSet::new(),
            batch: Vec::new(),
            presenting: Vec::new(),
            awaiting: false,
            listed: None,
        };
        let greeting = without_apop_banner(greeting);
        core.tell_client(greeting);
        core
    }

    /// The login this session uses, once the server accepted it.
    pub fn login(&self) -> Option<&str> {
        self.login.as_deref()
    }

    /// Whether the driver should read the client.
    pub fn reading_client(&self) -> bool {
        !self.awaiting
            && self.task != Task::Closed
            && self.task != Task::Tls
            && self.client_in.len() < MAX_PIPELINED
    }

    /// Whether the driver should read the server (only while a reply is expected: what the
    /// driver writes first paces what the server sends).
    pub fn reading_server(&self) -> bool {
        !self.awaiting && !self.sent.is_empty() && self.task != Task::Closed
    }

    /// Whether a command line has started but not ended.
    pub fn partial_line(&self) -> bool {
        !self.client_in.is_empty() && memchr::memchr(b'\n', &self.client_in).is_none()
    }

    /// Bytes from the client.
    pub fn from_client(&mut self, bytes: &[u8]) {
        self.client_in.extend_from_slice(bytes);
        self.advance();
    }

    /// Bytes from the server.
    pub fn from_server(&mut self, bytes: &[u8]) {
        self.server_in.extend_from_slice(bytes);
        self.read_server();
        self.advance();
    }

    /// The client closed its connection: the server's connection is dropped without QUIT, so
    /// nothing marked for deletion is deleted (RFC 1939 §6).
    pub fn client_closed(&mut self) {
        self.close();
    }

    /// The server closed its connection.
    pub fn server_closed(&mut self) {
        self.server_gone("the mail server closed the connection");
    }

    /// The server did not answer in time.
    pub fn server_timed_out(&mut self) {
        self.server_gone("the mail server did not answer in time");
    }

    /// The client was silent too long (or a line took too long).
    pub fn timed_out(&mut self) {
        self.tell_client(b"-ERR [SYS/TEMP] envelopd: autologout, idle too long\r\n");
        self.close();
    }

    /// The next step for the driver.
    pub fn poll(&mut self) -> Step {
        if let Some(step) = self.out.pop_front() {
            return step;
        }
        if let Some(chunk) = self.next_window() {
            if self.outgoing.is_none() {
                // The message is out: pipelined commands behind it go on.
                self.advance();
            }
            return Step::ToClient(chunk);
        }
        if self.task == Task::Closed {
            return Step::Close;
        }
        Step::Idle
    }

    /// The outcome of the work last handed out.
    pub fn answer(&mut self, answer: Answer) {
        self.awaiting = false;
        match answer {
            Answer::Tls(ok) => {
                if !ok {
                    return self.close();
                }
                self.cfg.secure = true;
                self.user = None;
                self.task = Task::Ready;
            }
            Answer::Presented(shown) => self.presented(shown),
        }
        self.advance();
    }

    fn tell_client(&mut self, bytes: impl Into<Vec<u8>>) {
        let bytes = bytes.into();
        // Small replies join what already waits (one write for a listing).
        if let Some(Step::ToClient(last)) = self.out.back_mut() {
            if last.len() + bytes.len() <= WRITE_WINDOW {
                last.extend_from_slice(&bytes);
                return;
            }
        }
        self.out.push_back(Step::ToClient(bytes));
    }

    fn close(&mut self) {
        self.listed = None;
        self.task = Task::Closed;
        self.outgoing = None;
        self.sent.clear();
        self.queued.clear();
    }

    fn server_gone(&mut self, why: &str) {
        if self.task == Task::Closed {
            return;
        }
        if !matches!(
            self.reading,
            Some(Reading {
                status: Some(_),
                ..
            })
        ) || !matches!(self.sent.front(), Some(r) if matches!(r.purpose, Purpose::Relay(_)))
        {
            // Nothing of the reply reached the client yet: it gets a reason. A listing already
            // under way gets none (an -ERR line would read as one of its lines): without its
            // terminator the client knows it is incomplete.
            if self.listed.is_none() {
                self.tell_client(format!("-ERR [SYS/TEMP] envelopd: {why}\r\n"));
            }
        }
        // Else a relayed reply was cut off: the client sees no terminator and knows.
        tracing::warn!(reason = why, "POP3 session ended by the server side");
        self.close();
    }

    /// Passwords cross the network only under TLS: in the clear only from this machine.
    fn login_allowed(&self) -> bool {
        self.cfg.secure || self.cfg.peer.is_loopback()
    }

    /// Goes on with whatever can go on: the current task, then the client's next command.
    fn advance(&mut self) {
        loop {
            if self.awaiting || self.task == Task::Closed || self.outgoing.is_some() {
                return;
            }
            match self.task {
                Task::Serving(want) => {
                    if !self.serve(want) {
                        return;
                    }
                }
                Task::Draining if self.sent.is_empty() => self.task = Task::Ready,
                Task::Ready | Task::SaslResponse => {
                    if !self.client_line() {
                        return;
                    }
                }
                _ => return,
            }
        }
    }

    /// Takes the client's next line, if complete; false when there is none.
    fn client_line(&mut self) -> bool {
        let Some(end) = memchr::memchr(b'\n', &self.client_in) else {
            if self.client_in.len() > MAX_LINE {
                self.client_in.clear();
                self.skipping = true;
            }
            return false;
        };
        let mut line: Vec<u8> = self.client_in.drain(..=end).collect();
        if std::mem::take(&mut self.skipping) || line.len() > MAX_LINE {
            if self.task == Task::SaslResponse {
                // The exchange cannot go on: cancelled at the server, whose -ERR the client
                // gets.
                self.task = Task::Relaying;
                self.send(Req {
                    line: b"*\r\n".to_vec(),
                    multi: false,
                    purpose: Purpose::Relay(After::Sasl),
                });
            } else {
                self.tell_client(b"-ERR envelopd: line too long\r\n");
            }
            return true;
        }
        while line.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            line.pop();
        }
        if self.task == Task::SaslResponse {
            self.sasl_response(line);
        } else {
            self.command(line);
        }
        true
    }

    /// One client command (its line end removed).
    fn command(&mut self, line: Vec<u8>) {
        let text = String::from_utf8_lossy(&line).into_owned();
        let (verb, rest) = match text.split_once(' ') {
            Some((v, r)) => (v.to_ascii_uppercase(), r),
            None => (text.to_ascii_uppercase(), ""),
        };
        let args: Vec<&str> = rest.split(' ').filter(|a| !a.is_empty()).collect();
        let phase = self.phase;
        match (phase, verb.as_str()) {
            (_, "CAPA") if args.is_empty() => self.capa(),
            (_, "QUIT") => self.relay(b"QUIT\r\n".to_vec(), false, After::Quit),
            (_, "NOOP") if phase == Phase::Transaction => {
                self.relay(b"NOOP\r\n".to_vec(), false, After::Nothing)
            }
            (Phase::Authorization, "STLS") => self.stls(),
            (Phase::Authorization, "USER") if !rest.is_empty() => {
                if let Some(refusal) = self.login_refusal(Some(rest)) {
                    return self.tell_client(refusal);
                }
                self.user = Some(rest.to_ascii_lowercase());
                self.relay(line_of(&line), false, After::Nothing);
            }
            (Phase::Authorization, "PASS") => {
                if self.user.is_none() {
                    return self.tell_client(b"-ERR [AUTH] USER first\r\n");
                }
                if let Some(refusal) = self.login_refusal(self.user.clone().as_deref()) {
                    return self.tell_client(refusal);
                }
                self.relay(line_of(&line), false, After::Pass);
            }
            (Phase::Authorization, "AUTH") => self.auth(&line, &args),
            (Phase::Authorization, "APOP") => self.tell_client(
                b"-ERR [AUTH] APOP is not available through envelopd: use USER/PASS or AUTH over TLS\r\n",
            ),
            (Phase::Transaction, "STAT") if args.is_empty() => self.start(Want::Stat),
            (Phase::Transaction, "LIST") if args.len() <= 1 => match args.first() {
                None => self.start(Want::List(None)),
                Some(a) => match number(a) {
                    Some(n) => self.start(Want::List(Some(n))),
                    None => self.tell_client(b"-ERR invalid message number\r\n"),
                },
            },
            (Phase::Transaction, "RETR") if args.len() == 1 => match number(args[0]) {
                Some(n) => self.start(Want::Retr(n)),
                None => self.tell_client(b"-ERR invalid message number\r\n"),
            },
            (Phase::Transaction, "TOP") if args.len() == 2 && self.caps.top => {
                match (number(args[0]), args[1].parse::<u64>().ok()) {
                    (Some(n), Some(k)) if args[1].bytes().all(|b| b.is_ascii_digit()) => {
                        self.start(Want::Top(n, k))
                    }
                    _ => self.tell_client(b"-ERR invalid arguments\r\n"),
                }
            }
            (Phase::Transaction, "DELE") if args.len() == 1 => match number(args[0]) {
                Some(n) => self.relay(format!("DELE {n}\r\n").into_bytes(), false, After::Dele(n)),
                None => self.tell_client(b"-ERR invalid message number\r\n"),
            },
            (Phase::Transaction, "RSET") if args.is_empty() => {
                self.relay(b"RSET\r\n".to_vec(), false, After::Rset)
            }
            (Phase::Transaction, "UIDL") if args.len() <= 1 && self.caps.uidl => {
                match args.first() {
                    None => self.relay(b"UIDL\r\n".to_vec(), true, After::Nothing),
                    Some(a) => match number(a) {
                        Some(n) => self.relay(format!("UIDL {n}\r\n").into_bytes(), false, After::Nothing),
                        None => self.tell_client(b"-ERR invalid message number\r\n"),
                    },
                }
            }
            (
                Phase::Authorization,
                "STAT" | "LIST" | "RETR" | "TOP" | "DELE" | "RSET" | "UIDL" | "NOOP",
            ) => self.tell_client(b"-ERR log in first\r\n"),
            (Phase::Transaction, "USER" | "PASS" | "AUTH" | "APOP" | "STLS") => {
                self.tell_client(b"-ERR already logged in\r\n")
            }
            _ => self.tell_client(b"-ERR unknown command or wrong arguments\r\n"),
        }
    }

    /// Why this session may not log in now (cleartext off this machine, or too many failed
    /// logins), if it may not.
    fn login_refusal(&self, user: Option<&str>) -> Option<String> {
        if !self.login_allowed() {
            return Some(
                "-ERR [AUTH] use STLS first: passwords do not cross the network in the clear\r\n"
                    .into(),
            );
        }
        let wait = self
            .env
            .locked(self.cfg.peer, user.map(str::to_ascii_lowercase).as_deref())?;
        tracing::warn!(peer = %self.cfg.peer, "login refused: too many failed logins");
        Some(format!(
            "-ERR [SYS/TEMP] too many failed logins; try again in {} minutes\r\n",
            wait.as_secs() / 60 + 1
        ))
    }

    /// The capabilities envelopd supports (RFC 2449), from what the server supports.
    fn capa(&mut self) {
        let mut out = String::from("+OK Capability list follows\r\n");
        if self.caps.top {
            out.push_str("TOP\r\n");
        }
        if self.caps.uidl {
            out.push_str("UIDL\r\n");
        }
        out.push_str("RESP-CODES\r\nPIPELINING\r\n");
        if self.phase == Phase::Authorization {
            if self.login_allowed() {
                if self.caps.user {
                    out.push_str("USER\r\n");
                }
                let mechs = self.mechanisms();
                if !mechs.is_empty() {
                    out.push_str(&format!("SASL {}\r\n", mechs.join(" ")));
                }
            }
            if self.cfg.starttls && !self.cfg.secure {
                out.push_str("STLS\r\n");
            }
        }
        if self.caps.auth_resp_code {
            out.push_str("AUTH-RESP-CODE\r\n");
        }
        for p in &self.caps.policy {
            out.push_str(p);
            out.push_str("\r\n");
        }
        out.push_str("IMPLEMENTATION envelopd\r\n.\r\n");
        self.tell_client(out);
    }

    fn mechanisms(&self) -> Vec<&'static str> {
        SASL_PASSED
            .iter()
            .copied()
            .filter(|m| self.caps.sasl.iter().any(|s| s == m))
            .collect()
    }

    fn stls(&mut self) {
        if self.cfg.secure || !self.cfg.starttls {
            return self.tell_client(b"-ERR TLS is not available here\r\n");
        }
        self.tell_client(b"+OK Begin TLS negotiation\r\n");
        // Whatever the client sent after STLS was sent in the clear: it is not obeyed under TLS.
        self.client_in.clear();
        self.task = Task::Tls;
        self.awaiting = true;
        self.out.push_back(Step::Do(Work::StartTls));
    }

    /// AUTH (RFC 5034), passed through for the mechanisms envelopd can read the name from.
    fn auth(&mut self, line: &[u8], args: &[&str]) {
        let Some(mech) = args.first().map(|m| m.to_ascii_uppercase()) else {
            // The pre-RFC 5034 form lists the mechanisms.
            let mut out = String::from("+OK\r\n");
            for m in self.mechanisms() {
                out.push_str(m);
                out.push_str("\r\n");
            }
            out.push_str(".\r\n");
            return self.tell_client(out);
        };
        if !self.mechanisms().contains(&mech.as_str()) {
            return self.tell_client(b"-ERR [AUTH] mechanism not available through envelopd\r\n");
        }
        if args.len() > 2 {
            return self.tell_client(b"-ERR invalid arguments\r\n");
        }
        let initial = args.get(1).copied();
        let name = initial.and_then(|ir| sasl_name(&mech, ir));
        if let Some(refusal) = self.login_refusal(name.as_deref()) {
            return self.tell_client(refusal);
        }
        self.user = name;
        self.sasl = Some(mech);
        self.relay(line_of(line), false, After::Sasl);
    }

    /// The client's answer to a SASL challenge: to the server as it is.
    fn sasl_response(&mut self, line: Vec<u8>) {
        let mech = self.sasl.clone().unwrap_or_default();
        if self.user.is_none() && line != b"*" {
            // PLAIN without an initial response, and LOGIN's first response, name the user.
            if let Some(name) = std::str::from_utf8(&line)
                .ok()
                .and_then(|l| sasl_name(&mech, l))
            {
                if let Some(refusal) = self.login_refusal(Some(&name)) {
                    // Cancel at the server; the client gets the reason.
                    self.tell_client(refusal);
                    self.task = Task::Relaying;
                    self.send(Req {
                        line: b"*\r\n".to_vec(),
                        multi: false,
                        purpose: Purpose::Relay(After::Sasl),
                    });
                    self.sasl = None;
                    return;
                }
                self.user = Some(name);
            }
        }
        self.task = Task::Relaying;
        self.send(Req {
            line: line_of(&line),
            multi: false,
            purpose: Purpose::Relay(After::Sasl),
        });
    }

    /// Passes one client command to the server; its reply goes back as it is.
    fn relay(&mut self, line: Vec<u8>, multi: bool, after: After) {
        self.task = Task::Relaying;
        self.send(Req {
            line,
            multi,
            purpose: Purpose::Relay(after),
        });
    }

    fn send(&mut self, req: Req) {
        self.queued.push_back(req);
        self.pump();
    }

    /// Sends queued requests while the server may take them (one at a time unless it
    /// announced PIPELINING).
    fn pump(&mut self) {
        let window = if self.caps.pipelining { WINDOW } else { 1 };
        let mut bytes = Vec::new();
        while self.sent.len() < window {
            let Some(req) = self.queued.pop_front() else {
                break;
            };
            bytes.extend_from_slice(&req.line);
            self.sent.push_back(req);
        }
        if !bytes.is_empty() {
            self.out.push_back(Step::ToServer(bytes));
        }
    }

    /// Reads what the server sent for the requests in flight.
    fn read_server(&mut self) {
        while let Some(req) = self.sent.front() {
            let purpose = req.purpose;
            let multi = req.multi;
            // A message is read into a buffer of its listed size (bounded), not grown by
            // doubling to twice that.
            let expected = match purpose {
                Purpose::Retr(n) if self.reading.is_none() => self
                    .entry(n)
                    .map_or(0, |e| e.stored.min(self.cfg.max_message as u64) as usize),
                _ => 0,
            };
            let reading = self.reading.get_or_insert_with(|| Reading {
                multi: MultiLine::new(),
                bol: true,
                data: Vec::with_capacity(expected),
                ..Default::default()
            });
            if reading.status.is_none() {
                let Some(end) = memchr::memchr(b'\n', &self.server_in) else {
                    if self.server_in.len() > MAX_STATUS {
                        return self.server_gone("the mail server sent an overlong line");
                    }
                    return;
                };
                let status: Vec<u8> = self.server_in.drain(..=end).collect();
                let continuation = status.starts_with(b"+ ") || status == b"+\r\n";
                if continuation && purpose == Purpose::Relay(After::Sasl) {
                    self.sent.pop_front();
                    self.reading = None;
                    self.tell_client(status);
                    self.task = Task::SaslResponse;
                    continue;
                }
                let ok = status.starts_with(b"+OK");
                if !status.starts_with(b"+OK") && !status.starts_with(b"-ERR") {
                    return self.server_gone("the mail server sent something that is not POP3");
                }
                if matches!(purpose, Purpose::Relay(_)) {
                    self.tell_client(status.clone());
                }
                let reading = self.reading.as_mut().expect("set above");
                reading.status = Some(status);
                if !(multi && ok) {
                    let r = self.reading.take().expect("set above");
                    let req = self.sent.pop_front().expect("in flight");
                    self.complete(req, r);
                    self.pump();
                    continue;
                }
            }
            let reading = self.reading.as_mut().expect("set above");
            let taken = reading.multi.take(&self.server_in);
            let content = &self.server_in[..taken.content];
            match purpose {
                Purpose::Relay(_) => {
                    if !content.is_empty() {
                        let chunk = content.to_vec();
                        self.tell_client(chunk);
                    }
                    if taken.ended {
                        self.tell_client(b".\r\n".to_vec());
                    }
                }
                _ => {
                    let limit = match purpose {
                        Purpose::Retr(_) => self.cfg.max_message,
                        Purpose::Header(_) => MAX_HEADER,
                        _ => MAX_STATUS * 256,
                    };
                    let reading = self.reading.as_mut().expect("set above");
                    if reading.data.len() + content.len() > limit {
                        reading.too_big = true;
                    }
                    if !reading.too_big {
                        reading.bol = wire::unstuff_into(content, reading.bol, &mut reading.data);
                    }
                }
            }
            self.server_in.drain(..taken.consumed);
            if !taken.ended {
                return;
            }
            let r = self.reading.take().expect("set above");
            let req = self.sent.pop_front().expect("in flight");
            self.complete(req, r);
            self.pump();
        }
        if !self.server_in.is_empty() && self.sent.is_empty() {
            // Nothing was asked: a server that talks out of turn (e.g. its autologout
            // notice before it closes) is not passed on.
            self.server_in.clear();
        }
    }

    /// A reply is complete.
    fn complete(&mut self, req: Req, r: Reading) {
        let ok = r.status.as_deref().is_some_and(|s| s.starts_with(b"+OK"));
        match req.purpose {
            Purpose::Relay(after) => {
                self.task = Task::Ready;
                match after {
                    After::Nothing => {}
                    After::Pass | After::Sasl => {
                        self.sasl = None;
                        if ok {
                            self.login = self.user.clone();
                            self.phase = Phase::Transaction;
                            tracing::info!(login = ?self.login, "POP3 login");
                        } else {
                            net::observe::get().failed_login();
                            self.env.login_failed(self.cfg.peer, self.user.as_deref());
                            self.user = None;
                        }
                    }
                    After::Dele(n) => {
                        if ok {
                            self.deleted.insert(n);
                        }
                    }
                    After::Rset => {
                        if ok {
                            self.deleted.clear();
                        }
                    }
                    After::Quit => self.close(),
                }
            }
            Purpose::List => {
                if !ok {
                    return self.fail(r.status);
                }
                let mut index = BTreeMap::new();
                for line in r.data.split(|b| *b == b'\n') {
                    let text = String::from_utf8_lossy(line);
                    let mut words = text.split_ascii_whitespace();
                    let (Some(n), Some(size)) = (words.next(), words.next()) else {
                        continue;
                    };
                    let (Some(n), Ok(size)) = (number(n), size.parse::<u64>()) else {
                        continue;
                    };
                    if index.len() >= MAX_MESSAGES {
                        return self.fail_with("-ERR [SYS/PERM] envelopd: the mailbox holds too many messages to list\r\n");
                    }
                    index.insert(
                        n,
                        Entry {
                            stored: size,
                            uid: None,
                            form: None,
                            header_asked: false,
                            shown: None,
                        },
                    );
                }
                if r.too_big {
                    return self.fail_with(
                        "-ERR [SYS/PERM] envelopd: the mailbox holds too many messages to list\r\n",
                    );
                }
                self.index = Some(index);
            }
            Purpose::Uidl => {
                if ok {
                    let mut uids = Vec::new();
                    for line in r.data.split(|b| *b == b'\n') {
                        let text = String::from_utf8_lossy(line);
                        let mut words = text.split_ascii_whitespace();
                        if let (Some(n), Some(uid)) = (words.next().and_then(number), words.next())
                        {
                            uids.push((n, uid.to_string()));
                        }
                    }
                    self.learn_uids(uids);
                }
            }
            Purpose::Drop => {}
            Purpose::Header(n) => {
                // A message whose header cannot be read this way is opened to find out.
                let form = ok.then(|| present::header_needs_presentation(&r.data));
                if let Some(e) = self.index.as_mut().and_then(|i| i.get_mut(&n)) {
                    e.form = form;
                    if form == Some(false) {
                        e.shown = Some(e.stored);
                    }
                }
                if form == Some(false) {
                    self.remember(n, Fact::AsStored);
                }
            }
            Purpose::Retr(n) => {
                if !ok {
                    if let Task::Serving(Want::Retr(m) | Want::Top(m, _)) = self.task {
                        if m == n {
                            return self.fail(r.status);
                        }
                    }
                    // While sizing: listed with its stored size (RETR will say why).
                    if let Some(e) = self.entry_mut(n) {
                        e.shown = Some(e.stored);
                    }
                    return;
                }
                if r.too_big {
                    return self.too_large(n);
                }
                let key = self.key(n);
                self.batch.push(Stored {
                    number: n,
                    key,
                    bytes: r.data,
                });
            }
        }
    }

    /// Tells the client the command failed with the server's reason.
    fn fail(&mut self, status: Option<Vec<u8>>) {
        let status = status.unwrap_or_else(|| b"-ERR\r\n".to_vec());
        self.fail_with(&String::from_utf8_lossy(&status));
    }

    fn fail_with(&mut self, reply: &str) {
        self.tell_client(reply.as_bytes().to_vec());
        self.queued.clear();
        self.batch.clear();
        // Replies still due for this command are read and dropped.
        for req in self.sent.iter_mut() {
            req.purpose = Purpose::Drop;
        }
        self.task = Task::Draining;
    }

    fn too_large(&mut self, n: u32) {
        if let Task::Serving(Want::Retr(m) | Want::Top(m, _)) = self.task {
            if m == n {
                let reply = format!(
                    "-ERR [SYS/PERM] envelopd: message {n} is larger than {} MB, the most envelopd opens; it stays on the server\r\n",
                    self.cfg.max_message >> 20
                );
                return self.fail_with(&reply);
            }
        }
        if let Some(e) = self.index.as_mut().and_then(|i| i.get_mut(&n)) {
            e.shown = Some(e.stored);
        }
    }
}

/// The command line as it goes to the server (CRLF-ended).
fn line_of(line: &[u8]) -> Vec<u8> {
    let mut l = line.to_vec();
    l.extend_from_slice(b"\r\n");
    l
}

/// A message number (RFC 1939: a positive decimal number).
fn number(arg: &str) -> Option<u32> {
    if arg.is_empty() || arg.len() > 9 || !arg.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    arg.parse().ok().filter(|n| *n > 0)
}

/// The login a SASL response names (base64 as on the wire).
fn sasl_name(mech: &str, response: &str) -> Option<String> {
    if response == "=" {
        return None;
    }
    let raw = smime::mime::base64_decode(response.as_bytes()).ok()?;
    net::login::sasl_name(mech, &raw)
}

/// The server's greeting without its APOP timestamp (`<…@…>`), so no client tries APOP
/// (which envelopd cannot pass on: the digest hides the password and binds the banner).
pub fn without_apop_banner(greeting: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(greeting);
    let line = text.trim_end();
    let cleaned = match (line.find('<'), line.rfind('>')) {
        (Some(a), Some(b)) if a < b && line[a..b].contains('@') => {
            format!("{}{}", line[..a].trim_end(), &line[b + 1..])
        }
        _ => line.to_string(),
    };
    format!("{}\r\n", cleaned.trim_end()).into_bytes()
}
