//! End to end: swaks (a real SMTP client) -> `envelopd run` -> Postfix's smtp-sink (a real SMTP
//! server that writes each accepted message to a file). The stored copies are checked with
//! OpenSSL; faults (provider down, provider refusing DATA, policy refusal) must never produce a
//! 250 for a message the provider did not take.

mod common;

use std::process::Command;
use std::time::Duration;

use common::submission::*;
use testkit::procs::smtp_sink as sink;

#[test]
fn mail_to_a_recipient_with_a_certificate_is_stored_signed_and_encrypted() {
    let s = Setup::new("refuse");
    let _sink = sink(&s.dump(), s.upstream, &[]);
    let _e = s.envelopd();
    let o = s.swaks(
        &["bob@smime.example"],
        &["From: Alice <alice@smime.example>", "Subject: Befund"],
        BODY,
    );
    assert!(o.status.success(), "{}", transcript(&o));
    assert!(
        transcript(&o).contains("<-  250 2.0.0 Ok"),
        "the provider's own reply reaches the client"
    );
    let stored = s.messages();
    assert_eq!(stored.len(), 1);
    let text = String::from_utf8_lossy(&stored[0]);
    assert!(
        text.contains("application/pkcs7-mime") && !text.contains(BODY),
        "the provider must only see ciphertext"
    );
    let v = common::rfc9216();
    for (key, who) in [
        ("bob.encrypt.key", "recipient"),
        ("alice.encrypt.key", "sender's Sent copy"),
    ] {
        let signed = testkit::openssl_pipe(
            &["cms", "-decrypt", "-inkey", v.join(key).to_str().unwrap()],
            &stored[0],
        )
        .unwrap_or_else(|e| panic!("{who}: {e}"));
        let content = testkit::openssl_pipe(
            &[
                "cms",
                "-verify",
                "-CAfile",
                v.join("ca.rsa.crt").to_str().unwrap(),
            ],
            &signed,
        )
        .unwrap();
        assert!(String::from_utf8_lossy(&content).contains(BODY), "{who}");
    }
    // The log says what was done (the audit line below), never what was written.
    let log = s.log();
    assert!(
        !log.contains("Muster") && !log.contains("alice\n"),
        "body or password in the log:\n{log}"
    );
    // One audit line per message, in its stable key=value form.
    let audit: Vec<&str> = log.lines().filter(|l| l.contains("audit v1 ")).collect();
    assert_eq!(audit.len(), 1, "{log}");
    let line = audit[0];
    for field in [
        "proto=smtp",
        "peer=127.0.0.1",
        "login=-",
        "from=alice@smime.example",
        "rcpts=bob@smime.example",
        "decision=encrypted",
        "cipher=aes-256-cbc",
        "signed_as=alice@smime.example",
        "copies=1",
        "reply=250",
    ] {
        assert!(line.contains(field), "{field} missing in {line}");
    }
}

#[test]
fn refusals_and_faults_never_look_like_success() {
    let s = Setup::new("refuse");
    // Provider down: 4xx at MAIL, the client keeps the message.
    let _e = s.envelopd();
    let o = s.swaks(&["bob@smime.example"], &[], BODY);
    assert!(!o.status.success());
    assert!(
        transcript(&o).contains("451 4.4.1 provider not reachable"),
        "{}",
        transcript(&o)
    );

    // Policy: no certificate for carol -> 550 5.7.1 naming her; nothing reaches the provider.
    let _sink = sink(&s.dump(), s.upstream, &[]);
    let o = s.swaks(
        &["bob@smime.example", "carol@other.example"],
        &["From: alice@smime.example"],
        BODY,
    );
    assert!(!o.status.success());
    assert!(transcript(&o).contains("550 5.7.1 Encryption required, but no valid certificate for: carol@other.example (no certificate)"), "{}", transcript(&o));
    // smtp-sink may leave an envelope-only dump for an aborted transaction; the message itself
    // must not have reached it.
    assert!(
        s.stored()
            .iter()
            .all(|m| !String::from_utf8_lossy(m).contains(BODY)),
        "a refused message must not be sent"
    );
}

#[test]
fn the_providers_refusal_of_the_data_is_what_the_client_sees() {
    let s = Setup::new("plaintext");
    // smtp-sink rejects the DATA command with 5xx.
    let _sink = sink(&s.dump(), s.upstream, &["-f", "data"]);
    let _e = s.envelopd();
    let o = s.swaks(&["bob@smime.example"], &["From: alice@smime.example"], BODY);
    assert!(!o.status.success());
    let t = transcript(&o);
    assert!(
        !t.contains("<-  250 2.0.0 Ok\n -> QUIT") && t.contains("<** 5"),
        "{t}"
    );
    // smtp-sink may leave an envelope-only dump of the aborted transaction; not the message.
    assert!(s
        .stored()
        .iter()
        .all(|m| !String::from_utf8_lossy(m).contains(BODY)));
}

/// Alice writes to herself and sends Bob a blind copy: two copies, each its own transaction.
fn alice_to_herself_with_bob_in_bcc(s: &Setup) -> Vec<Vec<u8>> {
    let o = s.swaks(
        &["alice@smime.example", "bob@smime.example"],
        &[
            "From: alice@smime.example",
            "To: alice@smime.example",
            "Bcc: bob@smime.example",
        ],
        BODY,
    );
    assert!(o.status.success(), "{}", transcript(&o));
    let stored = s.messages();
    assert_eq!(stored.len(), 2, "one copy per group");
    stored
}

#[test]
fn bcc_recipients_get_separate_copies() {
    let s = Setup::new("refuse");
    let _sink = sink(&s.dump(), s.upstream, &[]);
    let _e = s.envelopd();
    let mut stored = alice_to_herself_with_bob_in_bcc(&s);
    stored.sort_by_key(|m| String::from_utf8_lossy(m).contains("X-Rcpt-Args: <bob@smime.example>"));
    let v = common::rfc9216();
    // Alice's copy: Bob cannot open it. Bob's copy: he can; no Bcc header anywhere.
    assert!(testkit::openssl_pipe(
        &[
            "cms",
            "-decrypt",
            "-inkey",
            v.join("bob.encrypt.key").to_str().unwrap()
        ],
        &stored[0]
    )
    .is_err());
    assert!(testkit::openssl_pipe(
        &[
            "cms",
            "-decrypt",
            "-inkey",
            v.join("bob.encrypt.key").to_str().unwrap()
        ],
        &stored[1]
    )
    .is_ok());
    for m in &stored {
        assert!(!String::from_utf8_lossy(m).to_lowercase().contains("\nbcc:"));
    }
}

#[test]
fn separate_copies_pipeline_their_envelope_when_the_provider_offers_it() {
    // A Bcc makes two copies, each its own transaction after the client's one. With PIPELINING
    // offered, each copy's MAIL and RCPT leave in one write; without it (smtp-sink -p), one at a
    // time. The relay notes which commands arrived together in one read.
    for (sink_options, pipelined) in [(&[][..], true), (&["-p"][..], false)] {
        let s = Setup::gateway("refuse", "");
        let _sink = sink(&s.dump(), s.upstream, sink_options);
        let _e = s.envelopd();
        alice_to_herself_with_bob_in_bcc(&s);
        let reads = s.relay_reads();
        let together = reads.lines().filter(|l| *l == "MAIL RCPT").count();
        let copies = if pipelined { 2 } else { 0 };
        assert_eq!(together, copies, "pipelined: {pipelined}\n{reads}");
        // The client's own MAIL and RCPTs were each relayed when the client sent them.
        assert!(
            reads.lines().take(4).eq(["EHLO", "MAIL", "RCPT", "RCPT"]),
            "{reads}"
        );
    }
}

#[test]
fn a_pipelining_client_s_recipients_go_to_the_provider_in_one_write() {
    // swaks --pipeline sends MAIL, the RCPTs and DATA in one go. With PIPELINING at the
    // provider, envelopd relays MAIL and the RCPTs together too (one round trip for the whole
    // envelope) and answers each; without it (smtp-sink -p), one at a time. (Mixed answers in
    // one group, in order, against Postfix: provider_e2e.rs.)
    for (sink_options, pipelined) in [(&[][..], true), (&["-p"][..], false)] {
        let s = Setup::gateway("plaintext", "");
        let _sink = sink(&s.dump(), s.upstream, sink_options);
        let _e = s.envelopd();
        let o = s.swaks_with(
            &["--pipeline"],
            &[
                "alice@smime.example",
                "bob@smime.example",
                "carol@plain.example",
            ],
            &["From: alice@smime.example"],
            BODY,
        );
        let t = transcript(&o);
        assert!(o.status.success(), "{t}\n{}", s.log());
        // The client got one 250 per recipient, then 354 and the provider's final 250.
        assert_eq!(t.matches("<~  250 2.1.5").count(), 3, "{t}");
        let stored = s.messages();
        assert_eq!(stored.len(), 1, "{}", s.log());
        assert!(String::from_utf8_lossy(&stored[0]).contains("X-Rcpt-Args: <carol@plain.example>"));
        let reads = s.relay_reads();
        // swaks writes each command on its own, so how many of them envelopd finds together
        // depends on timing (what arrived while an earlier group was answered goes on
        // together): fewer provider reads than commands. A client writing the envelope at
        // once, with the exact grouping: the next test.
        let envelope: Vec<&str> = reads
            .lines()
            .filter(|l| l.starts_with("MAIL") || l.starts_with("RCPT"))
            .collect();
        let commands: usize = envelope.iter().map(|l| l.split(' ').count()).sum();
        assert_eq!(commands, 4, "{reads}");
        if pipelined {
            assert!(envelope.len() < 4, "{reads}");
        } else {
            assert_eq!(envelope, ["MAIL", "RCPT", "RCPT", "RCPT"], "{reads}");
        }
    }
}

/// Sends MAIL, two RCPTs and DATA in one TLS write (as a pipelining mail program may) through the gateway,
/// with the login, and returns the four replies, one per line.
fn pipelined_envelope(s: &Setup) -> String {
    let (lan, _) = s.gateway.as_ref().expect("a gateway setup");
    let script = format!(
        "import smtplib, ssl\n\
         ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE\n\
         s = smtplib.SMTP('{lan}', {}, timeout=30)\n\
         s.ehlo(); s.starttls(context=ctx); s.ehlo(); s.login('alice@smime.example', 'alice-pw')\n\
         s.sock.sendall(b'MAIL FROM:<alice@smime.example>\\r\\nRCPT TO:<alice@smime.example>\\r\\n'\n\
                        b'RCPT TO:<bob@smime.example>\\r\\nDATA\\r\\n')\n\
         for _ in range(4):\n    code, text = s.getreply(); print(code, text.decode())\n\
         s.close()\n",
        s.listen
    );
    let o = Command::new("python3")
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&o.stderr),
        s.log()
    );
    String::from_utf8_lossy(&o.stdout).to_string()
}

#[test]
fn a_pipelined_envelope_goes_to_the_provider_in_one_write() {
    // A client that writes MAIL, the RCPTs and DATA at once: MAIL and the RCPTs reach a
    // pipelining provider in one write too (one round trip for the envelope); without
    // PIPELINING at the provider (smtp-sink -p), MAIL goes alone and then each RCPT. A MAIL the
    // provider refuses inside such a group: provider_e2e.rs (smtp-sink's refusals imply -p).
    for (sink_options, groups) in [
        (&[][..], &["MAIL RCPT RCPT"][..]),
        (&["-p"][..], &["MAIL", "RCPT", "RCPT"][..]),
    ] {
        let s = Setup::gateway("plaintext", "");
        let _sink = sink(&s.dump(), s.upstream, sink_options);
        let _e = s.envelopd();
        let out = pipelined_envelope(&s);
        let codes: Vec<&str> = out.lines().map(|l| &l[..3]).collect();
        assert_eq!(codes, ["250", "250", "250", "354"], "{out}");
        let reads = s.relay_reads();
        let envelope: Vec<&str> = reads
            .lines()
            .filter(|l| l.starts_with("MAIL") || l.starts_with("RCPT"))
            .collect();
        assert_eq!(envelope, groups, "{sink_options:?}: {reads}");
    }
}

#[test]
fn dsn_is_offered_and_passed_on_only_when_the_provider_offers_it() {
    // smtp-sink offers DSN unless told not to (-N); its dump shows the RCPT parameters it got.
    for (sink_options, offered) in [(&[][..], true), (&["-N"][..], false)] {
        let s = Setup::new("plaintext");
        let _sink = sink(&s.dump(), s.upstream, sink_options);
        let _e = s.envelopd();
        let script = format!(
            "import smtplib\n\
             s=smtplib.SMTP('127.0.0.1',{},timeout=30)\n\
             s.ehlo(); print(s.has_extn('dsn'))\n\
             s.sendmail('alice@smime.example',['carol@plain.example'],b'Subject: x\\r\\n\\r\\nhi\\r\\n',\
             ['RET=HDRS'],['NOTIFY=SUCCESS,DELAY','ORCPT=rfc822;carol@plain.example'])\n\
             s.quit()\n",
            s.listen
        );
        let o = Command::new("python3")
            .args(["-c", &script])
            .output()
            .unwrap();
        let out =
            String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{out}\n{}", s.log());
        assert_eq!(out.trim(), if offered { "True" } else { "False" });
        let stored = s.messages();
        assert_eq!(stored.len(), 1, "{}", s.log());
        let dump = String::from_utf8_lossy(&stored[0]);
        let args = dump
            .lines()
            .find(|l| l.starts_with("X-Rcpt-Args:"))
            .unwrap_or_default();
        if offered {
            assert_eq!(
                args,
                "X-Rcpt-Args: <carol@plain.example> NOTIFY=SUCCESS,DELAY ORCPT=rfc822;carol@plain.example",
                "{dump}"
            );
        } else {
            assert_eq!(args, "X-Rcpt-Args: <carol@plain.example>", "{dump}");
        }
    }
}

#[test]
fn a_large_message_over_a_slow_uplink_is_not_cut_off_while_it_moves() {
    // The provider reads at 1 MiB/s through a small window (a practice's DSL upload, scaled
    // down) and the provider timeout is 3 s: sending the 8 MiB that a 6 MiB message becomes
    // takes far longer than 3 s, but every piece moves in time, so the message goes through.
    let s = Setup::gateway_relay_env("refuse", "timeout = 3", &[("SINK_AUTH_RATE", "1048576")]);
    let _sink = sink(&s.dump(), s.upstream, &[]);
    let _e = s.envelopd();
    let line = "Befund unauffaellig, Roentgenbild folgt in der naechsten Nachricht.\r\n";
    let body = line.repeat(6 * 1024 * 1024 / line.len());
    let file = s.dir.path().join("big.txt");
    std::fs::write(&file, &body).unwrap();
    let started = std::time::Instant::now();
    let o = s.swaks(
        &["bob@smime.example"],
        &["From: alice@smime.example"],
        &format!("@{}", file.display()),
    );
    let took = started.elapsed();
    let t = transcript(&o);
    assert!(
        o.status.success(),
        "{}\n{}",
        t.lines()
            .filter(|l| !l.starts_with(" -> ") && !l.starts_with(" ~> "))
            .collect::<Vec<_>>()
            .join("\n"),
        s.log()
    );
    assert!(
        took > Duration::from_secs(4),
        "the slow provider was not slow: {took:?}"
    );
    let stored = s.messages();
    assert_eq!(stored.len(), 1);
    assert!(stored[0].len() > 8_000_000, "{}", stored[0].len());
}

#[test]
fn bad_client_input_gets_smtp_errors_and_the_session_stays_sane() {
    let s = Setup::new("plaintext");
    let _sink = sink(&s.dump(), s.upstream, &[]);
    let _e = s.envelopd();
    let mut c = Raw::connect(s.listen);
    let expect = |reply: String, code: &str| {
        assert!(reply.starts_with(code), "expected {code}, got {reply:?}")
    };
    expect(c.send(b"MAIL FROM:<alice@smime.example>\r\n"), "503 5.5.1");
    expect(c.send(b"EHLO client.example\r\n"), "250-");
    expect(c.send(b"RCPT TO:<bob@smime.example>\r\n"), "503 5.5.1");
    expect(c.send(b"DATA\r\n"), "503 5.5.1");
    // Overlong lines get one error each, and the next command is read cleanly.
    let mut long = b"VRFY ".to_vec();
    long.extend(std::iter::repeat_n(b'A', 5000));
    long.extend_from_slice(b"\r\n");
    expect(c.send(&long), "50");
    expect(c.send(b"NOOP\r\n"), "250");
    let mut junk = vec![b'A'; 5000];
    junk.extend_from_slice(b"\r\n");
    expect(c.send(&junk), "500");
    expect(c.send(b"NOOP\r\n"), "250");
    expect(c.send(b"HELLO there\r\n"), "500 5.5.2");
    expect(c.send(b"NO\0OP\r\n"), "500");
    expect(c.send(b"NOOP\n"), "250");
    expect(
        c.send(b"MAIL FROM:<alice@smime.example> SIZE=999999999999\r\n"),
        "552 5.3.4",
    );
    expect(c.send(b"STARTTLS\r\n"), "454 4.7.0");
    expect(c.send(b"\x16\x03\x01\x02\x00garbage\r\n"), "500");
    expect(c.send(b"MAIL FROM:<alice@smime.example>\r\n"), "250");
    expect(c.send(b"MAIL FROM:<alice@smime.example>\r\n"), "503 5.5.1");
    for i in 0..1000 {
        expect(
            c.send(format!("RCPT TO:<r{i}@other.example>\r\n").as_bytes()),
            "250",
        );
    }
    expect(
        c.send(b"RCPT TO:<one-too-many@other.example>\r\n"),
        "452 4.5.3",
    );
    expect(c.send(b"RSET\r\n"), "250");
    // A whole transaction still works after all that, and bare LF in the body is stored as CRLF.
    expect(c.send(b"MAIL FROM:<alice@smime.example>\r\n"), "250");
    expect(c.send(b"RCPT TO:<carol@other.example>\r\n"), "250");
    expect(c.send(b"DATA\r\n"), "354");
    expect(
        c.send(
            b"From: alice@smime.example\r\nSubject: t\r\n\r\nline one\nline two\r\n..dot\r\n.\r\n",
        ),
        "250",
    );
    expect(c.send(b"QUIT\r\n"), "221");
    let stored = s.messages();
    assert_eq!(stored.len(), 1);
    let text = String::from_utf8_lossy(&stored[0]);
    // smtp-sink stores lines with LF; what matters is one dot, unstuffed and re-stuffed correctly.
    assert!(
        text.contains("\nline two\n.dot\n") || text.contains("\nline two\r\n.dot\r\n"),
        "{text}"
    );
    assert!(!text.contains("..dot"), "{text}");
}
