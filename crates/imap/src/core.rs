//! One proxied IMAP connection as a state machine without I/O: the driver in
//! [`crate::session`] feeds it the mail program's bytes, the server's bytes and the outcome of
//! each piece of work, and it answers with the next [`Step`]: bytes for the client, bytes for the
//! server, work to do (open a stored message, encrypt an appended one, start TLS), or nothing.
//!
//! Client commands and server responses stream through as bytes, except: FETCHes that ask for
//! message content (rewritten and answered from the shown message), SEARCHes with text keys
//! (answered on the shown text too), APPENDs to the Sent and Drafts folders (stored encrypted),
//! capability lists (what envelopd cannot keep consistent is hidden), and the commands envelopd
//! answers itself (STARTTLS, COMPRESS). LOGIN and AUTHENTICATE pass through: the server checks
//! the password; envelopd keeps only the login name, for its cache key and the keys the session
//! may decrypt with. Nothing here waits, so every FETCH form, literal, IDLE and SASL exchange is
//! unit-tested and fuzzed in process.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::cache::{Cache, CacheKey, MailboxKey};
use crate::fetch::{self, FetchPlan};
use crate::frame::{literal_at_end, Framer, Piece, Splitter};
use crate::present::{needs_presentation, Presentation};
use crate::session::{filter_capabilities_with, MAX_LINE};

mod held;
mod jobs;
#[doc(hidden)]
pub mod sim;
#[cfg(test)]
mod tests;

use jobs::Job;

/// What a session is configured with when it starts.
#[derive(Debug, Clone)]
pub struct Config {
    /// Whether the client connection is protected by TLS (implicit TLS).
    pub secure: bool,
    /// Whether STARTTLS can be offered to the client.
    pub starttls: bool,
    /// The client's address (passwords in the clear only from this machine; the login lock).
    pub peer: IpAddr,
    /// The largest literal accepted from either side.
    pub max_literal: u64,
}

/// How far the session reads the server ahead of the client while stored messages are being
/// opened: the bytes of held responses, of stored messages opening and of shown forms waiting
/// for their turn. Within it, the next messages are read and opened on the other cores while
/// one opens and the last answers are written; a large message fills it alone (it is still read
/// whole). 8 and 16 MiB measured alike in speed; counting the largest message opening on top
/// (two large ones opening at once) was 10 % faster but peaked at 142-150 MiB, beyond the bound.
const AHEAD_BYTES: usize = 8 << 20;

/// From this size on, a stored message waiting to be opened is moved out of its FETCH response
/// instead of copied (smaller ones stay as they are: their responses may be remembered).
const MOVE_BODY: usize = 64 * 1024;

/// Output smaller than this is joined to what already waits for the client (one write for a
/// listing's thousand small responses); larger output goes in its own buffer.
const JOIN_OUTPUT: usize = 64 * 1024;

/// The questions the core asks about shared state it must not own.
pub trait Env: Send + Sync {
    /// The shown messages of every session, and which stored messages need envelopd's form.
    fn cache(&self) -> &Mutex<Cache>;
    /// How long logins from this client (or for this name) are locked, if they are.
    fn locked(&self, peer: IpAddr, user: Option<&str>) -> Option<Duration>;
    /// Counts a login the server refused.
    fn login_failed(&self, peer: IpAddr, user: Option<&str>);
    /// The login's own encryption certificate, if it has one (for Sent and Drafts).
    fn own_cert(&self, login: &str) -> Option<smime::Cert>;
    /// Whether messages appended to this folder (its last name part, any case) are stored
    /// encrypted.
    fn encrypts_appends_to(&self, folder: &str) -> bool;
}

/// Work the driver does for the core; the outcome comes back through [`Core::answer`].
#[derive(Debug)]
pub enum Work {
    /// Show stored messages (decrypt with the login's keys only, verify, learn what a valid
    /// signature teaches, keep each under its key): [`Answer::Presented`], in the same order.
    /// The messages are independent: the driver opens them on every core at once.
    Present {
        /// The session's login (`None`: no keys).
        login: Option<String>,
        /// The messages as stored on the server.
        messages: Vec<Stored>,
    },
    /// Encrypt an appended message to the user's own certificate: [`Answer::Encrypted`].
    Encrypt {
        /// The message as the client appended it.
        message: Vec<u8>,
        /// The own certificate.
        cert: smime::Cert,
    },
    /// Start TLS with the client (the OK has been sent): [`Answer::Tls`].
    StartTls,
}

/// One stored message to show.
#[derive(Debug)]
pub struct Stored {
    /// The message's UID.
    pub uid: u32,
    /// The message as stored on the server.
    pub bytes: Vec<u8>,
    /// Where its shown form is cached (`None`: not cached).
    pub key: Option<CacheKey>,
}

/// The outcome of a piece of [`Work`].
pub enum Answer {
    /// The shown forms of the messages asked for, in their order.
    Presented(Vec<Arc<Presentation>>),
    /// The encrypted message, or why it could not be encrypted.
    Encrypted(Result<Vec<u8>, String>),
    /// Whether the TLS handshake with the client succeeded.
    Tls(bool),
}

/// What the driver does next.
#[derive(Debug)]
pub enum Step {
    /// Write these bytes to the client.
    ToClient(Vec<u8>),
    /// Write this range of a shown message to the client (a large literal of an answer, sent
    /// from the shown message instead of a copy of it).
    ToClientShown(Arc<Presentation>, std::ops::Range<usize>),
    /// Write these bytes to the server.
    ToServer(Vec<u8>),
    /// Do this and report with [`Core::answer`] before asking for the next step.
    Do(Work),
    /// Open this stored message of the pending FETCH beside the session (on the CPU pool)
    /// while reading and writing go on; report with [`Core::opened`] when it is done, in any
    /// order. Opened with the login's keys only, like [`Work::Present`].
    Open {
        /// The session's login (`None`: no keys).
        login: Option<String>,
        /// The message as stored on the server.
        message: Stored,
    },
    /// End the session.
    Close,
    /// Nothing to do until more input arrives (see [`Core::reading_client`]).
    Idle,
}

/// A message the client is appending to a folder envelopd encrypts.
struct AppendCapture {
    /// The command line up to the literal's `{`.
    prefix: Vec<u8>,
    tag: String,
    data: Vec<u8>,
    too_big: bool,
    cert: smime::Cert,
}

/// An APPEND whose mailbox name comes as a literal (`a APPEND {4}` CRLF `Sent (\Seen) {310}`):
/// the name is read before anything goes to the server, so that the folder decides whether the
/// message is stored encrypted, as for a quoted name.
struct NameLiteral {
    tag: String,
    /// The literal's announced length.
    want: u64,
    name: Vec<u8>,
}

/// The longest mailbox name envelopd reads from a literal to decide about an APPEND.
const MAX_NAME_LITERAL: u64 = 4096;

/// What the client's next lines are, when they are not commands.
enum Continuation {
    /// AUTHENTICATE with this tag and mechanism; whether the login name is still to be read.
    Sasl {
        tag: String,
        mechanism: String,
        name_pending: bool,
    },
    /// IDLE: the next line is DONE.
    Idle,
}

/// One IMAP session's protocol state.
pub struct Core {
    cfg: Config,
    env: Arc<dyn Env>,
    framer: Framer,
    splitter: Splitter,
    steps: VecDeque<Step>,
    /// Work handed out and not yet answered.
    awaiting: Option<Awaiting>,
    closed: bool,
    pending: Option<FetchPlan>,
    /// The mailbox of the pending FETCH (so each response's lookup needs no new key).
    pending_box: Option<MailboxKey>,
    /// Responses of the pending FETCH not yet answered, in order (everything before them has
    /// been sent to the client).
    held: VecDeque<Vec<u8>>,
    /// Stored messages from the pending FETCH's own responses (`BODY[]`) being opened beside
    /// the session, and their size: a folder's sync is opened as it arrives instead of after
    /// the whole FETCH and fetched a second time.
    opening: HashMap<u32, usize>,
    /// The bytes of `held`, `opening` and `shown_here` (see [`AHEAD_BYTES`]).
    ahead: usize,
    /// The pending FETCH's tagged reply, waiting for the openings still running.
    tagged: Option<Vec<u8>>,
    /// Shown forms opened during the pending FETCH.
    shown_here: Shown,
    /// An operation of envelopd's own with the server (completing a FETCH, a SEARCH, an
    /// APPEND); the client is not read meanwhile.
    job: Option<Job>,
    login: Option<String>,
    /// A login name claimed by a LOGIN or AUTHENTICATE still waiting for the server's answer:
    /// it becomes `login` only on OK, so a failed attempt never lends its name (and that
    /// user's cached messages) to the session.
    claimed: Option<(String, Option<String>)>,
    mailbox: Option<String>,
    selecting: Option<(String, String)>,
    uidvalidity: Option<u32>,
    next_tag: u64,
    /// Client commands sent to the server and not yet answered.
    in_flight: usize,
    append: Option<AppendCapture>,
    /// An APPEND's mailbox name arriving as a literal, held back from the server meanwhile.
    append_name: Option<NameLiteral>,
    /// The client sent LOGOUT.
    logged_out: bool,
    /// Lines from the client that are not commands: SASL responses after AUTHENTICATE (until
    /// its tagged answer) or the DONE that ends IDLE. They pass through uncounted.
    continuation: Option<Continuation>,
    /// The rest of a refused command with non-synchronizing literals (`{n+}`) is still
    /// arriving: it is dropped, never sent to the server.
    discarding: bool,
    /// A command spanning literals, collected (bounded by [`crate::command::MAX_NOTED`]) until
    /// its last line, so that its login or mailbox name is read by imap-codec from the whole
    /// command.
    assembling: Option<Vec<u8>>,
    /// The command being assembled outgrew the bound: it is passed on but names nobody.
    assembly_overflowed: bool,
}

/// Which answer the core waits for.
enum Awaiting {
    Present(Vec<u32>),
    Encrypt,
    Tls,
}

impl Core {
    /// A session whose server connection is open: `greeting` is what the client is greeted
    /// with (before capability filtering), `framer` holds anything the server sent after it.
    pub fn new(cfg: Config, env: Arc<dyn Env>, greeting: &[u8], framer: Framer) -> Self {
        let mut core = Core {
            cfg,
            env,
            framer,
            splitter: Splitter::new(MAX_LINE),
            steps: VecDeque::new(),
            awaiting: None,
            closed: false,
            pending: None,
            pending_box: None,
            held: VecDeque::new(),
            opening: HashMap::new(),
            ahead: 0,
            tagged: None,
            shown_here: HashMap::new(),
            job: None,
            login: None,
            claimed: None,
            mailbox: None,
            selecting: None,
            uidvalidity: None,
            next_tag: 2,
            in_flight: 0,
            append: None,
            append_name: None,
            logged_out: false,
            continuation: None,
            discarding: false,
            assembling: None,
            assembly_overflowed: false,
        };
        let greeting = core.caps(greeting);
        core.tell_client(&greeting);
        core
    }

    /// The login the server accepted, if any.
    pub fn login(&self) -> Option<&str> {
        self.login.as_deref()
    }

    /// The selected mailbox, once the server confirmed it.
    pub fn mailbox(&self) -> Option<&str> {
        self.mailbox.as_deref()
    }

    /// Whether the client connection is protected by TLS.
    pub fn secure(&self) -> bool {
        self.cfg.secure
    }

    /// Whether the driver should read the client now: not while a FETCH is being answered or
    /// envelopd runs commands of its own (the client's next commands wait in its socket).
    pub fn reading_client(&self) -> bool {
        !self.closed && self.awaiting.is_none() && self.pending.is_none() && self.job.is_none()
    }

    /// Whether the driver should read the server now: not while work is outstanding, nor while
    /// the FETCH's tagged reply waits for openings, nor further than [`AHEAD_BYTES`] ahead of
    /// the client while messages are being opened.
    pub fn reading_server(&self) -> bool {
        !self.closed
            && self.awaiting.is_none()
            && self.tagged.is_none()
            && (self.opening.is_empty() || self.ahead < AHEAD_BYTES)
    }

    /// Whether part of a command line has arrived (the whole line is then on the clock).
    pub fn partial_line(&self) -> bool {
        self.splitter.partial_line()
    }

    /// Bytes from the mail program.
    pub fn from_client(&mut self, bytes: &[u8]) {
        self.splitter.push(bytes);
        self.pump();
    }

    /// Bytes from the server.
    pub fn from_server(&mut self, bytes: &[u8]) {
        self.framer.push(bytes);
        self.pump();
    }

    /// Where the driver reads the server's next bytes to (the framer's own buffer, no copy);
    /// [`Core::server_read`] after reading.
    pub fn server_space(&mut self) -> bytes::buf::Limit<&mut Vec<u8>> {
        self.framer.space()
    }

    /// Bytes from the server were read into [`Core::server_space`].
    pub fn server_read(&mut self) {
        self.pump();
    }

    /// The mail program closed its side.
    pub fn client_closed(&mut self) {
        self.close();
    }

    /// The server closed its side: the normal end after LOGOUT, otherwise a BYE for the client.
    pub fn server_closed(&mut self) {
        if self.logged_out {
            self.close();
        } else {
            self.bye("the mail server closed the connection");
        }
    }

    /// The server stopped answering while the client waited for it.
    pub fn server_timed_out(&mut self) {
        self.bye("the mail server did not answer in time");
    }

    /// The client was silent too long: in the middle of a command line, or between commands.
    pub fn timed_out(&mut self, mid_line: bool) {
        if mid_line {
            self.bye("a command line took too long to arrive");
        } else {
            self.bye("autologout: no command for too long");
        }
    }

    /// The next thing to do.
    pub fn poll(&mut self) -> Step {
        self.steps.pop_front().unwrap_or(Step::Idle)
    }

    /// Hands the outcome of the last [`Work`] to the core.
    pub fn answer(&mut self, answer: Answer) {
        match (self.awaiting.take(), answer) {
            // Only envelopd's own operations (a job) open messages as work.
            (Some(Awaiting::Present(uids)), Answer::Presented(shown))
                if shown.len() == uids.len() =>
            {
                match self.job.as_mut() {
                    Some(job) => job.shown.extend(uids.into_iter().zip(shown)),
                    None => self.unasked(),
                }
            }
            (Some(Awaiting::Encrypt), Answer::Encrypted(result)) => self.encrypted(result),
            (Some(Awaiting::Tls), Answer::Tls(true)) => self.cfg.secure = true,
            (Some(Awaiting::Tls), Answer::Tls(false)) => self.close(),
            _ => self.unasked(),
        }
        self.pump();
    }

    /// An answer nobody asked for, or of the wrong kind: a driver bug, never the client's
    /// doing; the session cannot know where it stands, so it ends.
    fn unasked(&mut self) {
        tracing::error!("the IMAP session got an answer it did not ask for");
        self.close();
    }

    fn close(&mut self) {
        if !self.closed {
            self.closed = true;
            self.steps.push_back(Step::Close);
        }
    }

    fn bye(&mut self, why: &str) {
        if self.closed {
            return;
        }
        tracing::warn!(reason = why, "closing the session");
        self.tell_client(format!("* BYE envelopd: {why}\r\n").as_bytes());
        self.close();
    }

    /// Output for the client, joined to what is already waiting (a folder listing is a
    /// thousand small responses, and one write each would dominate); large output (a whole
    /// message) goes in its own buffer, taken as it is when it is owned.
    fn tell_client<'b>(&mut self, bytes: impl Into<std::borrow::Cow<'b, [u8]>>) {
        if self.closed {
            return;
        }
        let bytes = bytes.into();
        match self.steps.back_mut() {
            Some(Step::ToClient(out)) if bytes.len() < JOIN_OUTPUT => out.extend_from_slice(&bytes),
            _ => self.steps.push_back(Step::ToClient(bytes.into_owned())),
        }
    }

    /// Sends an answer to the client, its large literals from the shown message they are
    /// ranges of.
    fn tell_reply(&mut self, reply: Reply) {
        match reply {
            Reply::Bytes(b) => self.tell_client(b),
            Reply::Shown(shown, parts) => {
                for part in parts {
                    match part {
                        fetch::Part::Bytes(b) => self.tell_client(b),
                        fetch::Part::Shown(range) if !self.closed => self
                            .steps
                            .push_back(Step::ToClientShown(shown.clone(), range)),
                        fetch::Part::Shown(_) => {}
                    }
                }
            }
        }
    }

    fn tell_server(&mut self, bytes: &[u8]) {
        if self.closed {
            return;
        }
        if let Some(Step::ToServer(out)) = self.steps.back_mut() {
            out.extend_from_slice(bytes);
        } else {
            self.steps.push_back(Step::ToServer(bytes.to_vec()));
        }
    }

    fn work(&mut self, work: Work, awaiting: Awaiting) {
        self.steps.push_back(Step::Do(work));
        self.awaiting = Some(awaiting);
    }

    /// Moves everything on that can move: server messages, envelopd's own operation, then
    /// client pieces (not while a FETCH is pending or an operation runs).
    fn pump(&mut self) {
        loop {
            if self.closed || self.awaiting.is_some() || self.tagged.is_some() {
                return;
            }
            match self.framer.next_message() {
                Ok(Some(m)) => {
                    self.server_message(m);
                    continue;
                }
                Ok(None) => {}
                Err(e) => return self.bye(&format!("the mail server sent {e}")),
            }
            if self.job.is_some() {
                if self.advance_job() {
                    continue;
                }
                return;
            }
            if self.pending.is_some() {
                return;
            }
            match self.splitter.next_piece() {
                Ok(Some(piece)) => self.client_piece(piece),
                Ok(None) => return,
                Err(e) => return self.bye(&format!("the mail program sent {e}")),
            }
        }
    }

    /// The capability list as this client may see it: hidden ones removed; STARTTLS while it can
    /// still be used; LOGINDISABLED off loopback until TLS protects the connection.
    fn caps(&self, m: &[u8]) -> Vec<u8> {
        let mut extra = Vec::new();
        if !self.cfg.secure && self.cfg.starttls {
            extra.push("STARTTLS");
        }
        if !self.login_allowed() {
            extra.push("LOGINDISABLED");
        }
        filter_capabilities_with(m, &extra)
    }

    /// Passwords cross the network only under TLS: in the clear only from this machine.
    fn login_allowed(&self) -> bool {
        self.cfg.secure || self.cfg.peer.is_loopback()
    }

    /// One piece of client input: a command line, a continuation line, or literal bytes.
    fn client_piece(&mut self, piece: Piece) {
        if self.append.is_some() {
            return self.append_piece(piece);
        }
        if self.append_name.is_some() {
            return self.append_name_piece(piece);
        }
        if let (Some(_), Piece::Line { bytes, .. }) = (&self.continuation, &piece) {
            self.continuation_line(bytes);
            return self.tell_server(bytes);
        }
        if self.discarding {
            match &piece {
                Piece::Literal(_) => return,
                Piece::Line {
                    bytes,
                    first: false,
                } => {
                    self.discarding = literal_at_end(bytes).is_some();
                    return;
                }
                Piece::Line { first: true, .. } => self.discarding = false,
            }
        }
        match piece {
            Piece::Line { bytes, first: true } if literal_at_end(&bytes).is_none() => {
                self.command(bytes)
            }
            Piece::Line { bytes, first: true } if self.refuse_literal_login(&bytes) => {}
            Piece::Line { bytes, first: true } if self.start_append(&bytes) => {}
            Piece::Line { bytes, first: true } if self.start_append_name(&bytes) => {}
            Piece::Line { bytes, first } => {
                if first {
                    self.in_flight += 1;
                    self.assembling = Some(Vec::new());
                    self.assembly_overflowed = false;
                }
                self.assemble(&bytes);
                if literal_at_end(&bytes).is_none() {
                    // The command's last line: what it means, from the whole of it.
                    let whole = self.assembling.take();
                    if let (Some(whole), false) = (whole, self.assembly_overflowed) {
                        self.note_command(&whole);
                    }
                }
                self.tell_server(&bytes);
            }
            Piece::Literal(bytes) => {
                self.assemble(&bytes);
                self.tell_server(&bytes)
            }
        }
    }

    /// Adds a piece of a multi-line command to the one being assembled, within the bound.
    fn assemble(&mut self, bytes: &[u8]) {
        if let Some(buf) = self.assembling.as_mut() {
            if buf.len() + bytes.len() > crate::command::MAX_NOTED {
                // Too long to be a name worth keeping: the command is passed on, and names
                // nobody (no cache, no keys for a login that cannot be read). Nothing of it is
                // parsed later: a literal's bytes must never pass for a command of their own.
                buf.clear();
                self.assembly_overflowed = true;
            } else if !self.assembly_overflowed {
                buf.extend_from_slice(bytes);
            }
        }
    }

    /// Why this session may not log in now (cleartext off this machine, or too many failed
    /// logins), as the tagged answer for `tag`; `user` is the claimed name, when known.
    fn login_refusal(&self, tag: &str, user: Option<&str>) -> Option<String> {
        if !self.login_allowed() {
            return Some(format!("{tag} NO [PRIVACYREQUIRED] use STARTTLS first: passwords do not cross the network in the clear\r\n"));
        }
        let wait = self.env.locked(self.cfg.peer, user)?;
        tracing::warn!(peer = %self.cfg.peer, "login refused: too many failed logins");
        Some(format!(
            "{tag} NO [UNAVAILABLE] too many failed logins; try again in {} minutes\r\n",
            wait.as_secs() / 60 + 1
        ))
    }

    /// LOGIN or AUTHENTICATE whose name or password comes as a literal gets the same checks as
    /// the one-line form, before its `+`: otherwise a literal would be a way around the
    /// cleartext rule and the failed-login lock. True when the command was refused.
    fn refuse_literal_login(&mut self, line: &[u8]) -> bool {
        let (tag, name) = crate::command::verb(line);
        if !matches!(name.as_str(), "LOGIN" | "AUTHENTICATE") {
            return false;
        }
        let user = (name == "LOGIN")
            .then(|| crate::command::login_before_literal(line))
            .flatten();
        let Some(refusal) = self.login_refusal(&tag, user.as_deref()) else {
            return false;
        };
        self.tell_client(refusal.as_bytes());
        let open = memchr::memrchr(b'{', line).expect("a literal marker");
        if line[open..].contains(&b'+') {
            // LITERAL+: the data is on its way regardless; drop it and the rest of the command.
            self.discarding = true;
        } else {
            self.splitter.cancel_literal();
        }
        true
    }

    /// Starts capturing `APPEND <Sent or Drafts> ... {n}` so the message can be stored
    /// encrypted; false when the command is not such an APPEND (it then passes unchanged).
    fn start_append(&mut self, line: &[u8]) -> bool {
        let (tag, name) = crate::command::verb(line);
        if name != "APPEND" {
            return false;
        }
        let Some(mailbox) = crate::command::append_mailbox(line) else {
            return false;
        };
        let leaf = mailbox.rsplit(['/', '.']).next().unwrap_or(&mailbox);
        if !self.env.encrypts_appends_to(leaf) {
            return false;
        }
        let Some(cert) = self.login.as_deref().and_then(|l| self.env.own_cert(l)) else {
            return false;
        };
        let n = literal_at_end(line).expect("checked by the caller");
        let open = memchr::memrchr(b'{', line).expect("a literal marker");
        let sync = !line[open..].contains(&b'+');
        let too_big = n > self.cfg.max_literal / 2;
        if too_big && sync {
            // The client waits for "+" before sending the literal: refusing now costs nothing.
            let r = format!("{tag} NO [TOOBIG] the message is too big for envelopd\r\n");
            self.tell_client(r.as_bytes());
            self.splitter.cancel_literal();
            return true;
        }
        if sync {
            self.tell_client(b"+ Ready for literal data\r\n");
        }
        self.append = Some(AppendCapture {
            prefix: line[..open].to_vec(),
            tag,
            data: Vec::with_capacity(if too_big { 0 } else { n as usize }),
            too_big,
            cert,
        });
        true
    }

    /// Starts reading the mailbox name of `APPEND {n}` (the name as a literal) when this login
    /// stores some appends encrypted; false otherwise (the command then passes unchanged).
    /// Without this, a mail program that sends the folder name as a literal would store its
    /// Sent copies in plain text whatever the configuration says.
    fn start_append_name(&mut self, line: &[u8]) -> bool {
        let (tag, name) = crate::command::verb(line);
        if name != "APPEND"
            || crate::command::append_mailbox(line).is_some()
            || !crate::command::append_name_is_literal(line)
        {
            return false;
        }
        if self
            .login
            .as_deref()
            .and_then(|l| self.env.own_cert(l))
            .is_none()
        {
            return false;
        }
        let want = literal_at_end(line).expect("checked by the caller");
        let open = memchr::memrchr(b'{', line).expect("a literal marker");
        let sync = !line[open..].contains(&b'+');
        if want > MAX_NAME_LITERAL {
            let r = format!(
                "{tag} NO envelopd reads mailbox names of at most {MAX_NAME_LITERAL} bytes\r\n"
            );
            self.tell_client(r.as_bytes());
            if sync {
                self.splitter.cancel_literal();
            } else {
                self.discarding = true;
            }
            return true;
        }
        if sync {
            self.tell_client(b"+ Ready for literal data\r\n");
        }
        self.append_name = Some(NameLiteral {
            tag,
            want,
            name: Vec::with_capacity(want as usize),
        });
        true
    }

    /// The name literal, then the rest of the APPEND: the command goes on as if the name had
    /// been given as a quoted string (which the server is sent).
    fn append_name_piece(&mut self, piece: Piece) {
        match piece {
            Piece::Literal(bytes) => {
                let n = self.append_name.as_mut().expect("reading a name");
                let room = (n.want as usize).saturating_sub(n.name.len());
                n.name.extend_from_slice(&bytes[..bytes.len().min(room)]);
            }
            Piece::Line { bytes, .. } => {
                let n = self.append_name.take().expect("reading a name");
                let Some(quoted) = crate::command::quoted(&n.name) else {
                    let r = format!(
                        "{} NO envelopd cannot pass on this mailbox name (send it as a quoted string)\r\n",
                        n.tag
                    );
                    self.tell_client(r.as_bytes());
                    if literal_at_end(&bytes).is_some() {
                        let open = memchr::memrchr(b'{', &bytes).expect("a literal marker");
                        if bytes[open..].contains(&b'+') {
                            self.discarding = true;
                        } else {
                            self.splitter.cancel_literal();
                        }
                    }
                    return;
                };
                let mut line = format!("{} APPEND {quoted}", n.tag).into_bytes();
                line.extend_from_slice(&bytes);
                self.client_piece(Piece::Line {
                    bytes: line,
                    first: true,
                });
            }
        }
    }

    fn append_piece(&mut self, piece: Piece) {
        let cap = self.append.as_mut().expect("capturing");
        match piece {
            Piece::Literal(bytes) => {
                if !cap.too_big {
                    cap.data.extend_from_slice(&bytes);
                }
            }
            Piece::Line { bytes, .. } => {
                let cap = self.append.take().expect("capturing");
                if bytes != b"\r\n" && bytes != b"\n" {
                    // MULTIAPPEND (more messages in one command) is hidden; a client that tries
                    // it anyway gets a clear refusal for the whole command.
                    let r = format!(
                        "{} NO envelopd stores one message per APPEND here\r\n",
                        cap.tag
                    );
                    if literal_at_end(&bytes).is_some() {
                        self.splitter.cancel_literal();
                    }
                    return self.tell_client(r.as_bytes());
                }
                if cap.too_big {
                    let r = format!(
                        "{} NO [TOOBIG] the message is too big for envelopd\r\n",
                        cap.tag
                    );
                    return self.tell_client(r.as_bytes());
                }
                self.finish_append(cap);
            }
        }
    }

    /// Remembers what a whole command (literals included) means for the session: the login
    /// name claimed, the mailbox selected, a SASL exchange or IDLE starting. Read by imap-codec;
    /// a command it cannot parse claims nothing (no cache, no keys), whatever the server makes
    /// of it.
    fn note_command(&mut self, command: &[u8]) {
        use crate::command::Meaning;
        let Some((tag, meaning)) = crate::command::parse(command) else {
            return;
        };
        match meaning {
            Meaning::Login(name) => self.claimed = Some((tag, Some(name))),
            Meaning::Logout => self.logged_out = true,
            Meaning::Select(mailbox) => {
                self.selecting = Some((tag, mailbox));
                self.mailbox = None;
                self.uidvalidity = None;
            }
            Meaning::Authenticate { mechanism, initial } => {
                // The login name comes from the initial response (SASL-IR) or the first
                // response line; the password is never kept.
                let name = initial
                    .as_deref()
                    .and_then(|ir| net::login::sasl_name(&mechanism, ir));
                self.claimed = Some((tag.clone(), name));
                self.continuation = Some(Continuation::Sasl {
                    tag,
                    mechanism,
                    name_pending: initial.is_none(),
                });
            }
            Meaning::Idle => self.continuation = Some(Continuation::Idle),
            Meaning::Other => {}
        }
    }

    /// A non-command line from the client (SASL response or DONE): what it tells envelopd.
    fn continuation_line(&mut self, line: &[u8]) {
        match &mut self.continuation {
            Some(Continuation::Sasl {
                mechanism,
                name_pending,
                ..
            }) if *name_pending => {
                let text = String::from_utf8_lossy(line);
                let name = smime::mime::base64_decode(text.trim().as_bytes())
                    .ok()
                    .and_then(|raw| net::login::sasl_name(mechanism, &raw));
                if let Some((_, claimed)) = self.claimed.as_mut() {
                    *claimed = name;
                }
                *name_pending = false;
            }
            Some(Continuation::Sasl { .. }) => {}
            Some(Continuation::Idle) => self.continuation = None,
            None => {}
        }
    }

    /// A whole one-line command from the client.
    fn command(&mut self, line: Vec<u8>) {
        let (tag, name) = crate::command::verb(&line);
        if name == "FETCH" || name == "UID FETCH" {
            // In a mailbox envelopd has seen, it knows which messages it shows in its form and
            // asks the server for nothing more than the client does (plus the UID).
            let known = self
                .mailbox_key()
                .is_some_and(|k| self.env.cache().lock().is_ok_and(|c| c.knows(&k)));
            if let Some((rewritten, plan)) = fetch::plan_with(&line, !known) {
                self.pending = Some(plan);
                // Taken from the first answer: a SELECT still in flight may change it.
                self.pending_box = None;
                self.held.clear();
                self.shown_here.clear();
                self.ahead = 0;
                self.in_flight += 1;
                return self.tell_server(&rewritten);
            }
        }
        if (name == "SEARCH" || name == "UID SEARCH") && self.mailbox.is_some() {
            if let Some(plan) = crate::search::plan(&line) {
                return self.start_search(plan);
            }
        }
        if matches!(name.as_str(), "LOGIN" | "AUTHENTICATE") {
            let user = match crate::command::parse(&line) {
                Some((_, crate::command::Meaning::Login(n))) => Some(n),
                Some((_, crate::command::Meaning::Authenticate { mechanism, initial })) => {
                    initial.and_then(|ir| net::login::sasl_name(&mechanism, &ir))
                }
                _ => None,
            };
            if let Some(r) = self.login_refusal(&tag, user.as_deref()) {
                return self.tell_client(r.as_bytes());
            }
        }
        match name.as_str() {
            "STARTTLS" => return self.starttls(&tag),
            "COMPRESS" => {
                let r = format!("{tag} NO COMPRESS is not available through envelopd\r\n");
                return self.tell_client(r.as_bytes());
            }
            _ => self.note_command(&line),
        }
        self.in_flight += 1;
        self.tell_server(&line);
    }

    /// Client STARTTLS (RFC 9051 §6.2.1): OK, then the handshake; plaintext sent after the
    /// command is discarded, not executed under TLS.
    fn starttls(&mut self, tag: &str) {
        if self.cfg.secure || !self.cfg.starttls {
            let r = format!("{tag} NO TLS is not available here\r\n");
            return self.tell_client(r.as_bytes());
        }
        let r = format!("{tag} OK Begin TLS negotiation now\r\n");
        self.tell_client(r.as_bytes());
        self.splitter = Splitter::new(MAX_LINE);
        self.work(Work::StartTls, Awaiting::Tls);
    }

    /// One complete message from the server.
    fn server_message(&mut self, m: Vec<u8>) {
        let Some(m) = self.job_message(m) else {
            return;
        };
        if let Some(plan) = &self.pending {
            if tag_of(&m) == plan.tag.as_bytes() {
                // Everything opened beside the session comes back first (it belongs to the
                // FETCH being completed); nothing more is read from the server meanwhile.
                if !self.opening.is_empty() {
                    self.tagged = Some(m);
                    return;
                }
                return self.complete_fetch(m);
            }
        }
        // The session's state follows every answer at once, also while a FETCH is pending: a
        // client may pipeline SELECT and FETCH, and the FETCH's responses belong to the
        // mailbox that SELECT opened.
        self.note_server(&m);
        if self.pending.is_some() {
            if self.pending_box.is_none() {
                self.pending_box = self.mailbox_key();
            }
            // Until something must wait for its shown form, answers stream on; after that,
            // everything keeps its order, and what waits is opened as it arrives.
            let m = if self.held.is_empty() {
                match self.answer_now(m) {
                    Ok(out) => return self.tell_reply(out),
                    Err(m) => m,
                }
            } else {
                m
            };
            let m = self.open_early(m);
            // What waits counts toward the bytes read ahead too (a large plain message held
            // behind one being opened).
            self.ahead += m.len();
            self.held.push_back(m);
            // What waits may be answerable now (a plain message classified by its own bytes
            // just now).
            return self.release();
        }
        let out = self.caps(&m);
        self.tell_client(&out);
    }

    /// Follows one server answer (other than the pending FETCH's tagged reply): the mailbox's
    /// UIDVALIDITY, commands completed, the login that succeeded, the mailbox selected.
    fn note_server(&mut self, m: &[u8]) {
        if m.starts_with(b"* ") {
            if let Some(v) = uidvalidity(m) {
                self.uidvalidity = Some(v);
                // A pending FETCH belongs to the mailbox now being opened.
                self.pending_box = None;
            }
        } else if !m.starts_with(b"+") {
            self.in_flight = self.in_flight.saturating_sub(1);
            if let Some(Continuation::Sasl { tag, .. }) = &self.continuation {
                if tag_of(m) == tag.as_bytes() {
                    self.continuation = None;
                }
            }
            if let Some((tag, name)) = &self.claimed {
                if tag_of(m) == tag.as_bytes() {
                    if m[tag.len()..].starts_with(b" OK") {
                        self.login = name.clone();
                    } else if m[tag.len()..].starts_with(b" NO") {
                        self.env.login_failed(self.cfg.peer, name.as_deref());
                    }
                    self.claimed = None;
                }
            }
        }
        if let Some((tag, mailbox)) = &self.selecting {
            if tag_of(m) == tag.as_bytes() {
                if m[tag.len()..].starts_with(b" OK") {
                    self.mailbox = Some(mailbox.clone());
                    self.pending_box = None;
                }
                self.selecting = None;
            }
        }
    }

    /// Hands out the work of opening `batch`.
    pub(super) fn present(&mut self, batch: Vec<(u32, Vec<u8>)>) {
        let uids: Vec<u32> = batch.iter().map(|(u, _)| *u).collect();
        let messages = batch
            .into_iter()
            .map(|(uid, bytes)| Stored {
                uid,
                bytes,
                key: self.cache_key(uid),
            })
            .collect();
        let login = self.login.clone();
        self.work(Work::Present { login, messages }, Awaiting::Present(uids));
    }

    fn mailbox_key(&self) -> Option<MailboxKey> {
        Some((
            self.login.clone()?,
            self.mailbox.clone()?,
            self.uidvalidity?,
        ))
    }

    fn cache_key(&self, uid: u32) -> Option<CacheKey> {
        Some((
            self.login.clone()?,
            self.mailbox.clone()?,
            self.uidvalidity?,
            uid,
        ))
    }
}

/// Whether a FETCH response's message must be shown in envelopd's form (S/MIME, or carrying a
/// status header), judged by the header fields envelopd asked for.
fn needs_shown_form(r: &fetch::FetchResponse) -> bool {
    r.marker().is_some_and(|mk| needs_form(&mk))
}

/// Whether a message with these header fields (envelopd's marker, or its whole header) is
/// shown in envelopd's form.
fn needs_form(fields: &[u8]) -> bool {
    needs_presentation(
        &fetch::marker_content_type(fields),
        fetch::marker_has_status(fields),
    )
}

/// The tag of a server message (its first word; `*` or `+` for untagged ones).
fn tag_of(message: &[u8]) -> &[u8] {
    let end = memchr::memchr(b' ', message).unwrap_or(message.len());
    &message[..end]
}

/// `* OK [UIDVALIDITY n]`.
fn uidvalidity(m: &[u8]) -> Option<u32> {
    // Only `* OK [UIDVALIDITY n]` (RFC 3501 §7.1): this runs for every untagged answer, and a
    // FETCH response's literal may be megabytes long.
    const CODE: &[u8] = b"* OK [UIDVALIDITY ";
    if !m.get(..CODE.len())?.eq_ignore_ascii_case(CODE) {
        return None;
    }
    let text = String::from_utf8_lossy(m);
    let start = CODE.len();
    let end = text[start..].find(']')? + start;
    text[start..end].trim().parse().ok()
}

/// An answer for the client: bytes, or parts with ranges of a shown message.
enum Reply {
    /// Bytes as they are.
    Bytes(Vec<u8>),
    /// The parts of an answer given from this shown message.
    Shown(Arc<Presentation>, Vec<fetch::Part>),
}

/// The map type for shown forms by UID.
pub(crate) type Shown = HashMap<u32, Arc<Presentation>>;
