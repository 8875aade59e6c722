//! Helpers of the reading-side system tests: an envelopd for one practice in front of the
//! test provider, sending through it, and reading header fields of what comes back.

use std::process::Command;

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
