//! Helpers shared by the binary's integration tests.
// Each test file uses a different subset.
#![allow(dead_code)]

pub mod lab;
pub mod provider;
pub mod reading;
pub mod submission;

use std::path::PathBuf;

/// `../shared/vectors` beside the checkout, or `ENVELOPD_VECTORS`.
pub fn vectors() -> PathBuf {
    testkit::vectors()
}

/// The RFC 9216 vector directory.
pub fn rfc9216() -> PathBuf {
    vectors().join("rfc9216")
}

/// Fills `d` as a practice's envelopd directory for `who` ("alice" or "bob" of RFC 9216):
/// `trust/ca.pem` (the RFC 9216 CA), `certs/bob.pem` (Bob's encryption certificate),
/// `keys/WHO.p12` and `keys/pw` (its password; both mode 0600), `keys/WHO-enc.pem` (the own
/// encryption certificate), and the empty directories `more` (e.g. "dump").
pub fn practice_dir(d: &std::path::Path, who: &str, more: &[&str]) {
    use std::os::unix::fs::PermissionsExt;
    for sub in ["trust", "certs", "keys"].iter().chain(more) {
        std::fs::create_dir_all(d.join(sub)).unwrap();
    }
    let v = rfc9216();
    let copy = |from: &str, to: &str| {
        std::fs::copy(v.join(from), d.join(to)).unwrap_or_else(|e| panic!("{from}: {e}"));
    };
    copy("ca.rsa.crt", "trust/ca.pem");
    copy("bob.encrypt.crt", "certs/bob.pem");
    copy(&format!("{who}.p12"), &format!("keys/{who}.p12"));
    copy(
        &format!("{who}.encrypt.crt"),
        &format!("keys/{who}-enc.pem"),
    );
    std::fs::write(d.join("keys/pw"), format!("{who}\n")).unwrap();
    for f in [format!("keys/{who}.p12"), "keys/pw".to_string()] {
        std::fs::set_permissions(d.join(f), std::fs::Permissions::from_mode(0o600)).unwrap();
    }
}

/// `envelopd run --config CONFIG` with its log written to LOG; killed when dropped. The caller
/// waits for the ports it needs.
pub fn run_envelopd(config: &std::path::Path, log: &std::path::Path) -> testkit::procs::Proc {
    run_envelopd_env(config, log, &[])
}

/// Like [`run_envelopd`], with extra environment variables (e.g. `RUST_LOG=debug`).
pub fn run_envelopd_env(
    config: &std::path::Path,
    log: &std::path::Path,
    env: &[(&str, &str)],
) -> testkit::procs::Proc {
    use std::process::{Command, Stdio};
    testkit::procs::Proc(
        Command::new(env!("CARGO_BIN_EXE_envelopd"))
            .args(["run", "--config"])
            .arg(config)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap(),
    )
}

/// The reply a swaks transcript shows for the message: the first error swaks reports, else the
/// reply after the final dot.
pub fn swaks_reply(transcript: &str) -> String {
    let lines: Vec<&str> = transcript.lines().collect();
    if let Some(e) = lines.iter().find(|l| l.starts_with("<** ")) {
        return e.to_string();
    }
    lines
        .iter()
        .position(|l| *l == " -> .")
        .and_then(|i| lines.get(i + 1))
        .unwrap_or(&"")
        .to_string()
}

/// `/metrics` of the status listener on `port`, as the Prometheus Python client's strict
/// OpenMetrics parser reads it (`tests/clients/scrape.py`): (name, labels, value) per sample.
pub fn scrape(port: u16) -> Vec<(String, std::collections::HashMap<String, String>, f64)> {
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/clients/scrape.py");
    let o = std::process::Command::new("python3")
        .arg(script)
        .arg(format!("http://127.0.0.1:{port}/metrics"))
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "the OpenMetrics parser rejected /metrics: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    v["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let labels = s[1]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                .collect();
            (
                s[0].as_str().unwrap().to_string(),
                labels,
                s[2].as_f64().unwrap(),
            )
        })
        .collect()
}

/// The sum of the samples called `name` whose labels include all of `labels`.
pub fn metric(
    samples: &[(String, std::collections::HashMap<String, String>, f64)],
    name: &str,
    labels: &[(&str, &str)],
) -> f64 {
    samples
        .iter()
        .filter(|(n, l, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.2)
        .sum()
}

/// Runs IMAP steps through a proxy port with `tests/clients/imap_steps.py` (Python's imaplib;
/// the steps are documented there); one JSON result per step. `log` is shown on failure.
pub fn imap_steps(
    port: u16,
    steps: serde_json::Value,
    log: &std::path::Path,
) -> Vec<serde_json::Value> {
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/clients/imap_steps.py");
    let o = std::process::Command::new("python3")
        .arg(script)
        .arg(port.to_string())
        .arg(steps.to_string())
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "imap_steps.py: {}\nenvelopd's log:\n{}",
        String::from_utf8_lossy(&o.stderr),
        std::fs::read_to_string(log).unwrap_or_default()
    );
    match serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap() {
        serde_json::Value::Array(v) => v,
        other => panic!("imap_steps.py printed {other}"),
    }
}

/// The listener and provider sections of a `proxy.toml` for reading through `provider`: SMTP
/// and IMAP listeners on loopback, the provider's submission (STARTTLS) and IMAPS with its CA.
pub fn reading_sections(provider: &provider::Provider, smtp: u16, imap: u16) -> String {
    format!(
        "[smtp]\nlisten = \"127.0.0.1:{smtp}\"\n[imap]\nlisten = \"127.0.0.1:{imap}\"\n\
         [upstream.smtp]\nhost = \"localhost\"\nport = {}\ntls = \"starttls\"\nca_file = \"{ca}\"\nsystem_roots = false\n\
         [upstream.imap]\nhost = \"localhost\"\nport = {}\ntls = \"implicit\"\nca_file = \"{ca}\"\nsystem_roots = false\n",
        provider.submission,
        provider.imaps,
        ca = provider.ca().display()
    )
}
