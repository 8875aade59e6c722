//! BER to DER normalisation and a small, bounded TLV reader.
//!
//! gpgsm, NSS (Thunderbird) and Outlook emit CMS in BER: indefinite lengths and OCTET STRINGs split
//! into constructed chunks. The RustCrypto `cms` types decode DER only, so every CMS input passes
//! through [`normalize`] first. The normaliser rewrites lengths to definite, minimal form and joins
//! constructed strings, and leaves everything else (element order, SET order) byte-for-byte as
//! received, so DER input comes out unchanged and signatures over embedded DER stay valid.
//! Depth and length claims are bounded; garbage is an error, never a panic or a huge allocation.

use std::borrow::Cow;

use crate::Error;

/// The deepest nesting accepted; real CMS structures stay below 20.
pub const MAX_DEPTH: usize = 48;

const TAG_OID: u8 = 0x06;
const TAG_SEQUENCE: u8 = 0x30;
const TAG_OCTET_STRING: u8 = 0x04;
const TAG_CONTEXT_0_CONSTRUCTED: u8 = 0xa0;
const TAG_CONTEXT_0_PRIMITIVE: u8 = 0x80;

/// One parsed element; primitive contents borrow from the input.
#[derive(Debug)]
enum Node<'a> {
    Primitive { tag: u8, content: Cow<'a, [u8]> },
    Constructed { tag: u8, children: Vec<Node<'a>> },
}

impl Node<'_> {
    fn tag(&self) -> u8 {
        match self {
            Node::Primitive { tag, .. } | Node::Constructed { tag, .. } => *tag,
        }
    }

    fn encoded_len(&self) -> usize {
        let content = self.content_len();
        1 + length_len(content) + content
    }

    fn content_len(&self) -> usize {
        match self {
            Node::Primitive { content, .. } => content.len(),
            Node::Constructed { children, .. } => children.iter().map(Node::encoded_len).sum(),
        }
    }

    fn write(&self, out: &mut Vec<u8>) {
        out.push(self.tag());
        write_length(self.content_len(), out);
        match self {
            Node::Primitive { content, .. } => out.extend_from_slice(content),
            Node::Constructed { children, .. } => children.iter().for_each(|c| c.write(out)),
        }
    }
}

/// The number of bytes a DER length field for `len` takes.
pub fn encoded_length_len(len: usize) -> usize {
    length_len(len)
}

fn length_len(len: usize) -> usize {
    if len < 0x80 {
        1
    } else {
        1 + (usize::BITS as usize / 8 - len.leading_zeros() as usize / 8)
    }
}

/// One DER element: `tag`, the definite length of `parts` together, then the parts.
pub fn tlv(tag: u8, parts: &[&[u8]]) -> Vec<u8> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let mut out = Vec::with_capacity(len + 6);
    out.push(tag);
    write_length(len, &mut out);
    for p in parts {
        out.extend_from_slice(p);
    }
    out
}

/// Appends a DER length (minimal form).
pub fn write_length(len: usize, out: &mut Vec<u8>) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = len.leading_zeros() as usize / 8;
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
}

/// Rewrites a BER-encoded element (such as a CMS ContentInfo) as DER-compatible bytes.
///
/// Trailing bytes after the element are an error, except zero padding some tools append.
pub fn normalize(input: &[u8]) -> Result<Cow<'_, [u8]>, Error> {
    let mut pos = 0;
    let mut changed = false;
    let node = parse(input, &mut pos, 0, &mut changed)?;
    if input[pos..].iter().any(|&b| b != 0) {
        return Err(malformed("trailing data after the CMS structure"));
    }
    if !changed {
        // Already DER-shaped: no copy of a possibly large message.
        return Ok(Cow::Borrowed(&input[..pos]));
    }
    let mut out = Vec::with_capacity(node.encoded_len());
    node.write(&mut out);
    Ok(Cow::Owned(out))
}

fn malformed(what: &str) -> Error {
    Error::Malformed(format!("BER/DER: {what}"))
}

/// A header: tag byte, constructed flag and the length (None = indefinite).
struct Header {
    tag: u8,
    len: Option<usize>,
}

fn read_header(input: &[u8], pos: &mut usize) -> Result<Header, Error> {
    read_header_noting(input, pos, &mut false)
}

/// Reads a header; sets `changed` when its length is not in minimal DER form.
fn read_header_noting(input: &[u8], pos: &mut usize, changed: &mut bool) -> Result<Header, Error> {
    let tag = *input
        .get(*pos)
        .ok_or_else(|| malformed("truncated (tag)"))?;
    *pos += 1;
    if tag & 0x1f == 0x1f {
        // High tag numbers never occur in CMS, X.509 or PKCS#12.
        return Err(malformed("multi-byte tag numbers are not supported"));
    }
    let first = *input
        .get(*pos)
        .ok_or_else(|| malformed("truncated (length)"))?;
    *pos += 1;
    let len = if first < 0x80 {
        Some(first as usize)
    } else if first == 0x80 {
        if tag & 0x20 == 0 {
            return Err(malformed("indefinite length on a primitive element"));
        }
        *changed = true;
        None
    } else {
        let n = (first & 0x7f) as usize;
        if n > 4 {
            return Err(malformed("length field longer than 4 bytes"));
        }
        let bytes = input
            .get(*pos..*pos + n)
            .ok_or_else(|| malformed("truncated (length)"))?;
        *pos += n;
        let len = bytes.iter().fold(0usize, |acc, &b| (acc << 8) | b as usize);
        if length_len(len) != 1 + n {
            *changed = true;
        }
        Some(len)
    };
    if let Some(len) = len {
        if len > input.len() - *pos {
            return Err(malformed(&format!(
                "element claims {len} bytes but only {} remain",
                input.len() - *pos
            )));
        }
    }
    Ok(Header { tag, len })
}

fn parse<'a>(
    input: &'a [u8],
    pos: &mut usize,
    depth: usize,
    changed: &mut bool,
) -> Result<Node<'a>, Error> {
    if depth > MAX_DEPTH {
        return Err(malformed("nesting too deep"));
    }
    let header = read_header_noting(input, pos, changed)?;
    if header.tag == 0 {
        return Err(malformed("unexpected end-of-contents marker"));
    }
    if header.tag & 0x20 == 0 {
        let len = header.len.expect("primitive lengths are definite");
        let content = &input[*pos..*pos + len];
        *pos += len;
        return Ok(Node::Primitive {
            tag: header.tag,
            content: Cow::Borrowed(content),
        });
    }
    let mut children = Vec::new();
    match header.len {
        Some(len) => {
            let end = *pos + len;
            // Children must not run past their parent's end: parse within a sub-slice.
            let sub = &input[..end];
            while *pos < end {
                children.push(parse(sub, pos, depth + 1, changed)?);
            }
        }
        None => loop {
            if input.get(*pos..*pos + 2) == Some(&[0, 0]) {
                *pos += 2;
                break;
            }
            if *pos >= input.len() {
                return Err(malformed("truncated (missing end-of-contents)"));
            }
            children.push(parse(input, pos, depth + 1, changed)?);
        },
    }
    Ok(fix_constructed(header.tag, children, changed))
}

/// Universal string types that BER allows in constructed (chunked) form.
fn is_chunkable_string(tag: u8) -> bool {
    matches!(tag & 0x1f, 4 | 12 | 19 | 20 | 22 | 26 | 28 | 30) && tag & 0xc0 == 0
}

/// Joins chunked strings; sets `changed` when the encoding had to change.
fn fix_constructed<'a>(tag: u8, mut children: Vec<Node<'a>>, changed: &mut bool) -> Node<'a> {
    let primitive_tag = tag & !0x20;
    if is_chunkable_string(primitive_tag) {
        if let Some(joined) = join_chunks(&children, primitive_tag) {
            *changed = true;
            return Node::Primitive {
                tag: primitive_tag,
                content: Cow::Owned(joined),
            };
        }
    }
    // EncryptedContentInfo ::= SEQUENCE { OID, AlgorithmIdentifier, [0] IMPLICIT OCTET STRING }:
    // the implicit [0] may arrive constructed from OCTET STRING chunks. Only the schema says so,
    // so the rule is confined to exactly that shape.
    if tag == TAG_SEQUENCE && children.len() == 3 {
        let shape = children[0].tag() == TAG_OID && children[1].tag() == TAG_SEQUENCE;
        if shape {
            if let Node::Constructed {
                tag: TAG_CONTEXT_0_CONSTRUCTED,
                children: chunks,
            } = &children[2]
            {
                if let Some(joined) = join_chunks(chunks, TAG_OCTET_STRING) {
                    *changed = true;
                    children[2] = Node::Primitive {
                        tag: TAG_CONTEXT_0_PRIMITIVE,
                        content: Cow::Owned(joined),
                    };
                }
            }
        }
    }
    Node::Constructed { tag, children }
}

/// Concatenates primitive chunks of one string type; None if any child is something else.
fn join_chunks(children: &[Node<'_>], chunk_tag: u8) -> Option<Vec<u8>> {
    let mut total = 0;
    for child in children {
        match child {
            Node::Primitive { tag, content } if *tag == chunk_tag => total += content.len(),
            _ => return None,
        }
    }
    let mut joined = Vec::with_capacity(total);
    for child in children {
        if let Node::Primitive { content, .. } = child {
            joined.extend_from_slice(content);
        }
    }
    Some(joined)
}

/// Splits a DER element into (tag, content, total encoded length) without copying.
pub fn read_tlv(input: &[u8]) -> Result<(u8, &[u8], usize), Error> {
    let mut pos = 0;
    let header = read_header(input, &mut pos)?;
    let len = header
        .len
        .ok_or_else(|| malformed("indefinite length in DER"))?;
    Ok((header.tag, &input[pos..pos + len], pos + len))
}

/// The exact bytes a signature covers in a signed X.509-style structure (certificate, CRL,
/// OCSP response): the first element inside the outer SEQUENCE, as encoded.
pub fn signed_part(der: &[u8]) -> Result<&[u8], Error> {
    let (_, content, _) = read_tlv(der)?;
    let (_, _, total) = read_tlv(content)?;
    Ok(&content[..total])
}

/// Returns the encoded children of a DER constructed element's content.
pub fn children(content: &[u8]) -> Result<Vec<&[u8]>, Error> {
    let mut out = Vec::new();
    let mut rest = content;
    while !rest.is_empty() {
        let (_, _, total) = read_tlv(rest)?;
        out.push(&rest[..total]);
        rest = &rest[total..];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_passes_through_borrowed() {
        let der = [0x30, 0x06, 0x04, 0x01, 0xaa, 0x02, 0x01, 0x05];
        assert!(matches!(normalize(&der).unwrap(), Cow::Borrowed(_)));
    }

    #[test]
    fn indefinite_lengths_and_chunks_are_joined() {
        // SEQUENCE(indef) { OCTET STRING(constructed, indef) { "ab", "c" } }
        let ber = [
            0x30, 0x80, 0x24, 0x80, 0x04, 0x02, b'a', b'b', 0x04, 0x01, b'c', 0x00, 0x00, 0x00,
            0x00,
        ];
        let der = normalize(&ber).unwrap();
        assert_eq!(&der[..], &[0x30, 0x05, 0x04, 0x03, b'a', b'b', b'c']);
    }

    #[test]
    fn implicit_encrypted_content_is_joined() {
        // SEQUENCE { OID 1.2, SEQUENCE {}, [0] constructed { OCTET STRING "x", OCTET STRING "y" } }
        let ber = [
            0x30, 0x80, 0x06, 0x01, 0x2a, 0x30, 0x00, 0xa0, 0x80, 0x04, 0x01, b'x', 0x04, 0x01,
            b'y', 0x00, 0x00, 0x00, 0x00,
        ];
        let der = normalize(&ber).unwrap();
        assert_eq!(
            &der[..],
            &[0x30, 0x09, 0x06, 0x01, 0x2a, 0x30, 0x00, 0x80, 0x02, b'x', b'y']
        );
    }

    #[test]
    fn long_lengths_are_rewritten_minimally() {
        let mut ber = vec![0x04, 0x82, 0x00, 0x03, 1, 2, 3];
        assert_eq!(&normalize(&ber).unwrap()[..], &[0x04, 0x03, 1, 2, 3]);
        ber = vec![0x04, 0x82, 0x01, 0x00];
        ber.extend(std::iter::repeat_n(7, 256));
        let der = normalize(&ber).unwrap();
        assert_eq!(&der[..4], &[0x04, 0x82, 0x01, 0x00]);
    }

    #[test]
    fn garbage_is_an_error() {
        for bad in [
            &[][..],
            &[0x30],
            &[0x30, 0x05, 0x04],
            &[0x30, 0x84, 0xff, 0xff, 0xff, 0xff],
            &[0x30, 0x80, 0x04, 0x01, 0x01],
            &[0x04, 0x80, 0x00, 0x00],
            &[0x1f, 0x81, 0x01, 0x00],
            &[0x30, 0x00, 0xff],
        ] {
            assert!(normalize(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn deep_nesting_is_refused() {
        let mut ber = Vec::new();
        for _ in 0..1000 {
            ber.extend_from_slice(&[0x30, 0x80]);
        }
        for _ in 0..1000 {
            ber.extend_from_slice(&[0, 0]);
        }
        let err = normalize(&ber).unwrap_err().to_string();
        assert!(err.contains("too deep"), "{err}");
    }
}
