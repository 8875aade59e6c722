//! The upstream copies, inspected with OpenSSL: Bcc privacy by each copy's RecipientInfos, the
//! Bcc header gone, signed once and readable by exactly its recipients, split and refuse.

use std::process::Command;
use std::time::{Duration, SystemTime};

use certstore::CertStore;
use policy::{decide, Fallback, Identities, MessageFacts, PolicyConfig};
use smime::{Cert, Identity, PrivateKey, SignOptions};
use smtp::outgoing::{copies, HeaderProtection, Refusal};

fn cert(name: &str) -> Cert {
    smime::parse_certificates(&std::fs::read(testkit::rfc9216(name)).unwrap())
        .unwrap()
        .remove(0)
}

fn alice_signer() -> Identity {
    let key = PrivateKey::load(
        &std::fs::read(testkit::rfc9216("alice.sign.key")).unwrap(),
        None,
    )
    .unwrap();
    Identity::new(key, vec![cert("alice.sign.crt")]).unwrap()
}

struct Ids;
impl Identities for Ids {
    fn can_sign_as(&self, a: &str) -> bool {
        a == "alice@smime.example"
    }
    fn own_encryption_cert(&self, a: &str) -> Option<Cert> {
        self.can_sign_as(a).then(|| cert("alice.encrypt.crt"))
    }
}

fn store() -> CertStore {
    let mut s = CertStore::new();
    s.load_anchors(&testkit::rfc9216("ca.rsa.crt")).unwrap();
    s.load_certs(&testkit::rfc9216("alice.encrypt.crt"));
    s.load_certs(&testkit::rfc9216("bob.encrypt.crt"));
    s
}

fn at() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_893_456_000)
}

fn sign_opts() -> SignOptions {
    SignOptions {
        digest: None,
        rsa_padding: smime::RsaPadding::Pkcs1v15,
        signing_time: at(),
        encryption_cert: None,
    }
}

fn serial(name: &str) -> String {
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-serial", "-in"])
        .arg(testkit::rfc9216(name))
        .output()
        .unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .trim_start_matches("serial=")
        .to_lowercase()
}

/// The recipient serial numbers of an S/MIME message, as OpenSSL reads them.
fn recipient_serials(msg: &[u8]) -> String {
    let printed = testkit::openssl_pipe(&["cms", "-cmsout", "-print"], msg).unwrap();
    String::from_utf8_lossy(&printed)
        .to_lowercase()
        .replace([':', ' '], "")
}

const BODY: &str = "Befund: unauffaellig.\r\n";

#[test]
fn bcc_recipients_are_invisible_in_every_copy() {
    let msg = format!("From: praxis@smime.example\r\nTo: alice@smime.example\r\nBcc: bob@smime.example\r\nSubject: Befund\r\n\r\n{BODY}");
    let rcpts = vec![
        "alice@smime.example".to_string(),
        "bob@smime.example".to_string(),
    ];
    let facts = MessageFacts::from_message(msg.as_bytes(), rcpts.clone());
    let decision = decide(
        &facts,
        &store(),
        &Ids,
        &PolicyConfig {
            fallback: Fallback::Refuse,
            ..Default::default()
        },
        at(),
    );
    let out = copies(
        msg.as_bytes().to_vec(),
        &rcpts,
        &decision,
        None,
        &sign_opts(),
        HeaderProtection::default(),
    )
    .unwrap();
    assert_eq!(out.len(), 2);
    let (alice_serial, bob_serial) = (serial("alice.encrypt.crt"), serial("bob.encrypt.crt"));
    for (copy, me, other, key) in [
        (&out[0], &alice_serial, &bob_serial, "alice.encrypt"),
        (&out[1], &bob_serial, &alice_serial, "bob.encrypt"),
    ] {
        assert!(copy.encrypted && !copy.signed);
        let text = String::from_utf8_lossy(&copy.message);
        assert!(
            !text.to_lowercase().contains("bcc:"),
            "Bcc header left in:\n{text}"
        );
        let rids = recipient_serials(&copy.message);
        assert!(rids.contains(me.as_str()), "{me} missing");
        assert!(
            !rids.contains(other.as_str()),
            "{other} visible in a copy for {me}"
        );
        let plain = testkit::openssl_pipe(
            &[
                "cms",
                "-decrypt",
                "-inkey",
                testkit::rfc9216(&format!("{key}.key")).to_str().unwrap(),
            ],
            &copy.message,
        )
        .unwrap();
        assert!(String::from_utf8_lossy(&plain).ends_with(BODY));
    }
    assert_eq!(out[0].recipients, vec!["alice@smime.example"]);
    assert_eq!(out[1].recipients, vec!["bob@smime.example"]);
}

#[test]
fn signed_once_then_encrypted_to_recipient_and_sender() {
    let msg = format!("From: Alice <alice@smime.example>\r\nTo: bob@smime.example\r\nSubject: Befund\r\n\r\n{BODY}");
    let rcpts = vec!["bob@smime.example".to_string()];
    let facts = MessageFacts::from_message(msg.as_bytes(), rcpts.clone());
    let decision = decide(&facts, &store(), &Ids, &PolicyConfig::default(), at());
    let signer = alice_signer();
    let out = copies(
        msg.as_bytes().to_vec(),
        &rcpts,
        &decision,
        Some(&signer),
        &sign_opts(),
        HeaderProtection::default(),
    )
    .unwrap();
    assert_eq!(out.len(), 1);
    assert!(out[0].encrypted && out[0].signed);
    for key in ["bob.encrypt", "alice.encrypt"] {
        let signed = testkit::openssl_pipe(
            &[
                "cms",
                "-decrypt",
                "-inkey",
                testkit::rfc9216(&format!("{key}.key")).to_str().unwrap(),
            ],
            &out[0].message,
        )
        .unwrap();
        let content = testkit::openssl_pipe(
            &[
                "cms",
                "-verify",
                "-CAfile",
                testkit::rfc9216("ca.rsa.crt").to_str().unwrap(),
            ],
            &signed,
        )
        .unwrap();
        assert!(String::from_utf8_lossy(&content).ends_with(BODY), "{key}");
    }
}

#[test]
fn split_sends_signed_plaintext_to_the_rest_and_refuse_says_why() {
    let msg = format!("From: Alice <alice@smime.example>\r\nTo: bob@smime.example, carol@other.example\r\nBcc: dave@other.example\r\nSubject: x\r\n\r\n{BODY}");
    let rcpts: Vec<String> = [
        "bob@smime.example",
        "carol@other.example",
        "dave@other.example",
    ]
    .map(String::from)
    .to_vec();
    let facts = MessageFacts::from_message(msg.as_bytes(), rcpts.clone());
    let split = PolicyConfig {
        fallback: Fallback::Split,
        ..Default::default()
    };
    let decision = decide(&facts, &store(), &Ids, &split, at());
    let out = copies(
        msg.as_bytes().to_vec(),
        &rcpts,
        &decision,
        Some(&alice_signer()),
        &sign_opts(),
        HeaderProtection::default(),
    )
    .unwrap();
    assert_eq!(out.len(), 2);
    assert!(out[0].encrypted);
    assert_eq!(
        out[1].recipients,
        vec!["carol@other.example", "dave@other.example"]
    );
    assert!(!out[1].encrypted && out[1].signed);
    assert!(!String::from_utf8_lossy(&out[1].message)
        .to_lowercase()
        .contains("bcc:"));
    let content = testkit::openssl_pipe(
        &[
            "cms",
            "-verify",
            "-CAfile",
            testkit::rfc9216("ca.rsa.crt").to_str().unwrap(),
        ],
        &out[1].message,
    )
    .unwrap();
    assert!(String::from_utf8_lossy(&content).ends_with(BODY));
    // Header protection: the encrypted copy hides the Subject, the signed-only copy keeps it
    // outside and carries a signed copy inside (hp="clear").
    let subjects = |m: &[u8]| -> Vec<String> {
        smime::mime::fields(smime::mime::split(m).header)
            .into_iter()
            .filter(|f| f.name == "subject")
            .map(|f| String::from_utf8_lossy(f.raw).trim_end().to_string())
            .collect()
    };
    assert_eq!(subjects(&out[0].message), vec!["Subject: [...]"]);
    assert_eq!(subjects(&out[1].message), vec!["Subject: x"]);
    let content = String::from_utf8_lossy(&content);
    assert!(content.contains("hp=\"clear\"") && content.contains("Subject: x\r\n"));

    let refuse = PolicyConfig {
        fallback: Fallback::Refuse,
        ..Default::default()
    };
    let decision = decide(&facts, &store(), &Ids, &refuse, at());
    match copies(
        msg.as_bytes().to_vec(),
        &rcpts,
        &decision,
        None,
        &sign_opts(),
        HeaderProtection::default(),
    ) {
        Err(Refusal::Policy {
            code: 550,
            enhanced: "5.7.1",
            text,
        }) => {
            assert!(
                text.contains("carol@other.example (no certificate)")
                    && text.contains("dave@other.example"),
                "{text}"
            )
        }
        other => panic!("{other:?}"),
    }
}
