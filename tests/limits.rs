//! Connection limits: one address cannot take all connections (421 / `* BYE`), a freed slot is
//! usable again, the sessions already open keep working; and 2,000 idle connections are held
//! with bounded memory while a new client is still served.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

use testkit::procs::{free_port, wait_for};

fn line(s: &TcpStream) -> String {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut l = String::new();
    let _ = r.read_line(&mut l);
    l
}

/// A TCP server that accepts and then says nothing (an IMAP upstream that never greets).
fn silent_server() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in l.incoming() {
            held.push(c);
        }
    });
    port
}

fn config(dir: &std::path::Path, extra_smtp: &str, extra_imap: &str) -> (u16, u16) {
    let (smtp, imap, up) = (free_port(), free_port(), silent_server());
    std::fs::write(
        dir.join("proxy.toml"),
        format!(
            "[smtp]\nlisten = \"127.0.0.1:{smtp}\"\n{extra_smtp}\n[imap]\nlisten = \"127.0.0.1:{imap}\"\n{extra_imap}\n\
             [upstream.smtp]\nhost = \"127.0.0.1\"\nport = {up}\ntls = \"none\"\n\
             [upstream.imap]\nhost = \"127.0.0.1\"\nport = {up}\ntls = \"none\"\n\
             [certificates]\nrevocation = \"off\"\n"
        ),
    )
    .unwrap();
    (smtp, imap)
}

#[test]
fn one_address_cannot_take_every_connection() {
    let dir = tempfile::tempdir().unwrap();
    let (smtp, imap) = config(
        dir.path(),
        "max_connections_per_ip = 3",
        "max_connections = 2",
    );
    let _e = common::run_envelopd(&dir.path().join("proxy.toml"), &dir.path().join("log"));
    wait_for(smtp);
    wait_for(imap);
    // wait_for's own probe connections must be gone before counting.
    std::thread::sleep(Duration::from_millis(300));
    let open: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(("127.0.0.1", smtp)).unwrap())
        .collect();
    for s in &open {
        assert!(line(s).starts_with("220 "));
    }
    let extra = TcpStream::connect(("127.0.0.1", smtp)).unwrap();
    let refused = line(&extra);
    assert!(
        refused.starts_with("421 4.7.0") && refused.contains("too many connections"),
        "{refused}"
    );
    // The open sessions still work.
    let mut s = &open[0];
    s.write_all(b"NOOP\r\n").unwrap();
    assert!(line(s).starts_with("250"), "NOOP after the refusal");
    // A freed slot can be used again.
    drop(open);
    std::thread::sleep(Duration::from_millis(300));
    let again = TcpStream::connect(("127.0.0.1", smtp)).unwrap();
    assert!(line(&again).starts_with("220 "));

    // IMAP: the whole listener takes two (their upstream never greets, so they stay open).
    let a = TcpStream::connect(("127.0.0.1", imap)).unwrap();
    let b = TcpStream::connect(("127.0.0.1", imap)).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let c = TcpStream::connect(("127.0.0.1", imap)).unwrap();
    let bye = line(&c);
    assert!(
        bye.starts_with("* BYE") && bye.contains("too many connections"),
        "{bye}"
    );
    drop((a, b));
}

fn vm_hwm_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn two_thousand_idle_connections_are_held_in_bounded_memory() {
    // Enough descriptors for 2,000 client ends here and 2,000 server ends in envelopd (the
    // child inherits the raised limit).
    let me = std::process::id().to_string();
    let raised = std::process::Command::new("prlimit")
        .args(["--pid", &me, "--nofile=8192:8192"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        raised,
        "prlimit (util-linux) could not raise the descriptor limit"
    );
    let dir = tempfile::tempdir().unwrap();
    let (smtp, _) = config(
        dir.path(),
        "max_connections = 5000\nmax_connections_per_ip = 5000",
        "",
    );
    let e = common::run_envelopd(&dir.path().join("proxy.toml"), &dir.path().join("log"));
    wait_for(smtp);
    let before = vm_hwm_kib(e.0.id());
    let idle: Vec<TcpStream> = (0..2000)
        .map(|_| TcpStream::connect(("127.0.0.1", smtp)).unwrap())
        .collect();
    // Each gets its greeting; then they just sit there.
    for s in idle.iter().step_by(100) {
        assert!(line(s).starts_with("220 "));
    }
    std::thread::sleep(Duration::from_millis(500));
    let fresh = TcpStream::connect(("127.0.0.1", smtp)).unwrap();
    let mut f = &fresh;
    // The greeting, then a command is answered while 2,000 others wait (NOOP: EHLO would ask
    // the provider, which here never answers).
    assert!(line(&fresh).starts_with("220 "));
    f.write_all(b"NOOP\r\n").unwrap();
    assert!(line(&fresh).starts_with("250"));
    let peak = vm_hwm_kib(e.0.id());
    println!(
        "2,000 idle SMTP connections: peak RSS {} MiB (before {} MiB), {} KiB per connection",
        peak / 1024,
        before / 1024,
        (peak.saturating_sub(before)) / 2000
    );
    assert!(peak < 256 * 1024, "peak RSS {peak} KiB");
    drop(idle);
}

/// An IMAP "server" that greets and then listens (for sessions that never get further).
fn greeting_server() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for mut c in l.incoming().flatten() {
            let _ = c.write_all(b"* OK [CAPABILITY IMAP4rev1] fake ready\r\n");
            held.push(c);
        }
    });
    port
}

fn vm_hwm(pid: u32) -> u64 {
    vm_hwm_kib(pid)
}

#[test]
fn slowloris_and_endless_lines_are_cut_off_while_others_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let (smtp, imap, up, imap_up) = (free_port(), free_port(), silent_server(), greeting_server());
    std::fs::write(
        dir.path().join("proxy.toml"),
        format!(
            "[smtp]\nlisten = \"127.0.0.1:{smtp}\"\nclient_timeout = 3\n\
             [imap]\nlisten = \"127.0.0.1:{imap}\"\ncommand_timeout = 3\n\
             [upstream.smtp]\nhost = \"127.0.0.1\"\nport = {up}\ntls = \"none\"\n\
             [upstream.imap]\nhost = \"127.0.0.1\"\nport = {imap_up}\ntls = \"none\"\n\
             [certificates]\nrevocation = \"off\"\n"
        ),
    )
    .unwrap();
    let e = common::run_envelopd(&dir.path().join("proxy.toml"), &dir.path().join("log"));
    wait_for(smtp);
    wait_for(imap);
    let before = vm_hwm(e.0.id());

    // Slowloris: a byte every 400 ms never completes a line; cut off after the 3 s deadline.
    for (port, greeting, cut) in [(smtp, "220 ", "421 4.4.2"), (imap, "* OK", "* BYE")] {
        let mut slow = TcpStream::connect(("127.0.0.1", port)).unwrap();
        assert!(line(&slow).starts_with(greeting), "{port}");
        let start = std::time::Instant::now();
        let mut answer = String::new();
        let mut buf = [0u8; 512];
        for b in b"NOOPNOOPNOOPNOOPNOOPNOOPNOOPNOOPNOOPNOOP".iter() {
            if slow.write_all(&[*b]).is_err() {
                break;
            }
            slow.set_read_timeout(Some(Duration::from_millis(400)))
                .unwrap();
            match std::io::Read::read(&mut slow, &mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    answer = String::from_utf8_lossy(&buf[..n]).into_owned();
                    break;
                }
                Err(_) => {}
            }
        }
        let took = start.elapsed();
        assert!(
            answer.starts_with(cut),
            "{port} (smtp {smtp}, imap {imap}): {answer:?} after {took:?}"
        );
        assert!(
            took >= Duration::from_secs(3) && took < Duration::from_secs(6),
            "{port}: cut off after {took:?}"
        );
    }

    // A 100 MB line: refused and closed without buffering it.
    for (port, greeting) in [(smtp, "220 "), (imap, "* OK")] {
        let mut big = TcpStream::connect(("127.0.0.1", port)).unwrap();
        assert!(line(&big).starts_with(greeting));
        let block = vec![b'A'; 1 << 20];
        let mut sent = 0usize;
        for _ in 0..100 {
            if big.write_all(&block).is_err() {
                break;
            }
            sent += block.len();
        }
        let answer = line(&big);
        assert!(
            sent < 100 << 20
                || answer.starts_with("5")
                || answer.starts_with("* BYE")
                || answer.is_empty(),
            "{port}: {answer:?}"
        );
        // Someone else is served meanwhile.
        let mut other = TcpStream::connect(("127.0.0.1", port)).unwrap();
        assert!(line(&other).starts_with(greeting));
        if port == smtp {
            other.write_all(b"NOOP\r\n").unwrap();
            assert!(line(&other).starts_with("250"));
        }
    }
    let peak = vm_hwm(e.0.id());
    println!(
        "slowloris and 100 MB lines: peak RSS {} MiB (before {} MiB)",
        peak / 1024,
        before / 1024
    );
    assert!(peak < before + 64 * 1024, "peak RSS {peak} KiB");
}

/// A PROXY protocol v2 header for a TCP/IPv4 client `src`.
fn proxy_v2(src: [u8; 4], port: u16) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend_from_slice(&[0x21, 0x11, 0, 12]);
    h.extend_from_slice(&src);
    h.extend_from_slice(&[192, 0, 2, 1]);
    h.extend_from_slice(&port.to_be_bytes());
    h.extend_from_slice(&587u16.to_be_bytes());
    h
}

#[test]
fn behind_a_balancer_the_proxy_header_names_the_client() {
    let dir = tempfile::tempdir().unwrap();
    let (smtp, _) = config(
        dir.path(),
        "proxy_protocol = true\nproxy_from = [\"127.0.0.1\"]\nmax_connections_per_ip = 1",
        "",
    );
    let log = dir.path().join("log");
    let _e = common::run_envelopd(&dir.path().join("proxy.toml"), &log);
    wait_for(smtp);
    std::thread::sleep(Duration::from_millis(300));
    let connect = |src: [u8; 4]| {
        let mut s = TcpStream::connect(("127.0.0.1", smtp)).unwrap();
        s.write_all(&proxy_v2(src, 40000)).unwrap();
        s
    };
    // The per-address limit (1) counts the client behind the balancer, not the balancer.
    let a = connect([203, 0, 113, 7]);
    assert!(line(&a).starts_with("220 "));
    let b = connect([203, 0, 113, 7]);
    assert!(
        line(&b).starts_with("421 "),
        "second connection of the same client"
    );
    let c = connect([203, 0, 113, 8]);
    assert!(
        line(&c).starts_with("220 "),
        "another client behind the same balancer"
    );
    // Without a header: closed without a greeting.
    let mut d = TcpStream::connect(("127.0.0.1", smtp)).unwrap();
    d.write_all(b"EHLO direct\r\nEHLO direct\r\n").unwrap();
    assert_eq!(line(&d), "");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("203.0.113.7"), "{text}");
    assert!(text.contains("no valid PROXY protocol header"), "{text}");
    drop((a, b, c));

    // proxy_protocol without proxy_from is a configuration error.
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[smtp]\nproxy_protocol = true\n[upstream.smtp]\nhost = \"127.0.0.1\"\nport = 25\ntls = \"none\"\n",
    )
    .unwrap();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_envelopd"))
        .args(["check", "--no-connect", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("proxy_from"));
}

#[test]
fn a_recipient_flood_gets_452_and_the_message_still_goes_to_the_accepted_ones() {
    // 20,000 pipelined RCPT commands against a limit of 100: the first 100 are passed to the
    // provider (Postfix's smtp-sink), the rest get 452 4.5.3 without reaching it; memory stays
    // bounded and the message is delivered to the accepted recipients.
    let dir = tempfile::tempdir().unwrap();
    let dump = dir.path().join("dump");
    std::fs::create_dir(&dump).unwrap();
    let (smtp, up) = (free_port(), free_port());
    let _sink = testkit::procs::smtp_sink(&dump, up, &[]);
    std::fs::write(
        dir.path().join("proxy.toml"),
        format!(
            "[smtp]\nlisten = \"127.0.0.1:{smtp}\"\nmax_recipients = 100\n\
             [upstream.smtp]\nhost = \"127.0.0.1\"\nport = {up}\ntls = \"none\"\n\
             [certificates]\nrevocation = \"off\"\n"
        ),
    )
    .unwrap();
    let e = common::run_envelopd(&dir.path().join("proxy.toml"), &dir.path().join("log"));
    wait_for(smtp);
    let before = vm_hwm(e.0.id());
    let s = TcpStream::connect(("127.0.0.1", smtp)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut greeting = String::new();
    r.read_line(&mut greeting).unwrap();
    const FLOOD: usize = 20_000;
    let writer = {
        let mut w = s.try_clone().unwrap();
        std::thread::spawn(move || {
            let mut cmds = String::from("EHLO flood.example\r\nMAIL FROM:<a@example.org>\r\n");
            for i in 0..FLOOD {
                cmds.push_str(&format!("RCPT TO:<r{i}@example.org>\r\n"));
            }
            w.write_all(cmds.as_bytes()).unwrap();
        })
    };
    let (mut ok, mut full, mut other) = (0, 0, Vec::new());
    let mut l = String::new();
    // EHLO (multi-line) and MAIL first.
    loop {
        l.clear();
        r.read_line(&mut l).unwrap();
        if l.starts_with("250 ") {
            break;
        }
    }
    l.clear();
    r.read_line(&mut l).unwrap();
    assert!(l.starts_with("250"), "MAIL: {l}");
    for _ in 0..FLOOD {
        l.clear();
        r.read_line(&mut l).unwrap();
        match &l[..l.len().min(9)] {
            "250 2.1.5" => ok += 1,
            "452 4.5.3" => full += 1,
            _ => other.push(l.clone()),
        }
    }
    writer.join().unwrap();
    assert_eq!((ok, full), (100, FLOOD - 100), "{other:?}");
    let mut w = s.try_clone().unwrap();
    w.write_all(b"DATA\r\n").unwrap();
    l.clear();
    r.read_line(&mut l).unwrap();
    assert!(l.starts_with("354"), "{l}");
    w.write_all(b"Subject: flood\r\n\r\nstill delivered\r\n.\r\n")
        .unwrap();
    l.clear();
    r.read_line(&mut l).unwrap();
    assert!(l.starts_with("250"), "{l}");
    std::thread::sleep(Duration::from_millis(300));
    let stored: Vec<String> = std::fs::read_dir(&dump)
        .unwrap()
        .flatten()
        .map(|f| std::fs::read_to_string(f.path()).unwrap_or_default())
        .filter(|m| m.contains("still delivered"))
        .collect();
    assert_eq!(stored.len(), 1);
    // smtp-sink records each recipient it accepted as an X-Rcpt-Args line.
    let rcpts = stored[0]
        .lines()
        .filter(|l| l.starts_with("X-Rcpt-Args:"))
        .count();
    assert_eq!(rcpts, 100, "{}", &stored[0][..stored[0].len().min(2000)]);
    let peak = vm_hwm(e.0.id());
    println!(
        "recipient flood ({FLOOD} RCPT): peak RSS {} MiB (before {} MiB); {rcpts} recipient lines at the provider",
        peak / 1024,
        before / 1024
    );
    assert!(peak < before + 32 * 1024, "peak RSS {peak} KiB");
}
