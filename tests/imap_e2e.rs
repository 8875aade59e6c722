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

use common::lab::Lab;
use common::provider::Provider;
use common::reading::*;

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
