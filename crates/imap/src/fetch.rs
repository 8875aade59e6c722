//! FETCH rewriting, on `imap-codec` types. A client FETCH that asks for anything derived from
//! the message content is sent to the server with the UID added and, in a mailbox envelopd has
//! not seen yet, the `Content-Type` and status header fields (the "marker"), which tell envelopd
//! which messages it must show decrypted. In a mailbox it knows, the marker is left out (the
//! server's answer is then exactly what the client asked for plus the UID, so a folder opens
//! as fast as directly) and only messages envelopd has not classified yet are asked about
//! afterwards. Responses are answered from the shown message, every item from the same bytes;
//! items the client did not ask for are removed again. Pure functions.

use std::borrow::Cow;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};

use imap_codec::decode::Decoder;
use imap_codec::encode::{Encoder, Fragment};
use imap_codec::imap_types::command::{Command, CommandBody};
use imap_codec::imap_types::core::{AString, Literal, NString, Vec1};
use imap_codec::imap_types::fetch::{
    MacroOrMessageDataItemNames, MessageDataItem, MessageDataItemName, Section,
};
use imap_codec::imap_types::response::{Data, Response};
use imap_codec::{CommandCodec, ResponseCodec};

use crate::present::STATUS_FIELD;
use crate::structure;

/// A client FETCH that envelopd answers from shown messages.
#[derive(Debug, Clone)]
pub struct FetchPlan {
    /// The client's tag.
    pub tag: String,
    /// `UID FETCH` (the UID is then always part of the response).
    pub uid: bool,
    /// What the client asked for.
    pub requested: Vec<MessageDataItemName<'static>>,
    /// Whether envelopd's header-fields item was added (otherwise each message is judged by
    /// what envelopd already knows of its UID).
    pub marker: bool,
}

impl FetchPlan {
    /// Whether the client gets the UID anyway (so a response may pass with it unchanged).
    pub fn shows_uid(&self) -> bool {
        self.uid || self.requested.contains(&MessageDataItemName::Uid)
    }
}

fn marker_section() -> Section<'static> {
    Section::HeaderFields(
        None,
        Vec1::try_from(vec![
            AString::try_from("Content-Type").expect("an atom"),
            AString::try_from(STATUS_FIELD).expect("an atom"),
        ])
        .expect("two names"),
    )
}

/// True for envelopd's header-fields section, however the server spelled the field names
/// (Dovecot answers in upper case). Runs for every section of every response: no allocation.
fn is_marker(section: &Option<Section<'_>>) -> bool {
    let Some(Section::HeaderFields(None, names)) = section else {
        return false;
    };
    let names = names.as_ref();
    names.len() == 2
        && names[0].as_ref().eq_ignore_ascii_case(b"Content-Type")
        && names[1]
            .as_ref()
            .eq_ignore_ascii_case(STATUS_FIELD.as_bytes())
}

/// What was already worked out for one shown message: header sections (a folder listing asks
/// for the same header fields of every message each time the folder is opened) and whole
/// answers (the same server response to the same request is always rewritten the same way).
/// Only header sections (small), at most [`MEMO_ENTRIES`] of each and [`MEMO_BYTES`] in all
/// are kept (the cache counts that much for every message it holds).
#[derive(Default)]
pub struct SectionMemo {
    sections: Mutex<Vec<(Section<'static>, Arc<[u8]>)>>,
    answers: Mutex<Vec<MemoAnswer>>,
}

/// One remembered answer: the request, the server's response, what the client got.
struct MemoAnswer {
    uid: bool,
    requested: Vec<MessageDataItemName<'static>>,
    response: Vec<u8>,
    answer: Vec<u8>,
}

/// How many different header sections and answers are kept per shown message.
const MEMO_ENTRIES: usize = 4;

/// The most bytes one memo keeps, sections and answers (a folder listing's response and
/// answer are under 2 KiB together).
pub const MEMO_BYTES: usize = 8 * 1024;

/// The bytes a memo's entries hold.
fn memo_bytes(sections: &[(Section<'static>, Arc<[u8]>)], answers: &[MemoAnswer]) -> usize {
    sections.iter().map(|(_, b)| b.len()).sum::<usize>()
        + answers
            .iter()
            .map(|a| a.response.len() + a.answer.len())
            .sum::<usize>()
}

impl Clone for SectionMemo {
    fn clone(&self) -> Self {
        SectionMemo::default()
    }
}

impl std::fmt::Debug for SectionMemo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SectionMemo")
    }
}

impl SectionMemo {
    /// The answer given before to exactly this server `response` under this `plan`, if any.
    pub fn answer(&self, plan: &FetchPlan, response: &[u8]) -> Option<Vec<u8>> {
        let answers = self.answers.lock().ok()?;
        answers
            .iter()
            .find(|a| a.response == response && a.uid == plan.uid && a.requested == plan.requested)
            .map(|a| a.answer.clone())
    }

    /// Remembers `answer` as the rewriting of `response` under `plan`, if both are small
    /// (listings; not whole messages, which the cache's size bound does not count twice).
    pub fn keep_answer(&self, plan: &FetchPlan, response: &[u8], answer: &[u8]) {
        if response.len() + answer.len() > MEMO_BYTES / 2 {
            return;
        }
        let (Ok(sections), Ok(mut answers)) = (self.sections.lock(), self.answers.lock()) else {
            return;
        };
        if answers.len() >= MEMO_ENTRIES {
            answers.remove(0);
        }
        // The oldest answers make room; sections stay (they are at most half the bytes).
        while !answers.is_empty()
            && memo_bytes(&sections, &answers) + response.len() + answer.len() > MEMO_BYTES
        {
            answers.remove(0);
        }
        if memo_bytes(&sections, &answers) + response.len() + answer.len() > MEMO_BYTES {
            return;
        }
        answers.push(MemoAnswer {
            uid: plan.uid,
            requested: plan.requested.clone(),
            response: response.to_vec(),
            answer: answer.to_vec(),
        });
    }

    /// `BODY[section]` of `message` (which must be the message this memo belongs to).
    fn section<'m>(&self, message: &'m [u8], section: &Option<Section<'_>>) -> Cow<'m, [u8]> {
        let Some(
            s @ (Section::Header(_) | Section::HeaderFields(..) | Section::HeaderFieldsNot(..)),
        ) = section
        else {
            if section.is_none() {
                // The whole message: no copy until the answer is encoded.
                return Cow::Borrowed(message);
            }
            return structure::section(message, section.as_ref()).into();
        };
        if let Some(hit) = self
            .sections
            .lock()
            .ok()
            .and_then(|m| m.iter().find(|(k, _)| k == s).map(|(_, v)| v.clone()))
        {
            return Cow::Owned(hit.to_vec());
        }
        let bytes = structure::section(message, Some(s));
        // Sections take at most half the memo's bytes, answers the rest.
        if let Ok(mut m) = self.sections.lock() {
            if m.len() < MEMO_ENTRIES && memo_bytes(&m, &[]) + bytes.len() <= MEMO_BYTES / 2 {
                m.push((
                    bounded_static::IntoBoundedStatic::into_static(s.clone()),
                    bytes.as_slice().into(),
                ));
            }
        }
        Cow::Owned(bytes)
    }
}

fn marker_item() -> MessageDataItemName<'static> {
    MessageDataItemName::BodyExt {
        section: Some(marker_section()),
        partial: None,
        peek: true,
    }
}

fn touches_content(item: &MessageDataItemName<'_>) -> bool {
    use MessageDataItemName::*;
    matches!(
        item,
        Body | BodyExt { .. }
            | BodyStructure
            | Envelope
            | Rfc822
            | Rfc822Header
            | Rfc822Size
            | Rfc822Text
            | Binary { .. }
            | BinarySize { .. }
    )
}

/// If `line` (one complete command line, CRLF included) is a FETCH that needs rewriting,
/// returns the line to send to the server instead (with the marker) and the plan for its
/// responses.
pub fn plan(line: &[u8]) -> Option<(Vec<u8>, FetchPlan)> {
    plan_with(line, true)
}

/// As [`plan`]; `marker` says whether envelopd's header-fields item is added.
pub fn plan_with(line: &[u8], marker: bool) -> Option<(Vec<u8>, FetchPlan)> {
    let (rest, command) = CommandCodec::default().decode(line).ok()?;
    if !rest.is_empty() {
        return None;
    }
    let Command { tag, body } = command;
    let CommandBody::Fetch {
        sequence_set,
        macro_or_item_names,
        uid,
        modifiers,
    } = body
    else {
        return None;
    };
    let requested: Vec<MessageDataItemName<'static>> = match &macro_or_item_names {
        MacroOrMessageDataItemNames::Macro(m) => m
            .expand()
            .into_iter()
            .map(bounded_static::IntoBoundedStatic::into_static)
            .collect(),
        MacroOrMessageDataItemNames::MessageDataItemNames(items) => items
            .iter()
            .cloned()
            .map(bounded_static::IntoBoundedStatic::into_static)
            .collect(),
    };
    if !requested.iter().any(touches_content) {
        return None;
    }
    let mut items = requested.clone();
    if !items.contains(&MessageDataItemName::Uid) {
        items.push(MessageDataItemName::Uid);
    }
    if marker {
        items.push(marker_item());
    }
    let rewritten = Command {
        tag: tag.clone(),
        body: CommandBody::Fetch {
            sequence_set,
            macro_or_item_names: MacroOrMessageDataItemNames::MessageDataItemNames(items),
            uid,
            modifiers,
        },
    };
    let bytes = CommandCodec::default().encode(&rewritten).dump();
    Some((
        bytes,
        FetchPlan {
            tag: tag.inner().to_string(),
            uid,
            requested,
            marker,
        },
    ))
}

/// The UID of a FETCH response that starts `* n FETCH (UID u` (Dovecot's order), read without a
/// full parse; `None` when it does not start like that.
pub fn quick_uid(message: &[u8]) -> Option<u32> {
    let rest = message.strip_prefix(b"* ")?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    let rest = rest[digits..].strip_prefix(b" FETCH (UID ")?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 10 || !matches!(rest.get(digits), Some(b' ' | b')')) {
        return None;
    }
    std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()
}

/// envelopd's own command asking which of `uids` it must show in its form: their UID and
/// marker fields.
pub fn classify(uids: &[u32]) -> Vec<u8> {
    format!(
        "UID FETCH {} (UID BODY.PEEK[HEADER.FIELDS (Content-Type {STATUS_FIELD})])\r\n",
        uid_set(uids)
    )
    .into_bytes()
}

/// `uids` as an IMAP sequence set (`3,5,9`), for envelopd's own commands.
fn uid_set(uids: &[u32]) -> String {
    let set: Vec<String> = uids.iter().map(u32::to_string).collect();
    set.join(",")
}

/// envelopd's own command asking the stored size of each of `uids`, so that it can fetch the
/// stored messages in batches bounded in bytes.
pub fn sizes(uids: &[u32]) -> Vec<u8> {
    format!("UID FETCH {} (UID RFC822.SIZE)\r\n", uid_set(uids)).into_bytes()
}

/// One parsed untagged FETCH response.
pub struct FetchResponse<'a> {
    /// The message sequence number.
    pub seq: NonZeroU32,
    /// Its items as the server sent them (borrowing the server's bytes where they can).
    pub items: Vec<MessageDataItem<'a>>,
}

impl FetchResponse<'_> {
    /// The response with its own copy of everything (to be kept beyond the server's bytes).
    pub fn into_static(self) -> FetchResponse<'static> {
        FetchResponse {
            seq: self.seq,
            items: self
                .items
                .into_iter()
                .map(bounded_static::IntoBoundedStatic::into_static)
                .collect(),
        }
    }

    /// The UID, if the response has one.
    pub fn uid(&self) -> Option<u32> {
        self.items.iter().find_map(|i| match i {
            MessageDataItem::Uid(u) => Some(u.get()),
            _ => None,
        })
    }

    /// `RFC822.SIZE`, if the response has it.
    pub fn size(&self) -> Option<u32> {
        self.items.iter().find_map(|i| match i {
            MessageDataItem::Rfc822Size(n) => Some(*n),
            _ => None,
        })
    }

    /// Whether any item is derived from the message content (flags, UID, dates are not).
    pub fn has_content(&self) -> bool {
        self.items.iter().any(|i| {
            use MessageDataItem::*;
            matches!(
                i,
                Body(_)
                    | BodyExt { .. }
                    | BodyStructure(_)
                    | Envelope(_)
                    | Rfc822(_)
                    | Rfc822Header(_)
                    | Rfc822Size(_)
                    | Rfc822Text(_)
                    | Binary { .. }
                    | BinarySize { .. }
            )
        })
    }

    /// The header fields envelopd asked for (Content-Type and the status field), if present.
    pub fn marker(&self) -> Option<Vec<u8>> {
        self.items.iter().find_map(|i| match i {
            MessageDataItem::BodyExt { section, data, .. } if is_marker(section) => Some(
                data.clone()
                    .into_option()
                    .map(|d| d.into_owned())
                    .unwrap_or_default(),
            ),
            _ => None,
        })
    }

    /// `BODY[]` as sent, if present (envelopd's own fetch of the stored message).
    pub fn whole_body(&self) -> Option<&[u8]> {
        self.items.iter().find_map(|i| match i {
            MessageDataItem::BodyExt {
                section: None,
                origin: None,
                data,
            } => data.0.as_ref().map(|d| d.as_ref()),
            _ => None,
        })
    }
}

/// The fast path for the common case: the server echoed envelopd's header-fields item last (as
/// it was asked), and the UID is part of what the client gets anyway. Returns where that item
/// starts (for [`cut_marker`]) and the item's bytes; `None` when the response does not look
/// exactly like that (the full parse then decides).
pub fn peek_marker(message: &[u8], plan: &FetchPlan) -> Option<(usize, Vec<u8>)> {
    let (name_start, data_start) = marker_span(message, plan)?;
    Some((name_start, message[data_start..message.len() - 3].to_vec()))
}

/// The response without envelopd's header-fields item (found by [`peek_marker`]), in its own
/// buffer: a response carrying a whole stored message is not copied.
pub fn cut_marker(mut message: Vec<u8>, name_start: usize) -> Vec<u8> {
    message.truncate(name_start);
    message.extend_from_slice(b")\r\n");
    message
}

/// Where envelopd's header-fields item starts in a FETCH response (its name), and where its
/// literal's bytes start, when the response ends with it.
fn marker_span(message: &[u8], plan: &FetchPlan) -> Option<(usize, usize)> {
    if !(plan.uid || plan.requested.contains(&MessageDataItemName::Uid))
        || plan.requested.iter().any(
            |r| matches!(r, MessageDataItemName::BodyExt { section, .. } if is_marker(section)),
        )
    {
        return None;
    }
    let body = message.strip_suffix(b")\r\n")?;
    // The marker's literal is the last thing before ")": find its announcement.
    let open = memchr::memrchr(b'{', body)?;
    let close = open + memchr::memchr(b'}', &body[open..])?;
    let n: usize = std::str::from_utf8(&body[open + 1..close])
        .ok()?
        .parse()
        .ok()?;
    let data_start = close + 3;
    if body.get(close + 1..data_start)? != b"\r\n" || data_start + n != body.len() {
        return None;
    }
    let name_start = memchr::memmem::rfind(&body[..open], b" BODY[")?;
    let name = String::from_utf8_lossy(&body[name_start..open]).to_ascii_lowercase();
    if name.trim() != "body[header.fields (content-type x-envelopd)]" {
        return None;
    }
    Some((name_start, data_start))
}

/// Moves the literal at `start..end` of a server `response` out of it: returns the response
/// with an empty literal in its place, and the literal's bytes (in the response's own buffer,
/// not a copy). Only for a literal of at least `min` bytes announced as `{n}` right before it;
/// otherwise the response comes back unchanged.
pub fn take_literal(
    mut response: Vec<u8>,
    start: usize,
    end: usize,
    min: usize,
) -> Result<(Vec<u8>, Vec<u8>), Vec<u8>> {
    let announced = format!("{{{}}}\r\n", end - start);
    if end - start < min
        || end > response.len()
        || !response[..start].ends_with(announced.as_bytes())
    {
        return Err(response);
    }
    let mut held = response[..start - announced.len()].to_vec();
    held.extend_from_slice(b"{0}\r\n");
    held.extend_from_slice(&response[end..]);
    response.truncate(end);
    response.drain(..start);
    Ok((held, response))
}

/// Parses `* n FETCH (...)`; `None` for anything else or what imap-codec cannot read.
pub fn parse_response(message: &[u8]) -> Option<FetchResponse<'_>> {
    let (rest, response) = ResponseCodec::default().decode(message).ok()?;
    if !rest.is_empty() {
        return None;
    }
    match response {
        Response::Data(Data::Fetch { seq, items }) => Some(FetchResponse {
            seq,
            items: items.into_inner(),
        }),
        _ => None,
    }
}

/// The status header fields a message carries (for a plain message: is a forged one there?).
pub fn marker_has_status(marker: &[u8]) -> bool {
    smime::mime::fields(marker)
        .iter()
        .any(|f| f.name.eq_ignore_ascii_case(STATUS_FIELD))
}

/// The Content-Type value in the marker fields (empty when absent).
pub fn marker_content_type(marker: &[u8]) -> String {
    smime::mime::fields(marker)
        .iter()
        .find(|f| f.name == "content-type")
        .map(|f| {
            let raw = String::from_utf8_lossy(f.raw);
            raw.split_once(':')
                .map(|(_, v)| v.trim().replace(['\r', '\n'], " "))
                .unwrap_or_default()
        })
        .unwrap_or_default()
}

/// A literal of `data`, borrowed where it can be (a shown message of 20 MB is then copied only
/// once, into the encoded answer).
fn nstring(data: Cow<'_, [u8]>) -> NString<'_> {
    let literal = if data.contains(&0) {
        // IMAP4rev1 literals cannot carry NUL; such a byte is shown as a space.
        let clean: Vec<u8> = data
            .iter()
            .map(|&b| if b == 0 { b' ' } else { b })
            .collect();
        Literal::try_from(clean).expect("NUL-free bytes make a literal")
    } else {
        // Checked for NUL just above (memchr, many bytes at a time); imap-types' own check
        // would look at every byte of the shown message once more, one at a time (measured:
        // the largest single cost of a cold folder sync).
        Literal::unvalidated(data)
    };
    NString(Some(literal.into()))
}

/// The requested partial range for `BODY[section]<origin>`, if any.
fn partial_for(plan: &FetchPlan, section: &Option<Section<'_>>, origin: u32) -> Option<u32> {
    plan.requested.iter().find_map(|r| match r {
        MessageDataItemName::BodyExt {
            section: s,
            partial: Some((o, n)),
            ..
        } if s == section && *o == origin => Some(n.get()),
        _ => None,
    })
}

fn was_requested(plan: &FetchPlan, item: &MessageDataItem<'_>) -> bool {
    use MessageDataItemName as N;
    match item {
        MessageDataItem::Uid(_) => plan.uid || plan.requested.contains(&N::Uid),
        MessageDataItem::BodyExt { section, .. } => {
            !is_marker(section)
                || plan
                    .requested
                    .iter()
                    .any(|r| matches!(r, N::BodyExt { section: s, .. } if is_marker(s)))
        }
        _ => true,
    }
}

/// Encodes the response for the client: with `shown`, every content item is answered from those
/// bytes; without, the server's items pass unchanged. envelopd's extra items are removed.
pub fn rewrite(response: FetchResponse<'_>, plan: &FetchPlan, shown: Option<&[u8]>) -> Vec<u8> {
    rewrite_memo(response, plan, shown, &SectionMemo::default())
}

/// As [`rewrite`], with header sections of `shown` taken from (and kept in) `memo`.
pub fn rewrite_memo(
    response: FetchResponse<'_>,
    plan: &FetchPlan,
    shown: Option<&[u8]>,
    memo: &SectionMemo,
) -> Vec<u8> {
    join(&rewrite_parts(response, plan, shown, memo), shown)
}

/// One piece of an encoded answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    /// Bytes to send as they are.
    Bytes(Vec<u8>),
    /// This range of the shown message, sent from where it lies.
    Shown(std::ops::Range<usize>),
}

/// From this size on, a literal taken from the shown message is sent from the shown message
/// itself instead of being copied into the encoded answer (imap-codec's encoder copies a literal
/// twice: measured, the answer to one cold sync wrote every shown byte two more times, each time
/// into fresh pages).
const SHARE_FROM: usize = 64 * 1024;

/// The answer's bytes from its parts.
pub fn join(parts: &[Part], shown: Option<&[u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    for p in parts {
        match (p, shown) {
            (Part::Bytes(b), _) => out.extend_from_slice(b),
            (Part::Shown(r), Some(s)) => out.extend_from_slice(&s[r.clone()]),
            (Part::Shown(_), None) => unreachable!("a shown range without a shown message"),
        }
    }
    out
}

/// The stand-in literal for the `n`th shared range of one answer: unguessable (a message cannot
/// carry it by chance or on purpose), and never NUL, so it is a valid literal.
fn stand_in(n: usize) -> Vec<u8> {
    use std::hash::BuildHasher;
    static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let seed = SEED.get_or_init(|| std::collections::hash_map::RandomState::new().hash_one(0u8));
    format!("\x01envelopd-shown-{seed:016x}-{n}\x01").into_bytes()
}

/// As [`rewrite_memo`], in parts: the large literals of `shown` (the whole message, a body part)
/// are ranges of it, not copies.
pub fn rewrite_parts(
    response: FetchResponse<'_>,
    plan: &FetchPlan,
    shown: Option<&[u8]>,
    memo: &SectionMemo,
) -> Vec<Part> {
    let seq = response.seq;
    let mut shared: Vec<(Vec<u8>, std::ops::Range<usize>)> = Vec::new();
    let mut items = Vec::with_capacity(response.items.len());
    for item in response.items {
        if !was_requested(plan, &item) {
            continue;
        }
        let Some(p) = shown else {
            items.push(item);
            continue;
        };
        // A large borrowed literal without NUL goes out from `p` itself; a stand-in marks its
        // place in the encoding.
        let mut literal = |bytes: Cow<'_, [u8]>| -> NString<'static> {
            match bytes {
                Cow::Borrowed(b) if b.len() >= SHARE_FROM && memchr::memchr(0, b).is_none() => {
                    let start = b.as_ptr() as usize - p.as_ptr() as usize;
                    let token = stand_in(shared.len());
                    shared.push((token.clone(), start..start + b.len()));
                    NString(Some(Literal::unvalidated(token).into()))
                }
                other => bounded_static::IntoBoundedStatic::into_static(nstring(other)),
            }
        };
        let new = match item {
            MessageDataItem::BodyExt {
                section, origin, ..
            } => {
                let whole = memo.section(p, &section);
                let bytes = match origin {
                    Some(o) => {
                        let start = (o as usize).min(whole.len());
                        let len = partial_for(plan, &section, o).unwrap_or(u32::MAX) as usize;
                        let end = start.saturating_add(len).min(whole.len());
                        match whole {
                            Cow::Borrowed(w) => Cow::Borrowed(&w[start..end]),
                            Cow::Owned(w) => Cow::Owned(w[start..end].to_vec()),
                        }
                    }
                    None => whole,
                };
                MessageDataItem::BodyExt {
                    section,
                    origin,
                    data: literal(bytes),
                }
            }
            MessageDataItem::Rfc822(_) => MessageDataItem::Rfc822(literal(Cow::Borrowed(p))),
            MessageDataItem::Rfc822Header(_) => MessageDataItem::Rfc822Header(nstring(
                structure::section(p, Some(&Section::Header(None))).into(),
            )),
            MessageDataItem::Rfc822Text(_) => MessageDataItem::Rfc822Text(nstring(
                structure::section(p, Some(&Section::Text(None))).into(),
            )),
            MessageDataItem::Rfc822Size(_) => MessageDataItem::Rfc822Size(p.len() as u32),
            MessageDataItem::Body(_) => MessageDataItem::Body(structure::body_structure(p, false)),
            MessageDataItem::BodyStructure(_) => {
                MessageDataItem::BodyStructure(structure::body_structure(p, true))
            }
            // With header protection the shown Subject, From … differ from the stored ones.
            MessageDataItem::Envelope(_) => {
                MessageDataItem::Envelope(structure::envelope(smime::mime::split(p).header))
            }
            other => other,
        };
        items.push(new);
    }
    let items = Vec1::try_from(items).unwrap_or_else(|_| {
        // Nothing the client asked for was in the response (never happens in practice); an
        // empty FETCH is not valid IMAP, so the answer is FLAGS ().
        Vec1::from(MessageDataItem::Flags(Vec::new()))
    });
    let response = Response::Data(Data::Fetch { seq, items });
    let encoded = ResponseCodec::default().encode(&response);
    if shared.is_empty() {
        return vec![Part::Bytes(encoded.dump())];
    }
    let mut parts = Vec::new();
    let mut line = Vec::new();
    for fragment in encoded {
        match fragment {
            Fragment::Line { data } => line.extend_from_slice(&data),
            Fragment::Literal { data, .. } => match shared.iter().find(|(t, _)| *t == data) {
                Some((token, range)) => {
                    // The literal was announced with the stand-in's length.
                    let announced = format!("{{{}}}\r\n", token.len());
                    let at = line.len().saturating_sub(announced.len());
                    assert!(
                        line.ends_with(announced.as_bytes()),
                        "imap-codec announces a literal on the line before it"
                    );
                    line.truncate(at);
                    line.extend_from_slice(format!("{{{}}}\r\n", range.len()).as_bytes());
                    parts.push(Part::Bytes(std::mem::take(&mut line)));
                    parts.push(Part::Shown(range.clone()));
                }
                None => line.extend_from_slice(&data),
            },
        }
    }
    if !line.is_empty() {
        parts.push(Part::Bytes(line));
    }
    parts
}

/// A FETCH response with the literal of its `BODY[]` item emptied (`{0}`), and where that
/// literal's bytes lie in `message`: the skeleton parses into every item without imap-codec
/// checking the stored message byte by byte (measured: 8 % of a cold sync's CPU). `None` when
/// the response has no such literal of at least `min` bytes.
pub fn hollow_body(message: &[u8], min: usize) -> Option<(Vec<u8>, std::ops::Range<usize>)> {
    let mut pos = 0;
    while let Some(nl) = memchr::memchr(b'\n', &message[pos..]) {
        let end = pos + nl + 1;
        let line = &message[pos..end];
        // The framer's rule: a line ending in `{n}` announces n bytes of literal.
        let n = usize::try_from(crate::frame::literal_at_end(line)?).ok()?;
        let literal_end = end.checked_add(n).filter(|&e| e <= message.len())?;
        let announced = format!(" BODY[] {{{n}}}\r\n");
        if n >= min && line.ends_with(announced.as_bytes()) {
            let mut skeleton = Vec::with_capacity(message.len() - n + 16);
            skeleton.extend_from_slice(&message[..end - announced.len()]);
            skeleton.extend_from_slice(b" BODY[] {0}\r\n");
            skeleton.extend_from_slice(&message[literal_end..]);
            // Only when this is the response's one BODY[] item (the name cannot hide outside
            // a literal): with another, imap-codec's reading of the whole response could name
            // that one the stored message.
            if memchr::memmem::find_iter(&skeleton.to_ascii_uppercase(), b"BODY[]").count() != 1 {
                return None;
            }
            return Some((skeleton, end..literal_end));
        }
        pos = literal_end;
    }
    None
}

/// envelopd's own command to read whole stored messages by UID.
pub fn fetch_whole(tag: &str, uids: &[u32]) -> Vec<u8> {
    format!("{tag} UID FETCH {} (UID BODY.PEEK[])\r\n", uid_set(uids)).into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_uid_is_read_only_where_dovecot_puts_it() {
        assert_eq!(
            quick_uid(b"* 12 FETCH (UID 4711 RFC822.SIZE 9)\r\n"),
            Some(4711)
        );
        assert_eq!(quick_uid(b"* 1 FETCH (UID 7)\r\n"), Some(7));
        for no in [
            &b"* 1 FETCH (FLAGS () UID 7)\r\n"[..],
            b"* 1 FETCH (UID x)\r\n",
            b"* 1 FETCH (UID 99999999999 FLAGS ())\r\n",
            b"* 1 FETCH (UID 7",
            b"a1 OK FETCH (UID 7)\r\n",
        ] {
            assert_eq!(quick_uid(no), None, "{}", String::from_utf8_lossy(no));
        }
    }

    #[test]
    fn a_known_mailbox_is_asked_only_what_the_client_asks_plus_the_uid() {
        let (line, plan) =
            plan_with(b"a FETCH 1:* (RFC822.SIZE BODY.PEEK[HEADER])\r\n", false).unwrap();
        assert_eq!(
            String::from_utf8(line).unwrap(),
            "a FETCH 1:* (RFC822.SIZE BODY.PEEK[HEADER] UID)\r\n"
        );
        assert!(!plan.marker && !plan.shows_uid());
        let (line, _) = super::plan(b"a UID FETCH 1:* (RFC822.SIZE)\r\n").unwrap();
        assert!(String::from_utf8(line).unwrap().contains("HEADER.FIELDS"));
    }

    #[test]
    fn header_sections_are_computed_once_per_shown_message() {
        let shown = b"Subject: s\r\nFrom: a@b\r\n\r\nbody\r\n";
        let memo = SectionMemo::default();
        let (_, plan) = plan(b"a FETCH 1 (BODY.PEEK[HEADER.FIELDS (Subject)])\r\n").unwrap();
        let response = || {
            parse_response(b"* 1 FETCH (BODY[HEADER.FIELDS (SUBJECT)] {3}\r\nx\r\n)\r\n").unwrap()
        };
        let a = rewrite_memo(response(), &plan, Some(shown), &memo);
        assert_eq!(memo.sections.lock().unwrap().len(), 1);
        let b = rewrite_memo(response(), &plan, Some(shown), &memo);
        assert_eq!(a, b);
        assert_eq!(a, rewrite(response(), &plan, Some(shown)));
        assert!(String::from_utf8(a.clone())
            .unwrap()
            .contains("Subject: s\r\n\r\n"));

        let server = b"* 1 FETCH (BODY[HEADER.FIELDS (SUBJECT)] {3}\r\nx\r\n)\r\n";
        assert_eq!(memo.answer(&plan, server), None);
        memo.keep_answer(&plan, server, &a);
        assert_eq!(memo.answer(&plan, server), Some(a.clone()));
        // Another request, or another response, is not answered from memory.
        let (_, other) = super::plan(b"a FETCH 1 (BODY.PEEK[HEADER.FIELDS (From)])\r\n").unwrap();
        assert_eq!(memo.answer(&other, server), None);
        assert_eq!(memo.answer(&plan, &server[1..]), None);
        // Whole messages are not kept twice.
        let big = vec![b'x'; 20_000];
        memo.keep_answer(&other, server, &big);
        assert_eq!(memo.answer(&other, server), None);
    }

    #[test]
    fn content_fetches_are_planned_and_others_pass() {
        let (line, plan) = plan(b"a1 UID FETCH 1:* (FLAGS RFC822.SIZE)\r\n").unwrap();
        let line = String::from_utf8(line).unwrap();
        assert!(line.starts_with("a1 UID FETCH 1:* (FLAGS RFC822.SIZE UID BODY.PEEK[HEADER.FIELDS (Content-Type X-Envelopd)])"), "{line}");
        assert!(plan.uid);
        assert!(super::plan(b"a2 FETCH 1 (FLAGS)\r\n").is_none());
        assert!(super::plan(b"a3 NOOP\r\n").is_none());
        let (_, full) = super::plan(b"a4 FETCH 1:3 FULL\r\n").unwrap();
        assert!(full.requested.contains(&MessageDataItemName::Body));
    }

    #[test]
    fn the_fast_path_cuts_exactly_the_marker() {
        let (_, plan) = plan(b"a UID FETCH 1:* (RFC822.SIZE FLAGS)\r\n").unwrap();
        let m = b"* 3 FETCH (UID 9 RFC822.SIZE 10 FLAGS () BODY[HEADER.FIELDS (CONTENT-TYPE X-ENVELOPD)] {24}\r\nContent-Type: text/x\r\n\r\n)\r\n";
        let (cut, marker) = peek_marker(m, &plan).unwrap();
        let stripped = cut_marker(m.to_vec(), cut);
        assert_eq!(stripped, b"* 3 FETCH (UID 9 RFC822.SIZE 10 FLAGS ())\r\n");
        assert_eq!(marker, b"Content-Type: text/x\r\n\r\n");
        // Without UID in what the client gets, or with other trailing items: the full parse.
        let (_, seq_plan) = super::plan(b"a FETCH 1:* (RFC822.SIZE)\r\n").unwrap();
        assert!(peek_marker(m, &seq_plan).is_none());
        let other = b"* 3 FETCH (UID 9 BODY[HEADER.FIELDS (FROM)] {4}\r\nx\r\n\r\n)\r\n";
        assert!(peek_marker(other, &plan).is_none());
    }

    #[test]
    fn large_literals_go_out_from_the_shown_message_itself() {
        let answer = |server: &[u8], plan: &FetchPlan, shown: &[u8]| {
            rewrite_parts(
                parse_response(server).unwrap(),
                plan,
                Some(shown),
                &SectionMemo::default(),
            )
        };
        let mut shown = b"Subject: big\r\n\r\n".to_vec();
        shown.extend((0..100_000).map(|i| b'a' + (i % 26) as u8));
        let server = b"* 4 FETCH (UID 7 BODY[] {0}\r\n FLAGS (\\Seen) BODY[HEADER.FIELDS (CONTENT-TYPE X-ENVELOPD)] {2}\r\n\r\n)\r\n";
        let (_, plan) = plan(b"a UID FETCH 1:* (BODY.PEEK[] FLAGS)\r\n").unwrap();
        let parts = answer(server, &plan, &shown);
        let head = format!("* 4 FETCH (UID 7 BODY[] {{{}}}\r\n", shown.len());
        assert_eq!(
            parts,
            vec![
                Part::Bytes(head.clone().into_bytes()),
                Part::Shown(0..shown.len()),
                Part::Bytes(b" FLAGS (\\Seen))\r\n".to_vec()),
            ]
        );
        let mut whole = head.into_bytes();
        whole.extend_from_slice(&shown);
        whole.extend_from_slice(b" FLAGS (\\Seen))\r\n");
        assert_eq!(join(&parts, Some(&shown)), whole);
        assert_eq!(
            rewrite(parse_response(server).unwrap(), &plan, Some(&shown)),
            whole
        );

        // A partial range is a range of the shown message; small answers stay one piece.
        let (_, plan) = super::plan(b"a UID FETCH 1 (BODY.PEEK[]<10.70000>)\r\n").unwrap();
        let server = b"* 4 FETCH (UID 7 BODY[]<10> {0}\r\n)\r\n";
        let parts = answer(server, &plan, &shown);
        assert_eq!(parts[1], Part::Shown(10..70_010));
        assert_eq!(
            join(&parts, Some(&shown))[..],
            {
                let mut w = b"* 4 FETCH (UID 7 BODY[]<10> {70000}\r\n".to_vec();
                w.extend_from_slice(&shown[10..70_010]);
                w.extend_from_slice(b")\r\n");
                w
            }[..]
        );
        let (_, plan) = super::plan(b"a UID FETCH 1 (BODY.PEEK[]<0.100>)\r\n").unwrap();
        let server = b"* 4 FETCH (UID 7 BODY[]<0> {0}\r\n)\r\n";
        let parts = answer(server, &plan, &shown);
        assert!(matches!(parts.as_slice(), [Part::Bytes(_)]));

        // A NUL cannot travel in a literal: such a message is copied with the NUL as a space.
        shown[50_000] = 0;
        let (_, plan) = super::plan(b"a UID FETCH 1 (BODY.PEEK[])\r\n").unwrap();
        let server = b"* 4 FETCH (UID 7 BODY[] {0}\r\n)\r\n";
        let parts = answer(server, &plan, &shown);
        let [Part::Bytes(one)] = parts.as_slice() else {
            panic!("one piece expected: {parts:?}");
        };
        assert!(!one.contains(&0) && one.len() > shown.len());
    }

    #[test]
    fn the_stored_message_is_cut_out_before_parsing() {
        let body = vec![b'x'; 70_000];
        let mut m = b"* 2 FETCH (UID 5 BODY[] {70000}\r\n".to_vec();
        let start = m.len();
        m.extend_from_slice(&body);
        m.extend_from_slice(b" BODY[HEADER.FIELDS (CONTENT-TYPE X-ENVELOPD)] {2}\r\n\r\n)\r\n");
        let (skeleton, range) = hollow_body(&m, 64 * 1024).unwrap();
        assert_eq!(range, start..start + 70_000);
        assert_eq!(
            skeleton,
            b"* 2 FETCH (UID 5 BODY[] {0}\r\n BODY[HEADER.FIELDS (CONTENT-TYPE X-ENVELOPD)] {2}\r\n\r\n)\r\n"
        );
        let r = parse_response(&skeleton).unwrap();
        assert_eq!((r.uid(), r.whole_body()), (Some(5), Some(&b""[..])));
        assert_eq!(r.marker().unwrap(), b"\r\n");

        // The marker first, then the body: literals before it are stepped over.
        let mut m2 =
            b"* 2 FETCH (UID 5 BODY[HEADER.FIELDS (CONTENT-TYPE)] {2}\r\n\r\n BODY[] {70000}\r\n"
                .to_vec();
        let start = m2.len();
        m2.extend_from_slice(&body);
        m2.extend_from_slice(b")\r\n");
        assert_eq!(
            hollow_body(&m2, 64 * 1024).unwrap().1,
            start..start + 70_000
        );
        // Too small, a partial body, a short or cut response: nothing is cut.
        assert!(hollow_body(&m, 100_000).is_none());
        assert!(hollow_body(&m[..start + 10], 64 * 1024).is_none());
        let partial = String::from_utf8(m.clone())
            .unwrap()
            .replacen("BODY[]", "BODY[]<0>", 1);
        assert!(hollow_body(partial.as_bytes(), 64 * 1024).is_none());
        assert!(hollow_body(b"* 2 FETCH (UID 5)\r\n", 1).is_none());
        // Two BODY[] items: left to the full parse.
        let mut two = b"* 2 FETCH (UID 5 BODY[] \"\" BODY[] {70000}\r\n".to_vec();
        two.extend_from_slice(&body);
        two.extend_from_slice(b")\r\n");
        assert!(hollow_body(&two, 64 * 1024).is_none());
        let lower = String::from_utf8_lossy(&two).replacen("BODY[] \"\"", "body[] NIL", 1);
        assert!(hollow_body(lower.as_bytes(), 64 * 1024).is_none());
    }

    #[test]
    fn responses_are_answered_from_the_shown_message_and_extras_removed() {
        let (_, plan) = plan(b"a FETCH 1 (RFC822.SIZE BODY.PEEK[]<2.5> FLAGS)\r\n").unwrap();
        let server = b"* 1 FETCH (RFC822.SIZE 999 BODY[]<2> {5}\r\nxxxxx FLAGS (\\Seen) UID 7 BODY[HEADER.FIELDS (Content-Type X-Envelopd)] {2}\r\n\r\n)\r\n";
        let r = parse_response(server).unwrap();
        assert_eq!(r.uid(), Some(7));
        assert_eq!(r.marker().unwrap(), b"\r\n");
        let shown = b"Subject: hello\r\n\r\nbody\r\n";
        let out = String::from_utf8(rewrite(r, &plan, Some(shown))).unwrap();
        assert_eq!(
            out,
            "* 1 FETCH (RFC822.SIZE 24 BODY[]<2> {5}\r\nbject FLAGS (\\Seen))\r\n"
        );
    }
}
