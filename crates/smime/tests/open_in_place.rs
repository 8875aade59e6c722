//! `open_owned` (decoding, decrypting and unwrapping in the stored message's own buffer) must
//! give exactly what `open` gives, and when it cannot open a message, the message back byte for
//! byte: the reader is then shown it. Checked on messages from envelopd and from `openssl cms`,
//! and on every kind of damage along the way (each base64 line changed in turn: DER, padding,
//! signature and MIME failures inside the ciphertext), wrong keys, broken base64 and irregular
//! lines.

mod common;

use common::{identity, sign_opts};
use smime::message::open_owned;
use smime::{ContentCipher, EncryptOptions, Identity, KeyTransport, Layer, OpenedMessage};

fn bob() -> Identity {
    identity("rfc9216/bob.encrypt.key", "rfc9216/bob.encrypt.crt")
}

fn alice_sign() -> Identity {
    identity("rfc9216/alice.sign.key", "rfc9216/alice.sign.crt")
}

fn opts(cipher: ContentCipher) -> EncryptOptions {
    EncryptOptions {
        cipher,
        key_transport: KeyTransport::RsaPkcs1v15,
    }
}

/// A plain message with a body of about `size` bytes in 76-character lines.
fn plain(size: usize) -> Vec<u8> {
    let mut m =
        b"From: alice@smime.example\r\nTo: bob@smime.example\r\nSubject: Befund\r\n\r\n".to_vec();
    let mut x: u32 = 0x9e37_79b9;
    while m.len() < size {
        for _ in 0..76 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            m.push(b'a' + (x % 26) as u8);
        }
        m.extend_from_slice(b"\r\n");
    }
    m
}

/// What a layer says, comparable.
fn layers(o: &OpenedMessage) -> Vec<String> {
    o.layers
        .iter()
        .map(|l| match l {
            Layer::Encrypted(c) => format!("encrypted {c:?}"),
            Layer::Signed(v) => format!("signed {:?} {:?}", v.is_valid(), v.signers),
        })
        .collect()
}

/// `open_owned` gives what `open` gives; on failure the same error and the message unchanged.
/// Returns whether it opened.
fn same(message: &[u8], keys: &[&Identity]) -> bool {
    let copied = smime::open(message, keys);
    let owned = open_owned(message.to_vec(), keys);
    match (copied, owned) {
        (Ok(a), Ok(b)) => {
            assert_eq!(a.message, b.message, "opened messages differ");
            assert_eq!(layers(&a), layers(&b));
            assert_eq!(
                format!("{:?}", a.header_protection),
                format!("{:?}", b.header_protection)
            );
            true
        }
        (Err(a), Err((b, back))) => {
            assert_eq!(a.to_string(), b.to_string());
            assert!(back == message, "the message did not come back unchanged");
            false
        }
        // A damaged encrypted content key unwraps to a random key (implicit rejection, RFC
        // 3218 §2.3.2), which about once in 256 tries gives CBC padding that holds: then one
        // call may open garbage where the other did not. Only that may differ, and a message
        // that was not opened must still come back unchanged.
        (Ok(_), Err((e, back))) if randomised(&e) => {
            assert!(back == message, "the message did not come back unchanged");
            false
        }
        (Err(e), Ok(_)) if randomised(&e) => true,
        (Ok(_), Err((e, _))) => panic!("only open() opened it; open_owned: {e}"),
        (Err(e), Ok(_)) => panic!("only open_owned() opened it; open: {e}"),
    }
}

fn randomised(e: &smime::Error) -> bool {
    matches!(e, smime::Error::DecryptFailed)
}

/// The message with base64 character `at` of its body replaced by another base64 character.
fn changed_at(message: &[u8], at: usize) -> Vec<u8> {
    let mut m = message.to_vec();
    m[at] = if m[at] == b'A' { b'B' } else { b'A' };
    m
}

/// Where the base64 body's lines start.
fn body_lines(message: &[u8]) -> Vec<usize> {
    let body = smime::mime::split(message).header.len();
    let mut starts = vec![body + 2];
    for (i, &b) in message.iter().enumerate().skip(body + 2) {
        if b == b'\n' && i + 1 < message.len() {
            starts.push(i + 1);
        }
    }
    starts
}

#[test]
fn envelopd_messages_open_alike_and_every_damaged_line_comes_back_unchanged() {
    let bob = bob();
    let alice = alice_sign();
    let certs = [bob.cert.clone()];
    for cipher in [
        ContentCipher::Aes256Cbc,
        ContentCipher::Aes128Cbc,
        ContentCipher::Aes256Gcm,
    ] {
        for size in [300, 70_000] {
            let signed =
                smime::sign_and_encrypt(&plain(size), &alice, &sign_opts(), &certs, &opts(cipher))
                    .unwrap();
            let unsigned = smime::encrypt(&plain(size), &certs, &opts(cipher)).unwrap();
            for m in [&signed, &unsigned] {
                assert!(same(m, &[&bob]), "{cipher:?} {size}: not opened");
                let mut outcomes = [0usize; 2];
                // Every line of the small message, every fifth of the large one (several
                // windows of the decoder).
                let step = if size > 1000 { 5 } else { 1 };
                for at in body_lines(m).into_iter().step_by(step) {
                    if m[at].is_ascii_alphanumeric() {
                        outcomes[same(&changed_at(m, at), &[&bob]) as usize] += 1;
                    }
                }
                // Changes in the ciphertext of CBC are not all noticed by the cipher: some open
                // (with a signature that no longer holds), most fail somewhere.
                assert!(outcomes[0] > 0, "{cipher:?} {size}: no damage was noticed");
            }
        }
    }
}

#[test]
fn a_wrong_key_or_no_key_gives_the_message_back() {
    let certs = [bob().cert.clone()];
    let m = smime::sign_and_encrypt(
        &plain(5000),
        &alice_sign(),
        &sign_opts(),
        &certs,
        &opts(ContentCipher::Aes256Cbc),
    )
    .unwrap();
    let alice = identity("rfc9216/alice.encrypt.key", "rfc9216/alice.encrypt.crt");
    assert!(!same(&m, &[&alice]));
    assert!(!same(&m, &[]));
}

#[test]
fn broken_base64_and_irregular_lines_give_the_message_back_or_open_the_ordinary_way() {
    let bob = bob();
    let certs = [bob.cert.clone()];
    let m = smime::encrypt(&plain(70_000), &certs, &opts(ContentCipher::Aes256Cbc)).unwrap();
    let lines = body_lines(&m);
    for &line in [lines[1], lines[lines.len() / 2], lines[lines.len() - 3]].iter() {
        // Not base64 in the first, a middle and a late window.
        let mut bad = m.clone();
        bad[line + 3] = b'*';
        same(&bad, &[&bob]);
        // A space inside a line (the ordinary decoder takes it out).
        let mut spaced = m.clone();
        spaced.insert(line + 4, b' ');
        assert!(same(&spaced, &[&bob]));
        // One line shorter than the others.
        let mut short = m.clone();
        short.drain(line + 8..line + 12);
        same(&short, &[&bob]);
    }
    // Line feeds only, and lines of 64 characters.
    let lf: Vec<u8> = m.iter().copied().filter(|&b| b != b'\r').collect();
    assert!(same(&lf, &[&bob]));
    let e = smime::mime::split(&m);
    let der = smime::mime::base64_decode(e.body).unwrap();
    let mut rewrapped = e.header.to_vec();
    rewrapped.extend_from_slice(b"\r\n");
    let text = smime::mime::base64_lines(&der);
    let joined: Vec<u8> = text
        .iter()
        .copied()
        .filter(|&b| b != b'\r' && b != b'\n')
        .collect();
    for chunk in joined.chunks(64) {
        rewrapped.extend_from_slice(chunk);
        rewrapped.extend_from_slice(b"\r\n");
    }
    assert!(same(&rewrapped, &[&bob]));
    // Without a line break after the last line, and with empty lines after it.
    let mut open_end = m.clone();
    while open_end.ends_with(b"\n") || open_end.ends_with(b"\r") {
        open_end.pop();
    }
    assert!(same(&open_end, &[&bob]));
    let mut trailing = m.clone();
    trailing.extend_from_slice(b"\r\n\r\n");
    assert!(same(&trailing, &[&bob]));
}

#[test]
fn openssl_messages_open_alike_and_come_back_unchanged() {
    let bob = bob();
    let msg = plain(40_000);
    for cipher in ["-aes-256-cbc", "-aes-128-cbc", "-aes-256-gcm"] {
        let signed = openssl_signed(&msg);
        let m = testkit::openssl_pipe(
            &[
                "cms",
                "-encrypt",
                cipher,
                read_path("rfc9216/bob.encrypt.crt").as_str(),
            ],
            &signed,
        )
        .unwrap();
        assert!(same(&m, &[&bob]), "{cipher}: not opened");
        for (i, at) in body_lines(&m).into_iter().enumerate() {
            if i % 7 == 0 && m[at].is_ascii_alphanumeric() {
                same(&changed_at(&m, at), &[&bob]);
            }
        }
    }
}

/// `message` clear-signed by OpenSSL with Alice's RFC 9216 signing key.
fn openssl_signed(message: &[u8]) -> Vec<u8> {
    testkit::openssl_pipe(
        &[
            "cms",
            "-sign",
            "-signer",
            read_path("rfc9216/alice.sign.crt").as_str(),
            "-inkey",
            read_path("rfc9216/alice.sign.key").as_str(),
        ],
        message,
    )
    .unwrap()
}

fn read_path(rel: &str) -> String {
    common::vectors().join(rel).display().to_string()
}

/// Signed-only messages (clear-signed by envelopd and by OpenSSL, plain content) lose their
/// signature layer in their own buffer: the same result as `open`, and every damaged line of
/// the signature or the content gives the same verdict (a broken signature, a tampered text).
#[test]
fn signed_only_messages_open_alike_in_their_own_buffer() {
    let alice = alice_sign();
    let mut messages = Vec::new();
    for size in [300, 70_000] {
        messages.push(smime::sign(&plain(size), &alice, &sign_opts()).unwrap());
        messages.push(openssl_signed(&plain(size)));
    }
    for m in &messages {
        assert_eq!(smime::message::kind(m), smime::message::Kind::ClearSigned);
        assert!(same(m, &[]), "not opened");
        // Opened where it lies: what comes back is the stored message's own allocation.
        let stored = m.clone();
        let at = stored.as_ptr();
        let opened = open_owned(stored, &[] as &[&Identity]).unwrap();
        assert_eq!(opened.message.as_ptr(), at, "the message was copied");
        // A signed message opens without any key; a key does not change that.
        assert!(same(m, &[&bob()]), "not opened with a key given");
        let mut verdicts = [0usize; 2];
        for at in (smime::mime::split(m).header.len() + 2..m.len()).step_by(97) {
            if m[at].is_ascii_alphanumeric() {
                let damaged = changed_at(m, at);
                if same(&damaged, &[]) {
                    let o = smime::open(&damaged, &[] as &[&Identity]).unwrap();
                    verdicts[o.layers.iter().all(|l| match l {
                        Layer::Signed(v) => v.is_valid(),
                        Layer::Encrypted(_) => true,
                    }) as usize] += 1;
                }
            }
        }
        assert!(verdicts[0] > 0, "no damage was noticed");
    }
}
