//! What reading signed mail teaches the certificate store: only from a valid signature (chain,
//! From address, untouched content), the certificates valid for encrypting to the sender, the
//! one the sender asked to be encrypted to, and the sender's capabilities.

use std::time::SystemTime;

use certstore::CertStore;
use imap::present::present;

fn read(n: &str) -> Vec<u8> {
    std::fs::read(testkit::vectors().join("rfc9216").join(n)).unwrap()
}

fn signed(from: &str) -> Vec<u8> {
    let id = smime::Identity::new(
        smime::PrivateKey::load(&read("alice.sign.key"), None).unwrap(),
        smime::parse_certificates(&read("alice.sign.crt")).unwrap(),
    )
    .unwrap();
    let opts = smime::SignOptions {
        digest: None,
        rsa_padding: smime::RsaPadding::Pkcs1v15,
        signing_time: SystemTime::now(),
        encryption_cert: Some(
            smime::parse_certificates(&read("alice.encrypt.crt"))
                .unwrap()
                .remove(0),
        ),
    };
    let msg =
        format!("From: {from}\r\nTo: bob@smime.example\r\nSubject: Befund\r\n\r\nunauffaellig\r\n");
    smime::sign(msg.as_bytes(), &id, &opts).unwrap()
}

fn store() -> CertStore {
    let mut s = CertStore::new();
    for c in smime::parse_certificates(&read("ca.rsa.crt")).unwrap() {
        s.add_anchor(c);
    }
    s
}

#[test]
fn only_a_valid_signature_teaches() {
    let enc = smime::parse_certificates(&read("alice.encrypt.crt"))
        .unwrap()
        .remove(0);
    let now = SystemTime::now();
    let p = present(&signed("alice@smime.example"), &[], &store(), now);
    assert!(p.status.contains("signature=valid"), "{}", p.status);
    assert!(p
        .harvest
        .iter()
        .any(|(a, c)| a == "alice@smime.example" && *c == enc));
    assert_eq!(p.preferred.len(), 1);
    assert_eq!(p.preferred[0].1, enc);
    assert!(!p.capabilities.is_empty());

    // Content changed in transit: invalid, nothing learnt.
    let tampered = String::from_utf8(signed("alice@smime.example"))
        .unwrap()
        .replace("unauffaellig", "auffaellig!!");
    let p = present(tampered.as_bytes(), &[], &store(), now);
    assert!(p.status.contains("signature=invalid"), "{}", p.status);
    assert!(p.harvest.is_empty() && p.preferred.is_empty() && p.capabilities.is_empty());

    // Signed by Alice but sent as Mallory: nothing learnt for either address.
    let p = present(&signed("mallory@smime.example"), &[], &store(), now);
    assert!(p.status.contains("signature=from-mismatch"), "{}", p.status);
    assert!(p.harvest.is_empty() && p.preferred.is_empty() && p.capabilities.is_empty());

    // No trust anchor for Alice's CA: untrusted, nothing learnt.
    let p = present(&signed("alice@smime.example"), &[], &CertStore::new(), now);
    assert!(p.status.contains("signature=untrusted"), "{}", p.status);
    assert!(p.harvest.is_empty() && p.preferred.is_empty() && p.capabilities.is_empty());
}
