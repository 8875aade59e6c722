//! A signer identified by its key (SubjectKeyIdentifier) whose message carries two certificates
//! for that key: an older one for another address and its renewal for the From address. The
//! signature verifies with both; the verdict must take the one that validates for the From
//! address, not simply the first in the message. Certificates from an OpenSSL CA and from an
//! NSS CA, signatures by `openssl cms -sign -keyid`.

use std::time::SystemTime;

use certstore::verdict::{judge, Signed, Status};
use certstore::CertStore;
use smime::Cert;
use testkit::{openssl_ok, openssl_pipe, Pki, MAIL_LEAF};

/// A mail certificate's extensions with a subjectKeyIdentifier (signers here are identified by
/// it) and `more`.
fn ext(more: &str) -> String {
    format!("{MAIL_LEAF}subjectKeyIdentifier=hash\n{more}")
}

const BODY: &str = "Content-Type: text/plain\r\n\r\nBefund: unauffaellig.\r\n";

fn cert(pem_or_der: &[u8]) -> Cert {
    smime::parse_certificates(pem_or_der).unwrap().remove(0)
}

/// `BODY` clear-signed by OpenSSL with `key` under `signer` (identified by its key), also
/// carrying `other`, with `from` as the From field.
fn signed(pki: &Pki, key: &str, signer: &str, other: &str, from: &str) -> Vec<u8> {
    let body = pki.write("body.txt", BODY);
    let mut out = format!("From: {from}\r\nTo: bob@praxis.example\r\n").into_bytes();
    out.extend(
        openssl_pipe(
            &[
                "cms",
                "-sign",
                "-keyid",
                "-signer",
                signer,
                "-inkey",
                key,
                "-certfile",
                other,
                "-binary",
                "-crlfeol",
                "-in",
                &body,
            ],
            b"",
        )
        .unwrap(),
    );
    out
}

/// The verdict on `message` with `anchor` trusted, and the signer report's first certificate.
fn verdict(message: &[u8], anchor: Cert) -> (Status, Option<String>, Cert) {
    let mut store = CertStore::new();
    store.add_anchor(anchor);
    let v = smime::verify(message).unwrap();
    let first = v.signers[0].cert.clone().unwrap();
    let verdict = judge(&Signed::of(&v), &v.originators, &store, SystemTime::now());
    (verdict.status, verdict.signer, first)
}

/// Checks both directions for a pair of certificates for one key: the message names the
/// renewal's address (the older certificate comes first in the message) and the older one's.
fn check(pki: &Pki, key: &str, old: &str, new: &str, anchor: Cert) {
    let (old_cert, new_cert) = (
        cert(&std::fs::read(old).unwrap()),
        cert(&std::fs::read(new).unwrap()),
    );
    assert_eq!(old_cert.subject_key_id(), new_cert.subject_key_id());
    // DER's SET OF order puts the older (shorter) certificate first, as in a message where the
    // first match used to be taken.
    let m = signed(pki, key, new, old, "alice@praxis.example");
    let (status, signer, first) = verdict(&m, anchor.clone());
    assert_eq!(
        first, old_cert,
        "the test needs the older certificate first"
    );
    assert_eq!(status, Status::Valid);
    assert_eq!(signer.as_deref(), Some("alice@praxis.example"));
    // Signed under the older certificate and sent from its address: still that one.
    let m = signed(pki, key, old, new, "alice@old.example");
    let (status, signer, _) = verdict(&m, anchor.clone());
    assert_eq!(status, Status::Valid);
    assert_eq!(signer.as_deref(), Some("alice@old.example"));
    // An address neither names is refused, naming the first certificate's address.
    let m = signed(pki, key, new, old, "eve@praxis.example");
    assert_eq!(verdict(&m, anchor).0, Status::FromMismatch);
}

#[test]
fn the_renewal_is_taken_when_the_older_certificate_comes_first_openssl_ca() {
    let pki = Pki::new();
    let ca = pki.root("Praxis CA");
    let (key, old) = pki.issue_as(
        "old",
        "/CN=Alice",
        "2048",
        &ext("subjectAltName=email:alice@old.example\n"),
        &ca,
    );
    let new = pki.issue_for_key(
        "new",
        &key,
        "/CN=Alice",
        &ext("subjectAltName=email:alice@praxis.example\n"),
        &ca,
        "-sha256",
    );
    check(&pki, &key, &old, &new, cert(&std::fs::read(&ca.1).unwrap()));
}

#[test]
fn the_renewal_is_taken_when_the_older_certificate_comes_first_nss_ca() {
    let pki = Pki::new();
    let key = pki.key("alice", "2048");
    let nss = testkit::NssCa::new(&pki, "NSS Praxis CA");
    // NSS writes no subjectKeyIdentifier of its own here: give it the key's (RFC 5280 method 1,
    // as OpenSSL computes it), DER-encoded, as a generic extension.
    let probe_ca = pki.root("Probe CA");
    let probe = pki.issue_for_key("probe", &key, "/CN=probe", &ext(""), &probe_ca, "-sha256");
    let ski = cert(&std::fs::read(probe).unwrap())
        .subject_key_id()
        .unwrap();
    let mut der = vec![0x04, ski.len() as u8];
    der.extend(&ski);
    let ski_file = pki.p("ski.der");
    std::fs::write(&ski_file, der).unwrap();
    let ext = format!("2.5.29.14:not-critical:{ski_file}");
    let mut paths = Vec::new();
    for (name, email) in [
        ("old", "alice@old.example"),
        ("new", "alice@praxis.example"),
    ] {
        let csr = pki.request(name, &key, "/CN=Alice", true);
        let der = nss.certify(&csr, email, &["--extGeneric", &ext]);
        let pem = pki.p(&format!("{name}.pem"));
        let der_path = pki.p(&format!("{name}.der"));
        std::fs::write(&der_path, der).unwrap();
        openssl_ok(&["x509", "-inform", "DER", "-in", &der_path, "-out", &pem]);
        paths.push(pem);
    }
    check(&pki, &key, &paths[0], &paths[1], cert(&nss.export("ca")));
}
