//! Policy decisions with the RFC 9216 certificates: encrypt when everyone can read it, otherwise
//! plaintext / refuse / split per setting and override, Bcc privacy, pass-through.

use std::time::{Duration, SystemTime};

use certstore::CertStore;
use policy::{decide, Decision, Fallback, Identities, MessageFacts, Override, PolicyConfig};
use smime::{Cert, ContentCipher};

fn cert(name: &str) -> Cert {
    smime::parse_certificates(&std::fs::read(testkit::rfc9216(name)).unwrap())
        .unwrap()
        .remove(0)
}

fn store() -> CertStore {
    let mut s = CertStore::new();
    s.load_anchors(&testkit::rfc9216("ca.rsa.crt")).unwrap();
    for f in [
        "alice.encrypt.crt",
        "bob.encrypt.crt",
        "alice.sign.crt",
        "bob.sign.crt",
    ] {
        s.load_certs(&testkit::rfc9216(f));
    }
    s
}

/// Alice's identity: she can sign, and her own encryption certificate keeps her Sent copy readable.
struct Alice;
impl Identities for Alice {
    fn can_sign_as(&self, address: &str) -> bool {
        address == "alice@smime.example"
    }
    fn own_encryption_cert(&self, address: &str) -> Option<Cert> {
        self.can_sign_as(address).then(|| cert("alice.encrypt.crt"))
    }
}

fn at() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_893_456_000)
}

fn facts(to: &str, rcpts: &[&str]) -> MessageFacts {
    let msg =
        format!("From: Alice <alice@smime.example>\r\nTo: {to}\r\nSubject: Befund\r\n\r\nText\r\n");
    MessageFacts::from_message(
        msg.as_bytes(),
        rcpts.iter().map(|s| s.to_string()).collect(),
    )
}

fn cfg(fallback: Fallback) -> PolicyConfig {
    PolicyConfig {
        fallback,
        ..PolicyConfig::default()
    }
}

#[test]
fn everyone_has_a_certificate_so_it_is_signed_and_encrypted() {
    let f = facts("bob@smime.example", &["bob@smime.example"]);
    let Decision::Deliver {
        sign_as,
        deliveries,
        unprotected,
    } = decide(&f, &store(), &Alice, &cfg(Fallback::Refuse), at())
    else {
        panic!("expected delivery")
    };
    assert_eq!(sign_as.as_deref(), Some("alice@smime.example"));
    assert!(unprotected.is_empty());
    assert_eq!(deliveries.len(), 1);
    let enc = deliveries[0].encrypt.as_ref().unwrap();
    assert_eq!(
        enc.certs.len(),
        2,
        "Bob, and Alice's own certificate for the Sent copy"
    );
    assert!(enc.certs[0].subject().contains("Bob"));
    assert!(enc.certs[1].subject().contains("Alice"));
    assert_eq!(
        enc.cipher,
        ContentCipher::Aes256Cbc,
        "CBC unless GCM is known to work"
    );

    let mut c = cfg(Fallback::Refuse);
    c.gcm_capable = vec!["smime.example".into()];
    let Decision::Deliver { deliveries, .. } = decide(&f, &store(), &Alice, &c, at()) else {
        panic!()
    };
    assert_eq!(
        deliveries[0].encrypt.as_ref().unwrap().cipher,
        ContentCipher::Aes256Gcm
    );
}

#[test]
fn a_missing_certificate_follows_the_fallback() {
    let f = facts(
        "bob@smime.example, carol@other.example",
        &["bob@smime.example", "carol@other.example"],
    );
    let s = store();

    let Decision::Deliver {
        deliveries,
        unprotected,
        ..
    } = decide(&f, &s, &Alice, &cfg(Fallback::Plaintext), at())
    else {
        panic!()
    };
    assert_eq!(deliveries.len(), 1);
    assert!(deliveries[0].encrypt.is_none());
    assert_eq!(deliveries[0].recipients.len(), 2);
    assert_eq!(
        unprotected,
        vec![(
            "carol@other.example".to_string(),
            "no certificate".to_string()
        )]
    );

    let Decision::Refuse {
        code,
        enhanced,
        text,
    } = decide(&f, &s, &Alice, &cfg(Fallback::Refuse), at())
    else {
        panic!()
    };
    assert_eq!((code, enhanced), (550, "5.7.1"));
    assert_eq!(
        text,
        "Encryption required, but no valid certificate for: carol@other.example (no certificate)"
    );

    let Decision::Deliver { deliveries, .. } = decide(&f, &s, &Alice, &cfg(Fallback::Split), at())
    else {
        panic!()
    };
    assert_eq!(deliveries.len(), 2);
    assert_eq!(deliveries[0].recipients, vec!["bob@smime.example"]);
    assert!(deliveries[0].encrypt.is_some());
    assert_eq!(deliveries[1].recipients, vec!["carol@other.example"]);
    assert!(deliveries[1].encrypt.is_none());
}

#[test]
fn overrides_beat_the_default_address_before_domain() {
    let f = facts("carol@hospital.example", &["carol@hospital.example"]);
    let mut c = cfg(Fallback::Plaintext);
    c.overrides = vec![Override {
        pattern: "Hospital.Example".into(),
        fallback: Fallback::Refuse,
    }];
    assert!(matches!(
        decide(&f, &store(), &Alice, &c, at()),
        Decision::Refuse { .. }
    ));
    c.overrides.push(Override {
        pattern: "carol@hospital.example".into(),
        fallback: Fallback::Plaintext,
    });
    assert!(matches!(
        decide(&f, &store(), &Alice, &c, at()),
        Decision::Deliver { .. }
    ));
    assert_eq!(c.fallback_for("dave@hospital.example"), Fallback::Refuse);
}

#[test]
fn an_expired_certificate_is_named_in_the_refusal() {
    let f = facts("bob@smime.example", &["bob@smime.example"]);
    let late = SystemTime::UNIX_EPOCH + Duration::from_secs(2_700_000_000);
    let Decision::Refuse { text, .. } = decide(&f, &store(), &Alice, &cfg(Fallback::Refuse), late)
    else {
        panic!()
    };
    assert!(
        text.contains("bob@smime.example") && text.contains("expired"),
        "{text}"
    );
}

#[test]
fn bcc_recipients_get_their_own_encrypted_copy() {
    // To: Alice; Bcc: Bob. Bob's RecipientInfo must not be in Alice's copy and vice versa.
    let msg = b"To: alice@smime.example\r\nSubject: x\r\n\r\nText\r\n";
    let f = MessageFacts::from_message(
        msg,
        vec!["alice@smime.example".into(), "bob@smime.example".into()],
    );
    let Decision::Deliver {
        deliveries,
        sign_as,
        ..
    } = decide(&f, &store(), &Alice, &cfg(Fallback::Refuse), at())
    else {
        panic!()
    };
    assert_eq!(sign_as, None, "no From, no signature");
    assert_eq!(deliveries.len(), 2);
    let subjects = |i: usize| -> Vec<String> {
        deliveries[i]
            .encrypt
            .as_ref()
            .unwrap()
            .certs
            .iter()
            .map(Cert::subject)
            .collect()
    };
    assert_eq!(deliveries[0].recipients, vec!["alice@smime.example"]);
    assert!(
        subjects(0).iter().all(|s| !s.contains("Bob")),
        "{:?}",
        subjects(0)
    );
    assert_eq!(deliveries[1].recipients, vec!["bob@smime.example"]);
    assert!(
        subjects(1).iter().all(|s| !s.contains("Alice")),
        "{:?}",
        subjects(1)
    );
}

#[test]
fn protected_mail_passes_through_and_require_aead_is_strict() {
    let signed = b"From: alice@smime.example\r\nContent-Type: multipart/signed; protocol=\"application/pgp-signature\"; boundary=b\r\n\r\n--b\r\n\r\nx\r\n--b--\r\n";
    let f = MessageFacts::from_message(signed, vec!["bob@smime.example".into()]);
    assert!(matches!(
        decide(&f, &store(), &Alice, &cfg(Fallback::Refuse), at()),
        Decision::PassThrough
    ));
    let smime_enc =
        b"Content-Type: application/pkcs7-mime; smime-type=enveloped-data\r\n\r\nMIAG\r\n";
    let f = MessageFacts::from_message(smime_enc, vec!["bob@smime.example".into()]);
    assert!(matches!(
        decide(&f, &store(), &Alice, &cfg(Fallback::Refuse), at()),
        Decision::PassThrough
    ));

    let f = facts("bob@smime.example", &["bob@smime.example"]);
    let mut c = cfg(Fallback::Refuse);
    c.require_aead = true;
    let Decision::Refuse { text, .. } = decide(&f, &store(), &Alice, &c, at()) else {
        panic!()
    };
    assert!(text.contains("AES-GCM"), "{text}");
}
