//! The loopback status endpoint: three messages (encrypted, signed only, refused by policy) go
//! through envelopd to Postfix's smtp-sink; `/metrics` is scraped and parsed by the Prometheus
//! Python client's OpenMetrics parser and must count exactly those decisions, the sessions and
//! the own certificate's expiry; the status page is rendered by headless Chromium (screenshot
//! kept in `target/test-artefacts/status.png`) and shows the decisions, the certificates and
//! the provider's health, but no subject or body; other hosts are refused (DNS rebinding).

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use testkit::procs::{free_port, smtp_sink, wait_for};

const SUBJECT: &str = "Befund Patientin Roentgen";
const BODY: &str = "Kontrolle in 6 Monaten, unauffaellig.";

fn http_get(port: u16, path: &str, host: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

type Samples = Vec<(String, HashMap<String, String>, f64)>;

/// The one sample called `name` with all of `labels`, if there is one.
fn value(samples: &Samples, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .any(|(n, l, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .then(|| common::metric(samples, name, labels))
}

#[test]
fn metrics_parse_and_count_and_the_status_page_renders_in_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    common::practice_dir(d, "alice", &["dump"]);
    let (smtp, up, status) = (free_port(), free_port(), free_port());
    let _sink = smtp_sink(&d.join("dump"), up, &[]);
    std::fs::write(
        d.join("proxy.toml"),
        format!(
            "[smtp]\nlisten = \"127.0.0.1:{smtp}\"\n\
             [upstream.smtp]\nhost = \"127.0.0.1\"\nport = {up}\ntls = \"none\"\n\
             [certificates]\nanchors = [\"trust\"]\nrecipients = \"certs\"\nrevocation = \"off\"\n\
             [[identity]]\naddresses = [\"alice@smime.example\"]\npkcs12 = \"keys/alice.p12\"\npassword_file = \"keys/pw\"\n\
             [policy]\nfallback = \"plaintext\"\n\
             [[policy.override]]\npattern = \"refuse.example\"\nfallback = \"refuse\"\n\
             [status]\nlisten = \"127.0.0.1:{status}\"\n"
        ),
    )
    .unwrap();
    let _e = common::run_envelopd_env(
        &d.join("proxy.toml"),
        &d.join("envelopd.log"),
        &[("RUST_LOG", "debug")],
    );
    wait_for(smtp);
    wait_for(status);

    // Before any mail: parsable, no messages counted, the provider not contacted yet.
    let before = common::scrape(status);
    assert!(value(&before, "envelopd_messages_total", &[]).is_none());

    for (to, want) in [
        ("bob@smime.example", "250"),
        ("carol@other.example", "250"),
        ("dave@refuse.example", "550"),
    ] {
        let o = Command::new("swaks")
            .args(["--server", &format!("127.0.0.1:{smtp}")])
            .args(["--from", "alice@smime.example", "--to", to])
            .args(["--header", &format!("Subject: {SUBJECT}")])
            .args(["--header", "From: alice@smime.example"])
            .args(["--body", BODY])
            .output()
            .unwrap();
        let t = String::from_utf8_lossy(&o.stdout).into_owned();
        assert!(common::swaks_reply(&t).contains(want), "{to}: {t}");
    }

    let m = common::scrape(status);
    let count = |decision: &str, cipher: &str, signed: &str, reply: &str| {
        value(
            &m,
            "envelopd_messages_total",
            &[
                ("decision", decision),
                ("cipher", cipher),
                ("signed", signed),
                ("reply", reply),
            ],
        )
    };
    assert_eq!(count("encrypted", "aes-256-cbc", "yes", "2xx"), Some(1.0));
    assert_eq!(count("signed", "-", "yes", "2xx"), Some(1.0));
    assert_eq!(count("refused", "-", "no", "5xx"), Some(1.0));
    let total: f64 = m
        .iter()
        .filter(|s| s.0 == "envelopd_messages_total")
        .map(|s| s.2)
        .sum();
    assert_eq!(total, 3.0, "exactly the three messages");
    assert_eq!(
        value(&m, "envelopd_smtp_delivery_seconds_count", &[]),
        Some(3.0)
    );
    assert!(value(&m, "envelopd_sessions_total", &[("proto", "smtp")]).unwrap() >= 3.0);
    assert_eq!(
        value(&m, "envelopd_upstream_errors_total", &[("proto", "smtp")]).unwrap_or(0.0),
        0.0
    );
    // The own certificate's expiry, as the certificate says (Unix time).
    let alice_crt = common::rfc9216().join("alice.sign.crt");
    let alice = smime::parse_certificates(&std::fs::read(alice_crt).unwrap())
        .unwrap()
        .remove(0);
    let not_after = alice
        .validity()
        .1
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as f64;
    assert_eq!(
        value(
            &m,
            "envelopd_certificate_expiry_timestamp_seconds",
            &[("kind", "identity"), ("address", "alice@smime.example")]
        ),
        Some(not_after)
    );
    assert!(value(
        &m,
        "envelopd_certificate_expiry_timestamp_seconds",
        &[("kind", "recipient"), ("address", "bob@smime.example")]
    )
    .is_some());

    // The page: decisions, certificates, provider health; never the subject or the body.
    let page = http_get(status, "/", &format!("127.0.0.1:{status}"));
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    for want in [
        "alice@smime.example",
        "encrypted",
        "refused",
        "aes-256-cbc",
        "127.0.0.1:",
        "Own certificates",
    ] {
        assert!(page.contains(want), "{want} missing:\n{page}");
    }
    for secret in [SUBJECT, BODY, "Roentgen", "unauffaellig"] {
        assert!(!page.contains(secret), "{secret} on the status page");
        let metrics = http_get(status, "/metrics", "localhost");
        assert!(!metrics.contains(secret));
    }
    // Another host name (a web page using DNS rebinding) gets nothing.
    let foreign = http_get(status, "/", "evil.example");
    assert!(foreign.starts_with("HTTP/1.1 403"), "{foreign}");
    assert!(!foreign.contains("alice@"));
    assert!(http_get(status, "/nothing", "localhost").starts_with("HTTP/1.1 404"));
    assert!(http_get(status, "/health", "localhost").ends_with("ok\n"));

    // Rendered by a real browser: the DOM it built, and a screenshot kept for people.
    let artefacts = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/test-artefacts");
    std::fs::create_dir_all(&artefacts).unwrap();
    let shot = artefacts.join("status.png");
    let _ = std::fs::remove_file(&shot);
    let profile = tempfile::tempdir().unwrap();
    let chromium = |extra: &[&str]| {
        Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--hide-scrollbars",
                "--window-size=1100,1000",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(extra)
            .arg(format!("http://127.0.0.1:{status}/"))
            .output()
            .expect("chromium is installed (.ci/run installs it)")
    };
    let dom = chromium(&["--dump-dom"]);
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert!(
        dom.contains("Last decisions") && dom.contains("alice@smime.example"),
        "Chromium's DOM: {dom}"
    );
    let o = chromium(&[&format!("--screenshot={}", shot.display())]);
    let png = std::fs::read(&shot).unwrap_or_else(|_| {
        panic!(
            "no screenshot: {}",
            String::from_utf8_lossy(&o.stderr)
                .lines()
                .take(20)
                .collect::<Vec<_>>()
                .join("\n")
        )
    });
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"));
    assert!(png.len() > 20_000, "a blank page? {} bytes", png.len());
    println!("status page screenshot: {}", shot.display());

    // Logs stay free of content at debug level.
    let log = std::fs::read_to_string(d.join("envelopd.log")).unwrap();
    assert!(!log.contains(SUBJECT) && !log.contains(BODY));
}

#[test]
fn json_logs_are_one_object_per_line_with_the_audit_record() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("dump")).unwrap();
    let (smtp, up) = (free_port(), free_port());
    let _sink = smtp_sink(&d.join("dump"), up, &[]);
    std::fs::write(
        d.join("proxy.toml"),
        format!(
            "[smtp]\nlisten = \"127.0.0.1:{smtp}\"\n\
             [upstream.smtp]\nhost = \"127.0.0.1\"\nport = {up}\ntls = \"none\"\n\
             [certificates]\nrevocation = \"off\"\n[log]\nformat = \"json\"\n"
        ),
    )
    .unwrap();
    let e = common::run_envelopd(&d.join("proxy.toml"), &d.join("envelopd.log"));
    wait_for(smtp);
    let o = Command::new("swaks")
        .args(["--server", &format!("127.0.0.1:{smtp}")])
        .args(["--from", "a@example.org", "--to", "b@example.org"])
        .args(["--body", BODY])
        .output()
        .unwrap();
    assert!(o.status.success());
    drop(e);
    let log = std::fs::read_to_string(d.join("envelopd.log")).unwrap();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(lines.len() >= 3, "{log}");
    let audit = lines
        .iter()
        .find(|l| l["target"] == "envelopd::audit")
        .unwrap_or_else(|| panic!("no audit record: {log}"));
    let msg = audit["fields"]["message"].as_str().unwrap();
    assert!(
        msg.contains("decision=plaintext") && msg.contains("reply=250"),
        "{msg}"
    );
    assert!(audit["level"] == "INFO" && audit["timestamp"].is_string());
    assert!(!log.contains(BODY));
}
