//! Keys in a PKCS#11 token (SoftHSM2, a private token directory per test): `envelopd smime`
//! signs and decrypts with a key named by a PKCS#11 URI alone (RSA PKCS#1 v1.5 and PSS, ECDSA;
//! RSA PKCS#1 v1.5 and OAEP, ECDH), checked by OpenSSL; the daemon signs outgoing mail and
//! decrypts mail from OpenSSL, gpgsm and NSS through the IMAP side with token keys; a wrong
//! PIN or a missing module is said in plain words and the PIN is tried once.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::lab::Lab;
use common::provider::Provider;
use common::reading::*;
use testkit::procs::{free_port, wait_for};

const ENVELOPD: &str = env!("CARGO_BIN_EXE_envelopd");
const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// A SoftHSM2 token "Praxis" (user PIN 1234) in a private directory.
struct Hsm {
    dir: tempfile::TempDir,
}

impl Hsm {
    fn new() -> Hsm {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("tokens")).unwrap();
        std::fs::write(
            d.join("softhsm2.conf"),
            format!("directories.tokendir = {}\n", d.join("tokens").display()),
        )
        .unwrap();
        std::fs::write(d.join("pin"), "1234\n").unwrap();
        std::fs::write(d.join("wrong-pin"), "9999\n").unwrap();
        for f in ["pin", "wrong-pin"] {
            std::fs::set_permissions(d.join(f), std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let h = Hsm { dir };
        h.run(
            "softhsm2-util",
            &[
                "--init-token",
                "--free",
                "--label",
                "Praxis",
                "--pin",
                "1234",
                "--so-pin",
                "5678",
            ],
        );
        h
    }

    fn conf(&self) -> PathBuf {
        self.dir.path().join("softhsm2.conf")
    }

    fn p(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    fn run(&self, tool: &str, args: &[&str]) -> Output {
        let o = Command::new(tool)
            .args(args)
            .env("SOFTHSM2_CONF", self.conf())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{tool} {args:?}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        o
    }

    /// Imports a PKCS#8 PEM key (and its public half) as `label`.
    fn import(&self, key: &Path, label: &str, id: &str) {
        self.run(
            "softhsm2-util",
            &[
                "--import",
                &key.display().to_string(),
                "--token",
                "Praxis",
                "--label",
                label,
                "--id",
                id,
                "--pin",
                "1234",
            ],
        );
    }

    /// Imports an EC key allowed to derive (ECDH), with its public key, by pkcs11-tool.
    fn import_ec(&self, key: &Path, label: &str, id: &str) {
        let public = self.p(&format!("{label}.pub"));
        let o = Command::new("openssl")
            .args(["pkey", "-in"])
            .arg(key)
            .args(["-pubout", "-out", &public])
            .output()
            .unwrap();
        assert!(o.status.success());
        for (file, kind, usage) in [
            (
                key.display().to_string(),
                "privkey",
                vec!["--usage-sign", "--usage-derive"],
            ),
            (public, "pubkey", vec![]),
        ] {
            let mut args = vec![
                "--module",
                MODULE,
                "--token-label",
                "Praxis",
                "--login",
                "--pin",
                "1234",
                "--write-object",
                &file,
                "--type",
                kind,
                "--id",
                id,
                "--label",
                label,
            ];
            args.extend(usage);
            self.run("pkcs11-tool", &args);
        }
    }

    /// The URI of key `label`, naming module and PIN file, so it needs nothing else.
    fn uri(&self, label: &str, pin: &str) -> String {
        format!(
            "pkcs11:token=Praxis;object={label};type=private?module-path={MODULE}&pin-source=file:{}",
            self.p(pin)
        )
    }

    /// `envelopd ARGS` with this token's configuration.
    fn envelopd(&self, args: &[&str], stdin: &[u8]) -> Output {
        use std::io::Write;
        let mut c = Command::new(ENVELOPD)
            .args(args)
            .env("SOFTHSM2_CONF", self.conf())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // A command that fails before reading its input (no module, no token) closes the pipe.
        let _ = c.stdin.take().unwrap().write_all(stdin);
        c.wait_with_output().unwrap()
    }
}

fn v(name: &str) -> PathBuf {
    common::rfc9216().join(name)
}

fn message() -> Vec<u8> {
    mail("Alice <alice@smime.example>", "token", SECRET)
}

#[test]
fn the_smime_tool_signs_and_decrypts_with_a_key_that_stays_in_the_token() {
    let h = Hsm::new();
    h.import(&v("alice.sign.key"), "alice-sign", "02");
    h.import(&v("bob.encrypt.key"), "bob-enc", "01");
    let ca = v("ca.rsa.crt").display().to_string();
    let alice_cert = v("alice.sign.crt").display().to_string();

    // Signing, PKCS#1 v1.5 and PSS, SHA-256/384/512: OpenSSL verifies.
    for extra in [
        &[][..],
        &["--pss"][..],
        &["--digest", "sha384"][..],
        &["--pss", "--digest", "sha512"][..],
    ] {
        let mut args = vec!["smime", "sign", "--key"];
        let uri = h.uri("alice-sign", "pin");
        args.push(&uri);
        args.extend(["--cert", &alice_cert]);
        args.extend(extra);
        let o = h.envelopd(&args, &message());
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let out = openssl(&["cms", "-verify", "-CAfile", &ca], &o.stdout);
        assert!(String::from_utf8_lossy(&out).contains(SECRET), "{extra:?}");
        if let Some(d) = extra
            .iter()
            .position(|a| *a == "--digest")
            .map(|i| extra[i + 1])
        {
            let micalg = format!("micalg={};", d.replace("sha", "sha-"));
            assert!(
                String::from_utf8_lossy(&o.stdout).contains(&micalg),
                "{micalg}"
            );
        }
    }

    // Decrypting what OpenSSL encrypted to Bob: PKCS#1 v1.5 and OAEP (SHA-1, which SoftHSM
    // offers); the certificate comes from the token when it holds one.
    let bob_der = h.p("bob.der");
    openssl(
        &[
            "x509",
            "-in",
            &v("bob.encrypt.crt").display().to_string(),
            "-outform",
            "DER",
            "-out",
            &bob_der,
        ],
        b"",
    );
    h.run(
        "pkcs11-tool",
        &[
            "--module",
            MODULE,
            "--token-label",
            "Praxis",
            "--login",
            "--pin",
            "1234",
            "--write-object",
            &bob_der,
            "--type",
            "cert",
            "--id",
            "01",
            "--label",
            "bob-enc",
        ],
    );
    let bob_cert = v("bob.encrypt.crt").display().to_string();
    for keyopts in [
        &[][..],
        &[
            "-keyopt",
            "rsa_padding_mode:oaep",
            "-keyopt",
            "rsa_oaep_md:sha1",
        ][..],
    ] {
        let mut args = vec!["cms", "-encrypt", "-aes-256-cbc", "-recip", &bob_cert];
        args.extend(keyopts);
        let enc = openssl(&args, &message());
        let o = h.envelopd(
            &["smime", "decrypt", "--key", &h.uri("bob-enc", "pin")],
            &enc,
        );
        assert!(
            o.status.success(),
            "{keyopts:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(String::from_utf8_lossy(&o.stdout).contains(SECRET));
    }
    // OAEP with SHA-256, which SoftHSM does not offer: said, not a wrong key.
    let enc = openssl(
        &[
            "cms",
            "-encrypt",
            "-aes-256-cbc",
            "-recip",
            &bob_cert,
            "-keyopt",
            "rsa_padding_mode:oaep",
            "-keyopt",
            "rsa_oaep_md:sha256",
        ],
        &message(),
    );
    let o = h.envelopd(
        &["smime", "decrypt", "--key", &h.uri("bob-enc", "pin")],
        &enc,
    );
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("does not offer the mechanism"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    // EC (P-256): ECDSA signatures and ECDH key agreement through the token.
    let lab = Lab::new();
    let (key, cert, ca_ec) = lab.ec_identity("P-256");
    h.import_ec(Path::new(&key), "ec", "03");
    let o = h.envelopd(
        &[
            "smime",
            "sign",
            "--key",
            &h.uri("ec", "pin"),
            "--cert",
            &cert,
        ],
        &message(),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = openssl(&["cms", "-verify", "-CAfile", &ca_ec], &o.stdout);
    assert!(String::from_utf8_lossy(&out).contains(SECRET));
    let enc = openssl(&["cms", "-encrypt", "-aes-256-gcm", &cert], &message());
    let o = h.envelopd(
        &[
            "smime",
            "decrypt",
            "--key",
            &h.uri("ec", "pin"),
            "--cert",
            &cert,
        ],
        &enc,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains(SECRET));

    // A wrong PIN: said in plain words, tried once (the right one still works after it).
    let o = h.envelopd(
        &["smime", "decrypt", "--key", &h.uri("bob-enc", "wrong-pin")],
        &enc,
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success()
            && err.contains("refused the PIN")
            && err.contains("does not try it again"),
        "{err}"
    );
    let o = h.envelopd(
        &[
            "smime",
            "sign",
            "--key",
            &h.uri("alice-sign", "pin"),
            "--cert",
            &alice_cert,
        ],
        &message(),
    );
    assert!(
        o.status.success(),
        "the token is not locked: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    // No module, no token, no key: each named.
    for (uri, want) in [
        ("pkcs11:token=Praxis;object=x?module-path=/usr/lib/nothing/libnone.so".to_string(), "does not exist"),
        (format!("pkcs11:token=Elsewhere;object=x?module-path={MODULE}&pin-source=file:{}", h.p("pin")), "token \"Elsewhere\" is not present (module /usr/lib/softhsm/libsofthsm2.so; tokens present: Praxis"),
        (h.uri("nokey", "pin"), "has no private key labelled \"nokey\""),
    ] {
        let o = h.envelopd(&["smime", "sign", "--key", &uri, "--cert", &alice_cert], &message());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(want), "{uri}: {err}");
    }
}

#[test]
fn the_daemon_signs_and_decrypts_through_the_token() {
    let provider = Provider::start();
    let lab = Lab::new();
    let h = Hsm::new();
    h.import(&v("alice.sign.key"), "alice-sign", "02");
    h.import(&v("bob.encrypt.key"), "bob-enc", "01");
    h.import(&v("bob.sign.key"), "bob-sign", "04");
    // One gateway for Alice and Bob; their keys in the token (Bob's signing and encryption
    // keys), the PIN in a file.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    common::practice_dir(d, "bob", &[]);
    let (smtp, imap) = (free_port(), free_port());
    std::fs::write(
        d.join("proxy.toml"),
        format!(
            "[smtp]\nlisten = \"127.0.0.1:{smtp}\"\n[imap]\nlisten = \"127.0.0.1:{imap}\"\n\
             [upstream.smtp]\nhost = \"localhost\"\nport = {}\ntls = \"starttls\"\nca_file = \"{ca}\"\nsystem_roots = false\n\
             [upstream.imap]\nhost = \"localhost\"\nport = {}\ntls = \"implicit\"\nca_file = \"{ca}\"\nsystem_roots = false\n\
             [certificates]\nanchors = [\"trust\"]\nrecipients = \"certs\"\n\
             [[identity]]\naddresses = [\"alice@smime.example\"]\nkey = \"pkcs11:token=Praxis;object=alice-sign\"\ncert = \"{}\"\nmodule = \"{MODULE}\"\npin_file = \"{}\"\n\
             [[identity]]\naddresses = [\"bob@smime.example\"]\nkey = \"pkcs11:token=Praxis;object=bob-sign\"\ncert = \"{}\"\n\
             encryption_key = \"pkcs11:token=Praxis;object=bob-enc\"\nencryption_cert = \"{}\"\nmodule = \"{MODULE}\"\npin_file = \"{}\"\n",
            provider.submission,
            provider.imaps,
            v("alice.sign.crt").display(),
            h.p("pin"),
            v("bob.sign.crt").display(),
            v("bob.encrypt.crt").display(),
            h.p("pin"),
            ca = provider.ca().display()
        ),
    )
    .unwrap();
    // `envelopd check` opens the token keys as the daemon will.
    let o = Command::new(ENVELOPD)
        .args(["check", "--no-connect", "--config"])
        .arg(d.join("proxy.toml"))
        .env("SOFTHSM2_CONF", h.conf())
        .output()
        .unwrap();
    let said =
        String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{said}");
    assert!(
        said.contains("identity alice@smime.example: RSA-2048 in token \"Praxis\" (the key cannot leave the token)"),
        "{said}"
    );
    let _e = common::run_envelopd_env(
        &d.join("proxy.toml"),
        &d.join("envelopd.log"),
        &[("SOFTHSM2_CONF", h.conf().to_str().unwrap())],
    );
    wait_for(smtp);
    wait_for(imap);
    let log = || std::fs::read_to_string(d.join("envelopd.log")).unwrap_or_default();

    // Alice sends: signed in the token, encrypted to Bob; OpenSSL opens the stored copy with
    // Bob's key file and verifies Alice's signature.
    let o = send_mail(
        smtp,
        "alice@smime.example",
        "alice-pw",
        "bob@smime.example",
        "smtp-path",
    );
    assert!(
        o.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        log()
    );
    let stored = provider.wait_messages("bob", 1).pop().unwrap();
    let inner = openssl(
        &[
            "cms",
            "-decrypt",
            "-inkey",
            &v("bob.encrypt.key").display().to_string(),
        ],
        &stored,
    );
    let shown = openssl(
        &[
            "cms",
            "-verify",
            "-CAfile",
            &v("ca.rsa.crt").display().to_string(),
        ],
        &inner,
    );
    assert!(String::from_utf8_lossy(&shown).contains(SECRET));

    // Bob reads mail from envelopd, OpenSSL, gpgsm and NSS: decrypted with the token key.
    deliver_test_messages(&provider, &lab);
    let mut statuses = Vec::new();
    for n in 1..=12 {
        let o = Command::new("curl")
            .args([
                "-sS",
                &format!("imap://127.0.0.1:{imap}/INBOX;MAILINDEX={n}"),
            ])
            .args(["--user", "bob@smime.example:bob-pw"])
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{}\n{}",
            String::from_utf8_lossy(&o.stderr),
            log()
        );
        statuses.push((
            subject_of(&o.stdout),
            status_of(&o.stdout).unwrap_or_default(),
        ));
    }
    for (subject, want) in [
        (
            "smtp-path",
            "decrypted=aes-256-cbc; integrity=none; signature=valid; signer=alice@smime.example",
        ),
        ("openssl-gcm", "decrypted=aes-256-gcm; signature=valid"),
        ("gpgsm-ber", "decrypted=aes-256-cbc"),
        ("nss-ber", "decrypted="),
    ] {
        let (_, status) = statuses
            .iter()
            .find(|(s, _)| s == subject)
            .unwrap_or_else(|| panic!("{subject} in {statuses:?}"));
        assert!(
            status.starts_with(want) && !status.starts_with("decrypted=failed"),
            "{subject}: {status}\n{}",
            log()
        );
    }
    // The token goes away: mail that arrives now is shown as stored, with the reason.
    h.run("softhsm2-util", &["--delete-token", "--token", "Praxis"]);
    let late = openssl(
        &[
            "cms",
            "-encrypt",
            "-aes-256-cbc",
            "-from",
            "alice@smime.example",
            "-to",
            "bob@smime.example",
            "-subject",
            "while-away",
            &v("bob.encrypt.crt").display().to_string(),
        ],
        format!("Content-Type: text/plain\r\n\r\n{SECRET}\r\n").as_bytes(),
    );
    provider.deliver("bob", "99.late", &late);
    let o = Command::new("curl")
        .args([
            "-sS",
            &format!("imap://127.0.0.1:{imap}/INBOX;MAILINDEX=13"),
        ])
        .args(["--user", "bob@smime.example:bob-pw"])
        .output()
        .unwrap();
    let status = status_of(&o.stdout).unwrap_or_default();
    assert!(
        status.starts_with("decrypted=failed") && status.contains("token 'Praxis' is not present"),
        "{status}\n{}",
        log()
    );
    assert!(!String::from_utf8_lossy(&o.stdout).contains(SECRET));
    assert!(!log().contains("1234"), "no PIN in the log");
}

#[test]
fn a_wrong_pin_or_missing_module_stops_the_daemon_with_the_reason() {
    let h = Hsm::new();
    h.import(&v("alice.sign.key"), "alice-sign", "02");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    common::practice_dir(d, "bob", &[]);
    for (module, pin, want) in [
        (MODULE, "wrong-pin", "refused the PIN"),
        ("/usr/lib/nothing/libnone.so", "pin", "does not exist"),
    ] {
        std::fs::write(
            d.join("proxy.toml"),
            format!(
                "[smtp]\nlisten = \"127.0.0.1:{}\"\n[upstream.smtp]\nhost = \"127.0.0.1\"\nport = 9\ntls = \"none\"\n\
                 [certificates]\nanchors = [\"trust\"]\n\
                 [[identity]]\naddresses = [\"alice@smime.example\"]\nkey = \"pkcs11:token=Praxis;object=alice-sign\"\ncert = \"{}\"\nmodule = \"{module}\"\npin_file = \"{}\"\n",
                free_port(),
                v("alice.sign.crt").display(),
                h.p(pin),
            ),
        )
        .unwrap();
        for cmd in [
            &["check", "--no-connect", "--config"][..],
            &["run", "--config"][..],
        ] {
            let o = Command::new(ENVELOPD)
                .args(cmd)
                .arg(d.join("proxy.toml"))
                .env("SOFTHSM2_CONF", h.conf())
                .stdin(Stdio::null())
                .output()
                .unwrap();
            let said = String::from_utf8_lossy(&o.stdout).into_owned()
                + &String::from_utf8_lossy(&o.stderr);
            assert!(!o.status.success(), "{cmd:?} {module}: {said}");
            assert!(said.contains(want), "{cmd:?}: {said}");
        }
    }
}

/// Sends one message from Alice to Bob with swaks; the transcript.
fn swaks(port: u16, subject: &str) -> String {
    let o = Command::new("swaks")
        .args(["--server", &format!("127.0.0.1:{port}")])
        .args(["--from", "alice@smime.example", "--to", "bob@smime.example"])
        .args([
            "--header",
            &format!("Subject: {subject}"),
            "--header",
            "From: alice@smime.example",
        ])
        .args(["--body", SECRET])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn a_token_taken_away_while_running_defers_mail_and_works_again_when_back() {
    let h = Hsm::new();
    h.import(&v("alice.sign.key"), "alice-sign", "02");
    let sink_dir = tempfile::tempdir().unwrap();
    let sink = free_port();
    let _sink = testkit::procs::smtp_sink(sink_dir.path(), sink, &[]);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    common::practice_dir(d, "alice", &[]);
    let smtp = free_port();
    std::fs::write(
        d.join("proxy.toml"),
        format!(
            "[smtp]\nlisten = \"127.0.0.1:{smtp}\"\n[upstream.smtp]\nhost = \"127.0.0.1\"\nport = {sink}\ntls = \"none\"\n\
             [certificates]\nanchors = [\"trust\"]\nrecipients = \"certs\"\n\
             [[identity]]\naddresses = [\"alice@smime.example\"]\nkey = \"pkcs11:token=Praxis;object=alice-sign\"\ncert = \"{}\"\nmodule = \"{MODULE}\"\npin_file = \"{}\"\n",
            v("alice.sign.crt").display(),
            h.p("pin"),
        ),
    )
    .unwrap();
    let _e = common::run_envelopd_env(
        &d.join("proxy.toml"),
        &d.join("envelopd.log"),
        &[("SOFTHSM2_CONF", h.conf().to_str().unwrap())],
    );
    wait_for(smtp);
    let log = || std::fs::read_to_string(d.join("envelopd.log")).unwrap_or_default();
    // swaks marks every refused step with "<**".
    let t = swaks(smtp, "before");
    assert!(!t.contains("<** "), "{t}\n{}", log());
    // The token goes away (SoftHSM's token deleted, as a USB token pulled out).
    h.run("softhsm2-util", &["--delete-token", "--token", "Praxis"]);
    let t = swaks(smtp, "while away");
    assert!(
        t.contains("<** 451 4.7.0"),
        "the mail program keeps the message and retries; nothing unsigned goes out: {t}\n{}",
        log()
    );
    // Back (initialised again, the key imported): works without a restart.
    h.run(
        "softhsm2-util",
        &[
            "--init-token",
            "--free",
            "--label",
            "Praxis",
            "--pin",
            "1234",
            "--so-pin",
            "5678",
        ],
    );
    h.import(&v("alice.sign.key"), "alice-sign", "02");
    // The mail program retries (within seconds here; minutes in practice).
    let mut t = String::new();
    for _ in 0..20 {
        t = swaks(smtp, "after");
        if !t.contains("<** ") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    assert!(!t.contains("<** "), "{t}\n{}", log());
    // Two messages reached the provider, both signed.
    let sent: Vec<Vec<u8>> = std::fs::read_dir(sink_dir.path())
        .unwrap()
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    assert_eq!(sent.len(), 2, "{}", log());
    for m in sent {
        let text = String::from_utf8_lossy(&m);
        assert!(
            text.contains("application/pkcs7-mime") || text.contains("multipart/signed"),
            "{text}"
        );
    }
}

#[test]
fn a_key_generated_in_the_token_cannot_leave_it_and_works_once_certified() {
    let h = Hsm::new();
    let ca_key = v("ca.rsa.key").display().to_string();
    let ca = v("ca.rsa.crt").display().to_string();
    for (kind, label) in [("rsa2048", "praxis-rsa"), ("p256", "praxis-ec")] {
        let csr = h.p(&format!("{label}.csr"));
        let (uri, pin) = (format!("pkcs11:token=Praxis;object={label}"), h.p("pin"));
        let generate = [
            "keys",
            "generate",
            "--token",
            &uri,
            "--module",
            MODULE,
            "--pin-file",
            &pin,
            "--address",
            "alice@smime.example",
            "--kind",
            kind,
            "--csr",
            &csr,
        ];
        let o = h.envelopd(&generate, b"");
        let said = String::from_utf8_lossy(&o.stdout).into_owned();
        assert!(
            o.status.success(),
            "{said}{}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(
            said.contains(&format!("key = \"pkcs11:token=Praxis;object={label}\"")),
            "{said}"
        );
        // The same label twice is refused, not a second key.
        let again = h.envelopd(&generate, b"");
        assert!(String::from_utf8_lossy(&again.stderr).contains("already has a key labelled"));
        // The request verifies and asks for the address and e-mail protection; the practice's
        // CA (here RFC 9216's) issues the certificate.
        let text = String::from_utf8_lossy(&openssl(
            &["req", "-in", &csr, "-verify", "-noout", "-text"],
            b"",
        ))
        .into_owned();
        assert!(
            text.contains("email:alice@smime.example") && text.contains("E-mail Protection"),
            "{text}"
        );
        let cert = h.p(&format!("{label}.crt"));
        openssl(
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                &ca,
                "-CAkey",
                &ca_key,
                "-CAcreateserial",
                "-days",
                "30",
                "-copy_extensions",
                "copy",
                "-out",
                &cert,
            ],
            b"",
        );
        // The key signs and decrypts through the token; OpenSSL checks.
        let uri = h.uri(label, "pin");
        let o = h.envelopd(
            &["smime", "sign", "--key", &uri, "--cert", &cert],
            &message(),
        );
        assert!(
            o.status.success(),
            "{kind}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let out = openssl(&["cms", "-verify", "-CAfile", &ca], &o.stdout);
        assert!(String::from_utf8_lossy(&out).contains(SECRET));
        let enc = openssl(&["cms", "-encrypt", "-aes-256-cbc", &cert], &message());
        let o = h.envelopd(&["smime", "decrypt", "--key", &uri, "--cert", &cert], &enc);
        assert!(
            o.status.success(),
            "{kind}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(String::from_utf8_lossy(&o.stdout).contains(SECRET));
        // pkcs11-tool (OpenSC) sees a key that is sensitive and was never extractable ...
        let o = h.run(
            "pkcs11-tool",
            &[
                "--module",
                MODULE,
                "--token-label",
                "Praxis",
                "--login",
                "--pin",
                "1234",
                "-O",
                "--type",
                "privkey",
                "--label",
                label,
            ],
        );
        let listed = String::from_utf8_lossy(&o.stdout);
        assert!(
            listed.contains("sensitive")
                && listed.contains("never extractable")
                && !listed
                    .replace("never extractable", "")
                    .contains("extractable"),
            "{listed}"
        );
        // (That it can neither be read nor wrapped is shown through PKCS#11 itself in
        // crates/certstore/tests/token_softhsm.rs.)
    }
}

#[test]
fn a_pkcs12_key_moved_into_the_token_works_and_the_file_is_to_be_destroyed() {
    let h = Hsm::new();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    common::practice_dir(d, "bob", &[]);
    std::fs::write(
        d.join("proxy.toml"),
        format!(
            "[smtp]\nlisten = \"127.0.0.1:{}\"\n[upstream.smtp]\nhost = \"127.0.0.1\"\nport = 9\ntls = \"none\"\n[certificates]\nanchors = [\"trust\"]\n",
            free_port()
        ),
    )
    .unwrap();
    let o = h.envelopd(
        &[
            "keys",
            "import",
            &d.join("keys/bob.p12").display().to_string(),
            "--config",
            &d.join("proxy.toml").display().to_string(),
            "--password-file",
            &d.join("keys/pw").display().to_string(),
            "--to-token",
            "pkcs11:token=Praxis;object=bob",
            "--module",
            MODULE,
            "--pin-file",
            &h.p("pin"),
        ],
        b"",
    );
    let said = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(said.contains("Destroy it now (shred -u"), "{said}");
    // The lines it prints make a working identity: appended, `envelopd check` opens both keys.
    let lines = &said[said.find("[[identity]]").unwrap()..];
    let mut cfg = std::fs::read_to_string(d.join("proxy.toml")).unwrap();
    cfg.push_str(lines);
    std::fs::write(d.join("proxy.toml"), cfg).unwrap();
    let o = Command::new(ENVELOPD)
        .args(["check", "--no-connect", "--config"])
        .arg(d.join("proxy.toml"))
        .env("SOFTHSM2_CONF", h.conf())
        .output()
        .unwrap();
    let checked = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        checked.contains("identity bob@smime.example: RSA-2048 in token \"Praxis\" (the key cannot leave the token)"),
        "{checked}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // `certs list` says where the practice's own keys are.
    let o = Command::new(ENVELOPD)
        .args(["certs", "list", "--config"])
        .arg(d.join("proxy.toml"))
        .env("SOFTHSM2_CONF", h.conf())
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        listed.contains("[own key: RSA-2048 in token \"Praxis\"]"),
        "{listed}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // Both keys work from the token: Bob's encryption key opens what OpenSSL encrypted to
    // him, his signing key signs what OpenSSL verifies.
    let enc = openssl(
        &[
            "cms",
            "-encrypt",
            "-aes-256-cbc",
            &v("bob.encrypt.crt").display().to_string(),
        ],
        &message(),
    );
    let o = h.envelopd(
        &["smime", "decrypt", "--key", &h.uri("bob-enc", "pin")],
        &enc,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains(SECRET));
    let o = h.envelopd(
        &["smime", "sign", "--key", &h.uri("bob", "pin")],
        &message(),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    openssl(
        &[
            "cms",
            "-verify",
            "-CAfile",
            &v("ca.rsa.crt").display().to_string(),
        ],
        &o.stdout,
    );
    // Both are sensitive and not extractable in the token.
    let o = h.run(
        "pkcs11-tool",
        &[
            "--module",
            MODULE,
            "--token-label",
            "Praxis",
            "--login",
            "--pin",
            "1234",
            "-O",
            "--type",
            "privkey",
        ],
    );
    let listed = String::from_utf8_lossy(&o.stdout);
    assert_eq!(listed.matches("Private Key Object").count(), 2, "{listed}");
    for access in listed
        .lines()
        .filter(|l| l.trim_start().starts_with("Access:"))
    {
        assert!(
            access.contains("sensitive")
                && !access
                    .replace("never extractable", "")
                    .contains("extractable"),
            "{access}"
        );
    }
}
