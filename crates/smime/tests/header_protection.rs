//! Header protection (RFC 9788) end to end in the S/MIME core: envelopd's own messages, OpenSSL
//! reading them, and messages built the way RFC 9788 describes (wrapped by OpenSSL, not by us).

mod common;
use common::*;

use mail_parser::MessageParser;
use smime::hp::Declared;
use smime::{ContentCipher, EncryptOptions, KeyTransport, Layer, Prepared, Protection};
use testkit::{openssl_pipe, rfc9216};

fn alice() -> smime::Identity {
    identity("rfc9216/alice.sign.key", "rfc9216/alice.sign.crt")
}

fn bob() -> smime::Identity {
    identity("rfc9216/bob.encrypt.key", "rfc9216/bob.encrypt.crt")
}

fn gcm() -> EncryptOptions {
    EncryptOptions {
        cipher: ContentCipher::Aes256Gcm,
        key_transport: KeyTransport::RsaPkcs1v15,
    }
}

const SECRET_SUBJECT: &str = "Befund Patientin M., Roentgen Thorax";

fn mail() -> Vec<u8> {
    format!(
        "From: alice@smime.example\r\nTo: bob@smime.example\r\nBcc: hidden@smime.example\r\nSubject: {SECRET_SUBJECT}\r\nDate: Wed, 25 Nov 2026 10:00:00 +0000\r\nMessage-ID: <hp-1@smime.example>\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nNo pathological findings.\r\n"
    )
    .into_bytes()
}

fn header_values(message: &[u8], name: &str) -> Vec<String> {
    smime::mime::fields(smime::mime::split(message).header)
        .into_iter()
        .filter(|f| f.name == name)
        .map(|f| {
            let s = String::from_utf8_lossy(f.raw);
            s.split_once(':').unwrap().1.trim().to_string()
        })
        .collect()
}

#[test]
fn signed_and_encrypted_with_hidden_subject_round_trip() {
    let id = alice();
    let p = Prepared::new(
        &mail(),
        Some((&id, &sign_opts())),
        Protection::Cipher {
            legacy_display: false,
        },
    )
    .unwrap();
    let out = p
        .encrypt(&[cert("rfc9216/bob.encrypt.crt")], &gcm())
        .unwrap();
    // Outside: the routing fields, the Subject obscured, nothing of the subject anywhere.
    assert_eq!(header_values(&out, "subject"), vec!["[...]"]);
    assert_eq!(header_values(&out, "from"), vec!["alice@smime.example"]);
    assert!(header_values(&out, "bcc").is_empty());
    assert!(!String::from_utf8_lossy(&out).contains("Roentgen"));

    // OpenSSL decrypts it and shows the protected header inside the signed payload.
    let inner = openssl_pipe(
        &[
            "cms",
            "-decrypt",
            "-inkey",
            rfc9216("bob.encrypt.key").to_str().unwrap(),
            "-recip",
            rfc9216("bob.encrypt.crt").to_str().unwrap(),
        ],
        &out,
    )
    .unwrap();
    let inner_text = String::from_utf8_lossy(&inner);
    assert!(inner_text.contains(&format!("Subject: {SECRET_SUBJECT}\r\n")));
    assert!(inner_text.contains("hp=\"cipher\""));
    assert!(inner_text.contains("HP-Outer: Subject: [...]\r\n"));
    // No Bcc field and not the hidden address (a bare "bcc" substring may well occur in the
    // random MIME boundary's hex digits: that made this check fail about once in 200 runs).
    assert!(!inner_text.contains("hidden@smime.example"));
    assert!(!inner_text
        .lines()
        .any(|l| l.to_ascii_lowercase().starts_with("bcc:")));
    // … and the signature over it verifies in OpenSSL.
    openssl_pipe(
        &[
            "cms",
            "-verify",
            "-CAfile",
            rfc9216("ca.rsa.crt").to_str().unwrap(),
            "-attime",
            "1893456000",
            "-purpose",
            "any",
        ],
        &inner,
    )
    .unwrap();

    // envelopd opens it: one Subject, the real one; the signature is valid for the inner From.
    let opened = smime::open(&out, &[bob()]).unwrap();
    assert_eq!(opened.header_protection, Some(Declared::Cipher));
    assert_eq!(
        header_values(&opened.message, "subject"),
        vec![SECRET_SUBJECT]
    );
    assert!(header_values(&opened.message, "hp-outer").is_empty());
    assert_eq!(header_values(&opened.message, "date").len(), 1);
    let signed = opened.layers.iter().find_map(|l| match l {
        Layer::Signed(v) => Some(v),
        _ => None,
    });
    assert!(signed.unwrap().is_valid());
    let parsed = MessageParser::default().parse(&opened.message).unwrap();
    assert_eq!(parsed.subject(), Some(SECRET_SUBJECT));
    assert_eq!(
        parsed.body_text(0).as_deref(),
        Some("No pathological findings.\r\n")
    );
}

#[test]
fn signed_only_copies_headers_inside_and_keeps_the_outside() {
    let id = alice();
    let p = Prepared::new(&mail(), Some((&id, &sign_opts())), Protection::Clear).unwrap();
    let out = p.to_message();
    assert_eq!(header_values(&out, "subject"), vec![SECRET_SUBJECT]);
    assert!(header_values(&out, "bcc").is_empty());
    let v = smime::verify(&out).unwrap();
    assert!(v.is_valid(), "{:?}", v.signers);
    assert_eq!(v.header_protection, Some(Declared::Clear));
    assert_eq!(header_values(&v.message, "subject"), vec![SECRET_SUBJECT]);
    assert_eq!(
        header_values(&v.message, "from"),
        vec!["alice@smime.example"]
    );
}

#[test]
fn without_protection_the_message_is_as_before() {
    let p = Prepared::new(&mail(), None, Protection::Off).unwrap();
    let out = p
        .encrypt(&[cert("rfc9216/bob.encrypt.crt")], &gcm())
        .unwrap();
    assert_eq!(header_values(&out, "subject"), vec![SECRET_SUBJECT]);
    let opened = smime::open(&out, &[bob()]).unwrap();
    assert_eq!(opened.header_protection, None);
    assert_eq!(
        header_values(&opened.message, "subject"),
        vec![SECRET_SUBJECT]
    );
}

#[test]
fn legacy_display_is_readable_without_rfc9788_and_hidden_with_it() {
    let p = Prepared::new(
        &mail(),
        None,
        Protection::Cipher {
            legacy_display: true,
        },
    )
    .unwrap();
    let out = p
        .encrypt(&[cert("rfc9216/bob.encrypt.crt")], &gcm())
        .unwrap();
    // A reader without RFC 9788 (OpenSSL, then any MIME parser) sees the real Subject on top of
    // the text.
    let inner = openssl_pipe(
        &[
            "cms",
            "-decrypt",
            "-inkey",
            rfc9216("bob.encrypt.key").to_str().unwrap(),
        ],
        &out,
    )
    .unwrap();
    let parsed = MessageParser::default().parse(&inner).unwrap();
    let text = parsed.body_text(0).unwrap();
    assert!(
        text.starts_with(&format!("Subject: {SECRET_SUBJECT}\r\n\r\nNo pathological")),
        "{text:?}"
    );
    // envelopd hides the element: the text once, the Subject in the header.
    let opened = smime::open(&out, &[bob()]).unwrap();
    let parsed = MessageParser::default().parse(&opened.message).unwrap();
    assert_eq!(parsed.subject(), Some(SECRET_SUBJECT));
    assert_eq!(
        parsed.body_text(0).as_deref(),
        Some("No pathological findings.\r\n")
    );
    assert!(!String::from_utf8_lossy(&opened.message).contains("hp-legacy-display"));
}

/// An RFC 9788 message written from the RFC's description, wrapped by OpenSSL: an encrypted
/// multipart/alternative payload with protected headers, HP-Outer records and a Legacy Display
/// Element in both alternatives; the outside carries an obscured Subject and a forged Reply-To.
#[test]
fn rfc9788_style_message_from_another_engine_is_read_correctly() {
    let payload = "Content-Type: multipart/alternative; boundary=\"c\"; hp=\"cipher\"\r\n\
From: Alice <alice@smime.example>\r\n\
To: Bob <bob@smime.example>\r\n\
Subject: Dinner plans\r\n\
Date: Wed, 25 Nov 2026 18:00:00 +0000\r\n\
Message-ID: <rfc9788-1@smime.example>\r\n\
HP-Outer: Date: Wed, 25 Nov 2026 18:00:00 +0000\r\n\
HP-Outer: From: Alice <alice@smime.example>\r\n\
HP-Outer: To: Bob <bob@smime.example>\r\n\
HP-Outer: Subject: [...]\r\n\
HP-Outer: Message-ID: <rfc9788-1@smime.example>\r\n\
\r\n\
--c\r\n\
Content-Type: text/plain; charset=\"us-ascii\"; hp-legacy-display=\"1\"\r\n\
\r\n\
Subject: Dinner plans\r\n\
\r\n\
Let's meet at Rama's Roti Shack at 8pm and go to the park\r\n\
from there.\r\n\
--c\r\n\
Content-Type: text/html; charset=\"us-ascii\"; hp-legacy-display=\"1\"\r\n\
\r\n\
<html><head><title></title></head><body><div class=\"header-protection-legacy-display\">\r\n\
<pre>Subject: Dinner plans</pre></div>\r\n\
<p>Let's meet at Rama's Roti Shack at 8pm and go to the park from there.</p></body></html>\r\n\
--c--\r\n";
    let enveloped = openssl_pipe(
        &[
            "cms",
            "-encrypt",
            "-aes256",
            "-binary",
            rfc9216("bob.encrypt.crt").to_str().unwrap(),
        ],
        payload.as_bytes(),
    )
    .unwrap();
    let mut stored = b"Received: from mx.smime.example by imap.smime.example\r\nDate: Wed, 25 Nov 2026 18:00:00 +0000\r\nFrom: Alice <alice@smime.example>\r\nTo: Bob <bob@smime.example>\r\nSubject: [...]\r\nReply-To: attacker@evil.example\r\nMessage-ID: <rfc9788-1@smime.example>\r\n".to_vec();
    stored.extend_from_slice(&enveloped);
    let opened = smime::open(&stored, &[bob()]).unwrap();
    assert_eq!(opened.header_protection, Some(Declared::Cipher));
    let m = &opened.message;
    assert_eq!(header_values(m, "subject"), vec!["Dinner plans"]);
    assert!(
        header_values(m, "reply-to").is_empty(),
        "forged outer field shown"
    );
    assert_eq!(header_values(m, "received").len(), 1, "trace fields stay");
    assert_eq!(header_values(m, "from").len(), 1);
    assert!(header_values(m, "hp-outer").is_empty());
    let parsed = MessageParser::default().parse(m).unwrap();
    assert_eq!(
        parsed.body_text(0).as_deref(),
        Some("Let's meet at Rama's Roti Shack at 8pm and go to the park\r\nfrom there.")
    );
    let html = parsed.body_html(0).unwrap();
    assert!(!html.contains("legacy-display"), "{html}");
    assert!(html.contains("<body>\r\n<p>Let's meet"), "{html}");

    // The same payload clear-signed by OpenSSL (hp="clear" variant): read with its own header.
    let clear = payload.replace("hp=\"cipher\"", "hp=\"clear\"");
    let signed = openssl_pipe(
        &[
            "cms",
            "-sign",
            "-signer",
            rfc9216("alice.sign.crt").to_str().unwrap(),
            "-inkey",
            rfc9216("alice.sign.key").to_str().unwrap(),
            "-binary",
        ],
        clear.as_bytes(),
    )
    .unwrap();
    let mut stored = b"From: Alice <alice@smime.example>\r\nSubject: outer subject\r\n".to_vec();
    stored.extend_from_slice(&signed);
    let v = smime::verify(&stored).unwrap();
    assert_eq!(v.header_protection, Some(Declared::Clear));
    assert_eq!(header_values(&v.message, "subject"), vec!["Dinner plans"]);
    assert_eq!(
        v.originators.single_from().unwrap().to_string(),
        "alice@smime.example"
    );
}

/// A payload that declares protection but lacks a From: the outer From is not shown, and the
/// signature is not reported as valid for a sender the reader does not see.
#[test]
fn a_protected_payload_without_from_does_not_borrow_the_outer_one() {
    let payload =
        "Content-Type: text/plain; hp=\"clear\"\r\nSubject: no sender inside\r\n\r\nhello\r\n";
    let signed = openssl_pipe(
        &[
            "cms",
            "-sign",
            "-signer",
            rfc9216("alice.sign.crt").to_str().unwrap(),
            "-inkey",
            rfc9216("alice.sign.key").to_str().unwrap(),
            "-binary",
        ],
        payload.as_bytes(),
    )
    .unwrap();
    let mut stored = b"From: alice@smime.example\r\n".to_vec();
    stored.extend_from_slice(&signed);
    let v = smime::verify(&stored).unwrap();
    assert!(header_values(&v.message, "from").is_empty());
    assert!(v.originators.from.is_empty());
    assert!(v.originators.single_from().is_err());
}
