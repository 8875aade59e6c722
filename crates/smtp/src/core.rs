//! The SMTP session as a state machine without I/O (the way rustls and imap-next separate a
//! protocol from its sockets): the driver in [`crate::session`] feeds it the client's bytes and
//! the outcome of each piece of work, and it answers with the next [`Step`]: bytes for the
//! client, work to do (talk to the provider, start TLS, deliver a message), or "read more".
//!
//! Everything the client sees is decided here: the order of replies, pipelining, the EHLO
//! offer, STARTTLS resetting what was learnt before TLS, AUTH passed through line by line, DATA
//! and BDAT collection with the size limit, the recipient limit, who may send as whom. Because
//! nothing here waits, the core is unit-tested and fuzzed in process, without a runtime.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::time::Duration;

use smtp_proto::request::receiver::{
    BdatReceiver, DataReceiver, DummyDataReceiver, RequestReceiver,
};
use smtp_proto::Request;
use zeroize::Zeroizing;

use crate::upstream::Reply;

/// The longest AUTH line accepted (RFC 4954 §4: 12288 octets).
pub const MAX_AUTH_LINE: usize = 12288;

/// The most RCPT commands sent to the provider in one pipelined write.
pub use crate::upstream::PIPELINE_GROUP;

/// What a session is configured with when it starts.
#[derive(Debug, Clone)]
pub struct Config {
    /// The name envelopd uses in its greeting and EHLO reply.
    pub hostname: String,
    /// Whether STARTTLS can be offered (TLS configured and not implicit).
    pub starttls: bool,
    /// Whether the connection is already protected by TLS (implicit TLS).
    pub secure: bool,
    /// The client's address (AUTH in the clear only from this machine; the login lock).
    pub peer: IpAddr,
    /// Whether MAIL needs a login first.
    pub require_auth: bool,
    /// The largest message accepted, unless the provider announces less.
    pub max_size: usize,
    /// The most recipients per message.
    pub max_recipients: usize,
}

/// What the provider announced in its EHLO reply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProviderInfo {
    /// The EHLO keywords with their parameters, one per line, e.g. `AUTH PLAIN LOGIN`.
    pub capabilities: Vec<String>,
    /// The provider's SIZE, if it announced one.
    pub size_limit: Option<usize>,
}

impl ProviderInfo {
    /// The information from the keyword lines of an EHLO reply.
    pub fn from_capabilities(capabilities: Vec<String>) -> Self {
        let mut info = ProviderInfo {
            capabilities,
            size_limit: None,
        };
        info.size_limit = info
            .capability("SIZE")
            .and_then(|p| p.trim().parse().ok())
            .filter(|&n: &usize| n > 0);
        info
    }

    /// The parameters of an EHLO keyword the provider announced, if it did.
    pub fn capability(&self, keyword: &str) -> Option<&str> {
        self.capabilities.iter().find_map(|c| {
            let (k, rest) = c.split_once(' ').unwrap_or((c.as_str(), ""));
            k.eq_ignore_ascii_case(keyword).then_some(rest)
        })
    }

    /// True if the provider announced the EHLO keyword.
    pub fn has(&self, keyword: &str) -> bool {
        self.capability(keyword).is_some()
    }

    /// Whether the provider offers the SASL mechanism.
    pub fn offers_auth(&self, mechanism: &str) -> bool {
        self.capability("AUTH").is_some_and(|m| {
            m.split_whitespace()
                .any(|x| x.eq_ignore_ascii_case(mechanism))
        })
    }
}

/// The questions the core asks about who may do what; answered from shared state (identities,
/// rules, the failed-login lock) that the core must not own.
pub trait Gate: Send + Sync {
    /// The refusal for `login` sending as `address`, if enforcement forbids it.
    fn refuse_sender(&self, login: &str, address: &str) -> Option<Reply>;
    /// How long logins from this client (or for this name) are locked, if they are.
    fn locked(&self, peer: IpAddr, login: Option<&str>) -> Option<Duration>;
    /// Counts a login the provider refused.
    fn login_failed(&self, peer: IpAddr, login: Option<&str>);
}

/// One message ready for the policy and the provider.
#[derive(Debug)]
pub struct Delivery {
    /// The envelope sender (empty for `<>`).
    pub from: String,
    /// The MAIL parameters for the provider.
    pub params: String,
    /// The recipients the provider accepted, in order.
    pub rcpts: Vec<String>,
    /// Each recipient's RCPT parameters, in the order of `rcpts`.
    pub rcpt_params: Vec<String>,
    /// The message as the client sent it (dot-unstuffed).
    pub message: Vec<u8>,
    /// The login the provider accepted, if any.
    pub login: Option<String>,
}

/// Work the driver does for the core; the outcome comes back through [`Core::answer`].
#[derive(Debug)]
pub enum Work {
    /// Connect to the provider and say EHLO: [`Answer::Connected`] or [`Answer::Unreachable`].
    Connect,
    /// Send these commands to the provider in one write: [`Answer::Replies`], one per line.
    Relay(Vec<String>),
    /// Send one AUTH line (a secret: never logged): [`Answer::Replies`] with one reply.
    Secret(Zeroizing<Vec<u8>>),
    /// Start TLS with the client (the 220 has been sent): [`Answer::Tls`].
    StartTls,
    /// Decide, transform and send the message in the open transaction: [`Answer::Delivered`].
    Deliver(Box<Delivery>),
}

/// The outcome of a piece of [`Work`].
#[derive(Debug)]
pub enum Answer {
    /// The provider greeted and answered EHLO.
    Connected(ProviderInfo),
    /// The provider could not be used; the reply says why.
    Unreachable(Reply),
    /// The provider's replies, one per line sent; `Err` means the connection is gone.
    Replies(Vec<Result<Reply, Reply>>),
    /// Whether the TLS handshake with the client succeeded.
    Tls(bool),
    /// The client's reply to its message, and whether the provider connection was lost.
    Delivered {
        /// The reply for the client.
        reply: Reply,
        /// True if the driver dropped the provider connection.
        provider_lost: bool,
    },
}

/// What the driver does next.
#[derive(Debug)]
pub enum Step {
    /// Write these bytes to the client.
    Send(Vec<u8>),
    /// Read more from the client: `between_commands` (a shutdown may end the session now;
    /// otherwise a message or an AUTH exchange is under way), `partial` (part of a command line
    /// has arrived, so the whole line is on the clock).
    Read {
        /// No message or AUTH exchange is under way.
        between_commands: bool,
        /// Part of a command line is waiting for its end.
        partial: bool,
    },
    /// Do this and report with [`Core::answer`] before asking for the next step.
    Do(Work),
    /// Drop the provider connection without QUIT (a transaction must not complete).
    DropProvider,
    /// End the session (QUIT the provider if still connected).
    Close,
}

/// A MAIL command that passed envelopd's checks, on its way to the provider.
#[derive(Debug)]
struct PendingMail {
    address: String,
    params: String,
}

/// What the core waits for.
enum Wait {
    /// Commands from the client.
    Commands,
    /// The answer to work handed out, and what to do with it.
    Answer(Then),
    /// One AUTH response line from the client.
    AuthLine(Auth),
    /// The message after DATA.
    Data {
        receiver: DataReceiver,
        message: Vec<u8>,
        too_big: bool,
        limit: usize,
    },
    /// A BDAT chunk being kept.
    Chunk {
        receiver: BdatReceiver,
        buf: Vec<u8>,
        size: usize,
        last: bool,
    },
    /// A BDAT chunk being read past (refused or too big).
    SkipChunk {
        receiver: DummyDataReceiver,
        problem: Option<Reply>,
        size: usize,
        last: bool,
    },
    /// The session is over.
    Closed,
}

/// How to continue when an answer arrives.
enum Then {
    /// Handle the command again (the state it waited for is now known).
    Replay(Request<String>),
    /// The provider's replies to MAIL and RCPTs.
    Relay {
        mail: Option<PendingMail>,
        replies: Vec<Option<Reply>>,
        sent: Vec<(String, String)>,
    },
    /// The provider's reply to an AUTH line.
    Auth(Auth),
    /// The provider's reply to RSET, then this reply for the client (or a command to replay).
    Rset(Box<AfterRset>),
    /// The TLS handshake.
    StartTls,
    /// The message's delivery.
    Deliver,
}

/// What follows an RSET sent to the provider.
enum AfterRset {
    Reply(Reply),
    Replay(Request<String>),
}

/// An AUTH exchange in progress.
struct Auth {
    mechanism: &'static str,
    responses: Vec<Zeroizing<Vec<u8>>>,
}

/// One client session's protocol state.
pub struct Core {
    cfg: Config,
    gate: std::sync::Arc<dyn Gate>,
    inbuf: Vec<u8>,
    receiver: RequestReceiver,
    partial: bool,
    steps: VecDeque<Step>,
    wait: Wait,
    helo: bool,
    mail_from: Option<String>,
    mail_params: String,
    rcpts: Vec<String>,
    rcpt_params: Vec<String>,
    login: Option<String>,
    /// A message arriving in BDAT chunks; `None` outside BDAT.
    chunks: Option<Vec<u8>>,
    chunks_too_big: bool,
    provider: Option<ProviderInfo>,
    /// Why the last connection attempt failed, for the command that asked for it.
    unreachable: Option<Reply>,
}

impl Core {
    /// A new session: the greeting is the first step.
    pub fn new(cfg: Config, gate: std::sync::Arc<dyn Gate>) -> Self {
        let greeting = Reply::new(220, "", format!("{} ESMTP envelopd", cfg.hostname));
        Core {
            cfg,
            gate,
            inbuf: Vec::with_capacity(4096),
            receiver: RequestReceiver::default(),
            partial: false,
            steps: VecDeque::from([Step::Send(greeting.line().into_bytes())]),
            wait: Wait::Commands,
            helo: false,
            mail_from: None,
            mail_params: String::new(),
            rcpts: Vec::new(),
            rcpt_params: Vec::new(),
            login: None,
            chunks: None,
            chunks_too_big: false,
            provider: None,
            unreachable: None,
        }
    }

    /// The login the provider accepted, if any.
    pub fn login(&self) -> Option<&str> {
        self.login.as_deref()
    }

    /// Whether the connection is protected by TLS.
    pub fn secure(&self) -> bool {
        self.cfg.secure
    }

    /// Bytes from the client.
    pub fn receive(&mut self, bytes: &[u8]) {
        self.inbuf.extend_from_slice(bytes);
    }

    /// The client closed its side: a message in the middle is abandoned, nothing is sent.
    pub fn client_closed(&mut self) {
        self.end(None);
    }

    /// The client was silent too long.
    pub fn timed_out(&mut self) {
        self.end(Some(Reply::new(421, "4.4.2", "timeout, closing")));
    }

    /// envelopd is shutting down (asked between commands only).
    pub fn shutting_down(&mut self) {
        self.end(Some(Reply::new(
            421,
            "4.3.2",
            "envelopd is shutting down, try again shortly",
        )));
    }

    fn end(&mut self, reply: Option<Reply>) {
        if matches!(self.wait, Wait::Closed) {
            return;
        }
        let mid_message = !matches!(self.wait, Wait::Commands) || self.chunks.is_some();
        self.steps.clear();
        if let Some(r) = reply {
            self.steps.push_back(Step::Send(r.line().into_bytes()));
        }
        if mid_message {
            // A message or AUTH exchange cut off: the provider must not see its end.
            self.steps.push_back(Step::DropProvider);
        }
        self.steps.push_back(Step::Close);
        self.wait = Wait::Closed;
    }

    /// The next thing to do.
    pub fn poll(&mut self) -> Step {
        loop {
            if let Some(step) = self.steps.pop_front() {
                return step;
            }
            match std::mem::replace(&mut self.wait, Wait::Commands) {
                Wait::Commands => {
                    if let Some(step) = self.next_command() {
                        return step;
                    }
                }
                Wait::Answer(then) => {
                    // The driver asked again without answering: a driver bug, never the
                    // client's doing. Ending the session is the safe way out.
                    self.wait = Wait::Answer(then);
                    self.end(None);
                }
                Wait::AuthLine(auth) => match self.take_line(MAX_AUTH_LINE) {
                    Some(Some(line)) => self.auth_response(auth, line),
                    Some(None) => {
                        // The provider is mid-exchange and would take the next line as an
                        // answer: a fresh connection is the clean way back.
                        self.provider = None;
                        self.steps.push_back(Step::DropProvider);
                        self.reply(Reply::new(500, "5.5.6", "authentication line too long"));
                    }
                    None => {
                        self.wait = Wait::AuthLine(auth);
                        return self.read(false);
                    }
                },
                Wait::Data {
                    mut receiver,
                    mut message,
                    mut too_big,
                    limit,
                } => {
                    let mut iter = self.inbuf.iter();
                    let done = if too_big {
                        // Read to the end of the data, but do not keep it.
                        receiver.ingest(&mut iter, &mut Vec::new())
                    } else {
                        receiver.ingest(&mut iter, &mut message)
                    };
                    let consumed = self.inbuf.len() - iter.as_slice().len();
                    self.inbuf.drain(..consumed);
                    if message.len() > limit {
                        too_big = true;
                        message = Vec::new();
                    }
                    if !done {
                        self.wait = Wait::Data {
                            receiver,
                            message,
                            too_big,
                            limit,
                        };
                        return self.read(false);
                    }
                    if too_big {
                        self.reset_then(AfterRset::Reply(too_big_reply(limit)));
                    } else {
                        self.deliver(message);
                    }
                }
                Wait::Chunk {
                    mut receiver,
                    mut buf,
                    size,
                    last,
                } => {
                    let mut iter = self.inbuf.iter();
                    let done = receiver.ingest(&mut iter, &mut buf);
                    let consumed = self.inbuf.len() - iter.as_slice().len();
                    self.inbuf.drain(..consumed);
                    if !done {
                        self.wait = Wait::Chunk {
                            receiver,
                            buf,
                            size,
                            last,
                        };
                        return self.read(false);
                    }
                    self.chunk_done(buf, size, last);
                }
                Wait::SkipChunk {
                    mut receiver,
                    problem,
                    size,
                    last,
                } => {
                    let mut iter = self.inbuf.iter();
                    let done = receiver.ingest(&mut iter);
                    let consumed = self.inbuf.len() - iter.as_slice().len();
                    self.inbuf.drain(..consumed);
                    if !done {
                        self.wait = Wait::SkipChunk {
                            receiver,
                            problem,
                            size,
                            last,
                        };
                        return self.read(false);
                    }
                    match problem {
                        Some(r) => self.reply(r),
                        None => {
                            self.chunks_too_big = true;
                            self.chunk_done(Vec::new(), size, last);
                        }
                    }
                }
                Wait::Closed => {
                    self.wait = Wait::Closed;
                    return Step::Close;
                }
            }
        }
    }

    fn read(&self, between_commands: bool) -> Step {
        Step::Read {
            between_commands,
            partial: between_commands && self.partial,
        }
    }

    /// Parses the next buffered command and handles it; a step when more input is needed.
    fn next_command(&mut self) -> Option<Step> {
        let mut iter = self.inbuf.iter();
        let parsed = self.receiver.ingest(&mut iter).map(|r| r.into_owned());
        let consumed = self.inbuf.len() - iter.as_slice().len();
        self.inbuf.drain(..consumed);
        match parsed {
            Ok(req) => {
                self.partial = false;
                self.handle(req);
                None
            }
            Err(smtp_proto::Error::NeedsMoreData { .. }) => {
                self.partial |= consumed > 0;
                Some(self.read(true))
            }
            Err(e) => {
                self.partial = false;
                self.reply(syntax_reply(&e));
                None
            }
        }
    }

    /// Hands the outcome of the last [`Work`] to the core.
    pub fn answer(&mut self, answer: Answer) {
        let Wait::Answer(then) = std::mem::replace(&mut self.wait, Wait::Commands) else {
            // An answer nobody asked for: the driver is confused; end the session.
            self.end(None);
            return;
        };
        match (then, answer) {
            (Then::Replay(req), Answer::Connected(info)) => {
                self.provider = Some(info);
                self.handle(req);
            }
            (Then::Replay(req), Answer::Unreachable(r)) => {
                tracing::warn!(reason = %r.text, "provider not usable");
                self.unreachable = Some(r);
                self.handle(req);
            }
            (
                Then::Relay {
                    mail,
                    replies,
                    sent,
                },
                Answer::Replies(answers),
            ) => self.relayed(mail, replies, sent, answers),
            (Then::Auth(auth), Answer::Replies(mut answers)) => {
                let r = answers.pop().unwrap_or_else(|| Err(lost()));
                self.auth_reply(auth, r);
            }
            (Then::Rset(after), Answer::Replies(answers)) => {
                if answers.iter().any(Result::is_err) {
                    self.provider = None;
                }
                match *after {
                    AfterRset::Reply(r) => self.reply(r),
                    AfterRset::Replay(req) => self.handle(req),
                }
            }
            (Then::StartTls, Answer::Tls(true)) => {
                self.cfg.secure = true;
                // RFC 3207 §4.2: everything learnt before TLS is forgotten; TLS starts with
                // the client's EHLO, so nothing is said here.
                self.helo = false;
                self.login = None;
                self.reset_then(AfterRset::Reply(Reply::new(0, "", "")));
            }
            (Then::StartTls, _) => self.end(None),
            (
                Then::Deliver,
                Answer::Delivered {
                    reply,
                    provider_lost,
                },
            ) => {
                if provider_lost {
                    self.provider = None;
                }
                self.clear_transaction();
                self.reply(reply);
            }
            (_, _) => {
                // An answer of the wrong kind: a driver bug. The session cannot know where the
                // provider stands, so it ends.
                self.end(None);
            }
        }
    }

    /// Queues a reply for the client (a reply with code 0 is no reply).
    fn reply(&mut self, r: Reply) {
        if r.code != 0 {
            self.steps.push_back(Step::Send(r.line().into_bytes()));
        }
    }

    fn work(&mut self, work: Work, then: Then) {
        self.steps.push_back(Step::Do(work));
        self.wait = Wait::Answer(then);
    }

    /// The provider, or the work to connect to it first (the command is replayed then). `Err`
    /// with the reason when the attempt this command asked for failed.
    fn need_provider(&mut self, req: &Request<String>) -> Result<Option<&ProviderInfo>, Reply> {
        if self.provider.is_some() {
            return Ok(self.provider.as_ref());
        }
        if let Some(r) = self.unreachable.take() {
            return Err(r);
        }
        self.work(Work::Connect, Then::Replay(req.clone()));
        Ok(None)
    }

    fn handle(&mut self, req: Request<String>) {
        if self.chunks.is_some()
            && !matches!(
                req,
                Request::Bdat { .. } | Request::Rset | Request::Quit | Request::Noop { .. }
            )
        {
            // RFC 3030 §2: only BDAT, RSET, QUIT and NOOP inside a BDAT transaction.
            self.reset_then(AfterRset::Reply(Reply::new(
                503,
                "5.5.1",
                "BDAT transaction aborted: only BDAT may follow BDAT",
            )));
            return;
        }
        match req {
            Request::Ehlo { .. } => {
                if self.mail_from.is_some() {
                    return self.reset_then(AfterRset::Replay(req));
                }
                self.clear_transaction();
                // The provider is asked now so AUTH and SMTPUTF8 match what it really offers;
                // if it cannot be reached, EHLO still succeeds and MAIL or AUTH say why.
                let reachable = match self.need_provider(&req) {
                    Ok(Some(_)) => true,
                    Ok(None) => return,
                    Err(_) => false,
                };
                self.helo = true;
                let text = self.ehlo_reply(reachable);
                self.steps.push_back(Step::Send(text.into_bytes()));
            }
            Request::Helo { .. } => {
                if self.mail_from.is_some() {
                    return self.reset_then(AfterRset::Replay(req));
                }
                self.clear_transaction();
                self.helo = true;
                let r = Reply::new(250, "", self.cfg.hostname.clone());
                self.reply(r);
            }
            Request::Mail { ref from } => match self.check_mail(from) {
                Err(r) => self.reply(r),
                Ok(()) => match self.need_provider(&req) {
                    Err(r) => self.reply(r),
                    Ok(None) => {}
                    Ok(Some(_)) => {
                        let Request::Mail { from } = req else {
                            unreachable!("matched above")
                        };
                        match self.mail_for_provider(from) {
                            Ok(mail) => {
                                let group = self.buffered_rcpts();
                                self.relay(Some(mail), group);
                            }
                            Err(r) => self.reply(r),
                        }
                    }
                },
            },
            Request::Rcpt { to } => {
                let mut group = vec![to];
                group.extend(self.buffered_rcpts());
                self.relay(None, group);
            }
            Request::Data => self.data(),
            Request::Bdat {
                chunk_size,
                is_last,
            } => self.bdat(chunk_size, is_last),
            Request::Rset => self.reset_then(AfterRset::Reply(Reply::new(250, "2.0.0", "OK"))),
            Request::Noop { .. } => self.reply(Reply::new(250, "2.0.0", "OK")),
            Request::Quit => {
                self.reply(Reply::new(221, "2.0.0", "Bye"));
                self.steps.push_back(Step::Close);
                self.wait = Wait::Closed;
            }
            Request::Vrfy { .. } => self.reply(Reply::new(
                252,
                "2.5.0",
                "cannot verify, but will try to deliver",
            )),
            Request::StartTls => self.starttls(),
            Request::Auth {
                mechanism,
                ref initial_response,
            } => {
                let initial = Zeroizing::new(initial_response.clone());
                self.auth(mechanism, initial, &req);
            }
            other => self.reply(Reply::new(
                502,
                "5.5.1",
                format!("{} is not supported", other.name()),
            )),
        }
    }

    /// Forgets the transaction; the provider gets RSET first if one is open there, and then
    /// `after` happens.
    fn reset_then(&mut self, after: AfterRset) {
        let open = self.mail_from.is_some() && self.provider.is_some();
        self.clear_transaction();
        if open {
            self.work(
                Work::Relay(vec!["RSET".into()]),
                Then::Rset(Box::new(after)),
            );
        } else {
            match after {
                AfterRset::Reply(r) => self.reply(r),
                AfterRset::Replay(req) => self.handle(req),
            }
        }
    }

    fn clear_transaction(&mut self) {
        self.mail_from = None;
        self.mail_params.clear();
        self.rcpts.clear();
        self.rcpt_params.clear();
        self.chunks = None;
        self.chunks_too_big = false;
    }

    /// AUTH is offered over TLS, or in the clear only to a program on this machine.
    fn auth_allowed_here(&self) -> bool {
        self.cfg.secure || self.cfg.peer.is_loopback()
    }

    /// The SIZE envelopd announces: its own limit, or less if the provider's limit leaves less
    /// room after signing and encrypting (base64 adds a third, the signature a few KiB).
    fn size_limit(&self) -> usize {
        let ours = self.cfg.max_size;
        match self.provider.as_ref().and_then(|u| u.size_limit) {
            Some(theirs) => ours.min(theirs.saturating_sub(64 * 1024) / 4 * 3),
            None => ours,
        }
    }

    /// The EHLO reply: envelopd's own extensions, plus what it relays when the provider has it.
    fn ehlo_reply(&self, reachable: bool) -> String {
        let mut lines = vec![
            self.cfg.hostname.clone(),
            format!("SIZE {}", self.size_limit()),
            "8BITMIME".into(),
            "ENHANCEDSTATUSCODES".into(),
            "PIPELINING".into(),
            "CHUNKING".into(),
        ];
        let up = self.provider.as_ref();
        if up.is_some_and(|u| u.has("SMTPUTF8")) {
            lines.push("SMTPUTF8".into());
        }
        // Delivery status notifications are the provider's to give: offered when it offers them.
        if up.is_some_and(|u| u.has("DSN")) {
            lines.push("DSN".into());
        }
        if self.cfg.starttls && !self.cfg.secure {
            lines.push("STARTTLS".into());
        }
        if self.auth_allowed_here() && self.login.is_none() {
            let mechs: Vec<&str> = ["PLAIN", "LOGIN"]
                .into_iter()
                .filter(|m| !reachable || up.is_some_and(|u| u.offers_auth(m)))
                .collect();
            if !mechs.is_empty() {
                lines.push(format!("AUTH {}", mechs.join(" ")));
            }
        }
        let mut text = String::new();
        for (i, l) in lines.iter().enumerate() {
            let sep = if i + 1 == lines.len() { ' ' } else { '-' };
            text.push_str(&format!("250{sep}{l}\r\n"));
        }
        text
    }

    fn starttls(&mut self) {
        if !self.cfg.starttls || self.cfg.secure {
            return self.reply(Reply::new(454, "4.7.0", "TLS not available"));
        }
        if !self.helo {
            return self.reply(Reply::new(503, "5.5.1", "say EHLO first"));
        }
        self.reply(Reply::new(220, "2.0.0", "ready to start TLS"));
        // Anything the client sent after STARTTLS in the clear would otherwise count as sent
        // over TLS (command injection, CVE-2011-0411): it is thrown away.
        if !self.inbuf.is_empty() {
            tracing::info!(
                bytes = self.inbuf.len(),
                "discarding plaintext sent after STARTTLS"
            );
            self.inbuf.clear();
        }
        self.receiver = RequestReceiver::default();
        self.partial = false;
        self.work(Work::StartTls, Then::StartTls);
    }

    /// MAIL, checked here: EHLO, no open transaction, authentication, who may send as whom,
    /// the size.
    fn check_mail(&self, from: &smtp_proto::MailFrom<String>) -> Result<(), Reply> {
        if !self.helo {
            return Err(Reply::new(503, "5.5.1", "say EHLO first"));
        }
        if self.mail_from.is_some() {
            return Err(Reply::new(503, "5.5.1", "nested MAIL command"));
        }
        if self.cfg.require_auth && self.login.is_none() {
            return Err(Reply::new(530, "5.7.0", "authentication required"));
        }
        if let Some(login) = self.login.as_deref() {
            if let Some(refusal) = self.gate.refuse_sender(login, &from.address) {
                return Err(refusal);
            }
        }
        let limit = self.size_limit();
        if from.size > limit {
            return Err(too_big_reply(limit));
        }
        Ok(())
    }

    /// The MAIL command for the provider, with the parameters it understands.
    fn mail_for_provider(&self, from: smtp_proto::MailFrom<String>) -> Result<PendingMail, Reply> {
        let up = self.provider.as_ref().ok_or_else(lost)?;
        let mut params = String::new();
        // BODY=8BITMIME only to a provider that announced it (RFC 6152 §3): envelopd always
        // offers 8BITMIME to mail programs and makes the message 7-bit itself otherwise.
        if from.flags & smtp_proto::MAIL_BODY_8BITMIME != 0 && up.has("8BITMIME") {
            params.push_str(" BODY=8BITMIME");
        }
        if up.has("DSN") {
            params.push_str(&crate::upstream::dsn_mail_params(&from));
        }
        if from.flags & smtp_proto::MAIL_SMTPUTF8 != 0 {
            if !up.has("SMTPUTF8") {
                return Err(Reply::new(555, "5.5.4", "SMTPUTF8 is not available"));
            }
            params.push_str(" SMTPUTF8");
        }
        Ok(PendingMail {
            address: from.address,
            params,
        })
    }

    /// The RCPT commands a pipelining client sent right behind the one being handled, taken
    /// out of the input (only when the provider pipelines too, so they can go on together).
    /// Stops at the first other command or incomplete line, which is then read as usual.
    fn buffered_rcpts(&mut self) -> Vec<smtp_proto::RcptTo<String>> {
        let mut found = Vec::new();
        if !self.provider.as_ref().is_some_and(|u| u.has("PIPELINING")) {
            return found;
        }
        let mut receiver = RequestReceiver::default();
        let mut taken = 0;
        while found.len() < PIPELINE_GROUP {
            let mut iter = self.inbuf[taken..].iter();
            let Ok(Request::Rcpt { to }) = receiver.ingest(&mut iter) else {
                break;
            };
            taken = self.inbuf.len() - iter.as_slice().len();
            found.push(to.into_owned());
        }
        self.inbuf.drain(..taken);
        found
    }

    /// A checked MAIL (if any) and the RCPTs sent with it or on their own. Each RCPT is checked
    /// here (MAIL first, the recipient limit); MAIL and the RCPTs that pass go to the provider
    /// in one write, with DSN parameters when it offers DSN; each command gets one reply, in
    /// order. A distant provider answers MAIL and ten recipients in one round trip.
    fn relay(&mut self, mail: Option<PendingMail>, group: Vec<smtp_proto::RcptTo<String>>) {
        let mut replies: Vec<Option<Reply>> = Vec::with_capacity(group.len());
        let mut lines = Vec::new();
        if let Some(m) = &mail {
            lines.push(format!("MAIL FROM:<{}>{}", m.address, m.params));
        }
        let mut sent = Vec::new();
        let dsn = self.provider.as_ref().is_some_and(|u| u.has("DSN"));
        for to in group {
            if self.mail_from.is_none() && mail.is_none() {
                replies.push(Some(Reply::new(503, "5.5.1", "need MAIL before RCPT")));
            } else if self.rcpts.len() + sent.len() >= self.cfg.max_recipients {
                // Counted as if every earlier one were accepted: at worst a recipient is
                // deferred (4xx, the client sends it again) when others before it were refused.
                replies.push(Some(Reply::new(
                    452,
                    "4.5.3",
                    format!("too many recipients (at most {})", self.cfg.max_recipients),
                )));
            } else {
                let params = if dsn {
                    crate::upstream::dsn_rcpt_params(&to)
                } else {
                    String::new()
                };
                lines.push(format!("RCPT TO:<{}>{params}", to.address));
                sent.push((to.address, params));
                replies.push(None);
            }
        }
        if lines.is_empty() {
            return self.relayed(mail, replies, sent, Vec::new());
        }
        if self.provider.is_none() {
            let n = lines.len();
            return self.relayed(mail, replies, sent, vec![Err(lost()); n]);
        }
        self.work(
            Work::Relay(lines),
            Then::Relay {
                mail,
                replies,
                sent,
            },
        );
    }

    /// The provider's answers to a relayed group, turned into one reply per client command.
    fn relayed(
        &mut self,
        mail: Option<PendingMail>,
        replies: Vec<Option<Reply>>,
        sent: Vec<(String, String)>,
        answers: Vec<Result<Reply, Reply>>,
    ) {
        let mut answers = answers.into_iter();
        let mut next = || answers.next().unwrap_or_else(|| Err(lost()));
        let mut out = String::new();
        let mut lost_now = false;
        if let Some(m) = mail {
            let r = match next() {
                Ok(r) => {
                    if r.is_positive() {
                        self.mail_from = Some(m.address);
                        self.mail_params = m.params;
                    }
                    r
                }
                Err(r) => {
                    lost_now = true;
                    r
                }
            };
            out.push_str(&r.line());
        }
        let mut sent = sent.into_iter();
        for r in replies {
            let r = r.unwrap_or_else(|| {
                let (address, params) = sent.next().unwrap_or_default();
                match next() {
                    // The provider refused MAIL and (against RFC 5321) took a RCPT anyway:
                    // there is no transaction, so the client hears what it would without
                    // pipelining.
                    Ok(r) if r.is_positive() && self.mail_from.is_none() => {
                        Reply::new(503, "5.5.1", "need MAIL before RCPT")
                    }
                    Ok(r) => {
                        if r.is_positive() {
                            self.rcpts.push(address);
                            self.rcpt_params.push(params);
                        }
                        r
                    }
                    Err(r) => {
                        lost_now = true;
                        r
                    }
                }
            });
            out.push_str(&r.line());
        }
        if lost_now {
            self.provider = None;
            self.steps.push_back(Step::DropProvider);
        }
        // The replies to commands a pipelining client sent together, in one write.
        self.steps.push_back(Step::Send(out.into_bytes()));
    }

    fn data(&mut self) {
        if self.mail_from.is_none() {
            return self.reply(Reply::new(503, "5.5.1", "need MAIL before DATA"));
        }
        if self.rcpts.is_empty() {
            return self.reply(Reply::new(554, "5.5.1", "no valid recipients"));
        }
        self.reply(Reply::new(354, "", "end data with <CR><LF>.<CR><LF>"));
        self.wait = Wait::Data {
            receiver: DataReceiver::new(),
            message: Vec::with_capacity(64 * 1024),
            too_big: false,
            limit: self.size_limit(),
        };
    }

    /// One BDAT chunk (RFC 3030): collected like DATA, delivered after the LAST chunk.
    fn bdat(&mut self, size: usize, last: bool) {
        let problem = if self.mail_from.is_none() {
            Some(Reply::new(503, "5.5.1", "need MAIL before BDAT"))
        } else if self.rcpts.is_empty() {
            Some(Reply::new(554, "5.5.1", "no valid recipients"))
        } else {
            None
        };
        let keep = problem.is_none() && !self.chunks_too_big && size <= self.size_limit();
        self.wait = if keep {
            Wait::Chunk {
                receiver: BdatReceiver::new(size, last),
                buf: self.chunks.take().unwrap_or_default(),
                size,
                last,
            }
        } else {
            // The chunk's bytes must still be read past, or they would be taken for commands.
            Wait::SkipChunk {
                receiver: DummyDataReceiver::new_bdat(size),
                problem,
                size,
                last,
            }
        };
    }

    fn chunk_done(&mut self, mut chunk: Vec<u8>, size: usize, last: bool) {
        let limit = self.size_limit();
        if chunk.len() > limit {
            self.chunks_too_big = true;
            chunk = Vec::new();
        }
        if !last {
            self.chunks = Some(chunk);
            return self.reply(Reply::new(250, "2.0.0", format!("{size} octets received")));
        }
        if self.chunks_too_big {
            self.reset_then(AfterRset::Reply(too_big_reply(limit)));
        } else {
            self.chunks = None;
            self.deliver(chunk);
        }
    }

    fn deliver(&mut self, message: Vec<u8>) {
        let delivery = Delivery {
            from: self.mail_from.clone().unwrap_or_default(),
            params: self.mail_params.clone(),
            rcpts: self.rcpts.clone(),
            rcpt_params: self.rcpt_params.clone(),
            message,
            login: self.login.clone(),
        };
        self.work(Work::Deliver(Box::new(delivery)), Then::Deliver);
    }
}

/// The reply when the provider connection is gone.
pub(crate) fn lost() -> Reply {
    Reply::new(451, "4.4.1", "provider connection lost")
}

fn too_big_reply(limit: usize) -> Reply {
    Reply::new(
        552,
        "5.3.4",
        format!("message too big (limit {limit} bytes)"),
    )
}

fn syntax_reply(e: &smtp_proto::Error) -> Reply {
    match e {
        smtp_proto::Error::UnknownCommand => Reply::new(500, "5.5.2", "unknown command"),
        smtp_proto::Error::ResponseTooLong => Reply::new(500, "5.5.6", "line too long"),
        smtp_proto::Error::InvalidSenderAddress => Reply::new(501, "5.1.7", "bad sender address"),
        smtp_proto::Error::InvalidRecipientAddress => {
            Reply::new(501, "5.1.3", "bad recipient address")
        }
        smtp_proto::Error::SyntaxError { syntax } => {
            Reply::new(501, "5.5.2", format!("syntax: {syntax}"))
        }
        smtp_proto::Error::InvalidParameter { param } => {
            Reply::new(501, "5.5.4", format!("invalid parameter {param}"))
        }
        smtp_proto::Error::UnsupportedParameter { param } => {
            Reply::new(504, "5.5.4", format!("unsupported parameter {param}"))
        }
        other => Reply::new(500, "5.5.2", format!("{other:?}")),
    }
}

mod auth;
#[cfg(test)]
mod tests;
