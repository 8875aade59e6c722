//! Base64 as S/MIME bodies carry it: written in 76-character CRLF lines, and read with SIMD a
//! window at a time (lines of one length taken by that length), into a new buffer or in the
//! text's own buffer (with what it takes to write the text back exactly).

use crate::Error;

/// Encodes bytes as base64 in 76-character CRLF lines.
pub fn base64_lines(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(base64_lines_len(data.len()));
    append_base64_lines(data, &mut out);
    out
}

/// The length of [`base64_lines`] output for `n` input bytes.
pub fn base64_lines_len(n: usize) -> usize {
    let chars = n.div_ceil(3) * 4;
    chars + chars.div_ceil(76) * 2
}

/// Appends base64 in 76-character CRLF lines to `out`, without an intermediate copy.
pub fn append_base64_lines(data: &[u8], out: &mut Vec<u8>) {
    append_base64_lines_chain(&[data], out);
}

/// Like [`append_base64_lines`] for the concatenation of several slices (a large ciphertext
/// between its DER header and trailer), without first concatenating them.
pub fn append_base64_lines_chain(parts: &[&[u8]], out: &mut Vec<u8>) {
    const LINE_IN: usize = 57;
    const BATCH: usize = 64;
    let engine = &base64_simd::STANDARD;
    out.reserve(base64_lines_len(parts.iter().map(|p| p.len()).sum()));
    let mut pending: Vec<u8> = Vec::with_capacity(LINE_IN);
    let mut text = vec![0u8; BATCH * 76];
    let mut emit = |chunk: &[u8], out: &mut Vec<u8>| {
        // Encode up to BATCH whole lines at once, then split the text into CRLF lines.
        let encoded = engine.encode(chunk, base64_simd::Out::from_slice(&mut text));
        for line in encoded.chunks(76) {
            out.extend_from_slice(line);
            out.extend_from_slice(b"\r\n");
        }
    };
    for part in parts {
        let mut rest: &[u8] = part;
        if !pending.is_empty() {
            let take = (LINE_IN - pending.len()).min(rest.len());
            pending.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if pending.len() < LINE_IN {
                continue;
            }
            emit(&pending, out);
            pending.clear();
        }
        let whole = rest.len() / LINE_IN * LINE_IN;
        for batch in rest[..whole].chunks(BATCH * LINE_IN) {
            emit(batch, out);
        }
        pending.extend_from_slice(&rest[whole..]);
    }
    if !pending.is_empty() {
        emit(&pending, out);
    }
}

/// Decodes a base64 body, ignoring line breaks and other whitespace.
pub fn base64_decode(body: &[u8]) -> Result<Vec<u8>, Error> {
    // The text between line breaks (memchr finds them) is gathered a window at a time into a
    // small buffer that stays in the CPU's cache and decoded from there with SIMD straight into
    // the result: the result is the only large buffer written (measured on a cold sync: copying
    // the whole text first and looking for stray whitespace in it byte by byte cost more than
    // the decoding).
    let mut out = Vec::with_capacity(body.len() / 4 * 3 + 3);
    let mut window = Vec::with_capacity(B64_WINDOW + 128);
    // Lines of one length (what encoders write: 76 or 64 characters and CRLF) are taken by that
    // length, looking only at where the line break must be (a search per 76-character line cost
    // 6 % of opening a large message); from the first other line on, the breaks are searched
    // for. A line break taken into the window by mistake is no base64 character: the decoding
    // fails and the slow path decodes the text as it is.
    let Some(mut start) = regular_lines(body, &mut window, &mut out) else {
        return base64_decode_slow(body);
    };
    let from = start;
    for i in memchr::memchr2_iter(b'\r', b'\n', &body[from..]) {
        let i = from + i;
        if take_line(&body[start..i], &mut window, &mut out).is_err() {
            return base64_decode_slow(body);
        }
        start = i + 1;
    }
    window.extend_from_slice(&body[start..]);
    let engine = if window.len() % 4 == 0 {
        &base64_simd::STANDARD
    } else {
        // Some encoders omit the final padding.
        &base64_simd::STANDARD_NO_PAD
    };
    if engine.decode_append(&window, &mut out).is_err() {
        // Spaces or tabs inside the text (hand-edited or broken encoders), or not base64.
        return base64_decode_slow(body);
    }
    Ok(out)
}

/// Decodes the leading lines of `body` that have the first line's length and line break into
/// `out` (through `window`); returns where they end, `None` when the decoding failed.
fn regular_lines(body: &[u8], window: &mut Vec<u8>, out: &mut Vec<u8>) -> Option<usize> {
    let Some(first) = memchr::memchr(b'\n', body) else {
        return Some(0);
    };
    let eol: &[u8] = if first > 0 && body[first - 1] == b'\r' {
        b"\r\n"
    } else {
        b"\n"
    };
    let width = first + 1 - eol.len();
    if width == 0 {
        return Some(0);
    }
    let stride = width + eol.len();
    let mut start = 0;
    while start + stride <= body.len() && &body[start + width..start + stride] == eol {
        take_line(&body[start..start + width], window, out).ok()?;
        start += stride;
    }
    Some(start)
}

/// Adds one line's text to `window`, decoding onto `out` once a window's worth is there.
fn take_line(
    line: &[u8],
    window: &mut Vec<u8>,
    out: &mut Vec<u8>,
) -> Result<(), base64_simd::Error> {
    window.extend_from_slice(line);
    if window.len() >= B64_WINDOW {
        decode_window(window, out)?;
    }
    Ok(())
}

/// How much base64 text is decoded at a time (fits the CPU's first-level caches with its
/// output).
const B64_WINDOW: usize = 32 * 1024;

/// Decodes the whole groups of four characters in `window` onto `out`, keeping the rest.
fn decode_window(window: &mut Vec<u8>, out: &mut Vec<u8>) -> Result<(), base64_simd::Error> {
    let whole = window.len() / 4 * 4;
    base64_simd::STANDARD.decode_append(&window[..whole], out)?;
    window.drain(..whole);
    Ok(())
}

/// [`base64_decode`] for text with whitespace inside lines: all of it is gathered, cleaned and
/// decoded (and an error reported from the whole text).
fn base64_decode_slow(body: &[u8]) -> Result<Vec<u8>, Error> {
    let mut buf = Vec::with_capacity(body.len());
    let mut start = 0;
    for i in memchr::memchr2_iter(b'\r', b'\n', body) {
        buf.extend_from_slice(&body[start..i]);
        start = i + 1;
    }
    buf.extend_from_slice(&body[start..]);
    decode_text_in_place(buf)
}

/// Decodes base64 text without line breaks in its own buffer.
fn decode_text_in_place(mut buf: Vec<u8>) -> Result<Vec<u8>, Error> {
    // Rare: spaces or tabs inside the text (hand-edited or broken encoders). SIMD's check
    // first: looking at every byte one at a time costs more than decoding.
    if base64_simd::STANDARD_NO_PAD.check(&buf).is_err()
        && base64_simd::STANDARD.check(&buf).is_err()
        && buf.iter().any(u8::is_ascii_whitespace)
    {
        buf.retain(|b| !b.is_ascii_whitespace());
    }
    let engine = if buf.len() % 4 == 0 {
        &base64_simd::STANDARD
    } else {
        // Some encoders omit the final padding.
        &base64_simd::STANDARD_NO_PAD
    };
    let n = engine
        .decode_inplace(&mut buf)
        .map_err(|e| Error::Mime(format!("invalid base64 body: {e}")))?
        .len();
    buf.truncate(n);
    Ok(buf)
}

/// Like [`base64_decode`] for `data[start..]`, reusing `data`'s buffer: the text is compacted
/// to its front and decoded there, and nothing else is kept, so a large body is held once.
pub fn base64_decode_owned(mut data: Vec<u8>, start: usize) -> Result<Vec<u8>, Error> {
    let (mut w, mut r) = (0, start.min(data.len()));
    // The write position never passes the read position: moving left in place is safe.
    while let Some(i) = memchr::memchr2(b'\r', b'\n', &data[r..]) {
        data.copy_within(r..r + i, w);
        w += i;
        r += i + 1;
    }
    let tail = data.len() - r;
    data.copy_within(r.., w);
    data.truncate(w + tail);
    let mut decoded = decode_text_in_place(data)?;
    decoded.shrink_to_fit();
    Ok(decoded)
}

/// Base64 text that [`base64_decode_in_place`] decoded in its own buffer, and what it takes to
/// write the text back exactly as it was: the bytes in front of it, its line length and line
/// break, how many such lines were decoded, and the text after them as it was.
#[derive(Debug)]
pub struct Base64Text {
    prefix: Vec<u8>,
    width: usize,
    eol: &'static [u8],
    lines: usize,
    tail: Vec<u8>,
}

impl Base64Text {
    /// The buffer as it was before decoding, from the decoded bytes (`decoded` must start with
    /// them; what follows them is ignored). Base64 groups of four characters without padding
    /// stand for exactly one three-byte group and back, so the lines come back byte for byte.
    pub fn restore(&self, decoded: &[u8]) -> Vec<u8> {
        let per_line = self.width / 4 * 3;
        let stride = self.width + self.eol.len();
        let mut out = Vec::with_capacity(self.prefix.len() + self.lines * stride + self.tail.len());
        out.extend_from_slice(&self.prefix);
        for line in decoded[..self.lines * per_line].chunks(per_line) {
            base64_simd::STANDARD.encode_append(line, &mut out);
            out.extend_from_slice(self.eol);
        }
        out.extend_from_slice(&self.tail);
        out
    }
}

/// Text after the regular lines kept aside for [`Base64Text::restore`] at most: a body whose
/// lines change length early is decoded the ordinary way instead.
const MAX_BASE64_TAIL: usize = 16 * 1024;

/// Decodes the base64 text `data[start..]` in `data`'s own buffer, which then holds the
/// decoded bytes only: no second message-sized buffer (the kernel clearing a fresh one's pages
/// was a fifth of opening a large message). Only for text in lines of one length (a multiple of
/// four) with one kind of line break, as encoders write it; anything else, or text that is not
/// base64, gives `data` back unchanged, for [`base64_decode`].
pub fn base64_decode_in_place(
    mut data: Vec<u8>,
    start: usize,
) -> Result<(Vec<u8>, Base64Text), Vec<u8>> {
    use base64_simd::AsOut;
    let start = start.min(data.len());
    let Some(first) = memchr::memchr(b'\n', &data[start..]) else {
        return Err(data);
    };
    let eol: &'static [u8] = if first > 0 && data[start + first - 1] == b'\r' {
        b"\r\n"
    } else {
        b"\n"
    };
    let width = first + 1 - eol.len();
    if width == 0 || width % 4 != 0 {
        return Err(data);
    }
    let stride = width + eol.len();
    let prefix = data[..start].to_vec();
    // A line is decoded here when it and the line after it both have the length and the line
    // break: the last whole line (which may end in padding) stays in the tail, so every group
    // decoded here is four characters without padding, which restore() writes back exactly.
    let regular = |data: &[u8], at: usize| {
        at + 2 * stride <= data.len()
            && &data[at + width..at + stride] == eol
            && &data[at + stride + width..at + 2 * stride] == eol
    };
    let mut window = Vec::with_capacity(B64_WINDOW + stride);
    let (mut written, mut read, mut lines) = (0, start, 0);
    loop {
        let mut more = true;
        while window.len() < B64_WINDOW {
            if !regular(&data, read) {
                more = false;
                break;
            }
            window.extend_from_slice(&data[read..read + width]);
            read += stride;
        }
        let n = window.len() / 4 * 3;
        // The decoded bytes go behind the text already taken into the window: written + n
        // never passes the read position.
        if base64_simd::STANDARD_NO_PAD
            .decode(&window, data[written..written + n].as_out())
            .is_err()
        {
            let text = Base64Text {
                prefix,
                width,
                eol,
                lines,
                tail: Vec::new(),
            };
            let mut back = text.restore(&data[..written]);
            for line in window.chunks(width) {
                back.extend_from_slice(line);
                back.extend_from_slice(eol);
            }
            back.extend_from_slice(&data[read..]);
            return Err(back);
        }
        written += n;
        lines += window.len() / width;
        window.clear();
        if !more {
            break;
        }
    }
    let text = Base64Text {
        prefix,
        width,
        eol,
        lines,
        tail: data[read..].to_vec(),
    };
    let last: Vec<u8> = text
        .tail
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    let engine = if last.len() % 4 == 0 {
        &base64_simd::STANDARD
    } else {
        // Some encoders omit the final padding.
        &base64_simd::STANDARD_NO_PAD
    };
    let decoded_tail = match engine.decode_to_vec(&last) {
        Ok(d) if text.tail.len() <= MAX_BASE64_TAIL => d,
        _ => return Err(text.restore(&data[..written])),
    };
    data.truncate(written);
    data.extend_from_slice(&decoded_tail);
    data.shrink_to_fit();
    Ok((data, text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_lines_chain_equals_plain_encoding() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 + i / 3) as u8).collect();
        let plain = base64_simd::STANDARD.encode_to_string(&data);
        for cuts in [
            (0, 0),
            (1, 2),
            (56, 57),
            (57, 114),
            (3000, 9999),
            (10_000, 10_000),
        ] {
            let mut out = Vec::new();
            append_base64_lines_chain(
                &[&data[..cuts.0], &data[cuts.0..cuts.1], &data[cuts.1..]],
                &mut out,
            );
            assert_eq!(out.len(), base64_lines_len(data.len()));
            let joined: Vec<u8> = out
                .iter()
                .copied()
                .filter(|&b| b != b'\r' && b != b'\n')
                .collect();
            assert_eq!(joined, plain.as_bytes());
            assert!(out.split(|&b| b == b'\n').all(|l| l.len() <= 77));
            assert_eq!(base64_decode(&out).unwrap(), data);
            let mut framed = b"Header: x\r\n\r\n".to_vec();
            let start = framed.len();
            framed.extend_from_slice(&out);
            assert_eq!(base64_decode_owned(framed, start).unwrap(), data);
        }
    }

    #[test]
    fn in_place_base64_decoding_matches_the_copying_one() {
        for body in [
            &b"QUJD\r\nREVG\r\n"[..],
            b"QUJD REVG\n",
            b"QUJDRA",
            b"\r\n\r\n",
            b"",
            b"QU!D\r\n",
            b"\tQUJD\r",
        ] {
            let mut framed = b"H: v\r\n\r\n".to_vec();
            let start = framed.len();
            framed.extend_from_slice(body);
            let owned = base64_decode_owned(framed, start).map_err(|e| e.to_string());
            let copied = base64_decode(body).map_err(|e| e.to_string());
            assert_eq!(owned, copied, "{}", String::from_utf8_lossy(body));
        }
        assert_eq!(base64_decode_owned(b"QUJD".to_vec(), 99).unwrap(), b"");
    }

    #[test]
    fn windowed_base64_decoding_matches_the_whole_text_decoding() {
        let data: Vec<u8> = (0..200_003u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        let text = base64_simd::STANDARD.encode_to_string(&data);
        // Lines of several lengths (not multiples of 4 either), LF or CRLF, with and without
        // the final padding, a space in the middle, a bad byte far from the start.
        for (width, eol) in [(76, "\r\n"), (64, "\n"), (73, "\r\n"), (1000, "\n")] {
            let lined: String = text
                .as_bytes()
                .chunks(width)
                .map(|c| format!("{}{eol}", std::str::from_utf8(c).unwrap()))
                .collect();
            assert_eq!(base64_decode(lined.as_bytes()).unwrap(), data);
            let unpadded = lined.trim_end().trim_end_matches('=');
            assert_eq!(base64_decode(unpadded.as_bytes()).unwrap(), data);
            let spaced = lined.replacen(eol, &format!(" {eol}"), 900);
            assert_eq!(base64_decode(spaced.as_bytes()).unwrap(), data);
            let mut bad = lined.clone().into_bytes();
            bad[150_000] = b'!';
            assert!(base64_decode(&bad).is_err());
            let mut early_pad = lined.clone().into_bytes();
            early_pad[100_001] = b'=';
            assert!(base64_decode(&early_pad).is_err());
            // One line broken in two in the middle of the text (valid: line breaks are
            // ignored): the lines of one length hand over to the search there.
            let at = lined.len() / 2 / (width + eol.len()) * (width + eol.len()) + width / 2;
            let broken = format!("{}{eol}{}", &lined[..at], &lined[at..]);
            assert_eq!(base64_decode(broken.as_bytes()).unwrap(), data);
            let mut framed = b"H: v\r\n\r\n".to_vec();
            let start = framed.len();
            framed.extend_from_slice(lined.as_bytes());
            assert_eq!(base64_decode_owned(framed, start).unwrap(), data);
        }
    }

    #[test]
    fn text_decoded_in_its_own_buffer_is_written_back_exactly() {
        let data: Vec<u8> = (0..100_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for width in [64, 76] {
            for eol in ["\r\n", "\n"] {
                for len in [0, 1, 2, 3, 57, 58, 4096, 70_000, 100_000] {
                    let text = base64_simd::STANDARD.encode_to_string(&data[..len]);
                    let mut stored = b"Content-Type: application/pkcs7-mime\r\n\r\n".to_vec();
                    let start = stored.len();
                    for line in text.as_bytes().chunks(width) {
                        stored.extend_from_slice(line);
                        stored.extend_from_slice(eol.as_bytes());
                    }
                    match base64_decode_in_place(stored.clone(), start) {
                        Ok((decoded, back)) => {
                            assert_eq!(decoded, &data[..len], "{width} {eol:?} {len}");
                            assert!(back.restore(&decoded) == stored, "{width} {eol:?} {len}");
                        }
                        // One line or none: nothing regular to decode in place.
                        Err(same) => {
                            assert!(same == stored);
                            assert!(len <= width / 4 * 3, "{width} {eol:?} {len} not decoded");
                        }
                    }
                    // Not base64 in a late line: the text comes back unchanged.
                    if len > 4096 {
                        let mut bad = stored.clone();
                        let at = bad.len() - 3 * (width + eol.len());
                        bad[at] = b'*';
                        assert!(base64_decode_in_place(bad.clone(), start).unwrap_err() == bad);
                    }
                }
            }
        }
    }
}
