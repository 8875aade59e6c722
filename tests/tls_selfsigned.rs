//! `envelopd tls selfsigned`: the certificate it makes serves a LAN listener (SMTPS and IMAPS
//! here), verifies in `openssl s_client` against itself for the names given, the key is private,
//! and nothing is overwritten.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};

use testkit::procs::{free_port, wait_for};

fn s_client(port: u16, ca: &std::path::Path, name: &str) -> String {
    let mut c = Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
        .args(["-verify_hostname", name, "-CAfile"])
        .arg(ca)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(c.stdin.take());
    let o = c.wait_with_output().unwrap();
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn a_selfsigned_certificate_serves_the_listeners() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let o = Command::new(env!("CARGO_BIN_EXE_envelopd"))
        .current_dir(d)
        .args([
            "tls",
            "selfsigned",
            "--name",
            "praxis-server.local",
            "--name",
            "127.0.0.1",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("SHA-256 fingerprint") && out.contains("tls = \"starttls\""),
        "{out}"
    );
    let key_mode = std::fs::metadata(d.join("tls/envelopd.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(key_mode & 0o777, 0o600);
    // Run again: refused, the key stays as it was.
    let before = std::fs::read(d.join("tls/envelopd.key")).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_envelopd"))
        .current_dir(d)
        .args(["tls", "selfsigned", "--name", "x"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("not overwritten"));
    assert_eq!(std::fs::read(d.join("tls/envelopd.key")).unwrap(), before);

    let (smtp, imap, up) = (free_port(), free_port(), free_port());
    std::fs::write(
        d.join("proxy.toml"),
        format!(
            "[smtp]\nlisten = \"127.0.0.1:{smtp}\"\ntls = \"implicit\"\ncert = \"tls/envelopd.crt\"\nkey = \"tls/envelopd.key\"\n\
             [imap]\nlisten = \"127.0.0.1:{imap}\"\ntls = \"implicit\"\ncert = \"tls/envelopd.crt\"\nkey = \"tls/envelopd.key\"\n\
             [upstream.smtp]\nhost = \"127.0.0.1\"\nport = {up}\ntls = \"none\"\n\
             [upstream.imap]\nhost = \"127.0.0.1\"\nport = {up}\ntls = \"none\"\n"
        ),
    )
    .unwrap();
    // Started from another directory: the TLS paths are taken relative to the configuration.
    let _e = common::run_envelopd(&d.join("proxy.toml"), &d.join("envelopd.log"));
    wait_for(smtp);
    wait_for(imap);
    let ca = d.join("tls/envelopd.crt");
    for port in [smtp, imap] {
        let t = s_client(port, &ca, "praxis-server.local");
        assert!(t.contains("Verify return code: 0 (ok)"), "{t}");
        let wrong = s_client(port, &ca, "elsewhere.example");
        assert!(!wrong.contains("Verify return code: 0 (ok)"), "{wrong}");
    }
}
