//! `envelopd run` times aws-lc's two RSA code paths on this CPU and runs the faster one (a
//! restart of the same process with ADX masked for aws-lc when the AVX2 code wins); whoever
//! sets `OPENSSL_ia32cap` decides instead. Every other end-to-end test runs the daemon the
//! same way, so the signatures and decryptions they check are made by the chosen code.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use testkit::procs::{free_port, smtp_sink, wait_for};

const ENVELOPD: &str = env!("CARGO_BIN_EXE_envelopd");

#[test]
fn the_timing_run_reports_microseconds_per_signature_for_either_path() {
    for mask in [None, Some(":~0x80000")] {
        let mut c = Command::new(ENVELOPD);
        c.arg("rsa-timing");
        if let Some(m) = mask {
            c.env("OPENSSL_ia32cap", m);
        }
        let o = c.output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let us: f64 = String::from_utf8_lossy(&o.stdout).trim().parse().unwrap();
        // An RSA-2048 signature takes between 0.1 ms and 0.1 s on anything that runs envelopd.
        assert!((100.0..100_000.0).contains(&us), "{us}");
    }
}

fn both_paths_exist() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("bmi2")
            && std::arch::is_x86_feature_detected!("adx")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Starts the daemon with `env`, waits until it listens, and returns its RSA log line and the
/// `OPENSSL_ia32cap` in its environment now (after any restart: same process, same PID).
fn start(env: &[(&str, &str)]) -> (String, Option<String>) {
    let d = tempfile::tempdir().unwrap();
    common::practice_dir(d.path(), "alice", &["dump"]);
    let (listen, sink_port) = (free_port(), free_port());
    std::fs::write(
        d.path().join("proxy.toml"),
        format!(
            "[smtp]\nlisten = \"127.0.0.1:{listen}\"\n\
             [upstream.smtp]\nhost = \"127.0.0.1\"\nport = {sink_port}\ntls = \"none\"\n\
             [certificates]\nanchors = [\"{0}/trust\"]\nrecipients = \"{0}/certs\"\n",
            d.path().display()
        ),
    )
    .unwrap();
    let _sink = smtp_sink(&d.path().join("dump"), sink_port, &[]);
    let log = d.path().join("envelopd.log");
    let e = common::run_envelopd_env(&d.path().join("proxy.toml"), &log, env);
    wait_for(listen);
    let environ = std::fs::read(format!("/proc/{}/environ", e.0.id())).unwrap();
    let cap = environ
        .split(|b| *b == 0)
        .filter_map(|v| std::str::from_utf8(v).ok())
        .find_map(|v| v.strip_prefix("OPENSSL_ia32cap=").map(str::to_string));
    let start = Instant::now();
    let line = loop {
        let text = std::fs::read_to_string(&log).unwrap();
        if let Some(l) = text.lines().find(|l| l.contains("RSA: ")) {
            break l.to_string();
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{text}");
        std::thread::sleep(Duration::from_millis(50));
    };
    (line, cap)
}

#[test]
fn the_daemon_measures_both_paths_and_runs_the_faster() {
    let (line, cap) = start(&[]);
    if !both_paths_exist() {
        assert!(line.contains("one RSA code path"), "{line}");
        assert_eq!(cap, None);
        return;
    }
    // "RSA: measured 860 µs per signature with the MULX/ADX code, 700 µs with the AVX2 code;
    // running the AVX2 code"
    let numbers: Vec<f64> = line.split(' ').filter_map(|w| w.parse().ok()).collect();
    assert_eq!(numbers.len(), 2, "{line}");
    let (mulx, avx2) = (numbers[0], numbers[1]);
    let runs_avx2 = line.ends_with("running the AVX2 code");
    assert!(
        runs_avx2 || line.ends_with("running the MULX/ADX code"),
        "{line}"
    );
    // The faster one by a clear margin, else the libraries' default.
    assert_eq!(runs_avx2, avx2 < mulx * 0.95, "{line}");
    // The AVX2 code runs in the very process that was started (restarted in place, so a
    // service manager's PID stays right), with ADX masked for aws-lc.
    assert_eq!(cap.as_deref(), runs_avx2.then_some(":~0x80000"), "{line}");
}

#[test]
fn whoever_sets_openssl_ia32cap_decides() {
    // "~0" masks nothing: the libraries' own choice, without measuring.
    for value in ["~0", ":~0x80000"] {
        let (line, cap) = start(&[("OPENSSL_ia32cap", value)]);
        assert!(
            line.contains(&format!("as set by OPENSSL_ia32cap={value:?}")),
            "{line}"
        );
        assert_eq!(cap.as_deref(), Some(value));
    }
}
