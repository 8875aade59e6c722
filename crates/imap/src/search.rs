//! SEARCH with `BODY` or `TEXT` keys over a mailbox that holds S/MIME messages: the server can
//! only search the ciphertext, so envelopd answers those messages itself. The same holds for the
//! header keys (`SUBJECT`, `FROM`, `TO`, `CC`, `BCC`, `HEADER`): with header protection (RFC 9788)
//! the server only has `[...]` as Subject. For every S/MIME message these keys are decided
//! locally on the shown (decrypted) message; messages with
//! the same local answers are grouped, and for each group the server evaluates the whole query
//! with those keys replaced by `ALL` or `NOT ALL`, so every other key (dates, flags, OR, NOT …)
//! keeps the server's exact meaning. Pure functions; the session runs the queries.

use imap_codec::decode::Decoder;
use imap_codec::encode::Encoder;
use imap_codec::imap_types::command::{Command, CommandBody};
use imap_codec::imap_types::core::{Charset, Tag, Vec1};
use imap_codec::imap_types::search::SearchKey;
use imap_codec::imap_types::sequence::SequenceSet;
use imap_codec::CommandCodec;
use mail_parser::MessageParser;

/// A client SEARCH that envelopd must complete for encrypted messages.
#[derive(Debug, Clone)]
pub struct SearchPlan {
    /// The client's tag.
    pub tag: String,
    /// `UID SEARCH`.
    pub uid: bool,
    charset: Option<Charset<'static>>,
    criteria: Vec1<SearchKey<'static>>,
    /// The keys decided locally, in tree order.
    pub keys: Vec<LocalKey>,
}

/// A search key envelopd decides itself for S/MIME messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalKey {
    /// `BODY string`.
    Body(String),
    /// `TEXT string` (header and body).
    Text(String),
    /// `HEADER name string` (and SUBJECT, FROM, TO, CC, BCC): the lower-case field name and
    /// the string looked for in its decoded value.
    Header(String, String),
}

fn text(s: &impl AsRef<[u8]>) -> String {
    String::from_utf8_lossy(s.as_ref()).into_owned()
}

fn collect(key: &SearchKey<'_>, out: &mut Vec<LocalKey>) {
    let header = |name: &str, s: &dyn AsRef<[u8]>| LocalKey::Header(name.into(), text(&s.as_ref()));
    match key {
        SearchKey::Body(s) => out.push(LocalKey::Body(text(s))),
        SearchKey::Text(s) => out.push(LocalKey::Text(text(s))),
        SearchKey::Subject(s) => out.push(header("subject", s)),
        SearchKey::From(s) => out.push(header("from", s)),
        SearchKey::To(s) => out.push(header("to", s)),
        SearchKey::Cc(s) => out.push(header("cc", s)),
        SearchKey::Bcc(s) => out.push(header("bcc", s)),
        SearchKey::Header(name, s) => out.push(LocalKey::Header(
            text(name).trim().to_ascii_lowercase(),
            text(s),
        )),
        SearchKey::And(keys) => keys.as_ref().iter().for_each(|k| collect(k, out)),
        SearchKey::Or(a, b) => {
            collect(a, out);
            collect(b, out);
        }
        SearchKey::Not(k) => collect(k, out),
        _ => {}
    }
}

/// If `line` is a SEARCH with keys the server cannot decide for S/MIME messages (body, text or
/// header keys), the plan for answering it.
pub fn plan(line: &[u8]) -> Option<SearchPlan> {
    let (rest, command) = CommandCodec::default().decode(line).ok()?;
    if !rest.is_empty() {
        return None;
    }
    let CommandBody::Search {
        charset,
        criteria,
        uid,
    } = command.body
    else {
        return None;
    };
    let mut keys = Vec::new();
    criteria.as_ref().iter().for_each(|k| collect(k, &mut keys));
    if keys.is_empty() {
        return None;
    }
    Some(SearchPlan {
        tag: command.tag.inner().to_string(),
        uid,
        charset: charset.map(bounded_static::IntoBoundedStatic::into_static),
        criteria: bounded_static::IntoBoundedStatic::into_static(criteria),
        keys,
    })
}

fn not_all() -> SearchKey<'static> {
    SearchKey::Not(Box::new(SearchKey::All))
}

fn substitute(
    key: &SearchKey<'static>,
    answers: &mut std::slice::Iter<'_, bool>,
) -> SearchKey<'static> {
    match key {
        SearchKey::Body(_)
        | SearchKey::Text(_)
        | SearchKey::Subject(_)
        | SearchKey::From(_)
        | SearchKey::To(_)
        | SearchKey::Cc(_)
        | SearchKey::Bcc(_)
        | SearchKey::Header(..) => {
            if *answers.next().unwrap_or(&false) {
                SearchKey::All
            } else {
                not_all()
            }
        }
        SearchKey::And(keys) => SearchKey::And(
            Vec1::try_from(
                keys.as_ref()
                    .iter()
                    .map(|k| substitute(k, answers))
                    .collect::<Vec<_>>(),
            )
            .expect("as many keys as before"),
        ),
        SearchKey::Or(a, b) => {
            let a = substitute(a, answers);
            let b = substitute(b, answers);
            SearchKey::Or(Box::new(a), Box::new(b))
        }
        SearchKey::Not(k) => SearchKey::Not(Box::new(substitute(k, answers))),
        other => other.clone(),
    }
}

fn uid_set(uids: &[u32]) -> SequenceSet {
    let text: Vec<String> = uids.iter().map(u32::to_string).collect();
    SequenceSet::try_from(text.join(",").as_str()).expect("UIDs make a sequence set")
}

/// The command with `tag`, or without any tag (and its space) when `tag` is empty.
fn encode(
    tag: &str,
    charset: Option<Charset<'static>>,
    criteria: Vec1<SearchKey<'static>>,
) -> Vec<u8> {
    let placeholder = if tag.is_empty() { "X" } else { tag };
    let command = Command {
        tag: Tag::try_from(placeholder.to_string()).expect("envelopd's tags are atoms"),
        body: CommandBody::Search {
            charset,
            criteria,
            uid: true,
        },
    };
    let bytes = CommandCodec::default().encode(&command).dump();
    if tag.is_empty() {
        bytes[2..].to_vec()
    } else {
        bytes
    }
}

impl SearchPlan {
    /// The client's query as a UID SEARCH under envelopd's tag.
    pub fn original(&self, tag: &str) -> Vec<u8> {
        encode(tag, self.charset.clone(), self.criteria.clone())
    }

    /// The query for the messages `uids`, whose body/text keys have the local `answers`.
    pub fn for_group(&self, tag: &str, uids: &[u32], answers: &[bool]) -> Vec<u8> {
        let mut it = answers.iter();
        let mut keys = vec![SearchKey::Uid(uid_set(uids))];
        keys.extend(
            self.criteria
                .as_ref()
                .iter()
                .map(|k| substitute(k, &mut it)),
        );
        encode(
            tag,
            self.charset.clone(),
            Vec1::try_from(keys).expect("non-empty"),
        )
    }

    /// The local answer of every key for one shown message.
    pub fn answers(&self, shown: &[u8]) -> Vec<bool> {
        let body = searchable_text(shown, false);
        let all = searchable_text(shown, true);
        let header = smime::mime::split(shown).header;
        self.keys
            .iter()
            .map(|key| match key {
                LocalKey::Body(needle) => body.contains(&needle.to_lowercase()),
                LocalKey::Text(needle) => all.contains(&needle.to_lowercase()),
                LocalKey::Header(name, needle) => header_contains(header, name, needle),
            })
            .collect()
    }
}

/// RFC 3501 `HEADER`: a field of that name whose decoded value contains the string (any such
/// field when the string is empty), case-insensitively.
fn header_contains(header: &[u8], name: &str, needle: &str) -> bool {
    let needle = needle.to_lowercase();
    smime::mime::fields(header)
        .into_iter()
        .filter(|f| f.name == name)
        .any(|f| {
            let colon = f.raw.iter().position(|&b| b == b':').unwrap_or(0);
            let mut value = f.raw[colon + 1..].to_vec();
            if !value.ends_with(b"\n") {
                value.extend_from_slice(b"\r\n");
            }
            let decoded =
                match mail_parser::parsers::MessageStream::new(&value).parse_unstructured() {
                    mail_parser::HeaderValue::Text(t) => t.into_owned(),
                    mail_parser::HeaderValue::TextList(l) => l.join(" "),
                    _ => String::from_utf8_lossy(&value).into_owned(),
                };
            // The raw value too: an address may be searched for in its encoded form.
            decoded.to_lowercase().contains(&needle)
                || String::from_utf8_lossy(&value)
                    .to_lowercase()
                    .contains(&needle)
        })
}

/// The message's text as a search sees it, lower-cased: the decoded text of every part
/// (quoted-printable and base64 undone, charsets converted), with the header for TEXT.
fn searchable_text(message: &[u8], with_header: bool) -> String {
    let mut out = String::new();
    if with_header {
        let e = smime::mime::split(message);
        out.push_str(&String::from_utf8_lossy(e.header).to_lowercase());
        out.push('\n');
    }
    if let Some(m) = MessageParser::default().parse(message) {
        for i in 0..m.text_body_count().max(m.parts.len()) {
            if let Some(t) = m.body_text(i) {
                out.push_str(&t.to_lowercase());
                out.push('\n');
            }
        }
        for part in m.parts.iter() {
            if let mail_parser::PartType::Text(t) | mail_parser::PartType::Html(t) = &part.body {
                out.push_str(&t.to_lowercase());
                out.push('\n');
            }
        }
    }
    out
}

/// The numbers of a `* SEARCH` response.
pub fn parse_search_response(message: &[u8]) -> Option<Vec<u32>> {
    let text = String::from_utf8_lossy(message);
    let rest = text.strip_prefix("* SEARCH")?;
    Some(
        rest.split_ascii_whitespace()
            .filter_map(|n| n.parse().ok())
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_searches_with_content_keys_are_planned() {
        assert!(plan(b"a SEARCH SEEN SINCE 1-Jan-2026\r\n").is_none());
        let p = plan(b"a UID SEARCH OR BODY foo NOT TEXT bar SINCE 1-Jan-2026\r\n").unwrap();
        assert!(p.uid);
        assert_eq!(
            p.keys,
            vec![LocalKey::Body("foo".into()), LocalKey::Text("bar".into())]
        );
        let q = String::from_utf8(p.for_group("e1", &[3, 5], &[true, false])).unwrap();
        assert_eq!(
            q,
            "e1 UID SEARCH UID 3,5 OR ALL NOT NOT ALL SINCE \"01-Jan-2026\"\r\n"
        );
        assert_eq!(
            String::from_utf8(p.original("e2")).unwrap(),
            "e2 UID SEARCH OR BODY foo NOT TEXT bar SINCE \"01-Jan-2026\"\r\n"
        );
    }

    #[test]
    fn local_answers_look_into_decoded_text() {
        let p = plan(b"a SEARCH BODY UNAUFFAELLIG TEXT befund BODY befund\r\n").unwrap();
        // "Der Wert ist unauffaellig." in base64: only the decoded text matches.
        let msg = b"Subject: Befund\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\nRGVyIFdlcnQgaXN0IHVuYXVmZmFlbGxpZy4=\r\n";
        assert_eq!(p.answers(msg), vec![true, true, false]);
        assert_eq!(
            parse_search_response(b"* SEARCH 2 4 9\r\n"),
            Some(vec![2, 4, 9])
        );
        assert_eq!(parse_search_response(b"* SEARCH\r\n"), Some(vec![]));
    }

    #[test]
    fn header_keys_are_decided_on_decoded_values() {
        let p =
            plan(b"a SEARCH SUBJECT \"ntgen THORAX\" FROM alice HEADER X-Prio \"\" CC nobody\r\n");
        let p = p.unwrap();
        assert_eq!(p.keys.len(), 4);
        let msg = b"From: Alice <alice@example.org>\r\nSubject: Befund =?utf-8?q?R=C3=B6ntgen?=\r\n Thorax\r\nX-Prio: 1\r\n\r\nbody\r\n";
        assert_eq!(p.answers(msg), vec![true, true, true, false]);
        let q = String::from_utf8(p.for_group("e", &[7], &[true, true, true, false])).unwrap();
        assert_eq!(q, "e UID SEARCH UID 7 ALL ALL ALL NOT ALL\r\n");
    }
}
