//! The POP3 side at its edges, with the real binary: a misbehaving server (lying sizes, closing
//! in the middle of RETR, not speaking POP3, overlong lines), TLS for mail programs (STLS with
//! plaintext pipelined behind it, POP3S), and a large mailbox with a 50 MB S/MIME message in
//! bounded memory against real Dovecot.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::provider::Provider;
use common::reading::*;
use testkit::procs::{free_port, wait_for, Proc};

/// `VmHWM` (peak resident memory) of a process, in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .map(|v| v.trim().parse().unwrap())
        .unwrap();
    kb * 1024
}

fn fake_server(mode: &str) -> (Proc, u16) {
    use std::io::BufRead;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/clients/fake_pop3.py");
    for _ in 0..5 {
        let port = free_port();
        let mut child = Command::new("python3")
            .arg(&script)
            .args([&port.to_string(), mode])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        let stdout = child.stdout.take().unwrap();
        let _ = std::io::BufReader::new(stdout).read_line(&mut line);
        let p = Proc(child);
        if line.trim() == "ready" {
            return (p, port);
        }
    }
    panic!("fake_pop3.py could not listen on any of five free ports");
}

/// envelopd with only a POP3 side, in front of `upstream` (`tls` towards it, `ca` trusted),
/// with `listener` lines added to its `[pop3]` section.
fn envelopd(
    upstream: u16,
    tls: &str,
    ca: Option<&Path>,
    listener: &str,
) -> (tempfile::TempDir, u16, u16, Proc) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    common::practice_dir(d, "bob", &[]);
    let (smtp, pop3) = (free_port(), free_port());
    let ca = ca
        .map(|c| format!("ca_file = \"{}\"\nsystem_roots = false\n", c.display()))
        .unwrap_or_default();
    std::fs::write(
        d.join("proxy.toml"),
        format!(
            "[smtp]\nlisten = \"127.0.0.1:{smtp}\"\n[pop3]\nlisten = \"127.0.0.1:{pop3}\"\n{listener}\
             [upstream.smtp]\nhost = \"127.0.0.1\"\nport = 9\ntls = \"none\"\n\
             [upstream.pop3]\nhost = \"localhost\"\nport = {upstream}\ntls = \"{tls}\"\n{ca}\
             [certificates]\nanchors = [\"trust\"]\n\
             [[identity]]\naddresses = [\"bob@smime.example\"]\npkcs12 = \"keys/bob.p12\"\npassword_file = \"keys/pw\"\n"
        ),
    )
    .unwrap();
    let p = common::run_envelopd(&d.join("proxy.toml"), &d.join("envelopd.log"));
    wait_for(pop3);
    (dir, smtp, pop3, p)
}

/// Runs a Python program with `poplib` imported and `port` set; its output.
fn python(port: u16, program: &str) -> (bool, String) {
    let code = format!("import poplib, socket, ssl, sys\nport = {port}\n{program}\n");
    let o = Command::new("python3")
        .arg("-c")
        .arg(code)
        .output()
        .unwrap();
    (
        o.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

const LOGIN: &str =
    "p = poplib.POP3('127.0.0.1', port, timeout=30)\np.user('bob@smime.example')\np.pass_('bob-pw')\n";

#[test]
fn a_misbehaving_server_gets_clear_errors_and_the_daemon_goes_on() {
    // Sizes: envelopd lists the size it sends for the message it shows, whatever the server
    // claimed; a plain message keeps the server's own claim (as without envelopd).
    let (_fake, port) = fake_server("lie");
    let (dir, _s, pop3, _e) = envelopd(port, "none", None, "");
    let (ok, out) = python(
        pop3,
        &format!(
            "{LOGIN}_, lines, _ = p.list()\nsizes = dict(l.split() for l in lines)\n\
             _, m, octets = p.retr(1)\nprint(int(sizes[b'1']) == octets, m[0].decode())\n\
             print(p.stat())\np.quit()\n"
        ),
    );
    assert!(
        ok,
        "{out}\n{}",
        std::fs::read_to_string(dir.path().join("envelopd.log")).unwrap()
    );
    assert!(
        out.starts_with("True X-Envelopd: decrypted=failed"),
        "{out}"
    );

    // Cut in the middle of RETR: the client sees a broken reply, not a shortened message; the
    // daemon serves the next session.
    let (_fake, port) = fake_server("cut");
    let (dir, _s, pop3, _e) = envelopd(port, "none", None, "");
    let (ok, out) = python(
        pop3,
        &format!("{LOGIN}try:\n    p.retr(2)\n    print('complete')\nexcept Exception as e:\n    print('broken', type(e).__name__)\n"),
    );
    assert!(ok && out.starts_with("broken"), "{out}");
    let (ok, out) = python(pop3, &format!("{LOGIN}print(p.retr(1)[2] > 0)\np.quit()\n"));
    assert!(
        ok && out.trim() == "True",
        "{out}\n{}",
        std::fs::read_to_string(dir.path().join("envelopd.log")).unwrap()
    );

    // A server that does not speak POP3, or sends an endless line: a clear -ERR.
    for (mode, reason) in [("garbage", "is not POP3"), ("overlong", "overlong line")] {
        let (_fake, port) = fake_server(mode);
        let (_dir, _s, pop3, _e) = envelopd(port, "none", None, "");
        let (ok, out) = python(
            pop3,
            &format!("{LOGIN}try:\n    p.stat()\nexcept poplib.error_proto as e:\n    print(e)\n"),
        );
        assert!(ok, "{out}");
        assert!(
            out.contains("-ERR [SYS/TEMP] envelopd") && out.contains(reason),
            "{mode}: {out}"
        );
    }
}

#[test]
fn stls_and_pop3s_for_mail_programs() {
    let provider = Provider::start();
    provider.deliver(
        "bob",
        "1.plain",
        &mail("Carol <carol@smime.example>", "plain", "Hello Bob."),
    );
    let tls = provider.dir.path().join("tls");
    let ca = provider.ca();
    let listener = |mode: &str| {
        format!(
            "tls = \"{mode}\"\ncert = \"{}\"\nkey = \"{}\"\n",
            tls.join("server.pem").display(),
            tls.join("server.key").display()
        )
    };
    // STLS: plaintext pipelined behind STLS is thrown away, not obeyed under TLS.
    let (d, _s, pop3, _e) = envelopd(provider.pop3s, "implicit", Some(&ca), &listener("starttls"));
    // `envelopd check` reaches the POP3 server exactly as a session does.
    let o = Command::new(env!("CARGO_BIN_EXE_envelopd"))
        .args(["check", "--config"])
        .arg(d.path().join("proxy.toml"))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        said.contains(&format!(
            "programs that fetch by POP3 read through 127.0.0.1:{pop3}"
        )) && said.contains("POP3 listener TLS certificate and key load and match")
            && said.contains(&format!(
                "POP3 server localhost:{}: reachable, TLS as configured; it greets with: +OK",
                provider.pop3s
            )),
        "{said}"
    );
    // ... and says so when the server's certificate is not trusted.
    let wrong = d.path().join("wrong.toml");
    std::fs::write(
        &wrong,
        std::fs::read_to_string(d.path().join("proxy.toml"))
            .unwrap()
            .replace(
                &format!("ca_file = \"{}\"", ca.display()),
                "ca_file = \"trust/ca.pem\"",
            ),
    )
    .unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_envelopd"))
        .args(["check", "--config"])
        .arg(&wrong)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(!o.status.success(), "{said}");
    assert!(
        said.contains(&format!(
            "POP3 server localhost:{}: TLS with the mail server failed",
            provider.pop3s
        )),
        "{said}"
    );
    let (ok, out) = python(
        pop3,
        &format!(
            "s = socket.create_connection(('127.0.0.1', port))\nf = s.makefile('rb')\nf.readline()\n\
             s.sendall(b'STLS\\r\\nUSER bob@smime.example\\r\\n')\nprint(f.readline().decode().strip())\n\
             ctx = ssl.create_default_context(cafile='{}')\nt = ctx.wrap_socket(s, server_hostname='localhost')\n\
             g = t.makefile('rb')\nt.sendall(b'PASS bob-pw\\r\\n')\nprint(g.readline().decode().strip())\n\
             t.sendall(b'CAPA\\r\\n')\ncaps = []\nwhile True:\n    l = g.readline().decode().strip()\n    caps.append(l)\n    if l == '.':\n        break\n\
             print(' '.join(caps))\n",
            ca.display()
        ),
    );
    assert!(ok, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "+OK Begin TLS negotiation");
    assert!(lines[1].starts_with("-ERR [AUTH] USER first"), "{out}");
    assert!(
        lines[2].contains("USER") && !lines[2].contains("STLS"),
        "{out}"
    );
    // poplib's own STLS, then a whole retrieval.
    let (ok, out) = python(
        pop3,
        &format!(
            "p = poplib.POP3('127.0.0.1', port)\nprint('STLS' in p.capa())\np.stls(ssl.create_default_context(cafile='{}'))\n\
             p.user('bob@smime.example')\np.pass_('bob-pw')\nprint(p.stat()[0], b'Subject: plain' in p.retr(1)[1])\np.quit()\n",
            ca.display()
        ),
    );
    assert!(ok, "{out}");
    assert_eq!(out.trim(), "True\n1 True");

    // POP3S: TLS from the first byte.
    let (_d, _s, pop3, _e) = envelopd(provider.pop3, "starttls", Some(&ca), &listener("implicit"));
    let (ok, out) = python(
        pop3,
        &format!(
            "p = poplib.POP3_SSL('127.0.0.1', port, context=ssl.create_default_context(cafile='{}'))\n\
             p.user('bob@smime.example')\np.pass_('bob-pw')\nprint(p.stat()[0])\np.quit()\n",
            ca.display()
        ),
    );
    assert!(ok, "{out}");
    assert_eq!(out.trim(), "1");
}

#[test]
fn a_thousand_messages_and_a_50_mb_one_in_bounded_memory() {
    let provider = Provider::start();
    let v = common::rfc9216();
    let p = |n: &str| v.join(n).display().to_string();
    // One small S/MIME message (signed by Alice, encrypted to Bob), 500 times, between 500
    // plain ones.
    let small = openssl(
        &[
            "cms",
            "-sign",
            "-signer",
            &p("alice.sign.crt"),
            "-inkey",
            &p("alice.sign.key"),
        ],
        &mail("Alice <alice@smime.example>", "small", SECRET),
    );
    let small = openssl(
        &[
            "cms",
            "-encrypt",
            "-aes-256-cbc",
            "-from",
            "Alice <alice@smime.example>",
            "-to",
            "bob@smime.example",
            "-subject",
            "small",
            &p("bob.encrypt.crt"),
        ],
        &small,
    );
    let plain = mail("Carol <carol@smime.example>", "plain", SECRET);
    for i in 0..1000 {
        let m = if i % 2 == 1 { &small } else { &plain };
        provider.deliver("bob", &format!("{:04}.msg", i), m);
    }
    // The large one: a 37 MB attachment, encrypted (about 50 MB stored).
    let mut inner =
        b"Content-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n".to_vec();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let raw: Vec<u8> = (0..27_000_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    inner.extend_from_slice(&smime::mime::base64_lines(&raw));
    let large = openssl(
        &[
            "cms",
            "-encrypt",
            "-aes-256-cbc",
            "-from",
            "Alice <alice@smime.example>",
            "-to",
            "bob@smime.example",
            "-subject",
            "large",
            &p("bob.encrypt.crt"),
        ],
        &inner,
    );
    let largest = large.len() as u64;
    assert!(largest > 48_000_000, "{largest}");
    provider.deliver("bob", "1000.large", &large);
    drop((inner, raw, large));

    let (dir, _s, pop3, e) = envelopd(provider.pop3, "starttls", Some(&provider.ca()), "");
    let (ok, out) = python(
        pop3,
        &format!(
            "{LOGIN}count, total = p.stat()\n_, lines, _ = p.list()\nsizes = [int(l.split()[1]) for l in lines]\n\
             got = 0\nshown = 0\nfor i in range(1, count + 1):\n    _, m, octets = p.retr(i)\n    assert octets == sizes[i - 1], (i, octets, sizes[i - 1])\n\
             \x20   got += octets\n    shown += m[0].startswith(b'X-Envelopd: decrypted=aes-256-cbc')\n\
             assert got == total\n_, top, _ = p.top(count, 0)\nprint(count, shown, top[0].decode())\np.quit()\n"
        ),
    );
    assert!(
        ok,
        "{out}\n{}",
        std::fs::read_to_string(dir.path().join("envelopd.log")).unwrap()
    );
    assert!(
        out.starts_with("1001 501 X-Envelopd: decrypted=aes-256-cbc"),
        "{out}"
    );
    let peak = peak_rss(e.0.id());
    let bound = (64 << 20) + 2 * largest;
    println!(
        "POP3: 1,001 messages, largest {:.1} MiB: peak RSS {:.1} MiB, bound {:.1} MiB",
        largest as f64 / 1048576.0,
        peak as f64 / 1048576.0,
        bound as f64 / 1048576.0
    );
    assert!(peak <= bound, "peak {peak} over the bound {bound}");
}
