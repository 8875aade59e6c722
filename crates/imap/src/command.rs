//! What a client command means for the session (login name, mailbox), read with imap-codec from
//! the whole command, literals included. Names taken by splitting a line on spaces collapsed
//! `SELECT "Sent Items"` and `SELECT "Sent Mail"` into one cache key, and a quoted login with a
//! space into another user's: the cache key and the keys a session may decrypt with come from
//! here only.

use imap_codec::decode::Decoder;
use imap_codec::imap_types::command::CommandBody;
use imap_codec::imap_types::mailbox::Mailbox;
use imap_codec::CommandCodec;

/// The longest command envelopd assembles to read a name from (LOGIN/SELECT/EXAMINE with
/// literals); a longer one is passed on and treated as naming nobody.
pub const MAX_NOTED: usize = 16 * 1024;

/// The part of a command the session follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Meaning {
    /// LOGIN with this user name (lower-cased).
    Login(String),
    /// AUTHENTICATE with this mechanism (upper-cased) and its initial response (decoded), if
    /// any.
    Authenticate {
        /// The SASL mechanism.
        mechanism: String,
        /// The initial response (SASL-IR), raw bytes.
        initial: Option<Vec<u8>>,
    },
    /// SELECT or EXAMINE of this mailbox (`INBOX` in any case is `INBOX`).
    Select(String),
    /// LOGOUT.
    Logout,
    /// IDLE.
    Idle,
    /// Anything else.
    Other,
}

/// A parsed command's tag and meaning; None when imap-codec cannot parse it (the server will
/// answer it with BAD, and the session learns nothing from it).
pub fn parse(command: &[u8]) -> Option<(String, Meaning)> {
    let (_, cmd) = CommandCodec::default().decode(command).ok()?;
    let tag = cmd.tag.inner().to_string();
    let meaning = match cmd.body {
        CommandBody::Login { username, .. } => {
            Meaning::Login(String::from_utf8_lossy(username.as_ref()).to_ascii_lowercase())
        }
        CommandBody::Authenticate {
            mechanism,
            initial_response,
        } => Meaning::Authenticate {
            mechanism: mechanism.to_string().to_ascii_uppercase(),
            initial: initial_response.map(|r| r.declassify().to_vec()),
        },
        CommandBody::Select { mailbox, .. } | CommandBody::Examine { mailbox, .. } => {
            Meaning::Select(mailbox_name(&mailbox))
        }
        CommandBody::Logout => Meaning::Logout,
        CommandBody::Idle => Meaning::Idle,
        _ => Meaning::Other,
    };
    Some((tag, meaning))
}

/// A command's tag and name (upper-cased, `UID` joined to what follows: `UID FETCH`), for
/// dispatch. From imap-codec when it parses the command; otherwise the first two atoms (RFC 9051
/// §9: a tag and a command name are atoms, so they end at the first character an atom cannot
/// hold). A command imap-codec does not know must still reach the server, and a LOGIN it cannot
/// parse must still meet the cleartext rule and the failed-login lock. Names and mailboxes are
/// never read this way: only by [`parse`].
pub fn verb(line: &[u8]) -> (String, String) {
    if let Ok((_, cmd)) = CommandCodec::default().decode(line) {
        let uid = matches!(
            cmd.body,
            CommandBody::Fetch { uid: true, .. }
                | CommandBody::Search { uid: true, .. }
                | CommandBody::Store { uid: true, .. }
                | CommandBody::Copy { uid: true, .. }
                | CommandBody::Move { uid: true, .. }
        );
        let name = cmd.body.name();
        let name = if uid {
            format!("UID {name}")
        } else {
            name.to_string()
        };
        return (cmd.tag.inner().to_string(), name);
    }
    let mut rest = line;
    let mut atom = || {
        let end = rest
            .iter()
            .position(|&b| !is_atom_char(b))
            .unwrap_or(rest.len());
        let word = String::from_utf8_lossy(&rest[..end]).into_owned();
        rest = rest.get(end + 1..).unwrap_or_default();
        word
    };
    // The tag keeps its case: the answer must carry it exactly.
    let tag = atom();
    let mut name = atom().to_ascii_uppercase();
    if name == "UID" {
        name = format!("UID {}", atom().to_ascii_uppercase());
    }
    (tag, name)
}

/// RFC 9051's ATOM-CHAR (with `]` and `+`, which tags may hold): any CHAR except
/// atom-specials.
fn is_atom_char(b: u8) -> bool {
    b > 0x20 && b < 0x7f && !matches!(b, b'(' | b')' | b'{' | b'%' | b'*' | b'"' | b'\\')
}

/// A mailbox name as the cache keys it: the exact name (modified UTF-7 as sent), `INBOX` for
/// the inbox in any case (RFC 9051 §5.1).
pub fn mailbox_name(mailbox: &Mailbox<'_>) -> String {
    match mailbox {
        Mailbox::Inbox => "INBOX".into(),
        Mailbox::Other(o) => String::from_utf8_lossy(o.as_ref()).into_owned(),
    }
}

/// The mailbox of an APPEND whose line ends in the message literal (`a APPEND "Sent Items"
/// (\Seen) {310}`), read by imap-codec before the message arrives; None when the line is not
/// such an APPEND (e.g. the mailbox name itself is the literal).
pub fn append_mailbox(line: &[u8]) -> Option<String> {
    let line = line
        .strip_suffix(b"\r\n")
        .or_else(|| line.strip_suffix(b"\n"))?;
    let open = memchr::memrchr(b'{', line)?;
    // The same command with an empty message in place of the literal parses completely.
    let mut probe = line[..open].to_vec();
    probe.extend_from_slice(b"{0}\r\n\r\n");
    let (_, cmd) = CommandCodec::default().decode(&probe).ok()?;
    match cmd.body {
        CommandBody::Append { mailbox, .. } => Some(mailbox_name(&mailbox)),
        _ => None,
    }
}

/// True when `line` is an APPEND whose mailbox name is the literal it ends in (`a APPEND {4}`):
/// the same line with a quoted name in place of the literal and an empty message parses.
pub fn append_name_is_literal(line: &[u8]) -> bool {
    let Some(line) = line
        .strip_suffix(b"\r\n")
        .or_else(|| line.strip_suffix(b"\n"))
    else {
        return false;
    };
    let Some(open) = memchr::memrchr(b'{', line) else {
        return false;
    };
    let mut probe = line[..open].to_vec();
    probe.extend_from_slice(b"\"x\" {0}\r\n\r\n");
    matches!(
        CommandCodec::default().decode(&probe),
        Ok((_, cmd)) if matches!(cmd.body, CommandBody::Append { .. })
    )
}

/// `name` as an IMAP quoted string, or None when it cannot be one (8-bit, CR, LF or NUL).
pub fn quoted(name: &[u8]) -> Option<String> {
    if !name
        .iter()
        .all(|&b| (1..0x80).contains(&b) && b != b'\r' && b != b'\n')
    {
        return None;
    }
    let mut out = String::with_capacity(name.len() + 2);
    out.push('"');
    for &b in name {
        if b == b'"' || b == b'\\' {
            out.push('\\');
        }
        out.push(b as char);
    }
    out.push('"');
    Some(out)
}

/// The user name of a LOGIN whose first line ends in a literal (`a LOGIN "j doe" {6}`), read
/// before the literal arrives, for the failed-login lock; None when the name itself is the
/// literal.
pub fn login_before_literal(line: &[u8]) -> Option<String> {
    let line = line
        .strip_suffix(b"\r\n")
        .or_else(|| line.strip_suffix(b"\n"))?;
    let open = memchr::memrchr(b'{', line)?;
    // The same command with an empty password in place of the literal parses completely.
    let mut probe = line[..open].to_vec();
    probe.extend_from_slice(b"\"\"\r\n");
    match parse(&probe)? {
        (_, Meaning::Login(name)) => Some(name),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbs_come_from_imap_codec_or_the_first_atoms() {
        assert_eq!(
            verb(b"a1 uid fetch 1:* (FLAGS)\r\n"),
            ("a1".into(), "UID FETCH".into())
        );
        assert_eq!(
            verb(b"a2 FETCH 1 BODY[]\r\n"),
            ("a2".into(), "FETCH".into())
        );
        assert_eq!(
            verb(b"Ab3 login \"j doe\" x\r\n"),
            ("Ab3".into(), "LOGIN".into())
        );
        // Not a command imap-codec parses: still dispatched by its name.
        assert_eq!(verb(b"t STARTTLS\r\n"), ("t".into(), "STARTTLS".into()));
        assert_eq!(verb(b"t login\r\n"), ("t".into(), "LOGIN".into()));
        assert_eq!(
            verb(b"t x-unknown(1)\r\n"),
            ("t".into(), "X-UNKNOWN".into())
        );
        assert_eq!(verb(b"t UID\r\n"), ("t".into(), "UID ".into()));
        assert_eq!(verb(b""), ("".into(), "".into()));
    }

    #[test]
    fn mailbox_names_keep_everything_after_a_space() {
        let a = parse(b"a1 SELECT \"Sent Items\"\r\n").unwrap();
        let b = parse(b"a2 SELECT \"Sent Mail\"\r\n").unwrap();
        assert_eq!(a, ("a1".into(), Meaning::Select("Sent Items".into())));
        assert_eq!(b.1, Meaning::Select("Sent Mail".into()));
        assert_eq!(
            parse(b"a3 EXAMINE {10}\r\nSent Items\r\n").unwrap().1,
            Meaning::Select("Sent Items".into())
        );
        assert_eq!(
            parse(b"a4 SELECT inbox\r\n").unwrap().1,
            Meaning::Select("INBOX".into())
        );
        assert_eq!(
            parse(b"a5 SELECT \"a \\\"quoted\\\" name\"\r\n").unwrap().1,
            Meaning::Select("a \"quoted\" name".into())
        );
        assert_eq!(
            parse(b"a6 SELECT (CONDSTORE)\r\n"),
            None,
            "not a SELECT imap-codec accepts"
        );
    }

    #[test]
    fn login_names_are_whole_whatever_their_form() {
        for (cmd, name) in [
            (&b"t LOGIN alice secret\r\n"[..], "alice"),
            (b"t LOGIN \"John Doe\" secret\r\n", "john doe"),
            (b"t LOGIN \"John Dough\" secret\r\n", "john dough"),
            (b"t LOGIN {8}\r\nJohn Doe {6}\r\nsecret\r\n", "john doe"),
            (
                b"t LOGIN Alice@Praxis.example \"pw with space\"\r\n",
                "alice@praxis.example",
            ),
        ] {
            assert_eq!(
                parse(cmd).unwrap().1,
                Meaning::Login(name.into()),
                "{}",
                String::from_utf8_lossy(cmd)
            );
        }
        assert_eq!(
            login_before_literal(b"t LOGIN \"John Doe\" {6}\r\n").as_deref(),
            Some("john doe")
        );
        assert_eq!(login_before_literal(b"t LOGIN {8}\r\n"), None);
    }

    #[test]
    fn append_mailboxes_are_read_whole() {
        for (line, name) in [
            (&b"a APPEND Sent {310}\r\n"[..], "Sent"),
            (b"a APPEND \"Sent Items\" (\\Seen) {310}\r\n", "Sent Items"),
            (b"a APPEND \"Gesendete Elemente\" (\\Seen \\Draft) \"04-Dec-2026 10:00:00 +0100\" {9}\r\n", "Gesendete Elemente"),
            (b"a APPEND Entw&APw-rfe {12+}\r\n", "Entw&APw-rfe"),
            (b"a APPEND \"a \\\"b\\\" c\" {1}\r\n", "a \"b\" c"),
        ] {
            assert_eq!(
                append_mailbox(line).as_deref(),
                Some(name),
                "{}",
                String::from_utf8_lossy(line)
            );
        }
        assert_eq!(
            append_mailbox(b"a APPEND {10}\r\n"),
            None,
            "the name is the literal"
        );
        assert_eq!(append_mailbox(b"a SELECT {4}\r\n"), None);
    }

    #[test]
    fn authenticate_with_and_without_initial_response() {
        assert_eq!(
            parse(b"t AUTHENTICATE PLAIN AGFsaWNlAHNlY3JldA==\r\n")
                .unwrap()
                .1,
            Meaning::Authenticate {
                mechanism: "PLAIN".into(),
                initial: Some(b"\0alice\0secret".to_vec()),
            }
        );
        assert_eq!(
            parse(b"t authenticate login\r\n").unwrap().1,
            Meaning::Authenticate {
                mechanism: "LOGIN".into(),
                initial: None,
            }
        );
    }
}
