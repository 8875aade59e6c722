//! The SMTP client towards the provider: one connection per client session, replies parsed with
//! `smtp-proto`, every wait bounded by a timeout, every failure turned into the reply the client
//! should see (4xx when the provider cannot be reached, so the client keeps its message).

use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::ServerName;
use smtp_proto::response::parser::ResponseReceiver;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::core::ProviderInfo;
use net::conn::Conn;
use net::target::{Target, TargetTls};

/// An SMTP reply: code, enhanced status (if any) and text lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The three-digit code.
    pub code: u16,
    /// The enhanced status code, e.g. `2.0.0`, or empty.
    pub enhanced: String,
    /// The text (lines joined with a space).
    pub text: String,
}

impl Reply {
    /// A reply made by envelopd itself.
    pub fn new(code: u16, enhanced: &str, text: impl Into<String>) -> Self {
        Reply {
            code,
            enhanced: enhanced.to_string(),
            text: text.into(),
        }
    }

    /// True for 2xx.
    pub fn is_positive(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// The reply as a single line with CRLF, ready for the client.
    pub fn line(&self) -> String {
        let text: String = self
            .text
            .chars()
            .filter(|c| *c != '\r' && *c != '\n')
            .collect();
        if self.enhanced.is_empty() {
            format!("{} {}\r\n", self.code, text)
        } else {
            format!("{} {} {}\r\n", self.code, self.enhanced, text)
        }
    }

    fn unavailable(what: &str) -> Self {
        Reply::new(
            451,
            "4.4.1",
            format!("provider not reachable or not answering ({what}); try again later"),
        )
    }
}

/// How long each step towards the provider may take (RFC 5321 §4.5.3.2 gives 5 minutes for
/// most, 10 for the end of data).
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// Connecting and the greeting.
    pub connect: Duration,
    /// Each command's reply.
    pub command: Duration,
    /// The reply after the message data.
    pub data_end: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(30),
            command: Duration::from_secs(300),
            data_end: Duration::from_secs(600),
        }
    }
}

/// How many commands go to the provider in one pipelined write (RFC 2920 §3.1 asks the
/// client to avoid deadlock: the replies to 100 short commands are a few KiB, which always fit
/// in the socket buffers while envelopd is still writing).
pub const PIPELINE_GROUP: usize = 100;

/// A connection to the provider.
pub struct Upstream {
    stream: Conn,
    buf: Vec<u8>,
    timeouts: Timeouts,
    /// What the provider announced in its EHLO reply (keywords upper-cased, its SIZE).
    pub info: ProviderInfo,
    /// `host:port (tls)`, for the status page.
    target: String,
    /// Set up completely: later transport failures count as upstream errors of their own.
    ready: bool,
}

impl Upstream {
    /// Connects, sets up TLS as configured, reads the greeting and says EHLO. Errors are the
    /// reply for the client (4xx: the client keeps its message and tries again later).
    pub async fn connect(
        target: &Target,
        helo_name: &str,
        timeouts: Timeouts,
    ) -> Result<Self, Reply> {
        let o = net::observe::get();
        match Self::set_up(target, helo_name, timeouts).await {
            Ok(mut up) => {
                o.upstream_ok("smtp", target.describe());
                up.ready = true;
                Ok(up)
            }
            Err(r) => {
                o.upstream_error("smtp", target.describe(), &r.text);
                Err(r)
            }
        }
    }

    async fn set_up(target: &Target, helo_name: &str, timeouts: Timeouts) -> Result<Self, Reply> {
        let tcp = timeout(
            timeouts.connect,
            TcpStream::connect((target.host.as_str(), target.port)),
        )
        .await
        .map_err(|_| Reply::unavailable("connection timed out"))?
        .map_err(|e| Reply::unavailable(&e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let mut up = Upstream {
            stream: Conn::Plain(tcp),
            buf: Vec::with_capacity(4096),
            timeouts,
            info: ProviderInfo::default(),
            target: target.describe(),
            ready: false,
        };
        if let TargetTls::Implicit(config) = &target.tls {
            up.start_tls(config.clone(), &target.host).await?;
        }
        let greeting = up.read_reply(timeouts.connect).await?;
        if greeting.code != 220 {
            return Err(Reply::new(
                451,
                "4.4.1",
                format!("provider refused the connection: {}", greeting.text),
            ));
        }
        up.ehlo(helo_name).await?;
        if let TargetTls::Starttls(config) = &target.tls {
            if !up.has("STARTTLS") {
                return Err(Reply::new(
                    451,
                    "4.7.0",
                    "the provider does not offer STARTTLS; envelopd sends nothing without TLS",
                ));
            }
            let go = up.command("STARTTLS").await?;
            if go.code != 220 {
                return Err(Reply::new(
                    451,
                    "4.7.0",
                    format!("the provider refused STARTTLS: {} {}", go.code, go.text),
                ));
            }
            if !up.buf.is_empty() {
                // Bytes sent before the handshake would be read as if they came over TLS.
                return Err(Reply::new(
                    451,
                    "4.7.0",
                    "the provider sent data before the TLS handshake; not using this connection",
                ));
            }
            up.start_tls(config.clone(), &target.host).await?;
            up.ehlo(helo_name).await?;
        }
        Ok(up)
    }

    async fn start_tls(
        &mut self,
        config: Arc<rustls::ClientConfig>,
        host: &str,
    ) -> Result<(), Reply> {
        let name = ServerName::try_from(host.to_string()).map_err(|_| {
            Reply::new(
                451,
                "4.7.0",
                format!("{host} is not a valid TLS server name"),
            )
        })?;
        timeout(
            self.timeouts.connect,
            self.stream.upgrade_client(config, name),
        )
        .await
        .map_err(|_| Reply::new(451, "4.7.0", "TLS handshake with the provider timed out"))?
        .map_err(|e| {
            tracing::warn!(error = %e, "TLS handshake with the provider failed");
            Reply::new(451, "4.7.0", format!("TLS with the provider failed: {e}"))
        })
    }

    async fn ehlo(&mut self, helo_name: &str) -> Result<(), Reply> {
        self.write(format!("EHLO {helo_name}\r\n").as_bytes())
            .await?;
        let (ehlo, raw) = self.read_raw(self.timeouts.command).await?;
        if !ehlo.is_positive() {
            return Err(Reply::new(
                451,
                "4.4.1",
                format!("provider refused EHLO: {}", ehlo.text),
            ));
        }
        self.info = ProviderInfo::from_capabilities(
            raw.split('\n')
                .skip(1)
                .map(|l| l.trim().to_ascii_uppercase())
                .filter(|l| !l.is_empty())
                .collect(),
        );
        Ok(())
    }

    /// The parameters of an EHLO keyword the provider announced, if it did.
    pub fn capability(&self, keyword: &str) -> Option<&str> {
        self.info.capability(keyword)
    }

    /// True if the provider announced the EHLO keyword.
    pub fn has(&self, keyword: &str) -> bool {
        self.info.has(keyword)
    }

    /// Whether the provider offers the SASL mechanism (AUTH PLAIN, AUTH LOGIN).
    pub fn offers_auth(&self, mechanism: &str) -> bool {
        self.info.offers_auth(mechanism)
    }

    /// True if the connection is protected by TLS.
    pub fn is_tls(&self) -> bool {
        self.stream.is_tls()
    }

    /// Sends one command line and returns the provider's reply.
    pub async fn command(&mut self, line: &str) -> Result<Reply, Reply> {
        self.write(format!("{line}\r\n").as_bytes()).await?;
        self.read_reply(self.timeouts.command).await
    }

    /// Sends one line that is a secret (an AUTH response) and returns the reply; the copy made
    /// for sending is wiped.
    pub async fn secret_line(&mut self, line: &[u8]) -> Result<Reply, Reply> {
        let mut bytes = zeroize::Zeroizing::new(Vec::with_capacity(line.len() + 2));
        bytes.extend_from_slice(line);
        bytes.extend_from_slice(b"\r\n");
        self.write(&bytes).await?;
        self.read_reply(self.timeouts.command).await
    }

    /// Sends a whole message and returns the provider's final reply: as one BDAT chunk when the
    /// provider offers CHUNKING, otherwise after DATA (dot-stuffed, CRLF-terminated).
    pub async fn data(&mut self, message: &[u8]) -> Result<Reply, Reply> {
        if self.has("CHUNKING") {
            return self.bdat(message).await;
        }
        let go = self.command("DATA").await?;
        if go.code != 354 {
            return Ok(go);
        }
        // Stuffed and written a window at a time: a 40 MB message is not copied whole again.
        let mut out = Vec::with_capacity(message.len().min(WINDOW) + WINDOW / 64 + 8);
        let mut at = 0;
        loop {
            let end = (at + WINDOW).min(message.len());
            out.clear();
            let line_start = at == 0 || message[at - 1] == b'\n';
            stuff_into(&message[at..end], line_start, &mut out);
            if end == message.len() {
                if !message.ends_with(b"\r\n") {
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(b".\r\n");
            }
            if let Err(lost) = self.write(&out).await {
                return Err(self.refusal_after_lost_write(lost).await);
            }
            if end == message.len() {
                break;
            }
            at = end;
        }
        self.read_reply(self.timeouts.data_end).await
    }

    /// RFC 3030: the command and the message leave in one write, so a message costs one round
    /// trip less than DATA (no 354 to wait for) and needs no dot-stuffing. The provider stores
    /// the same bytes DATA would have given it (a missing final CRLF is added, as there).
    async fn bdat(&mut self, message: &[u8]) -> Result<Reply, Reply> {
        let tail: &[u8] = if message.ends_with(b"\r\n") {
            b""
        } else {
            b"\r\n"
        };
        let command = format!("BDAT {} LAST\r\n", message.len() + tail.len());
        let written = if message.len() <= WINDOW {
            let mut out = Vec::with_capacity(command.len() + message.len() + tail.len());
            out.extend_from_slice(command.as_bytes());
            out.extend_from_slice(message);
            out.extend_from_slice(tail);
            self.write(&out).await
        } else {
            // A large message is written from its own buffer, not copied behind the command.
            match self.write(command.as_bytes()).await {
                Ok(()) => match self.write(message).await {
                    Ok(()) if !tail.is_empty() => self.write(tail).await,
                    other => other,
                },
                lost => lost,
            }
        };
        if let Err(lost) = written {
            return Err(self.refusal_after_lost_write(lost).await);
        }
        let r = self.read_reply(self.timeouts.data_end).await?;
        if !r.is_positive() {
            // RFC 3030 §2 leaves the transaction's state after a refused chunk to the server:
            // RSET makes sure the next MAIL starts clean. If even that fails the connection is
            // not trusted any more (`Err` makes the session drop it), but the client still
            // hears the provider's refusal, which is what decides about its message.
            if self.command("RSET").await.is_err() {
                return Err(r);
            }
        }
        Ok(r)
    }

    /// A provider may refuse in the middle of the data (too large, policy) and hang up without
    /// reading the rest, so the write fails. Its reply, if it gave one, is what the client must
    /// hear: a 5xx there is final and must not be turned into "try again". The connection is
    /// gone either way.
    async fn refusal_after_lost_write(&mut self, lost: Reply) -> Reply {
        let limit = self.timeouts.command.min(Duration::from_secs(10));
        match self.read_raw(limit).await {
            Ok((r, _)) if r.code >= 400 && r.code != 421 => r,
            _ => lost,
        }
    }

    /// One complete transaction: MAIL (with `params`, e.g. ` BODY=8BITMIME`), RCPT for each
    /// recipient (with its `rcpt_params`, same order, e.g. DSN's ` NOTIFY=SUCCESS`), DATA. The
    /// first refusal ends it.
    pub async fn transaction(
        &mut self,
        from: &str,
        params: &str,
        rcpts: &[String],
        rcpt_params: &[&str],
        message: &[u8],
    ) -> Result<Reply, Reply> {
        let rcpt_lines = rcpts
            .iter()
            .enumerate()
            .map(|(i, r)| format!("RCPT TO:<{r}>{}", rcpt_params.get(i).unwrap_or(&"")));
        if self.has("PIPELINING") {
            let mut lines = vec![format!("MAIL FROM:<{from}>{params}")];
            lines.extend(rcpt_lines);
            return self.pipelined_transaction(&lines, message).await;
        }
        let r = self.command(&format!("MAIL FROM:<{from}>{params}")).await?;
        if !r.is_positive() {
            return Ok(r);
        }
        for line in rcpt_lines {
            let r = self.command(&line).await?;
            if !r.is_positive() {
                let _ = self.command("RSET").await;
                return Ok(r);
            }
        }
        self.data(message).await
    }

    /// `transaction` with RFC 2920 command pipelining: MAIL and the RCPTs go out in groups of
    /// up to [`PIPELINE_GROUP`] commands, one write each, and the replies are read in order; a
    /// copy for ten recipients costs two round trips to a distant provider instead of eleven
    /// before the data. DATA (or BDAT) follows only when every command was accepted, so the
    /// outcome is the same as step by step: the first refusal ends the copy.
    async fn pipelined_transaction(
        &mut self,
        lines: &[String],
        message: &[u8],
    ) -> Result<Reply, Reply> {
        let mut refusal = None;
        for answer in self.pipelined(lines).await {
            // After a refused MAIL the RCPTs get "need MAIL" errors: the first refusal is the
            // one that explains.
            let r = answer?;
            if !r.is_positive() && refusal.is_none() {
                refusal = Some(r);
            }
        }
        if let Some(r) = refusal {
            let _ = self.command("RSET").await;
            return Ok(r);
        }
        self.data(message).await
    }

    /// Sends `lines` as pipelined commands (RFC 2920: more than one only to a provider that
    /// offers PIPELINING), in groups of [`PIPELINE_GROUP`], and returns one answer per line, in
    /// order. After a transport failure every remaining line gets that failure.
    pub async fn pipelined(&mut self, lines: &[String]) -> Vec<Result<Reply, Reply>> {
        let mut out = Vec::with_capacity(lines.len());
        for group in lines.chunks(PIPELINE_GROUP) {
            let mut bytes = String::new();
            for line in group {
                bytes.push_str(line);
                bytes.push_str("\r\n");
            }
            if let Err(e) = self.write(bytes.as_bytes()).await {
                out.resize(lines.len(), Err(e));
                return out;
            }
            for _ in group {
                match self.read_reply(self.timeouts.command).await {
                    Ok(r) => out.push(Ok(r)),
                    Err(e) => {
                        out.resize(lines.len(), Err(e));
                        return out;
                    }
                }
            }
        }
        out
    }

    /// Says QUIT and closes; errors do not matter any more.
    pub async fn quit(mut self) {
        let _ = self.command("QUIT").await;
        let _ = self.stream.shutdown().await;
    }

    /// Writes and flushes `bytes`; the command timeout limits progress, not the whole (a large
    /// message over a slow uplink takes as long as it takes while it moves; `Conn::send_all`).
    async fn write(&mut self, bytes: &[u8]) -> Result<(), Reply> {
        let r = self.stream.send_all(bytes, self.timeouts.command).await;
        r.map_err(|e| {
            let what = if e.kind() == std::io::ErrorKind::TimedOut {
                "timed out sending".to_string()
            } else {
                e.to_string()
            };
            self.failed(Reply::unavailable(&what))
        })
    }

    /// Counts a transport failure after set-up (set-up failures are counted by `connect`).
    fn failed(&self, r: Reply) -> Reply {
        if self.ready {
            net::observe::get().upstream_error("smtp", self.target.clone(), &r.text);
        }
        r
    }

    /// Reads one reply. A 421 means the provider is closing the connection: it becomes an
    /// error (the session then forgets this connection) and the client gets 451, since envelopd
    /// itself stays available.
    async fn read_reply(&mut self, limit: Duration) -> Result<Reply, Reply> {
        let (r, _) = self.read_raw(limit).await?;
        if r.code == 421 {
            return Err(Reply::new(
                451,
                "4.4.2",
                format!("provider closed the connection: {}", r.text),
            ));
        }
        Ok(r)
    }

    /// Reads one reply; also returns its text with the lines kept apart (for EHLO).
    async fn read_raw(&mut self, limit: Duration) -> Result<(Reply, String), Reply> {
        let mut receiver = ResponseReceiver::default();
        loop {
            if !self.buf.is_empty() {
                let mut iter = self.buf.iter();
                match receiver.parse(&mut iter) {
                    Ok(r) => {
                        let used = self.buf.len() - iter.as_slice().len();
                        self.buf.drain(..used);
                        let reply = Reply {
                            code: r.code,
                            enhanced: if r.esc == [0, 0, 0] {
                                String::new()
                            } else {
                                format!("{}.{}.{}", r.esc[0], r.esc[1], r.esc[2])
                            },
                            text: r.message.replace(['\r', '\n'], " ").trim().to_string(),
                        };
                        return Ok((reply, r.message));
                    }
                    // The receiver keeps what it has seen so far.
                    Err(smtp_proto::Error::NeedsMoreData { .. }) => self.buf.clear(),
                    Err(e) => {
                        return Err(Reply::new(
                            451,
                            "4.4.2",
                            format!("provider sent a broken reply ({e:?})"),
                        ))
                    }
                }
            }
            let mut chunk = [0u8; 4096];
            let n = timeout(limit, self.stream.read(&mut chunk))
                .await
                .map_err(|_| Reply::unavailable("timed out waiting for a reply"))
                .and_then(|r| r.map_err(|e| Reply::unavailable(&e.to_string())))
                .map_err(|e| self.failed(e))?;
            if n == 0 {
                return Err(self.failed(Reply::unavailable("connection closed")));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// DSN's MAIL parameters (RFC 3461 §4.3, §4.4) as the client gave them: ` RET=FULL|HDRS`,
/// ` ENVID=…` (xtext).
pub fn dsn_mail_params(from: &smtp_proto::MailFrom<String>) -> String {
    let mut out = String::new();
    if from.flags & smtp_proto::MAIL_RET_FULL != 0 {
        out.push_str(" RET=FULL");
    } else if from.flags & smtp_proto::MAIL_RET_HDRS != 0 {
        out.push_str(" RET=HDRS");
    }
    if let Some(id) = &from.env_id {
        out.push_str(" ENVID=");
        out.push_str(&xtext(id));
    }
    out
}

/// DSN's RCPT parameters (RFC 3461 §4.1, §4.2) as the client gave them: ` NOTIFY=…`,
/// ` ORCPT=rfc822;…` (xtext).
pub fn dsn_rcpt_params(to: &smtp_proto::RcptTo<String>) -> String {
    let mut out = String::new();
    if to.flags & smtp_proto::RCPT_NOTIFY_NEVER != 0 {
        out.push_str(" NOTIFY=NEVER");
    } else {
        let kinds: Vec<&str> = [
            (smtp_proto::RCPT_NOTIFY_SUCCESS, "SUCCESS"),
            (smtp_proto::RCPT_NOTIFY_FAILURE, "FAILURE"),
            (smtp_proto::RCPT_NOTIFY_DELAY, "DELAY"),
        ]
        .into_iter()
        .filter(|(flag, _)| to.flags & flag != 0)
        .map(|(_, name)| name)
        .collect();
        if !kinds.is_empty() {
            out.push_str(" NOTIFY=");
            out.push_str(&kinds.join(","));
        }
    }
    if let Some(orcpt) = &to.orcpt {
        out.push_str(" ORCPT=rfc822;");
        out.push_str(&xtext(orcpt));
    }
    out
}

/// RFC 3461 §4 xtext: printable ASCII except `+` and `=` as it is, every other byte as `+XX`;
/// so a parameter value can never carry a space, a CR or an LF into the provider's command.
pub fn xtext(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if (b'!'..=b'~').contains(&b) && b != b'+' && b != b'=' {
            out.push(b as char);
        } else {
            out.push_str(&format!("+{b:02X}"));
        }
    }
    out
}

/// How much of a message is dot-stuffed and written at a time (and the size up to which a
/// BDAT command and its message leave in one write).
const WINDOW: usize = 256 * 1024;

/// Dot-stuffs one piece of a message into `out`; `line_start`: the piece begins a line.
fn stuff_into(piece: &[u8], line_start: bool, out: &mut Vec<u8>) {
    // Whole runs between the rare lines that start with a dot are copied at once.
    let mut start = 0;
    if line_start && piece.first() == Some(&b'.') {
        out.push(b'.');
    }
    for nl in memchr::memchr_iter(b'\n', piece) {
        if piece.get(nl + 1) == Some(&b'.') {
            out.extend_from_slice(&piece[start..=nl]);
            out.push(b'.');
            start = nl + 1;
        }
    }
    out.extend_from_slice(&piece[start..]);
}

/// Dot-stuffing (RFC 5321 §4.5.2) and the final `.` line of a whole message at once; the
/// message must use CRLF. What `data` writes window by window is tested against it.
#[cfg(test)]
fn dot_stuff(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + message.len() / 64 + 8);
    stuff_into(message, true, &mut out);
    if !message.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_stuffing() {
        assert_eq!(
            dot_stuff(b".a\r\nb\r\n..c\r\n"),
            b"..a\r\nb\r\n...c\r\n.\r\n"
        );
        assert_eq!(dot_stuff(b"no newline"), b"no newline\r\n.\r\n");
        assert_eq!(dot_stuff(b"."), b"..\r\n.\r\n");
        assert_eq!(dot_stuff(b"a\r\n.\r\n.\r\n"), b"a\r\n..\r\n..\r\n.\r\n");
        assert_eq!(dot_stuff(b""), b"\r\n.\r\n");
    }

    #[test]
    fn dsn_parameters_are_passed_on_in_xtext() {
        // RFC 3461 §4's own example, and what must never get through raw.
        assert_eq!(xtext("George @Tax- ME .GOV"), "George+20@Tax-+20ME+20.GOV");
        assert_eq!(xtext("a+b=c\r\nRSET"), "a+2Bb+3Dc+0D+0ARSET");
        assert_eq!(xtext("Grüße"), "Gr+C3+BC+C3+9Fe");
        let parse_rcpt = |line: &str| {
            let mut r = smtp_proto::request::receiver::RequestReceiver::default();
            let bytes = format!("{line}\r\n").into_bytes();
            match r.ingest(&mut bytes.iter()).unwrap().into_owned() {
                smtp_proto::Request::Rcpt { to } => to,
                other => panic!("{other:?}"),
            }
        };
        let to = parse_rcpt("RCPT TO:<b@x> NOTIFY=DELAY,SUCCESS ORCPT=rfc822;Bob+20B@x");
        assert_eq!(
            dsn_rcpt_params(&to),
            " NOTIFY=SUCCESS,DELAY ORCPT=rfc822;Bob+20B@x"
        );
        assert_eq!(
            dsn_rcpt_params(&parse_rcpt("RCPT TO:<b@x> NOTIFY=NEVER")),
            " NOTIFY=NEVER"
        );
        assert_eq!(dsn_rcpt_params(&parse_rcpt("RCPT TO:<b@x>")), "");
        let mut r = smtp_proto::request::receiver::RequestReceiver::default();
        let bytes = b"MAIL FROM:<a@x> RET=HDRS ENVID=QQ+2B314\r\n".to_vec();
        let smtp_proto::Request::Mail { from } = r.ingest(&mut bytes.iter()).unwrap().into_owned()
        else {
            panic!()
        };
        assert_eq!(dsn_mail_params(&from), " RET=HDRS ENVID=QQ+2B314");
    }

    proptest::proptest! {
        /// The run-copying stuffer equals the byte-by-byte definition for any CRLF message.
        #[test]
        fn dot_stuffing_matches_the_definition(
            lines in proptest::collection::vec("[.a-z]{0,4}", 0..20)
        ) {
            let message: Vec<u8> = lines.iter().flat_map(|l| format!("{l}\r\n").into_bytes()).collect();
            let mut naive = Vec::new();
            let mut at_start = true;
            for &b in &message {
                if at_start && b == b'.' {
                    naive.push(b'.');
                }
                naive.push(b);
                at_start = b == b'\n';
            }
            if !message.ends_with(b"\r\n") {
                naive.extend_from_slice(b"\r\n");
            }
            naive.extend_from_slice(b".\r\n");
            proptest::prop_assert_eq!(dot_stuff(&message), naive);
        }

        /// Stuffing a message window by window (as a large message is sent) gives exactly the
        /// bytes of stuffing it whole, wherever the windows end.
        #[test]
        fn windowed_stuffing_equals_the_whole(
            lines in proptest::collection::vec("[.a-z]{0,4}", 0..20),
            window in 1usize..9,
        ) {
            let message: Vec<u8> = lines.iter().flat_map(|l| format!("{l}\r\n").into_bytes()).collect();
            let mut windowed = Vec::new();
            let mut at = 0;
            while at < message.len() {
                let end = (at + window).min(message.len());
                stuff_into(&message[at..end], at == 0 || message[at - 1] == b'\n', &mut windowed);
                at = end;
            }
            let mut whole = dot_stuff(&message);
            whole.truncate(whole.len() - 3);
            if !message.ends_with(b"\r\n") {
                whole.truncate(whole.len() - 2);
            }
            proptest::prop_assert_eq!(windowed, whole);
        }
    }

    #[test]
    fn reply_lines_cannot_be_split_by_injected_newlines() {
        let r = Reply::new(550, "5.7.1", "a\r\n250 ok");
        assert_eq!(r.line(), "550 5.7.1 a250 ok\r\n");
    }
}
