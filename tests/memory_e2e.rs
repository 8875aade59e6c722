//! Memory bounds with real servers and real clients: a mail program syncing a folder bigger
//! than envelopd's memory bound while reading slowly, and eight large submissions at once.
//! The bound (issue 20): peak RSS at most 64 MiB plus twice the largest message in flight.

mod common;

use std::process::Command;

use common::provider::Provider;
use common::reading::*;

const ENVELOPD: &str = env!("CARGO_BIN_EXE_envelopd");

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

/// A message with a base64 attachment of about `size` bytes (random, so nothing compresses).
fn message(i: usize, size: usize, encrypted: bool) -> Vec<u8> {
    let mut data = vec![0u8; size * 3 / 4];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ i as u64;
    for b in data.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    let mut m = format!(
        "From: Alice <alice@smime.example>\r\nTo: bob@smime.example\r\nSubject: {} {i}\r\n\
         MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\n\
         Content-Type: text/plain\r\n\r\n{SECRET} ({i})\r\n--b\r\nContent-Type: image/jpeg\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n",
        if encrypted { "encrypted" } else { "plain" }
    )
    .into_bytes();
    m.extend_from_slice(&smime::mime::base64_lines(&data));
    m.extend_from_slice(b"\r\n--b--\r\n");
    m
}

/// The body of a message (after the first empty line).
fn body(m: &[u8]) -> &[u8] {
    let at = m.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    &m[at + 4..]
}

#[test]
fn a_slow_sync_of_a_folder_bigger_than_the_bound_stays_under_it_in_order_and_exact() {
    let provider = Provider::start();
    let v = common::rfc9216();
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("alice.sign.key");
    std::fs::copy(v.join("alice.sign.key"), &key).unwrap();
    common::lab::set_mode(&key, 0o600);
    // 36 messages, 150 MB stored: 12 of 6-9 MB encrypted to Bob (by OpenSSL, AES-256-CBC, and
    // by envelopd, signed by Alice then AES-128-GCM), 6 plain of 8 MB, 18 small ones.
    let mut originals = Vec::new();
    let mut stored: Vec<Vec<u8>> = Vec::new();
    for i in 0..36 {
        let (size, encrypted) = match i % 6 {
            0 | 3 => (6_000_000 + i * 50_000, true),
            1 => (8_000_000, false),
            _ => (20_000 + i * 1000, i % 2 == 0),
        };
        let m = message(i, size, encrypted);
        let s = if !encrypted {
            m.clone()
        } else if i % 4 == 0 {
            openssl(
                &[
                    "cms",
                    "-encrypt",
                    "-binary",
                    "-aes-256-cbc",
                    v.join("bob.encrypt.crt").to_str().unwrap(),
                ],
                &m,
            )
        } else {
            let f = dir.path().join(format!("{i}.eml"));
            std::fs::write(&f, &m).unwrap();
            let signed = Command::new(ENVELOPD)
                .args(["smime", "sign", "--key"])
                .arg(&key)
                .arg("--cert")
                .arg(v.join("alice.sign.crt"))
                .arg("--in")
                .arg(&f)
                .output()
                .unwrap();
            assert!(signed.status.success(), "{signed:?}");
            std::fs::write(&f, &signed.stdout).unwrap();
            let sealed = Command::new(ENVELOPD)
                .args(["smime", "encrypt", "--cipher", "aes128-gcm", "--to"])
                .arg(v.join("bob.encrypt.crt"))
                .arg("--in")
                .arg(&f)
                .output()
                .unwrap();
            assert!(sealed.status.success(), "{:?}", sealed);
            sealed.stdout
        };
        originals.push((m, encrypted));
        stored.push(s);
    }
    let total: usize = stored.iter().map(Vec::len).sum();
    let largest = stored.iter().map(Vec::len).max().unwrap() as u64;
    let bound = (64 << 20) + 2 * largest;
    assert!(
        total as u64 > bound + (32 << 20),
        "the folder must be bigger than the bound"
    );
    let refs: Vec<&[u8]> = stored.iter().map(Vec::as_slice).collect();
    provider.folder_with("smime.example/bob", "", 7, &refs);

    let (edir, _smtp, imap, daemon) = envelopd(&provider, "bob", "starttls", provider.imap);
    let pid = daemon.0.id();
    // The daemon restarted itself (same process) with glibc's mmap threshold fixed.
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    assert!(
        environ
            .split(|&b| b == 0)
            .any(|v| v.starts_with(b"MALLOC_MMAP_THRESHOLD_=")),
        "allocator setting missing"
    );
    // A slow mail program: a small receive window, 64 KiB at a time with a pause, so envelopd
    // must wait for it while the server has everything ready.
    let script = r#"
import hashlib, json, re, socket, sys, time
port = int(sys.argv[1])
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
s.settimeout(120)  # a stalled sync fails the test instead of hanging it
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
buf = bytearray()
started = time.time()
s.sendall(b"c UID FETCH 1:* BODY.PEEK[]\r\n")
while not re.search(rb"\r\nc (OK|NO|BAD)", b"\r\n" + bytes(buf[-200:]) if len(buf) <= 200 else bytes(buf[-200:])):
    time.sleep(0.003)
    d = s.recv(65536)
    if not d:
        sys.exit("closed after %d bytes" % len(buf))
    buf += d
buf = bytes(buf)
out, pos = [], 0
for m in re.finditer(rb"\* \d+ FETCH \(UID (\d+) BODY\[\] \{(\d+)\}\r\n", buf):
    if m.start() < pos:
        continue
    n = int(m.group(2))
    data = buf[m.end():m.end() + n]
    pos = m.end() + n
    head, _, body = data.partition(b"\r\n\r\n")
    out.append({"uid": int(m.group(1)), "len": n, "all": hashlib.sha256(data).hexdigest(),
                "body": hashlib.sha256(body).hexdigest(), "first": head.split(b"\r\n")[0].decode()})
print(json.dumps({"seconds": time.time() - started, "bytes": len(buf), "messages": out,
                  "end": buf[-60:].decode("latin-1")}))
"#;
    let o = Command::new("python3")
        .args(["-c", script, &imap.to_string()])
        .output()
        .unwrap();
    let log = std::fs::read_to_string(edir.path().join("envelopd.log")).unwrap_or_default();
    assert!(
        o.status.success(),
        "{}{}\n{log}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(r["end"].as_str().unwrap().contains("c OK"), "{}", r["end"]);
    let got = r["messages"].as_array().unwrap();
    assert_eq!(got.len(), stored.len());
    let sha = |d: &[u8]| {
        use aws_lc_rs::digest::{digest, SHA256};
        digest(&SHA256, d)
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    for (i, ((original, encrypted), g)) in originals.iter().zip(got).enumerate() {
        assert_eq!(g["uid"], i + 1, "in order");
        if *encrypted {
            // Decrypted (and for envelopd's, verified): the status first, the body exactly
            // the one the sender wrote.
            let first = g["first"].as_str().unwrap();
            assert!(
                first.starts_with("X-Envelopd: decrypted=aes-"),
                "{i}: {first}"
            );
            if i % 4 != 0 {
                assert!(first.contains("signature=valid"), "{i}: {first}");
            }
            assert_eq!(g["body"], sha(body(original)), "{i}: body");
        } else {
            assert_eq!(g["all"], sha(original), "{i}: plain passes byte for byte");
        }
    }
    let peak = peak_rss(pid);
    println!(
        "{} messages, {:.0} MB stored, largest {:.1} MB, {:.1} s: envelopd peak RSS {:.1} MiB (bound {:.1} MiB)",
        got.len(),
        total as f64 / 1e6,
        largest as f64 / 1e6,
        r["seconds"].as_f64().unwrap(),
        peak as f64 / 1048576.0,
        bound as f64 / 1048576.0
    );
    assert!(
        peak <= bound,
        "peak RSS {} MiB over the bound {} MiB",
        peak >> 20,
        bound >> 20
    );
}

#[test]
fn one_and_eight_concurrent_40_mb_submissions_stay_under_the_bound_and_all_arrive_protected() {
    let s = common::submission::Setup::new("refuse");
    let _sink = testkit::procs::smtp_sink(&s.dump(), s.upstream, &[]);
    let daemon = s.envelopd();
    let pid = daemon.0.id();
    let dir = tempfile::tempdir().unwrap();
    let originals: Vec<Vec<u8>> = (0..8).map(|i| message(100 + i, 40_000_000, true)).collect();
    let largest = originals.iter().map(Vec::len).max().unwrap() as u64;
    for (i, m) in originals.iter().enumerate() {
        std::fs::write(dir.path().join(format!("{i}.eml")), m).unwrap();
    }
    // Eight mail programs at once, each submitting one 40 MB message (a scan attached).
    let script = r#"
import smtplib, sys, threading
port, d, first, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
errors = []
def send(i):
    try:
        data = open("%s/%d.eml" % (d, i), "rb").read()
        with smtplib.SMTP("127.0.0.1", port, timeout=300) as c:
            c.sendmail("alice@smime.example", ["bob@smime.example"], data)
    except Exception as e:
        errors.append("%d: %r" % (i, e))
ts = [threading.Thread(target=send, args=(i,)) for i in range(first, first + n)]
[t.start() for t in ts]
[t.join() for t in ts]
print("\n".join(errors) or "all sent")
sys.exit(1 if errors else 0)
"#;
    let submit = |first: usize, n: usize| {
        let o = Command::new("python3")
            .args(["-c", script, &s.listen.to_string()])
            .arg(dir.path())
            .args([first.to_string(), n.to_string()])
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{}{}\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr),
            s.log()
        );
    };
    // One alone first (the first one's copy comes back among the eight below), then eight.
    submit(0, 1);
    let peak_one = peak_rss(pid);
    let bound_one = (64 << 20) + 2 * largest;
    submit(0, 8);
    let peak = peak_rss(pid);
    let bound = (64 << 20) + 2 * largest * 8;
    let stored = s.messages();
    assert_eq!(stored.len(), 9);
    let v = common::rfc9216();
    let mut seen = Vec::new();
    for m in &stored {
        let text = String::from_utf8_lossy(&m[..m.len().min(4096)]).to_string();
        assert!(text.contains("application/pkcs7-mime"), "{text}");
        // OpenSSL opens each: Bob's key decrypts, Alice's signature verifies.
        let signed = openssl(
            &[
                "cms",
                "-decrypt",
                "-inkey",
                v.join("bob.encrypt.key").to_str().unwrap(),
            ],
            m,
        );
        let content = openssl(
            &[
                "cms",
                "-verify",
                "-CAfile",
                v.join("ca.rsa.crt").to_str().unwrap(),
            ],
            &signed,
        );
        let i = originals
            .iter()
            .position(|o| body(o) == body(&content))
            .expect("the body arrives exactly as written");
        seen.push(i);
    }
    seen.sort();
    assert_eq!(seen, [0, 0, 1, 2, 3, 4, 5, 6, 7]);
    println!(
        "1 x {:.1} MB submitted: envelopd peak RSS {:.1} MiB (bound {:.1} MiB, {:.2}x the message)",
        largest as f64 / 1e6,
        peak_one as f64 / 1048576.0,
        bound_one as f64 / 1048576.0,
        peak_one as f64 / largest as f64
    );
    assert!(
        peak_one <= bound_one,
        "one message: peak RSS {} MiB over the bound {} MiB",
        peak_one >> 20,
        bound_one >> 20
    );
    println!(
        "8 x {:.1} MB submitted at once: envelopd peak RSS {:.1} MiB (bound {:.1} MiB, {:.2}x the messages)",
        largest as f64 / 1e6,
        peak as f64 / 1048576.0,
        bound as f64 / 1048576.0,
        peak as f64 / (8 * largest) as f64
    );
    assert!(
        peak <= bound,
        "peak RSS {} MiB over the bound {} MiB",
        peak >> 20,
        bound >> 20
    );
}
