//! PKCS#12 files from every common exporter open, and each failure names its cause: a key and
//! certificate made here with OpenSSL, exported by OpenSSL 3 (default PBES2/AES and `-legacy`),
//! in Windows/Outlook's shape (PBE-SHA1-3DES, SHA-1 MAC) and by NSS `pk12util` (Thunderbird's and
//! Firefox's backups: BER with indefinite lengths), in its default and its legacy 3DES form.

use std::path::Path;
use std::process::Command;

/// Exports of one key pair made here with OpenSSL: (what, file contents, password).
fn exports(dir: &Path) -> Vec<(&'static str, Vec<u8>, &'static str)> {
    let p = |n: &str| dir.join(n).to_str().unwrap().to_string();
    let o = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "30",
            "-subj",
            "/CN=Dr. Test/emailAddress=Test@Praxis.example",
            "-addext",
            "keyUsage=digitalSignature,keyEncipherment",
            "-addext",
            "extendedKeyUsage=emailProtection",
            "-keyout",
            &p("k.pem"),
            "-out",
            &p("c.pem"),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    testkit::pkcs12_exports(dir, &p("k.pem"), &p("c.pem"), None)
        .into_iter()
        .map(|(what, f, pw)| (what, std::fs::read(f).unwrap(), pw))
        .collect()
}

#[test]
fn every_exporter_opens_and_every_failure_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let files = exports(dir.path());
    // The NSS files really are the BER case this test is about.
    let nss = &files[3].1;
    assert_eq!(
        &nss[..2],
        &[0x30, 0x80],
        "pk12util writes an indefinite length"
    );
    let cert = std::fs::read(dir.path().join("c.pem")).unwrap();
    let cert = smime::parse_certificates(&cert).unwrap().remove(0);
    for (what, data, password) in &files {
        let id =
            smime::Identity::from_pkcs12(data, password).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(id.cert, cert, "{what}");
        assert!(id.key.matches(&cert), "{what}");
        // The key works: a signature made with it verifies.
        let opts = smime::SignOptions {
            digest: None,
            rsa_padding: smime::RsaPadding::Pkcs1v15,
            signing_time: std::time::SystemTime::now(),
            encryption_cert: None,
        };
        let signed = smime::sign(b"From: test@praxis.example\r\n\r\nx\r\n", &id, &opts).unwrap();
        assert!(smime::verify(&signed).unwrap().is_valid(), "{what}");

        let wrong = smime::Identity::from_pkcs12(data, "wrong")
            .unwrap_err()
            .to_string();
        assert!(wrong.contains("wrong password"), "{what}: {wrong}");
        for damaged in [&data[..data.len() / 2], &data[..40], b"not a PKCS#12 file"] {
            let e = smime::Identity::from_pkcs12(damaged, password)
                .unwrap_err()
                .to_string();
            assert!(e.contains("damaged"), "{what}: {e}");
            assert!(!e.contains("wrong password"), "{what}: {e}");
        }
    }
}
