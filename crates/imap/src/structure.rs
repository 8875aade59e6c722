//! The parts of a message a FETCH can ask for (RFC 3501 §6.4.5: `BODY[section]`, `HEADER`,
//! `TEXT`, `MIME`, `HEADER.FIELDS`) and its `BODY`/`BODYSTRUCTURE`, computed from the bytes the
//! client is shown, so that every FETCH form describes the same message. Pure functions.

use std::num::NonZeroU32;

use imap_codec::imap_types::body::{
    BasicFields, Body, BodyStructure, Disposition, Language, Location, MultiPartExtensionData,
    SinglePartExtensionData, SpecificFields,
};
use imap_codec::imap_types::core::{AString, IString, NString, Vec1};
use imap_codec::imap_types::envelope::{Address, Envelope};
use imap_codec::imap_types::fetch::{Part, Section};
use mail_parser::{HeaderValue, MessageParser, MimeHeaders};
use smime::mime;

/// MIME nesting deeper than this is shown as an opaque part (bounded recursion).
const MAX_DEPTH: usize = 32;

/// One MIME entity of the shown message: where its header and body are.
#[derive(Clone, Copy)]
struct Entity<'a> {
    /// Header fields with the empty line that ends them.
    header: &'a [u8],
    body: &'a [u8],
}

fn entity(data: &[u8]) -> Entity<'_> {
    let e = mime::split(data);
    let header_len = data.len() - e.body.len();
    Entity {
        header: &data[..header_len],
        body: e.body,
    }
}

fn mime_type(header: &[u8]) -> mime::ContentType {
    mime::content_type(header)
}

/// The children of a multipart entity, or of the message inside a message/rfc822 entity.
fn children(e: Entity<'_>) -> Vec<Entity<'_>> {
    let ct = mime_type(e.header);
    if ct.is_multipart() {
        if let Some(b) = ct.param("boundary") {
            if let Ok(parts) = mime::split_multipart(e.body, b) {
                return parts.into_iter().map(entity).collect();
            }
        }
        return Vec::new();
    }
    Vec::new()
}

fn is_message(e: Entity<'_>) -> bool {
    mime_type(e.header).mime_type == "message/rfc822"
}

/// Walks a part number (`1.2.3`) from the top-level message.
fn walk<'a>(message: &'a [u8], part: &Part) -> Option<Entity<'a>> {
    let mut current = entity(message);
    for (depth, n) in part.0.as_ref().iter().enumerate() {
        if depth > MAX_DEPTH {
            return None;
        }
        let n = n.get() as usize;
        // Into an encapsulated message first: its parts are numbered like a top-level message.
        if depth > 0 && is_message(current) {
            current = entity(current.body);
        }
        let kids = children(current);
        current = if kids.is_empty() {
            // A non-multipart entity has exactly one part: itself (RFC 3501).
            if n != 1 {
                return None;
            }
            if depth == 0 {
                Entity {
                    header: current.header,
                    body: current.body,
                }
            } else {
                current
            }
        } else {
            *kids.get(n - 1)?
        };
    }
    Some(current)
}

fn header_fields(header: &[u8], names: &[AString<'_>], keep: bool) -> Vec<u8> {
    let wanted: Vec<String> = names
        .iter()
        .map(|n| String::from_utf8_lossy(n.as_ref()).to_ascii_lowercase())
        .collect();
    let mut out = mime::select_fields(header, |name| wanted.iter().any(|w| w == name) == keep);
    out.extend_from_slice(b"\r\n");
    out
}

/// The bytes of `BODY[section]` of `message` (`None` section: the whole message), or `None`
/// when the section does not exist (the server would then send an empty string).
pub fn section(message: &[u8], section: Option<&Section<'_>>) -> Vec<u8> {
    let top = entity(message);
    let inner = |part: &Option<Part>| -> Option<Entity<'_>> {
        match part {
            None => Some(top),
            Some(p) => {
                let e = walk(message, p)?;
                is_message(e).then(|| entity(e.body))
            }
        }
    };
    let bytes = match section {
        None => Some(message.to_vec()),
        Some(Section::Header(p)) => inner(p).map(|e| e.header.to_vec()),
        Some(Section::Text(p)) => inner(p).map(|e| e.body.to_vec()),
        Some(Section::HeaderFields(p, names)) => {
            inner(p).map(|e| header_fields(e.header, names.as_ref(), true))
        }
        Some(Section::HeaderFieldsNot(p, names)) => {
            inner(p).map(|e| header_fields(e.header, names.as_ref(), false))
        }
        Some(Section::Mime(p)) => walk(message, p).map(|e| e.header.to_vec()),
        Some(Section::Part(p)) => walk(message, p).map(|e| {
            // Part 1 of a single-part message is its body; parts of a multipart are whole
            // entities whose body is the content without the MIME header.
            if p.0.as_ref().len() == 1 && children(top).is_empty() {
                top.body.to_vec()
            } else {
                e.body.to_vec()
            }
        }),
    };
    bytes.unwrap_or_default()
}

fn istring(s: &str) -> IString<'static> {
    IString::try_from(s.to_string()).unwrap_or_else(|_| {
        IString::try_from(s.replace(|c: char| c.is_control(), " "))
            .unwrap_or_else(|_| IString::try_from("?").expect("a plain quoted string"))
    })
}

fn nstring(s: Option<&str>) -> NString<'static> {
    NString(s.map(istring))
}

fn params(
    list: Option<&Vec<mail_parser::Attribute<'_>>>,
) -> Vec<(IString<'static>, IString<'static>)> {
    list.map(|attrs| {
        attrs
            .iter()
            .map(|a| (istring(&a.name.to_ascii_uppercase()), istring(&a.value)))
            .collect()
    })
    .unwrap_or_default()
}

/// Line count as servers give it (Dovecot, Cyrus): the number of line ends.
fn lines(body: &[u8]) -> u32 {
    memchr::memchr_iter(b'\n', body).count() as u32
}

fn disposition(
    parsed: Option<&mail_parser::Message<'_>>,
    ext: bool,
) -> Option<Disposition<'static>> {
    if !ext {
        return None;
    }
    let m = parsed?;
    let disp = m.content_disposition().map(|d| {
        (
            istring(&d.ctype().to_ascii_uppercase()),
            params(d.attributes().map(|a| a.to_vec()).as_ref()),
        )
    });
    let language: Vec<IString<'static>> = match m.header("Content-Language") {
        Some(HeaderValue::Text(t)) => vec![istring(t)],
        Some(HeaderValue::TextList(l)) => l.iter().map(|t| istring(t)).collect(),
        _ => Vec::new(),
    };
    let location = match m.header("Content-Location") {
        Some(HeaderValue::Text(t)) => nstring(Some(t)),
        _ => NString(None),
    };
    Some(Disposition {
        disposition: disp,
        tail: Some(Language {
            language,
            tail: Some(Location {
                location,
                extensions: Vec::new(),
            }),
        }),
    })
}

/// `BODYSTRUCTURE` (with extension data) or `BODY` (without) of a message.
pub fn body_structure(message: &[u8], ext: bool) -> BodyStructure<'static> {
    structure_of(entity(message), ext, 0)
}

fn structure_of(e: Entity<'_>, ext: bool, depth: usize) -> BodyStructure<'static> {
    let mut block = e.header.to_vec();
    if !block.ends_with(b"\r\n\r\n") && !block.ends_with(b"\n\n") {
        block.extend_from_slice(b"\r\n");
    }
    let parsed = MessageParser::default().parse_headers(&block);
    let ct = parsed.as_ref().and_then(|m| m.content_type());
    let (ty, sub) = match ct {
        Some(c) => (
            c.ctype().to_ascii_lowercase(),
            c.subtype().unwrap_or("").to_ascii_lowercase(),
        ),
        None => ("text".to_string(), "plain".to_string()),
    };
    let mut plist = params(ct.and_then(|c| c.attributes().map(|a| a.to_vec())).as_ref());
    // Text without a charset is US-ASCII (RFC 2045 §5.2); servers show it explicitly.
    if ty == "text"
        && !plist
            .iter()
            .any(|(n, _)| n.as_ref().eq_ignore_ascii_case(b"charset"))
    {
        plist.push((istring("CHARSET"), istring("us-ascii")));
    }
    if ty == "multipart" && depth < MAX_DEPTH {
        let kids: Vec<BodyStructure<'static>> = children(e)
            .into_iter()
            .map(|k| structure_of(k, ext, depth + 1))
            .collect();
        if let Ok(bodies) = Vec1::try_from(kids) {
            return BodyStructure::Multi {
                bodies,
                subtype: istring(&sub.to_ascii_uppercase()),
                extension_data: ext.then(|| MultiPartExtensionData {
                    parameter_list: plist,
                    tail: disposition(parsed.as_ref(), true),
                }),
            };
        }
    }
    let text = |name: &str| -> Option<String> {
        match parsed.as_ref()?.header(name)? {
            HeaderValue::Text(t) => Some(t.to_string()),
            _ => None,
        }
    };
    let cte = parsed
        .as_ref()
        .and_then(|m| m.content_transfer_encoding())
        .map(|c| c.trim().to_ascii_uppercase())
        .unwrap_or_else(|| "7BIT".into());
    let id = parsed
        .as_ref()
        .and_then(|m| m.content_id())
        .map(|i| format!("<{i}>"));
    let basic = BasicFields {
        parameter_list: plist,
        id: nstring(id.as_deref()),
        description: nstring(text("Content-Description").as_deref()),
        content_transfer_encoding: istring(&cte),
        size: e.body.len() as u32,
    };
    let specific = if ty == "text" {
        SpecificFields::Text {
            subtype: istring(&sub.to_ascii_uppercase()),
            number_of_lines: lines(e.body),
        }
    } else if ty == "message" && sub == "rfc822" && depth < MAX_DEPTH {
        // RFC 3501: an attached message has its own envelope, structure and line count.
        let inner = entity(e.body);
        SpecificFields::Message {
            envelope: Box::new(envelope(inner.header)),
            body_structure: Box::new(structure_of(inner, ext, depth + 1)),
            number_of_lines: lines(e.body),
        }
    } else {
        SpecificFields::Basic {
            r#type: istring(&ty.to_ascii_uppercase()),
            subtype: istring(&sub.to_ascii_uppercase()),
        }
    };
    BodyStructure::Single {
        body: Body { basic, specific },
        extension_data: ext.then(|| SinglePartExtensionData {
            md5: NString(None),
            tail: disposition(parsed.as_ref(), true),
        }),
    }
}

/// The ENVELOPE of a message header (RFC 3501 §7.4.2): raw Date, Subject, In-Reply-To and
/// Message-ID; parsed address lists, Sender and Reply-To defaulting to From.
pub fn envelope(header: &[u8]) -> Envelope<'static> {
    let mut block = header.to_vec();
    if !block.ends_with(b"\r\n\r\n") && !block.ends_with(b"\n\n") {
        block.extend_from_slice(b"\r\n");
    }
    let parsed = MessageParser::default().parse_headers(&block);
    let raw = |name: &str| -> NString<'static> {
        let v = parsed
            .as_ref()
            .and_then(|m| m.header_raw(name))
            .map(|v| v.trim().replace(['\r', '\n'], ""));
        nstring(v.as_deref())
    };
    let list = |addr: Option<&mail_parser::Address<'_>>| -> Vec<Address<'static>> {
        let Some(a) = addr else {
            return Vec::new();
        };
        a.iter()
            .map(|one| {
                let (mailbox, host) = match one.address.as_deref() {
                    Some(addr) => match addr.rsplit_once('@') {
                        Some((l, h)) => (Some(l.to_string()), Some(h.to_string())),
                        None => (Some(addr.to_string()), None),
                    },
                    None => (None, None),
                };
                Address {
                    name: nstring(one.name.as_deref()),
                    adl: NString(None),
                    mailbox: nstring(mailbox.as_deref()),
                    host: nstring(host.as_deref()),
                }
            })
            .collect()
    };
    let m = parsed.as_ref();
    let from = list(m.and_then(|m| m.from()));
    let sender = list(m.and_then(|m| m.sender()));
    let reply_to = list(m.and_then(|m| m.reply_to()));
    Envelope {
        date: raw("Date"),
        subject: raw("Subject"),
        sender: if sender.is_empty() {
            from.clone()
        } else {
            sender
        },
        reply_to: if reply_to.is_empty() {
            from.clone()
        } else {
            reply_to
        },
        from,
        to: list(m.and_then(|m| m.to())),
        cc: list(m.and_then(|m| m.cc())),
        bcc: list(m.and_then(|m| m.bcc())),
        in_reply_to: raw("In-Reply-To"),
        message_id: raw("Message-ID"),
    }
}

/// `1.2` as a part specifier (tests).
pub fn part(numbers: &[u32]) -> Part {
    Part(
        Vec1::try_from(
            numbers
                .iter()
                .filter_map(|&n| NonZeroU32::new(n))
                .collect::<Vec<_>>(),
        )
        .expect("at least one part number"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSG: &[u8] = b"From: a@x\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\npre\r\n--b\r\nContent-Type: text/plain\r\n\r\nhello\r\nworld\r\n--b\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=\"x.pdf\"\r\n\r\nAAAA\r\n--b--\r\n";

    #[test]
    fn sections_are_slices_of_the_message() {
        let header = section(MSG, Some(&Section::Header(None)));
        assert!(MSG.starts_with(&header) && header.ends_with(b"\r\n\r\n"));
        let text = section(MSG, Some(&Section::Text(None)));
        assert_eq!([header.as_slice(), text.as_slice()].concat(), MSG);
        assert_eq!(
            section(MSG, Some(&Section::Part(part(&[1])))),
            b"hello\r\nworld"
        );
        assert_eq!(section(MSG, Some(&Section::Part(part(&[2])))), b"AAAA");
        assert_eq!(
            section(MSG, Some(&Section::Mime(part(&[2])))),
            b"Content-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=\"x.pdf\"\r\n\r\n"
        );
        assert!(section(MSG, Some(&Section::Part(part(&[3])))).is_empty());
        let single = b"Subject: s\r\n\r\nbody\r\n";
        assert_eq!(
            section(single, Some(&Section::Part(part(&[1])))),
            b"body\r\n"
        );
    }

    #[test]
    fn structure_counts_octets_and_lines() {
        let s = body_structure(MSG, true);
        let BodyStructure::Multi {
            bodies, subtype, ..
        } = s
        else {
            panic!("multipart expected")
        };
        assert_eq!(subtype, istring("MIXED"));
        let BodyStructure::Single { body, .. } = &bodies.as_ref()[0] else {
            panic!()
        };
        assert_eq!(body.basic.size, 12);
        assert!(matches!(
            body.specific,
            SpecificFields::Text {
                number_of_lines: 1,
                ..
            }
        ));
    }
}
