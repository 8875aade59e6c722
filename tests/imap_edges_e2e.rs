//! End to end on the reading side, the edges: a gateway on the LAN reads only over TLS
//! (STARTTLS or IMAPS, with a login), protected subjects (RFC 9788) never reach the provider
//! and are shown in every FETCH form, and a mail program that stops reading is dropped while a
//! slow one is served. Real Dovecot, real clients, `envelopd run`.

mod common;

use std::path::Path;
use std::process::Command;

use common::provider::Provider;
use common::reading::*;
use testkit::procs::{free_port, wait_for};

const ENVELOPD: &str = env!("CARGO_BIN_EXE_envelopd");

#[test]
fn the_lan_reads_only_over_tls_with_starttls_or_imaps() {
    let provider = Provider::start();
    let (_ad, alice_smtp, _ai, _alice) = envelopd(&provider, "alice", "implicit", provider.imaps);
    let o = send_mail(
        alice_smtp,
        "alice@smime.example",
        "alice-pw",
        "bob@smime.example",
        "over the LAN",
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    provider.wait_messages("bob", 1);
    let tls_files = format!(
        "cert = \"{}\"\nkey = \"{}\"\n",
        provider.dir.path().join("tls/server.pem").display(),
        provider.dir.path().join("tls/server.key").display()
    );
    // A gateway: IMAP on all addresses with STARTTLS, reached through this machine's LAN address.
    let dir = tempfile::tempdir().unwrap();
    let imap = free_port();
    let bob_key = dir.path().join("bob.p12");
    std::fs::copy(common::rfc9216().join("bob.p12"), &bob_key).unwrap();
    std::fs::write(dir.path().join("pw"), "bob\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    for f in ["bob.p12", "pw"] {
        std::fs::set_permissions(dir.path().join(f), std::fs::Permissions::from_mode(0o600))
            .unwrap();
    }
    std::fs::write(
        dir.path().join("proxy.toml"),
        format!(
            "[smtp]\nlisten = \"127.0.0.1:{}\"\n[imap]\nlisten = \"0.0.0.0:{imap}\"\ntls = \"starttls\"\n{tls_files}\
             [upstream.smtp]\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\n\
             [upstream.imap]\nhost = \"localhost\"\nport = {}\ntls = \"implicit\"\nca_file = \"{}\"\nsystem_roots = false\n\
             [[identity]]\naddresses = [\"bob@smime.example\"]\npkcs12 = \"bob.p12\"\npassword_file = \"pw\"\n",
            free_port(),
            provider.plain,
            provider.imaps,
            provider.ca().display()
        ),
    )
    .unwrap();
    let _e = common::run_envelopd(
        &dir.path().join("proxy.toml"),
        &dir.path().join("envelopd.log"),
    );
    wait_for(imap);
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/clients/imap_tls_edges.py");
    let o = Command::new("python3")
        .arg(script)
        .args([&testkit::procs::lan_address(), &imap.to_string()])
        .arg(provider.ca())
        .args(["bob@smime.example", "bob-pw"])
        .output()
        .unwrap();
    let log = std::fs::read_to_string(dir.path().join("envelopd.log")).unwrap();
    assert!(
        o.status.success(),
        "{}{}\n{log}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    // A LAN listener without TLS is refused at start-up.
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        std::fs::read_to_string(dir.path().join("proxy.toml"))
            .unwrap()
            .replace("tls = \"starttls\"\n", ""),
    )
    .unwrap();
    let o = Command::new(ENVELOPD)
        .args(["check", "--no-connect", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("listening beyond this machine needs TLS"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// RFC 9788 through real Postfix and Dovecot: Alice's envelopd sends three encrypted messages to
/// Bob (header protection on, on with a Legacy Display Element, off). The provider stores
/// `[...]` as Subject of the protected ones and nothing of the real Subject; Bob reading through
/// his envelopd sees the real Subject in every FETCH form and finds it with SEARCH; the Legacy
/// Display Element is hidden; no envelopd log (at debug level) contains the Subject.
#[test]
fn protected_subjects_are_hidden_from_the_provider_and_shown_in_every_fetch_form() {
    const WORD: &str = "Roentgen";
    let subject = |kind: &str| format!("Befund Patientin M. {WORD} Thorax {kind}");
    let provider = Provider::start();
    let debug = [("RUST_LOG", "debug")];
    let mut dirs = Vec::new();
    let mut procs = Vec::new();
    for (kind, policy) in [
        ("on", ""),
        ("legacy", "[policy]\nlegacy_display = true\n"),
        ("off", "[policy]\nheader_protection = \"off\"\n"),
    ] {
        let (dir, smtp, _imap, p) = envelopd_env(
            &provider,
            "alice",
            "implicit",
            provider.imaps,
            policy,
            &debug,
            "",
        );
        let o = send_mail(
            smtp,
            "alice@smime.example",
            "alice-pw",
            "bob@smime.example",
            &subject(kind),
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
        // One at a time, so the UIDs follow the order on, legacy, off.
        provider.wait_messages("bob", dirs.len() + 1);
        dirs.push(dir);
        procs.push(p);
    }
    let stored = provider.wait_messages("bob", 3);
    assert_eq!(stored.len(), 3);
    let v = common::rfc9216();
    let bob_key = v.join("bob.encrypt.key");
    for (i, copy) in stored.iter().enumerate() {
        let text = String::from_utf8_lossy(copy);
        assert!(
            text.contains("application/pkcs7-mime"),
            "copy {i} not encrypted"
        );
        let inside = String::from_utf8_lossy(&openssl(
            &["cms", "-decrypt", "-inkey", bob_key.to_str().unwrap()],
            copy,
        ))
        .into_owned();
        if i < 2 {
            // The provider has only "[...]": the real Subject is inside the encryption only.
            assert_eq!(subject_of(copy), "[...]", "copy {i}");
            assert!(
                !text.contains(WORD) && !text.contains("Thorax"),
                "copy {i}: {text}"
            );
            assert!(inside.contains(&format!("Subject: {}\r\n", subject(["on", "legacy"][i]))));
            assert!(
                inside.contains("hp=\"cipher\"") && inside.contains("HP-Outer: Subject: [...]")
            );
            assert_eq!(
                inside.contains("hp-legacy-display"),
                i == 1,
                "copy {i}: {inside}"
            );
        } else {
            assert_eq!(subject_of(copy), subject("off"));
            assert!(!inside.contains("hp="), "{inside}");
        }
    }

    let status = free_port();
    let (bob_dir, _bs, bob_imap, _bob) = envelopd_env(
        &provider,
        "bob",
        "implicit",
        provider.imaps,
        &format!("[status]\nlisten = \"127.0.0.1:{status}\"\n"),
        &debug,
        "",
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/clients/imap_headers.py");
    let o = Command::new("python3")
        .arg(script)
        .args([&bob_imap.to_string(), "bob@smime.example", "bob-pw", WORD])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "imap_headers.py: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let seen: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let msgs = seen["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 3);
    for (m, kind) in msgs.iter().zip(["on", "legacy", "off"]) {
        let want = subject(kind);
        let body = b64d(&m["body"]);
        let header = b64d(&m["header"]);
        assert_eq!(subject_of(&body), want, "{kind}: BODY[]");
        assert_eq!(subject_of(&header), want, "{kind}: BODY[HEADER]");
        assert_eq!(
            subject_of(&b64d(&m["rfc822_header"])),
            want,
            "{kind}: RFC822.HEADER"
        );
        assert_eq!(
            b64d(&m["subject_field"]),
            format!("Subject: {want}\r\n\r\n").into_bytes(),
            "{kind}: HEADER.FIELDS"
        );
        assert!(
            m["envelope"]
                .as_str()
                .unwrap()
                .contains(&format!("\"{want}\"")),
            "{kind}: ENVELOPE {}",
            m["envelope"]
        );
        assert!(
            !String::from_utf8_lossy(&header).contains("[...]"),
            "{kind}"
        );
        assert!(
            !String::from_utf8_lossy(&header).contains("HP-Outer"),
            "{kind}"
        );
        // The header and text forms agree with BODY[] and its size.
        let text = b64d(&m["text"]);
        assert_eq!(
            [header.as_slice(), text.as_slice()].concat(),
            body,
            "{kind}"
        );
        assert_eq!(m["size"].as_u64().unwrap() as usize, body.len(), "{kind}");
        let text = String::from_utf8_lossy(&text);
        assert!(text.contains(SECRET), "{kind}: {text}");
        assert!(
            !text.contains(WORD),
            "{kind}: Legacy Display Element shown: {text}"
        );
        let status = status_of(&body).unwrap();
        assert!(status.contains("signature=valid"), "{kind}: {status}");
        assert_eq!(
            status.contains("headers=protected"),
            kind != "off",
            "{status}"
        );
    }
    let uids: Vec<u64> = msgs.iter().map(|m| m["uid"].as_u64().unwrap()).collect();
    let found = |key: &str| -> Vec<u64> {
        seen[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u.as_u64().unwrap())
            .collect()
    };
    assert_eq!(found("search_subject"), uids, "SEARCH SUBJECT");
    assert_eq!(found("search_header"), uids, "SEARCH HEADER Subject");

    // Bob's envelopd counted the three S/MIME messages it decrypted for reading (each at
    // least once; the cache spares repeats), none failed, the IMAP server was always reachable.
    let m = common::scrape(status);
    let sample = |name: &str, label: Option<(&str, &str)>| -> f64 {
        common::metric(&m, name, label.as_slice())
    };
    let decrypted = sample(
        "envelopd_imap_smime_opened_total",
        Some(("result", "decrypted")),
    );
    assert!((3.0..=9.0).contains(&decrypted), "{decrypted}: {m:?}");
    assert_eq!(
        sample(
            "envelopd_imap_smime_opened_total",
            Some(("result", "failed"))
        ),
        0.0
    );
    assert_eq!(sample("envelopd_imap_open_seconds_count", None), decrypted);
    assert_eq!(
        sample("envelopd_upstream_errors_total", Some(("proto", "imap"))),
        0.0
    );
    assert!(sample("envelopd_sessions_total", Some(("proto", "imap"))) >= 1.0);

    // No log line of any envelopd (debug level), after full sessions (AUTH, signing, encryption,
    // IMAP login, decryption, verification), carries a secret: the protected Subject, the body,
    // the provider passwords (as typed or in the AUTH PLAIN encoding), or private-key material.
    drop(procs);
    let mut secrets: Vec<String> = vec![
        WORD.into(),
        "Thorax".into(),
        SECRET.into(),
        "unauffaellig".into(),
        "alice-pw".into(),
        "bob-pw".into(),
    ];
    for user in ["alice", "bob"] {
        let plain = format!("\0{user}@smime.example\0{user}-pw");
        for v in [plain, format!("{user}-pw")] {
            let b64 = smime::mime::base64_lines(v.as_bytes());
            secrets.push(String::from_utf8_lossy(&b64).trim_end().to_string());
        }
    }
    for key in [
        "alice.sign.key",
        "alice.encrypt.key",
        "bob.sign.key",
        "bob.encrypt.key",
    ] {
        let pem = std::fs::read_to_string(v.join(key)).unwrap();
        // Any full base64 line of the key, and its DER in Rust's Debug and hex forms.
        let lines: Vec<&str> = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        secrets.extend(lines.iter().skip(2).map(|l| l.to_string()));
        let der = smime::mime::base64_decode(lines.concat().as_bytes()).unwrap();
        let middle = &der[der.len() / 2..der.len() / 2 + 12];
        secrets.push(format!("{middle:?}").trim_matches(['[', ']']).to_string());
        secrets.push(middle.iter().map(|b| format!("{b:02x}")).collect());
    }
    for dir in dirs.iter().map(|d| d.path()).chain([bob_dir.path()]) {
        let log = std::fs::read_to_string(dir.join("envelopd.log")).unwrap();
        assert!(log.contains("DEBUG"), "debug logging was on");
        for s in &secrets {
            assert!(
                !log.contains(s.as_str()),
                "{s:?} in the log of {}:\n{log}",
                dir.display()
            );
        }
    }
}

#[test]
fn a_mail_program_that_stops_reading_is_dropped_and_a_slow_one_is_not() {
    // An 8 MiB message (an X-ray attached, say) fetched through envelopd with a 4 s command
    // timeout: a mail program that keeps reading, however slowly (64 KiB per 50 ms, so at least
    // 6.4 s for all of it), gets all of it; one that stops reading is dropped after 4 s without
    // progress instead of holding the session and its Dovecot connection forever. (With 2 s the
    // slow reader was once dropped in a loaded CI-like run: a stall of the whole shared machine
    // looks like a reader that stopped.)
    let provider = Provider::start();
    let line = "Roentgenbild Zahn 36, Aufnahme vom Vormittag, ohne Befund.\r\n";
    let body = line.repeat(8 * 1024 * 1024 / line.len());
    let msg =
        format!("From: alice@smime.example\r\nTo: bob@smime.example\r\nSubject: big\r\n\r\n{body}");
    provider.deliver("bob", "big.eml", msg.as_bytes());
    let (dir, _smtp, imap, _p) = envelopd_env(
        &provider,
        "bob",
        "starttls",
        provider.imap,
        "",
        &[],
        "command_timeout = 4\n",
    );
    let script = r#"
import socket, sys, time
port, mode = int(sys.argv[1]), sys.argv[2]
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)  # before connect: a small window
s.connect(("127.0.0.1", port))
buf = b""
def until(token):
    global buf
    while token not in buf:
        d = s.recv(65536)
        if not d:
            sys.exit("closed before " + token.decode())
        buf += d
until(b"\r\n")
s.sendall(b"a LOGIN bob@smime.example bob-pw\r\n"); until(b"a OK")
s.sendall(b"b SELECT INBOX\r\n"); until(b"b OK")
buf = b""
s.sendall(b"c FETCH 1 BODY.PEEK[]\r\n")
started = time.time()
if mode == "stops":
    time.sleep(10)
while b"c OK" not in buf:
    if mode == "slow":
        time.sleep(0.05)
    d = s.recv(65536)
    if not d:
        print("closed", len(buf))
        sys.exit(0)
    buf += d
print("complete", len(buf), int(time.time() - started))
"#;
    let run = |mode: &str| {
        let o = Command::new("python3")
            .args(["-c", script, &imap.to_string(), mode])
            .output()
            .unwrap();
        let out =
            String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{mode}: {out}");
        let words: Vec<String> = out.split_whitespace().map(String::from).collect();
        (words[0].clone(), words[1].parse::<usize>().unwrap(), out)
    };
    let (how, bytes, out) = run("slow");
    assert_eq!(how, "complete", "{out}");
    assert!(bytes > 8 * 1024 * 1024, "{out}");
    let seconds: u64 = out.split_whitespace().nth(2).unwrap().parse().unwrap();
    assert!(
        seconds > 4,
        "the slow reader was not slower than the timeout: {out}"
    );
    let (how, bytes, out) = run("stops");
    assert_eq!(how, "closed", "{out}");
    assert!(bytes < 8 * 1024 * 1024, "{out}");
    let log = std::fs::read_to_string(dir.path().join("envelopd.log")).unwrap();
    assert!(
        log.contains("timed out") || log.contains("TimedOut"),
        "{log}"
    );
}
