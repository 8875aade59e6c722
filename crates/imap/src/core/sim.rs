//! A small IMAP server in memory, for the core's unit tests and its fuzz target: one mailbox,
//! commands read with imap-codec (literals acknowledged), FETCH items answered from the stored
//! bytes, SEARCH evaluated on them, AUTHENTICATE PLAIN, IDLE, APPEND. It is no Dovecot (the
//! system tests run the real one); it lets the session's logic run thousands of times a second
//! without sockets.

use std::num::NonZeroU32;

use imap_codec::decode::{CommandDecodeError, Decoder};
use imap_codec::encode::Encoder;
use imap_codec::imap_types::body::BodyStructure;
use imap_codec::imap_types::command::CommandBody;
use imap_codec::imap_types::core::{Literal, NString, Vec1};
use imap_codec::imap_types::fetch::{
    MacroOrMessageDataItemNames, MessageDataItem, MessageDataItemName, Section,
};
use imap_codec::imap_types::response::{Data, Response};
use imap_codec::imap_types::search::SearchKey;
use imap_codec::imap_types::sequence::SequenceSet;
use imap_codec::{CommandCodec, ResponseCodec};

use crate::structure;

/// The in-memory server.
pub struct Server {
    /// The mailbox's UIDVALIDITY.
    pub uidvalidity: u32,
    /// The messages: UID and stored bytes, in sequence order.
    pub messages: Vec<(u32, Vec<u8>)>,
    /// The password every login needs.
    pub password: String,
    /// Commands (first lines) the server received, for tests to inspect.
    pub received: Vec<String>,
    inbuf: Vec<u8>,
    acked: usize,
    /// AUTHENTICATE waiting for its response line: the tag.
    authenticating: Option<String>,
    /// IDLE running: the tag.
    idling: Option<String>,
}

/// The greeting the server sends.
pub const GREETING: &[u8] =
    b"* OK [CAPABILITY IMAP4rev1 LITERAL+ SASL-IR AUTH=PLAIN IDLE COMPRESS=DEFLATE ESEARCH MULTIAPPEND] sim ready\r\n";

impl Server {
    /// A server holding `messages` (UIDs 1, 2, …).
    pub fn new(messages: Vec<Vec<u8>>) -> Self {
        Server {
            uidvalidity: 42,
            messages: messages
                .into_iter()
                .enumerate()
                .map(|(i, m)| (i as u32 + 1, m))
                .collect(),
            password: "pw".into(),
            received: Vec::new(),
            inbuf: Vec::new(),
            acked: 0,
            authenticating: None,
            idling: None,
        }
    }

    /// Bytes from the client (the proxy); returns the server's responses.
    pub fn receive(&mut self, bytes: &[u8]) -> Vec<u8> {
        self.inbuf.extend_from_slice(bytes);
        let mut out = Vec::new();
        loop {
            if self.authenticating.is_some() || self.idling.is_some() {
                let Some(end) = memchr::memchr(b'\n', &self.inbuf) else {
                    break;
                };
                let line: Vec<u8> = self.inbuf.drain(..=end).collect();
                let text = String::from_utf8_lossy(&line).trim().to_string();
                if let Some(tag) = self.idling.take() {
                    if text.eq_ignore_ascii_case("DONE") {
                        out.extend_from_slice(format!("{tag} OK IDLE done\r\n").as_bytes());
                    } else {
                        out.extend_from_slice(format!("{tag} BAD expected DONE\r\n").as_bytes());
                    }
                } else if let Some(tag) = self.authenticating.take() {
                    out.extend_from_slice(&self.sasl(&tag, text.as_bytes()));
                }
                continue;
            }
            let buf = std::mem::take(&mut self.inbuf);
            let decoded = CommandCodec::default().decode(&buf);
            match decoded {
                Ok((rest, cmd)) => {
                    let used = buf.len() - rest.len();
                    let first = buf[..used]
                        .split(|b| *b == b'\n')
                        .next()
                        .map(|l| String::from_utf8_lossy(l).trim().to_string())
                        .unwrap_or_default();
                    self.received.push(first);
                    let tag = cmd.tag.inner().to_string();
                    let reply = self.command(&tag, cmd.body);
                    self.inbuf = buf[used..].to_vec();
                    self.acked = 0;
                    out.extend_from_slice(&reply);
                }
                Err(CommandDecodeError::Incomplete) => {
                    self.inbuf = buf;
                    break;
                }
                Err(CommandDecodeError::LiteralFound { mode, .. }) => {
                    self.inbuf = buf;
                    let found = self.inbuf.windows(3).filter(|w| w == b"}\r\n").count();
                    if matches!(mode, imap_codec::imap_types::core::LiteralMode::Sync)
                        && self.acked < found
                    {
                        out.extend_from_slice(b"+ go on\r\n");
                    }
                    self.acked = found;
                    break;
                }
                Err(CommandDecodeError::Failed) => {
                    self.inbuf = buf;
                    let Some(end) = memchr::memchr(b'\n', &self.inbuf) else {
                        break;
                    };
                    let line: Vec<u8> = self.inbuf.drain(..=end).collect();
                    let tag = line
                        .split(|b| *b == b' ')
                        .next()
                        .map(|t| String::from_utf8_lossy(t).trim().to_string())
                        .unwrap_or_default();
                    self.received
                        .push(String::from_utf8_lossy(&line).trim().to_string());
                    self.acked = 0;
                    out.extend_from_slice(format!("{tag} BAD syntax\r\n").as_bytes());
                }
            }
        }
        out
    }

    fn sasl(&self, tag: &str, response: &[u8]) -> Vec<u8> {
        let raw = smime::mime::base64_decode(response).unwrap_or_default();
        self.sasl_raw(tag, &raw)
    }

    fn sasl_raw(&self, tag: &str, raw: &[u8]) -> Vec<u8> {
        let ok =
            raw.contains(&0) && raw.rsplit(|b| *b == 0).next() == Some(self.password.as_bytes());
        if ok {
            format!("{tag} OK logged in\r\n").into_bytes()
        } else {
            format!("{tag} NO [AUTHENTICATIONFAILED] wrong\r\n").into_bytes()
        }
    }

    fn command(&mut self, tag: &str, body: CommandBody<'_>) -> Vec<u8> {
        match body {
            CommandBody::Capability => {
                format!("* CAPABILITY IMAP4rev1 LITERAL+ IDLE SORT ESEARCH\r\n{tag} OK done\r\n")
                    .into_bytes()
            }
            CommandBody::Login { password, .. } => {
                if password.declassify().as_ref() == self.password.as_bytes() {
                    format!("{tag} OK [CAPABILITY IMAP4rev1 IDLE] logged in\r\n").into_bytes()
                } else {
                    format!("{tag} NO [AUTHENTICATIONFAILED] wrong\r\n").into_bytes()
                }
            }
            CommandBody::Authenticate {
                initial_response, ..
            } => match initial_response {
                Some(ir) => self.sasl_raw(tag, ir.declassify()),
                None => {
                    self.authenticating = Some(tag.to_string());
                    b"+ \r\n".to_vec()
                }
            },
            CommandBody::Select { .. } | CommandBody::Examine { .. } => format!(
                "* {} EXISTS\r\n* OK [UIDVALIDITY {}] ok\r\n{tag} OK [READ-WRITE] selected\r\n",
                self.messages.len(),
                self.uidvalidity
            )
            .into_bytes(),
            CommandBody::Idle => {
                self.idling = Some(tag.to_string());
                b"+ idling\r\n".to_vec()
            }
            CommandBody::Append { message, .. } => {
                let uid = self.messages.last().map_or(1, |m| m.0 + 1);
                let bytes = match message {
                    imap_codec::imap_types::extensions::binary::LiteralOrLiteral8::Literal(l) => {
                        l.data().to_vec()
                    }
                    imap_codec::imap_types::extensions::binary::LiteralOrLiteral8::Literal8(l) => {
                        l.data.to_vec()
                    }
                };
                self.messages.push((uid, bytes));
                format!(
                    "{tag} OK [APPENDUID {} {uid}] appended\r\n",
                    self.uidvalidity
                )
                .into_bytes()
            }
            CommandBody::Fetch {
                sequence_set,
                macro_or_item_names,
                uid,
                ..
            } => {
                let names: Vec<MessageDataItemName<'static>> = match macro_or_item_names {
                    MacroOrMessageDataItemNames::Macro(m) => m
                        .expand()
                        .into_iter()
                        .map(bounded_static::IntoBoundedStatic::into_static)
                        .collect(),
                    MacroOrMessageDataItemNames::MessageDataItemNames(n) => n
                        .into_iter()
                        .map(bounded_static::IntoBoundedStatic::into_static)
                        .collect(),
                };
                let mut out = Vec::new();
                for seq in self.matching(&sequence_set, uid) {
                    let (u, stored) = &self.messages[seq - 1];
                    // The UID first, as Dovecot puts it.
                    let mut items: Vec<MessageDataItem<'static>> = Vec::new();
                    if uid || names.contains(&MessageDataItemName::Uid) {
                        items.push(MessageDataItem::Uid(NonZeroU32::new(*u).expect("UIDs > 0")));
                    }
                    for n in names.iter().filter(|n| **n != MessageDataItemName::Uid) {
                        if let Some(item) = fetch_item(n, *u, stored) {
                            items.push(item);
                        }
                    }
                    let Ok(items) = Vec1::try_from(items) else {
                        continue;
                    };
                    let data = Data::Fetch {
                        seq: NonZeroU32::new(seq as u32).expect("sequence numbers > 0"),
                        items,
                    };
                    out.extend_from_slice(
                        &ResponseCodec::default()
                            .encode(&Response::Data(data))
                            .dump(),
                    );
                }
                out.extend_from_slice(format!("{tag} OK fetched\r\n").as_bytes());
                out
            }
            CommandBody::Search { criteria, uid, .. } => {
                let mut found = Vec::new();
                for (i, (u, stored)) in self.messages.iter().enumerate() {
                    let hit = criteria
                        .as_ref()
                        .iter()
                        .all(|k| self.eval(k, i + 1, *u, stored));
                    if hit {
                        found.push(if uid { *u } else { i as u32 + 1 }.to_string());
                    }
                }
                let sep = if found.is_empty() { "" } else { " " };
                format!("* SEARCH{sep}{}\r\n{tag} OK searched\r\n", found.join(" ")).into_bytes()
            }
            CommandBody::Logout => format!("* BYE bye\r\n{tag} OK bye\r\n").into_bytes(),
            _ => format!("{tag} OK done\r\n").into_bytes(),
        }
    }

    /// Sequence numbers (1-based) of the messages a set names.
    fn matching(&self, set: &SequenceSet, uid: bool) -> Vec<usize> {
        let Some(largest) = NonZeroU32::new(if uid {
            self.messages.last().map_or(0, |m| m.0)
        } else {
            self.messages.len() as u32
        }) else {
            return Vec::new();
        };
        let wanted: Vec<u32> = set
            .iter(largest)
            .map(NonZeroU32::get)
            .take(10_000)
            .collect();
        self.messages
            .iter()
            .enumerate()
            .filter(|(i, (u, _))| wanted.contains(&if uid { *u } else { *i as u32 + 1 }))
            .map(|(i, _)| i + 1)
            .collect()
    }

    fn eval(&self, key: &SearchKey<'_>, seq: usize, uid: u32, stored: &[u8]) -> bool {
        let contains = |hay: &[u8], needle: &[u8]| {
            let hay = hay.to_ascii_lowercase();
            let needle = needle.to_ascii_lowercase();
            needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle.as_slice())
        };
        let in_set = |set: &SequenceSet, n: u32| {
            NonZeroU32::new(n.max(1)).is_some_and(|largest| {
                let top = NonZeroU32::new(uid.max(seq as u32).max(1)).unwrap_or(largest);
                set.iter(top).any(|x| x.get() == n)
            })
        };
        let header = smime::mime::split(stored).header;
        match key {
            SearchKey::All => true,
            SearchKey::Not(k) => !self.eval(k, seq, uid, stored),
            SearchKey::And(keys) => keys.as_ref().iter().all(|k| self.eval(k, seq, uid, stored)),
            SearchKey::Or(a, b) => self.eval(a, seq, uid, stored) || self.eval(b, seq, uid, stored),
            SearchKey::Uid(set) => in_set(set, uid),
            SearchKey::SequenceSet(set) => in_set(set, seq as u32),
            SearchKey::Header(field, value) => {
                let field = field.as_ref().to_ascii_lowercase();
                header.split(|b| *b == b'\n').any(|l| {
                    l.to_ascii_lowercase().starts_with(&field) && contains(l, value.as_ref())
                })
            }
            SearchKey::Body(s) | SearchKey::Text(s) => contains(stored, s.as_ref()),
            SearchKey::Subject(s) | SearchKey::From(s) | SearchKey::To(s) => {
                contains(header, s.as_ref())
            }
            _ => true,
        }
    }
}

/// One FETCH item for the stored message, as a server would give it.
fn fetch_item(
    name: &MessageDataItemName<'_>,
    uid: u32,
    stored: &[u8],
) -> Option<MessageDataItem<'static>> {
    // Sections as literals, as Dovecot sends them.
    let nstring = |b: Vec<u8>| match Literal::try_from(b.clone()) {
        Ok(l) => NString(Some(l.into())),
        Err(_) => NString::try_from(b).unwrap_or(NString(None)),
    };
    Some(match name {
        MessageDataItemName::Uid => MessageDataItem::Uid(NonZeroU32::new(uid)?),
        MessageDataItemName::Flags => MessageDataItem::Flags(Vec::new()),
        MessageDataItemName::Rfc822Size => MessageDataItem::Rfc822Size(stored.len() as u32),
        MessageDataItemName::Rfc822 => MessageDataItem::Rfc822(nstring(stored.to_vec())),
        MessageDataItemName::Rfc822Header => MessageDataItem::Rfc822Header(nstring(
            structure::section(stored, Some(&Section::Header(None))),
        )),
        MessageDataItemName::Rfc822Text => MessageDataItem::Rfc822Text(nstring(
            structure::section(stored, Some(&Section::Text(None))),
        )),
        MessageDataItemName::BodyExt {
            section, partial, ..
        } => {
            let whole = structure::section(stored, section.as_ref());
            let (origin, bytes) = match partial {
                Some((start, len)) => {
                    let s = (*start as usize).min(whole.len());
                    let e = s.saturating_add(len.get() as usize).min(whole.len());
                    (Some(*start), whole[s..e].to_vec())
                }
                None => (None, whole),
            };
            MessageDataItem::BodyExt {
                section: section
                    .clone()
                    .map(bounded_static::IntoBoundedStatic::into_static),
                origin,
                data: nstring(bytes),
            }
        }
        MessageDataItemName::Body => MessageDataItem::Body(body(stored, false)),
        MessageDataItemName::BodyStructure => MessageDataItem::BodyStructure(body(stored, true)),
        MessageDataItemName::Envelope => {
            MessageDataItem::Envelope(structure::envelope(smime::mime::split(stored).header))
        }
        _ => return None,
    })
}

fn body(stored: &[u8], ext: bool) -> BodyStructure<'static> {
    structure::body_structure(stored, ext)
}
