//! The public test vectors: RFC 4134 examples (decrypt/verify what we support, clear errors for
//! what we refuse) and RFC 9216 keys (PKCS#8, encrypted PKCS#8, PKCS#12) through our own round trips.

mod common;
use common::*;

use smime::{
    signed, ContentCipher, EncryptOptions, Error, Identity, KeyTransport, PrivateKey, SignOptions,
};

const SAMPLE: &[u8] = b"This is some sample content.";

fn alice_enc_9216() -> Identity {
    identity("rfc9216/alice.encrypt.key", "rfc9216/alice.encrypt.crt")
}

#[test]
fn rfc4134_1024_bit_keys_are_refused_clearly() {
    let err = PrivateKey::load(&read("rfc4134/BobPrivRSAEncrypt.pri"), None).unwrap_err();
    assert!(err.to_string().contains("shorter than 2048 bits"), "{err}");
}

#[test]
fn rfc4134_3des_envelope_names_its_recipient() {
    // 5.1 is 3DES for Bob's 1024-bit key: parsed, cipher accepted, and the error says who it is for.
    let ci = signed::parse_content_info(&read("rfc4134/5.1.bin")).unwrap();
    let err = smime::envelope::decrypt(ci, &[alice_enc_9216()]).unwrap_err();
    assert!(matches!(err, Error::NoRecipient(_)), "{err}");
    assert!(err.to_string().contains("CarlRSA"), "{err}");
    let err = smime::decrypt(&read("rfc4134/5.3.eml"), &[alice_enc_9216()]).unwrap_err();
    assert!(matches!(err, Error::NoRecipient(_)), "{err}");
}

#[test]
fn rfc4134_rc2_is_refused_by_name() {
    let ci = signed::parse_content_info(&read("rfc4134/5.2.bin")).unwrap();
    let err = smime::envelope::decrypt(ci, &[alice_enc_9216()]).unwrap_err();
    assert!(matches!(err, Error::Unsupported(_)), "{err}");
    assert!(err.to_string().contains("RC2"), "{err}");
}

#[test]
fn rfc4134_rsa_signed_data_verifies() {
    for f in ["4.2.bin", "4.5.bin"] {
        let ci = signed::parse_content_info(&read(&format!("rfc4134/{f}"))).unwrap();
        let v = signed::verify_cms(&ci, None).unwrap();
        assert_eq!(v.content.as_deref(), Some(SAMPLE), "{f}");
        assert_eq!(v.signers.len(), 1, "{f}");
        assert!(v.signers[0].is_valid(), "{f}: {:?}", v.signers[0].problem);
        assert!(v.signers[0].digest.starts_with("SHA-1"), "{f}");
        assert!(!v.signers[0].signed_attributes, "{f}");
    }
}

#[test]
fn rfc4134_dsa_signed_data_is_refused_by_name() {
    for f in [
        "4.1.bin", "4.3.bin", "4.4.bin", "4.6.bin", "4.7.bin", "4.10.bin",
    ] {
        let ci = signed::parse_content_info(&read(&format!("rfc4134/{f}"))).unwrap();
        // Some of these are detached signatures over the sample content.
        let v = signed::verify_cms(&ci, None)
            .or_else(|_| signed::verify_cms(&ci, Some(SAMPLE)))
            .unwrap();
        assert!(!v.signers.is_empty());
        for s in &v.signers {
            let p = s.problem.as_deref().unwrap_or("");
            assert!(p.contains("unsupported") && p.contains("DSA"), "{f}: {p}");
        }
    }
    for f in ["4.8.eml", "4.9.eml"] {
        let v = smime::verify(&read(&format!("rfc4134/{f}"))).unwrap();
        assert!(!v.is_valid(), "{f}");
        assert!(
            v.signers[0].problem.as_deref().unwrap().contains("DSA"),
            "{f}"
        );
        assert!(String::from_utf8_lossy(&v.message).contains(std::str::from_utf8(SAMPLE).unwrap()));
    }
}

#[test]
fn rfc4134_certs_only_has_no_signers() {
    let ci = signed::parse_content_info(&read("rfc4134/4.11.bin")).unwrap();
    let err = signed::verify_cms(&ci, None).unwrap_err();
    assert!(err.to_string().contains("no signers"), "{err}");
}

#[test]
fn rfc4134_other_content_types_are_not_smime() {
    let bob = alice_enc_9216();
    // 6.0 DigestedData, 7.1 EncryptedData, 7.2 AuthenticatedData: not mail envelopes.
    for f in ["6.0.bin", "7.1.bin", "7.2.bin"] {
        let ci = signed::parse_content_info(&read(&format!("rfc4134/{f}"))).unwrap();
        let err = smime::envelope::decrypt(ci, std::slice::from_ref(&bob)).unwrap_err();
        assert!(matches!(err, Error::NotSmime(_)), "{f}: {err}");
    }
}

fn alice_sign() -> Identity {
    identity("rfc9216/alice.sign.key", "rfc9216/alice.sign.crt")
}

const MAIL: &[u8] = b"From: Alice <alice@smime.example>\r\nTo: bob@smime.example\r\nSubject: Befund\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nDear Bob,\r\nthe results are fine.\r\n";

#[test]
fn rfc9216_pkcs12_opens_and_matches_pkcs8() {
    let p12 = Identity::from_pkcs12(&read("rfc9216/alice.p12"), "alice").unwrap();
    assert!(p12
        .cert
        .names(&smime::Address::parse("Alice@SMIME.example").unwrap()));
    assert!(!p12.chain.is_empty(), "the CA travels in the PKCS#12");
    let err = Identity::from_pkcs12(&read("rfc9216/alice.p12"), "wrong").unwrap_err();
    assert!(err.to_string().contains("PKCS#12"), "{err}");
}

#[test]
fn sign_then_verify_rfc9216() {
    let opts = SignOptions {
        digest: None,
        rsa_padding: smime::RsaPadding::Pkcs1v15,
        signing_time: at(),
        encryption_cert: Some(cert("rfc9216/alice.encrypt.crt")),
    };
    let signed = smime::sign(MAIL, &alice_sign(), &opts).unwrap();
    let v = smime::verify(&signed).unwrap();
    assert!(v.is_valid(), "{:?}", v.signers);
    assert_eq!(
        v.originators.single_from().unwrap().to_string(),
        "alice@smime.example"
    );
    assert_eq!(v.signers[0].signing_time, Some(at()));
    assert!(v.signers[0]
        .capabilities
        .contains(&"2.16.840.1.101.3.4.1.46".to_string()));
    assert!(v.message.ends_with(b"the results are fine.\r\n"));

    // Trust (anchor, expiry, the From address) is the certificate store's verdict:
    // crates/certstore/tests/verdict.rs.
}

#[test]
fn signed_content_tampering_is_detected() {
    let opts = SignOptions {
        digest: Some(smime::Digest::Sha512),
        rsa_padding: smime::RsaPadding::Pss,
        signing_time: at(),
        encryption_cert: None,
    };
    let signed = smime::sign(MAIL, &alice_sign(), &opts).unwrap();
    assert!(smime::verify(&signed).unwrap().is_valid());
    let tampered = String::from_utf8(signed).unwrap().replace("fine", "bad!");
    let v = smime::verify(tampered.as_bytes()).unwrap();
    assert!(v.signers[0]
        .problem
        .as_deref()
        .unwrap()
        .contains("digest mismatch"));
}

#[test]
fn encrypt_then_decrypt_all_ciphers_and_transports() {
    let bob_enc = identity("rfc9216/bob.encrypt.key", "rfc9216/bob.encrypt.crt");
    let alice_enc = identity("rfc9216/alice.encrypt.key", "rfc9216/alice.encrypt.crt");
    let recipients = vec![bob_enc.cert.clone(), alice_enc.cert.clone()];
    for cipher in [
        ContentCipher::Aes256Gcm,
        ContentCipher::Aes128Gcm,
        ContentCipher::Aes256Cbc,
        ContentCipher::Aes128Cbc,
    ] {
        for kt in [KeyTransport::RsaPkcs1v15, KeyTransport::RsaOaepSha256] {
            let opts = EncryptOptions {
                cipher,
                key_transport: kt,
            };
            let enc = smime::encrypt(MAIL, &recipients, &opts).unwrap();
            for who in [&bob_enc, &alice_enc] {
                let d = smime::decrypt(&enc, std::slice::from_ref(who)).unwrap();
                assert_eq!(d.cipher, cipher);
                assert!(d.message.ends_with(b"the results are fine.\r\n"));
                assert!(String::from_utf8_lossy(&d.message).contains("Subject: Befund\r\n"));
            }
            // A key that is not a recipient gets a clear error naming the recipients.
            let err = smime::decrypt(&enc, &[alice_sign()]).unwrap_err();
            assert!(matches!(err, Error::NoRecipient(_)), "{err}");
        }
    }
}

#[test]
fn sign_then_encrypt_opens_both_layers() {
    let bob_enc = identity("rfc9216/bob.encrypt.key", "rfc9216/bob.encrypt.crt");
    let opts = sign_opts();
    let signed = smime::sign(MAIL, &alice_sign(), &opts).unwrap();
    let enc = smime::encrypt(
        &signed,
        std::slice::from_ref(&bob_enc.cert),
        &EncryptOptions::default(),
    )
    .unwrap();
    let opened = smime::open(&enc, &[bob_enc]).unwrap();
    assert_eq!(opened.layers.len(), 2);
    assert!(matches!(
        opened.layers[0],
        smime::Layer::Encrypted(ContentCipher::Aes256Gcm)
    ));
    match &opened.layers[1] {
        smime::Layer::Signed(v) => assert!(v.is_valid(), "{:?}", v.signers),
        other => panic!("{other:?}"),
    }
    assert!(opened.message.ends_with(b"the results are fine.\r\n"));
}

#[test]
fn encrypted_pkcs8_and_pkcs1_keys_load() {
    let pem = read("rfc9216/bob.encrypt.key");
    let plain = PrivateKey::load(&pem, None).unwrap();
    assert!(plain.is_rsa());
    // The .p12.pem bundle carries the key; loading needs no password there, but a wrong label fails.
    let err = PrivateKey::load(
        b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        None,
    )
    .unwrap_err();
    assert!(err.to_string().contains("PRIVATE KEY"), "{err}");
    let err = PrivateKey::load(b"garbage", None).unwrap_err();
    assert!(matches!(err, Error::Key(_)), "{err}");
}

#[test]
fn ed25519_sign_then_verify_rfc9216_carlos() {
    let carlos = identity("rfc9216/carlos.sign.key", "rfc9216/carlos.sign.crt");
    let mail = String::from_utf8(MAIL.to_vec())
        .unwrap()
        .replace("Alice <alice@smime.example>", "carlos@smime.example");
    let opts = sign_opts();
    let signed = smime::sign(mail.as_bytes(), &carlos, &opts).unwrap();
    assert!(String::from_utf8_lossy(&signed).contains("micalg=sha-512"));
    let v = smime::verify(&signed).unwrap();
    assert!(v.is_valid(), "{:?}", v.signers);
}

#[test]
fn x25519_recipients_are_refused_clearly() {
    let dana = cert("rfc9216/dana.encrypt.crt");
    let err = smime::encrypt(MAIL, &[dana], &EncryptOptions::default()).unwrap_err();
    assert!(matches!(err, Error::Unsupported(_)), "{err}");
    assert!(err.to_string().contains("Dana"), "{err}");
}

#[test]
fn binary_transfer_encoding_and_x_pkcs7_signature_are_accepted() {
    let bob_enc = identity("rfc9216/bob.encrypt.key", "rfc9216/bob.encrypt.crt");
    let enc = smime::encrypt(
        MAIL,
        std::slice::from_ref(&bob_enc.cert),
        &EncryptOptions::default(),
    )
    .unwrap();
    let der = smime::mime::base64_decode(smime::mime::split(&enc).body).unwrap();
    let mut binary = b"From: alice@smime.example\r\nContent-Type: application/x-pkcs7-mime; name=smime.p7m\r\nContent-Transfer-Encoding: binary\r\n\r\n".to_vec();
    binary.extend_from_slice(&der);
    let d = smime::decrypt(&binary, std::slice::from_ref(&bob_enc)).unwrap();
    assert!(d.message.ends_with(b"the results are fine.\r\n"));

    let opts = sign_opts();
    let signed = String::from_utf8(smime::sign(MAIL, &alice_sign(), &opts).unwrap())
        .unwrap()
        .replace(
            "application/pkcs7-signature",
            "application/x-pkcs7-signature",
        );
    assert!(smime::verify(signed.as_bytes()).unwrap().is_valid());
}

#[test]
fn encrypted_then_signed_opens_both_layers_in_order() {
    let bob_enc = identity("rfc9216/bob.encrypt.key", "rfc9216/bob.encrypt.crt");
    let opts = sign_opts();
    let enc = smime::encrypt(
        MAIL,
        std::slice::from_ref(&bob_enc.cert),
        &EncryptOptions::default(),
    )
    .unwrap();
    let signed = smime::sign(&enc, &alice_sign(), &opts).unwrap();
    let opened = smime::open(&signed, &[bob_enc]).unwrap();
    assert_eq!(opened.layers.len(), 2);
    assert!(matches!(&opened.layers[0], smime::Layer::Signed(v) if v.is_valid()));
    assert!(matches!(
        opened.layers[1],
        smime::Layer::Encrypted(ContentCipher::Aes256Gcm)
    ));
    assert!(opened.message.ends_with(b"the results are fine.\r\n"));
}

// A certificate that may not sign (key usage) is the certificate store's verdict:
// crates/certstore/tests/verdict.rs.

/// The certificate set of a signature is written from the certificates' own DER: it must be
/// canonical DER (ascending encodings, each certificate once) however the chain was given.
#[test]
fn the_certificate_set_of_a_signature_is_canonical_der() {
    use der::Decode;
    let mut alice = identity("rfc9216/alice.sign.key", "rfc9216/alice.sign.crt");
    let ca = cert("rfc9216/ca.rsa.crt");
    let enc = cert("rfc9216/alice.encrypt.crt");
    alice.chain = vec![enc.clone(), ca.clone(), enc.clone(), ca];
    let mut opts = sign_opts();
    opts.encryption_cert = Some(enc);
    let der = smime::signed::sign_detached(b"Content-Type: text/plain\r\n\r\nx\r\n", &alice, &opts)
        .unwrap();
    // Decodes as CMS at all.
    let ci = cms::content_info::ContentInfo::from_der(&der).unwrap();
    let _: cms::signed_data::SignedData = ci.content.decode_as().unwrap();
    // ContentInfo { oid, [0] { SignedData { version, digestAlgorithms, encap, [0] certs … } } }
    let body = |tlv: &[u8]| smime::ber::read_tlv(tlv).unwrap().1.to_vec();
    let skip = |tlv: &[u8]| tlv[smime::ber::read_tlv(tlv).unwrap().2..].to_vec();
    let signed_data = body(&body(&skip(&body(&der))));
    let mut rest = skip(&skip(&skip(&signed_data)));
    assert_eq!(
        rest[0], 0xa0,
        "the certificate set follows encapContentInfo"
    );
    rest = body(&rest);
    // X.690 §11.6: a SET OF is in ascending order of the elements' encodings.
    let mut inside: Vec<Vec<u8>> = Vec::new();
    while !rest.is_empty() {
        let total = smime::ber::read_tlv(&rest).unwrap().2;
        inside.push(rest[..total].to_vec());
        rest = rest[total..].to_vec();
    }
    let mut sorted = inside.clone();
    sorted.sort();
    assert_eq!(
        inside, sorted,
        "certificates in ascending order of their DER"
    );
    assert_eq!(
        inside.len(),
        3,
        "signer, CA, encryption certificate, each once"
    );
    // And the signature itself still verifies.
    let msg = b"From: alice@smime.example\r\nSubject: set\r\n\r\nbody\r\n";
    let signed = smime::sign(msg, &alice, &opts).unwrap();
    assert!(smime::verify(&signed).unwrap().is_valid());
}

/// Signing and encrypting in the message's own buffer must give, once decrypted, exactly what
/// the copying path gives (up to the random MIME boundary), and fall back for content that
/// needs re-encoding.
#[test]
fn signing_and_encrypting_in_place_gives_what_the_copying_path_gives() {
    let alice = identity("rfc9216/alice.sign.key", "rfc9216/alice.sign.crt");
    let bob = identity("rfc9216/bob.encrypt.key", "rfc9216/bob.encrypt.crt");
    let recipients = [bob.cert.clone()];
    let enc = smime::EncryptOptions::default();
    let unbound = |m: Vec<u8>| {
        let text = String::from_utf8(m).unwrap();
        let b = text
            .split("boundary=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        text.replace(b, "BOUNDARY")
    };
    let cases: [&[u8]; 4] = [
        b"From: alice@smime.example\r\nSubject: s\r\n\r\nhello\r\n",
        b"From: alice@smime.example\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\nQUJD\r\n",
        b"From: alice@smime.example\nSubject: bare LF\n\nline\n",
        b"From: alice@smime.example\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nGr\xc3\xbc\xc3\x9fe\r\n",
    ];
    for m in cases {
        let copied = smime::sign_and_encrypt(m, &alice, &sign_opts(), &recipients, &enc).unwrap();
        let in_place = smime::message::sign_and_encrypt_message(
            m.to_vec(),
            &alice,
            &sign_opts(),
            &recipients,
            &enc,
        )
        .unwrap();
        let mut written = Vec::new();
        in_place.write_to(&mut written).unwrap();
        assert_eq!(
            written,
            in_place.to_vec(),
            "written in pieces = as one buffer"
        );
        let open = |msg: &[u8]| {
            smime::decrypt(msg, std::slice::from_ref(&bob))
                .unwrap()
                .message
        };
        let (a, b) = (open(&copied), open(&written));
        assert_eq!(
            unbound(a),
            unbound(b.clone()),
            "{}",
            String::from_utf8_lossy(m)
        );
        assert!(smime::verify(&b).unwrap().is_valid());
    }
}

#[test]
fn a_certificate_s_fingerprint_is_the_sha256_openssl_reports() {
    // The certificate store keys its cache of checked signatures by this fingerprint: it must
    // be the SHA-256 of the whole DER certificate, and stay the same when asked again.
    let alice = identity("rfc9216/alice.sign.key", "rfc9216/alice.sign.crt");
    let out = testkit::openssl_pipe(
        &[
            "x509",
            "-inform",
            "DER",
            "-noout",
            "-fingerprint",
            "-sha256",
        ],
        alice.cert.der(),
    )
    .unwrap();
    let text = String::from_utf8(out).unwrap();
    let want = text
        .trim()
        .rsplit('=')
        .next()
        .unwrap()
        .replace(':', "")
        .to_lowercase();
    let hex = |fp: [u8; 32]| fp.iter().map(|b| format!("{b:02x}")).collect::<String>();
    assert_eq!(hex(alice.cert.sha256()), want);
    assert_eq!(hex(alice.cert.clone().sha256()), want);
    let bob = identity("rfc9216/bob.sign.key", "rfc9216/bob.sign.crt");
    assert_ne!(bob.cert.sha256(), alice.cert.sha256());
}

#[test]
fn a_certificate_whose_rsa_key_cannot_be_read_is_refused_by_name_every_time() {
    // The key inside the SubjectPublicKeyInfo's BIT STRING is opaque to certificate parsing:
    // break its DER (SEQUENCE tag 0x30 -> 0x31) and only the encryption step can notice. It must
    // say whose key it is, and say it again on the next message (nothing half-made is cached).
    let bob = identity("rfc9216/bob.encrypt.key", "rfc9216/bob.encrypt.crt");
    let mut der = bob.cert.der().to_vec();
    let at = der
        .windows(5)
        .position(|w| w == [0x00, 0x30, 0x82, 0x01, 0x0a])
        .expect("a 2048-bit RSAPublicKey inside the BIT STRING");
    der[at + 1] = 0x31;
    let broken = smime::Cert::from_der(&der).unwrap();
    for _ in 0..2 {
        let e = smime::envelope::encrypt(
            SAMPLE.to_vec(),
            std::slice::from_ref(&broken),
            &EncryptOptions::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("RSA key of") && e.contains("Bob"), "{e}");
    }
}

#[test]
fn one_certificate_encrypts_message_after_message_from_several_threads() {
    // A certificate prepares its RSA key once and shares it: every message encrypted to it, from
    // any thread, must still open with the recipient's key, each with a key of its own.
    let bob = identity("rfc9216/bob.encrypt.key", "rfc9216/bob.encrypt.crt");
    let certs = vec![bob.cert.clone()];
    let run = |certs: Vec<smime::Cert>| {
        (0..3)
            .map(|_| {
                smime::envelope::encrypt(SAMPLE.to_vec(), &certs, &EncryptOptions::default())
                    .unwrap()
            })
            .collect::<Vec<_>>()
    };
    let (a, b) = std::thread::scope(|s| {
        let t1 = s.spawn(|| run(certs.clone()));
        let t2 = s.spawn(|| run(certs.clone()));
        (t1.join().unwrap(), t2.join().unwrap())
    });
    let all: Vec<Vec<u8>> = a.into_iter().chain(b).collect();
    for (i, der) in all.iter().enumerate() {
        let opened = smime::envelope::decrypt_der(der.clone(), std::slice::from_ref(&bob)).unwrap();
        assert_eq!(opened.content, SAMPLE, "message {i}");
        assert!(
            all[..i].iter().all(|d| d != der),
            "message {i} repeats one before it"
        );
    }
}

#[test]
fn recipient_infos_are_a_der_set_in_ascending_order_and_each_recipient_opens_it() {
    // Four RSA recipients: the SET OF RecipientInfo must be in DER order (X.690 §11.6:
    // ascending encodings), whatever order the certificates were given in.
    let who = [
        ("rfc9216/bob.encrypt.key", "rfc9216/bob.encrypt.crt"),
        ("rfc9216/alice.sign.key", "rfc9216/alice.sign.crt"),
        ("rfc9216/alice.encrypt.key", "rfc9216/alice.encrypt.crt"),
        ("rfc9216/bob.sign.key", "rfc9216/bob.sign.crt"),
    ];
    let ids: Vec<Identity> = who.iter().map(|(k, c)| identity(k, c)).collect();
    let certs: Vec<_> = ids.iter().map(|i| i.cert.clone()).collect();
    let der =
        smime::envelope::encrypt(SAMPLE.to_vec(), &certs, &EncryptOptions::default()).unwrap();
    let (_, inner) = smime::envelope::split_content_info(&der).unwrap();
    let (tag, fields, _) = smime::ber::read_tlv(inner).unwrap();
    assert_eq!(tag, 0x30);
    let (_, _, version_len) = smime::ber::read_tlv(fields).unwrap();
    let (tag, mut set, _) = smime::ber::read_tlv(&fields[version_len..]).unwrap();
    assert_eq!(tag, 0x31, "RecipientInfos is a SET OF");
    let mut elements = Vec::new();
    while !set.is_empty() {
        let (_, _, n) = smime::ber::read_tlv(set).unwrap();
        elements.push(&set[..n]);
        set = &set[n..];
    }
    assert_eq!(elements.len(), 4);
    assert!(
        elements.windows(2).all(|w| w[0] < w[1]),
        "RecipientInfos not in ascending DER order"
    );
    for id in &ids {
        let opened = smime::envelope::decrypt_der(der.clone(), std::slice::from_ref(id)).unwrap();
        assert_eq!(opened.content, SAMPLE);
    }
}

/// A DER envelope is decrypted where its ciphertext lies (no parsed copy of it); that path must
/// open and refuse exactly what parsing the whole envelope does, for every cipher, and a
/// changed byte anywhere is noticed the same way.
#[test]
fn decrypting_in_place_agrees_with_parsing_the_whole_envelope() {
    use der::Decode;
    let bob_enc = identity("rfc9216/bob.encrypt.key", "rfc9216/bob.encrypt.crt");
    let keys = std::slice::from_ref(&bob_enc);
    let content = b"Content-Type: text/plain\r\n\r\nthe results are fine.\r\n".repeat(500);
    let both = |der: &[u8]| {
        let in_place = smime::envelope::decrypt_der(der.to_vec(), keys)
            .map(|o| (o.content, o.cipher))
            .map_err(|e| e.to_string());
        let parsed = cms::content_info::ContentInfo::from_der(der)
            .map_err(|e| e.to_string())
            .and_then(|ci| {
                smime::envelope::decrypt(ci, keys)
                    .map(|o| (o.content, o.cipher))
                    .map_err(|e| e.to_string())
            });
        (in_place, parsed)
    };
    for cipher in [
        ContentCipher::Aes256Gcm,
        ContentCipher::Aes128Gcm,
        ContentCipher::Aes256Cbc,
        ContentCipher::Aes128Cbc,
    ] {
        let opts = EncryptOptions {
            cipher,
            key_transport: KeyTransport::RsaPkcs1v15,
        };
        let der = smime::envelope::encrypt_parts(
            content.clone(),
            std::slice::from_ref(&bob_enc.cert),
            &opts,
        )
        .unwrap()
        .to_vec();
        let (in_place, parsed) = both(&der);
        assert_eq!(in_place, parsed, "{cipher:?}");
        assert_eq!(in_place.unwrap().0, content, "{cipher:?}");
        // Every byte changed in turn (a stride through the header, the ciphertext and the tag):
        // both paths give the same answer.
        for at in (0..der.len()).step_by(97).chain([der.len() - 1]) {
            let mut bad = der.clone();
            bad[at] ^= 0x01;
            let (in_place, parsed) = both(&bad);
            // A key transport that does not open gives a random key instead of an error
            // (implicit rejection, RFC 3218), each path its own; with CBC a random key passes
            // the padding check once in 256 tries and "opens" to noise. That is the one way the
            // two may differ: noise on one side (or both), never the message.
            let noise = |r: &Result<(Vec<u8>, ContentCipher), String>| {
                !cipher.is_aead() && r.as_ref().is_ok_and(|(c, _)| *c != content)
            };
            match (&in_place, &parsed) {
                (Ok(a), Ok(b)) if a == b => {}
                (Err(_), Err(_)) => {}
                _ if (in_place.is_err() || noise(&in_place))
                    && (parsed.is_err() || noise(&parsed)) => {}
                _ => panic!("{cipher:?} byte {at}: {in_place:?} vs {parsed:?}"),
            }
            if cipher.is_aead() && at > der.len() - 40 {
                assert!(in_place.is_err(), "{cipher:?}: a changed tag opened");
            }
        }
    }
}

/// Taking a clear signature off in the message's own buffer gives exactly what `verify` gives
/// (message, signers, originators), for envelopd's and OpenSSL's signatures, a tampered one,
/// and the cases it leaves to the copying path (bare LF, header protection).
#[test]
fn verifying_in_place_agrees_with_verifying_a_copy() {
    let opts = SignOptions {
        digest: None,
        rsa_padding: smime::RsaPadding::Pkcs1v15,
        signing_time: at(),
        encryption_cert: None,
    };
    let ours = smime::sign(MAIL, &alice_sign(), &opts).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let v = vectors();
    let key = dir.path().join("k.pem");
    std::fs::copy(v.join("rfc9216/alice.sign.key"), &key).unwrap();
    let theirs = testkit::openssl_pipe(
        &[
            "cms",
            "-sign",
            "-signer",
            v.join("rfc9216/alice.sign.crt").to_str().unwrap(),
            "-inkey",
            key.to_str().unwrap(),
            "-crlfeol",
        ],
        MAIL,
    )
    .unwrap();
    let mut tampered = ours.clone();
    let at_text = memchr::memmem::find(&tampered, b"the results").unwrap();
    tampered[at_text] = b'T';
    let lf = String::from_utf8_lossy(&ours)
        .replace("\r\n", "\n")
        .into_bytes();
    let protected = {
        let m = String::from_utf8_lossy(MAIL).replace(
            "Content-Type: text/plain",
            "Content-Type: text/plain; hp=\"clear\"",
        );
        smime::sign(m.as_bytes(), &alice_sign(), &opts).unwrap()
    };
    for (name, m) in [
        ("envelopd", &ours),
        ("openssl", &theirs),
        ("tampered", &tampered),
        ("bare LF", &lf),
        ("header protection", &protected),
    ] {
        let copy = smime::verify(m).map_err(|e| e.to_string());
        let owned = smime::verify_owned(m.clone()).map_err(|e| e.to_string());
        match (copy, owned) {
            (Ok(a), Ok(b)) => {
                assert_eq!(a.message, b.message, "{name}");
                assert_eq!(
                    format!("{:?}", a.signers),
                    format!("{:?}", b.signers),
                    "{name}"
                );
                assert_eq!(
                    format!("{:?}", a.originators),
                    format!("{:?}", b.originators),
                    "{name}"
                );
                assert_eq!(a.is_valid(), name != "tampered", "{name}");
            }
            (Err(a), Err(b)) => assert_eq!(a, b, "{name}"),
            (a, b) => panic!("{name}: {a:?} vs {b:?}"),
        }
    }
}
