//! OCSP requests and answers against `openssl ocsp` (offline: request file in, response file
//! out): good, revoked, another certificate's answer, a foreign signer, stale and broken answers.

use std::time::{Duration, SystemTime};

use certstore::ocsp::{read_response, request};
use certstore::Status;

use testkit::MAIL_LEAF as LEAF;

fn cert(path: &str) -> smime::Cert {
    smime::parse_certificates(&std::fs::read(path).unwrap())
        .unwrap()
        .remove(0)
}

#[test]
fn openssl_answers_are_read_and_checked() {
    let pki = testkit::Pki::new();
    let root = pki.root("Root");
    let inter = pki.issue(
        "Mail CA",
        "2048",
        "basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\n",
        &root,
    );
    for who in ["good", "revoked"] {
        pki.issue(
            who,
            "2048",
            &format!("{LEAF}subjectAltName=email:{who}@x.example\n"),
            &inter,
        );
    }
    let index = pki.ca_index(
        "mail",
        &inter,
        &[&pki.p("good.crt")],
        &[(&pki.p("revoked.crt"), "keyCompromise")],
    );
    let stranger = pki.root("Stranger");
    let issuer = cert(&inter.1);
    let answer = |who: &str, signer: &(String, String)| -> Vec<u8> {
        let req = pki.p(&format!("{who}.req"));
        let resp = pki.p(&format!("{who}-{}.resp", signer.1.len()));
        std::fs::write(
            &req,
            request(&cert(&pki.p(&format!("{who}.crt"))), &issuer).unwrap(),
        )
        .unwrap();
        testkit::openssl_ok(&[
            "ocsp", "-index", &index, "-rsigner", &signer.1, "-rkey", &signer.0, "-CA", &inter.1,
            "-reqin", &req, "-respout", &resp, "-ndays", "1",
        ]);
        std::fs::read(resp).unwrap()
    };
    let now = SystemTime::now();
    let good = cert(&pki.p("good.crt"));
    let revoked = cert(&pki.p("revoked.crt"));
    let a = read_response(&answer("good", &inter), &good, &issuer, now).unwrap();
    assert_eq!(a.status, Status::Good);
    let r = read_response(&answer("revoked", &inter), &revoked, &issuer, now).unwrap();
    assert!(
        matches!(&r.status, Status::Revoked { reason, .. } if reason.as_deref() == Some("keyCompromise")),
        "{:?}",
        r.status
    );
    // An answer about another certificate, a foreign signer, too late, garbage, truncated.
    let e = read_response(&answer("good", &inter), &revoked, &issuer, now).unwrap_err();
    assert!(e.contains("another certificate"), "{e}");
    let e = read_response(&answer("good", &stranger), &good, &issuer, now).unwrap_err();
    assert!(e.contains("not signed by the issuing CA"), "{e}");
    let later = now + Duration::from_secs(3 * 86400);
    let e = read_response(&answer("good", &inter), &good, &issuer, later).unwrap_err();
    assert!(e.contains("out of date"), "{e}");
    assert!(read_response(b"<html>", &good, &issuer, now).is_err());
    let full = answer("good", &inter);
    for cut in [0, 1, full.len() / 2, full.len() - 1] {
        assert!(read_response(&full[..cut], &good, &issuer, now).is_err());
    }
}
