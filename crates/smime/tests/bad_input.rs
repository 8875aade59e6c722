//! Bad input of every kind gives a clear error, never a panic: truncated and garbage CMS, huge
//! length claims, deep BER nesting, broken MIME, wrong keys.

mod common;
use common::*;

use smime::{EncryptOptions, Error, Identity, PrivateKey};

fn bob() -> Identity {
    identity("rfc9216/bob.encrypt.key", "rfc9216/bob.encrypt.crt")
}

fn p7m(der: &[u8]) -> Vec<u8> {
    let mut m = b"Content-Type: application/pkcs7-mime; smime-type=enveloped-data\r\nContent-Transfer-Encoding: base64\r\n\r\n".to_vec();
    m.extend_from_slice(&smime::mime::base64_lines(der));
    m
}

fn envelope() -> Vec<u8> {
    let enc = smime::encrypt(
        b"Subject: s\r\n\r\nbody\r\n",
        &[bob().cert],
        &EncryptOptions::default(),
    )
    .unwrap();
    smime::mime::base64_decode(smime::mime::split(&enc).body).unwrap()
}

#[test]
fn truncated_envelopes_fail_cleanly_at_every_length() {
    let der = envelope();
    let keys = [bob()];
    for n in 0..der.len() {
        let err = smime::decrypt(&p7m(&der[..n]), &keys).unwrap_err();
        assert!(
            matches!(err, Error::Malformed(_) | Error::Mime(_)),
            "length {n}: {err}"
        );
    }
}

#[test]
fn garbage_and_huge_length_claims_fail_cleanly() {
    let keys = [bob()];
    let cases: Vec<Vec<u8>> = vec![
        b"hello, this is not DER".to_vec(),
        vec![0x30, 0x84, 0x7f, 0xff, 0xff, 0xff, 0x06, 0x09],
        vec![
            0x30, 0x80, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x03, 0xa0,
            0x80,
        ],
        vec![0x04, 0x84, 0xff, 0xff, 0xff, 0xff],
        vec![0xff; 64],
    ];
    for c in cases {
        let err = smime::decrypt(&p7m(&c), &keys).unwrap_err();
        assert!(matches!(err, Error::Malformed(_)), "{err}");
    }
}

#[test]
fn deeply_nested_ber_is_refused() {
    let mut ber = Vec::new();
    for _ in 0..100_000 {
        ber.extend_from_slice(&[0x30, 0x80]);
    }
    let err = smime::decrypt(&p7m(&ber), &[bob()]).unwrap_err();
    assert!(err.to_string().contains("nesting too deep"), "{err}");
}

#[test]
fn broken_mime_is_a_clear_error() {
    let keys = [bob()];
    let err = smime::decrypt(b"Content-Type: text/plain\r\n\r\nhello\r\n", &keys).unwrap_err();
    assert!(matches!(err, Error::NotSmime(_)), "{err}");
    let err = smime::decrypt(b"Content-Type: application/pkcs7-mime\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!not base64!!!\r\n", &keys).unwrap_err();
    assert!(matches!(err, Error::Mime(_)), "{err}");
    let err = smime::decrypt(b"Content-Type: application/pkcs7-mime\r\nContent-Transfer-Encoding: x-uuencode\r\n\r\nbegin\r\n", &keys).unwrap_err();
    assert!(err.to_string().contains("x-uuencode"), "{err}");
    let err = smime::verify(
        b"Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\"\r\n\r\n--x\r\n",
    )
    .unwrap_err();
    assert!(err.to_string().contains("boundary"), "{err}");
    let err = smime::verify(
        b"Content-Type: multipart/signed; boundary=b\r\n\r\n--b\r\n\r\nonly one part\r\n--b--\r\n",
    )
    .unwrap_err();
    assert!(err.to_string().contains("2 parts"), "{err}");
    let err = smime::verify(b"Content-Type: multipart/signed; boundary=b\r\n\r\n--b\r\n\r\ntext\r\n--b\r\nContent-Type: application/pkcs7-signature\r\n\r\n").unwrap_err();
    assert!(err.to_string().contains("truncated"), "{err}");
}

#[test]
fn wrong_key_names_the_recipients() {
    let enc = smime::encrypt(
        b"Subject: s\r\n\r\nbody\r\n",
        &[bob().cert],
        &EncryptOptions::default(),
    )
    .unwrap();
    let alice = identity("rfc9216/alice.encrypt.key", "rfc9216/alice.encrypt.crt");
    let err = smime::decrypt(&enc, &[alice]).unwrap_err();
    assert!(matches!(err, Error::NoRecipient(_)), "{err}");
    assert!(
        err.to_string()
            .contains("Sample LAMPS RSA Certification Authority"),
        "{err}"
    );
}

#[test]
fn a_key_that_does_not_match_the_certificate_is_refused() {
    let key = PrivateKey::load(&read("rfc9216/alice.sign.key"), None).unwrap();
    let err = Identity::new(
        key,
        smime::parse_certificates(&read("rfc9216/bob.sign.crt")).unwrap(),
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("none of the given certificates"),
        "{err}"
    );
}

#[test]
fn signer_certificate_missing_is_reported() {
    let alice = identity("rfc9216/alice.sign.key", "rfc9216/alice.sign.crt");
    let content = b"Content-Type: text/plain\r\n\r\nx\r\n";
    let opts_sign = sign_opts();
    let der = smime::signed::sign_detached(content, &alice, &opts_sign).unwrap();
    // Re-encode the SignedData with Bob's certificate instead of Alice's: the SignerInfo then
    // points at a certificate that is not there.
    use der::{Decode, Encode};
    let mut ci = cms::content_info::ContentInfo::from_der(&der).unwrap();
    let mut sd: cms::signed_data::SignedData = ci.content.decode_as().unwrap();
    let bob_cert = smime::parse_certificates(&read("rfc9216/bob.sign.crt"))
        .unwrap()
        .remove(0);
    sd.certificates = Some(
        cms::signed_data::CertificateSet::try_from(vec![
            cms::cert::CertificateChoices::Certificate(bob_cert.parsed().clone()),
        ])
        .unwrap(),
    );
    ci.content = der::Any::encode_from(&sd).unwrap();
    let ci = smime::signed::parse_content_info(&ci.to_der().unwrap()).unwrap();
    let v = smime::signed::verify_cms(&ci, Some(content)).unwrap();
    assert!(
        v.signers[0]
            .problem
            .as_deref()
            .unwrap()
            .contains("not included"),
        "{:?}",
        v.signers[0].problem
    );
}
