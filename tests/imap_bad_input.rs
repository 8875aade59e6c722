//! Bad input from either side of the IMAP proxy: a server that announces a 2 GiB literal, sends
//! an unparsable FETCH, hangs up inside a literal, claims S/MIME for garbage, or nests MIME 200
//! deep; a client with an overlong line or an unterminated literal. Each gives a clear IMAP
//! answer (BYE, NO, BAD, or the message with a status saying why), never a hang or a crash, and
//! the proxy keeps serving new connections. Also, with a scripted server that records what it is
//! asked: what envelopd asks the server when a mailbox is opened again.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use testkit::procs::{free_port, wait_for, Proc};

fn fake_server(mode: &str) -> (Proc, u16) {
    fake_server_with(mode, &[])
}

fn fake_server_with(mode: &str, more: &[&str]) -> (Proc, u16) {
    use std::io::BufRead;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/clients/fake_imap.py");
    // The server prints "ready" once it listens; a port another process took meanwhile makes
    // it exit instead, and the next port is tried.
    for _ in 0..5 {
        let port = free_port();
        let mut child = Command::new("python3")
            .arg(&script)
            .args([&port.to_string(), mode])
            .args(more)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        let stdout = child.stdout.take().unwrap();
        let _ = std::io::BufReader::new(stdout).read_line(&mut line);
        let p = Proc(child);
        if line.trim() == "ready" {
            return (p, port);
        }
    }
    panic!("fake_imap.py could not listen on any of five free ports");
}

/// The scripted mailbox server ("known" mode of fake_imap.py) with envelopd in front of it, and
/// the file in which the server records every command line it receives.
struct Scripted {
    imap: u16,
    log: std::path::PathBuf,
    _running: (Proc, Proc),
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

impl Scripted {
    fn start() -> Scripted {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("commands.log");
        let (server, port) = fake_server_with("known", &[log.to_str().unwrap()]);
        let (config, imap, proxy) = envelopd(port);
        Scripted {
            imap,
            log,
            _running: (proxy, server),
            _dirs: (config, dir),
        }
    }

    /// Every command line the server has received.
    fn asked(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The first command line with `tag` the server received (empty if none).
    fn line(&self, tag: &str) -> String {
        let prefix = format!("{tag} ");
        self.asked()
            .lines()
            .find(|l| l.starts_with(&prefix))
            .unwrap_or_default()
            .to_string()
    }
}

fn envelopd(upstream_imap: u16) -> (tempfile::TempDir, u16, Proc) {
    let dir = tempfile::tempdir().unwrap();
    let imap = free_port();
    let smtp = free_port();
    std::fs::write(
        dir.path().join("proxy.toml"),
        format!(
            "[smtp]\nlisten = \"127.0.0.1:{smtp}\"\n[imap]\nlisten = \"127.0.0.1:{imap}\"\n\
             [upstream.smtp]\nhost = \"127.0.0.1\"\nport = 1\ntls = \"none\"\n\
             [upstream.imap]\nhost = \"127.0.0.1\"\nport = {upstream_imap}\ntls = \"none\"\n"
        ),
    )
    .unwrap();
    let p = common::run_envelopd(
        &dir.path().join("proxy.toml"),
        &dir.path().join("envelopd.log"),
    );
    wait_for(imap);
    (dir, imap, p)
}

struct Client {
    r: BufReader<TcpStream>,
}

impl Client {
    fn connect(port: u16) -> Client {
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        // A hang would show up as a read timeout, failing the test instead of blocking it.
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        let mut c = Client {
            r: BufReader::new(s),
        };
        let greeting = c.line();
        assert!(greeting.starts_with("* OK"), "{greeting}");
        c
    }

    fn line(&mut self) -> String {
        let mut l = String::new();
        self.r
            .read_line(&mut l)
            .expect("an answer in time, not a hang");
        l
    }

    fn send(&mut self, bytes: &[u8]) {
        self.r.get_mut().write_all(bytes).unwrap();
    }

    /// Sends a command and collects everything up to its tagged answer (or the end).
    fn command(&mut self, tag: &str, bytes: &[u8]) -> String {
        self.send(bytes);
        let mut all = String::new();
        loop {
            let mut raw = Vec::new();
            let n = self
                .r
                .read_until(b'\n', &mut raw)
                .expect("an answer in time, not a hang");
            let l = String::from_utf8_lossy(&raw).to_string();
            all.push_str(&l);
            if n == 0 || l.starts_with(&format!("{tag} ")) || l.starts_with("* BYE") {
                return all;
            }
        }
    }

    fn login_select(&mut self) {
        assert!(self.command("l", b"l LOGIN bob pw\r\n").contains("l OK"));
        assert!(self.command("s", b"s SELECT INBOX\r\n").contains("s OK"));
    }
}

#[test]
fn a_server_announcing_a_2_gib_literal_gets_the_client_a_bye_not_a_hang() {
    let (_srv, port) = fake_server("huge");
    let (_d, imap, _e) = envelopd(port);
    let mut c = Client::connect(imap);
    c.login_select();
    let out = c.command("f", b"f FETCH 1 (BODY.PEEK[])\r\n");
    assert!(
        out.contains("* BYE envelopd: the mail server sent a literal of 2147483648 bytes"),
        "{out}"
    );
    // The proxy itself is fine.
    let _again = Client::connect(imap);
}

#[test]
fn an_unparsable_fetch_response_passes_and_the_command_completes() {
    let (_srv, port) = fake_server("garbage");
    let (_d, imap, _e) = envelopd(port);
    let mut c = Client::connect(imap);
    c.login_select();
    let out = c.command("f", b"f FETCH 1 (BODYSTRUCTURE)\r\n");
    assert!(out.contains("f OK"), "{out}");
    assert!(c.command("n", b"n NOOP\r\n").contains("n OK"));
}

#[test]
fn a_server_hanging_up_inside_a_literal_ends_the_session_with_bye() {
    let (_srv, port) = fake_server("truncated");
    let (_d, imap, _e) = envelopd(port);
    let mut c = Client::connect(imap);
    c.login_select();
    let out = c.command("f", b"f FETCH 1 (BODY[])\r\n");
    assert!(out.contains("* BYE") || out.is_empty(), "{out}");
    let _again = Client::connect(imap);
}

#[test]
fn an_smime_message_that_cannot_be_opened_is_shown_with_a_status_that_says_why() {
    let (_srv, port) = fake_server("bad-smime");
    let (_d, imap, _e) = envelopd(port);
    let mut c = Client::connect(imap);
    c.login_select();
    let out = c.command("f", b"f FETCH 1 (RFC822.SIZE BODY.PEEK[])\r\n");
    assert!(out.contains("f OK"), "{out}");
    assert!(
        out.contains("X-Envelopd: decrypted=failed; reason="),
        "{out}"
    );
    // RFC822.SIZE is the size of what is shown, not of what is stored.
    let size: usize = out
        .split("RFC822.SIZE ")
        .nth(1)
        .unwrap()
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let literal: usize = out
        .split("BODY[] {")
        .nth(1)
        .unwrap()
        .split('}')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(size, literal);
}

#[test]
fn mime_nested_200_deep_is_described_without_recursing_forever() {
    let (_srv, port) = fake_server("nested");
    let (_d, imap, _e) = envelopd(port);
    let mut c = Client::connect(imap);
    c.login_select();
    let out = c.command("f", b"f FETCH 1 (BODYSTRUCTURE BODY.PEEK[1.1.1])\r\n");
    assert!(
        out.contains("f OK") && out.contains("BODYSTRUCTURE ("),
        "{out}"
    );
}

#[test]
fn bad_client_input_gets_bye_or_passes_without_harm() {
    let (_srv, port) = fake_server("garbage");
    let (d, imap, _e) = envelopd(port);
    // An overlong line (over 64 KiB without CRLF): BYE, connection closed.
    let mut c = Client::connect(imap);
    let mut long = b"a NOOP ".to_vec();
    long.extend(std::iter::repeat_n(b'x', 70_000));
    c.send(&long);
    let l = c.line();
    assert!(
        l.starts_with("* BYE envelopd: the mail program sent a line longer than"),
        "{l}"
    );
    // A client announcing a 2 GiB literal and vanishing: nothing is buffered, the proxy goes on.
    let mut c = Client::connect(imap);
    c.send(b"a APPEND INBOX {2147483648+}\r\nonly a few bytes");
    drop(c);
    let mut c = Client::connect(imap);
    c.login_select();
    assert!(c.command("n", b"n NOOP\r\n").contains("n OK"));
    let log = std::fs::read_to_string(d.path().join("envelopd.log")).unwrap();
    assert!(!log.contains("panicked"), "{log}");
}

#[test]
fn a_failed_login_never_lends_its_name_or_another_user_s_cached_mail() {
    let (_srv, port) = fake_server("users");
    let (_d, imap, _e) = envelopd(port);
    // Alice reads her (S/MIME) message: its shown form is cached under her login.
    let mut alice = Client::connect(imap);
    assert!(alice.command("l", b"l LOGIN alice pw\r\n").contains("l OK"));
    assert!(alice.command("s", b"s SELECT INBOX\r\n").contains("s OK"));
    let out = alice.command("f", b"f UID FETCH 1 (BODY.PEEK[HEADER])\r\n");
    assert!(out.contains("mailbox of alice"), "{out}");
    // (The fake server serves one connection at a time.)
    assert!(alice.command("o", b"o LOGOUT\r\n").contains("BYE"));
    drop(alice);
    // Mallory claims to be Alice (refused), then gets in some other way: she must see her own
    // mailbox, never Alice's cached message.
    let mut mallory = Client::connect(imap);
    assert!(mallory
        .command("l", b"l LOGIN alice wrong\r\n")
        .contains("l NO"));
    mallory.send(b"a AUTHENTICATE XFAKE\r\n");
    assert!(mallory.line().starts_with('+'));
    assert!(mallory.command("a", b"eA==\r\n").contains("a OK"));
    assert!(mallory.command("s", b"s SELECT INBOX\r\n").contains("s OK"));
    let out = mallory.command("f", b"f UID FETCH 1 (BODY.PEEK[HEADER])\r\n");
    assert!(
        out.contains("mailbox of mallory") && !out.contains("mailbox of alice"),
        "{out}"
    );
}

/// A folder opened again is fetched with exactly what the client asks for (plus the UID): envelopd
/// remembers which stored messages it shows in its own form and asks the server only about new
/// ones, and the client's answers are the same as the first time.
#[test]
fn a_mailbox_opened_again_is_fetched_without_envelopd_s_extra_item() {
    let server = Scripted::start();
    let mut c = Client::connect(server.imap);
    c.login_select();
    let mut open = |tag: &str| {
        let cmd = format!("{tag} UID FETCH 1:* (UID RFC822.SIZE BODY.PEEK[HEADER])\r\n");
        let out = c.command(tag, cmd.as_bytes());
        assert!(out.contains(&format!("{tag} OK")), "{out}");
        out.lines()
            .filter(|l| !l.starts_with(tag))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let first = open("f1");
    let second = open("f2");
    let third = open("f3");

    // What the client saw: the forged status header replaced by envelopd's, the same each time;
    // the message that arrived later shown the same way.
    let status = "X-Envelopd: decrypted=no; signature=none";
    assert_eq!(first.matches("X-Envelopd").count(), 1, "{first}");
    assert!(
        first.contains(status) && first.contains("Subject: one"),
        "{first}"
    );
    assert_eq!(first, second, "a second opening must look like the first");
    assert!(third.starts_with(&second), "{third}");
    assert_eq!(third.matches("X-Envelopd").count(), 2, "{third}");
    assert!(third.contains("Subject: three"), "{third}");
    assert!(!third.contains("signature=valid"), "{third}");

    // What the server was asked.
    let asked = server.asked();
    let line = |tag: &str| {
        let l = server.line(tag);
        assert!(!l.is_empty(), "no {tag} in {asked}");
        l
    };
    assert!(
        line("f1").contains("HEADER.FIELDS (Content-Type X-Envelopd)"),
        "{asked}"
    );
    assert!(!line("f2").contains("HEADER.FIELDS"), "{asked}");
    assert!(!line("f3").contains("HEADER.FIELDS"), "{asked}");
    let own: Vec<&str> = asked.lines().filter(|l| l.starts_with("ENVLPD.")).collect();
    assert_eq!(
        own.iter().map(|l| l.split_once(' ').unwrap().1).collect::<Vec<_>>(),
        [
            "UID FETCH 2 (UID BODY.PEEK[])",
            "UID FETCH 3 (UID BODY.PEEK[HEADER.FIELDS (Content-Type X-Envelopd)])",
            "UID FETCH 3 (UID BODY.PEEK[])",
        ],
        "envelopd's own commands: the shown form of 2 once, then only about the new message\n{asked}"
    );
}

/// A client may pipeline SELECT and FETCH. envelopd must follow SELECT's answers even while the
/// FETCH is pending (it used not to: the FETCH then waited for a reply it had already passed
/// on, and its cache keys named no mailbox), and answer the FETCH for the mailbox SELECT opened.
#[test]
fn select_and_fetch_pipelined_are_answered_for_the_mailbox_selected() {
    let server = Scripted::start();
    let mut c = Client::connect(server.imap);
    assert!(c.command("l", b"l LOGIN bob pw\r\n").contains("l OK"));
    let fetch = "UID FETCH 1:* (UID RFC822.SIZE BODY.PEEK[HEADER])\r\n";
    let first = c.command("f", format!("s SELECT INBOX\r\nf {fetch}").as_bytes());
    assert!(
        first.contains("\r\ns OK") && first.contains("\r\nf OK"),
        "{first}"
    );
    assert_eq!(first.matches("X-Envelopd").count(), 1, "{first}");
    assert!(
        first.contains("X-Envelopd: decrypted=no; signature=none"),
        "{first}"
    );
    // The session is sane afterwards, and the next opening is answered the same way from what
    // envelopd learnt about this mailbox.
    let fetches = |out: &str| {
        out.lines()
            .filter(|l| !l.starts_with("s ") && !l.starts_with("f ") && !l.starts_with("g "))
            .filter(|l| !l.starts_with("* OK [UIDVALIDITY") && !l.starts_with("* 1 EXISTS"))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let again = c.command("g", format!("g {fetch}").as_bytes());
    assert!(again.contains("g OK"), "{again}");
    assert_eq!(fetches(&first), fetches(&again));
    assert!(
        !server.line("g").contains("HEADER.FIELDS"),
        "the mailbox is known by then: {}",
        server.asked()
    );
    // Switching mailboxes the same way: what envelopd knows of INBOX is not taken for the
    // other mailbox (the same UIDs name other messages there): that FETCH carries envelopd's
    // item, and what it learns is kept for Other, whose next FETCH needs the item no more.
    let other = c.command("h", format!("o SELECT Other\r\nh {fetch}").as_bytes());
    assert!(
        other.contains("\r\no OK") && other.contains("\r\nh OK"),
        "{other}"
    );
    let next = c.command("i", format!("i {fetch}").as_bytes());
    assert!(next.contains("i OK"), "{next}");
    let asked = server.asked();
    assert!(server.line("h").contains("HEADER.FIELDS"), "{asked}");
    assert!(!server.line("i").contains("HEADER.FIELDS"), "{asked}");
}
