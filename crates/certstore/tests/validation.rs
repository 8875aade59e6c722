//! Validation rules against a real PKI made by OpenSSL: root -> intermediate (pathlen 0) ->
//! leaves with every kind of defect, loaded from files the way a practice keeps them.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use certstore::{CertStore, Purpose, Rejection};

use testkit::MAIL_LEAF as LEAF;

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

/// The certificate `der` with its extensions changed by `edit` (each element one whole
/// Extension), re-signed by OpenSSL with `issuer_key` (SHA-256 with RSA, as issued).
fn resigned(
    pki: &testkit::Pki,
    issuer_key: &str,
    der: &[u8],
    edit: impl Fn(&mut Vec<Vec<u8>>),
) -> smime::Cert {
    use smime::ber::{children, read_tlv, tlv};
    let (_, cert, _) = read_tlv(der).unwrap();
    let parts = children(cert).unwrap();
    let (_, tbs, _) = read_tlv(parts[0]).unwrap();
    let mut fields = children(tbs).unwrap();
    let last = fields.pop().unwrap();
    let (tag, explicit, _) = read_tlv(last).unwrap();
    assert_eq!(tag, 0xa3, "the extensions come last in the TBSCertificate");
    let (_, list, _) = read_tlv(explicit).unwrap();
    let mut exts: Vec<Vec<u8>> = children(list)
        .unwrap()
        .into_iter()
        .map(<[u8]>::to_vec)
        .collect();
    edit(&mut exts);
    let ext_refs: Vec<&[u8]> = exts.iter().map(Vec::as_slice).collect();
    let seq = tlv(0x30, &ext_refs);
    let explicit = tlv(0xa3, &[&seq]);
    fields.push(&explicit);
    let tbs = tlv(0x30, &fields);
    let (tbs_path, sig_path) = (pki.p("edited.tbs"), pki.p("edited.sig"));
    std::fs::write(&tbs_path, &tbs).unwrap();
    testkit::openssl_ok(&[
        "dgst", "-sha256", "-sign", issuer_key, "-out", &sig_path, &tbs_path,
    ]);
    let sig = std::fs::read(&sig_path).unwrap();
    let bits = tlv(0x03, &[&[0], &sig]);
    smime::Cert::from_der(&tlv(0x30, &[&tbs, parts[1], &bits])).unwrap()
}

/// One Extension: `oid` (dotted), critical or not, `value` (the DER the OCTET STRING holds).
fn extension(oid: &str, critical: bool, value: &[u8]) -> Vec<u8> {
    use der::Encode;
    let oid = der::asn1::ObjectIdentifier::new_unwrap(oid)
        .to_der()
        .unwrap();
    let octets = smime::ber::tlv(0x04, &[value]);
    if critical {
        smime::ber::tlv(0x30, &[&oid, &[0x01, 0x01, 0xff], &octets])
    } else {
        smime::ber::tlv(0x30, &[&oid, &octets])
    }
}

/// Puts `new` in place of the extension whose OID ends in 2.5.29.`id` (0x55 0x1d `id`).
fn replace_extension(exts: &mut [Vec<u8>], id: u8, new: Vec<u8>) {
    let at = exts
        .iter()
        .position(|e| e.windows(3).any(|w| w == [0x55, 0x1d, id]))
        .expect("the extension is there");
    exts[at] = new;
}

/// An rfc822Name subjectAltName value.
fn san_email(address: &str) -> Vec<u8> {
    smime::ber::tlv(0x30, &[&smime::ber::tlv(0x81, &[address.as_bytes()])])
}

/// A certificate's extensions must be unambiguous before any of them is believed (RFC 5280
/// §4.2: no extension twice): read leniently, a second keyUsage lifts the first one's limit,
/// and a second or unreadable subjectAltName lets another name speak for the holder. Made by
/// two engines: NSS certutil (a second keyUsage through --extGeneric, as a CA tool can be made
/// to write it) and OpenSSL-issued certificates edited by hand and re-signed by their CA.
#[test]
fn certificates_with_duplicate_or_unreadable_extensions_are_refused() {
    let pki = testkit::Pki::new();
    let untrusted = |r: Rejection, what: &str| {
        assert!(
            matches!(&r, Rejection::Untrusted { why, .. } if why.contains(what)),
            "{what}: {r}"
        );
    };

    // OpenSSL: one leaf, then the same leaf with one thing changed, each signed by the root.
    let root = pki.root("Edit Root");
    let (_, leaf) = pki.issue_as(
        "edited",
        "/CN=edited/emailAddress=eve@praxis.example",
        "2048",
        &leaf_ext("subjectAltName=email:edited@praxis.example"),
        &root,
    );
    let leaf = smime::parse_certificates(&std::fs::read(&leaf).unwrap())
        .unwrap()
        .remove(0);
    let mut store = CertStore::new();
    store.add_anchor(
        smime::parse_certificates(&std::fs::read(&root.1).unwrap())
            .unwrap()
            .remove(0),
    );
    let check =
        |c: &smime::Cert, address: &str| store.validate(c, Purpose::Encrypt, address, &[], now());
    // Re-signed unchanged, it validates: what follows fails for the change alone.
    let same = resigned(&pki, &root.0, leaf.der(), |_| {});
    check(&same, "edited@praxis.example").unwrap();
    // A second keyUsage allowing signing only (critical, as a CA would mark it).
    let second_ku = resigned(&pki, &root.0, leaf.der(), |exts| {
        exts.push(extension("2.5.29.15", true, &[0x03, 0x02, 0x07, 0x80]))
    });
    untrusted(
        check(&second_ku, "edited@praxis.example").unwrap_err(),
        "keyUsage (2.5.29.15) twice",
    );
    // A second subjectAltName naming someone else: neither name is believed.
    let second_san = resigned(&pki, &root.0, leaf.der(), |exts| {
        exts.push(extension(
            "2.5.29.17",
            false,
            &san_email("mallory@praxis.example"),
        ))
    });
    for who in [
        "edited@praxis.example",
        "mallory@praxis.example",
        "eve@praxis.example",
    ] {
        assert!(check(&second_san, who).is_err(), "{who}");
    }
    untrusted(
        check(&second_san, "edited@praxis.example").unwrap_err(),
        "subjectAltName (2.5.29.17) twice",
    );
    // An unreadable subjectAltName (an rfc822Name tagged as a constructed [1] with junk in it):
    // the subject's emailAddress must not take its place.
    let broken_san = resigned(&pki, &root.0, leaf.der(), |exts| {
        replace_extension(
            exts,
            0x11,
            extension("2.5.29.17", false, &[0x30, 0x03, 0xa1, 0x01, 0xff]),
        );
    });
    assert!(check(&broken_san, "eve@praxis.example").is_err());
    untrusted(
        check(&broken_san, "edited@praxis.example").unwrap_err(),
        "subject alternative name extension cannot be read",
    );
    // An unreadable keyUsage (a BIT STRING with an impossible unused-bits count).
    let broken_ku = resigned(&pki, &root.0, leaf.der(), |exts| {
        replace_extension(
            exts,
            0x0f,
            extension("2.5.29.15", true, &[0x03, 0x02, 0x09, 0x80]),
        );
    });
    untrusted(
        check(&broken_ku, "edited@praxis.example").unwrap_err(),
        "key usage extension cannot be read",
    );

    // NSS: a CA and two leaves, the second with a second (signing-only) keyUsage.
    let nss_ca = testkit::NssCa::new(&pki, "NSS Edit CA");
    std::fs::write(pki.p("ku.der"), [0x03, 0x02, 0x07, 0x80]).unwrap();
    let ku_ext = format!("2.5.29.15:critical:{}", pki.p("ku.der"));
    nss_ca.issue("plain", "SHA256", &[]);
    nss_ca.issue("twice", "SHA256", &["--extGeneric", &ku_ext]);
    let export = |n: &str| {
        smime::parse_certificates(&nss_ca.export(n))
            .unwrap()
            .remove(0)
    };
    let mut nss = CertStore::new();
    nss.add_anchor(export("ca"));
    let plain = export("plain");
    let twice = export("twice");
    nss.validate(&plain, Purpose::Encrypt, "plain@praxis.example", &[], now())
        .unwrap();
    untrusted(
        nss.validate(&twice, Purpose::Encrypt, "twice@praxis.example", &[], now())
            .unwrap_err(),
        "keyUsage (2.5.29.15) twice",
    );
    // The same certificates added as recipients: the one with the doubled extension is never
    // chosen to encrypt to.
    nss.add_cert(twice);
    assert!(nss.encryption_cert("twice@praxis.example", now()).is_err());
}

/// An SmtpUTF8Mailbox (RFC 8398) subjectAltName value.
fn san_smtputf8(address: &str) -> Vec<u8> {
    use der::Encode;
    let oid = der::asn1::ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.8.9")
        .to_der()
        .unwrap();
    let value = smime::ber::tlv(0xa0, &[&smime::ber::tlv(0x0c, &[address.as_bytes()])]);
    smime::ber::tlv(0x30, &[&smime::ber::tlv(0xa0, &[&oid, &value])])
}

/// A CA whose name constraints permit one mail domain cannot name a mailbox elsewhere by
/// writing it as an SmtpUTF8Mailbox instead of an rfc822Name (RFC 8398 §6 applies rfc822Name
/// constraints to both; the domain compared in A-labels). OpenSSL issues the ASCII cases from
/// its configuration; the internationalized ones are OpenSSL certificates edited and re-signed
/// by their CA (its configuration cannot carry UTF-8 here).
#[test]
fn smtputf8_mailboxes_obey_the_name_constraints_of_their_ca() {
    let pki = testkit::Pki::new();
    let root = pki.root("Constraining Root");
    let ca = |name: &str, domain: &str| {
        pki.issue(
            name,
            "2048",
            &format!("basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\nnameConstraints=critical,permitted;email:{domain}\n"),
            &root,
        )
    };
    let praxis = ca("Praxis Only CA", "praxis.example");
    let idn = ca("IDN CA", "xn--bung-zra.example");
    let mut store = CertStore::new();
    let anchor = smime::parse_certificates(&std::fs::read(&root.1).unwrap())
        .unwrap()
        .remove(0);
    store.add_anchor(anchor);
    let load = |path: &str| {
        smime::parse_certificates(&std::fs::read(path).unwrap())
            .unwrap()
            .remove(0)
    };
    let chain = [load(&praxis.1), load(&idn.1)];
    let check = |c: &smime::Cert, address: &str| {
        store.validate(c, Purpose::Encrypt, address, &chain, now())
    };
    let leaf = |name: &str, mailbox: &str, issuer: &(String, String)| {
        load(
            &pki.issue(
                name,
                "2048",
                &leaf_ext(&format!(
                    "subjectAltName=otherName:1.3.6.1.5.5.7.8.9;UTF8:{mailbox}"
                )),
                issuer,
            )
            .1,
        )
    };
    // Inside the permitted domain: valid. Outside: refused, as an rfc822Name would be.
    let inside = leaf("inside", "joerg@praxis.example", &praxis);
    check(&inside, "joerg@praxis.example").unwrap();
    let outside = leaf("outside", "doc@other.example", &praxis);
    let e = check(&outside, "doc@other.example").unwrap_err();
    assert!(
        matches!(&e, Rejection::Untrusted { why, .. } if why.contains("outside the name constraints")),
        "{e}"
    );
    // The same with an rfc822Name, for comparison: the rule is one.
    let (_, plain) = pki.issue(
        "outside-rfc822",
        "2048",
        &leaf_ext("subjectAltName=email:doc@other.example"),
        &praxis,
    );
    assert!(check(&load(&plain), "doc@other.example").is_err());
    // Internationalized domains, compared in A-labels: übung.example is the permitted
    // xn--bung-zra.example, über.example is not.
    let base = leaf("idn", "placeholder@xn--bung-zra.example", &idn);
    let with_san = |mailbox: &str| {
        resigned(&pki, &idn.0, base.der(), |exts| {
            replace_extension(
                exts,
                0x11,
                extension("2.5.29.17", false, &san_smtputf8(mailbox)),
            );
        })
    };
    check(&with_san("dr.jörg@übung.example"), "dr.jörg@übung.example").unwrap();
    let e = check(&with_san("dr.jörg@über.example"), "dr.jörg@über.example").unwrap_err();
    assert!(
        matches!(&e, Rejection::Untrusted { why, .. } if why.contains("outside the name constraints")),
        "{e}"
    );
}

/// A certificate its issuer signed with SHA-1 is not believed (chosen-prefix collisions let a
/// signed certificate be swapped for another), whether leaf or intermediate; the same
/// certificates signed with SHA-256 validate. Made by OpenSSL (`x509 -sha1`) and NSS
/// (`certutil -Z SHA1`).
#[test]
fn certificates_signed_with_sha1_are_refused() {
    let pki = testkit::Pki::new();
    let root = pki.root("Old Root");
    let issue = |name: &str, ext: &str, issuer: &(String, String), md: &str| {
        let (key, crt) = pki.issue_digest(name, &format!("/CN={name}"), "2048", ext, issuer, md);
        let cert = smime::parse_certificates(&std::fs::read(&crt).unwrap())
            .unwrap()
            .remove(0);
        (key, crt, cert)
    };
    let ca_ext = "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n";
    let mut store = CertStore::new();
    store.add_anchor(
        smime::parse_certificates(&std::fs::read(&root.1).unwrap())
            .unwrap()
            .remove(0),
    );
    let refused = |r: Result<Vec<smime::Cert>, Rejection>, who: &str| {
        let e = r.unwrap_err();
        assert!(
            matches!(&e, Rejection::Untrusted { subject, why } if why.contains("SHA-1") && subject.contains(who)),
            "{who}: {e}"
        );
    };
    let leaf = |n: &str| leaf_ext(&format!("subjectAltName=email:{n}@praxis.example"));
    // Leaf signed with SHA-1 by the root; the same signed with SHA-256 for comparison.
    let (_, _, old) = issue("old", &leaf("old"), &root, "-sha1");
    refused(
        store.validate(&old, Purpose::Encrypt, "old@praxis.example", &[], now()),
        "old",
    );
    let (_, _, new) = issue("new", &leaf("new"), &root, "-sha256");
    store
        .validate(&new, Purpose::Encrypt, "new@praxis.example", &[], now())
        .unwrap();
    // An intermediate signed with SHA-1 above a leaf signed with SHA-256.
    let (k, c, mid) = issue("Old Mail CA", ca_ext, &root, "-sha1");
    let (_, _, below) = issue("below", &leaf("below"), &(k, c), "-sha256");
    refused(
        store.validate(&below, Purpose::Sign, "below@praxis.example", &[mid], now()),
        "Old Mail CA",
    );

    // NSS: a CA and a leaf it signs with SHA-1 (-Z SHA1), and one with SHA-256.
    let nss_ca = testkit::NssCa::new(&pki, "NSS Old CA");
    nss_ca.issue("nssold", "SHA1", &[]);
    nss_ca.issue("nssnew", "SHA256", &[]);
    let export = |n: &str| {
        smime::parse_certificates(&nss_ca.export(n))
            .unwrap()
            .remove(0)
    };
    let mut nss = CertStore::new();
    nss.add_anchor(export("ca"));
    let old = export("nssold");
    assert!(old.signed_with_sha1());
    refused(
        nss.validate(&old, Purpose::Encrypt, "nssold@praxis.example", &[], now()),
        "nssold",
    );
    nss.validate(
        &export("nssnew"),
        Purpose::Encrypt,
        "nssnew@praxis.example",
        &[],
        now(),
    )
    .unwrap();
}
