//! The practice's key in a PKCS#12 file from each common exporter — OpenSSL 3 (default and
//! `-legacy`), Windows/Outlook's shape (PBE-SHA1-3DES, SHA-1 MAC) and NSS `pk12util` (BER, as
//! Thunderbird's and Firefox's backups are; PBES2 and legacy 3DES) — works in `envelopd keys
//! import`, in `envelopd check` and in the daemon, which signs mail with it (checked by OpenSSL
//! on what reached the provider). A wrong password says "wrong password", a damaged file says
//! it is damaged.

mod common;

use std::path::Path;
use std::process::Command;

use testkit::procs::{free_port, smtp_sink, wait_for};

const ENVELOPD: &str = env!("CARGO_BIN_EXE_envelopd");

fn v(n: &str) -> String {
    common::rfc9216().join(n).display().to_string()
}

/// Alice's RFC 9216 signing key and certificate (with the CA) exported five ways; (what,
/// file, password).
fn exports(dir: &Path) -> Vec<(&'static str, String, &'static str)> {
    testkit::pkcs12_exports(
        dir,
        &v("alice.sign.key"),
        &v("alice.sign.crt"),
        Some(&v("ca.rsa.crt")),
    )
    .into_iter()
    .map(|(what, f, pw)| (what, f.display().to_string(), pw))
    .collect()
}

fn private(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// A practice directory whose identity is `p12` with `password`; returns (config, smtp port,
/// upstream port).
fn practice(d: &Path, p12: &str, password: &str) -> (std::path::PathBuf, u16, u16) {
    for sub in ["trust", "certs", "keys", "dump"] {
        std::fs::create_dir_all(d.join(sub)).unwrap();
    }
    std::fs::copy(v("ca.rsa.crt"), d.join("trust/ca.pem")).unwrap();
    std::fs::copy(p12, d.join("keys/alice.p12")).unwrap();
    std::fs::write(d.join("keys/alice.pass"), format!("{password}\n")).unwrap();
    private(&d.join("keys/alice.p12"));
    private(&d.join("keys/alice.pass"));
    let (listen, upstream) = (free_port(), free_port());
    let cfg = d.join("proxy.toml");
    std::fs::write(
        &cfg,
        format!(
            "[smtp]\nlisten = \"127.0.0.1:{listen}\"\n[upstream.smtp]\nhost = \"127.0.0.1\"\nport = {upstream}\ntls = \"none\"\n\
             [certificates]\nanchors = [\"trust\"]\nrecipients = \"certs\"\nrevocation = \"off\"\n\
             [[identity]]\naddresses = [\"alice@smime.example\"]\npkcs12 = \"keys/alice.p12\"\npassword_file = \"keys/alice.pass\"\n"
        ),
    )
    .unwrap();
    (cfg, listen, upstream)
}

fn check(cfg: &Path) -> (i32, String) {
    let o = Command::new(ENVELOPD)
        .args(["check", "--no-connect", "--config"])
        .arg(cfg)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    (o.status.code().unwrap_or(-1), text)
}

fn keys_import(cfg: &Path, p12: &str, password: &str) -> (i32, String) {
    let o = common::lab::run(
        ENVELOPD,
        &["keys", "import", "--config", cfg.to_str().unwrap(), p12],
        Some(format!("{password}\n").as_bytes()),
        &[],
    );
    let text = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    (o.status.code().unwrap_or(-1), text)
}

#[test]
fn every_exporter_s_file_works_in_keys_import_check_and_the_daemon() {
    let files = tempfile::tempdir().unwrap();
    let exported = exports(files.path());
    let nss = std::fs::read(&exported[3].1).unwrap();
    assert_eq!(
        &nss[..2],
        &[0x30, 0x80],
        "pk12util writes BER with an indefinite length"
    );
    for (what, p12, password) in &exported {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let (cfg, listen, upstream) = practice(d, p12, password);

        // keys import: a wrong password, then the right one.
        let (code, out) = keys_import(&cfg, p12, "falsch");
        assert_ne!(code, 0, "{what}: {out}");
        assert!(out.contains("wrong password"), "{what}: {out}");
        let (code, out) = keys_import(&cfg, p12, password);
        assert_eq!(code, 0, "{what}: {out}");
        assert!(out.contains("mail from it will be signed"), "{what}: {out}");

        // check: ready; then with a wrong password file and with a damaged file.
        let (code, out) = check(&cfg);
        assert_eq!(code, 0, "{what}: {out}");
        assert!(out.contains("can sign"), "{what}: {out}");
        std::fs::write(d.join("keys/alice.pass"), "falsch\n").unwrap();
        let (code, out) = check(&cfg);
        assert_ne!(code, 0, "{what}");
        assert!(out.contains("wrong password"), "{what}: {out}");
        std::fs::write(d.join("keys/alice.pass"), format!("{password}\n")).unwrap();
        let whole = std::fs::read(p12).unwrap();
        std::fs::write(d.join("keys/alice.p12"), &whole[..whole.len() * 2 / 3]).unwrap();
        let (code, out) = check(&cfg);
        assert_ne!(code, 0, "{what}");
        assert!(
            out.contains("damaged") && !out.contains("wrong password"),
            "{what}: {out}"
        );
        std::fs::write(d.join("keys/alice.p12"), &whole).unwrap();

        // The daemon signs with it; OpenSSL verifies what reached the provider.
        let _sink = smtp_sink(&d.join("dump"), upstream, &[]);
        let _daemon = common::run_envelopd(&cfg, &d.join("envelopd.log"));
        wait_for(listen);
        let o = Command::new("swaks")
            .args(["--server", &format!("127.0.0.1:{listen}")])
            .args(["--from", "alice@smime.example", "--to", "bob@smime.example"])
            .args([
                "--header",
                "From: alice@smime.example",
                "--header",
                "Subject: p12",
                "--body",
                "Rezept",
            ])
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{what}: {}\n{}",
            String::from_utf8_lossy(&o.stdout),
            std::fs::read_to_string(d.join("envelopd.log")).unwrap_or_default()
        );
        let dumps: Vec<_> = std::fs::read_dir(d.join("dump"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        let stored = dumps
            .iter()
            .map(|f| std::fs::read(f).unwrap())
            .find(|m| String::from_utf8_lossy(m).contains("multipart/signed"))
            .unwrap_or_else(|| panic!("{what}: no signed message reached the provider"));
        // smtp-sink's dump starts with its own envelope fields, which OpenSSL reads as header.
        let plain =
            testkit::openssl_pipe(&["cms", "-verify", "-CAfile", &v("ca.rsa.crt")], &stored)
                .unwrap_or_else(|e| panic!("{what}: OpenSSL does not verify the signed copy: {e}"));
        assert!(String::from_utf8_lossy(&plain).contains("Rezept"), "{what}");
    }
}
