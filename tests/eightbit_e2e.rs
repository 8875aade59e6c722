//! 8BITMIME and SMTPUTF8 towards providers with and without them (RFC 6152, RFC 6531), with
//! Python's smtplib and a raw socket as mail programs, Postfix's smtp-sink and real Postfix as
//! providers: envelopd always offers 8BITMIME and makes mail 7-bit itself for a provider that
//! did not announce it (never passing BODY=8BITMIME there); what cannot be converted is refused
//! with 554 5.6.3 and stays with the mail program; SMTPUTF8 is offered only when the provider
//! has it, and a UTF-8 sender reaches Postfix intact.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use testkit::procs::{free_port, smtp_sink, wait_for, Proc};

const TEXT: &str = "Gr\u{fc}\u{df}e aus der Praxis: R\u{f6}ntgenbefund unauff\u{e4}llig.";

/// envelopd (identity Alice; policy plaintext) in front of smtp-sink with `sink_flags`.
fn setup(sink_flags: &[&str]) -> (tempfile::TempDir, u16, Proc, Proc) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    common::practice_dir(d, "alice", &["dump"]);
    let (listen, upstream) = (free_port(), free_port());
    std::fs::write(
        d.join("proxy.toml"),
        format!(
            "[smtp]\nlisten = \"127.0.0.1:{listen}\"\n[upstream.smtp]\nhost = \"127.0.0.1\"\nport = {upstream}\ntls = \"none\"\n\
             [certificates]\nanchors = [\"trust\"]\nrecipients = \"certs\"\nrevocation = \"off\"\n\
             [[identity]]\naddresses = [\"alice@smime.example\"]\npkcs12 = \"keys/alice.p12\"\npassword_file = \"keys/pw\"\n"
        ),
    )
    .unwrap();
    let sink = smtp_sink(&d.join("dump"), upstream, sink_flags);
    let p = common::run_envelopd(&d.join("proxy.toml"), &d.join("envelopd.log"));
    wait_for(listen);
    (dir, listen, sink, p)
}

/// Sends `message` with smtplib (BODY=8BITMIME); prints the reply code and text, or the
/// refusal, as `CODE text`.
fn send(port: u16, from: &str, to: &str, message: &[u8], options: &[&str]) -> String {
    let script = r#"
import smtplib, sys
port, sender, rcpt, path = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
opts = sys.argv[5:]
s = smtplib.SMTP("127.0.0.1", port)
s.ehlo()
try:
    s.sendmail(sender, [rcpt], open(path, "rb").read(), mail_options=opts)
    print("250 sent")
except smtplib.SMTPResponseException as e:
    print(e.smtp_code, e.smtp_error.decode(errors="replace"))
except smtplib.SMTPRecipientsRefused as e:
    code, text = list(e.recipients.values())[0]
    print(code, text.decode(errors="replace"))
s.quit()
"#;
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), message).unwrap();
    let o = Command::new("python3")
        .args(["-c", script, &port.to_string(), from, to])
        .arg(f.path())
        .args(options)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn dumps(d: &Path) -> Vec<Vec<u8>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(d.join("dump"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
        .iter()
        .filter_map(|f| std::fs::read(f).ok())
        .filter(|m| String::from_utf8_lossy(m).contains("\nSubject: "))
        .collect()
}

fn plain_8bit(subject: &str) -> Vec<u8> {
    format!(
        "From: empfang@praxis.example\r\nTo: carol@praxis.example\r\nSubject: {subject}\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n{TEXT}\r\n"
    )
    .into_bytes()
}

/// The text of a stored message as a mail program decodes it (Python's email package).
fn decoded_text(stored: &[u8]) -> String {
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), stored).unwrap();
    let o = Command::new("python3")
        .args([
            "-c",
            "import email,sys\nm=email.message_from_bytes(open(sys.argv[1],'rb').read())\nfor p in m.walk():\n  if p.get_content_type()=='text/plain': print(p.get_payload(decode=True).decode(p.get_content_charset() or 'ascii'))",
        ])
        .arg(f.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap().trim().to_string()
}

#[test]
fn eight_bit_mail_is_made_7bit_for_a_provider_without_8bitmime_and_passed_as_is_otherwise() {
    // A provider without 8BITMIME (smtp-sink -8).
    let (dir, port, _sink, _p) = setup(&["-8"]);
    let reply = send(
        port,
        "empfang@praxis.example",
        "carol@praxis.example",
        &plain_8bit("ohne"),
        &["BODY=8BITMIME"],
    );
    assert!(reply.starts_with("250"), "{reply}");
    let stored = dumps(dir.path());
    assert_eq!(stored.len(), 1);
    let text = String::from_utf8_lossy(&stored[0]);
    let mail_args = text
        .lines()
        .find(|l| l.starts_with("X-Mail-Args:"))
        .unwrap();
    assert!(!mail_args.contains("8BITMIME"), "{mail_args}");
    assert!(stored[0].iter().all(|b| *b < 0x80), "7-bit only:\n{text}");
    assert!(text.contains("quoted-printable"), "{text}");
    assert_eq!(
        decoded_text(&stored[0]),
        TEXT,
        "the reader sees the same text"
    );

    // Signed by the mail program itself (S/MIME over 8-bit text): converting would break the
    // signature, so it is refused and stays with the mail program.
    let v = common::rfc9216();
    let signed = testkit::openssl_pipe(
        &[
            "cms", "-sign", "-binary", "-signer", v.join("alice.sign.crt").to_str().unwrap(),
            "-inkey", v.join("alice.sign.key").to_str().unwrap(),
        ],
        format!("Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n{TEXT}\r\n").as_bytes(),
    )
    .unwrap();
    let mut m =
        b"From: empfang@praxis.example\r\nTo: carol@praxis.example\r\nSubject: signiert\r\n"
            .to_vec();
    m.extend_from_slice(&signed);
    let reply = send(
        port,
        "empfang@praxis.example",
        "carol@praxis.example",
        &m,
        &["BODY=8BITMIME"],
    );
    assert!(
        reply.starts_with("554") && reply.contains("5.6.3") && reply.contains("signed"),
        "{reply}"
    );
    // A raw UTF-8 header field needs SMTPUTF8, which this provider lacks.
    let raw_header = format!(
        "From: empfang@praxis.example\r\nTo: carol@praxis.example\r\nSubject: Befund f\u{fc}r Frau M\u{fc}ller\r\n\r\n{TEXT}\r\n"
    );
    let reply = send(
        port,
        "empfang@praxis.example",
        "carol@praxis.example",
        raw_header.as_bytes(),
        &["BODY=8BITMIME"],
    );
    assert!(
        reply.starts_with("554") && reply.contains("SMTPUTF8"),
        "{reply}"
    );
    assert_eq!(dumps(dir.path()).len(), 1, "nothing half-sent");
    // Signed by envelopd (Alice's identity): the signed copy is 7-bit by construction.
    let mine = format!(
        "From: alice@smime.example\r\nTo: carol@praxis.example\r\nSubject: von Alice\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n{TEXT}\r\n"
    );
    let reply = send(
        port,
        "alice@smime.example",
        "carol@praxis.example",
        mine.as_bytes(),
        &["BODY=8BITMIME"],
    );
    assert!(reply.starts_with("250"), "{reply}");
    let stored = dumps(dir.path());
    let alice = stored
        .iter()
        .find(|m| String::from_utf8_lossy(m).contains("von Alice"))
        .unwrap();
    assert!(alice.iter().all(|b| *b < 0x80));
    testkit::openssl_pipe(
        &[
            "cms",
            "-verify",
            "-CAfile",
            v.join("ca.rsa.crt").to_str().unwrap(),
        ],
        alice,
    )
    .expect("OpenSSL verifies the signed copy");

    // A provider with 8BITMIME gets BODY=8BITMIME and the bytes as they are.
    let (dir, port, _sink, _p) = setup(&[]);
    let reply = send(
        port,
        "empfang@praxis.example",
        "carol@praxis.example",
        &plain_8bit("mit"),
        &["BODY=8BITMIME"],
    );
    assert!(reply.starts_with("250"), "{reply}");
    let stored = dumps(dir.path());
    let text = String::from_utf8_lossy(&stored[0]);
    assert!(
        text.lines()
            .any(|l| l.starts_with("X-Mail-Args:") && l.contains("BODY=8BITMIME")),
        "{text}"
    );
    assert!(text.contains(TEXT), "unchanged 8-bit text");
}

/// A raw SMTP dialogue; returns every reply line.
fn raw_smtp(port: u16, lines: &[&str]) -> Vec<String> {
    use std::io::{BufRead, BufReader, Write};
    let s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut w = s;
    let mut out = Vec::new();
    let read_reply = |r: &mut BufReader<std::net::TcpStream>, out: &mut Vec<String>| loop {
        let mut l = String::new();
        if r.read_line(&mut l).unwrap() == 0 {
            break;
        }
        out.push(l.trim_end().to_string());
        if l.as_bytes().get(3) == Some(&b' ') {
            break;
        }
    };
    read_reply(&mut r, &mut out);
    for l in lines {
        w.write_all(format!("{l}\r\n").as_bytes()).unwrap();
        read_reply(&mut r, &mut out);
    }
    out
}

#[test]
fn smtputf8_is_offered_only_with_a_provider_that_has_it() {
    // smtp-sink has no SMTPUTF8: envelopd does not offer it, and a mail program that uses it
    // anyway gets 555 5.5.4 at MAIL (nothing is sent).
    let (dir, port, _sink, _p) = setup(&[]);
    let r = raw_smtp(
        port,
        &[
            "EHLO praxis",
            "MAIL FROM:<j\u{f6}rg@praxis.example> SMTPUTF8",
            "QUIT",
        ],
    );
    assert!(r.iter().any(|l| l.contains("8BITMIME")), "{r:?}");
    let ehlo = |r: &[String]| {
        r.iter()
            .filter(|l| l.starts_with("250"))
            .any(|l| l.contains("SMTPUTF8"))
    };
    assert!(!ehlo(&r), "{r:?}");
    assert!(r.iter().any(|l| l.starts_with("555 5.5.4")), "{r:?}");
    assert!(dumps(dir.path()).is_empty());

    // Real Postfix has SMTPUTF8: offered, and a UTF-8 sender's mail reaches Bob intact.
    let provider = common::provider::Provider::start();
    let d = tempfile::tempdir().unwrap();
    common::practice_dir(d.path(), "bob", &[]);
    let listen = free_port();
    std::fs::write(
        d.path().join("proxy.toml"),
        format!(
            "[smtp]\nlisten = \"127.0.0.1:{listen}\"\n[upstream.smtp]\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\n\
             [certificates]\nanchors = [\"trust\"]\nrecipients = \"certs\"\nrevocation = \"off\"\n\
             [policy]\nfallback = \"plaintext\"\n",
            provider.plain
        ),
    )
    .unwrap();
    let _p = common::run_envelopd(&d.path().join("proxy.toml"), &d.path().join("envelopd.log"));
    wait_for(listen);
    let r = raw_smtp(
        listen,
        &[
            "EHLO praxis",
            // Bob's provider login ("\0bob@smime.example\0bob-pw"), passed through to Postfix.
            "AUTH PLAIN AGJvYkBzbWltZS5leGFtcGxlAGJvYi1wdw==",
            "MAIL FROM:<j\u{f6}rg@praxis.example> SMTPUTF8",
            "RCPT TO:<bob@smime.example>",
            "DATA",
            &format!("From: J\u{f6}rg <j\u{f6}rg@praxis.example>\r\nTo: bob@smime.example\r\nSubject: Gr\u{fc}\u{df}e\r\n\r\n{TEXT}\r\n."),
            "QUIT",
        ],
    );
    assert!(r.iter().any(|l| l.contains("SMTPUTF8")), "{r:?}");
    assert!(
        r.iter().any(|l| l.starts_with("250 2.0.0")),
        "{r:?}\n{}",
        std::fs::read_to_string(d.path().join("envelopd.log")).unwrap_or_default()
    );
    let stored = provider.wait_messages("bob", 1);
    let text = String::from_utf8_lossy(&stored[0]);
    // Bob has a certificate: the UTF-8 sender stays in the header, the text is encrypted to him.
    assert!(
        text.contains("From: J\u{f6}rg <j\u{f6}rg@praxis.example>"),
        "{text}"
    );
    assert!(!text.contains(TEXT), "{text}");
    let v = common::rfc9216();
    let plain = testkit::openssl_pipe(
        &[
            "cms",
            "-decrypt",
            "-inkey",
            v.join("bob.encrypt.key").to_str().unwrap(),
        ],
        &stored[0],
    )
    .unwrap();
    assert!(
        decoded_text(&plain).contains(TEXT),
        "{}",
        String::from_utf8_lossy(&plain)
    );
}
