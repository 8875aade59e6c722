//! The SMTP client towards the provider: one connection per client session, replies parsed with
//! `smtp-proto`, every wait bounded by a timeout, every failure turned into the reply the client
//! should see (4xx when the provider cannot be reached, so the client keeps its message).

use std::time::Duration;

use smtp_proto::response::parser::ResponseReceiver;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

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

/// A connection to the provider.
pub struct Upstream {
    stream: TcpStream,
    buf: Vec<u8>,
    timeouts: Timeouts,
    /// The SIZE limit the provider announced, if any.
    pub size_limit: Option<usize>,
}

impl Upstream {
    /// Connects, reads the greeting and says EHLO. Errors are the reply for the client.
    pub async fn connect(addr: &str, helo_name: &str, timeouts: Timeouts) -> Result<Self, Reply> {
        let stream = timeout(timeouts.connect, TcpStream::connect(addr))
            .await
            .map_err(|_| Reply::unavailable("connection timed out"))?
            .map_err(|e| Reply::unavailable(&e.to_string()))?;
        let _ = stream.set_nodelay(true);
        let mut up = Upstream {
            stream,
            buf: Vec::with_capacity(4096),
            timeouts,
            size_limit: None,
        };
        let greeting = up.read_reply(timeouts.connect).await?;
        if greeting.code != 220 {
            return Err(Reply::new(
                451,
                "4.4.1",
                format!("provider refused the connection: {}", greeting.text),
            ));
        }
        let ehlo = up.command(&format!("EHLO {helo_name}")).await?;
        if !ehlo.is_positive() {
            return Err(Reply::new(
                451,
                "4.4.1",
                format!("provider refused EHLO: {}", ehlo.text),
            ));
        }
        up.size_limit = ehlo
            .text
            .split(' ')
            .skip_while(|w| !w.eq_ignore_ascii_case("SIZE"))
            .nth(1)
            .and_then(|n| n.parse().ok())
            .filter(|&n: &usize| n > 0);
        Ok(up)
    }

    /// Sends one command line and returns the provider's reply.
    pub async fn command(&mut self, line: &str) -> Result<Reply, Reply> {
        self.write(format!("{line}\r\n").as_bytes()).await?;
        self.read_reply(self.timeouts.command).await
    }

    /// Sends a whole message after DATA (dot-stuffed, CRLF-terminated) and returns the reply.
    pub async fn data(&mut self, message: &[u8]) -> Result<Reply, Reply> {
        let go = self.command("DATA").await?;
        if go.code != 354 {
            return Ok(go);
        }
        self.write(&dot_stuff(message)).await?;
        self.read_reply(self.timeouts.data_end).await
    }

    /// One complete transaction: MAIL, RCPT for each recipient, DATA. The first refusal ends it.
    pub async fn transaction(
        &mut self,
        from: &str,
        rcpts: &[String],
        message: &[u8],
    ) -> Result<Reply, Reply> {
        let r = self.command(&format!("MAIL FROM:<{from}>")).await?;
        if !r.is_positive() {
            return Ok(r);
        }
        for rcpt in rcpts {
            let r = self.command(&format!("RCPT TO:<{rcpt}>")).await?;
            if !r.is_positive() {
                let _ = self.command("RSET").await;
                return Ok(r);
            }
        }
        self.data(message).await
    }

    /// Says QUIT and closes; errors do not matter any more.
    pub async fn quit(mut self) {
        let _ = self.command("QUIT").await;
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), Reply> {
        timeout(self.timeouts.command, self.stream.write_all(bytes))
            .await
            .map_err(|_| Reply::unavailable("timed out sending"))?
            .map_err(|e| Reply::unavailable(&e.to_string()))
    }

    async fn read_reply(&mut self, limit: Duration) -> Result<Reply, Reply> {
        let mut receiver = ResponseReceiver::default();
        loop {
            if !self.buf.is_empty() {
                let mut iter = self.buf.iter();
                match receiver.parse(&mut iter) {
                    Ok(r) => {
                        let used = self.buf.len() - iter.as_slice().len();
                        self.buf.drain(..used);
                        return Ok(Reply {
                            code: r.code,
                            enhanced: if r.esc == [0, 0, 0] {
                                String::new()
                            } else {
                                format!("{}.{}.{}", r.esc[0], r.esc[1], r.esc[2])
                            },
                            text: r.message.replace(['\r', '\n'], " ").trim().to_string(),
                        });
                    }
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
                .map_err(|_| Reply::unavailable("timed out waiting for a reply"))?
                .map_err(|e| Reply::unavailable(&e.to_string()))?;
            if n == 0 {
                return Err(Reply::unavailable("connection closed"));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// Dot-stuffing (RFC 5321 §4.5.2) and the final `.` line; the message must use CRLF.
pub fn dot_stuff(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + message.len() / 64 + 8);
    let mut at_line_start = true;
    for &b in message {
        if at_line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        at_line_start = b == b'\n';
    }
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
    }

    #[test]
    fn reply_lines_cannot_be_split_by_injected_newlines() {
        let r = Reply::new(550, "5.7.1", "a\r\n250 ok");
        assert_eq!(r.line(), "550 5.7.1 a250 ok\r\n");
    }
}
