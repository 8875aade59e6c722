//! End to end: swaks (a real SMTP client) -> `envelopd run` -> Postfix's smtp-sink (a real SMTP
//! server that writes each accepted message to a file). The stored copies are checked with
//! OpenSSL; faults (provider down, provider refusing DATA, policy refusal) must never produce a
//! 250 for a message the provider did not take.

mod common;

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use testkit::procs::{free_port, smtp_sink as sink, wait_for, Proc};

struct Setup {
    _serial: std::sync::MutexGuard<'static, ()>,
    dir: tempfile::TempDir,
    listen: u16,
    /// Where smtp-sink listens.
    upstream: u16,
    /// Gateway mode: envelopd on the LAN address with STARTTLS and logins required (the LAN
    /// address; the AUTH relay in front of smtp-sink).
    gateway: Option<(String, Proc)>,
}

/// The tests pick free ports by binding port 0; running them one at a time keeps one test's
/// listener from landing on a port another test just picked.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl Setup {
    fn new(fallback: &str) -> Setup {
        Setup::with(fallback, "")
    }

    /// With extra lines for the `[upstream.smtp]` section.
    fn with(fallback: &str, upstream_extra: &str) -> Setup {
        Setup::build(fallback, upstream_extra, false, &[])
    }

    /// A practice-wide gateway: listening on every address with STARTTLS (a certificate from
    /// `envelopd tls selfsigned`) and logins required; smtp-sink behind the AUTH relay
    /// (`clients/sink_auth.py`), since smtp-sink itself answers AUTH with 250.
    fn gateway(fallback: &str, upstream_extra: &str) -> Setup {
        Setup::build(fallback, upstream_extra, true, &[])
    }

    /// Gateway mode with environment variables for the relay (`clients/sink_auth.py`).
    fn gateway_relay_env(fallback: &str, upstream_extra: &str, env: &[(&str, &str)]) -> Setup {
        Setup::build(fallback, upstream_extra, true, env)
    }

    fn build(
        fallback: &str,
        upstream_extra: &str,
        gateway: bool,
        relay_env: &[(&str, &str)],
    ) -> Setup {
        let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        common::practice_dir(d, "alice", &["dump"]);
        let (listen, upstream) = (free_port(), free_port());
        let (smtp, relay_port, gateway) = if gateway {
            let lan = testkit::procs::lan_address();
            let o = Command::new(env!("CARGO_BIN_EXE_envelopd"))
                .args(["tls", "selfsigned", "--name", &lan, "--cert"])
                .arg(d.join("tls.crt"))
                .arg("--key")
                .arg(d.join("tls.key"))
                .output()
                .unwrap();
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            let relay_port = free_port();
            let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../tests/clients/sink_auth.py");
            let relay = Proc(
                Command::new("python3")
                    .arg(script)
                    .args([relay_port.to_string(), upstream.to_string()])
                    .env("SINK_AUTH_READS", d.join("relay-reads.txt"))
                    .envs(relay_env.iter().copied())
                    .spawn()
                    .unwrap(),
            );
            wait_for(relay_port);
            (
                format!(
                    "[smtp]\nlisten = \"0.0.0.0:{listen}\"\ntls = \"starttls\"\ncert = \"{}\"\nkey = \"{}\"\n",
                    d.join("tls.crt").display(),
                    d.join("tls.key").display()
                ),
                relay_port,
                Some((lan, relay)),
            )
        } else {
            (
                format!("[smtp]\nlisten = \"127.0.0.1:{listen}\"\n"),
                upstream,
                None,
            )
        };
        std::fs::write(
            d.join("proxy.toml"),
            format!(
                "{smtp}[upstream.smtp]\nhost = \"127.0.0.1\"\nport = {relay_port}\ntls = \"none\"\n{upstream_extra}\n\
                 [certificates]\nanchors = [\"trust\"]\nrecipients = \"certs\"\n\
                 [[identity]]\naddresses = [\"alice@smime.example\"]\npkcs12 = \"keys/alice.p12\"\npassword_file = \"keys/pw\"\nencryption_cert = \"keys/alice-enc.pem\"\n\
                 [policy]\nfallback = \"{fallback}\"\n"
            ),
        )
        .unwrap();
        Setup {
            _serial: serial,
            dir,
            listen,
            upstream,
            gateway,
        }
    }

    fn envelopd(&self) -> Proc {
        let p = common::run_envelopd(
            &self.dir.path().join("proxy.toml"),
            &self.dir.path().join("envelopd.log"),
        );
        wait_for(self.listen);
        p
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("envelopd.log")).unwrap_or_default()
    }

    /// Gateway mode: the commands envelopd sent to the relay, one line per read (see
    /// `clients/sink_auth.py`).
    fn relay_reads(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("relay-reads.txt")).unwrap_or_default()
    }

    fn dump(&self) -> PathBuf {
        self.dir.path().join("dump")
    }

    fn stored(&self) -> Vec<Vec<u8>> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.dump())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        // smtp-sink removes the dump of a transaction that was cut off, possibly between the
        // listing and the read: such a file holds no message.
        files.iter().filter_map(|f| std::fs::read(f).ok()).collect()
    }

    /// The stored dumps that hold a message (smtp-sink may also leave envelope-only dumps of
    /// transactions that were reset or aborted).
    fn messages(&self) -> Vec<Vec<u8>> {
        self.stored()
            .into_iter()
            .filter(|m| String::from_utf8_lossy(m).contains("\nSubject: "))
            .collect()
    }

    fn swaks(&self, to: &[&str], headers: &[&str], body: &str) -> Output {
        self.swaks_with(&[], to, headers, body)
    }

    /// `swaks` with extra options (`--pipeline`); a body of `@FILE` is read from FILE.
    fn swaks_with(&self, extra: &[&str], to: &[&str], headers: &[&str], body: &str) -> Output {
        let mut c = Command::new("swaks");
        c.args(extra);
        match &self.gateway {
            None => c.args(["--server", &format!("127.0.0.1:{}", self.listen)]),
            // From another machine's point of view: the LAN address, STARTTLS, a login.
            Some((lan, _)) => c
                .args(["--server", &format!("{lan}:{}", self.listen), "--tls"])
                .args(["--auth", "PLAIN", "--auth-user", "alice@smime.example"])
                .args(["--auth-password", "alice-pw"]),
        };
        c.args(["--from", "alice@smime.example"]);
        c.args(["--to", &to.join(",")]);
        for h in headers {
            c.args(["--header", h]);
        }
        c.args(["--body", body, "--timeout", "30"]);
        c.output().expect("swaks is installed")
    }
}

fn transcript(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

const BODY: &str = "Befund Herr Muster: unauffaellig.";

#[test]
fn mail_to_a_recipient_with_a_certificate_is_stored_signed_and_encrypted() {
    let s = Setup::new("refuse");
    let _sink = sink(&s.dump(), s.upstream, &[]);
    let _e = s.envelopd();
    let o = s.swaks(
        &["bob@smime.example"],
        &["From: Alice <alice@smime.example>", "Subject: Befund"],
        BODY,
    );
    assert!(o.status.success(), "{}", transcript(&o));
    assert!(
        transcript(&o).contains("<-  250 2.0.0 Ok"),
        "the provider's own reply reaches the client"
    );
    let stored = s.messages();
    assert_eq!(stored.len(), 1);
    let text = String::from_utf8_lossy(&stored[0]);
    assert!(
        text.contains("application/pkcs7-mime") && !text.contains(BODY),
        "the provider must only see ciphertext"
    );
    let v = common::rfc9216();
    for (key, who) in [
        ("bob.encrypt.key", "recipient"),
        ("alice.encrypt.key", "sender's Sent copy"),
    ] {
        let signed = testkit::openssl_pipe(
            &["cms", "-decrypt", "-inkey", v.join(key).to_str().unwrap()],
            &stored[0],
        )
        .unwrap_or_else(|e| panic!("{who}: {e}"));
        let content = testkit::openssl_pipe(
            &[
                "cms",
                "-verify",
                "-CAfile",
                v.join("ca.rsa.crt").to_str().unwrap(),
            ],
            &signed,
        )
        .unwrap();
        assert!(String::from_utf8_lossy(&content).contains(BODY), "{who}");
    }
    // The log says what was done (the audit line below), never what was written.
    let log = s.log();
    assert!(
        !log.contains("Muster") && !log.contains("alice\n"),
        "body or password in the log:\n{log}"
    );
    // One audit line per message, in its stable key=value form.
    let audit: Vec<&str> = log.lines().filter(|l| l.contains("audit v1 ")).collect();
    assert_eq!(audit.len(), 1, "{log}");
    let line = audit[0];
    for field in [
        "proto=smtp",
        "peer=127.0.0.1",
        "login=-",
        "from=alice@smime.example",
        "rcpts=bob@smime.example",
        "decision=encrypted",
        "cipher=aes-256-cbc",
        "signed_as=alice@smime.example",
        "copies=1",
        "reply=250",
    ] {
        assert!(line.contains(field), "{field} missing in {line}");
    }
}

#[test]
fn refusals_and_faults_never_look_like_success() {
    let s = Setup::new("refuse");
    // Provider down: 4xx at MAIL, the client keeps the message.
    let _e = s.envelopd();
    let o = s.swaks(&["bob@smime.example"], &[], BODY);
    assert!(!o.status.success());
    assert!(
        transcript(&o).contains("451 4.4.1 provider not reachable"),
        "{}",
        transcript(&o)
    );

    // Policy: no certificate for carol -> 550 5.7.1 naming her; nothing reaches the provider.
    let _sink = sink(&s.dump(), s.upstream, &[]);
    let o = s.swaks(
        &["bob@smime.example", "carol@other.example"],
        &["From: alice@smime.example"],
        BODY,
    );
    assert!(!o.status.success());
    assert!(transcript(&o).contains("550 5.7.1 Encryption required, but no valid certificate for: carol@other.example (no certificate)"), "{}", transcript(&o));
    // smtp-sink may leave an envelope-only dump for an aborted transaction; the message itself
    // must not have reached it.
    assert!(
        s.stored()
            .iter()
            .all(|m| !String::from_utf8_lossy(m).contains(BODY)),
        "a refused message must not be sent"
    );
}

#[test]
fn the_providers_refusal_of_the_data_is_what_the_client_sees() {
    let s = Setup::new("plaintext");
    // smtp-sink rejects the DATA command with 5xx.
    let _sink = sink(&s.dump(), s.upstream, &["-f", "data"]);
    let _e = s.envelopd();
    let o = s.swaks(&["bob@smime.example"], &["From: alice@smime.example"], BODY);
    assert!(!o.status.success());
    let t = transcript(&o);
    assert!(
        !t.contains("<-  250 2.0.0 Ok\n -> QUIT") && t.contains("<** 5"),
        "{t}"
    );
    // smtp-sink may leave an envelope-only dump of the aborted transaction; not the message.
    assert!(s
        .stored()
        .iter()
        .all(|m| !String::from_utf8_lossy(m).contains(BODY)));
}

/// Alice writes to herself and sends Bob a blind copy: two copies, each its own transaction.
fn alice_to_herself_with_bob_in_bcc(s: &Setup) -> Vec<Vec<u8>> {
    let o = s.swaks(
        &["alice@smime.example", "bob@smime.example"],
        &[
            "From: alice@smime.example",
            "To: alice@smime.example",
            "Bcc: bob@smime.example",
        ],
        BODY,
    );
    assert!(o.status.success(), "{}", transcript(&o));
    let stored = s.messages();
    assert_eq!(stored.len(), 2, "one copy per group");
    stored
}

#[test]
fn bcc_recipients_get_separate_copies() {
    let s = Setup::new("refuse");
    let _sink = sink(&s.dump(), s.upstream, &[]);
    let _e = s.envelopd();
    let mut stored = alice_to_herself_with_bob_in_bcc(&s);
    stored.sort_by_key(|m| String::from_utf8_lossy(m).contains("X-Rcpt-Args: <bob@smime.example>"));
    let v = common::rfc9216();
    // Alice's copy: Bob cannot open it. Bob's copy: he can; no Bcc header anywhere.
    assert!(testkit::openssl_pipe(
        &[
            "cms",
            "-decrypt",
            "-inkey",
            v.join("bob.encrypt.key").to_str().unwrap()
        ],
        &stored[0]
    )
    .is_err());
    assert!(testkit::openssl_pipe(
        &[
            "cms",
            "-decrypt",
            "-inkey",
            v.join("bob.encrypt.key").to_str().unwrap()
        ],
        &stored[1]
    )
    .is_ok());
    for m in &stored {
        assert!(!String::from_utf8_lossy(m).to_lowercase().contains("\nbcc:"));
    }
}

#[test]
fn separate_copies_pipeline_their_envelope_when_the_provider_offers_it() {
    // A Bcc makes two copies, each its own transaction after the client's one. With PIPELINING
    // offered, each copy's MAIL and RCPT leave in one write; without it (smtp-sink -p), one at a
    // time. The relay notes which commands arrived together in one read.
    for (sink_options, pipelined) in [(&[][..], true), (&["-p"][..], false)] {
        let s = Setup::gateway("refuse", "");
        let _sink = sink(&s.dump(), s.upstream, sink_options);
        let _e = s.envelopd();
        alice_to_herself_with_bob_in_bcc(&s);
        let reads = s.relay_reads();
        let together = reads.lines().filter(|l| *l == "MAIL RCPT").count();
        let copies = if pipelined { 2 } else { 0 };
        assert_eq!(together, copies, "pipelined: {pipelined}\n{reads}");
        // The client's own MAIL and RCPTs were each relayed when the client sent them.
        assert!(
            reads.lines().take(4).eq(["EHLO", "MAIL", "RCPT", "RCPT"]),
            "{reads}"
        );
    }
}

#[test]
fn a_pipelining_client_s_recipients_go_to_the_provider_in_one_write() {
    // swaks --pipeline sends MAIL, the RCPTs and DATA in one go. With PIPELINING at the
    // provider, envelopd relays MAIL and the RCPTs together too (one round trip for the whole
    // envelope) and answers each; without it (smtp-sink -p), one at a time. (Mixed answers in
    // one group, in order, against Postfix: provider_e2e.rs.)
    for (sink_options, pipelined) in [(&[][..], true), (&["-p"][..], false)] {
        let s = Setup::gateway("plaintext", "");
        let _sink = sink(&s.dump(), s.upstream, sink_options);
        let _e = s.envelopd();
        let o = s.swaks_with(
            &["--pipeline"],
            &[
                "alice@smime.example",
                "bob@smime.example",
                "carol@plain.example",
            ],
            &["From: alice@smime.example"],
            BODY,
        );
        let t = transcript(&o);
        assert!(o.status.success(), "{t}\n{}", s.log());
        // The client got one 250 per recipient, then 354 and the provider's final 250.
        assert_eq!(t.matches("<~  250 2.1.5").count(), 3, "{t}");
        let stored = s.messages();
        assert_eq!(stored.len(), 1, "{}", s.log());
        assert!(String::from_utf8_lossy(&stored[0]).contains("X-Rcpt-Args: <carol@plain.example>"));
        let reads = s.relay_reads();
        // swaks writes each command on its own, so how many of them envelopd finds together
        // depends on timing (what arrived while an earlier group was answered goes on
        // together): fewer provider reads than commands. A client writing the envelope at
        // once, with the exact grouping: the next test.
        let envelope: Vec<&str> = reads
            .lines()
            .filter(|l| l.starts_with("MAIL") || l.starts_with("RCPT"))
            .collect();
        let commands: usize = envelope.iter().map(|l| l.split(' ').count()).sum();
        assert_eq!(commands, 4, "{reads}");
        if pipelined {
            assert!(envelope.len() < 4, "{reads}");
        } else {
            assert_eq!(envelope, ["MAIL", "RCPT", "RCPT", "RCPT"], "{reads}");
        }
    }
}

/// Sends MAIL, two RCPTs and DATA in one TLS write (as a pipelining mail program may) through the gateway,
/// with the login, and returns the four replies, one per line.
fn pipelined_envelope(s: &Setup) -> String {
    let (lan, _) = s.gateway.as_ref().expect("a gateway setup");
    let script = format!(
        "import smtplib, ssl\n\
         ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE\n\
         s = smtplib.SMTP('{lan}', {}, timeout=30)\n\
         s.ehlo(); s.starttls(context=ctx); s.ehlo(); s.login('alice@smime.example', 'alice-pw')\n\
         s.sock.sendall(b'MAIL FROM:<alice@smime.example>\\r\\nRCPT TO:<alice@smime.example>\\r\\n'\n\
                        b'RCPT TO:<bob@smime.example>\\r\\nDATA\\r\\n')\n\
         for _ in range(4):\n    code, text = s.getreply(); print(code, text.decode())\n\
         s.close()\n",
        s.listen
    );
    let o = Command::new("python3")
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&o.stderr),
        s.log()
    );
    String::from_utf8_lossy(&o.stdout).to_string()
}

#[test]
fn a_pipelined_envelope_goes_to_the_provider_in_one_write() {
    // A client that writes MAIL, the RCPTs and DATA at once: MAIL and the RCPTs reach a
    // pipelining provider in one write too (one round trip for the envelope); without
    // PIPELINING at the provider (smtp-sink -p), MAIL goes alone and then each RCPT. A MAIL the
    // provider refuses inside such a group: provider_e2e.rs (smtp-sink's refusals imply -p).
    for (sink_options, groups) in [
        (&[][..], &["MAIL RCPT RCPT"][..]),
        (&["-p"][..], &["MAIL", "RCPT", "RCPT"][..]),
    ] {
        let s = Setup::gateway("plaintext", "");
        let _sink = sink(&s.dump(), s.upstream, sink_options);
        let _e = s.envelopd();
        let out = pipelined_envelope(&s);
        let codes: Vec<&str> = out.lines().map(|l| &l[..3]).collect();
        assert_eq!(codes, ["250", "250", "250", "354"], "{out}");
        let reads = s.relay_reads();
        let envelope: Vec<&str> = reads
            .lines()
            .filter(|l| l.starts_with("MAIL") || l.starts_with("RCPT"))
            .collect();
        assert_eq!(envelope, groups, "{sink_options:?}: {reads}");
    }
}

#[test]
fn dsn_is_offered_and_passed_on_only_when_the_provider_offers_it() {
    // smtp-sink offers DSN unless told not to (-N); its dump shows the RCPT parameters it got.
    for (sink_options, offered) in [(&[][..], true), (&["-N"][..], false)] {
        let s = Setup::new("plaintext");
        let _sink = sink(&s.dump(), s.upstream, sink_options);
        let _e = s.envelopd();
        let script = format!(
            "import smtplib\n\
             s=smtplib.SMTP('127.0.0.1',{},timeout=30)\n\
             s.ehlo(); print(s.has_extn('dsn'))\n\
             s.sendmail('alice@smime.example',['carol@plain.example'],b'Subject: x\\r\\n\\r\\nhi\\r\\n',\
             ['RET=HDRS'],['NOTIFY=SUCCESS,DELAY','ORCPT=rfc822;carol@plain.example'])\n\
             s.quit()\n",
            s.listen
        );
        let o = Command::new("python3")
            .args(["-c", &script])
            .output()
            .unwrap();
        let out =
            String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{out}\n{}", s.log());
        assert_eq!(out.trim(), if offered { "True" } else { "False" });
        let stored = s.messages();
        assert_eq!(stored.len(), 1, "{}", s.log());
        let dump = String::from_utf8_lossy(&stored[0]);
        let args = dump
            .lines()
            .find(|l| l.starts_with("X-Rcpt-Args:"))
            .unwrap_or_default();
        if offered {
            assert_eq!(
                args,
                "X-Rcpt-Args: <carol@plain.example> NOTIFY=SUCCESS,DELAY ORCPT=rfc822;carol@plain.example",
                "{dump}"
            );
        } else {
            assert_eq!(args, "X-Rcpt-Args: <carol@plain.example>", "{dump}");
        }
    }
}

#[test]
fn a_large_message_over_a_slow_uplink_is_not_cut_off_while_it_moves() {
    // The provider reads at 1 MiB/s through a small window (a practice's DSL upload, scaled
    // down) and the provider timeout is 3 s: sending the 8 MiB that a 6 MiB message becomes
    // takes far longer than 3 s, but every piece moves in time, so the message goes through.
    let s = Setup::gateway_relay_env("refuse", "timeout = 3", &[("SINK_AUTH_RATE", "1048576")]);
    let _sink = sink(&s.dump(), s.upstream, &[]);
    let _e = s.envelopd();
    let line = "Befund unauffaellig, Roentgenbild folgt in der naechsten Nachricht.\r\n";
    let body = line.repeat(6 * 1024 * 1024 / line.len());
    let file = s.dir.path().join("big.txt");
    std::fs::write(&file, &body).unwrap();
    let started = std::time::Instant::now();
    let o = s.swaks(
        &["bob@smime.example"],
        &["From: alice@smime.example"],
        &format!("@{}", file.display()),
    );
    let took = started.elapsed();
    let t = transcript(&o);
    assert!(
        o.status.success(),
        "{}\n{}",
        t.lines()
            .filter(|l| !l.starts_with(" -> ") && !l.starts_with(" ~> "))
            .collect::<Vec<_>>()
            .join("\n"),
        s.log()
    );
    assert!(
        took > Duration::from_secs(4),
        "the slow provider was not slow: {took:?}"
    );
    let stored = s.messages();
    assert_eq!(stored.len(), 1);
    assert!(stored[0].len() > 8_000_000, "{}", stored[0].len());
}

/// One SMTP reply from `next_line` (empty at the end of the stream): its lines up to the last
/// one, whose code is not followed by '-'.
fn smtp_reply(mut next_line: impl FnMut() -> String) -> String {
    let mut all = String::new();
    loop {
        let line = next_line();
        all.push_str(&line);
        if !line.is_empty() && !line.ends_with('\n') {
            all.push('\n');
        }
        if line.len() < 4 || line.as_bytes()[3] != b'-' {
            return all;
        }
    }
}

/// A raw SMTP conversation: send a line, return the reply lines.
struct Raw {
    stream: std::io::BufReader<TcpStream>,
}

impl Raw {
    fn connect(port: u16) -> Raw {
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut r = Raw {
            stream: std::io::BufReader::new(s),
        };
        assert!(r.reply().starts_with("220 "));
        r
    }

    fn reply(&mut self) -> String {
        use std::io::BufRead;
        smtp_reply(|| {
            let mut line = String::new();
            self.stream.read_line(&mut line).unwrap();
            line
        })
    }

    fn send(&mut self, bytes: &[u8]) -> String {
        use std::io::Write;
        self.stream.get_mut().write_all(bytes).unwrap();
        self.reply()
    }
}

#[test]
fn bad_client_input_gets_smtp_errors_and_the_session_stays_sane() {
    let s = Setup::new("plaintext");
    let _sink = sink(&s.dump(), s.upstream, &[]);
    let _e = s.envelopd();
    let mut c = Raw::connect(s.listen);
    let expect = |reply: String, code: &str| {
        assert!(reply.starts_with(code), "expected {code}, got {reply:?}")
    };
    expect(c.send(b"MAIL FROM:<alice@smime.example>\r\n"), "503 5.5.1");
    expect(c.send(b"EHLO client.example\r\n"), "250-");
    expect(c.send(b"RCPT TO:<bob@smime.example>\r\n"), "503 5.5.1");
    expect(c.send(b"DATA\r\n"), "503 5.5.1");
    // Overlong lines get one error each, and the next command is read cleanly.
    let mut long = b"VRFY ".to_vec();
    long.extend(std::iter::repeat_n(b'A', 5000));
    long.extend_from_slice(b"\r\n");
    expect(c.send(&long), "50");
    expect(c.send(b"NOOP\r\n"), "250");
    let mut junk = vec![b'A'; 5000];
    junk.extend_from_slice(b"\r\n");
    expect(c.send(&junk), "500");
    expect(c.send(b"NOOP\r\n"), "250");
    expect(c.send(b"HELLO there\r\n"), "500 5.5.2");
    expect(c.send(b"NO\0OP\r\n"), "500");
    expect(c.send(b"NOOP\n"), "250");
    expect(
        c.send(b"MAIL FROM:<alice@smime.example> SIZE=999999999999\r\n"),
        "552 5.3.4",
    );
    expect(c.send(b"STARTTLS\r\n"), "454 4.7.0");
    expect(c.send(b"\x16\x03\x01\x02\x00garbage\r\n"), "500");
    expect(c.send(b"MAIL FROM:<alice@smime.example>\r\n"), "250");
    expect(c.send(b"MAIL FROM:<alice@smime.example>\r\n"), "503 5.5.1");
    for i in 0..1000 {
        expect(
            c.send(format!("RCPT TO:<r{i}@other.example>\r\n").as_bytes()),
            "250",
        );
    }
    expect(
        c.send(b"RCPT TO:<one-too-many@other.example>\r\n"),
        "452 4.5.3",
    );
    expect(c.send(b"RSET\r\n"), "250");
    // A whole transaction still works after all that, and bare LF in the body is stored as CRLF.
    expect(c.send(b"MAIL FROM:<alice@smime.example>\r\n"), "250");
    expect(c.send(b"RCPT TO:<carol@other.example>\r\n"), "250");
    expect(c.send(b"DATA\r\n"), "354");
    expect(
        c.send(
            b"From: alice@smime.example\r\nSubject: t\r\n\r\nline one\nline two\r\n..dot\r\n.\r\n",
        ),
        "250",
    );
    expect(c.send(b"QUIT\r\n"), "221");
    let stored = s.messages();
    assert_eq!(stored.len(), 1);
    let text = String::from_utf8_lossy(&stored[0]);
    // smtp-sink stores lines with LF; what matters is one dot, unstuffed and re-stuffed correctly.
    assert!(
        text.contains("\nline two\n.dot\n") || text.contains("\nline two\r\n.dot\r\n"),
        "{text}"
    );
    assert!(!text.contains("..dot"), "{text}");
}

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
