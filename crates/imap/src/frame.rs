//! Splitting IMAP byte streams, with bounded memory. From the server, whole messages (a line
//! and the literals it announces) are collected, because envelopd may rewrite them; the server
//! never waits for the client inside a response, so this cannot deadlock. From the client, lines
//! and literal bytes are handed on as they arrive: a client sending `{n}` waits for the server's
//! `+` before the literal, so a command must never be held back until it is complete.

/// What went wrong while splitting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// A line without CRLF longer than the limit.
    LineTooLong(usize),
    /// A literal announced larger than the limit.
    LiteralTooLong(u64),
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::LineTooLong(n) => write!(f, "a line longer than {n} bytes"),
            FrameError::LiteralTooLong(n) => write!(f, "a literal of {n} bytes, over the limit"),
        }
    }
}

/// The literal a line announces at its end (`{12}`, `{12+}`, `~{12}`), if any.
pub fn literal_at_end(line: &[u8]) -> Option<u64> {
    let line = line.strip_suffix(b"\n")?;
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let inner = line.strip_suffix(b"}")?;
    let open = memchr::memrchr(b'{', inner)?;
    let digits = &inner[open + 1..];
    let digits = digits
        .strip_suffix(b"+")
        .or_else(|| digits.strip_suffix(b"-"))
        .unwrap_or(digits);
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// From this size on, a message is handed out in the framer's own buffer instead of a copy.
const HAND_OVER: usize = 64 * 1024;

/// Collects whole server messages. The server is read straight into its buffer, a large
/// literal exactly to its end, so a large message leaves in that buffer and what follows it is
/// not copied along.
#[derive(Debug)]
pub struct Framer {
    buf: Vec<u8>,
    /// Where the current message starts (messages before it were handed out; the buffer is
    /// compacted only now and then, not after every small message).
    head: usize,
    /// Bytes of the buffer already checked (absolute position).
    pos: usize,
    literal_left: u64,
    max_line: usize,
    max_literal: u64,
}

/// How much is read from the server at a time outside a large literal.
const READ_PIECE: usize = 64 * 1024;

impl Framer {
    /// A framer with limits for one line and one literal.
    pub fn new(max_line: usize, max_literal: u64) -> Self {
        Framer {
            buf: Vec::with_capacity(8192),
            head: 0,
            pos: 0,
            literal_left: 0,
            max_line,
            max_literal,
        }
    }

    /// Adds received bytes.
    pub fn push(&mut self, data: &[u8]) {
        self.compact();
        self.buf.extend_from_slice(data);
    }

    /// Where the next bytes from the server are read to, straight into the buffer (no copy
    /// from a read buffer): room for the rest of a large literal being received, or a piece.
    /// What was read is looked at by [`Framer::next_message`].
    pub fn space(&mut self) -> bytes::buf::Limit<&mut Vec<u8>> {
        use bytes::BufMut;
        self.compact();
        let in_literal = self
            .literal_left
            .saturating_sub((self.buf.len() - self.pos) as u64);
        let want = if in_literal as usize >= READ_PIECE {
            // Exactly to the literal's end: the message then leaves without a tail to copy.
            in_literal as usize
        } else {
            READ_PIECE
        };
        self.buf.reserve(want);
        (&mut self.buf).limit(want)
    }

    /// Drops handed-out messages from the front of the buffer, now and then.
    fn compact(&mut self) {
        if self.head > 0 && self.head >= self.buf.len() / 2 {
            self.buf.drain(..self.head);
            self.pos -= self.head;
            self.head = 0;
        }
    }

    /// How many bytes are buffered beyond the messages already returned.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.head
    }

    /// The next complete message, if one is buffered (taken out of the buffer).
    pub fn next_message(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        loop {
            if self.literal_left > 0 {
                let available = (self.buf.len() - self.pos) as u64;
                if available < self.literal_left {
                    return Ok(None);
                }
                self.pos += self.literal_left as usize;
                self.literal_left = 0;
                continue;
            }
            let Some(nl) = memchr::memchr(b'\n', &self.buf[self.pos..]) else {
                if self.buf.len() - self.pos > self.max_line {
                    return Err(FrameError::LineTooLong(self.max_line));
                }
                return Ok(None);
            };
            let end = self.pos + nl + 1;
            if end - self.pos > self.max_line + 2 {
                return Err(FrameError::LineTooLong(self.max_line));
            }
            if let Some(n) = literal_at_end(&self.buf[self.pos..end]) {
                if n > self.max_literal {
                    return Err(FrameError::LiteralTooLong(n));
                }
                if n as usize >= HAND_OVER && self.head > 0 {
                    // The messages handed out before go now, while little of this one is
                    // here: later they would cost moving all of it.
                    self.buf.drain(..self.head);
                    self.pos -= self.head;
                    self.head = 0;
                }
                self.literal_left = n;
                self.pos += nl + 1;
                self.buf.reserve(n as usize);
                continue;
            }
            if end - self.head >= HAND_OVER {
                // A large message (a stored mail in a literal) leaves in the buffer it arrived
                // in: no copy, and the framer does not keep its capacity for the session.
                let rest = self.buf.split_off(end);
                let mut message = std::mem::replace(&mut self.buf, rest);
                if self.head > 0 {
                    message.drain(..self.head);
                }
                self.head = 0;
                self.pos = 0;
                return Ok(Some(message));
            }
            let message = self.buf[self.head..end].to_vec();
            self.head = end;
            self.pos = end;
            return Ok(Some(message));
        }
    }
}

/// A piece of the client's stream.
#[derive(Debug, PartialEq, Eq)]
pub enum Piece {
    /// One line with its line end; `first` when it starts a new command.
    Line {
        /// The bytes.
        bytes: Vec<u8>,
        /// Whether the line begins a command (not the continuation after a literal).
        first: bool,
    },
    /// Literal bytes (a literal may arrive in several pieces).
    Literal(Vec<u8>),
}

/// Splits the client's stream into lines and literal bytes.
#[derive(Debug)]
pub struct Splitter {
    buf: Vec<u8>,
    literal_left: u64,
    at_command_start: bool,
    max_line: usize,
}

impl Splitter {
    /// A splitter with a line limit.
    pub fn new(max_line: usize) -> Self {
        Splitter {
            buf: Vec::with_capacity(8192),
            literal_left: 0,
            at_command_start: true,
            max_line,
        }
    }

    /// Adds received bytes.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// True when part of a command line (not literal data) is waiting for the rest.
    pub fn partial_line(&self) -> bool {
        self.literal_left == 0 && !self.buf.is_empty()
    }

    /// Forgets the literal announced by the last line: the client will not send it (envelopd
    /// refused the command before its `+`), and the next line starts a new command.
    pub fn cancel_literal(&mut self) {
        self.literal_left = 0;
        self.at_command_start = true;
    }

    /// The next piece, if one is available.
    pub fn next_piece(&mut self) -> Result<Option<Piece>, FrameError> {
        if self.literal_left > 0 {
            if self.buf.is_empty() {
                return Ok(None);
            }
            let n = (self.literal_left.min(self.buf.len() as u64)) as usize;
            self.literal_left -= n as u64;
            return Ok(Some(Piece::Literal(self.buf.drain(..n).collect())));
        }
        let Some(nl) = memchr::memchr(b'\n', &self.buf) else {
            if self.buf.len() > self.max_line {
                return Err(FrameError::LineTooLong(self.max_line));
            }
            return Ok(None);
        };
        if nl > self.max_line {
            return Err(FrameError::LineTooLong(self.max_line));
        }
        let bytes: Vec<u8> = self.buf.drain(..=nl).collect();
        let first = self.at_command_start;
        match literal_at_end(&bytes) {
            Some(n) => {
                self.literal_left = n;
                self.at_command_start = false;
            }
            None => self.at_command_start = true,
        }
        Ok(Some(Piece::Line { bytes, first }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_are_found_at_line_ends_only() {
        assert_eq!(literal_at_end(b"a APPEND x {12}\r\n"), Some(12));
        assert_eq!(literal_at_end(b"a APPEND x {12+}\r\n"), Some(12));
        assert_eq!(literal_at_end(b"* 1 FETCH (BODY[] {0}\r\n"), Some(0));
        assert_eq!(literal_at_end(b"a SEARCH SUBJECT {x}\r\n"), None);
        assert_eq!(literal_at_end(b"a NOOP {12} more\r\n"), None);
        assert_eq!(literal_at_end(b"a X {99999999999999999999}\r\n"), None);
    }

    #[test]
    fn server_messages_are_whole_with_their_literals_and_bounded() {
        let mut f = Framer::new(100, 10);
        f.push(b"* 1 FETCH (BODY[] {5}\r\nab");
        assert_eq!(f.next_message().unwrap(), None);
        f.push(b"\ncd)\r\n* OK done\r\n");
        assert_eq!(
            f.next_message().unwrap().unwrap(),
            b"* 1 FETCH (BODY[] {5}\r\nab\ncd)\r\n"
        );
        assert_eq!(f.next_message().unwrap().unwrap(), b"* OK done\r\n");
        f.push(b"* 1 FETCH (BODY[] {2147483648}\r\n");
        assert_eq!(
            f.next_message(),
            Err(FrameError::LiteralTooLong(2147483648))
        );
        let mut f = Framer::new(100, 10);
        f.push(&[b'x'; 200]);
        assert_eq!(f.next_message(), Err(FrameError::LineTooLong(100)));
    }

    #[test]
    fn a_large_literal_is_read_straight_to_its_end_and_leaves_whole() {
        use bytes::BufMut;
        let mut f = Framer::new(1000, 1 << 30);
        let big = vec![b'q'; 300_000];
        // A small message first (handed out), then the large one's line and a little of it.
        f.push(b"* 1 EXISTS\r\n* 2 FETCH (UID 9 BODY[] {300000}\r\nqqqq");
        assert_eq!(f.next_message().unwrap().unwrap(), b"* 1 EXISTS\r\n");
        assert_eq!(f.next_message().unwrap(), None);
        let mut read = 4;
        while read < big.len() {
            let mut space = f.space();
            // Never past the literal's end while much of it is to come: no large tail to copy
            // when it leaves.
            let left = big.len() - read;
            assert_eq!(space.remaining_mut(), left.max(READ_PIECE));
            let n = (big.len() - read).min(70_000);
            space.put_slice(&big[read..read + n]);
            read += n;
            assert_eq!(f.next_message().unwrap(), None);
        }
        let mut space = f.space();
        assert_eq!(space.remaining_mut(), READ_PIECE);
        space.put_slice(b")\r\n* 3 EXISTS\r\n");
        let mut want = b"* 2 FETCH (UID 9 BODY[] {300000}\r\n".to_vec();
        want.extend_from_slice(&big);
        want.extend_from_slice(b")\r\n");
        assert_eq!(f.buffered(), want.len() + b"* 3 EXISTS\r\n".len());
        assert_eq!(f.next_message().unwrap().unwrap(), want);
        assert_eq!(f.next_message().unwrap().unwrap(), b"* 3 EXISTS\r\n");
        assert_eq!(f.buffered(), 0);
        // Messages before an error come out first, in order.
        f.push(b"* 4 EXISTS\r\n* 5 FETCH (BODY[] {2147483648}\r\n");
        assert_eq!(f.next_message().unwrap().unwrap(), b"* 4 EXISTS\r\n");
        assert_eq!(
            f.next_message(),
            Err(FrameError::LiteralTooLong(2147483648))
        );
    }

    #[test]
    fn client_literals_pass_in_pieces_and_commands_are_marked() {
        let mut s = Splitter::new(100);
        s.push(b"a LOGIN {3}\r\nbob {2}\r\npw\r\nb NOOP\r\n");
        let mut pieces = Vec::new();
        while let Some(p) = s.next_piece().unwrap() {
            pieces.push(p);
        }
        assert_eq!(
            pieces,
            vec![
                Piece::Line {
                    bytes: b"a LOGIN {3}\r\n".to_vec(),
                    first: true
                },
                Piece::Literal(b"bob".to_vec()),
                Piece::Line {
                    bytes: b" {2}\r\n".to_vec(),
                    first: false
                },
                Piece::Literal(b"pw".to_vec()),
                Piece::Line {
                    bytes: b"\r\n".to_vec(),
                    first: false
                },
                Piece::Line {
                    bytes: b"b NOOP\r\n".to_vec(),
                    first: true
                },
            ]
        );
    }
}
