//! Property tests: arbitrary MIME bodies survive sign -> verify and encrypt -> decrypt byte-exact
//! after canonicalisation, and any single flipped byte in a GCM envelope or a signature is caught.

mod common;
use common::*;
use std::sync::OnceLock;

use mail_parser::{MessageParser, MimeHeaders};
use proptest::prelude::*;
use smime::{ContentCipher, EncryptOptions, Identity, KeyTransport};

fn load(key: &str, crt: &str) -> Identity {
    identity(&format!("rfc9216/{key}"), &format!("rfc9216/{crt}"))
}

struct Keys {
    alice: Identity,
    bob: Identity,
}

fn keys() -> &'static Keys {
    static K: OnceLock<Keys> = OnceLock::new();
    K.get_or_init(|| Keys {
        alice: load("alice.sign.key", "alice.sign.crt"),
        bob: load("bob.encrypt.key", "bob.encrypt.crt"),
    })
}

const OUTER: &[u8] = b"From: alice@smime.example\r\nTo: bob@smime.example\r\nSubject: p\r\n";

/// A message around an arbitrary body: text (8-bit, long lines, LF or CRLF) or binary.
fn message_strategy() -> impl Strategy<Value = (Vec<u8>, Vec<u8>, bool)> {
    let text_line = prop::collection::vec(
        prop_oneof![
            8 => 0x20u8..0x7f,
            1 => 0x80u8..=0xff,
            1 => Just(b'\t'),
        ],
        0..1200,
    );
    let text = (
        prop::collection::vec(text_line, 0..6),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(lines, crlf, trailing)| {
            let eol: &[u8] = if crlf { b"\r\n" } else { b"\n" };
            let mut body = lines.join(eol);
            if trailing {
                body.extend_from_slice(eol);
            }
            body
        });
    let binary = prop::collection::vec(any::<u8>(), 0..3000);
    prop_oneof![
        text.prop_map(|b| (
            b"Content-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: 8bit\r\n"
                .to_vec(),
            b,
            true
        )),
        binary.prop_map(|b| (
            b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: binary\r\n"
                .to_vec(),
            b,
            false
        )),
    ]
    .prop_map(|(ct, body, text)| {
        let mut m = OUTER.to_vec();
        m.extend_from_slice(&ct);
        m.extend_from_slice(b"\r\n");
        m.extend_from_slice(&body);
        (m, body, text)
    })
}

/// Decodes the body of a message: base64 with mail-parser (an independent MIME decoder),
/// quoted-printable with the small decoder below (mail-parser would also convert the charset).
fn decoded_body(message: &[u8]) -> Vec<u8> {
    let m = MessageParser::default().parse(message).expect("parseable");
    let part = m.part(0).expect("root part");
    match part.content_transfer_encoding() {
        Some(qp) if qp.eq_ignore_ascii_case("quoted-printable") => {
            let raw = &message[part.raw_body_offset() as usize..part.raw_end_offset() as usize];
            qp_decode(raw)
        }
        Some(b64) if b64.eq_ignore_ascii_case("base64") => part.contents().to_vec(),
        _ => message[part.raw_body_offset() as usize..part.raw_end_offset() as usize].to_vec(),
    }
}

fn qp_decode(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'=' {
            if raw[i + 1..].starts_with(b"\r\n") {
                i += 3;
                continue;
            }
            let hex = std::str::from_utf8(&raw[i + 1..i + 3]).unwrap();
            out.push(u8::from_str_radix(hex, 16).unwrap());
            i += 3;
        } else {
            out.push(raw[i]);
            i += 1;
        }
    }
    out
}

fn crlf(data: &[u8]) -> Vec<u8> {
    smime::mime::to_crlf(data).into_owned()
}

/// What a body must decode to after the round trip: binary exact; text with CRLF line ends.
fn expected(body: &[u8], text: bool) -> Vec<u8> {
    if text {
        crlf(body)
    } else {
        body.to_vec()
    }
}

/// The exact message the receiver must see: outer fields + MIME-Version + canonical entity.
fn canonical_message(msg: &[u8]) -> Vec<u8> {
    let e = smime::mime::split(msg);
    let mut entity = smime::mime::content_fields(e.header);
    entity.extend_from_slice(b"\r\n");
    entity.extend_from_slice(e.body);
    [
        smime::mime::outer_fields(e.header),
        b"MIME-Version: 1.0\r\n".to_vec(),
        smime::mime::canonicalize(&entity).unwrap(),
    ]
    .concat()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn sign_verify_round_trip((msg, body, text) in message_strategy()) {
        let k = keys();
        let signed = smime::sign(&msg, &k.alice, &sign_opts()).unwrap();
        prop_assert!(smime::mime::is_7bit_safe(&signed), "signed output must be 7-bit clean");
        let v = smime::verify(&signed).unwrap();
        prop_assert!(v.is_valid(), "{:?}", v.signers);
        prop_assert_eq!(&v.message, &canonical_message(&msg));
        prop_assert_eq!(decoded_body(&v.message), expected(&body, text));
        // The signed content survives a mail system rewriting every line end to LF.
        let lf: Vec<u8> = signed.iter().copied().filter(|&b| b != b'\r').collect();
        prop_assert!(smime::verify(&lf).unwrap().is_valid());
    }

    #[test]
    fn encrypt_decrypt_round_trip((msg, body, text) in message_strategy(), gcm in any::<bool>(), oaep in any::<bool>()) {
        let k = keys();
        let opts = EncryptOptions {
            cipher: if gcm { ContentCipher::Aes256Gcm } else { ContentCipher::Aes256Cbc },
            key_transport: if oaep { KeyTransport::RsaOaepSha256 } else { KeyTransport::RsaPkcs1v15 },
        };
        let enc = smime::encrypt(&msg, std::slice::from_ref(&k.bob.cert), &opts).unwrap();
        let d = smime::decrypt(&enc, std::slice::from_ref(&k.bob)).unwrap();
        prop_assert_eq!(&d.message, &canonical_message(&msg));
        prop_assert_eq!(decoded_body(&d.message), expected(&body, text));
    }

}

proptest! {
    // Cheap cases: enough of them to land in every field of the envelope and the signature.
    #![proptest_config(ProptestConfig { cases: 600, ..ProptestConfig::default() })]

    #[test]
    fn any_flipped_byte_in_a_gcm_envelope_is_detected(pos in any::<prop::sample::Index>(), bit in 0u8..8) {
        let k = keys();
        let enc = smime::encrypt(b"Subject: x\r\n\r\nsecret diagnosis\r\n", std::slice::from_ref(&k.bob.cert), &EncryptOptions::default()).unwrap();
        let e = smime::mime::split(&enc);
        let mut der = smime::mime::base64_decode(e.body).unwrap();
        let i = pos.index(der.len());
        der[i] ^= 1 << bit;
        let mut tampered = e.header.to_vec();
        tampered.extend_from_slice(b"\r\n");
        tampered.extend_from_slice(&smime::mime::base64_lines(&der));
        let r = smime::decrypt(&tampered, std::slice::from_ref(&k.bob));
        prop_assert!(r.is_err(), "flip at {}/{} was not detected", i, der.len());
    }

    // Flips in a signature (its certificates included) are judged with the trust layer:
    // crates/certstore/tests/verdict.rs.
}

/// Every bit of every byte of a GCM envelope, flipped on its own, must be caught.
#[test]
fn every_single_byte_flip_in_an_envelope_is_detected() {
    let k = keys();
    let enc = smime::encrypt(
        b"Subject: x\r\n\r\nsecret diagnosis\r\n",
        std::slice::from_ref(&k.bob.cert),
        &EncryptOptions::default(),
    )
    .unwrap();
    let e = smime::mime::split(&enc);
    let der = smime::mime::base64_decode(e.body).unwrap();
    let ci_ok = smime::signed::parse_content_info(&der).unwrap();
    assert!(smime::envelope::decrypt(ci_ok, std::slice::from_ref(&k.bob)).is_ok());
    for i in 0..der.len() {
        for bit in 0..8 {
            let mut d = der.clone();
            d[i] ^= 1 << bit;
            let r = smime::signed::parse_content_info(&d)
                .and_then(|ci| smime::envelope::decrypt(ci, std::slice::from_ref(&k.bob)));
            assert!(
                r.is_err(),
                "envelope flip at byte {i} bit {bit} not detected"
            );
        }
    }

    // Every bit of a signature, with the trust layer: crates/certstore/tests/verdict.rs.
}

proptest! {
    /// The block-wise 7-bit check agrees with the plain definition (every byte 1..=127, lines of
    /// at most 998 octets plus CR) on arbitrary bytes, long lines and line-length edges.
    #[test]
    fn seven_bit_check_matches_its_definition(
        body in prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..300),
            (990usize..1010, 0usize..3).prop_map(|(n, extra)| {
                let mut v = vec![b'a'; n];
                v.extend(std::iter::repeat_n(b'\n', extra));
                v.extend(vec![b'b'; 1000 - n.min(1000)]);
                v
            }),
            proptest::collection::vec(prop_oneof![Just(b'a'), Just(b'\n'), Just(b'\r'), Just(0u8), Just(0x80u8)], 0..3000),
        ]
    ) {
        let naive = body
            .split(|&b| b == b'\n')
            .all(|line| line.len() <= 999 && line.iter().all(|&b| b != 0 && b < 0x80));
        prop_assert_eq!(smime::mime::is_7bit_safe(&body), naive);
    }
}
