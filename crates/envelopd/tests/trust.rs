//! Signer trust rules with a PKI built by OpenSSL: a certificate signed by an end-entity (not a
//! CA) must not make a valid chain, and a certificate without the e-mail-protection usage must
//! not make a valid S/MIME signature — both classic ways to spoof a "signed" status.

use std::path::Path;
use std::process::Command;

const ENVELOPD: &str = env!("CARGO_BIN_EXE_envelopd");

fn p(dir: &Path, name: &str) -> String {
    dir.join(name).display().to_string()
}

/// CA -> leaf (per `ext`), signed by `issuer` (or the CA) — returns (key, cert) paths.
fn leaf(dir: &Path, name: &str, ext: &str, issuer: (&str, &str)) -> (String, String) {
    let (key, csr, crt, extf) = (
        p(dir, &format!("{name}.key")),
        p(dir, &format!("{name}.csr")),
        p(dir, &format!("{name}.crt")),
        p(dir, &format!("{name}.ext")),
    );
    std::fs::write(&extf, ext).unwrap();
    testkit::openssl_ok(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        &key,
    ]);
    testkit::openssl_ok(&[
        "req",
        "-new",
        "-key",
        &key,
        "-subj",
        &format!("/CN={name}"),
        "-out",
        &csr,
    ]);
    testkit::openssl_ok(&[
        "x509",
        "-req",
        "-in",
        &csr,
        "-CA",
        issuer.1,
        "-CAkey",
        issuer.0,
        "-CAcreateserial",
        "-days",
        "365",
        "-extfile",
        &extf,
        "-out",
        &crt,
    ]);
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    (key, crt)
}

fn sign_and_verify(key: &str, crt: &str, chain: Option<&str>, ca: &str) -> (i32, String) {
    let msg = b"From: alice@smime.example\r\nTo: bob@smime.example\r\nSubject: t\r\n\r\nhello\r\n";
    let mut args = vec!["smime", "sign", "--key", key, "--cert", crt];
    if let Some(c) = chain {
        args.extend(["--chain", c]);
    }
    let signed = run(&args, msg).0;
    let (_, code, status) = run(&["smime", "verify", "--ca", ca], &signed);
    (code, status)
}

fn run(args: &[&str], input: &[u8]) -> (Vec<u8>, i32, String) {
    use std::io::Write;
    let mut c = Command::new(ENVELOPD)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let _ = c.stdin.take().unwrap().write_all(input);
    let o = c.wait_with_output().unwrap();
    (
        o.stdout,
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stderr).to_string(),
    )
}

#[test]
fn chains_and_usages_are_enforced() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let (cakey, cacrt) = (p(dir, "ca.key"), p(dir, "ca.crt"));
    testkit::openssl_ok(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        &cakey,
    ]);
    testkit::openssl_ok(&[
        "req",
        "-x509",
        "-new",
        "-key",
        &cakey,
        "-subj",
        "/CN=Test CA",
        "-days",
        "365",
        "-out",
        &cacrt,
    ]);
    let mail_ext = "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=emailProtection\nsubjectAltName=email:alice@smime.example\n";

    // The honest case: a leaf straight from the CA verifies.
    let (k, c) = leaf(dir, "good", mail_ext, (&cakey, &cacrt));
    let (code, status) = sign_and_verify(&k, &c, None, &cacrt);
    assert_eq!(code, 0, "{status}");

    // A leaf issued by another leaf (which is not a CA) is refused, even with the chain included.
    let (mk, mc) = leaf(dir, "mallory", "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyCertSign\nsubjectAltName=email:mallory@smime.example\n", (&cakey, &cacrt));
    let (k, c) = leaf(dir, "fake-alice", mail_ext, (&mk, &mc));
    let (code, status) = sign_and_verify(&k, &c, Some(&mc), &cacrt);
    assert_eq!(code, 1, "{status}");
    assert!(status.contains("is not a CA certificate"), "{status}");

    // A TLS server certificate for the same address is not an S/MIME signing certificate.
    let (k, c) = leaf(dir, "tls", "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=email:alice@smime.example\n", (&cakey, &cacrt));
    let (code, status) = sign_and_verify(&k, &c, None, &cacrt);
    assert_eq!(code, 1, "{status}");
    assert!(status.contains("not for e-mail protection"), "{status}");
}
