//! Password guessing through envelopd: after 5 failed logins (real Postfix and Dovecot check the
//! passwords) further attempts from the same address are refused by envelopd itself, on both
//! protocols, without reaching the provider; other sessions are not affected.

mod common;

use std::process::Command;

use common::provider::Provider;
use testkit::procs::{free_port, wait_for};

#[test]
fn failed_logins_lock_out_the_guesser() {
    let provider = Provider::start();
    let dir = tempfile::tempdir().unwrap();
    let (smtp, imap) = (free_port(), free_port());
    std::fs::write(
        dir.path().join("proxy.toml"),
        format!(
            "[smtp]\nlisten = \"127.0.0.1:{smtp}\"\n[imap]\nlisten = \"127.0.0.1:{imap}\"\n\
             [upstream.smtp]\nhost = \"localhost\"\nport = {}\ntls = \"starttls\"\nca_file = \"{ca}\"\nsystem_roots = false\n\
             [upstream.imap]\nhost = \"localhost\"\nport = {}\ntls = \"implicit\"\nca_file = \"{ca}\"\nsystem_roots = false\n\
             [certificates]\nrevocation = \"off\"\n",
            provider.submission,
            provider.imaps,
            ca = provider.ca().display()
        ),
    )
    .unwrap();
    let _e = common::run_envelopd(&dir.path().join("proxy.toml"), &dir.path().join("log"));
    wait_for(smtp);
    wait_for(imap);
    let swaks = |pw: &str| {
        let o = Command::new("swaks")
            .args([
                "--server",
                &format!("127.0.0.1:{smtp}"),
                "--quit-after",
                "AUTH",
            ])
            .args(["--auth", "PLAIN", "--auth-user", "alice@smime.example"])
            .args(["--auth-password", pw])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    for i in 0..5 {
        let t = swaks("wrong");
        assert!(t.contains("535"), "attempt {i}: {t}");
    }
    // Now even the right password waits: envelopd answers without asking Postfix.
    let t = swaks("alice-pw");
    assert!(
        t.contains("454 4.7.0") && t.contains("too many failed logins"),
        "{t}"
    );
    // IMAP counts the same address (the failures above already lock it).
    let script = r#"
import imaplib, sys
m = imaplib.IMAP4("127.0.0.1", int(sys.argv[1]))
try:
    m.login("bob@smime.example", "bob-pw")
    print("LOGGED IN")
except imaplib.IMAP4.error as e:
    print("REFUSED", e)
"#;
    let o = Command::new("python3")
        .args(["-c", script, &imap.to_string()])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("REFUSED") && out.contains("too many failed logins"),
        "{out}"
    );
    // A literal is no way around the lock: refused before the "+" (and with LITERAL+, its
    // data is dropped, never read by Dovecot as commands).
    let script = r#"
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=20)
f = s.makefile("rb")
f.readline()
s.sendall(b"a LOGIN {17}\r\n")
print(f.readline().decode().strip())
s.sendall(b"b LOGIN {17+}\r\nbob@smime.example {6+}\r\nbob-pw\r\nc NOOP\r\n")
while True:
    l = f.readline().decode()
    print(l.strip())
    if not l or l.startswith("c "):
        break
"#;
    let o = Command::new("python3")
        .args(["-c", script, &imap.to_string()])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("a NO [UNAVAILABLE] too many failed logins"),
        "{out}"
    );
    assert!(
        out.contains("b NO [UNAVAILABLE]") && out.contains("c OK") && !out.contains("BAD"),
        "{out}"
    );
    let log = std::fs::read_to_string(dir.path().join("log")).unwrap();
    assert!(
        log.contains("login refused: too many failed logins"),
        "{log}"
    );
    assert!(
        !log.contains("alice-pw") && !log.contains("wrong"),
        "password in the log"
    );
}
