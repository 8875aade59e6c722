//! The one signature verdict (`certstore::verdict`) on messages built by two engines (OpenSSL's
//! `cms -sign` and envelopd's own signer) with the RFC 9216 keys: the identity-spoofing classes
//! of "Johnny, You Are Fired" (USENIX Security 2019), a detached signature that also embeds
//! content, SHA-1 and future-dated signatures, trust failures, and tampering. None may be
//! `valid`; the genuine message from the same signer stays valid.

use std::time::{Duration, SystemTime};

use certstore::verdict::{judge, Signed, Status, Verdict};
use certstore::CertStore;
use proptest::prelude::*;

fn read(n: &str) -> Vec<u8> {
    std::fs::read(testkit::rfc9216(n)).unwrap()
}

fn path(n: &str) -> String {
    testkit::rfc9216(n).to_str().unwrap().to_string()
}

/// Signing options as a mail program's: the default digest, PKCS #1 v1.5, signed at `at`.
fn sign_options(at: SystemTime) -> smime::SignOptions {
    smime::SignOptions {
        digest: None,
        rsa_padding: smime::RsaPadding::Pkcs1v15,
        signing_time: at,
        encryption_cert: None,
    }
}

/// The RFC 9216 CA's key and certificate, copied into `pki` (`openssl x509 -CA` writes its
/// serial file next to the certificate, which must not be in the shared vectors).
fn rfc9216_ca_in(pki: &testkit::Pki) -> (String, String) {
    (
        pki.write("ca.key", &String::from_utf8(read("ca.rsa.key")).unwrap()),
        pki.write("ca.crt", &String::from_utf8(read("ca.rsa.crt")).unwrap()),
    )
}

fn store() -> CertStore {
    let mut s = CertStore::new();
    for c in smime::parse_certificates(&read("ca.rsa.crt")).unwrap() {
        s.add_anchor(c);
    }
    s
}

fn alice() -> smime::Identity {
    smime::Identity::new(
        smime::PrivateKey::load(&read("alice.sign.key"), None).unwrap(),
        smime::parse_certificates(&read("alice.sign.crt")).unwrap(),
    )
    .unwrap()
}

const BODY: &str = "Content-Type: text/plain\r\n\r\nPlease transfer 10,000 EUR today.\r\n";

/// Signs `BODY` with OpenSSL (clear-signed, CRLF) and puts `header` in front.
fn openssl_signed(header: &str, extra: &[&str]) -> Vec<u8> {
    let mut args = vec!["-binary", "-crlfeol"];
    args.extend_from_slice(extra);
    let signed = testkit::openssl_sign_as("alice", &args, BODY.as_bytes());
    let mut out = header.as_bytes().to_vec();
    out.extend_from_slice(&signed);
    out
}

/// Signs with envelopd's own signer; `header` holds the routing fields.
fn own_signed(header: &str, at: SystemTime) -> Vec<u8> {
    let opts = sign_options(at);
    let msg = format!("{header}{BODY}");
    smime::sign(msg.as_bytes(), &alice(), &opts).unwrap()
}

fn verdict_at(message: &[u8], store: &CertStore, at: SystemTime) -> Verdict {
    let v = smime::verify(message).unwrap();
    judge(&Signed::of(&v), &v.originators, store, at)
}

fn verdict(message: &[u8]) -> Verdict {
    verdict_at(message, &store(), SystemTime::now())
}

#[test]
fn the_genuine_message_is_valid_from_both_engines() {
    let h = "From: Alice <alice@smime.example>\r\nTo: bob@smime.example\r\n";
    for m in [openssl_signed(h, &[]), own_signed(h, SystemTime::now())] {
        let v = verdict(&m);
        assert_eq!(v.status, Status::Valid, "{v:?}");
        assert_eq!(v.signer.as_deref(), Some("alice@smime.example"));
        assert_eq!(
            v.header_part(),
            "signature=valid; signer=alice@smime.example"
        );
    }
    // Headers that name the signer and nobody else, however they are written.
    for (why, header) in [
        (
            "the one address rule: the From address in another case is the same mailbox",
            "From: ALICE@Smime.Example\r\n",
        ),
        (
            "a Sender naming the From mailbox itself is no mismatch",
            "From: alice@smime.example\r\nSender: Alice@smime.example\r\n",
        ),
        (
            "the same mailbox repeated in a second From field (OpenSSL repeats routing fields \
             inside the signed part) is one sender",
            "From: Alice <alice@smime.example>\r\nFrom: alice@SMIME.example\r\n",
        ),
        (
            "a right-to-left mark in a Hebrew name hides nothing",
            "From: =?utf-8?b?QWxpY2Ug4oCP16nXnNeV150=?= <alice@smime.example>\r\n",
        ),
        (
            "an address in the display name that is From's own is harmless",
            "From: \"alice@smime.example\" <alice@smime.example>\r\n",
        ),
        (
            "an at sign in a name that is no address (no domain after it) is a name",
            "From: \"Alice @ Praxis Nord\" <alice@smime.example>\r\n",
        ),
        (
            "a group in From (RFC 6854) with the signer as its one member and a plain name is \
             one sender",
            "From: Praxis: Alice <alice@smime.example>;\r\n",
        ),
    ] {
        let v = verdict(&openssl_signed(header, &[]));
        assert_eq!(v.status, Status::Valid, "{why}: {v:?}");
    }
}

#[test]
fn stronger_digests_and_pss_stay_valid() {
    let h = "From: alice@smime.example\r\n";
    for extra in [
        &["-md", "sha384"][..],
        &["-md", "sha512"][..],
        &["-keyopt", "rsa_padding_mode:pss"][..],
    ] {
        let v = verdict(&openssl_signed(h, extra));
        assert_eq!(v.status, Status::Valid, "{extra:?}: {v:?}");
    }
}

/// The ID classes of the paper: each shows a valid signature of Eve's (here: Alice's key, the
/// attacker) next to a header that makes the reader think someone else wrote it.
#[test]
fn identity_spoofs_are_never_valid() {
    let cases: &[(&str, &str, Status, &str)] = &[
        (
            "display name with another address",
            "From: boss@smime.example <alice@smime.example>\r\n",
            Status::FromMismatch,
            "display name shows another address",
        ),
        (
            "display name with another address, RFC 2047 encoded",
            "From: =?utf-8?b?Ym9zc0BzbWltZS5leGFtcGxl?= <alice@smime.example>\r\n",
            Status::FromMismatch,
            "display name shows another address",
        ),
        (
            "display name with a full-width at sign",
            "From: \"boss\u{ff20}smime.example\" <alice@smime.example>\r\n",
            Status::FromMismatch,
            "display name shows another address",
        ),
        (
            // Mailsploit (2017): some clients stop drawing the name at the NUL byte.
            "another address before a NUL in an encoded display name",
            "From: =?utf-8?b?Ym9zc0BzbWltZS5leGFtcGxlAA==?= <alice@smime.example>\r\n",
            Status::FromMismatch,
            "display name shows another address (boss@smime.example)",
        ),
        (
            "another address before a zero-width space",
            "From: =?utf-8?b?Ym9zc0BzbWltZS5leGFtcGxl4oCL?= <alice@smime.example>\r\n",
            Status::FromMismatch,
            "display name shows another address (boss@smime.example)",
        ),
        (
            // U+202E makes "elpmaxe.emims@ssob" appear as "boss@smime.example".
            "another address written backwards after a right-to-left override",
            "From: =?utf-8?b?4oCuZWxwbWF4ZS5lbWltc0Bzc29i?= <alice@smime.example>\r\n",
            Status::FromMismatch,
            "display name shows another address (boss@smime.example)",
        ),
        (
            // U+2024 ONE DOT LEADER, drawn as a full stop.
            "another address with a look-alike dot",
            "From: =?utf-8?b?Ym9zc0BzbWltZeKApGV4YW1wbGU=?= <alice@smime.example>\r\n",
            Status::FromMismatch,
            "display name shows another address (boss@smime.example)",
        ),
        (
            "another address with spaces around its at sign",
            "From: \"boss @ smime.example\" <alice@smime.example>\r\n",
            Status::FromMismatch,
            "display name shows another address (boss@smime.example)",
        ),
        (
            "another address with a second at sign after it",
            "From: boss@smime.example@ <alice@smime.example>\r\n",
            Status::FromMismatch,
            "display name shows another address (boss@smime.example)",
        ),
        (
            "two mailboxes in From",
            "From: alice@smime.example, boss@smime.example\r\n",
            Status::FromMismatch,
            "2 mailboxes",
        ),
        (
            "a group in From",
            "From: staff: boss@smime.example, alice@smime.example;\r\n",
            Status::FromMismatch,
            "2 mailboxes",
        ),
        (
            // RFC 6854 allows a group in From; its name is drawn where a display name would be.
            "a group in From whose name is another address",
            "From: boss@smime.example: alice@smime.example;\r\n",
            Status::FromMismatch,
            "display name shows another address (boss@smime.example)",
        ),
        (
            "a group in Sender whose name is another address",
            "From: alice@smime.example\r\nSender: boss@smime.example: alice@smime.example;\r\n",
            Status::SenderMismatch,
            "Sender field names boss@smime.example",
        ),
        (
            "two From fields, the signer's second",
            "From: boss@smime.example\r\nFrom: alice@smime.example\r\n",
            Status::FromMismatch,
            "2 From fields",
        ),
        (
            "two From fields, the signer's first",
            "From: alice@smime.example\r\nFrom: boss@smime.example\r\n",
            Status::FromMismatch,
            "2 From fields",
        ),
        (
            "a From field with no mailbox besides the signer's",
            "From: alice@smime.example\r\nFrom: undisclosed:;\r\n",
            Status::FromMismatch,
            "names 0 mailboxes",
        ),
        (
            "no From at all",
            "To: bob@smime.example\r\n",
            Status::FromMismatch,
            "no From field",
        ),
        (
            "From someone else",
            "From: boss@smime.example\r\n",
            Status::FromMismatch,
            "not for boss@smime.example",
        ),
        (
            "Sender naming someone else",
            "From: alice@smime.example\r\nSender: boss@smime.example\r\n",
            Status::SenderMismatch,
            "Sender field names boss@smime.example",
        ),
        (
            "Sender with the signer's address but another in its display name",
            "From: alice@smime.example\r\nSender: boss@smime.example <alice@smime.example>\r\n",
            Status::SenderMismatch,
            "Sender field names boss@smime.example",
        ),
    ];
    for (what, header, status, reason) in cases {
        for (engine, m) in [
            ("openssl", openssl_signed(header, &[])),
            ("envelopd", own_signed(header, SystemTime::now())),
        ] {
            let v = verdict(&m);
            assert_eq!(v.status, *status, "{what} ({engine}): {v:?}");
            assert!(
                v.reason.as_deref().unwrap_or("").contains(reason),
                "{what} ({engine}): {v:?}"
            );
            assert!(!v.is_valid());
            assert!(!v.header_part().contains("signature=valid"), "{what}");
        }
    }
    let v = verdict(&openssl_signed(
        "From: alice@smime.example\r\nSender: boss@smime.example\r\n",
        &[],
    ));
    assert_eq!(
        v.header_part(),
        "signature=sender-mismatch; reason=\"the Sender field names boss@smime.example, who did not sign; the signer is alice@smime.example\"; signer=alice@smime.example; sender=boss@smime.example"
    );
}

/// CMS "eContent confusion": a multipart/signed whose signature embeds the signed text while
/// the visible part says something else. OpenSSL refuses it; so must envelopd.
#[test]
fn a_detached_signature_that_embeds_content_is_invalid() {
    let embedded = b"Content-Type: text/plain\r\n\r\nHarmless.\r\n";
    let der = testkit::openssl_pipe(
        &[
            "cms",
            "-sign",
            "-signer",
            &path("alice.sign.crt"),
            "-inkey",
            &path("alice.sign.key"),
            "-binary",
            "-nodetach",
            "-outform",
            "DER",
        ],
        embedded,
    )
    .unwrap();
    for visible in [BODY.as_bytes(), &embedded[..]] {
        let mut m = b"From: alice@smime.example\r\nMIME-Version: 1.0\r\nContent-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; micalg=sha-256; boundary=\"b\"\r\n\r\n--b\r\n".to_vec();
        m.extend_from_slice(visible);
        m.extend_from_slice(b"\r\n--b\r\nContent-Type: application/pkcs7-signature; name=smime.p7s\r\nContent-Transfer-Encoding: base64\r\n\r\n");
        m.extend_from_slice(&smime::mime::base64_lines(&der));
        m.extend_from_slice(b"\r\n--b--\r\n");
        let v = smime::verify(&m).unwrap();
        // What is shown is the visible part, never the embedded one.
        assert!(
            v.message.ends_with(visible),
            "{}",
            String::from_utf8_lossy(&v.message)
        );
        let verdict = judge(&Signed::of(&v), &v.originators, &store(), SystemTime::now());
        assert_eq!(verdict.status, Status::Invalid, "{verdict:?}");
        assert!(verdict.reason.unwrap().contains("embeds content"));
    }
    // OpenSSL agrees that the visible part was not what was signed.
    let mut m = b"MIME-Version: 1.0\r\nContent-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; micalg=sha-256; boundary=\"b\"\r\n\r\n--b\r\n".to_vec();
    m.extend_from_slice(BODY.as_bytes());
    m.extend_from_slice(b"\r\n--b\r\nContent-Type: application/pkcs7-signature\r\nContent-Transfer-Encoding: base64\r\n\r\n");
    m.extend_from_slice(&smime::mime::base64_lines(&der));
    m.extend_from_slice(b"\r\n--b--\r\n");
    assert!(testkit::openssl_pipe(
        &[
            "cms",
            "-verify",
            "-CAfile",
            &path("ca.rsa.crt"),
            "-purpose",
            "any"
        ],
        &m
    )
    .is_err());
}

/// A signature Alice made for another kind of CMS content (a timestamp token's TSTInfo, an
/// ESS receipt, another protocol's object; its contentType attribute says so and matches) is no
/// signature of a mail message, even where its bytes read as one: `invalid`, clear-signed and
/// opaque. The same text signed as id-data stays valid. OpenSSL makes both.
#[test]
fn a_signature_for_another_content_type_is_not_a_mail_signature() {
    let header = "From: alice@smime.example\r\n";
    for content_type in ["1.2.840.113549.1.9.16.1.4", "1.2.840.113549.1.9.16.1.1"] {
        for extra in [&[][..], &["-nodetach"][..]] {
            let mut args = vec!["-econtent_type", content_type];
            args.extend_from_slice(extra);
            let v = verdict(&openssl_signed(header, &args));
            assert_eq!(v.status, Status::Invalid, "{content_type} {extra:?}: {v:?}");
            assert!(
                v.reason.as_deref().unwrap_or("").contains(&format!(
                    "content of type {content_type}, not for a mail message"
                )),
                "{v:?}"
            );
        }
    }
    for extra in [&[][..], &["-nodetach"][..]] {
        assert_eq!(
            verdict(&openssl_signed(header, extra)).status,
            Status::Valid
        );
    }
}

#[test]
fn sha1_is_weak_and_a_future_signature_is_invalid() {
    let v = verdict(&openssl_signed(
        "From: alice@smime.example\r\n",
        &["-md", "sha1"],
    ));
    assert_eq!(v.status, Status::Weak, "{v:?}");
    assert!(v.reason.unwrap().contains("SHA-1"));

    let now = SystemTime::now();
    let m = own_signed(
        "From: alice@smime.example\r\n",
        now + Duration::from_secs(2 * 86400),
    );
    let v = verdict_at(&m, &store(), now);
    assert_eq!(v.status, Status::Invalid, "{v:?}");
    assert!(v.reason.unwrap().contains("signed in the future"));
    // Within the allowed clock skew it is valid.
    let m = own_signed(
        "From: alice@smime.example\r\n",
        now + Duration::from_secs(120),
    );
    assert_eq!(verdict_at(&m, &store(), now).status, Status::Valid);
}

#[test]
fn trust_failures_have_their_own_values() {
    let m = openssl_signed("From: alice@smime.example\r\n", &[]);
    // No anchor.
    let v = verdict_at(&m, &CertStore::new(), SystemTime::now());
    assert_eq!(v.status, Status::Untrusted, "{v:?}");
    // Long after the certificate expired.
    let late = SystemTime::UNIX_EPOCH + Duration::from_secs(2_700_000_000);
    let v = verdict_at(&m, &store(), late);
    assert_eq!(v.status, Status::Invalid, "{v:?}");
    assert!(v.reason.unwrap().contains("expired"));
    // A certificate whose key usage does not allow signing (RFC 9216 Alice's encryption
    // certificate: keyEncipherment only), though the signature itself verifies.
    let enc = smime::Identity::new(
        smime::PrivateKey::load(&read("alice.encrypt.key"), None).unwrap(),
        smime::parse_certificates(&read("alice.encrypt.crt")).unwrap(),
    )
    .unwrap();
    let opts = sign_options(SystemTime::now());
    let signed = smime::sign(
        format!("From: alice@smime.example\r\n{BODY}").as_bytes(),
        &enc,
        &opts,
    )
    .unwrap();
    assert!(
        smime::verify(&signed).unwrap().is_valid(),
        "the signature itself is fine"
    );
    let v = verdict(&signed);
    assert_eq!(v.status, Status::Invalid, "{v:?}");
    assert!(v.reason.unwrap().contains("digitalSignature"));
    // Tampered text.
    let tampered = String::from_utf8(m).unwrap().replace("10,000", "90,000");
    let v = verdict(tampered.as_bytes());
    assert_eq!(v.status, Status::Invalid, "{v:?}");
    assert!(v.reason.unwrap().contains("changed after signing"));
}

fn flipped_signature(signed: &[u8], i: usize, bit: u8) -> Option<Vec<u8>> {
    let e = smime::mime::split(signed);
    let ct = smime::mime::content_type(e.header);
    let parts = smime::mime::split_multipart(e.body, ct.param("boundary").unwrap()).unwrap();
    let sig = smime::mime::split(parts[1]);
    let der = smime::mime::base64_decode(sig.body).unwrap();
    let mut changed = der.clone();
    changed[i % der.len()] ^= 1 << bit;
    let s = String::from_utf8(signed.to_vec()).unwrap();
    let old = String::from_utf8(smime::mime::base64_lines(&der)).unwrap();
    let new = String::from_utf8(smime::mime::base64_lines(&changed)).unwrap();
    Some(s.replace(&old, &new).into_bytes())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// A flip anywhere in the signature, its certificates included, never leaves it valid.
    #[test]
    fn any_flipped_bit_in_a_signature_is_never_valid(i in 0usize..4096, bit in 0u8..8) {
        let signed = own_signed("From: alice@smime.example\r\n", SystemTime::now());
        let tampered = flipped_signature(&signed, i, bit).unwrap();
        prop_assert_ne!(&tampered, &signed);
        if let Ok(v) = smime::verify(&tampered) {
            let verdict = judge(&Signed::of(&v), &v.originators, &store(), SystemTime::now());
            prop_assert!(!verdict.is_valid(), "flip at {} still valid", i);
        }
    }
}

/// Every bit of every byte of a signature, flipped on its own: never valid.
#[test]
fn every_single_bit_flip_in_a_signature_is_caught() {
    let signed = own_signed("From: alice@smime.example\r\n", SystemTime::now());
    let store = store();
    let e = smime::mime::split(&signed);
    let ct = smime::mime::content_type(e.header);
    let parts = smime::mime::split_multipart(e.body, ct.param("boundary").unwrap()).unwrap();
    let len = smime::mime::base64_decode(smime::mime::split(parts[1]).body)
        .unwrap()
        .len();
    for i in 0..len {
        for bit in 0..8 {
            let tampered = flipped_signature(&signed, i, bit).unwrap();
            if let Ok(v) = smime::verify(&tampered) {
                let verdict = judge(&Signed::of(&v), &v.originators, &store, SystemTime::now());
                assert!(
                    !verdict.is_valid(),
                    "flip at byte {i} bit {bit} still valid"
                );
            }
        }
    }
}

/// With header protection (RFC 9788) the protected From inside the signature is the one judged
/// and shown; an outer From changed on the way is dropped, not believed.
#[test]
fn protected_header_fields_are_the_ones_judged() {
    let mail =
        format!("From: alice@smime.example\r\nTo: bob@smime.example\r\nSubject: hp\r\n{BODY}");
    let opts = sign_options(SystemTime::now());
    let id = alice();
    let p = smime::Prepared::new(
        mail.as_bytes(),
        Some((&id, &opts)),
        smime::Protection::Clear,
    )
    .unwrap();
    let signed = p.to_message();
    let forged = String::from_utf8(signed).unwrap().replacen(
        "From: alice@smime.example",
        "From: boss@smime.example",
        1,
    );
    assert!(forged.contains("From: boss@smime.example"));
    let v = smime::verify(forged.as_bytes()).unwrap();
    assert!(v.header_protection.is_some());
    let shown = String::from_utf8_lossy(&v.message);
    assert!(!shown.contains("boss@"), "{shown}");
    let verdict = judge(&Signed::of(&v), &v.originators, &store(), SystemTime::now());
    assert_eq!(verdict.status, Status::Valid, "{verdict:?}");
    assert_eq!(verdict.signer.as_deref(), Some("alice@smime.example"));
}

/// Every signer costs a verification and a path search, so a signature may have at most
/// [`smime::signed::MAX_SIGNERS`]: eight (each valid, from OpenSSL) are judged and valid, a
/// ninth makes the message refused as such, before any signature is checked.
#[test]
fn eight_signers_are_judged_and_nine_refused() {
    let pki = testkit::Pki::new();
    let ca = pki.root("Praxis CA");
    let mut store = CertStore::new();
    store.add_anchor(
        smime::parse_certificates(&std::fs::read(&ca.1).unwrap())
            .unwrap()
            .remove(0),
    );
    let signers: Vec<(String, String)> = (0..9)
        .map(|i| {
            pki.issue(
                &format!("alice{i}"),
                "ec",
                &format!(
                    "{}subjectAltName=email:alice@praxis.example\n",
                    testkit::MAIL_LEAF
                ),
                &ca,
            )
        })
        .collect();
    let signed = |n: usize| {
        let mut args = vec!["cms", "-sign", "-binary", "-crlfeol"];
        for (key, crt) in &signers[..n] {
            args.extend(["-signer", crt, "-inkey", key]);
        }
        let mut m = b"From: alice@praxis.example\r\n".to_vec();
        m.extend(testkit::openssl_pipe(&args, BODY.as_bytes()).unwrap());
        m
    };
    assert_eq!(smime::signed::MAX_SIGNERS, 8);
    let eight = signed(8);
    let v = smime::verify(&eight).unwrap();
    assert_eq!(v.signers.len(), 8);
    let v = judge(&Signed::of(&v), &v.originators, &store, SystemTime::now());
    assert_eq!(v.status, Status::Valid, "{v:?}");
    let e = smime::verify(&signed(9)).unwrap_err().to_string();
    assert!(e.contains("9 signers") && e.contains("at most 8"), "{e}");
}

/// A valid signature teaches at most [`certstore::verdict::MAX_HARVEST_CANDIDATES`] of the
/// certificates it carries for the From address, each validated on its own: two extra
/// encryption certificates from the trusted CA are both learnt, of five at most four are
/// considered (the signing certificate, which does not allow encryption, may be among them).
#[test]
fn a_signature_teaches_at_most_four_certificates() {
    use certstore::verdict::{harvestable, MAX_HARVEST_CANDIDATES};
    let pki = testkit::Pki::new();
    let ca = rfc9216_ca_in(&pki);
    let extra: Vec<String> = (0..5)
        .map(|i| {
            let ext = "basicConstraints=CA:FALSE\nkeyUsage=keyEncipherment\nsubjectAltName=email:alice@smime.example\n";
            pki.issue(&format!("alice-enc{i}"), "2048", ext, &ca).1
        })
        .collect();
    let learnt = |n: usize| {
        let all: String = extra[..n]
            .iter()
            .map(|p| std::fs::read_to_string(p).unwrap())
            .collect();
        let carried = pki.write(&format!("carried{n}.pem"), &all);
        let m = openssl_signed("From: alice@smime.example\r\n", &["-certfile", &carried]);
        let v = smime::verify(&m).unwrap();
        let signed = Signed::of(&v);
        let (store, now) = (store(), SystemTime::now());
        let verdict = judge(&signed, &v.originators, &store, now);
        assert_eq!(verdict.status, Status::Valid, "{verdict:?}");
        harvestable(&verdict, &signed, &v.originators, &store, now).len()
    };
    assert_eq!(learnt(2), 2);
    let five = learnt(5);
    assert!(
        (MAX_HARVEST_CANDIDATES - 1..=MAX_HARVEST_CANDIDATES).contains(&five),
        "{five}"
    );
}

/// `header` and `BODY` signed by OpenSSL and by envelopd's own signer with a new key whose
/// certificate (from the RFC 9216 CA) has the subjectAltName `san`.
fn signed_by_both_for(san: &str, header: &str) -> [Vec<u8>; 2] {
    let pki = testkit::Pki::new();
    let ca = rfc9216_ca_in(&pki);
    let (key, crt) = pki.issue(
        "signer",
        "2048",
        &format!("{}subjectAltName={san}\n", testkit::MAIL_LEAF),
        &ca,
    );
    let by_openssl = {
        let mut args = vec!["cms", "-sign", "-signer", &crt, "-inkey", &key];
        args.extend(["-binary", "-crlfeol"]);
        let mut m = header.as_bytes().to_vec();
        m.extend(testkit::openssl_pipe(&args, BODY.as_bytes()).unwrap());
        m
    };
    let id = smime::Identity::new(
        smime::PrivateKey::load(&std::fs::read(&key).unwrap(), None).unwrap(),
        smime::parse_certificates(&std::fs::read(&crt).unwrap()).unwrap(),
    )
    .unwrap();
    let opts = sign_options(SystemTime::now());
    let by_envelopd = smime::sign(format!("{header}{BODY}").as_bytes(), &id, &opts).unwrap();
    [by_openssl, by_envelopd]
}

/// A look-alike domain with a certificate of its own (`smіme.example`, whose `і` is Cyrillic,
/// is `xn--smme-m9d.example`): the signature is valid, since that mailbox did sign, but the
/// status line names the signer with the domain as A-labels, so it cannot pass for
/// alice@smime.example. Signed by OpenSSL and by envelopd's own signer.
#[test]
fn a_look_alike_domain_is_named_in_a_labels() {
    let header = "From: alice@sm\u{456}me.example\r\n";
    for m in signed_by_both_for("email:alice@xn--smme-m9d.example", header) {
        let v = verdict(&m);
        assert_eq!(v.status, Status::Valid, "{v:?}");
        assert_eq!(
            v.header_part(),
            "signature=valid; signer=alice@xn--smme-m9d.example"
        );
    }
}

/// The same for a local part (an SmtpUTF8Mailbox, RFC 8398): `аlice` with a Cyrillic `а` at
/// the same domain reads as alice, so the status line writes its non-ASCII characters out
/// (`{U+0430}lice`); a Cyrillic name that reads as nothing in ASCII (`иван`) is shown as it is.
#[test]
fn a_look_alike_local_part_is_written_out() {
    for (mailbox, shown) in [
        ("\u{430}lice@smime.example", "{U+0430}lice@smime.example"),
        (
            "\u{438}\u{432}\u{430}\u{43d}@smime.example",
            "\u{438}\u{432}\u{430}\u{43d}@smime.example",
        ),
    ] {
        let header = format!("From: {mailbox}\r\n");
        // In a section of its own, where OpenSSL reads the value as UTF-8 (`FORMAT:UTF8`).
        let san = format!(
            "@alt\n[alt]\notherName.1 = 1.3.6.1.5.5.7.8.9;FORMAT:UTF8,UTF8String:{mailbox}"
        );
        for m in signed_by_both_for(&san, &header) {
            let v = verdict(&m);
            assert_eq!(v.status, Status::Valid, "{mailbox}: {v:?}");
            assert_eq!(
                v.header_part(),
                format!("signature=valid; signer={shown}"),
                "{mailbox}"
            );
        }
    }
}
