//! Revocation data signed over SHA-1, whose chosen-prefix collisions (SHAmbles, 2020) make such
//! a signature forgeable: a CRL or an OCSP answer signed with SHA-1 is believed when it shows a
//! revocation (forging one only denies service) but never counts as "good" (a forged one could
//! hide a revocation), and a newer SHA-1 CRL does not push out the CA's SHA-256 one. CRLs from
//! `openssl ca` and from NSS `crlutil`, OCSP answers from `openssl ocsp`.

use std::path::Path;
use std::time::SystemTime;

use certstore::ocsp::{read_response, request};
use certstore::{CertStore, RevocationMode, Status};
use testkit::MAIL_LEAF as LEAF;

fn cert(data: &[u8]) -> smime::Cert {
    smime::parse_certificates(data).unwrap().remove(0)
}

fn file(path: &str) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

fn is_sha1_unknown(s: &Status) -> bool {
    matches!(s, Status::Unknown(why) if why.contains("SHA-1"))
}

/// The store's view of `good` and `revoked` (leaves of the anchor `ca`) with `crls` loaded.
fn statuses(anchor: &str, leaves: &[&smime::Cert], crls: &[Vec<u8>]) -> Vec<Status> {
    let mut store = CertStore::new();
    store.load_anchors(Path::new(anchor)).unwrap();
    store.set_revocation_mode(RevocationMode::Require);
    for (i, crl) in crls.iter().enumerate() {
        store.add_crl(crl, &format!("crl-{i}")).unwrap();
    }
    leaves
        .iter()
        .map(|c| store.revocation_status(c, &[], SystemTime::now()))
        .collect()
}

/// An OpenSSL root `name` (key, certificate) with the mail certificates `good` and `revoked`
/// (files `good.crt`, `revoked.crt` in the PKI's directory).
fn two_leaves(name: &str) -> (testkit::Pki, (String, String), smime::Cert, smime::Cert) {
    let pki = testkit::Pki::new();
    let ca = pki.root(name);
    for who in ["good", "revoked"] {
        pki.issue(
            who,
            "2048",
            &format!("{LEAF}subjectAltName=email:{who}@praxis.example\n"),
            &ca,
        );
    }
    let good = cert(&file(&pki.p("good.crt")));
    let revoked = cert(&file(&pki.p("revoked.crt")));
    (pki, ca, good, revoked)
}

#[test]
fn openssl_sha1_crls_show_revocations_but_not_good_standing() {
    let (pki, ca, good, revoked) = two_leaves("Praxis CA");
    let listed = [(pki.p("revoked.crt"), "keyCompromise")];
    let listed: Vec<(&str, &str)> = listed.iter().map(|(p, r)| (p.as_str(), *r)).collect();

    // Signed over SHA-1: the revocation counts, the silence about "good" does not.
    let sha1 = file(&pki.crl_md("sha1", &ca, &listed, None, "sha1"));
    let s = statuses(&ca.1, &[&good, &revoked], std::slice::from_ref(&sha1));
    assert!(is_sha1_unknown(&s[0]), "{:?}", s[0]);
    assert!(
        matches!(&s[1], Status::Revoked { reason, .. } if reason.as_deref() == Some("keyCompromise")),
        "{:?}",
        s[1]
    );
    // Under "require" the good certificate is then refused, saying why; the same CRL signed
    // over SHA-256 makes it good.
    let mut store = CertStore::new();
    store.load_anchors(Path::new(&ca.1)).unwrap();
    store.add_cert(good.clone());
    store.set_revocation_mode(RevocationMode::Require);
    assert!(store.add_crl(&sha1, "sha1.crl").unwrap().signed_with_sha1());
    let e = store
        .encryption_cert("good@praxis.example", SystemTime::now())
        .unwrap_err();
    assert!(e.to_string().contains("SHA-1"), "{e}");
    let sha256 = file(&pki.crl_md("sha256", &ca, &listed, None, "sha256"));
    assert!(!store
        .add_crl(&sha256, "sha256.crl")
        .unwrap()
        .signed_with_sha1());
    assert!(store
        .encryption_cert("good@praxis.example", SystemTime::now())
        .is_ok());

    // A newer SHA-1 CRL that leaves the revocation out (what a forgery would do) does not push
    // out the older SHA-256 one that lists it.
    let later = "20361231000000Z";
    let older = file(&pki.crl_md(
        "older",
        &ca,
        &listed,
        Some(("20260101000000Z", later)),
        "sha256",
    ));
    let newer = file(&pki.crl_md("forged", &ca, &[], Some(("20260601000000Z", later)), "sha1"));
    let s = statuses(&ca.1, &[&good, &revoked], &[older, newer]);
    assert_eq!(s[0], Status::Good);
    assert!(matches!(s[1], Status::Revoked { .. }), "{:?}", s[1]);
}

#[test]
fn nss_sha1_crls_show_revocations_but_not_good_standing() {
    let pki = testkit::Pki::new();
    let nss = testkit::NssCa::new(&pki, "NSS Praxis CA");
    for who in ["good", "revoked"] {
        nss.issue(who, "SHA256", &[]);
    }
    let anchor = pki.write("nss-ca.pem", &String::from_utf8(nss.export("ca")).unwrap());
    let good = cert(&nss.export("good"));
    let revoked = cert(&nss.export("revoked"));
    let serial = revoked
        .parsed()
        .tbs_certificate()
        .serial_number()
        .as_bytes()
        .iter()
        .fold(0u64, |n, b| n << 8 | u64::from(*b));
    let (sha1, sha256) = (pki.p("nss-sha1.crl"), pki.p("nss-sha256.crl"));
    nss.crl(&[serial], "SHA1", &sha1);
    nss.crl(&[serial], "SHA256", &sha256);

    let s = statuses(&anchor, &[&good, &revoked], &[file(&sha1)]);
    assert!(is_sha1_unknown(&s[0]), "{:?}", s[0]);
    assert!(matches!(s[1], Status::Revoked { .. }), "{:?}", s[1]);
    let s = statuses(&anchor, &[&good, &revoked], &[file(&sha256)]);
    assert_eq!(s[0], Status::Good);
    assert!(matches!(s[1], Status::Revoked { .. }), "{:?}", s[1]);
}

#[test]
fn sha1_ocsp_answers_show_revocations_but_not_good_standing() {
    let (pki, ca, good, revoked) = two_leaves("OCSP CA");
    let index = pki.ca_index(
        "ocsp",
        &ca,
        &[&pki.p("good.crt")],
        &[(&pki.p("revoked.crt"), "keyCompromise")],
    );
    let issuer = cert(&file(&ca.1));
    // `req`: a request file; the answer by `signer` (key, certificate), signed over `md`.
    let answer_by = |req: &str, signer: &(String, String), md: &str| -> Vec<u8> {
        let resp = format!("{req}.{md}.resp");
        testkit::openssl_ok(&[
            "ocsp", "-index", &index, "-rsigner", &signer.1, "-rkey", &signer.0, "-CA", &ca.1,
            "-reqin", req, "-respout", &resp, "-ndays", "1", "-rmd", md,
        ]);
        file(&resp)
    };
    let answer = |req: &str, md: &str| answer_by(req, &ca, md);
    let ours = |who: &str| -> String {
        let req = pki.p(&format!("{who}.req"));
        let c = cert(&file(&pki.p(&format!("{who}.crt"))));
        std::fs::write(&req, request(&c, &issuer).unwrap()).unwrap();
        req
    };
    let now = SystemTime::now();

    let a = read_response(&answer(&ours("good"), "sha1"), &good, &issuer, now).unwrap();
    assert!(is_sha1_unknown(&a.status), "{:?}", a.status);
    let r = read_response(&answer(&ours("revoked"), "sha1"), &revoked, &issuer, now).unwrap();
    assert!(matches!(r.status, Status::Revoked { .. }), "{:?}", r.status);
    let a256 = read_response(&answer(&ours("good"), "sha256"), &good, &issuer, now).unwrap();
    assert_eq!(a256.status, Status::Good);

    // A held revocation is not replaced by an answer that only says "unknown" (here a SHA-1
    // "good", as a forgery would be); a real answer still replaces an unknown one.
    let revocation = certstore::Revocation::default();
    revocation.add_ocsp(&revoked, &issuer, r.clone());
    let mut forged = r.clone();
    forged.status = a.status.clone();
    revocation.add_ocsp(&revoked, &issuer, forged);
    assert!(matches!(
        revocation.status(&revoked, &issuer, now),
        Status::Revoked { .. }
    ));
    revocation.add_ocsp(&good, &issuer, a.clone());
    assert!(is_sha1_unknown(&revocation.status(&good, &issuer, now)));
    revocation.add_ocsp(&good, &issuer, a256);
    assert_eq!(revocation.status(&good, &issuer, now), Status::Good);

    // A delegated responder (id-kp-OCSPSigning) the CA certified over SHA-256 vouches for
    // "good"; one it certified over SHA-1 could be a collision twin and is not a responder.
    let responder = |name: &str, md: &str| {
        pki.issue_digest(
            name,
            &format!("/CN={name}"),
            "2048",
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=OCSPSigning\n",
            &ca,
            md,
        )
    };
    let by = |signer: &(String, String)| answer_by(&ours("good"), signer, "sha256");
    let sound = responder("Responder", "-sha256");
    let weak = responder("Weak Responder SHA1", "-sha1");
    // Not before the responder certificates were made.
    let now = SystemTime::now();
    assert_eq!(
        read_response(&by(&sound), &good, &issuer, now)
            .unwrap()
            .status,
        Status::Good
    );
    let e = read_response(&by(&weak), &good, &issuer, now).unwrap_err();
    assert!(e.contains("not signed by the issuing CA"), "{e}");

    // A request naming the certificate by SHA-256 hashes (RFC 6960 lets the client choose): the
    // answer is matched in that hash, and still refused for another certificate.
    let req256 = pki.p("good256.req");
    testkit::openssl_ok(&[
        "ocsp",
        "-issuer",
        &ca.1,
        "-sha256",
        "-cert",
        &pki.p("good.crt"),
        "-no_nonce",
        "-reqout",
        &req256,
    ]);
    let resp = answer(&req256, "sha256");
    assert_eq!(
        read_response(&resp, &good, &issuer, now).unwrap().status,
        Status::Good
    );
    let e = read_response(&resp, &revoked, &issuer, now).unwrap_err();
    assert!(e.contains("another certificate"), "{e}");
}
