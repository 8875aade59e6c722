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
    check_with(cfg, &[])
}

/// `envelopd check` with further options (`--no-connect`): exit code and everything it printed.
fn check_with(cfg: &Path, options: &[&str]) -> (i32, String) {
    let o = Command::new(ENVELOPD)
        .arg("check")
        .args(options)
        .arg("--config")
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

/// Writes a configuration with Alice's signing key and certificate as files, her encryption
/// certificate announced, `extra` lines for the identity and `reading` sections after it.
fn key_file_setup(dir: &Path, extra: &str, reading: &str) -> PathBuf {
    std::fs::create_dir_all(dir.join("trust")).unwrap();
    std::fs::create_dir_all(dir.join("keys")).unwrap();
    let v = common::rfc9216();
    std::fs::copy(v.join("ca.rsa.crt"), dir.join("trust/ca.pem")).unwrap();
    for (from, to) in [
        ("alice.sign.key", "keys/alice-sign.key"),
        ("alice.sign.crt", "keys/alice-sign.pem"),
        ("alice.encrypt.key", "keys/alice-enc.key"),
        ("alice.encrypt.crt", "keys/alice-enc.pem"),
        ("bob.encrypt.key", "keys/bob-enc.key"),
    ] {
        std::fs::copy(v.join(from), dir.join(to)).unwrap();
        std::fs::set_permissions(dir.join(to), std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let cfg = dir.join("proxy.toml");
    std::fs::write(
        &cfg,
        format!(
            "[upstream.smtp]\nhost = \"127.0.0.1\"\nport = 25\ntls = \"none\"\n{reading}\
             [certificates]\nanchors = [\"trust\"]\n\
             [[identity]]\naddresses = [\"alice@smime.example\"]\nlogins = [\"praxis\"]\n\
             key = \"keys/alice-sign.key\"\ncert = \"keys/alice-sign.pem\"\n\
             encryption_cert = \"keys/alice-enc.pem\"\n{extra}"
        ),
    )
    .unwrap();
    cfg
}

fn check_offline(cfg: &Path) -> (i32, String) {
    check_with(cfg, &["--no-connect"])
}

/// `check` loads exactly the keys `envelopd run` loads: a separate encryption key the daemon
/// would refuse (not the key of `encryption_cert`) is a problem, not "ready"; an announced
/// encryption certificate without its key is a warning saying what will not open; and where
/// envelopd reads mail it says which keys open it for which logins.
#[test]
fn check_loads_the_keys_the_daemon_loads() {
    const READING: &str = "[imap]\nlisten = \"127.0.0.1:10143\"\n\
        [upstream.imap]\nhost = \"127.0.0.1\"\nport = 143\ntls = \"none\"\n";
    // The encryption certificate announced, its key not given: envelopd runs, but says what
    // it cannot open (Sent copies and mail encrypted to that certificate).
    let d = tempfile::tempdir().unwrap();
    let (code, out) = check_offline(&key_file_setup(d.path(), "", READING));
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("warning  identity alice@smime.example: no private key here for the encryption certificate \"CN=Alice Lovelace")
            && out.contains("cannot open them for reading"),
        "{out}"
    );
    assert!(
        out.contains("incoming mail is opened with 1 key(s)")
            && out.contains("for the logins alice@smime.example, praxis"),
        "{out}"
    );
    // Without a reading side the same warning says only a mail program could open them.
    let d = tempfile::tempdir().unwrap();
    let (code, out) = check_offline(&key_file_setup(d.path(), "", ""));
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("no private key here for the encryption certificate")
            && out.contains("only a mail program holding that key can")
            && !out.contains("incoming mail is opened"),
        "{out}"
    );

    // With its key: no warning, two keys open incoming mail.
    let d = tempfile::tempdir().unwrap();
    let cfg = key_file_setup(
        d.path(),
        "encryption_key = \"keys/alice-enc.key\"\n",
        READING,
    );
    let (code, out) = check_offline(&cfg);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("incoming mail is opened with 2 key(s)")
            && out.contains("(also signs)")
            && !out.contains("no private key here"),
        "{out}"
    );

    // Another key than the encryption certificate's: the daemon refuses to start, and `check`
    // says so (it used to load only the signing key and report "ready").
    let d = tempfile::tempdir().unwrap();
    let cfg = key_file_setup(d.path(), "encryption_key = \"keys/bob-enc.key\"\n", READING);
    let (code, out) = check_offline(&cfg);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("PROBLEM  identity alice@smime.example:") && out.contains("bob-enc.key"),
        "{out}"
    );
    let run = Command::new(ENVELOPD)
        .args(["run", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!run.status.success());
    let said = String::from_utf8_lossy(&run.stderr);
    assert!(said.contains("bob-enc.key"), "{said}");
}

/// The directory of certificates learnt from signed mail: what it holds is loaded (as the daemon
/// loads it), and a place where they cannot be saved is a warning, not silence.
#[test]
fn the_harvest_directory_is_loaded_and_must_be_writable() {
    let d = tempfile::tempdir().unwrap();
    let cfg = key_file_setup(d.path(), "encryption_key = \"keys/alice-enc.key\"\n", "");
    let with = |harvested: &str| {
        let text = std::fs::read_to_string(&cfg).unwrap().replace(
            "[certificates]\n",
            &format!("[certificates]\nharvested = \"{harvested}\"\n"),
        );
        let c = d.path().join("harvest.toml");
        std::fs::write(&c, text).unwrap();
        check_offline(&c)
    };
    std::fs::create_dir(d.path().join("learnt")).unwrap();
    std::fs::copy(
        common::rfc9216().join("bob.encrypt.crt"),
        d.path().join("learnt/bob@smime.example-1.pem"),
    )
    .unwrap();
    let (code, out) = with("learnt");
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("certificates learnt from verified signed mail: 1 kept in")
            && !out.contains("cannot be written"),
        "{out}"
    );
    assert!(
        !d.path().join("learnt/.envelopd-check.tmp").exists(),
        "check leaves nothing behind"
    );
    let (code, out) = with("not-yet/learnt");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("(created on first use)"), "{out}");
    assert!(!d.path().join("not-yet").exists(), "check creates nothing");
    // Where nobody can write (also not root): a warning naming the consequence.
    let (code, out) = with("/proc/envelopd-learnt");
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("warning  certificates.harvested = /proc/envelopd-learnt: cannot be written")
            && out.contains("forgotten at a restart"),
        "{out}"
    );
    std::fs::write(d.path().join("a-file"), "x").unwrap();
    let (_, out) = with("a-file");
    assert!(out.contains("a file, not a directory"), "{out}");
    // The CRL cache the same way.
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "[certificates]\n",
        "[certificates]\ncrl_cache = \"/proc/envelopd-crls\"\n",
    );
    let c = d.path().join("crls.toml");
    std::fs::write(&c, text).unwrap();
    let (code, out) = check_offline(&c);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("warning  certificates.crl_cache = /proc/envelopd-crls: cannot be written")
            && out.contains("fetched again after every restart"),
        "{out}"
    );
}
