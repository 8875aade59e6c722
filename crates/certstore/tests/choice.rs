//! Which certificate is used when an address has several: the one its owner asked for in a
//! verified signature (SMIMEEncryptionKeyPreference) if valid, else the newest valid one.

use std::path::Path;
use std::time::SystemTime;

use certstore::CertStore;

const LEAF: &str = "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=emailProtection\nsubjectAltName=email:alice@praxis.example\n";

fn cert(path: &str) -> smime::Cert {
    smime::parse_certificates(&std::fs::read(path).unwrap())
        .unwrap()
        .remove(0)
}

#[test]
fn newest_valid_wins_unless_the_owner_prefers_another() {
    let pki = testkit::Pki::new();
    let root = pki.root("Root");
    // Older but longer-lived, newer but shorter-lived, and an expired one.
    let (_, old) = pki.issue_dated("old", LEAF, &root, "20260101000000Z", "20291231000000Z");
    let (_, new) = pki.issue_dated("new", LEAF, &root, "20260601000000Z", "20280101000000Z");
    let (_, gone) = pki.issue_dated("gone", LEAF, &root, "20200101000000Z", "20210101000000Z");
    let mut store = CertStore::new();
    store.load_anchors(Path::new(&root.1)).unwrap();
    for c in [&old, &new, &gone] {
        store.add_cert(cert(c));
    }
    let now = SystemTime::now();
    let chosen = store.encryption_cert("alice@praxis.example", now).unwrap();
    assert_eq!(chosen.subject(), "CN=new");
    store.set_preferred("Alice@praxis.example", cert(&old));
    let chosen = store.encryption_cert("alice@praxis.example", now).unwrap();
    assert_eq!(chosen.subject(), "CN=old", "the owner's preference wins");
    // A preference for a certificate that is no longer valid is not followed.
    store.set_preferred("alice@praxis.example", cert(&gone));
    let chosen = store.encryption_cert("alice@praxis.example", now).unwrap();
    assert_eq!(chosen.subject(), "CN=new");
}

#[test]
fn the_encryption_key_preference_survives_signing_and_verifying() {
    let v = testkit::vectors().join("rfc9216");
    let read = |n: &str| std::fs::read(v.join(n)).unwrap();
    let id = smime::Identity::new(
        smime::PrivateKey::load(&read("alice.sign.key"), None).unwrap(),
        smime::parse_certificates(&read("alice.sign.crt")).unwrap(),
    )
    .unwrap();
    let enc = smime::parse_certificates(&read("alice.encrypt.crt"))
        .unwrap()
        .remove(0);
    let opts = smime::SignOptions {
        digest: None,
        rsa_padding: smime::RsaPadding::Pkcs1v15,
        signing_time: SystemTime::now(),
        encryption_cert: Some(enc.clone()),
    };
    let msg = b"From: alice@smime.example\r\nSubject: x\r\n\r\nhi\r\n";
    let signed = smime::sign(msg, &id, &opts).unwrap();
    let verified = smime::verify(&signed).unwrap();
    let pref = verified.signers[0]
        .encryption_key_preference
        .as_ref()
        .expect("the preference is read back");
    assert!(enc.matches_issuer_serial(pref));
    assert!(!id.cert.matches_issuer_serial(pref));
}

#[test]
fn what_learning_would_change_is_told_without_changing_anything() {
    // The reading side takes the store's write lock only when one of these says "new".
    let v = testkit::vectors().join("rfc9216");
    let read = |n: &str| std::fs::read(v.join(n)).unwrap();
    let alice = smime::parse_certificates(&read("alice.encrypt.crt"))
        .unwrap()
        .remove(0);
    let bob = smime::parse_certificates(&read("bob.encrypt.crt"))
        .unwrap()
        .remove(0);
    let caps = vec!["2.16.840.1.101.3.4.1.46".to_string()];
    let mut store = CertStore::new();
    assert!(!store.knows(&alice));
    assert!(!store.has_capabilities("alice@smime.example", &caps));
    assert!(store.has_capabilities("alice@smime.example", &[]));
    assert!(!store.has_preferred("alice@smime.example", &alice));
    assert!(store.learn(alice.clone()));
    store.set_capabilities("Alice@smime.example", caps.clone());
    store.set_preferred("alice@smime.example", alice.clone());
    assert!(store.knows(&alice) && !store.knows(&bob));
    // The same address in another case is the same correspondent (design.md's one rule).
    assert!(store.has_capabilities("ALICE@smime.example", &caps));
    assert!(!store.has_capabilities("alice@smime.example", &["1.2.3".to_string()]));
    assert!(store.has_preferred("alice@SMIME.example", &alice));
    assert!(!store.has_preferred("alice@smime.example", &bob));
    assert!(!store.learn(alice));
}
