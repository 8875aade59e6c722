//! Revocation against CRLs made by `openssl ca`: revoked leaves and intermediates, the three
//! modes, stale, forged, foreign and garbage CRLs, and newer CRLs replacing older ones.

use std::path::Path;
use std::time::{Duration, SystemTime};

use certstore::{CertStore, Purpose, Rejection, RevocationMode, Status};

const LEAF: &str = "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=emailProtection\ncrlDistributionPoints=URI:http://127.0.0.1:9/mail-ca.crl\n";

struct Fixture {
    pki: testkit::Pki,
    root: (String, String),
    inter: (String, String),
    store: CertStore,
}

fn cert(path: &str) -> smime::Cert {
    smime::parse_certificates(&std::fs::read(path).unwrap())
        .unwrap()
        .remove(0)
}

fn fixture() -> Fixture {
    let pki = testkit::Pki::new();
    let root = pki.root("Praxis Root CA");
    let inter = pki.issue(
        "Praxis Mail CA",
        "2048",
        "basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\ncrlDistributionPoints=URI:http://127.0.0.1:9/root.crl\n",
        &root,
    );
    let mut store = CertStore::new();
    store.load_anchors(Path::new(&root.1)).unwrap();
    store.add_cert(cert(&inter.1));
    for who in ["good", "revoked"] {
        let (_, crt) = pki.issue(
            who,
            "2048",
            &format!("{LEAF}subjectAltName=email:{who}@praxis.example\n"),
            &inter,
        );
        store.add_cert(cert(&crt));
    }
    Fixture {
        pki,
        root,
        inter,
        store,
    }
}

fn now() -> SystemTime {
    SystemTime::now()
}

#[test]
fn revoked_certificates_are_refused_in_every_mode_but_off() {
    let mut f = fixture();
    let crl = f.pki.crl(
        "mail-ca",
        &f.inter,
        &[(&f.pki.p("revoked.crt"), "keyCompromise")],
        None,
    );
    let root_crl = f.pki.crl("root", &f.root, &[], None);
    // Without CRLs: "prefer" uses both, "require" neither, and says why.
    assert!(f
        .store
        .encryption_cert("revoked@praxis.example", now())
        .is_ok());
    f.store.set_revocation_mode(RevocationMode::Require);
    let e = f
        .store
        .encryption_cert("good@praxis.example", now())
        .unwrap_err();
    assert!(
        matches!(&e, Rejection::RevocationUnknown { why, .. } if why.contains("could be fetched")),
        "{e}"
    );
    assert_eq!(
        f.store.crl_urls(),
        vec![
            "http://127.0.0.1:9/mail-ca.crl".to_string(),
            "http://127.0.0.1:9/root.crl".to_string()
        ]
    );
    let added = f
        .store
        .add_crl(&std::fs::read(&crl).unwrap(), "mail-ca.crl")
        .unwrap();
    assert_eq!(added.revoked_count(), 1);
    assert_eq!(added.issuer(), "CN=Praxis Mail CA");
    // The leaf's CRL alone is not enough under "require": the intermediate's status is unknown.
    let e = f
        .store
        .encryption_cert("good@praxis.example", now())
        .unwrap_err();
    assert!(
        matches!(&e, Rejection::RevocationUnknown { subject, .. } if subject == "CN=Praxis Mail CA"),
        "{e}"
    );
    f.store
        .add_crl(&std::fs::read(&root_crl).unwrap(), "root.crl")
        .unwrap();
    assert!(f
        .store
        .encryption_cert("good@praxis.example", now())
        .is_ok());
    for mode in [RevocationMode::Require, RevocationMode::Prefer] {
        f.store.set_revocation_mode(mode);
        let e = f
            .store
            .encryption_cert("revoked@praxis.example", now())
            .unwrap_err();
        assert!(
            matches!(&e, Rejection::Revoked { subject, reason, .. } if subject == "CN=revoked" && reason.as_deref() == Some("keyCompromise")),
            "{mode:?}: {e}"
        );
        assert!(e.to_string().contains("was revoked on"), "{e}");
        // A revoked signer is reported as such too.
        let r = f.store.validate(
            &cert(&f.pki.p("revoked.crt")),
            Purpose::Sign,
            "revoked@praxis.example",
            &[],
            now(),
        );
        assert!(matches!(r, Err(Rejection::Revoked { .. })), "{r:?}");
    }
    f.store.set_revocation_mode(RevocationMode::Off);
    assert!(f
        .store
        .encryption_cert("revoked@praxis.example", now())
        .is_ok());
    assert_eq!(
        f.store
            .revocation_status(&cert(&f.pki.p("good.crt")), &[], now()),
        Status::Good
    );
}

#[test]
fn a_revoked_intermediate_takes_its_leaves_down() {
    let f = fixture();
    let root_crl = f
        .pki
        .crl("root", &f.root, &[(&f.inter.1, "cACompromise")], None);
    f.store
        .add_crl(&std::fs::read(root_crl).unwrap(), "root.crl")
        .unwrap();
    let e = f
        .store
        .encryption_cert("good@praxis.example", now())
        .unwrap_err();
    assert!(
        matches!(&e, Rejection::Revoked { subject, .. } if subject == "CN=Praxis Mail CA"),
        "{e}"
    );
}

#[test]
fn forged_foreign_garbage_and_stale_crls() {
    let mut f = fixture();
    // Same issuer name, another key: the signature does not verify.
    let imposter = testkit::Pki::new();
    let fake_root = imposter.root("Praxis Mail CA");
    let forged = imposter.crl("fake", &fake_root, &[], None);
    let e = f
        .store
        .add_crl(&std::fs::read(&forged).unwrap(), "forged")
        .unwrap_err();
    assert!(e.contains("does not verify"), "{e}");
    // A CRL of a CA the store does not know.
    let other = imposter.root("Other CA");
    let foreign = imposter.crl("other", &other, &[], None);
    let e = f
        .store
        .add_crl(&std::fs::read(&foreign).unwrap(), "foreign")
        .unwrap_err();
    assert!(e.contains("no CA certificate"), "{e}");
    // Garbage and a truncated CRL.
    let e = f.store.add_crl(b"<html>404</html>", "garbage").unwrap_err();
    assert!(e.contains("not a CRL"), "{e}");
    let good = imposter.crl("other", &other, &[], None);
    let der = std::process::Command::new("openssl")
        .args(["crl", "-in", &good, "-outform", "DER"])
        .output()
        .unwrap()
        .stdout;
    for cut in [1, der.len() / 2, der.len() - 1] {
        assert!(f.store.add_crl(&der[..cut], "truncated").is_err());
    }
    // Stale: nextUpdate in the past. Unknown status ("require" refuses, "prefer" uses it), but
    // what it lists as revoked stays revoked.
    let stale = f.pki.crl(
        "mail-ca",
        &f.inter,
        &[(&f.pki.p("revoked.crt"), "superseded")],
        Some(("20200101000000Z", "20200108000000Z")),
    );
    let root_crl = f.pki.crl("root", &f.root, &[], None);
    f.store
        .add_crl(&std::fs::read(stale).unwrap(), "stale")
        .unwrap();
    f.store
        .add_crl(&std::fs::read(root_crl).unwrap(), "root")
        .unwrap();
    f.store.set_revocation_mode(RevocationMode::Require);
    let e = f
        .store
        .encryption_cert("good@praxis.example", now())
        .unwrap_err();
    assert!(
        e.to_string().contains("out of date since 2020-01-08"),
        "{e}"
    );
    assert!(matches!(
        f.store.encryption_cert("revoked@praxis.example", now()),
        Err(Rejection::Revoked { .. })
    ));
    f.store.set_revocation_mode(RevocationMode::Prefer);
    assert!(f
        .store
        .encryption_cert("good@praxis.example", now())
        .is_ok());
}

#[test]
fn a_newer_crl_replaces_an_older_one_and_not_the_other_way_round() {
    let mut f = fixture();
    f.store.set_revocation_mode(RevocationMode::Prefer);
    let older = f.pki.crl(
        "mail-ca",
        &f.inter,
        &[],
        Some(("20260101000000Z", "20361231000000Z")),
    );
    let older = std::fs::read(older).unwrap();
    let newer = f.pki.crl(
        "mail-ca",
        &f.inter,
        &[(&f.pki.p("revoked.crt"), "keyCompromise")],
        Some(("20260601000000Z", "20361231000000Z")),
    );
    let newer = std::fs::read(newer).unwrap();
    f.store.add_crl(&older, "1").unwrap();
    assert!(f
        .store
        .encryption_cert("revoked@praxis.example", now())
        .is_ok());
    f.store.add_crl(&newer, "2").unwrap();
    assert!(f
        .store
        .encryption_cert("revoked@praxis.example", now())
        .is_err());
    // Replaying the older list (an attacker serving an old CRL) does not un-revoke.
    f.store.add_crl(&older, "1 again").unwrap();
    assert!(f
        .store
        .encryption_cert("revoked@praxis.example", now())
        .is_err());
    let later = now() + Duration::from_secs(3600);
    assert!(f
        .store
        .encryption_cert("good@praxis.example", later)
        .is_ok());
}
