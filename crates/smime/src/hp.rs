//! Header protection for S/MIME (RFC 9788): the user-facing header fields travel inside the
//! signature or encryption, and an encrypted message shows outside only what routing needs.
//!
//! **Sending.** The Cryptographic Payload (the innermost content, the part that is signed or
//! encrypted) carries a copy of every non-structural header field (From, To, Cc, Subject, Date …;
//! never Bcc, since one payload goes to every recipient) and its Content-Type gets the parameter
//! `hp="cipher"` (encrypted) or `hp="clear"` (signed only). For encrypted mail the outer header
//! follows the Header Confidentiality Policy `hcp_baseline`: the Subject becomes `[...]`,
//! Keywords and Comments are left out, everything else stays; each outer field is recorded inside
//! as `HP-Outer: Name: value`, so a reader can tell what travelled in clear. A Legacy Display
//! Element (the real Subject at the top of the text, for readers without RFC 9788 support) is
//! added only on request: without it such readers see `[...]` as Subject, but the text stays
//! exactly what the sender wrote.
//!
//! **Reading.** When a payload carries `hp`, its own header fields are what the reader is shown:
//! outer user-facing fields (which anyone on the path could have changed) are dropped, not merged;
//! `HP-Outer` bookkeeping is removed and Legacy Display Elements in parts marked
//! `hp-legacy-display="1"` are taken out, so the reader sees the text once, with the real Subject
//! in the header where every client shows it.

use mail_parser::MessageParser;

use crate::mime::{self, is_content_field};

/// The Subject an encrypted message shows outside (RFC 9788 `hcp_baseline`).
pub const OBSCURED_SUBJECT: &str = "[...]";

/// How a message's header fields are protected when it is signed and/or encrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protection {
    /// No header protection: routing fields outside, only `Content-*` inside (RFC 8551 style).
    #[default]
    Off,
    /// Signed only: the header fields are copied inside (`hp="clear"`), the outside is unchanged.
    Clear,
    /// Encrypted: copied inside (`hp="cipher"`), the outside obscured by `hcp_baseline`.
    Cipher {
        /// Also put a Legacy Display Element (the real Subject) at the top of the text.
        legacy_display: bool,
    },
}

/// What protection the payload of an opened message declared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Declared {
    /// `hp="clear"`.
    Clear,
    /// `hp="cipher"`.
    Cipher,
}

/// User-facing fields that, once a payload carries protected headers, are never taken from the
/// unprotected outside, even when the payload lacks them (an attacker must not be able to add a
/// Reply-To or a From that the sender never wrote). Date and Message-ID are not in this list: a
/// missing one may have been added by the sender's own submission server.
const NEVER_FROM_OUTSIDE: &[&str] = &[
    "subject",
    "from",
    "sender",
    "reply-to",
    "to",
    "cc",
    "bcc",
    "keywords",
    "comments",
    "in-reply-to",
    "references",
    "followup-to",
    "mail-followup-to",
    "mail-reply-to",
];

/// The fields `hcp_baseline` hides completely from the outside of an encrypted message.
const REMOVED_OUTSIDE: &[&str] = &["keywords", "comments"];

/// The `hp` parameter a header block's Content-Type declares, if any.
pub fn declared(header: &[u8]) -> Option<Declared> {
    let ct = mime::content_type(header);
    match ct.param("hp")?.to_ascii_lowercase().as_str() {
        "cipher" => Some(Declared::Cipher),
        "clear" => Some(Declared::Clear),
        _ => None,
    }
}

/// A message split for protection: the fields shown outside and the payload (header and body).
#[derive(Debug, Clone)]
pub struct Protected<'a> {
    /// The outer non-structural fields (without Bcc), CRLF-terminated.
    pub outer: Vec<u8>,
    /// The payload's header: its `Content-*` fields (Content-Type with `hp` when protecting),
    /// then the protected copies and `HP-Outer` records.
    pub header: Vec<u8>,
    /// The payload's body (changed only by a Legacy Display Element; otherwise the message's
    /// own bytes, not a copy of a possibly large message).
    pub body: std::borrow::Cow<'a, [u8]>,
}

/// Splits `message` into what goes outside and the payload to sign or encrypt, as `protection`
/// asks. A message whose Content-Type already declares `hp` was protected by the mail program
/// itself and is passed on as it is (no second, conflicting protection).
pub fn protect(message: &[u8], protection: Protection) -> Protected<'_> {
    protect_with(message, protection, false)
}

/// Like [`protect`]; with `keep_bcc` (a copy only the sender can read, such as the Sent copy)
/// Bcc is kept: inside the payload when protecting, outside otherwise.
pub fn protect_with(message: &[u8], protection: Protection, keep_bcc: bool) -> Protected<'_> {
    let e = mime::split(message);
    let protection = if declared(e.header).is_some() {
        Protection::Off
    } else {
        protection
    };
    let outside = |name: &str| !is_content_field(name) && name != "bcc";
    let content = payload_content_fields(e.header, e.body);
    if protection == Protection::Off {
        return Protected {
            outer: mime::select_fields(e.header, |n| {
                !is_content_field(n) && (keep_bcc || n != "bcc")
            }),
            header: content,
            body: e.body.into(),
        };
    }
    let plain_outer = mime::select_fields(e.header, |n| {
        !is_content_field(n) && (keep_bcc || n != "bcc")
    });
    let (hp, legacy) = match protection {
        Protection::Cipher { legacy_display } => ("cipher", legacy_display),
        _ => ("clear", false),
    };
    let mut outer = Vec::with_capacity(plain_outer.len());
    let mut hp_outer = Vec::new();
    let mut obscured: Vec<(String, Vec<u8>)> = Vec::new();
    for f in mime::fields(e.header) {
        if !outside(&f.name) {
            continue;
        }
        let raw = crlf_field(f.raw);
        let shown: Option<Vec<u8>> = if hp == "clear" {
            Some(raw.clone())
        } else if f.name == "subject" {
            obscured.push((f.name.clone(), raw.clone()));
            Some(format!("Subject: {OBSCURED_SUBJECT}\r\n").into_bytes())
        } else if REMOVED_OUTSIDE.contains(&f.name.as_str()) {
            obscured.push((f.name.clone(), raw.clone()));
            None
        } else {
            Some(raw.clone())
        };
        if let Some(s) = shown {
            if hp == "cipher" {
                hp_outer.extend_from_slice(b"HP-Outer: ");
                hp_outer.extend_from_slice(&s);
            }
            outer.extend_from_slice(&s);
        }
    }
    // The payload: content fields first (the entity a legacy reader opens), then the protected
    // copies, then the HP-Outer records.
    let (content, body) = if legacy && !obscured.is_empty() {
        let lines = legacy_lines(&obscured);
        let mut entity = content.clone();
        entity.extend_from_slice(b"\r\n");
        entity.extend_from_slice(e.body);
        match inject_legacy_display(&entity, &lines, 0) {
            Some(new) => {
                let s = mime::split(&new);
                (s.header.to_vec(), s.body.to_vec().into())
            }
            None => (content, e.body.into()),
        }
    } else {
        (content, e.body.into())
    };
    let mut header = Vec::with_capacity(content.len() + plain_outer.len() + hp_outer.len() + 32);
    for f in mime::fields(&content) {
        if f.name == "content-type" {
            header.extend_from_slice(&with_param(f.raw, "hp", hp));
        } else {
            header.extend_from_slice(&crlf_field(f.raw));
        }
    }
    header.extend_from_slice(&plain_outer);
    header.extend_from_slice(&hp_outer);
    Protected {
        outer,
        header,
        body,
    }
}

/// The `Content-*` fields of the payload, with an explicit text/plain Content-Type when the
/// message has none (the payload must say what it is once it travels inside a layer).
pub fn payload_content_fields(header: &[u8], body: &[u8]) -> Vec<u8> {
    let mut h = mime::content_fields(header);
    if !mime::fields(header)
        .iter()
        .any(|f| f.name == "content-type")
    {
        let charset = if mime::is_7bit_safe(body) {
            "us-ascii"
        } else {
            "utf-8"
        };
        h.extend_from_slice(format!("Content-Type: text/plain; charset={charset}\r\n").as_bytes());
    }
    h
}

fn crlf_field(raw: &[u8]) -> Vec<u8> {
    let mut v = mime::to_crlf(raw).into_owned();
    if !v.ends_with(b"\r\n") {
        v.extend_from_slice(b"\r\n");
    }
    v
}

/// The field with `; name="value"` appended (any earlier parameter of that name removed).
fn with_param(raw: &[u8], name: &str, value: &str) -> Vec<u8> {
    let mut v = without_param(&crlf_field(raw), name);
    while v.last().is_some_and(|b| b.is_ascii_whitespace()) {
        v.pop();
    }
    if v.last() == Some(&b';') {
        v.pop();
    }
    v.extend_from_slice(format!(";\r\n {name}=\"{value}\"\r\n").as_bytes());
    v
}

/// The field without the parameter `name` (case-insensitive; quoted or token value).
fn without_param(field: &[u8], name: &str) -> Vec<u8> {
    let lower = field.to_ascii_lowercase();
    let mut from = 0;
    while let Some(i) = memchr::memmem::find(&lower[from..], name.as_bytes()).map(|i| i + from) {
        // The parameter name must follow a ';' (with optional white space) and precede '='.
        let before = lower[..i].iter().rposition(|b| !b.is_ascii_whitespace());
        let after = lower[i + name.len()..]
            .iter()
            .position(|b| !b.is_ascii_whitespace())
            .map(|p| i + name.len() + p);
        match (before, after) {
            (Some(semi), Some(eq)) if lower[semi] == b';' && lower[eq] == b'=' => {
                let mut end = eq + 1;
                while end < field.len() && matches!(field[end], b' ' | b'\t') {
                    end += 1;
                }
                if field.get(end) == Some(&b'"') {
                    end += 1;
                    while end < field.len() && field[end] != b'"' {
                        end += if field[end] == b'\\' { 2 } else { 1 };
                    }
                    end = (end + 1).min(field.len());
                } else {
                    while end < field.len()
                        && !matches!(field[end], b';' | b' ' | b'\t' | b'\r' | b'\n')
                    {
                        end += 1;
                    }
                }
                let mut out = field[..semi].to_vec();
                out.extend_from_slice(&field[end..]);
                return out;
            }
            _ => from = i + name.len(),
        }
    }
    field.to_vec()
}

/// The Legacy Display Element's lines (`Subject: …`), values decoded for display.
fn legacy_lines(obscured: &[(String, Vec<u8>)]) -> String {
    let mut out = String::new();
    for (name, raw) in obscured {
        let mut block = raw.clone();
        block.extend_from_slice(b"\r\n");
        let parsed = MessageParser::default().parse_headers(&block);
        let value = parsed
            .as_ref()
            .and_then(|m| m.headers().first())
            .and_then(|h| h.value().as_text().map(str::to_string))
            .unwrap_or_default();
        let label = match name.as_str() {
            "subject" => "Subject",
            "keywords" => "Keywords",
            _ => "Comments",
        };
        let value: String = value.chars().filter(|c| !c.is_control()).collect();
        out.push_str(&format!("{label}: {}\r\n", value.trim()));
    }
    out
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The multipart entity with the changed parts (`Some`) in place of the originals; `None`
/// when no part changed.
fn rebuilt(
    header: &[u8],
    boundary: &str,
    children: &[&[u8]],
    new: &[Option<Vec<u8>>],
) -> Option<Vec<u8>> {
    if new.iter().all(Option::is_none) {
        return None;
    }
    let mut head = mime::to_crlf(header).into_owned();
    head.extend_from_slice(b"\r\n");
    let parts: Vec<&[u8]> = children
        .iter()
        .zip(new)
        .map(|(old, new)| new.as_deref().unwrap_or(old))
        .collect();
    Some(mime::join_multipart(&head, boundary, &parts))
}

/// Puts the Legacy Display Element at the top of the main body part(s): every text/plain and
/// text/html part of a top-level text or multipart/alternative, the first part of a
/// multipart/mixed or /related. Returns `None` when there is no such part.
fn inject_legacy_display(entity: &[u8], lines: &str, depth: usize) -> Option<Vec<u8>> {
    if depth > 8 {
        return None;
    }
    let e = mime::split(entity);
    let ct = mime::content_type(e.header);
    if ct.is_multipart() {
        let boundary = ct.param("boundary")?;
        let children = mime::split_multipart(e.body, boundary).ok()?;
        let alternative = ct.mime_type == "multipart/alternative";
        if !alternative
            && !matches!(
                ct.mime_type.as_str(),
                "multipart/mixed" | "multipart/related"
            )
        {
            return None;
        }
        let new: Vec<Option<Vec<u8>>> = children
            .iter()
            .enumerate()
            .map(|(i, child)| {
                (alternative || i == 0)
                    .then(|| inject_legacy_display(child, lines, depth + 1))
                    .flatten()
            })
            .collect();
        return rebuilt(e.header, boundary, &children, &new);
    }
    let html = match ct.mime_type.as_str() {
        "text/plain" => false,
        "text/html" => true,
        _ => return None,
    };
    if mime::fields(e.header).iter().any(|f| {
        f.name == "content-disposition"
            && String::from_utf8_lossy(f.raw)
                .to_ascii_lowercase()
                .contains("attachment")
    }) {
        return None;
    }
    let parsed = MessageParser::default().parse(entity)?;
    let text = if html {
        parsed.body_html(0)?.into_owned()
    } else {
        parsed.body_text(0)?.into_owned()
    };
    let new_text = if html {
        let element = format!(
            "<div class=\"header-protection-legacy-display\"><pre>{}</pre></div>",
            html_escape(lines.trim_end())
        );
        let lower = text.to_ascii_lowercase();
        match lower
            .find("<body")
            .and_then(|b| lower[b..].find('>').map(|g| b + g + 1))
        {
            Some(at) => format!("{}{element}{}", &text[..at], &text[at..]),
            None => format!("{element}{text}"),
        }
    } else {
        format!("{lines}\r\n{text}")
    };
    // Re-written as UTF-8 quoted-printable (the decoded text is Unicode now); other parameters
    // such as format=flowed are kept.
    let mut out = mime::select_fields(e.header, |n| {
        n != "content-type" && n != "content-transfer-encoding"
    });
    let mut ct_field = format!("Content-Type: {}; charset=utf-8", ct.mime_type);
    for (n, v) in &ct.params {
        if n != "charset" && n != "hp-legacy-display" {
            ct_field.push_str(&format!("; {n}=\"{}\"", v.replace(['"', '\\'], "")));
        }
    }
    ct_field.push_str(";\r\n hp-legacy-display=\"1\"\r\n");
    out.extend_from_slice(ct_field.as_bytes());
    out.extend_from_slice(b"Content-Transfer-Encoding: quoted-printable\r\n\r\n");
    out.extend_from_slice(&mime::qp_encode(
        mime::to_crlf(new_text.as_bytes()).as_ref(),
    ));
    Some(out)
}

/// The outer fields kept next to a payload that declares `hp`: transport fields (Received,
/// Return-Path, DKIM …) and Date/Message-ID when the payload lacks them; never user-facing fields
/// the payload could have protected.
pub fn outer_fields_beside(outer_header: &[u8], payload_header: &[u8]) -> Vec<u8> {
    let inside: Vec<String> = mime::fields(payload_header)
        .into_iter()
        .map(|f| f.name)
        .collect();
    mime::select_fields(outer_header, |name| {
        !is_content_field(name)
            && name != "hp-outer"
            && !NEVER_FROM_OUTSIDE.contains(&name)
            && !inside.iter().any(|n| n == name)
    })
}

/// The payload as the reader is shown it: `HP-Outer` records removed and Legacy Display Elements
/// taken out of parts that declare them.
pub fn unprotect_payload(entity: &[u8]) -> Vec<u8> {
    let e = mime::split(entity);
    let header = mime::select_fields(e.header, |n| n != "hp-outer");
    let mut whole = header.clone();
    whole.extend_from_slice(b"\r\n");
    whole.extend_from_slice(e.body);
    strip_legacy_display(&whole, 0).unwrap_or(whole)
}

/// Removes the Legacy Display Element from every part marked `hp-legacy-display="1"` (and the
/// mark, so no later reader strips a second time). `None` when nothing changed.
fn strip_legacy_display(entity: &[u8], depth: usize) -> Option<Vec<u8>> {
    if depth > mime::MAX_MIME_DEPTH {
        return None;
    }
    let e = mime::split(entity);
    let ct = mime::content_type(e.header);
    if ct.is_multipart() {
        let boundary = ct.param("boundary")?;
        let children = mime::split_multipart(e.body, boundary).ok()?;
        let new: Vec<Option<Vec<u8>>> = children
            .iter()
            .map(|child| strip_legacy_display(child, depth + 1))
            .collect();
        return rebuilt(e.header, boundary, &children, &new);
    }
    if ct.param("hp-legacy-display") != Some("1") {
        return None;
    }
    let decoded: Vec<u8> = match ct.transfer_encoding.as_str() {
        "base64" => mime::base64_decode(e.body).ok()?,
        "quoted-printable" => {
            mail_parser::decoders::quoted_printable::quoted_printable_decode(e.body)?
        }
        _ => e.body.to_vec(),
    };
    let stripped = match ct.mime_type.as_str() {
        "text/plain" => strip_plain_element(&decoded)?,
        "text/html" => strip_html_element(&decoded)?,
        _ => return None,
    };
    let mut out = Vec::with_capacity(entity.len());
    for f in mime::fields(e.header) {
        if f.name == "content-type" {
            out.extend_from_slice(&without_param(&crlf_field(f.raw), "hp-legacy-display"));
        } else {
            out.extend_from_slice(&crlf_field(f.raw));
        }
    }
    out.extend_from_slice(b"\r\n");
    match ct.transfer_encoding.as_str() {
        "base64" => out.extend_from_slice(&mime::base64_lines(&stripped)),
        "quoted-printable" => out.extend_from_slice(&mime::qp_encode(&mime::to_crlf(&stripped))),
        _ => out.extend_from_slice(&stripped),
    }
    Some(out)
}

/// text/plain: the leading `Name: value` lines and the empty line after them.
fn strip_plain_element(text: &[u8]) -> Option<Vec<u8>> {
    let mut pos = 0;
    let mut lines = 0;
    loop {
        let end = memchr::memchr(b'\n', &text[pos..]).map(|i| pos + i + 1)?;
        let line = &text[pos..end];
        let bare = line
            .strip_suffix(b"\n")
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
            .unwrap_or(line);
        if bare.is_empty() {
            return (lines > 0).then(|| text[end..].to_vec());
        }
        let is_field = match bare.iter().position(|&b| b == b':') {
            Some(c) if c > 0 => bare[..c]
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || *b == b'-'),
            _ => false,
        };
        if !is_field || lines >= 32 {
            return None;
        }
        lines += 1;
        pos = end;
    }
}

/// text/html: the first `<div class="header-protection-legacy-display">…</div>`.
fn strip_html_element(html: &[u8]) -> Option<Vec<u8>> {
    let lower = html.to_ascii_lowercase();
    let class = memchr::memmem::find(&lower, b"header-protection-legacy-display")?;
    let start = lower[..class].iter().rposition(|&b| b == b'<')?;
    if !lower[start..].starts_with(b"<div") {
        return None;
    }
    let mut depth = 0usize;
    let mut pos = start;
    while pos < lower.len() {
        if lower[pos..].starts_with(b"<div") {
            depth += 1;
            pos += 4;
        } else if lower[pos..].starts_with(b"</div") {
            depth -= 1;
            let close = lower[pos..].iter().position(|&b| b == b'>')? + pos + 1;
            if depth == 0 {
                let mut out = html[..start].to_vec();
                out.extend_from_slice(&html[close..]);
                return Some(out);
            }
            pos = close;
        } else {
            pos += 1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(header: &[u8], name: &str) -> Vec<String> {
        mime::fields(header)
            .into_iter()
            .filter(|f| f.name == name)
            .map(|f| String::from_utf8_lossy(f.raw).trim_end().to_string())
            .collect()
    }

    const MSG: &[u8] = b"From: Alice <alice@example.org>\r\nTo: bob@example.net\r\nBcc: carol@example.com\r\nSubject: Befund Patientin M., =?utf-8?q?R=C3=B6ntgen?=\r\nKeywords: lab\r\nDate: Wed, 25 Nov 2026 10:00:00 +0000\r\nMessage-ID: <1@example.org>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nThe values are normal.\r\n";

    #[test]
    fn cipher_obscures_subject_and_records_the_outside() {
        let p = protect(
            MSG,
            Protection::Cipher {
                legacy_display: false,
            },
        );
        assert_eq!(field(&p.outer, "subject"), vec!["Subject: [...]"]);
        assert!(field(&p.outer, "keywords").is_empty());
        assert!(field(&p.outer, "bcc").is_empty());
        assert_eq!(
            field(&p.outer, "from"),
            vec!["From: Alice <alice@example.org>"]
        );
        let h = String::from_utf8(p.header.clone()).unwrap();
        assert!(h.starts_with("Content-Type: text/plain; charset=us-ascii;\r\n hp=\"cipher\"\r\n"));
        assert!(h.contains("Subject: Befund Patientin M., =?utf-8?q?R=C3=B6ntgen?=\r\n"));
        assert!(h.contains("Keywords: lab\r\n"));
        assert!(h.contains("HP-Outer: Subject: [...]\r\n"));
        assert!(h.contains("HP-Outer: From: Alice <alice@example.org>\r\n"));
        assert!(!h.contains("HP-Outer: Keywords"));
        assert!(!h.to_ascii_lowercase().contains("bcc"));
        assert!(!h.to_ascii_lowercase().contains("mime-version"));
        assert_eq!(&p.body[..], b"The values are normal.\r\n");
        assert_eq!(declared(&p.header), Some(Declared::Cipher));
    }

    #[test]
    fn clear_copies_inside_and_leaves_the_outside() {
        let p = protect(MSG, Protection::Clear);
        assert_eq!(
            field(&p.outer, "subject"),
            vec!["Subject: Befund Patientin M., =?utf-8?q?R=C3=B6ntgen?="]
        );
        let h = String::from_utf8(p.header.clone()).unwrap();
        assert!(h.contains("hp=\"clear\""));
        assert!(!h.contains("HP-Outer"));
        assert_eq!(declared(&p.header), Some(Declared::Clear));
    }

    #[test]
    fn off_and_already_protected_messages_are_not_touched() {
        let p = protect(MSG, Protection::Off);
        assert_eq!(p.header, b"Content-Type: text/plain; charset=us-ascii\r\n");
        assert!(field(&p.outer, "subject")[0].contains("Befund"));
        let own = b"Subject: x\r\nContent-Type: text/plain; hp=\"clear\"\r\n\r\nhi\r\n";
        let p = protect(
            own,
            Protection::Cipher {
                legacy_display: true,
            },
        );
        assert_eq!(field(&p.outer, "subject"), vec!["Subject: x"]);
        assert_eq!(p.header, b"Content-Type: text/plain; hp=\"clear\"\r\n");
    }

    #[test]
    fn legacy_display_round_trip_plain() {
        let p = protect(
            MSG,
            Protection::Cipher {
                legacy_display: true,
            },
        );
        let mut entity = p.header.clone();
        entity.extend_from_slice(b"\r\n");
        entity.extend_from_slice(&p.body);
        let parsed = MessageParser::default().parse(&entity).unwrap();
        let text = parsed.body_text(0).unwrap();
        assert!(
            text.starts_with(
                "Subject: Befund Patientin M., Röntgen\r\nKeywords: lab\r\n\r\nThe values"
            ),
            "{text:?}"
        );
        let shown = unprotect_payload(&entity);
        let parsed = MessageParser::default().parse(&shown).unwrap();
        assert_eq!(parsed.body_text(0).unwrap(), "The values are normal.\r\n");
        let s = String::from_utf8(shown).unwrap();
        assert!(!s.contains("hp-legacy-display"), "{s}");
        assert!(!s.contains("HP-Outer"));
        assert!(s.contains("hp=\"cipher\""));
    }

    #[test]
    fn legacy_display_round_trip_alternative() {
        let msg = b"Subject: Dinner <plans>\r\nContent-Type: multipart/alternative; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nLet's meet.\r\n--b\r\nContent-Type: text/html\r\n\r\n<html><body><p>Let's meet.</p></body></html>\r\n--b--\r\n";
        let p = protect(
            msg,
            Protection::Cipher {
                legacy_display: true,
            },
        );
        let mut entity = p.header.clone();
        entity.extend_from_slice(b"\r\n");
        entity.extend_from_slice(&p.body);
        let parsed = MessageParser::default().parse(&entity).unwrap();
        assert!(parsed
            .body_text(0)
            .unwrap()
            .starts_with("Subject: Dinner <plans>\r\n\r\n"));
        let html = parsed.body_html(0).unwrap();
        assert!(
            html.contains("<body><div class=\"header-protection-legacy-display\"><pre>Subject: Dinner &lt;plans&gt;</pre></div><p>"),
            "{html}"
        );
        let shown = unprotect_payload(&entity);
        let parsed = MessageParser::default().parse(&shown).unwrap();
        // The CRLF before a delimiter belongs to the delimiter: the text is exactly as sent.
        assert_eq!(parsed.body_text(0).unwrap(), "Let's meet.");
        let html = parsed.body_html(0).unwrap();
        assert!(html.contains("<body><p>Let's meet.</p>"), "{html}");
    }

    #[test]
    fn legacy_display_skips_attachments_and_is_kept_without_the_mark() {
        let msg = b"Subject: scan\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0=\r\n";
        let p = protect(
            msg,
            Protection::Cipher {
                legacy_display: true,
            },
        );
        assert_eq!(&p.body[..], b"JVBERi0=\r\n");
        // Text that merely looks like a Legacy Display Element is left alone without the mark.
        let e = b"Content-Type: text/plain; hp=\"cipher\"\r\n\r\nSubject: my notes\r\n\r\nrest\r\n";
        assert_eq!(unprotect_payload(e), e.to_vec());
        // With the mark but no element (a first line that is not a field), nothing is removed.
        let e = b"Content-Type: text/plain; hp=\"cipher\"; hp-legacy-display=\"1\"\r\n\r\nHello Bob,\r\n\r\nrest\r\n";
        assert_eq!(unprotect_payload(e), e.to_vec());
    }

    #[test]
    fn outside_fields_beside_a_protected_payload() {
        let outer = b"Received: from x\r\nSubject: [...]\r\nReply-To: evil@example.com\r\nFrom: a@example.org\r\nDate: Thu, 1 Jan 2026 00:00:00 +0000\r\nMessage-ID: <o@x>\r\nContent-Type: application/pkcs7-mime\r\n";
        let payload = b"Content-Type: text/plain; hp=\"cipher\"\r\nFrom: a@example.org\r\nSubject: real\r\nMessage-ID: <i@x>\r\n";
        let kept = String::from_utf8(outer_fields_beside(outer, payload)).unwrap();
        assert_eq!(
            kept,
            "Received: from x\r\nDate: Thu, 1 Jan 2026 00:00:00 +0000\r\n"
        );
    }

    #[test]
    fn params_are_replaced_not_duplicated() {
        let f = with_param(
            b"Content-Type: text/plain; hp=clear;\r\n charset=utf-8\r\n",
            "hp",
            "cipher",
        );
        let s = String::from_utf8(f).unwrap();
        assert_eq!(s.matches("hp=").count(), 1, "{s}");
        assert!(s.contains("charset=utf-8"));
        assert!(s.ends_with("hp=\"cipher\"\r\n"));
        let g = without_param(
            b"Content-Type: text/plain; hp-legacy-display=\"1\"; charset=x\r\n",
            "hp-legacy-display",
        );
        assert_eq!(g, b"Content-Type: text/plain; charset=x\r\n");
    }
}
