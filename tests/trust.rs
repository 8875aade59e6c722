//! Signer trust rules with a PKI built by OpenSSL: a certificate signed by an end-entity (not a
//! CA) must not make a valid chain, and a certificate without the e-mail-protection usage must
//! not make a valid S/MIME signature — both classic ways to spoof a "signed" status.

use std::process::Command;

const ENVELOPD: &str = env!("CARGO_BIN_EXE_envelopd");

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
    let pki = testkit::Pki::new();
    let ca = pki.root("Test CA");
    let leaf =
        |name: &str, ext: &str, issuer: &(String, String)| pki.issue(name, "ec", ext, issuer);
    let mail_ext = "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=emailProtection\nsubjectAltName=email:alice@smime.example\n";

    // The honest case: a leaf straight from the CA verifies.
    let (k, c) = leaf("good", mail_ext, &ca);
    let (code, status) = sign_and_verify(&k, &c, None, &ca.1);
    assert_eq!(code, 0, "{status}");

    // A leaf issued by another leaf (which is not a CA) is refused, even with the chain included.
    let (mk, mc) = leaf("mallory", "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyCertSign\nsubjectAltName=email:mallory@smime.example\n", &ca);
    let (k, c) = leaf("fake-alice", mail_ext, &(mk, mc.clone()));
    let (code, status) = sign_and_verify(&k, &c, Some(&mc), &ca.1);
    assert_eq!(code, 1, "{status}");
    assert!(status.contains("is not a CA certificate"), "{status}");

    // A TLS server certificate for the same address is not an S/MIME signing certificate.
    let (k, c) = leaf("tls", "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=email:alice@smime.example\n", &ca);
    let (code, status) = sign_and_verify(&k, &c, None, &ca.1);
    assert_eq!(code, 1, "{status}");
    assert!(status.contains("e-mail protection"), "{status}");
}
