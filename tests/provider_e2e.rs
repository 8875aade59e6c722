//! End to end against a real provider: Postfix (submission with STARTTLS + AUTH, SMTPS + AUTH,
//! AUTH without TLS on loopback) and Dovecot (its SASL checks the passwords), started by
//! `scripts/mailserver.sh`. Real clients (swaks, curl, Python smtplib, msmtp) send through
//! `envelopd run`; the copy Postfix delivered into Bob's Maildir is opened with `openssl cms`,
//! `gpgsm` and NSS `cmsutil`: encrypted to Bob and to Alice's Sent-copy key, signed by Alice,
//! and the body byte-exact.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::lab::{ok, run, Lab};
use common::provider::Provider;
use testkit::procs::{free_port, lan_address, wait_for, Proc};

/// The body every client sends; canonical text, so "byte-exact" means exactly these bytes.
const BODY: &str = "Befund Herr Muster: unauffaellig.\r\nKontrolle in 6 Monaten.\r\n";

/// envelopd in front of one of the provider's ports.
struct Envelopd {
    dir: tempfile::TempDir,
    listen: u16,
    _proc: Proc,
}

impl Envelopd {
    fn start(provider: &Provider, tls: &str, port: u16, extra: &str) -> Envelopd {
        Envelopd::start_on(provider, "127.0.0.1", tls, port, extra)
    }

    /// Listening on `ip`, with `extra` lines for the `[smtp]` section.
    fn start_on(provider: &Provider, ip: &str, tls: &str, port: u16, extra: &str) -> Envelopd {
        Envelopd::start_full(provider, ip, tls, port, extra, "")
    }

    /// Also with `policy` lines for the `[policy]` section (whose fallback is `refuse`).
    fn start_full(
        provider: &Provider,
        ip: &str,
        tls: &str,
        port: u16,
        extra: &str,
        policy: &str,
    ) -> Envelopd {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        common::practice_dir(d, "alice", &[]);
        let listen = free_port();
        std::fs::write(
            d.join("proxy.toml"),
            format!(
                "[smtp]\nlisten = \"{ip}:{listen}\"\n{extra}\n\
                 [upstream.smtp]\nhost = \"localhost\"\nport = {port}\ntls = \"{tls}\"\nca_file = \"{}\"\nsystem_roots = false\n\
                 [certificates]\nanchors = [\"trust\"]\nrecipients = \"certs\"\n\
                 [[identity]]\naddresses = [\"alice@smime.example\"]\npkcs12 = \"keys/alice.p12\"\npassword_file = \"keys/pw\"\nencryption_cert = \"keys/alice-enc.pem\"\n\
                 [policy]\nfallback = \"refuse\"\n{policy}\n",
                provider.ca().display()
            ),
        )
        .unwrap();
        let proc = common::run_envelopd(&d.join("proxy.toml"), &d.join("envelopd.log"));
        wait_for(listen);
        Envelopd {
            dir,
            listen,
            _proc: proc,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("envelopd.log")).unwrap_or_default()
    }
}

fn message(subject: &str, from: &str) -> Vec<u8> {
    format!(
        "From: {from}\r\nTo: Bob <bob@smime.example>\r\nSubject: {subject}\r\nMessage-ID: <{subject}@praxis.test>\r\n\r\n{BODY}"
    )
    .into_bytes()
}

fn transcript(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr)
}

/// Sends `msg` through envelopd with one of the real clients, logging in as `user`.
fn send(client: &str, port: u16, user: &str, password: &str, msg: &[u8]) -> Output {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("msg.eml");
    std::fs::write(&file, msg).unwrap();
    let file = file.to_str().unwrap();
    let server = format!("127.0.0.1:{port}");
    match client {
        "swaks" => Command::new("swaks")
            .args(["--server", &server, "--auth", "PLAIN", "--auth-user", user])
            .args(["--auth-password", password, "--from", "alice@smime.example"])
            .args([
                "--to",
                "bob@smime.example",
                "--data",
                &format!("@{file}"),
                "--timeout",
                "60",
            ])
            .output()
            .expect("swaks is installed"),
        "curl" => Command::new("curl")
            .args(["-sS", &format!("smtp://{server}"), "--user"])
            .arg(format!("{user}:{password}"))
            .args(["--mail-from", "alice@smime.example"])
            .args(["--mail-rcpt", "bob@smime.example", "-T", file])
            .output()
            .expect("curl is installed"),
        "smtplib" => {
            let script = format!(
                "import smtplib,sys\n\
                 s=smtplib.SMTP('127.0.0.1',{port},timeout=60)\n\
                 s.ehlo(); s.login(sys.argv[1], sys.argv[2])\n\
                 s.sendmail('alice@smime.example',['bob@smime.example'],open(sys.argv[3],'rb').read())\n\
                 s.quit()\n"
            );
            Command::new("python3")
                .args(["-c", &script, user, password, file])
                .output()
                .expect("python3 is installed")
        }
        "msmtp" => {
            // AUTH LOGIN this time; msmtp reads the password from a command, never argv.
            let pw = tmp.path().join("pw");
            std::fs::write(&pw, password).unwrap();
            Command::new("msmtp")
                .args([
                    "--host=127.0.0.1",
                    &format!("--port={port}"),
                    "--auth=login",
                    &format!("--user={user}"),
                    &format!("--passwordeval=cat {}", pw.display()),
                    "--tls=off",
                    "--from=alice@smime.example",
                    "bob@smime.example",
                ])
                .stdin(std::fs::File::open(file).unwrap())
                .output()
                .expect("msmtp is installed")
        }
        other => panic!("unknown client {other}"),
    }
}

/// The content Bob reads: decrypted with `key`, verified against the RFC 9216 CA by OpenSSL.
fn openssl_open(stored: &[u8], key: &str) -> Result<Vec<u8>, String> {
    let v = common::rfc9216();
    let signed = testkit::openssl_pipe(
        &["cms", "-decrypt", "-inkey", v.join(key).to_str().unwrap()],
        stored,
    )?;
    testkit::openssl_pipe(
        &[
            "cms",
            "-verify",
            "-CAfile",
            v.join("ca.rsa.crt").to_str().unwrap(),
        ],
        &signed,
    )
}

/// The body of a MIME entity (after the first empty line).
fn body(entity: &[u8]) -> &[u8] {
    smime::mime::split(entity).body
}

#[test]
fn real_clients_through_envelopd_to_postfix_in_every_tls_mode() {
    let provider = Provider::start();
    let lab = Lab::new();
    let mut sent = 0;
    for (mode, port) in [
        ("starttls", provider.submission),
        ("implicit", provider.smtps),
        ("none", provider.plain),
    ] {
        let e = Envelopd::start(&provider, mode, port, "");
        for client in ["swaks", "curl", "smtplib", "msmtp"] {
            let subject = format!("{client}-{mode}");
            let msg = message(&subject, "Alice <alice@smime.example>");
            let o = send(client, e.listen, "alice@smime.example", "alice-pw", &msg);
            assert!(
                o.status.success(),
                "{client} via {mode}: {}\n{}",
                transcript(&o),
                e.log()
            );
            sent += 1;
            let stored = provider.wait_messages("bob", sent);
            assert_eq!(stored.len(), sent, "{}", provider.postfix_log());
            let copy = stored.last().unwrap();
            let text = String::from_utf8_lossy(copy);
            assert!(
                text.contains("smime-type=enveloped-data") && !text.contains("unauffaellig"),
                "{client} via {mode}: the provider must hold only ciphertext"
            );
            assert!(
                text.contains("Subject: "),
                "outer headers stay readable for the mailbox"
            );
            for key in ["bob.encrypt.key", "alice.encrypt.key"] {
                let content = openssl_open(copy, key)
                    .unwrap_or_else(|err| panic!("{client} via {mode}, {key}: {err}"));
                // swaks always ends the data with an empty line of its own (it does so straight to
                // smtp-sink too); every other client sends the file as it is.
                let want = if client == "swaks" {
                    format!("{BODY}\r\n")
                } else {
                    BODY.to_string()
                };
                assert_eq!(
                    String::from_utf8_lossy(body(&content)),
                    want,
                    "{client} via {mode}: the body must arrive byte-exact"
                );
            }
        }
        // The stored copy of this mode also opens in gpgsm and NSS (Thunderbird's engine).
        let copy = provider.wait_messages("bob", sent).pop().unwrap();
        let der = lab.write(
            &format!("stored-{mode}.p7m"),
            &smime::mime::base64_decode(body(&copy)).unwrap(),
        );
        let o = lab.gpgsm(&["--passphrase-fd", "0", "--decrypt", &der], Some(b"x\n"));
        let inner = ok(&o, "gpgsm --decrypt").unwrap_or_else(|e| panic!("{mode}: {e}"));
        assert!(
            String::from_utf8_lossy(&inner).contains("multipart/signed"),
            "gpgsm finds the signed message inside"
        );
        let o = run(
            "cmsutil",
            &["-D", "-i", &der, "-d", &lab.nss_bob],
            None,
            &[],
        );
        let inner = ok(&o, "cmsutil -D").unwrap_or_else(|e| panic!("{mode}: {e}"));
        let (content, _sig) = common::lab::split_signed(&inner);
        assert_eq!(String::from_utf8_lossy(body(&content)), BODY);
        assert!(
            lab.nss_verify(&inner).contains("GoodSignature"),
            "NSS verifies Alice's signature"
        );
    }
    // Postfix offers CHUNKING, so envelopd hands it every message as one BDAT chunk (no wait for
    // a 354, no dot-stuffing); the byte-exact bodies above were stored that way. Postfix's log
    // counts each session's commands when it ends.
    let log = provider.postfix_log();
    let sessions: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("disconnect from") && l.contains(" mail="))
        .collect();
    assert_eq!(sessions.len(), sent, "{log}");
    assert!(
        sessions
            .iter()
            .all(|l| l.contains(" bdat=1") && !l.contains(" data=")),
        "{sessions:#?}"
    );
}

#[test]
fn postfix_refusing_the_chunk_is_what_the_client_hears_and_the_session_goes_on() {
    // Postfix judges the message only once it has all of it (here a header check, as a
    // provider's content filter would): the refusal comes as the reply to BDAT LAST. The client
    // must hear exactly that, and the same session must still deliver its next message (envelopd
    // resets the provider's transaction after a refused chunk).
    let provider = Provider::start();
    provider.configure_postfix(
        &[(
            "header_checks",
            "/^Message-ID: <refuse-me@/ REJECT 5.7.1 content filter says no\n",
        )],
        &["header_checks = regexp:{conf}/header_checks"],
    );
    let e = Envelopd::start(&provider, "starttls", provider.submission, "");
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("refused.eml"),
        message("refuse-me", "alice@smime.example"),
    )
    .unwrap();
    std::fs::write(
        tmp.path().join("fine.eml"),
        message("fine", "alice@smime.example"),
    )
    .unwrap();
    let script = format!(
        "import smtplib,sys\n\
         s=smtplib.SMTP('127.0.0.1',{},timeout=60)\n\
         s.ehlo(); s.login('alice@smime.example','alice-pw')\n\
         for name in sys.argv[1:]:\n\
         \x20   try:\n\
         \x20       s.sendmail('alice@smime.example',['bob@smime.example'],open(name,'rb').read()); print('accepted')\n\
         \x20   except smtplib.SMTPDataError as e:\n\
         \x20       print('refused', e.smtp_code, e.smtp_error.decode())\n\
         s.quit()\n",
        e.listen
    );
    let o = Command::new("python3")
        .args(["-c", &script])
        .arg(tmp.path().join("refused.eml"))
        .arg(tmp.path().join("fine.eml"))
        .output()
        .unwrap();
    let out = transcript(&o);
    assert!(o.status.success(), "{out}\n{}", e.log());
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(
        lines[0].starts_with("refused 550 5.7.1") && lines[0].contains("content filter says no"),
        "{out}"
    );
    assert_eq!(lines[1], "accepted", "{out}\n{}", e.log());
    let stored = provider.wait_messages("bob", 1);
    assert_eq!(stored.len(), 1);
    assert!(String::from_utf8_lossy(&stored[0]).contains("<fine@praxis.test>"));
    assert!(e.log().contains("reply=550"), "{}", e.log());
    let log = provider.postfix_log();
    assert!(
        provider.postfix_session_ended_with(" bdat=1/2"),
        "one of two chunks refused, both sent as BDAT: {log}"
    );
}

#[test]
fn delivery_status_notifications_come_from_the_provider_for_each_copy() {
    // A practice asks for proof of delivery (Outlook's delivery receipt is a DSN request). The
    // provider is the one that delivers, so envelopd offers DSN when Postfix does and passes
    // RET/ENVID and each recipient's NOTIFY/ORCPT on, also into the separately encrypted copy
    // of a Bcc recipient.
    let provider = Provider::start();
    let e = Envelopd::start(&provider, "starttls", provider.submission, "");
    let tmp = tempfile::tempdir().unwrap();
    let mut msg = b"Bcc: bob@smime.example\r\n".to_vec();
    msg.extend(message("receipt", "alice@smime.example"));
    let msg = String::from_utf8(msg)
        .unwrap()
        .replace("To: Bob <bob@smime.example>", "To: alice@smime.example");
    std::fs::write(tmp.path().join("m.eml"), msg).unwrap();
    let script = format!(
        "import smtplib,sys\n\
         s=smtplib.SMTP('127.0.0.1',{},timeout=60)\n\
         s.ehlo(); print('dsn offered', s.has_extn('dsn'))\n\
         s.login('alice@smime.example','alice-pw')\n\
         s.mail('alice@smime.example', ['RET=HDRS', 'ENVID=befund+2B4711'])\n\
         print(s.rcpt('alice@smime.example', ['NOTIFY=NEVER'])[0])\n\
         print(s.rcpt('bob@smime.example', ['NOTIFY=SUCCESS,FAILURE', 'ORCPT=rfc822;Bob+20Muster@smime.example'])[0])\n\
         print(s.data(open(sys.argv[1],'rb').read())[0])\n\
         s.quit()\n",
        e.listen
    );
    let o = Command::new("python3")
        .args(["-c", &script])
        .arg(tmp.path().join("m.eml"))
        .output()
        .unwrap();
    let out = transcript(&o);
    assert!(o.status.success(), "{out}\n{}", e.log());
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["dsn offered True", "250", "250", "250"],
        "{out}"
    );
    // Both copies arrive (Bob's in its own transaction) …
    assert_eq!(provider.wait_messages("bob", 1).len(), 1);
    // … and Alice gets Postfix's report for Bob only: her own copy asked for none.
    let reports = provider.wait_messages("alice", 2);
    let reports: Vec<String> = reports
        .iter()
        .map(|m| String::from_utf8_lossy(m).to_string())
        .filter(|m| m.contains("message/delivery-status"))
        .collect();
    assert_eq!(reports.len(), 1, "{reports:#?}\n{}", provider.postfix_log());
    let r = &reports[0];
    for want in [
        // Postfix shows the values decoded: the xtext went through envelopd intact.
        "Original-Envelope-Id: befund+4711",
        "Original-Recipient: rfc822;Bob Muster@smime.example",
        "Final-Recipient: rfc822; bob@smime.example",
        "Action: delivered",
    ] {
        assert!(r.contains(want), "{want} missing in\n{r}");
    }
    // RET=HDRS: the report quotes only the stored copy's headers.
    assert!(r.contains("text/rfc822-headers"), "{r}");
}

#[test]
fn pipelined_recipients_each_get_postfix_s_own_answer_in_order() {
    // A pipelining client's RCPTs go to Postfix in one write; Postfix refuses the unknown one
    // in the middle, and each reply must reach the client in the order of its RCPT.
    let provider = Provider::start();
    let e = Envelopd::start(&provider, "starttls", provider.submission, "");
    let o = Command::new("swaks")
        .args(["--server", &format!("127.0.0.1:{}", e.listen), "--pipeline"])
        .args(["--auth", "PLAIN", "--auth-user", "alice@smime.example"])
        .args([
            "--auth-password",
            "alice-pw",
            "--from",
            "alice@smime.example",
        ])
        .args([
            "--to",
            "bob@smime.example,nobody@smime.example,alice@smime.example",
        ])
        .args(["--header", "From: alice@smime.example", "--body", BODY])
        .output()
        .unwrap();
    let t = transcript(&o);
    let replies: Vec<&str> = t
        .lines()
        .filter(|l| l.starts_with("<- ") || l.starts_with("<**"))
        .filter(|l| l.contains(" 2.1.5 ") || l.contains(" 5.1.1 "))
        .collect();
    assert_eq!(replies.len(), 3, "{t}");
    assert!(replies[0].starts_with("<-  250"), "{t}");
    assert!(
        replies[1].starts_with("<** 550") && replies[1].contains("nobody@smime.example"),
        "{t}"
    );
    assert!(replies[2].starts_with("<-  250"), "{t}");
    assert!(
        t.lines()
            .any(|l| l.starts_with("<-  250 2.0.0 Ok: ") && l.contains(" queued as ")),
        "{t}\n{}",
        e.log()
    );
    assert_eq!(provider.wait_messages("bob", 1).len(), 1);
    assert_eq!(provider.wait_messages("alice", 1).len(), 1);
    let log = provider.postfix_log();
    assert!(provider.postfix_session_ended_with(" rcpt=2/3"), "{log}");
}

#[test]
fn a_pipelined_envelope_goes_to_postfix_in_one_write_and_its_refused_mail_takes_the_recipients_with_it(
) {
    // A client writing MAIL, its RCPTs and DATA at once: envelopd passes
    // MAIL and the RCPTs on in one write, so the envelope costs one round trip to the provider.
    // Postfix here refuses one sender already at MAIL (smtpd_delay_reject = no, a sender
    // check): the client hears Postfix's refusal for MAIL and Postfix's own "need MAIL" for
    // each RCPT, DATA is refused, nothing is delivered; the same session then sends as Alice.
    let provider = Provider::start();
    provider.configure_postfix(
        &[(
            "senders",
            "/^refused@smime\\.example$/ REJECT 5.7.1 sender blocked by the provider\n",
        )],
        &[
            "smtpd_delay_reject = no",
            "smtpd_sender_restrictions = check_sender_access regexp:{conf}/senders",
        ],
    );
    let e = Envelopd::start(&provider, "starttls", provider.submission, "");
    let script = format!(
        "import smtplib\n\
         s = smtplib.SMTP('127.0.0.1', {}, timeout=30)\n\
         s.ehlo(); s.login('alice@smime.example', 'alice-pw')\n\
         def envelope(sender):\n    \
             s.sock.sendall(b'MAIL FROM:<' + sender + b'>\\r\\nRCPT TO:<bob@smime.example>\\r\\n'\n        \
                            b'RCPT TO:<alice@smime.example>\\r\\nDATA\\r\\n')\n    \
             for _ in range(4):\n        \
                 code, text = s.getreply(); print(code, text.decode())\n\
         envelope(b'refused@smime.example')\n\
         envelope(b'alice@smime.example')\n\
         s.sock.sendall(b'From: alice@smime.example\\r\\nTo: bob@smime.example, alice@smime.example\\r\\nSubject: x\\r\\n\\r\\nBefund\\r\\n.\\r\\n')\n\
         code, text = s.getreply(); print(code, text.decode())\n\
         s.quit()\n",
        e.listen
    );
    let o = Command::new("python3")
        .args(["-c", &script])
        .output()
        .unwrap();
    let out = transcript(&o);
    assert!(o.status.success(), "{out}\n{}", e.log());
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 9, "{out}");
    assert!(
        lines[0].starts_with("554 5.7.1") && lines[0].contains("sender blocked by the provider"),
        "{out}"
    );
    for l in &lines[1..3] {
        assert!(l.starts_with("503 5.5.1 Error: need MAIL command"), "{out}");
    }
    assert!(lines[3].starts_with("503 "), "{out}");
    // Alice's envelope: MAIL and both RCPTs accepted, 354; then Postfix's 250 for the message.
    assert_eq!(
        lines[4..8].iter().map(|l| &l[..3]).collect::<Vec<_>>(),
        ["250", "250", "250", "354"],
        "{out}"
    );
    assert!(
        lines[8].starts_with("250 2.0.0 Ok: ") && lines[8].contains(" queued as "),
        "{out}"
    );
    assert_eq!(provider.wait_messages("bob", 1).len(), 1);
    assert_eq!(provider.wait_messages("alice", 1).len(), 1);
    let log = provider.postfix_log();
    assert!(log.contains("sender blocked by the provider"), "{log}");
    // Postfix's own count for the session: two MAILs (one refused) and four RCPTs (two
    // refused): the refused MAIL's RCPTs reached Postfix, i.e. they went in the same write,
    // before its answer (sent one by one, envelopd would have answered them itself).
    assert!(
        provider.postfix_session_ended_with(" mail=1/2 rcpt=2/4"),
        "{log}"
    );
}

#[test]
fn logins_are_checked_by_the_provider_and_decide_which_key_signs() {
    let provider = Provider::start();
    let e = Envelopd::start(&provider, "starttls", provider.submission, "");
    // A wrong password: the provider's 535 reaches the client; nothing is sent.
    let msg = message("wrong-password", "Alice <alice@smime.example>");
    let o = send("swaks", e.listen, "alice@smime.example", "guess", &msg);
    assert!(!o.status.success());
    assert!(transcript(&o).contains("535"), "{}", transcript(&o));
    assert!(
        !e.log().contains("guess"),
        "a password must never reach the log"
    );
    // Enforcement (fallback = "refuse" makes foreign senders refused by default): Bob logs in
    // correctly but gives Alice as envelope sender: 550 at MAIL, before anything is sent.
    let msg = message("bob-as-alice", "Alice <alice@smime.example>");
    let o = send("swaks", e.listen, "bob@smime.example", "bob-pw", &msg);
    assert!(!o.status.success());
    let t = transcript(&o);
    assert!(
        t.contains("550 5.7.1") && t.contains("may not send as alice@smime.example"),
        "{t}"
    );
    // … and with his own envelope sender but "From: Alice" in the header: 550 after the data.
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("m.eml"), &msg).unwrap();
    let o = Command::new("swaks")
        .args(["--server", &format!("127.0.0.1:{}", e.listen)])
        .args(["--auth", "PLAIN", "--auth-user", "bob@smime.example"])
        .args(["--auth-password", "bob-pw", "--from", "bob@smime.example"])
        .args(["--to", "bob@smime.example", "--data"])
        .arg(format!("@{}", tmp.path().join("m.eml").display()))
        .output()
        .unwrap();
    let t = transcript(&o);
    assert!(!o.status.success(), "{t}");
    assert!(t.contains("<** 550 5.7.1"), "{t}");
    assert!(e.log().contains("decision=refused"), "{}", e.log());
    assert_eq!(provider.count("bob"), 0, "nothing refused was delivered");
    // With foreign_sender = "unsigned" the provider takes it, but envelopd must not sign with
    // Alice's key for him; the message is still encrypted to Bob.
    let e2 = Envelopd::start_full(
        &provider,
        "127.0.0.1",
        "starttls",
        provider.submission,
        "",
        "foreign_sender = \"unsigned\"",
    );
    let o = send("swaks", e2.listen, "bob@smime.example", "bob-pw", &msg);
    assert!(o.status.success(), "{}", transcript(&o));
    let stored = provider.wait_messages("bob", 1);
    assert_eq!(stored.len(), 1);
    let v = common::rfc9216();
    let inner = testkit::openssl_pipe(
        &[
            "cms",
            "-decrypt",
            "-inkey",
            v.join("bob.encrypt.key").to_str().unwrap(),
        ],
        &stored[0],
    )
    .expect("still encrypted to Bob");
    let inner = String::from_utf8_lossy(&inner);
    assert!(
        inner.contains("unauffaellig") && !inner.contains("pkcs7-signature"),
        "Bob's session must not produce a message signed as Alice: {inner}"
    );
    assert!(e2.log().contains("not signing"), "{}", e2.log());
    // Without a login the provider refuses the recipient (its 5xx is what the client sees).
    let o = Command::new("swaks")
        .args(["--server", &format!("127.0.0.1:{}", e.listen)])
        .args(["--from", "alice@smime.example", "--to", "bob@smime.example"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(transcript(&o).contains("554 5.7.1"), "{}", transcript(&o));
    assert_eq!(provider.count("bob"), 1, "nothing else was delivered");
    assert!(!e.log().contains("bob-pw") && !e.log().contains("alice-pw"));
}

#[test]
fn a_provider_certificate_that_is_not_trusted_gets_4xx_and_nothing_is_sent() {
    let provider = Provider::start();
    // Trust only the system roots: the test provider's private CA is not among them.
    let dir = tempfile::tempdir().unwrap();
    let other_ca = dir.path().join("other-ca.pem");
    std::fs::copy(common::rfc9216().join("ca.rsa.crt"), &other_ca).unwrap();
    let e = Envelopd::start(&provider, "starttls", provider.submission, "");
    let cfg = e.dir.path().join("proxy.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    let ca_line = format!("ca_file = \"{}\"", provider.ca().display());
    std::fs::write(
        &cfg,
        text.replace(&ca_line, &format!("ca_file = \"{}\"", other_ca.display())),
    )
    .unwrap();
    drop(e._proc);
    let port = e.listen;
    let _p = common::run_envelopd(&cfg, &e.dir.path().join("envelopd2.log"));
    wait_for(port);
    let msg = message("untrusted", "Alice <alice@smime.example>");
    let o = send("swaks", port, "alice@smime.example", "alice-pw", &msg);
    assert!(!o.status.success());
    let t = transcript(&o);
    assert!(
        t.contains("454 4.7.0") || t.contains("451 4.7.0"),
        "a TLS failure is temporary for the client: {t}"
    );
    let log = std::fs::read_to_string(e.dir.path().join("envelopd2.log")).unwrap();
    assert!(
        log.contains("TLS handshake with the provider failed"),
        "{log}"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(provider.count("bob"), 0);
}

fn edges(mode: &str, host: &str, port: u16, provider: &Provider) -> Output {
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/clients/smtp_tls_edges.py");
    Command::new("python3")
        .arg(script)
        .args([mode, host, &port.to_string()])
        .arg(provider.ca())
        .args(["alice@smime.example", "alice-pw"])
        .output()
        .unwrap()
}

#[test]
fn clients_get_starttls_and_the_lan_gets_tls_and_login_or_nothing() {
    let provider = Provider::start();
    let tls_files = format!(
        "cert = \"{}\"\nkey = \"{}\"",
        provider.dir.path().join("tls/server.pem").display(),
        provider.dir.path().join("tls/server.key").display()
    );
    // On loopback: STARTTLS offered, command injection defused, garbage instead of TLS survived.
    let e = Envelopd::start(
        &provider,
        "starttls",
        provider.submission,
        &format!("tls = \"starttls\"\n{tls_files}"),
    );
    let o = edges("loopback", "127.0.0.1", e.listen, &provider);
    assert!(o.status.success(), "{}\n{}", transcript(&o), e.log());
    // On the LAN: nothing without TLS, nothing without a login the provider accepted.
    let lan = Envelopd::start_on(
        &provider,
        "0.0.0.0",
        "starttls",
        provider.submission,
        &format!("tls = \"starttls\"\n{tls_files}"),
    );
    let o = edges("lan", &lan_address(), lan.listen, &provider);
    assert!(o.status.success(), "{}\n{}", transcript(&o), lan.log());
    let stored = provider.wait_messages("bob", 1);
    assert_eq!(stored.len(), 1);
    let content = openssl_open(&stored[0], "bob.encrypt.key").unwrap();
    assert!(String::from_utf8_lossy(&content).contains("sent from another machine"));
    // Implicit TLS (SMTPS) for clients, with curl.
    let smtps = Envelopd::start(
        &provider,
        "starttls",
        provider.submission,
        &format!("tls = \"implicit\"\n{tls_files}"),
    );
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("m.eml");
    std::fs::write(
        &file,
        message("smtps-client", "Alice <alice@smime.example>"),
    )
    .unwrap();
    let o = Command::new("curl")
        .args([
            "-sS",
            &format!("smtps://localhost:{}", smtps.listen),
            "--cacert",
        ])
        .arg(provider.ca())
        .args(["--user", "alice@smime.example:alice-pw"])
        .args([
            "--mail-from",
            "alice@smime.example",
            "--mail-rcpt",
            "bob@smime.example",
            "-T",
        ])
        .arg(&file)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}\n{}", transcript(&o), smtps.log());
    let stored = provider.wait_messages("bob", 2);
    assert_eq!(stored.len(), 2);
    let content = openssl_open(&stored[1], "bob.encrypt.key").unwrap();
    assert_eq!(String::from_utf8_lossy(body(&content)), BODY);
}
