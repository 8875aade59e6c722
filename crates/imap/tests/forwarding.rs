//! Surreptitious forwarding (Davis, "Defective Sign & Encrypt in S/MIME, PKCS#7, MOSS, PEM,
//! PGP, and XML", USENIX 2001): Bob decrypts Alice's signed and encrypted message and encrypts
//! it again, signature untouched, to Carlos with `To: carlos` outside. The signature is still
//! Alice's and valid; what may not follow is that Alice wrote to Carlos. With header protection
//! (RFC 9788, envelopd's default) the To and Cc shown are the ones Alice signed; without it
//! nothing in the message says whom Alice wrote to, and the reader sees the outer ones.

use std::time::SystemTime;

use certstore::CertStore;
use imap::present::present;

fn read(n: &str) -> Vec<u8> {
    std::fs::read(testkit::vectors().join("rfc9216").join(n)).unwrap()
}

fn identity(key: &str, cert: &str) -> smime::Identity {
    smime::Identity::new(
        smime::PrivateKey::load(&read(key), None).unwrap(),
        smime::parse_certificates(&read(cert)).unwrap(),
    )
    .unwrap()
}

fn cert(name: &str) -> smime::Cert {
    smime::parse_certificates(&read(name)).unwrap().remove(0)
}

/// Alice's message to Bob, signed and encrypted by envelopd's core with `protection`; then
/// Bob's forward of it to Carlos, and what Carlos is shown (message, status).
fn forwarded(protection: smime::Protection) -> (String, String) {
    let alice = identity("alice.sign.key", "alice.sign.crt");
    let now = SystemTime::now();
    let opts = smime::SignOptions {
        digest: None,
        rsa_padding: smime::RsaPadding::Pkcs1v15,
        signing_time: now,
        encryption_cert: None,
    };
    let original = b"From: alice@smime.example\r\nTo: bob@smime.example\r\n\
        Subject: Befund M.\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\n\
        Der Befund ist unauffaellig.\r\n";
    let to_bob = smime::Prepared::new(original, Some((&alice, &opts)), protection)
        .unwrap()
        .encrypt(
            &[cert("bob.encrypt.crt")],
            &smime::EncryptOptions::default(),
        )
        .unwrap();
    // Bob opens it, puts Carlos outside and encrypts it to him; the signature stays as it is.
    let bob = identity("bob.encrypt.key", "bob.encrypt.crt");
    let opened = String::from_utf8(smime::decrypt(&to_bob, &[&bob]).unwrap().message).unwrap();
    assert!(opened.contains("To: bob@smime.example\r\n"), "{opened}");
    let rewritten = opened.replacen(
        "To: bob@smime.example\r\n",
        "To: carlos@smime.example\r\n",
        1,
    );
    // Carlos's RSA key and certificate from a CA of his own, made by OpenSSL (the RFC 9216
    // Carlos has an X25519 key, which envelopd does not encrypt to).
    let pki = testkit::Pki::new();
    let ca = pki.root("Carlos CA");
    let ext = "subjectAltName=email:carlos@smime.example\nkeyUsage=critical,keyEncipherment\n\
               extendedKeyUsage=emailProtection\n";
    let (key, crt) = pki.issue("carlos", "2048", ext, &ca);
    let carlos = smime::Identity::new(
        smime::PrivateKey::load(&std::fs::read(key).unwrap(), None).unwrap(),
        smime::parse_certificates(&std::fs::read(crt).unwrap()).unwrap(),
    )
    .unwrap();
    let to_carlos = smime::encrypt(
        rewritten.as_bytes(),
        std::slice::from_ref(&carlos.cert),
        &smime::EncryptOptions::default(),
    )
    .unwrap();
    let mut store = CertStore::new();
    store.add_anchor(cert("ca.rsa.crt"));
    let p = present(&to_carlos, &[&carlos], &store, now);
    let shown = String::from_utf8(p.message.clone()).unwrap();
    (shown, p.status.clone())
}

fn header(message: &str) -> &str {
    &message[..message.find("\r\n\r\n").unwrap()]
}

#[test]
fn with_header_protection_the_reader_sees_whom_the_signer_wrote_to() {
    let (shown, status) = forwarded(smime::Protection::Cipher {
        legacy_display: false,
    });
    assert!(
        status.contains("signature=valid") && status.contains("headers=protected"),
        "{status}"
    );
    let h = header(&shown);
    assert!(h.contains("To: bob@smime.example"), "{h}");
    assert!(
        !h.contains("carlos"),
        "the forwarder's To must not be shown: {h}"
    );
    assert!(h.contains("Subject: Befund M."), "{h}");
}

/// The limit, shown so it stays documented: without header protection the signature is still
/// valid and the outer To (the forwarder's) is what the reader sees.
#[test]
fn without_header_protection_only_the_signature_is_vouched_for() {
    let (shown, status) = forwarded(smime::Protection::Off);
    assert!(status.contains("signature=valid"), "{status}");
    assert!(!status.contains("headers=protected"), "{status}");
    assert!(
        header(&shown).contains("To: carlos@smime.example"),
        "{shown}"
    );
}
