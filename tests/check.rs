//! `envelopd check` on real files: a working setup is reported ready with what it found; broken
//! ones name each problem and exit 1.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

const ENVELOPD: &str = env!("CARGO_BIN_EXE_envelopd");

fn setup(dir: &Path, port: u16, pw_mode: u32) -> PathBuf {
    for sub in ["trust", "certs", "keys"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    std::fs::copy(
        common::rfc9216().join("ca.rsa.crt"),
        dir.join("trust/ca.pem"),
    )
    .unwrap();
    std::fs::copy(
        common::rfc9216().join("bob.encrypt.crt"),
        dir.join("certs/bob"),
    )
    .unwrap();
    std::fs::write(dir.join("certs/README"), "not a certificate").unwrap();
    std::fs::copy(
        common::rfc9216().join("alice.p12"),
        dir.join("keys/alice.p12"),
    )
    .unwrap();
    std::fs::copy(
        common::rfc9216().join("alice.encrypt.crt"),
        dir.join("keys/alice-enc.pem"),
    )
    .unwrap();
    std::fs::write(dir.join("keys/alice.pass"), "alice\n").unwrap();
    for f in ["keys/alice.p12", "keys/alice.pass"] {
        std::fs::set_permissions(dir.join(f), std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    std::fs::set_permissions(
        dir.join("keys/alice.pass"),
        std::fs::Permissions::from_mode(pw_mode),
    )
    .unwrap();
    let cfg = dir.join("proxy.toml");
    std::fs::write(
        &cfg,
        format!(
            "[upstream.smtp]\nhost = \"127.0.0.1\"\nport = {port}\ntls = \"none\"\n\
             [certificates]\nanchors = [\"trust\"]\nrecipients = \"certs\"\n\
             [[identity]]\naddresses = [\"alice@smime.example\"]\npkcs12 = \"keys/alice.p12\"\n\
             password_file = \"keys/alice.pass\"\nencryption_cert = \"keys/alice-enc.pem\"\n\
             [policy]\nfallback = \"refuse\"\n"
        ),
    )
    .unwrap();
    cfg
}

fn check(cfg: &Path) -> (i32, String) {
    let o = Command::new(ENVELOPD)
        .args(["check", "--config"])
        .arg(cfg)
        .output()
        .unwrap();
    (
        o.status.code().unwrap(),
        String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr),
    )
}

#[test]
fn a_working_setup_is_reported_ready() {
    let d = tempfile::tempdir().unwrap();
    let sink_dir = tempfile::tempdir().unwrap();
    let port = testkit::procs::free_port();
    let _sink = testkit::procs::smtp_sink(sink_dir.path(), port, &["-h", "sink.test"]);
    let cfg = setup(d.path(), port, 0o600);
    let (code, out) = check(&cfg);
    assert_eq!(code, 0, "{out}");
    for want in [
        "ok       mail programs send through 127.0.0.1:10587",
        "reachable",
        "sends delivery receipts on request (DSN)",
        "trust anchors: 1 CA certificate(s)",
        "recipient certificates: 1 loaded",
        "skipped",
        "README",
        "1 recipient certificate(s) valid for encryption today",
        "identity alice@smime.example: RSA-2048 key, certificate \"CN=Alice Lovelace",
        "can sign",
        "Sent copies are encrypted",
        "refuse it (550 5.7.1",
        "result: ready",
    ] {
        assert!(out.contains(want), "{want:?} missing in:\n{out}");
    }
    assert!(
        !out.contains("alice\n"),
        "the password must never be printed"
    );
    // A provider without DSN: still ready, and the check says what that means for receipts.
    let d2 = tempfile::tempdir().unwrap();
    let port2 = testkit::procs::free_port();
    let _sink2 = testkit::procs::smtp_sink(sink_dir.path(), port2, &["-N"]);
    let (code, out) = check(&setup(d2.path(), port2, 0o600));
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("sends no delivery receipts (no DSN)") && !out.contains("on request (DSN)"),
        "{out}"
    );
}

#[test]
fn problems_are_named_and_fail_the_check() {
    let d = tempfile::tempdir().unwrap();
    // A port nobody listens on, and a password file others can read.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let cfg = setup(d.path(), port, 0o644);
    let (code, out) = check(&cfg);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("PROBLEM  provider 127.0.0.1:") && out.contains("not reachable"),
        "{out}"
    );
    assert!(
        out.contains("PROBLEM  identity alice@smime.example") && out.contains("chmod 600"),
        "{out}"
    );
    assert!(out.contains("problem(s) to fix"), "{out}");

    std::fs::write(
        &cfg,
        "[upstream.smtp]\nhost = \"mail.example.org\"\ntls = \"none\"\n",
    )
    .unwrap();
    let (code, out) = check(&cfg);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("only allowed to a server on this machine"),
        "{out}"
    );
}

fn explain(cfg: &Path, args: &[&str]) -> (i32, String) {
    let o = Command::new(ENVELOPD)
        .args(["explain", "--config"])
        .arg(cfg)
        .args(args)
        .output()
        .unwrap();
    (
        o.status.code().unwrap(),
        String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr),
    )
}

#[test]
fn explain_says_per_recipient_what_would_happen_and_why() {
    let d = tempfile::tempdir().unwrap();
    let cfg = setup(d.path(), 1, 0o600);
    // Policy "refuse": Carol has no certificate, so the whole message would be refused.
    let (code, out) = explain(
        &cfg,
        &[
            "--from",
            "alice@smime.example",
            "--to",
            "bob@smime.example",
            "--to",
            "carol@other.example",
        ],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("refused: 550 5.7.1"), "{out}");
    assert!(
        out.contains(
            "carol@other.example: no certificate for carol@other.example (policy 'refuse')"
        ),
        "{out}"
    );
    // Policy "plaintext": Bob encrypted, Carol in plaintext, each with the reason; a Bcc
    // recipient gets a copy of their own.
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("fallback = \"refuse\"", "fallback = \"split\"");
    std::fs::write(&cfg, text).unwrap();
    let (code, out) = explain(
        &cfg,
        &[
            "--from",
            "alice@smime.example",
            "--to",
            "carol@other.example",
            "--bcc",
            "bob@smime.example",
        ],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("signed as alice@smime.example"), "{out}");
    assert!(
        out.contains("bob@smime.example: encrypted with AES-256-CBC"),
        "{out}"
    );
    assert!(out.contains("a copy of its own: Bcc"), "{out}");
    assert!(
        out.contains("carol@other.example: no certificate → plaintext under policy 'split'"),
        "{out}"
    );
    // Policy "plaintext": the whole message goes unencrypted, and Bob's line says why.
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("fallback = \"split\"", "fallback = \"plaintext\"");
    std::fs::write(&cfg, text).unwrap();
    let (_, out) = explain(
        &cfg,
        &[
            "--from",
            "alice@smime.example",
            "--to",
            "carol@other.example",
            "--to",
            "bob@smime.example",
        ],
    );
    assert!(out.contains("bob@smime.example: certificate valid, but not every recipient has one → plaintext under policy 'plaintext'"), "{out}");
    let (_, json) = explain(
        &cfg,
        &[
            "--from",
            "alice@smime.example",
            "--to",
            "bob@smime.example",
            "--json",
        ],
    );
    let v: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(v["outcome"], "delivered");
    assert_eq!(v["recipients"][0]["outcome"], "encrypted");
    // Without a recipient there is nothing to explain.
    let (code, out) = explain(&cfg, &["--from", "alice@smime.example"]);
    assert_ne!(code, 0);
    assert!(out.contains("name at least one recipient"), "{out}");
}

/// An identity written in another case than its certificate states the address (`ALICE@…`
/// against `alice@…`, as NSS's and older CAs' certificates often differ) is the same mailbox
/// under the one address rule: `check` accepts it as the daemon and `smime verify` do.
#[test]
fn an_identity_in_another_case_is_the_same_mailbox() {
    let d = tempfile::tempdir().unwrap();
    let sink_dir = tempfile::tempdir().unwrap();
    let port = testkit::procs::free_port();
    let _sink = testkit::procs::smtp_sink(sink_dir.path(), port, &[]);
    let cfg = setup(d.path(), port, 0o600);
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("\"alice@smime.example\"", "\"ALICE@Smime.Example\"");
    std::fs::write(&cfg, text).unwrap();
    let (code, out) = check(&cfg);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("identity ALICE@Smime.Example: RSA-2048 key") && out.contains("can sign"),
        "{out}"
    );
}
