//! The command-line tool's contract: clear errors on stderr, exit status 2 for errors, 1 for a
//! signature that does not verify, 0 for success; secret files protected.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};

const ENVELOPD: &str = env!("CARGO_BIN_EXE_envelopd");

fn run(args: &[&str], stdin: &[u8]) -> Output {
    use std::io::Write;
    let mut child = Command::new(ENVELOPD)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The tool may exit on a usage error before reading its input.
    let _ = child.stdin.take().unwrap().write_all(stdin);
    child.wait_with_output().unwrap()
}

fn copy(dir: &Path, name: &str, mode: u32) -> String {
    use std::os::unix::fs::PermissionsExt;
    let to = dir.join(name);
    std::fs::copy(common::vectors().join("rfc9216").join(name), &to).unwrap();
    std::fs::set_permissions(&to, std::fs::Permissions::from_mode(mode)).unwrap();
    to.display().to_string()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

const MAIL: &[u8] =
    b"From: alice@smime.example\r\nTo: bob@smime.example\r\nSubject: t\r\n\r\nhello\r\n";

#[test]
fn key_files_readable_by_others_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let key = copy(d.path(), "alice.sign.key", 0o644);
    let crt = copy(d.path(), "alice.sign.crt", 0o644);
    let o = run(&["smime", "sign", "--key", &key, "--cert", &crt], MAIL);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("readable by other users") && stderr(&o).contains("chmod 600"),
        "{}",
        stderr(&o)
    );
    assert!(o.stdout.is_empty());
    let o = run(
        &[
            "smime",
            "sign",
            "--key",
            &key,
            "--cert",
            &crt,
            "--allow-insecure-key-file",
        ],
        MAIL,
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

#[test]
fn wrong_or_missing_passwords_are_clear() {
    let d = tempfile::tempdir().unwrap();
    let p12 = copy(d.path(), "alice.p12", 0o600);
    let pw = d.path().join("pw");
    std::fs::write(&pw, "not-alice\n").unwrap();
    std::fs::set_permissions(&pw, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let o = run(
        &[
            "smime",
            "sign",
            "--p12",
            &p12,
            "--password-file",
            pw.to_str().unwrap(),
        ],
        MAIL,
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("wrong password"), "{}", stderr(&o));
    assert!(
        !stderr(&o).contains("not-alice"),
        "the password must never be printed"
    );
    let o = run(&["smime", "sign", "--p12", &p12], MAIL);
    assert!(stderr(&o).contains("--password-file"), "{}", stderr(&o));
    let o = Command::new(ENVELOPD)
        .args([
            "smime",
            "sign",
            "--p12",
            &p12,
            "--password-env",
            "ENVELOPD_TEST_PW",
        ])
        .env("ENVELOPD_TEST_PW", "alice")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

#[test]
fn usage_errors_name_the_problem() {
    let d = tempfile::tempdir().unwrap();
    let crt = copy(d.path(), "bob.encrypt.crt", 0o644);
    let o = run(&["smime", "encrypt", "--to", &crt, "--cipher", "rc2"], MAIL);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("unknown --cipher"), "{}", stderr(&o));
    let o = run(&["smime", "encrypt", "--to", "/nonexistent/bob.crt"], MAIL);
    assert!(
        stderr(&o).contains("/nonexistent/bob.crt"),
        "{}",
        stderr(&o)
    );
    let ca = copy(d.path(), "ca.rsa.crt", 0o644);
    let o = run(&["smime", "verify", "--ca", &ca, "--at", "tomorrow"], MAIL);
    assert!(stderr(&o).contains("--at must look like"), "{}", stderr(&o));
    let o = run(&["smime", "verify", "--ca", &ca], MAIL);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("not S/MIME signed"), "{}", stderr(&o));
    let key = copy(d.path(), "bob.encrypt.key", 0o600);
    let o = run(&["smime", "decrypt", "--key", &key, "--cert", &crt], MAIL);
    assert!(
        stderr(&o).contains("not S/MIME encrypted"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn verify_exit_status_follows_validity() {
    let d = tempfile::tempdir().unwrap();
    let key = copy(d.path(), "alice.sign.key", 0o600);
    let crt = copy(d.path(), "alice.sign.crt", 0o644);
    let ca = copy(d.path(), "ca.rsa.crt", 0o644);
    let signed = run(&["smime", "sign", "--key", &key, "--cert", &crt], MAIL).stdout;
    let o = run(&["smime", "verify", "--ca", &ca], &signed);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let status: serde_json::Value = serde_json::from_str(stderr(&o).trim()).unwrap();
    assert_eq!(status["valid"], true);
    assert_eq!(status["signers"][0]["addresses"][0], "alice@smime.example");
    assert!(o.stdout.ends_with(b"hello\r\n"));
    // After the certificate expired (2052): exit 1 and the reason.
    let o = run(
        &[
            "smime",
            "verify",
            "--ca",
            &ca,
            "--at",
            "2060-01-01T00:00:00Z",
        ],
        &signed,
    );
    assert_eq!(o.status.code(), Some(1));
    let status: serde_json::Value = serde_json::from_str(stderr(&o).trim()).unwrap();
    assert_eq!(status["signature"], "invalid", "{status}");
    assert!(
        status["reason"].as_str().unwrap().contains("expired"),
        "{status}"
    );
    // The signature itself is fine; the certificate's time is over.
    assert_eq!(status["signers"][0]["signature_ok"], true, "{status}");
    // Trusting another CA: exit 1.
    let other = copy(d.path(), "ca.25519.crt", 0o644);
    let o = run(&["smime", "verify", "--ca", &other], &signed);
    assert_eq!(o.status.code(), Some(1));
    // A signature that cannot be read at all is invalid (exit 1), as the reading sides show it,
    // not an error of the tool.
    let damaged = b"From: alice@smime.example\r\nContent-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; micalg=sha-256; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n--b\r\nContent-Type: application/pkcs7-signature\r\nContent-Transfer-Encoding: base64\r\n\r\nMAMCAQA=\r\n--b--\r\n";
    let o = run(&["smime", "verify", "--ca", &ca], damaged);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let status: serde_json::Value = serde_json::from_str(stderr(&o).trim()).unwrap();
    assert_eq!(status["signature"], "invalid", "{status}");
    assert!(
        status["reason"].as_str().unwrap().contains("malformed"),
        "{status}"
    );
}

/// `sign --encrypt-to` signs and encrypts in one pass: OpenSSL decrypts it and verifies the
/// signature over the original text; from a file (read with room to work in place) as from
/// stdin; `--cipher` alone is a usage error.
#[test]
fn sign_with_encrypt_to_is_opened_and_verified_by_openssl() {
    let d = tempfile::tempdir().unwrap();
    let key = copy(d.path(), "alice.sign.key", 0o600);
    let crt = copy(d.path(), "alice.sign.crt", 0o644);
    let bob_key = copy(d.path(), "bob.encrypt.key", 0o600);
    let bob = copy(d.path(), "bob.encrypt.crt", 0o644);
    let ca = copy(d.path(), "ca.rsa.crt", 0o644);
    let input = d.path().join("mail.eml");
    std::fs::write(&input, MAIL).unwrap();
    let sign = [
        "smime",
        "sign",
        "--key",
        &key,
        "--cert",
        &crt,
        "--encrypt-to",
        &bob,
    ];
    for (from_file, cipher) in [(true, "aes256-gcm"), (false, "aes256-cbc")] {
        let mut args = sign.to_vec();
        args.extend(["--cipher", cipher]);
        let input = input.display().to_string();
        if from_file {
            args.extend(["--in", &input]);
        }
        let o = run(&args, if from_file { b"" } else { MAIL });
        assert!(o.status.success(), "{}", stderr(&o));
        let text = String::from_utf8_lossy(&o.stdout).to_string();
        let smime_type = if cipher.ends_with("gcm") {
            "authEnveloped-data"
        } else {
            "enveloped-data"
        };
        assert!(text.contains(&format!("smime-type={smime_type}")), "{text}");
        assert!(text.starts_with("From: alice@smime.example\r\n") && !text.contains("hello"));
        let open = |args: &[&str], input: &[u8]| {
            testkit::openssl_pipe(args, input).unwrap_or_else(|e| panic!("openssl {args:?}: {e}"))
        };
        let signed = open(
            &["cms", "-decrypt", "-inkey", &bob_key, "-recip", &bob],
            &o.stdout,
        );
        let content = open(&["cms", "-verify", "-CAfile", &ca], &signed);
        assert!(
            content.ends_with(b"hello\r\n"),
            "{}",
            String::from_utf8_lossy(&content)
        );
    }
    // The signing arguments without --encrypt-to, plus --cipher.
    let cipher_alone = [&sign[..6], &["--cipher", "aes256-cbc"]].concat();
    let o = run(&cipher_alone, MAIL);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--encrypt-to"), "{}", stderr(&o));
}
