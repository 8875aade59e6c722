//! POP3's framing (RFC 1939 §3), bounded: command and status lines, and multi-line responses
//! ended by a line holding a single `.`, with lines starting with `.` byte-stuffed.

/// Where a multi-line response stands after the bytes given so far.
#[derive(Debug, Default)]
pub struct MultiLine {
    /// At the start of a line (the next byte may begin the terminator or a stuffed dot).
    bol: bool,
    started: bool,
}

/// What [`MultiLine::take`] found in the bytes it was given.
#[derive(Debug, PartialEq, Eq)]
pub struct Taken {
    /// How many input bytes belong to the response's content (stuffed, as on the wire).
    pub content: usize,
    /// How many input bytes were consumed in all (content and, when ended, the terminator).
    pub consumed: usize,
    /// The terminator was found: the response is complete.
    pub ended: bool,
}

impl MultiLine {
    /// A response whose content starts with the next byte.
    pub fn new() -> Self {
        MultiLine {
            bol: true,
            started: false,
        }
    }

    /// Takes as much of `data` as belongs to the response. Stops short of a possible terminator
    /// that is not complete yet (a `.` or `.\r` at the end of `data`), which the next call sees
    /// again with more bytes.
    pub fn take(&mut self, data: &[u8]) -> Taken {
        let mut i = 0;
        while i < data.len() {
            if self.bol {
                let rest = &data[i..];
                if rest.starts_with(b".\r\n") || rest.starts_with(b".\n") {
                    let term = if rest[1] == b'\r' { 3 } else { 2 };
                    return Taken {
                        content: i,
                        consumed: i + term,
                        ended: true,
                    };
                }
                if rest == b"." || rest == b".\r" {
                    break;
                }
            }
            self.started = true;
            match memchr::memchr(b'\n', &data[i..]) {
                Some(p) => {
                    i += p + 1;
                    self.bol = true;
                }
                None => {
                    i = data.len();
                    self.bol = false;
                }
            }
        }
        Taken {
            content: i,
            consumed: i,
            ended: false,
        }
    }
}

/// Removes byte-stuffing from complete or partial content, `bol` telling whether `data` starts
/// at the start of a line; returns whether the next piece does.
pub fn unstuff_into(data: &[u8], mut bol: bool, out: &mut Vec<u8>) -> bool {
    let mut i = 0;
    while i < data.len() {
        if bol && data[i] == b'.' {
            i += 1;
        }
        match memchr::memchr(b'\n', &data[i..]) {
            Some(p) => {
                out.extend_from_slice(&data[i..i + p + 1]);
                i += p + 1;
                bol = true;
            }
            None => {
                out.extend_from_slice(&data[i..]);
                i = data.len();
                bol = false;
            }
        }
    }
    bol
}

/// The octets a message counts as in a POP3 size (LIST, STAT, `+OK n octets`): its bytes, and
/// the line end that ends the transfer when it has none of its own.
pub fn wire_size(message: &[u8]) -> u64 {
    (message.len() + tail(message).len()) as u64
}

/// What the transfer adds after a message so the terminator starts a line.
pub(crate) fn tail(message: &[u8]) -> &'static [u8] {
    match message.last() {
        None | Some(b'\n') => b"",
        Some(b'\r') => b"\n",
        Some(_) => b"\r\n",
    }
}

/// Appends `message` byte-stuffed, ended by a line end (when it has none of its own) and the
/// terminating `.` line.
pub fn stuff_into(message: &[u8], out: &mut Vec<u8>) {
    let mut bol = true;
    let mut i = 0;
    while i < message.len() {
        if bol && message[i] == b'.' {
            out.push(b'.');
        }
        match memchr::memchr(b'\n', &message[i..]) {
            Some(p) => {
                out.extend_from_slice(&message[i..i + p + 1]);
                i += p + 1;
                bol = true;
            }
            None => {
                out.extend_from_slice(&message[i..]);
                i = message.len();
                bol = false;
            }
        }
    }
    out.extend_from_slice(tail(message));
    out.extend_from_slice(b".\r\n");
}

/// The header section of a message and the first `lines` lines of its body, as `TOP` returns
/// them (RFC 1939 §7): everything up to and including the empty line, then whole lines.
pub fn top(message: &[u8], lines: u64) -> &[u8] {
    let body_start = header_end(message);
    let mut end = body_start;
    for _ in 0..lines {
        if end >= message.len() {
            break;
        }
        end = match memchr::memchr(b'\n', &message[end..]) {
            Some(p) => end + p + 1,
            None => message.len(),
        };
    }
    &message[..end]
}

/// Where the body starts: after the first empty line (CRLF or LF), or the end.
pub fn header_end(message: &[u8]) -> usize {
    if message.starts_with(b"\r\n") {
        return 2;
    }
    if message.starts_with(b"\n") {
        return 1;
    }
    let mut i = 0;
    while let Some(p) = memchr::memchr(b'\n', &message[i..]) {
        let next = i + p + 1;
        let rest = &message[next..];
        if rest.starts_with(b"\r\n") {
            return next + 2;
        }
        if rest.starts_with(b"\n") {
            return next + 1;
        }
        i = next;
    }
    message.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Splits `wire` at `cuts` and feeds the pieces as a reader would (keeping what was not
    /// consumed), returning the unstuffed content and what followed the terminator.
    fn read(wire: &[u8], cuts: &[usize]) -> Option<(Vec<u8>, Vec<u8>)> {
        let mut m = MultiLine::new();
        let mut pending = Vec::new();
        let mut content = Vec::new();
        let mut bol = true;
        let mut last = 0;
        let mut points: Vec<usize> = cuts.iter().map(|c| c % (wire.len() + 1)).collect();
        points.sort();
        points.push(wire.len());
        for p in points {
            pending.extend_from_slice(&wire[last..p.max(last)]);
            last = p.max(last);
            let t = m.take(&pending);
            bol = unstuff_into(&pending[..t.content], bol, &mut content);
            pending.drain(..t.consumed);
            if t.ended {
                pending.extend_from_slice(&wire[last..]);
                return Some((content, pending));
            }
        }
        None
    }

    #[test]
    fn stuffed_lines_and_the_terminator() {
        let wire = b"a\r\n..b\r\n.\r\n+OK next";
        assert_eq!(
            read(wire, &[]),
            Some((b"a\r\n.b\r\n".to_vec(), b"+OK next".to_vec()))
        );
        // Cut inside the terminator and inside a stuffed dot.
        for cut in 0..wire.len() {
            assert_eq!(
                read(wire, &[cut]),
                Some((b"a\r\n.b\r\n".to_vec(), b"+OK next".to_vec())),
                "cut at {cut}"
            );
        }
        assert_eq!(read(b".\r\n", &[]), Some((Vec::new(), Vec::new())));
        assert_eq!(read(b"x\r\n.", &[]), None);
        // A line that merely starts with a dot after stuffing is content.
        assert_eq!(
            read(b"...\r\n.\r\n", &[]),
            Some((b"..\r\n".to_vec(), Vec::new()))
        );
    }

    #[test]
    fn top_counts_whole_lines_after_the_header() {
        let m = b"A: 1\r\nB: 2\r\n\r\nl1\r\nl2\r\nl3";
        assert_eq!(top(m, 0), b"A: 1\r\nB: 2\r\n\r\n");
        assert_eq!(top(m, 2), b"A: 1\r\nB: 2\r\n\r\nl1\r\nl2\r\n");
        assert_eq!(top(m, 9), &m[..]);
        assert_eq!(top(b"A: 1\r\n", 3), b"A: 1\r\n");
        assert_eq!(top(b"\r\nbody\r\n", 0), b"\r\n");
    }

    proptest! {
        /// What is stuffed is read back as it was (a CRLF added when it had none), however the
        /// wire is cut, and the size announced is the size read.
        #[test]
        fn stuffing_round_trips(
            lines in proptest::collection::vec("[.a\r]{0,6}", 0..8),
            crlf in any::<bool>(),
            cuts in proptest::collection::vec(0usize..200, 0..4),
        ) {
            let mut message = lines.join("\r\n").into_bytes();
            if crlf { message.extend_from_slice(b"\r\n"); }
            let mut wire = Vec::new();
            stuff_into(&message, &mut wire);
            wire.extend_from_slice(b"+OK");
            let (content, rest) = read(&wire, &cuts).expect("terminated");
            prop_assert_eq!(rest, b"+OK".to_vec());
            let mut expected = message.clone();
            expected.extend_from_slice(tail(&message));
            prop_assert_eq!(content.len() as u64, wire_size(&message));
            prop_assert_eq!(content, expected);
        }
    }
}
