//! The signer's certificate of a received signature, when one key is certified twice or the
//! message carries a look-alike certificate: signatures made by envelopd and by OpenSSL
//! (`cms -sign -cades`, and plain `cms -sign`), certificates made with OpenSSL, the swaps done
//! on the DER as a man in the middle would.

use std::time::SystemTime;

use cms::cert::CertificateChoices;
use cms::content_info::ContentInfo;
use cms::signed_data::{SignedData, SignerIdentifier};
use der::{Any, Decode, Encode};
use smime::signed::{parse_content_info, sign_detached, verify_cms};
use smime::{Cert, Identity, PrivateKey, SignOptions};
use testkit::{openssl_ok, Pki};

use testkit::MAIL_LEAF as LEAF;

struct Lab {
    pki: Pki,
    ca: (String, String),
    key: String,
    /// alice@praxis.example's certificate for `key`.
    alice: String,
    /// mallory@praxis.example's certificate for the same key, from the same CA.
    mallory: String,
}

fn lab() -> Lab {
    let pki = Pki::new();
    let ca = pki.root("Praxis CA");
    let (key, alice) = pki.issue_as(
        "alice",
        "/CN=Alice",
        "2048",
        &format!("{LEAF}subjectAltName=email:alice@praxis.example\n"),
        &ca,
    );
    let mallory = pki.issue_for_key(
        "mallory",
        &key,
        "/CN=Mallory",
        &format!("{LEAF}subjectAltName=email:mallory@praxis.example\n"),
        &ca,
        "-sha256",
    );
    Lab {
        pki,
        ca,
        key,
        alice,
        mallory,
    }
}

fn cert(path: &str) -> Cert {
    smime::parse_certificates(&std::fs::read(path).unwrap())
        .unwrap()
        .remove(0)
}

const CONTENT: &[u8] = b"Content-Type: text/plain\r\n\r\nBefund: unauffaellig.\r\n";

/// A detached signature over CONTENT by envelopd with `key` under `crt`.
fn envelopd_signs(key: &str, crt: &str) -> Vec<u8> {
    let id = Identity::new(
        PrivateKey::load(&std::fs::read(key).unwrap(), None).unwrap(),
        vec![cert(crt)],
    )
    .unwrap();
    let opts = SignOptions {
        digest: None,
        rsa_padding: smime::RsaPadding::Pkcs1v15,
        signing_time: SystemTime::now(),
        encryption_cert: None,
    };
    sign_detached(CONTENT, &id, &opts).unwrap()
}

/// The same made by `openssl cms -sign` (DER), with `-cades` when `cades`.
fn openssl_signs(l: &Lab, crt: &str, cades: bool) -> Vec<u8> {
    let content = l
        .pki
        .write("content.txt", std::str::from_utf8(CONTENT).unwrap());
    let out = l.pki.p("openssl.p7s");
    let mut args = vec![
        "cms", "-sign", "-binary", "-in", &content, "-signer", crt, "-inkey", &l.key, "-md",
        "sha256", "-outform", "DER", "-out", &out,
    ];
    if cades {
        args.push("-cades");
    }
    openssl_ok(&args);
    std::fs::read(out).unwrap()
}

/// The signature with its certificate set replaced by `certs` and its signer identifier by
/// `sid`'s issuer and serial; the signed attributes and the signature value untouched.
fn swapped(p7s: &[u8], certs: &[&Cert], sid: &Cert) -> Vec<u8> {
    let ci = ContentInfo::from_der(p7s).unwrap();
    let mut sd: SignedData = ci.content.decode_as().unwrap();
    let choices: Vec<CertificateChoices> = certs
        .iter()
        .map(|c| {
            CertificateChoices::Certificate(x509_cert::Certificate::from_der(c.der()).unwrap())
        })
        .collect();
    sd.certificates = Some(cms::signed_data::CertificateSet(
        der::asn1::SetOfVec::try_from(choices).unwrap(),
    ));
    let mut infos: Vec<_> = sd.signer_infos.0.iter().cloned().collect();
    infos[0].sid = SignerIdentifier::IssuerAndSerialNumber(sid.issuer_and_serial());
    sd.signer_infos = cms::signed_data::SignerInfos::try_from(infos).unwrap();
    ContentInfo {
        content_type: ci.content_type,
        content: Any::encode_from(&sd).unwrap(),
    }
    .to_der()
    .unwrap()
}

/// envelopd's verdict on a signature: the signer certificate's subject, or the problem.
fn verdict(p7s: &[u8]) -> Result<String, String> {
    let ci = parse_content_info(p7s).map_err(|e| e.to_string())?;
    let v = verify_cms(&ci, Some(CONTENT)).map_err(|e| e.to_string())?;
    let s = &v.signers[0];
    match &s.problem {
        None => Ok(s.subject.clone()),
        Some(p) => Err(p.clone()),
    }
}

/// `openssl cms -verify` (with `-cades` when `cades`) against the lab's CA: Ok or its error.
fn openssl_verifies(l: &Lab, p7s: &[u8], cades: bool) -> Result<(), String> {
    let sig = l.pki.write("check.p7s", "");
    std::fs::write(&sig, p7s).unwrap();
    let content = l
        .pki
        .write("content.txt", std::str::from_utf8(CONTENT).unwrap());
    let mut args = vec![
        "cms",
        "-verify",
        "-binary",
        "-inform",
        "DER",
        "-in",
        &sig,
        "-content",
        &content,
        "-CAfile",
        &l.ca.1,
        "-purpose",
        "any",
        "-out",
        "/dev/null",
    ];
    if cades {
        args.push("-cades");
    }
    let o = std::process::Command::new("openssl")
        .args(&args)
        .output()
        .unwrap();
    if o.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&o.stderr).into())
    }
}

#[test]
fn envelopd_binds_its_signatures_to_the_signing_certificate() {
    let l = lab();
    let (alice, mallory) = (cert(&l.alice), cert(&l.mallory));
    let p7s = envelopd_signs(&l.key, &l.alice);
    assert_eq!(verdict(&p7s).unwrap(), alice.subject());
    // OpenSSL reads the attribute envelopd wrote and finds it naming Alice's certificate.
    openssl_verifies(&l, &p7s, true).unwrap();

    // A man in the middle swaps in Mallory's certificate for the same key.
    let forged = swapped(&p7s, &[&mallory], &mallory);
    let e = verdict(&forged).unwrap_err();
    assert!(e.contains("swapped"), "{e}");
    // OpenSSL, asked to check the attribute, refuses the swap as well.
    assert!(openssl_verifies(&l, &forged, true).is_err());
}

#[test]
fn a_swapped_certificate_is_refused_in_openssl_cades_signatures() {
    let l = lab();
    let (alice, mallory) = (cert(&l.alice), cert(&l.mallory));
    let p7s = openssl_signs(&l, &l.alice, true);
    assert_eq!(verdict(&p7s).unwrap(), alice.subject());
    let forged = swapped(&p7s, &[&mallory], &mallory);
    let e = verdict(&forged).unwrap_err();
    assert!(e.contains("swapped"), "{e}");
    // Both certificates carried, the identifier pointing at Mallory's: still refused.
    let both = swapped(&p7s, &[&alice, &mallory], &mallory);
    assert!(verdict(&both).unwrap_err().contains("swapped"));
    // The unswapped signature with both certificates carried names Alice.
    let honest = swapped(&p7s, &[&mallory, &alice], &alice);
    assert_eq!(verdict(&honest).unwrap(), alice.subject());
}

#[test]
fn a_swapped_certificate_from_an_nss_ca_is_refused() {
    let l = lab();
    // NSS certifies the same key twice, from two requests OpenSSL made with it.
    let nss = testkit::NssCa::new(&l.pki, "NSS Praxis CA");
    let mut certs = Vec::new();
    for who in ["alice", "mallory"] {
        let csr = l.pki.request(
            &format!("nss-{who}"),
            &l.key,
            &format!("/CN={who} (NSS)"),
            true,
        );
        let der = nss.certify(&csr, &format!("{who}@praxis.example"), &[]);
        let path = l.pki.p(&format!("nss-{who}.der"));
        std::fs::write(&path, &der).unwrap();
        certs.push((Cert::from_der(&der).unwrap(), path));
    }
    let (mallory, _) = certs.pop().unwrap();
    let (alice, alice_path) = certs.pop().unwrap();
    let pem = l.pki.p("nss-alice.pem");
    openssl_ok(&["x509", "-inform", "DER", "-in", &alice_path, "-out", &pem]);
    for p7s in [envelopd_signs(&l.key, &pem), openssl_signs(&l, &pem, true)] {
        assert_eq!(verdict(&p7s).unwrap(), alice.subject());
        let e = verdict(&swapped(&p7s, &[&mallory], &mallory)).unwrap_err();
        assert!(e.contains("swapped"), "{e}");
    }
}

#[test]
fn a_look_alike_certificate_before_the_real_one_does_not_break_the_signature() {
    let l = lab();
    let alice = cert(&l.alice);
    // Anyone can make a certificate with the CA's name and Alice's serial number (it will not
    // validate); carried first, it matched the signer identifier first.
    let fake_ca_key = l.pki.key("fake-ca", "ec");
    let fake_ca = l.pki.p("fake-ca.crt");
    openssl_ok(&[
        "req",
        "-x509",
        "-new",
        "-key",
        &fake_ca_key,
        "-subj",
        "/CN=Praxis CA",
        "-days",
        "30",
        "-out",
        &fake_ca,
    ]);
    let look_key = l.pki.key("look", "ec");
    let csr = l.pki.request("look", &look_key, "/CN=Alice", false);
    let look = l.pki.p("look.crt");
    let serial = format!(
        "0x{}",
        hex(alice.issuer_and_serial().serial_number.as_bytes())
    );
    openssl_ok(&[
        "x509",
        "-req",
        "-in",
        &csr,
        "-CA",
        &fake_ca,
        "-CAkey",
        &fake_ca_key,
        "-set_serial",
        &serial,
        "-days",
        "30",
        "-out",
        &look,
    ]);
    let look = cert(&look);
    assert_eq!(look.issuer_and_serial(), alice.issuer_and_serial());
    // The look-alike is an EC certificate, shorter, so DER's SET OF order puts it first.
    assert!(look.der() < alice.der());

    for p7s in [
        envelopd_signs(&l.key, &l.alice),
        openssl_signs(&l, &l.alice, false),
    ] {
        let with_look = swapped(&p7s, &[&look, &alice], &alice);
        assert_eq!(verdict(&with_look).unwrap(), alice.subject());
        // Only the look-alike: the signature does not verify with it, and says so.
        let only_look = swapped(&p7s, &[&look], &alice);
        assert!(verdict(&only_look).is_err());
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
