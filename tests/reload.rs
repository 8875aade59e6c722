//! SIGHUP: a renewed listener certificate, recipient certificates added on disk and a changed
//! policy take effect without a restart; an open session is not disturbed; a broken new key or
//! configuration keeps the old one.
//! SIGTERM stops gracefully like Ctrl-C.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use testkit::procs::{free_port, smtp_sink, wait_for};

const ENVELOPD: &str = env!("CARGO_BIN_EXE_envelopd");

fn selfsigned(dir: &std::path::Path, name: &str) {
    let o = Command::new(ENVELOPD)
        .current_dir(dir)
        .args(["tls", "selfsigned", "--name", name])
        .args([
            "--cert",
            &format!("new/{name}.crt"),
            "--key",
            &format!("new/{name}.key"),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

fn install(dir: &std::path::Path, name: &str) {
    for (from, to) in [("crt", "envelopd.crt"), ("key", "envelopd.key")] {
        let tmp = dir.join(format!("tls/.{to}.tmp"));
        std::fs::copy(dir.join(format!("new/{name}.{from}")), &tmp).unwrap();
        std::fs::rename(&tmp, dir.join("tls").join(to)).unwrap();
    }
}

/// The subject CN the listener presents (STARTTLS).
fn presented(port: u16) -> String {
    let mut c = Command::new("openssl")
        .args([
            "s_client",
            "-starttls",
            "smtp",
            "-connect",
            &format!("127.0.0.1:{port}"),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    drop(c.stdin.take());
    let out = String::from_utf8_lossy(&c.wait_with_output().unwrap().stdout).into_owned();
    out.lines()
        .find_map(|l| l.trim().strip_prefix("0 s:CN = ").map(str::to_string))
        .unwrap_or_default()
}

fn wait_log(log: &std::path::Path, text: &str, n: usize) {
    let start = Instant::now();
    while std::fs::read_to_string(log)
        .unwrap_or_default()
        .matches(text)
        .count()
        < n
    {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no {text:?} in the log"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn swaks(port: u16) -> String {
    swaks_to(port, "bob@smime.example")
}

fn swaks_to(port: u16, to: &str) -> String {
    let o = Command::new("swaks")
        .args(["--server", &format!("127.0.0.1:{port}")])
        .args(["--from", "alice@smime.example", "--to", to])
        .args(["--header", "Subject: x", "--body", "unauffaellig"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn sighup_reloads_tls_and_certificates_and_sigterm_stops_gracefully() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for sub in ["tls", "new", "trust", "certs", "dump"] {
        std::fs::create_dir(d.join(sub)).unwrap();
    }
    std::fs::copy(common::rfc9216().join("ca.rsa.crt"), d.join("trust/ca.pem")).unwrap();
    selfsigned(d, "first.local");
    selfsigned(d, "second.local");
    install(d, "first.local");
    let (smtp, up) = (free_port(), free_port());
    std::fs::write(
        d.join("proxy.toml"),
        format!(
            "[smtp]\nlisten = \"127.0.0.1:{smtp}\"\ntls = \"starttls\"\ncert = \"tls/envelopd.crt\"\nkey = \"tls/envelopd.key\"\n\
             [upstream.smtp]\nhost = \"127.0.0.1\"\nport = {up}\ntls = \"none\"\n\
             [certificates]\nanchors = [\"trust\"]\nrecipients = \"certs\"\nrevocation = \"off\"\n\
             [policy]\nfallback = \"refuse\"\n"
        ),
    )
    .unwrap();
    let _sink = smtp_sink(&d.join("dump"), up, &[]);
    let log = d.join("envelopd.log");
    let mut e = common::run_envelopd(&d.join("proxy.toml"), &log);
    wait_for(smtp);
    let pid = e.0.id();
    assert_eq!(presented(smtp), "first.local");
    // An open session across the reloads.
    let open = TcpStream::connect(("127.0.0.1", smtp)).unwrap();
    open.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reader = BufReader::new(open.try_clone().unwrap());
    let mut l = String::new();
    reader.read_line(&mut l).unwrap();
    assert!(l.starts_with("220"));

    // Bob has no certificate yet: refused.
    assert!(swaks(smtp).contains("550 5.7.1"));
    // Renewed TLS certificate and Bob's certificate on disk, then SIGHUP.
    install(d, "second.local");
    std::fs::copy(
        common::rfc9216().join("bob.encrypt.crt"),
        d.join("certs/bob.pem"),
    )
    .unwrap();
    testkit::procs::signal(pid, "HUP");
    wait_log(&log, "reloaded on SIGHUP", 1);
    assert!(std::fs::read_to_string(&log)
        .unwrap()
        .contains("certificates_added=1"));
    assert_eq!(presented(smtp), "second.local");
    let t = swaks(smtp);
    assert!(t.contains("250 2.0.0"), "{t}");
    // A broken key: the old certificate stays in service.
    std::fs::write(d.join("tls/envelopd.key"), "not a key").unwrap();
    testkit::procs::signal(pid, "HUP");
    wait_log(&log, "reloaded on SIGHUP", 2);
    assert!(std::fs::read_to_string(&log)
        .unwrap()
        .contains("the old one stays"));
    assert_eq!(presented(smtp), "second.local");
    // The policy is reloaded too: Carol (no certificate) is refused under "refuse", gets her
    // mail after the file says "plaintext" and SIGHUP; a configuration that does not load
    // keeps the policy in force.
    assert!(swaks_to(smtp, "carol@other.example").contains("550 5.7.1"));
    let cfg = std::fs::read_to_string(d.join("proxy.toml")).unwrap();
    std::fs::write(
        d.join("proxy.toml"),
        cfg.replace("fallback = \"refuse\"", "fallback = \"plaintext\""),
    )
    .unwrap();
    testkit::procs::signal(pid, "HUP");
    wait_log(&log, "reloaded on SIGHUP", 3);
    assert!(std::fs::read_to_string(&log)
        .unwrap()
        .contains("policy reloaded"));
    let t = swaks_to(smtp, "carol@other.example");
    assert!(t.contains("250 2.0.0"), "{t}");
    std::fs::write(d.join("proxy.toml"), "[policy\nfallback = ").unwrap();
    testkit::procs::signal(pid, "HUP");
    wait_log(&log, "reloaded on SIGHUP", 4);
    assert!(std::fs::read_to_string(&log)
        .unwrap()
        .contains("configuration not reloaded, the previous policy stays in force"));
    let t = swaks_to(smtp, "carol@other.example");
    assert!(t.contains("250 2.0.0"), "{t}");
    // The session opened at the start still works.
    (&open).write_all(b"NOOP\r\n").unwrap();
    l.clear();
    reader.read_line(&mut l).unwrap();
    assert!(l.starts_with("250"), "{l}");

    // SIGTERM: the idle session is told goodbye (421) and the daemon exits.
    testkit::procs::signal(pid, "TERM");
    l.clear();
    reader.read_line(&mut l).unwrap();
    assert!(l.starts_with("421"), "{l}");
    let start = Instant::now();
    loop {
        if let Some(status) = e.0.try_wait().unwrap() {
            assert!(status.success(), "{status:?}");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "envelopd did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
