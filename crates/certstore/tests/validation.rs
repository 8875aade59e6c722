//! Validation rules against a real PKI made by OpenSSL: root -> intermediate (pathlen 0) ->
//! leaves with every kind of defect, loaded from files the way a practice keeps them.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use certstore::{CertStore, Purpose, Rejection};

const LEAF: &str = "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=emailProtection\n";

fn leaf_ext(extra: &str) -> String {
    format!("{LEAF}{extra}\n")
}

fn now() -> SystemTime {
    SystemTime::now()
}

struct Fixture {
    pki: testkit::Pki,
    store: CertStore,
    load_errors: Vec<String>,
}

fn fixture() -> Fixture {
    let pki = testkit::Pki::new();
    let root = pki.root("Praxis Root CA");
    let inter = pki.issue(
        "Praxis Mail CA",
        "2048",
        "basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\n",
        &root,
    );
    let certs = pki.dir().join("certs");
    std::fs::create_dir(&certs).unwrap();
    let keep = |crt: &str, name: &str| {
        std::fs::copy(crt, certs.join(name)).unwrap();
    };
    keep(&inter.1, "intermediate.pem");
    let cases: &[(&str, &str, String)] = &[
        ("alice", "2048", leaf_ext("subjectAltName=email:alice@praxis.example")),
        ("weak", "1024", leaf_ext("subjectAltName=email:weak@praxis.example")),
        ("tls", "2048", "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=email:tls@praxis.example\n".into()),
        ("signonly", "2048", "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nsubjectAltName=email:signonly@praxis.example\n".into()),
        ("noeku", "2048", "basicConstraints=CA:FALSE\nkeyUsage=keyEncipherment\nsubjectAltName=email:noeku@praxis.example\n".into()),
        ("mixedcase", "2048", leaf_ext("subjectAltName=email:Bob@Praxis.Example")),
        ("utf8", "2048", leaf_ext("subjectAltName=otherName:1.3.6.1.5.5.7.8.9;UTF8:joerg@praxis.example")),
        ("ec", "ec", "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyAgreement\nextendedKeyUsage=emailProtection\nsubjectAltName=email:ec@praxis.example\n".into()),
    ];
    for (name, kind, ext) in cases {
        let (_, crt) = pki.issue(name, kind, ext, &inter);
        keep(&crt, &format!("{name}.crt"));
    }
    // A sub-CA under the pathlen:0 intermediate: its leaves must not validate.
    let sub = pki.issue(
        "Rogue Sub CA",
        "2048",
        "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign\n",
        &inter,
    );
    keep(&sub.1, "rogue-sub-ca.pem");
    let (_, crt) = pki.issue(
        "deep",
        "2048",
        &leaf_ext("subjectAltName=email:deep@praxis.example"),
        &sub,
    );
    keep(&crt, "deep.crt");
    // A leaf from a CA nobody trusts.
    let other_root = pki.root("Other Root");
    let (_, crt) = pki.issue(
        "stranger",
        "2048",
        &leaf_ext("subjectAltName=email:stranger@praxis.example"),
        &other_root,
    );
    keep(&crt, "stranger.crt");
    std::fs::write(certs.join("notes.txt"), "not a certificate").unwrap();

    let mut store = CertStore::new();
    assert_eq!(store.load_anchors(Path::new(&root.1)).unwrap(), 1);
    let (n, errors) = store.load_certs(&certs);
    assert_eq!(
        n, 12,
        "intermediate, 8 leaves, rogue sub-CA, its leaf, stranger"
    );
    Fixture {
        pki,
        store,
        load_errors: errors.iter().map(|e| e.to_string()).collect(),
    }
}

#[test]
fn the_store_applies_every_rule_with_a_reason() {
    let f = fixture();
    let s = &f.store;
    assert_eq!(f.load_errors.len(), 1);
    assert!(
        f.load_errors[0].contains("notes.txt"),
        "{:?}",
        f.load_errors
    );

    // Valid: RSA, EC (keyAgreement), no EKU, SmtpUTF8Mailbox (otherName; ASCII here, since
    // OpenSSL 3.0 re-encodes non-ASCII config values as Latin-1), domain case-insensitive.
    for addr in [
        "alice@praxis.example",
        "ec@praxis.example",
        "noeku@praxis.example",
        "joerg@praxis.example",
        "Bob@praxis.example",
    ] {
        let c = s
            .encryption_cert(addr, now())
            .unwrap_or_else(|e| panic!("{addr}: {e}"));
        assert!(c.names(&smime::Address::parse(addr).unwrap_or_else(|e| panic!("{e}"))));
    }

    let reject = |addr: &str, at: SystemTime| s.encryption_cert(addr, at).unwrap_err();
    assert_eq!(
        reject("nobody@praxis.example", now()),
        Rejection::NoCertificate("nobody@praxis.example".into())
    );
    // One address rule (smime::address): "bob" is "Bob", as for NSS/Thunderbird and Outlook.
    assert!(s.encryption_cert("bob@PRAXIS.example", now()).is_ok());
    assert!(matches!(
        reject("bobby@praxis.example", now()),
        Rejection::NoCertificate(_)
    ));
    assert!(
        matches!(reject("weak@praxis.example", now()), Rejection::WeakKey { ref why, .. } if why.contains("1024"))
    );
    assert!(
        matches!(reject("tls@praxis.example", now()), Rejection::WrongUsage { ref why, .. } if why.contains("e-mail protection"))
    );
    assert!(
        matches!(reject("signonly@praxis.example", now()), Rejection::WrongUsage { ref why, .. } if why.contains("keyEncipherment"))
    );
    assert!(
        matches!(reject("stranger@praxis.example", now()), Rejection::Untrusted { ref why, .. } if why.contains("no trusted CA"))
    );
    assert!(
        matches!(reject("deep@praxis.example", now()), Rejection::Untrusted { ref why, .. } if why.contains("path length"))
    );
    let later = now() + Duration::from_secs(60 * 86400);
    assert!(matches!(
        reject("alice@praxis.example", later),
        Rejection::Expired { .. }
    ));
    let earlier = now() - Duration::from_secs(86400);
    assert!(matches!(
        reject("alice@praxis.example", earlier),
        Rejection::NotYetValid { .. }
    ));

    // Every reason reads as a sentence with the subject in it.
    let text = reject("tls@praxis.example", now()).to_string();
    assert!(
        text.starts_with("certificate \"CN=tls\" may not be used"),
        "{text}"
    );
}

#[test]
fn signing_validation_uses_carried_intermediates() {
    let f = fixture();
    // A store that only knows the root: the intermediate arrives with the signed message.
    let mut bare = CertStore::new();
    bare.load_anchors(Path::new(&f.pki.p("Praxis Root CA.crt")))
        .unwrap();
    let alice = smime::parse_certificates(&std::fs::read(f.pki.p("alice.crt")).unwrap())
        .unwrap()
        .remove(0);
    let inter = smime::parse_certificates(&std::fs::read(f.pki.p("Praxis Mail CA.crt")).unwrap())
        .unwrap()
        .remove(0);
    let err = bare
        .validate(&alice, Purpose::Sign, "alice@praxis.example", &[], now())
        .unwrap_err();
    assert!(matches!(err, Rejection::Untrusted { .. }), "{err}");
    let path = bare
        .validate(
            &alice,
            Purpose::Sign,
            "alice@praxis.example",
            std::slice::from_ref(&inter),
            now(),
        )
        .unwrap();
    assert_eq!(path.len(), 3, "leaf, intermediate, root");
    // The sign-only certificate signs, but does not encrypt.
    let signonly = smime::parse_certificates(&std::fs::read(f.pki.p("signonly.crt")).unwrap())
        .unwrap()
        .remove(0);
    assert!(f
        .store
        .validate(
            &signonly,
            Purpose::Sign,
            "signonly@praxis.example",
            &[],
            now()
        )
        .is_ok());
}

#[test]
fn rfc9216_certificates_validate_for_their_purpose() {
    let v: PathBuf = std::env::var_os("ENVELOPD_VECTORS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/vectors")
        })
        .join("rfc9216");
    let mut store = CertStore::new();
    store.load_anchors(&v.join("ca.rsa.crt")).unwrap();
    for f in ["alice.encrypt.crt", "alice.sign.crt"] {
        store.load_certs(&v.join(f));
    }
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_893_456_000);
    // Of Alice's two certificates only the encryption one may encrypt.
    let c = store.encryption_cert("alice@smime.example", at).unwrap();
    assert!(c.subject().contains("Alice"));
    let sign = smime::parse_certificates(&std::fs::read(v.join("alice.sign.crt")).unwrap())
        .unwrap()
        .remove(0);
    assert!(store
        .validate(&sign, Purpose::Sign, "alice@smime.example", &[], at)
        .is_ok());
    assert!(matches!(
        store.validate(&sign, Purpose::Encrypt, "alice@smime.example", &[], at),
        Err(Rejection::WrongUsage { .. })
    ));
}
