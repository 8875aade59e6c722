//! The trust layer end to end, through real Dovecot and `envelopd run`'s IMAP side (Python's
//! imaplib): identity spoofs signed with a valid certificate are never shown
//! `signature=valid` (messages made by OpenSSL and by envelopd's own signer); a message
//! encrypted for Bob is decrypted, searched and harvested only for logins entitled to Bob's key
//! (also a shared mailbox through `logins`); and two folders or two logins whose names differ
//! only after a space or in a literal never share a cached message.

mod common;

use std::path::Path;

use common::provider::Provider;
use testkit::procs::{free_port, wait_for, Proc};

fn v(n: &str) -> String {
    common::rfc9216().join(n).display().to_string()
}

fn openssl(args: &[&str], input: &[u8]) -> Vec<u8> {
    testkit::openssl_pipe(args, input).unwrap_or_else(|e| panic!("openssl {args:?}: {e}"))
}

/// A text message with these header lines (each ending CRLF) and body.
fn text(header: &str, body: &str) -> Vec<u8> {
    format!(
        "{header}MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n{body}\r\n"
    )
    .into_bytes()
}

/// Signed by Alice's RFC 9216 key with OpenSSL (her encryption certificate carried along);
/// routing fields stay outside.
fn openssl_signed(header: &str, body: &str) -> Vec<u8> {
    signed_by(
        &v("alice.sign.crt"),
        &v("alice.sign.key"),
        &v("alice.encrypt.crt"),
        header,
        body,
    )
}

/// Signed with OpenSSL by this certificate and key, `carried` included in the signature.
fn signed_by(crt: &str, key: &str, carried: &str, header: &str, body: &str) -> Vec<u8> {
    let signed = openssl(
        &[
            "cms",
            "-sign",
            "-signer",
            crt,
            "-inkey",
            key,
            "-certfile",
            carried,
            "-binary",
            "-crlfeol",
        ],
        format!("Content-Type: text/plain\r\n\r\n{body}\r\n").as_bytes(),
    );
    let mut m = header.as_bytes().to_vec();
    m.extend_from_slice(&signed);
    m
}

/// Signed by Alice's key with envelopd's own signer.
fn own_signed(header: &str, body: &str) -> Vec<u8> {
    let key = std::fs::read(v("alice.sign.key")).unwrap();
    let crt = std::fs::read(v("alice.sign.crt")).unwrap();
    let id = smime::Identity::new(
        smime::PrivateKey::load(&key, None).unwrap(),
        smime::parse_certificates(&crt).unwrap(),
    )
    .unwrap();
    let opts = smime::SignOptions {
        digest: None,
        rsa_padding: smime::RsaPadding::Pkcs1v15,
        signing_time: std::time::SystemTime::now(),
        encryption_cert: None,
    };
    smime::sign(&text(header, body), &id, &opts).unwrap()
}

/// A correspondent the practice does not know yet: Dr. Weber, from a CA of her own (which the
/// practice trusts), with a certificate for signing and encrypting.
struct Weber {
    pki: testkit::Pki,
    root: String,
    key: String,
    crt: String,
}

fn weber() -> Weber {
    let pki = testkit::Pki::new();
    let root = pki.root("Aerztekammer CA");
    let (key, crt) = pki.issue(
        "weber",
        "2048",
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=emailProtection\nsubjectAltName=email:weber@smime.example\n",
        &root,
    );
    Weber {
        pki,
        root: root.1,
        key,
        crt,
    }
}

/// Signed by Dr. Weber, then encrypted for Bob only, with OpenSSL (the routing fields outside).
fn for_bob(w: &Weber, subject: &str, body: &str) -> Vec<u8> {
    let _ = w.pki.dir();
    let signed = signed_by(&w.crt, &w.key, &w.root, "", body);
    openssl(
        &[
            "cms",
            "-encrypt",
            "-aes-256-gcm",
            "-from",
            "weber@smime.example",
            "-to",
            "bob@smime.example",
            "-subject",
            subject,
            &v("bob.encrypt.crt"),
        ],
        &signed,
    )
}

/// An envelopd reading `provider`'s IMAPS with Bob's and Alice's keys; `bob_logins` are the
/// further logins allowed Bob's key.
fn envelopd(provider: &Provider, bob_logins: &[&str], w: &Weber) -> (tempfile::TempDir, u16, Proc) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    common::practice_dir(d, "bob", &[]);
    std::fs::copy(&w.root, d.join("trust/weber-ca.pem")).unwrap();
    std::fs::copy(v("alice.p12"), d.join("keys/alice.p12")).unwrap();
    std::fs::write(d.join("keys/alice.pw"), "alice\n").unwrap();
    for f in ["keys/alice.p12", "keys/alice.pw"] {
        common::lab::set_mode(&d.join(f), 0o600);
    }
    let (smtp, imap) = (free_port(), free_port());
    let logins: Vec<String> = bob_logins.iter().map(|l| format!("\"{l}\"")).collect();
    std::fs::write(
        d.join("proxy.toml"),
        format!(
            "{}[certificates]\nanchors = [\"trust\"]\nrecipients = \"certs\"\nharvested = \"harvested\"\n\
             [[identity]]\naddresses = [\"bob@smime.example\"]\npkcs12 = \"keys/bob.p12\"\npassword_file = \"keys/pw\"\nlogins = [{}]\n\
             [[identity]]\naddresses = [\"alice@smime.example\"]\npkcs12 = \"keys/alice.p12\"\npassword_file = \"keys/alice.pw\"\n",
            common::reading_sections(provider, smtp, imap),
            logins.join(", "),
        ),
    )
    .unwrap();
    let p = common::run_envelopd(&d.join("proxy.toml"), &d.join("envelopd.log"));
    wait_for(imap);
    (dir, imap, p)
}

/// Logs in, reads the inbox and searches its text for `word`: [login, select, messages, UIDs].
fn read_inbox(
    port: u16,
    user: &str,
    password: &str,
    word: &str,
    log: &Path,
) -> Vec<serde_json::Value> {
    steps(
        port,
        serde_json::json!([
            ["login", user, password],
            ["select", "INBOX"],
            ["fetch-all"],
            ["search", word]
        ]),
        log,
    )
}

/// Bob's inbox as an envelopd that trusts the RFC 9216 CA only shows it (every message fetched).
fn bob_reads_trusting_rfc9216_only(provider: &Provider) -> Vec<serde_json::Value> {
    let (dir, imap, _p) = envelopd(
        provider,
        &[],
        &Weber {
            root: v("ca.rsa.crt"),
            ..weber()
        },
    );
    let r = steps(
        imap,
        serde_json::json!([
            ["login", "bob@smime.example", "bob-pw"],
            ["select", "INBOX"],
            ["fetch-all"]
        ]),
        &dir.path().join("envelopd.log"),
    );
    r[2].as_array().unwrap().clone()
}

/// Runs IMAP steps through envelopd (see tests/clients/imap_steps.py).
fn steps(port: u16, steps: serde_json::Value, log: &Path) -> Vec<serde_json::Value> {
    common::imap_steps(port, steps, log)
}

fn body(m: &serde_json::Value) -> String {
    let b = smime::mime::base64_decode(m["body"].as_str().unwrap().as_bytes()).unwrap();
    String::from_utf8_lossy(&b).into_owned()
}

fn subject(m: &serde_json::Value) -> String {
    body(m)
        .lines()
        .find_map(|l| l.strip_prefix("Subject: ").map(str::to_string))
        .unwrap_or_default()
}

#[test]
fn identity_spoofs_through_dovecot_are_never_shown_valid() {
    let provider = Provider::start();
    // Each message is signed with Alice's valid certificate (the attacker's, in the paper's
    // terms) under a header that makes the reader believe someone else wrote it.
    let spoofs: &[(&str, &str, &str)] = &[
        (
            "genuine",
            "From: Alice <alice@smime.example>\r\n",
            "signature=valid",
        ),
        (
            "display",
            "From: chef@smime.example <alice@smime.example>\r\n",
            "signature=from-mismatch",
        ),
        (
            "two-mailboxes",
            "From: alice@smime.example, chef@smime.example\r\n",
            "signature=from-mismatch",
        ),
        (
            "two-froms",
            "From: chef@smime.example\r\nFrom: alice@smime.example\r\n",
            "signature=from-mismatch",
        ),
        (
            "sender",
            "From: alice@smime.example\r\nSender: chef@smime.example\r\n",
            "signature=sender-mismatch",
        ),
        (
            "other",
            "From: chef@smime.example\r\n",
            "signature=from-mismatch",
        ),
        ("case", "From: ALICE@Smime.Example\r\n", "signature=valid"),
        // Mailsploit: "chef@smime.example" and a NUL byte, RFC 2047 encoded.
        (
            "nul",
            "From: =?utf-8?b?Y2hlZkBzbWltZS5leGFtcGxlAA==?= <alice@smime.example>\r\n",
            "signature=from-mismatch",
        ),
        // A right-to-left override: "elpmaxe.emims@fehc" is drawn as chef@smime.example.
        (
            "rtl",
            "From: =?utf-8?b?4oCuZWxwbWF4ZS5lbWltc0BmZWhj?= <alice@smime.example>\r\n",
            "signature=from-mismatch",
        ),
        // "chef @ smime.example": spaces around the at sign still read as the chef's address.
        (
            "spaced",
            "From: \"chef @ smime.example\" <alice@smime.example>\r\n",
            "signature=from-mismatch",
        ),
        // A group (RFC 6854) whose name is the chef's address; a client draws it as the name.
        (
            "group",
            "From: chef@smime.example: alice@smime.example;\r\n",
            "signature=from-mismatch",
        ),
    ];
    let mut n = 0;
    for (name, from, _) in spoofs {
        for (engine, m) in [
            (
                "openssl",
                openssl_signed(
                    &format!("{from}Subject: {name}-openssl\r\n"),
                    "Bitte 10.000 EUR ueberweisen.",
                ),
            ),
            (
                "envelopd",
                own_signed(
                    &format!("{from}Subject: {name}-envelopd\r\n"),
                    "Bitte 10.000 EUR ueberweisen.",
                ),
            ),
        ] {
            n += 1;
            provider.deliver("bob", &format!("{n}.{name}.{engine}"), &m);
        }
    }
    // A multipart/signed whose signature embeds other text than the part shown.
    let der = openssl(
        &[
            "cms",
            "-sign",
            "-signer",
            &v("alice.sign.crt"),
            "-inkey",
            &v("alice.sign.key"),
            "-binary",
            "-nodetach",
            "-outform",
            "DER",
        ],
        b"Content-Type: text/plain\r\n\r\nHarmlos.\r\n",
    );
    let mut m = b"From: alice@smime.example\r\nSubject: embedded\r\nMIME-Version: 1.0\r\nContent-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; micalg=sha-256; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nBitte 10.000 EUR ueberweisen.\r\n--b\r\nContent-Type: application/pkcs7-signature\r\nContent-Transfer-Encoding: base64\r\n\r\n".to_vec();
    m.extend_from_slice(&smime::mime::base64_lines(&der));
    m.extend_from_slice(b"\r\n--b--\r\n");
    provider.deliver("bob", "90.embedded", &m);
    // SHA-1, which Thunderbird and the CA/B Forum rules refuse.
    let sha1 = openssl(
        &[
            "cms",
            "-sign",
            "-md",
            "sha1",
            "-signer",
            &v("alice.sign.crt"),
            "-inkey",
            &v("alice.sign.key"),
        ],
        &text("From: alice@smime.example\r\nSubject: sha1\r\n", "alt"),
    );
    provider.deliver("bob", "91.sha1", &sha1);

    // MIME wrapping: the genuine signed message as one part of attacker-made mixed content.
    let genuine = openssl_signed("", "Rezept fuer Herrn Muster.");
    let mut wrapped = b"From: alice@smime.example\r\nSubject: wrapped\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"w\"\r\n\r\n--w\r\nContent-Type: text/plain\r\n\r\nBitte 10.000 EUR ueberweisen.\r\n--w\r\n".to_vec();
    wrapped.extend_from_slice(&genuine);
    wrapped.extend_from_slice(b"\r\n--w--\r\n");
    provider.deliver("bob", "92.wrapped", &wrapped);
    // Two signers, one of them from a CA nobody trusts: not valid.
    let stranger = weber();
    let two = openssl(
        &[
            "cms",
            "-sign",
            "-signer",
            &v("alice.sign.crt"),
            "-inkey",
            &v("alice.sign.key"),
            "-signer",
            &stranger.crt,
            "-inkey",
            &stranger.key,
            "-binary",
            "-crlfeol",
        ],
        b"Content-Type: text/plain\r\n\r\nBitte 10.000 EUR ueberweisen.\r\n",
    );
    let mut m2 = b"From: alice@smime.example\r\nSubject: two-signers\r\n".to_vec();
    m2.extend_from_slice(&two);
    provider.deliver("bob", "93.two-signers", &m2);

    // This practice trusts the RFC 9216 CA only (Dr. Weber's CA is the stranger's here).
    let msgs = bob_reads_trusting_rfc9216_only(&provider);
    assert_eq!(msgs.len(), spoofs.len() * 2 + 4);
    for m in &msgs {
        let subject = subject(m);
        let status = m["status"].as_str().unwrap();
        let expected = match subject.as_str() {
            "embedded" => "signature=invalid",
            "sha1" => "signature=weak",
            "two-signers" => "signature=untrusted",
            // Nested in other content: no message-wide claim at all.
            "wrapped" => "",
            s => {
                spoofs
                    .iter()
                    .find(|(name, _, _)| s.starts_with(&format!("{name}-")))
                    .unwrap_or_else(|| panic!("unexpected subject {s}"))
                    .2
            }
        };
        assert!(
            status.contains(expected),
            "{subject}: expected {expected}, shown: {status}"
        );
        if subject == "wrapped" {
            assert!(!status.contains("signature="), "wrapped: {status}");
        }
        let valid = status.contains("signature=valid");
        assert_eq!(
            valid,
            subject.starts_with("genuine") || subject.starts_with("case"),
            "{subject}: {status}"
        );
        if subject == "embedded" {
            // The text shown is the visible part, and it is not called signed.
            assert!(body(m).contains("10.000 EUR") && !body(m).contains("Harmlos"));
        }
    }
    // OpenSSL agrees about the embedded-content message: the visible part fails.
    assert!(testkit::openssl_pipe(&["cms", "-verify", "-CAfile", &v("ca.rsa.crt")], &m).is_err());
}

#[test]
fn a_message_for_bob_is_opened_only_for_logins_entitled_to_bob_s_key() {
    let provider = Provider::start();
    let secret = "Befund nur fuer Bob 4711";
    let w = weber();
    let m = for_bob(&w, "fuer bob", secret);
    // Bob's ciphertext, captured and mailed to Alice (or the reception desk).
    provider.deliver("alice", "1.captured", &m);
    provider.deliver("bob", "1.own", &m);
    let (dir, imap, _p) = envelopd(&provider, &[], &w);
    let log = dir.path().join("envelopd.log");
    let harvested = dir.path().join("harvested");
    let count = |d: &Path| std::fs::read_dir(d).map(|r| r.count()).unwrap_or(0);

    let alice = read_inbox(imap, "alice@smime.example", "alice-pw", "4711", &log);
    let shown = &alice[2][0];
    assert!(
        shown["status"]
            .as_str()
            .unwrap()
            .contains("decrypted=failed"),
        "{}",
        shown["status"]
    );
    assert!(
        !body(shown).contains(secret),
        "Alice must not read Bob's mail"
    );
    assert_eq!(alice[3], serde_json::json!([]), "nor find it by its text");
    assert_eq!(count(&harvested), 0, "nor teach envelopd from it");

    let bob = read_inbox(imap, "bob@smime.example", "bob-pw", "4711", &log);
    let shown = &bob[2][0];
    let status = shown["status"].as_str().unwrap();
    assert!(
        status.contains("decrypted=aes-256-gcm") && status.contains("signature=valid"),
        "{status}"
    );
    assert!(body(shown).contains(secret));
    assert_eq!(bob[3], serde_json::json!([1]));
    assert!(
        count(&harvested) > 0,
        "Bob's reading learns Dr. Weber's certificate"
    );

    // A shared mailbox: Bob's key is allowed to Alice's login too.
    let (dir2, imap2, _p2) = envelopd(&provider, &["alice@smime.example"], &w);
    let shared = read_inbox(
        imap2,
        "alice@smime.example",
        "alice-pw",
        "4711",
        &dir2.path().join("envelopd.log"),
    );
    assert!(shared[2][0]["status"]
        .as_str()
        .unwrap()
        .contains("decrypted=aes-256-gcm"));
    assert!(body(&shared[2][0]).contains(secret));
    assert_eq!(shared[3], serde_json::json!([1]));
}

#[test]
fn folders_and_logins_differing_after_a_space_never_share_a_cached_message() {
    let provider = Provider::start();
    let w = weber();
    let meier = for_bob(&w, "Akte Meier", "Diagnose Meier: Fraktur");
    let mueller = for_bob(&w, "Akte Mueller", "Diagnose Mueller: Karies");
    // Two folders of Bob's with the same UIDVALIDITY, UID 1 each.
    provider.folder_with("smime.example/bob", "Akte Meier", 1_700_000_000, &[&meier]);
    provider.folder_with(
        "smime.example/bob",
        "Akte Mueller",
        1_700_000_000,
        &[&mueller],
    );
    // Two logins that differ only after a space, same UIDVALIDITY and UID in their inboxes.
    provider.add_login("praxis meier", "pw-meier");
    provider.add_login("praxis mueller", "pw-mueller");
    provider.folder_with("praxis meier", "", 1_700_000_000, &[&meier]);
    provider.folder_with("praxis mueller", "", 1_700_000_000, &[&mueller]);

    let (dir, imap, _p) = envelopd(&provider, &["praxis meier", "praxis mueller"], &w);
    let log = dir.path().join("envelopd.log");
    let r = steps(
        imap,
        serde_json::json!([
            ["login", "bob@smime.example", "bob-pw"],
            ["select", "Akte Meier"],
            ["fetch-all"],
            ["select", "Akte Mueller"],
            ["fetch-all"],
            ["select-literal", "Akte Meier"],
            ["fetch-all"],
            ["select-literal", "Akte Mueller"],
            ["fetch-all"],
        ]),
        &log,
    );
    for (i, want) in [(2, "Fraktur"), (4, "Karies"), (6, "Fraktur"), (8, "Karies")] {
        let m = &r[i][0];
        assert!(
            m["status"]
                .as_str()
                .unwrap()
                .contains("decrypted=aes-256-gcm"),
            "{}",
            m["status"]
        );
        assert!(body(m).contains(want), "step {i}: {}", body(m));
    }
    for (login, pw, want, literal) in [
        ("praxis meier", "pw-meier", "Fraktur", false),
        ("praxis mueller", "pw-mueller", "Karies", false),
        ("praxis meier", "pw-meier", "Fraktur", true),
        ("praxis mueller", "pw-mueller", "Karies", true),
    ] {
        let how = if literal { "login-literal" } else { "login" };
        let r = steps(
            imap,
            serde_json::json!([[how, login, pw], ["select", "INBOX"], ["fetch-all"]]),
            &log,
        );
        assert_eq!(r[0], "OK", "{login}");
        let m = &r[2][0];
        assert!(
            m["status"]
                .as_str()
                .unwrap()
                .contains("decrypted=aes-256-gcm"),
            "{login}: {}",
            m["status"]
        );
        assert!(
            body(m).contains(want),
            "{login} ({how}) was shown: {}",
            body(m)
        );
    }
}

/// Messages made to exhaust the reader's CPU are judged at once, and the mail after them is
/// still read: a signature carrying a mesh of 36 cross-certified CA certificates under one name
/// (the path-building attack: 37 s of CPU per verification before the limit, hours at 64) is
/// untrusted, a signature with nine signers (each a verification and a path search) is invalid
/// without any being checked, and Alice's genuine message after both is valid.
#[test]
fn certificate_meshes_and_signer_floods_are_judged_at_once() {
    let provider = Provider::start();
    let pki = testkit::Pki::new();
    let (cas, (mesh_key, mesh_crt)) = pki.mesh(6, "Mesh CA", "mallory@smime.example");
    let all: Vec<u8> = cas.iter().flat_map(|p| std::fs::read(p).unwrap()).collect();
    let carried = pki.write("mesh-all.pem", &String::from_utf8(all).unwrap());
    provider.deliver(
        "bob",
        "1.mesh",
        &signed_by(
            &mesh_crt,
            &mesh_key,
            &carried,
            "From: mallory@smime.example\r\nSubject: mesh\r\n",
            "Bitte 10.000 EUR ueberweisen.",
        ),
    );
    let flood_ca = pki.root("Flood CA");
    let mut args = vec!["cms".to_string(), "-sign".into()];
    for i in 0..9 {
        let (key, crt) = pki.issue(
            &format!("flood{i}"),
            "2048",
            &format!(
                "{}subjectAltName=email:alice@smime.example\n",
                testkit::MAIL_LEAF
            ),
            &flood_ca,
        );
        args.extend(["-signer".into(), crt, "-inkey".into(), key]);
    }
    args.extend(["-binary".into(), "-crlfeol".into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut flood = b"From: alice@smime.example\r\nSubject: flood\r\n".to_vec();
    flood.extend_from_slice(&openssl(
        &args,
        b"Content-Type: text/plain\r\n\r\nBitte 10.000 EUR ueberweisen.\r\n",
    ));
    provider.deliver("bob", "2.flood", &flood);
    provider.deliver(
        "bob",
        "3.genuine",
        &openssl_signed(
            "From: alice@smime.example\r\nSubject: genuine\r\n",
            "Termin am Montag.",
        ),
    );
    let msgs = bob_reads_trusting_rfc9216_only(&provider);
    let shown: Vec<(String, String)> = msgs
        .iter()
        .map(|m| (subject(m), m["status"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(shown.len(), 3, "{shown:?}");
    let status = |s: &str| &shown.iter().find(|(subj, _)| subj == s).unwrap().1;
    assert!(
        status("mesh").contains("signature=untrusted")
            && status("mesh").contains("signature checks"),
        "{shown:?}"
    );
    assert!(
        status("flood").starts_with("decrypted=no; signature=invalid; reason=")
            && status("flood").contains("9 signers"),
        "{shown:?}"
    );
    assert!(status("genuine").contains("signature=valid"), "{shown:?}");
}
