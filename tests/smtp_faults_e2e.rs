//! End to end, the faults: swaks and raw clients -> `envelopd run` -> Postfix's smtp-sink or a
//! misbehaving provider. A stop or restart mid-session, fifty concurrent transactions under
//! SIGTERM, a killed proxy, a provider that hangs up or lacks TLS, the fault matrix in loopback
//! and gateway mode, BDAT and oversized data, a client that vanishes: never a 250 for a message
//! the provider did not take, never a message lost that was acknowledged.

mod common;

use std::process::{Command, Output};
use std::time::Duration;

use common::submission::*;
use testkit::procs::smtp_sink as sink;

#[test]
fn a_stop_finishes_the_message_in_flight_and_says_goodbye_to_idle_clients() {
    let s = Setup::new("plaintext");
    let _sink = sink(&s.dump(), s.upstream, &[]);
    let mut e = s.envelopd();
    let mut idle = Raw::connect(s.listen);
    assert!(idle.send(b"EHLO idle.example\r\n").starts_with("250"));
    let mut busy = Raw::connect(s.listen);
    assert!(busy.send(b"EHLO busy.example\r\n").starts_with("250"));
    assert!(busy
        .send(b"MAIL FROM:<alice@smime.example>\r\n")
        .starts_with("250"));
    assert!(busy
        .send(b"RCPT TO:<carol@other.example>\r\n")
        .starts_with("250"));
    assert!(busy.send(b"DATA\r\n").starts_with("354"));
    {
        use std::io::Write;
        busy.stream
            .get_mut()
            .write_all(b"Subject: in flight\r\n\r\nfirst half\r\n")
            .unwrap();
    }
    // Ctrl-C for the daemon, while one message is half transferred.
    testkit::procs::signal(e.0.id(), "INT");
    // The idle client is told to come back later.
    assert!(idle.reply().starts_with("421 4.3.2"));
    // The busy client finishes its message and gets the provider's 250.
    assert!(
        busy.send(b"second half\r\n.\r\n").starts_with("250"),
        "the message in flight must be delivered"
    );
    let status = e.0.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let stored = s.messages();
    assert_eq!(stored.len(), 1);
    assert!(String::from_utf8_lossy(&stored[0]).contains("second half"));
    assert!(
        s.log().contains("finishing open sessions first"),
        "{}",
        s.log()
    );
}

/// A LAN client speaking SMTP through `openssl s_client -starttls smtp` (OpenSSL does the
/// first EHLO and STARTTLS), reply by reply.
struct TlsRaw {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl TlsRaw {
    fn connect(host: &str, port: u16) -> TlsRaw {
        use std::io::BufRead;
        use std::process::Stdio;
        let mut child = Command::new("openssl")
            .args(["s_client", "-quiet", "-ign_eof", "-starttls", "smtp"])
            .args(["-connect", &format!("{host}:{port}")])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = std::io::BufReader::new(child.stdout.take().unwrap());
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in out.lines() {
                let Ok(l) = l else { break };
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        TlsRaw { child, lines }
    }

    fn reply(&mut self) -> String {
        smtp_reply(|| {
            self.lines
                .recv_timeout(Duration::from_secs(20))
                .unwrap_or_default()
        })
    }

    fn write(&mut self, bytes: &[u8]) {
        use std::io::Write;
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin.write_all(bytes).unwrap();
        stdin.flush().unwrap();
    }

    fn send(&mut self, bytes: &[u8]) -> String {
        self.write(bytes);
        self.reply()
    }

    /// EHLO again over TLS and log in as Alice (the relay makes smtp-sink's answer a 235).
    fn login(&mut self) {
        assert!(self.send(b"EHLO lan.example\r\n").starts_with("250"));
        let plain = smime::mime::base64_lines(b"\0alice@smime.example\0alice-pw");
        let auth = format!(
            "AUTH PLAIN {}\r\n",
            String::from_utf8_lossy(&plain).trim_end()
        );
        let r = self.send(auth.as_bytes());
        assert!(r.starts_with("235"), "{r}");
    }
}

impl Drop for TlsRaw {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_gateway_restarted_mid_session_loses_nothing_it_acknowledged() {
    // envelopd as the LAN gateway (STARTTLS, logins) is stopped (SIGTERM, as systemd does on a
    // restart) while one LAN client is idle and another is half-way through its message. The
    // half-sent message is finished and delivered, the idle client is told to come back (421),
    // and after the restart its retry goes through: every 250 is a stored message.
    let s = Setup::gateway("plaintext", "");
    let lan = s.gateway.as_ref().unwrap().0.clone();
    let _sink = sink(&s.dump(), s.upstream, &[]);
    let mut e = s.envelopd();
    let mut idle = TlsRaw::connect(&lan, s.listen);
    idle.login();
    let mut busy = TlsRaw::connect(&lan, s.listen);
    busy.login();
    assert!(busy
        .send(b"MAIL FROM:<alice@smime.example>\r\n")
        .starts_with("250"));
    assert!(busy
        .send(b"RCPT TO:<carol@other.example>\r\n")
        .starts_with("250"));
    assert!(busy.send(b"DATA\r\n").starts_with("354"));
    busy.write(b"Subject: in flight\r\n\r\nfirst half\r\n");
    testkit::procs::signal(e.0.id(), "TERM");
    let r = idle.reply();
    assert!(r.starts_with("421 4.3.2"), "{r}");
    let r = busy.send(b"second half\r\n.\r\n");
    assert!(r.starts_with("250"), "the message in flight: {r}");
    assert!(e.0.wait().unwrap().success());
    // The restarted gateway takes the idle client's retry.
    let _e2 = s.envelopd();
    let o = s.swaks(
        &["carol@other.example"],
        &["Subject: retried after the restart"],
        "after the restart",
    );
    assert!(o.status.success(), "{}", transcript(&o));
    std::thread::sleep(Duration::from_millis(300));
    let stored: Vec<String> = s
        .messages()
        .iter()
        .map(|m| String::from_utf8_lossy(m).into_owned())
        .collect();
    assert_eq!(stored.len(), 2, "{stored:?}");
    assert!(stored.iter().any(|m| m.contains("second half")));
    assert!(stored.iter().any(|m| m.contains("after the restart")));
}

#[test]
fn sigterm_during_fifty_concurrent_transactions_loses_nothing() {
    // 50 clients at once: a third half-way through their message's data, a third between RCPT
    // and DATA, a third only greeted. SIGTERM (systemd's stop) arrives: every client must get
    // the provider's 250 or a 4xx, every 250 must be a stored message, and the process must
    // end by itself once the messages in flight are through.
    let s = Setup::new("plaintext");
    let _sink = sink(&s.dump(), s.upstream, &[]);
    let mut e = s.envelopd();
    const N: usize = 50;
    // Channels, not barriers: a client that fails before the stop must fail the test, not
    // leave the others waiting forever.
    let (ready_tx, ready) = std::sync::mpsc::channel::<Result<(), String>>();
    let mut gos = Vec::new();
    let listen = s.listen;
    let clients: Vec<_> = (0..N)
        .map(|i| {
            let ready_tx = ready_tx.clone();
            let (go_tx, go) = std::sync::mpsc::channel::<()>();
            gos.push(go_tx);
            std::thread::spawn(move || -> (usize, String) {
                use std::io::Write;
                let mut c = Raw::connect(listen);
                let step = |c: &mut Raw, cmd: String, want: &str| {
                    let r = c.send(cmd.as_bytes());
                    if r.starts_with(want) {
                        Ok(())
                    } else {
                        Err(format!("client {i}: {cmd:?} got {r:?}"))
                    }
                };
                let prepared = (|| {
                    step(&mut c, "EHLO many.example\r\n".into(), "250")?;
                    if i % 3 != 2 {
                        step(&mut c, "MAIL FROM:<alice@smime.example>\r\n".into(), "250")?;
                        step(&mut c, format!("RCPT TO:<r{i}@other.example>\r\n"), "250")?;
                    }
                    if i % 3 == 0 {
                        step(&mut c, "DATA\r\n".into(), "354")?;
                        write!(
                            c.stream.get_mut(),
                            "Subject: concurrent {i}\r\n\r\nfirst half of message {i}\r\n"
                        )
                        .map_err(|e| e.to_string())?;
                    }
                    Ok(())
                })();
                let failed = prepared.is_err();
                let _ = ready_tx.send(prepared);
                if failed || go.recv().is_err() {
                    return (i, String::new());
                }
                let reply = if i % 3 == 0 {
                    c.send(format!("second half of message <{i}>\r\n.\r\n").as_bytes())
                } else {
                    // Between commands: told to come back later, without having to ask.
                    c.reply()
                };
                (i, reply)
            })
        })
        .collect();
    for _ in 0..N {
        ready
            .recv_timeout(Duration::from_secs(60))
            .expect("a client hung before the stop")
            .unwrap();
    }
    testkit::procs::signal(e.0.id(), "TERM");
    std::thread::sleep(Duration::from_millis(200));
    for g in gos {
        g.send(()).unwrap();
    }
    let outcomes: Vec<(usize, String)> = clients.into_iter().map(|t| t.join().unwrap()).collect();
    let status = e.0.wait().unwrap();
    assert!(status.success(), "{status:?}");
    std::thread::sleep(Duration::from_millis(300));
    let stored: Vec<String> = s
        .messages()
        .iter()
        .map(|m| String::from_utf8_lossy(m).into_owned())
        .collect();
    let mut accepted = 0;
    for (i, reply) in &outcomes {
        assert!(
            reply.starts_with("250") || reply.starts_with('4'),
            "client {i} got {reply:?}"
        );
        let has = stored
            .iter()
            .any(|m| m.contains(&format!("second half of message <{i}>")));
        if reply.starts_with("250") {
            accepted += 1;
            assert!(has, "client {i} was told 250 but the provider has nothing");
        } else {
            assert!(!has, "client {i} was refused but the message was stored");
        }
    }
    eprintln!(
        "SIGTERM during {N} transactions: {accepted} delivered with 250, {} told 4xx",
        N - accepted
    );
    assert_eq!(
        accepted,
        N.div_ceil(3),
        "every message in flight is finished"
    );
}

#[test]
fn a_killed_proxy_never_yields_250() {
    // envelopd killed (SIGKILL) in the middle of DATA: the client sees the connection drop.
    let s = Setup::new("plaintext");
    let _sink = sink(&s.dump(), s.upstream, &[]);
    let mut e = s.envelopd();
    let mut c = Raw::connect(s.listen);
    assert!(c.send(b"EHLO c.example\r\n").starts_with("250"));
    assert!(c
        .send(b"MAIL FROM:<alice@smime.example>\r\n")
        .starts_with("250"));
    assert!(c
        .send(b"RCPT TO:<carol@other.example>\r\n")
        .starts_with("250"));
    assert!(c.send(b"DATA\r\n").starts_with("354"));
    e.0.kill().unwrap();
    e.0.wait().unwrap();
    use std::io::{BufRead, Write};
    let _ = c
        .stream
        .get_mut()
        .write_all(b"Subject: x\r\n\r\nhalf-sent body\r\n.\r\n");
    let mut line = String::new();
    let got = c.stream.read_line(&mut line);
    assert!(
        got.is_err() || line.is_empty(),
        "no reply may come from a dead proxy: {line:?}"
    );
    assert!(
        s.stored()
            .iter()
            .all(|m| !String::from_utf8_lossy(m).contains("half-sent body")),
        "the provider must not have the message"
    );
}

#[test]
fn a_provider_that_hangs_up_at_data_gives_4xx_and_keeps_nothing() {
    let s = Setup::new("plaintext");
    // smtp-sink disconnects without a reply when it receives DATA.
    let _sink = sink(&s.dump(), s.upstream, &["-q", "data"]);
    let _e = s.envelopd();
    let o = s.swaks(
        &["carol@other.example"],
        &["From: alice@smime.example"],
        BODY,
    );
    let t = transcript(&o);
    assert!(!o.status.success() && t.contains("451 4.4.1"), "{t}");
    assert!(s
        .stored()
        .iter()
        .all(|m| !String::from_utf8_lossy(m).contains(BODY)));
}

/// One run of the fault matrix: what the client was told, and whether the provider has it.
struct FaultRun {
    fault: String,
    reply: String,
    accepted: bool,
    stored: bool,
}

/// The last reply swaks received (the one that decided the outcome).
fn last_reply(o: &Output) -> String {
    transcript(o)
        .lines()
        // `<-` / `<**` in the clear, `<~` / `<~*` inside TLS.
        .filter(|l| ["<-", "<**", "<~"].iter().any(|p| l.starts_with(p)))
        .rfind(|l| !l.contains(" 221 "))
        .unwrap_or("(no reply)")
        .trim_start_matches(['<', '-', '*', '~', ' '])
        .to_string()
}

#[test]
fn fault_matrix_never_loses_a_message() {
    // The provider answers 4xx, 5xx or nothing at every stage, or is too slow (envelopd waits
    // 1 s per reply and 2 s after the message here). For each fault a message with a unique body
    // is sent; "lost" is a 250 to the client for a message the provider does not have.
    fault_matrix(&Setup::with("plaintext", "timeout = 1"));
}

#[test]
fn fault_matrix_in_gateway_mode_never_loses_a_message() {
    // The same faults with envelopd as the practice's LAN gateway: the client comes over the LAN
    // address with STARTTLS and logs in, so the provider is first reached for the login; faults
    // before that (down, greeting, EHLO) are a temporary 454 for the login.
    fault_matrix(&Setup::gateway("plaintext", "timeout = 1"));
}

fn fault_matrix(s: &Setup) {
    let _e = s.envelopd();
    let gw = s.gateway.is_some();
    let at_login = |code: u16| if gw { 454 } else { code };
    let faults: &[(&str, &[&str], u16)] = &[
        ("provider down", &[], at_login(451)),
        ("greeting 4xx", &["-r", "connect"], at_login(451)),
        ("EHLO 5xx", &["-f", "ehlo"], at_login(451)),
        ("MAIL 4xx", &["-r", "mail"], 450),
        ("MAIL 5xx", &["-f", "mail"], 500),
        ("RCPT 4xx", &["-r", "rcpt"], 450),
        ("RCPT 5xx", &["-f", "rcpt"], 500),
        ("DATA 4xx", &["-r", "data"], 450),
        ("DATA 5xx", &["-f", "data"], 500),
        ("end of data 4xx", &["-r", "."], 450),
        ("end of data 5xx", &["-f", "."], 500),
        ("hang-up at MAIL", &["-q", "mail"], 451),
        ("hang-up at RCPT", &["-q", "rcpt"], 451),
        ("hang-up at DATA", &["-q", "data"], 451),
        ("hang-up after the message", &["-q", "."], 451),
        ("421 after the message", &["-Q", "."], 451),
        ("421 at RCPT", &["-Q", "rcpt"], 451),
        ("aborts during DATA (550)", &["-A", "0"], 550),
        // 2 MiB do not fit the socket buffers: envelopd's write fails on the closed connection,
        // and the provider's 550 sent before hanging up must still be what the client hears.
        ("aborts during a 2 MiB message (550)", &["-A", "0"], 550),
        ("slow MAIL (timeout)", &["-W", "mail:3"], 451),
        ("slow end of data (timeout)", &["-W", ".:4"], 451),
        ("healthy", &[], 250),
    ];
    let mut runs = Vec::new();
    for (i, (fault, opts, want)) in faults.iter().enumerate() {
        let body = format!("fault case {i}: {fault}");
        let _sink = (*fault != "provider down").then(|| sink(&s.dump(), s.upstream, opts));
        let o = if fault.contains("2 MiB") {
            // Too long for a command-line argument: swaks reads it from a file ("@path").
            let file = s.dir.path().join("big-body.txt");
            let filler = "0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstu\n";
            std::fs::write(&file, format!("{body}\n{}", filler.repeat(2 << 20 >> 6))).unwrap();
            let at = format!("@{}", file.display());
            s.swaks(&["carol@other.example"], &["Subject: fault"], &at)
        } else {
            s.swaks(&["carol@other.example"], &["Subject: fault"], &body)
        };
        let reply = last_reply(&o);
        // smtp-sink may write its dump a moment after the reply; slow cases reply late.
        std::thread::sleep(Duration::from_millis(if fault.contains("slow") {
            4000
        } else {
            200
        }));
        let stored = s
            .stored()
            .iter()
            .any(|m| String::from_utf8_lossy(m).contains(&body));
        assert!(
            reply.starts_with(&want.to_string()),
            "{fault}: expected {want}, the client got {reply:?}\n{}",
            transcript(&o)
        );
        runs.push(FaultRun {
            fault: fault.to_string(),
            accepted: o.status.success() && reply.starts_with("250"),
            reply,
            stored,
        });
    }
    let mut table = format!(
        "\n{} mode\nfault ",
        if gw {
            "gateway (LAN, STARTTLS, login)"
        } else {
            "loopback"
        }
    );
    table.push_str(&format!(
        "{:<31}{:<48}provider has it\n",
        "", "client reply"
    ));
    for r in &runs {
        table.push_str(&format!(
            "{:<36} {:<47} {}\n",
            r.fault,
            r.reply.chars().take(47).collect::<String>(),
            if r.stored { "yes" } else { "no" }
        ));
    }
    let lost = runs.iter().filter(|r| r.accepted && !r.stored).count();
    let duplicates_possible = runs.iter().filter(|r| !r.accepted && r.stored).count();
    table.push_str(&format!(
        "lost messages: {lost}; refused but stored anyway (client retries, a duplicate at worst): {duplicates_possible}\n"
    ));
    eprintln!("{table}");
    assert_eq!(lost, 0, "{table}");
    assert!(
        runs.last().unwrap().accepted && runs.last().unwrap().stored,
        "{table}"
    );
}

#[test]
fn a_provider_without_tls_gets_nothing_when_tls_is_configured() {
    // smtp-sink offers no STARTTLS and speaks no TLS: envelopd must not fall back to plaintext.
    for (mode, want) in [("starttls", "does not offer STARTTLS"), ("implicit", "TLS")] {
        let s = Setup::new("plaintext");
        let cfg = s.dir.path().join("proxy.toml");
        let text = std::fs::read_to_string(&cfg).unwrap().replace(
            "tls = \"none\"",
            &format!("tls = \"{mode}\"\nca_file = \"trust/ca.pem\"\nsystem_roots = false"),
        );
        std::fs::write(&cfg, text).unwrap();
        let _sink = sink(&s.dump(), s.upstream, &[]);
        let _e = s.envelopd();
        let o = s.swaks(&["carol@other.example"], &["Subject: tls"], BODY);
        let reply = last_reply(&o);
        assert!(
            !o.status.success() && reply.starts_with("451 4.7.0") && reply.contains(want),
            "{mode}: {reply}"
        );
        assert!(s.messages().is_empty(), "{mode}: nothing may be sent");
    }
}

#[test]
fn bdat_chunks_and_oversized_data_are_handled_without_losing_the_session() {
    let s = Setup::new("plaintext");
    let cfg = s.dir.path().join("proxy.toml");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("[smtp]\n", "[smtp]\nmax_message_size = 20000\n");
    std::fs::write(&cfg, text).unwrap();
    let _sink = sink(&s.dump(), s.upstream, &[]);
    let _e = s.envelopd();
    let mut c = Raw::connect(s.listen);
    let expect = |reply: String, code: &str| {
        assert!(reply.starts_with(code), "expected {code}, got {reply:?}")
    };
    let ehlo = c.send(b"EHLO client.example\r\n");
    assert!(
        ehlo.contains("CHUNKING") && ehlo.contains("SIZE 20000"),
        "{ehlo}"
    );
    // BDAT before MAIL: refused, and its bytes are skipped rather than read as commands.
    expect(c.send(b"BDAT 12 LAST\r\nNOOP\r\nNOOP\r\n"), "503 5.5.1");
    expect(c.send(b"NOOP\r\n"), "250");
    // A message in three chunks; a line with a lone dot inside a chunk is data, not the end.
    expect(c.send(b"MAIL FROM:<alice@smime.example>\r\n"), "250");
    expect(c.send(b"RCPT TO:<carol@other.example>\r\n"), "250");
    let part1 = b"From: alice@smime.example\r\nSubject: chunked\r\n\r\n";
    let part2 = b"first chunk\r\n.\r\nstill the message\r\n";
    let part3 = b"last chunk\r\n";
    expect(
        c.send(&[format!("BDAT {}\r\n", part1.len()).as_bytes(), part1].concat()),
        "250 2.0.0",
    );
    expect(
        c.send(&[format!("BDAT {}\r\n", part2.len()).as_bytes(), part2].concat()),
        "250 2.0.0",
    );
    let last = c.send(&[format!("BDAT {} LAST\r\n", part3.len()).as_bytes(), part3].concat());
    assert!(
        last.starts_with("250 2.0.0 Ok"),
        "the provider's reply: {last}"
    );
    // DATA inside a BDAT transaction is refused and the transaction is gone.
    expect(c.send(b"MAIL FROM:<alice@smime.example>\r\n"), "250");
    expect(c.send(b"RCPT TO:<carol@other.example>\r\n"), "250");
    expect(c.send(b"BDAT 4\r\nabcd"), "250");
    expect(c.send(b"DATA\r\n"), "503 5.5.1");
    expect(c.send(b"RCPT TO:<carol@other.example>\r\n"), "503 5.5.1");
    // A DATA message over the limit: 552 after the end, and the session goes on.
    expect(c.send(b"MAIL FROM:<alice@smime.example>\r\n"), "250");
    expect(c.send(b"RCPT TO:<carol@other.example>\r\n"), "250");
    expect(c.send(b"DATA\r\n"), "354");
    let mut big = b"Subject: too big\r\n\r\n".to_vec();
    for _ in 0..400 {
        big.extend_from_slice(&[b'x'; 76]);
        big.extend_from_slice(b"\r\n");
    }
    big.extend_from_slice(b".\r\n");
    expect(c.send(&big), "552 5.3.4");
    // Over the limit in BDAT too.
    expect(c.send(b"MAIL FROM:<alice@smime.example>\r\n"), "250");
    expect(c.send(b"RCPT TO:<carol@other.example>\r\n"), "250");
    let chunk = vec![b'y'; 25000];
    expect(
        c.send(&[b"BDAT 25000 LAST\r\n".as_slice(), &chunk].concat()),
        "552 5.3.4",
    );
    expect(c.send(b"NOOP\r\n"), "250");
    expect(c.send(b"QUIT\r\n"), "221");
    let stored = s.messages();
    assert_eq!(stored.len(), 1, "only the chunked message was delivered");
    let text = String::from_utf8_lossy(&stored[0]);
    assert!(
        text.contains("first chunk")
            && text.contains("still the message")
            && text.contains("last chunk"),
        "{text}"
    );
}

#[test]
fn a_client_that_vanishes_mid_data_sends_nothing_and_others_go_on() {
    let s = Setup::new("plaintext");
    let _sink = sink(&s.dump(), s.upstream, &[]);
    let _e = s.envelopd();
    {
        let mut c = Raw::connect(s.listen);
        assert!(c.send(b"EHLO c.example\r\n").starts_with("250"));
        assert!(c
            .send(b"MAIL FROM:<alice@smime.example>\r\n")
            .starts_with("250"));
        assert!(c
            .send(b"RCPT TO:<carol@other.example>\r\n")
            .starts_with("250"));
        assert!(c.send(b"DATA\r\n").starts_with("354"));
        use std::io::Write;
        c.stream
            .get_mut()
            .write_all(b"Subject: cut\r\n\r\nhalf a message that never ends\r\n")
            .unwrap();
        // The connection drops here without the final dot.
    }
    std::thread::sleep(Duration::from_millis(300));
    let o = s.swaks(&["carol@other.example"], &["Subject: next"], BODY);
    assert!(o.status.success(), "{}", transcript(&o));
    let stored = s.messages();
    assert_eq!(stored.len(), 1, "only the complete message arrives");
    assert!(!String::from_utf8_lossy(&stored[0]).contains("half a message"));
}
