//! Surreptitious forwarding (Davis, "Defective Sign & Encrypt in S/MIME, PKCS#7, MOSS, PEM,
//! PGP, and XML", USENIX 2001): Bob decrypts Alice's signed and encrypted message and encrypts
//! it again, signature untouched, to Carlos with `To: carlos` outside. The signature is still
//! Alice's and valid; what may not follow is that Alice wrote to Carlos. With header protection
//! (RFC 9788, envelopd's default) the To and Cc shown are the ones Alice signed; without it
//! nothing in the message says whom Alice wrote to, and the reader sees the outer ones.

use std::time::SystemTime;

use certstore::CertStore;
use imap::present::present;

fn read(n: &str) -> Vec<u8> {
    std::fs::read(testkit::vectors().join("rfc9216").join(n)).unwrap()
}

fn identity(key: &str, cert: &str) -> smime::Identity {
    smime::Identity::new(
        smime::PrivateKey::load(&read(key), None).unwrap(),
        smime::parse_certificates(&read(cert)).unwrap(),
    )
    .unwrap()
}

fn cert(name: &str) -> smime::Cert {
    smime::parse_certificates(&read(name)).unwrap().remove(0)
}

/// Signing as a mail program does: the default digest, PKCS #1 v1.5, signed at `now`.
fn sign_options(now: SystemTime) -> smime::SignOptions {
    smime::SignOptions {
        digest: None,
        rsa_padding: smime::RsaPadding::Pkcs1v15,
        signing_time: now,
        encryption_cert: None,
    }
}

/// Alice's message to Bob, signed and encrypted by envelopd's core with `protection`; then
/// Bob's forward of it to Carlos, and what Carlos is shown (message, status).
fn forwarded(protection: smime::Protection) -> (String, String) {
    let alice = identity("alice.sign.key", "alice.sign.crt");
    let now = SystemTime::now();
    let opts = sign_options(now);
    let original = b"From: alice@smime.example\r\nTo: bob@smime.example\r\n\
        Subject: Befund M.\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\n\
        Der Befund ist unauffaellig.\r\n";
    let to_bob = smime::Prepared::new(original, Some((&alice, &opts)), protection)
        .unwrap()
        .encrypt(
            &[cert("bob.encrypt.crt")],
            &smime::EncryptOptions::default(),
        )
        .unwrap();
    // Bob opens it, puts Carlos outside and encrypts it to him; the signature stays as it is.
    let bob = identity("bob.encrypt.key", "bob.encrypt.crt");
    let opened = String::from_utf8(smime::decrypt(&to_bob, &[&bob]).unwrap().message).unwrap();
    assert!(opened.contains("To: bob@smime.example\r\n"), "{opened}");
    let rewritten = opened.replacen(
        "To: bob@smime.example\r\n",
        "To: carlos@smime.example\r\n",
        1,
    );
    let (_pki, carlos, _) = carlos();
    let to_carlos = smime::encrypt(
        rewritten.as_bytes(),
        std::slice::from_ref(&carlos.cert),
        &smime::EncryptOptions::default(),
    )
    .unwrap();
    let mut store = CertStore::new();
    store.add_anchor(cert("ca.rsa.crt"));
    let p = present(&to_carlos, &[&carlos], &store, now);
    let shown = String::from_utf8(p.message.clone()).unwrap();
    (shown, p.status.clone())
}

/// Carlos's RSA key and certificate from a CA of his own, made by OpenSSL (the RFC 9216
/// Carlos has an X25519 key, which envelopd does not encrypt to); the PKI (keep it alive), the
/// identity and the certificate's path.
fn carlos() -> (testkit::Pki, smime::Identity, String) {
    let pki = testkit::Pki::new();
    let ca = pki.root("Carlos CA");
    let ext = "subjectAltName=email:carlos@smime.example\nkeyUsage=critical,keyEncipherment\n\
               extendedKeyUsage=emailProtection\n";
    let (key, crt) = pki.issue("carlos", "2048", ext, &ca);
    let carlos = smime::Identity::new(
        smime::PrivateKey::load(&std::fs::read(key).unwrap(), None).unwrap(),
        smime::parse_certificates(&std::fs::read(&crt).unwrap()).unwrap(),
    )
    .unwrap();
    (pki, carlos, crt)
}

fn header(message: &str) -> &str {
    &message[..message.find("\r\n\r\n").unwrap()]
}

#[test]
fn with_header_protection_the_reader_sees_whom_the_signer_wrote_to() {
    let (shown, status) = forwarded(smime::Protection::Cipher {
        legacy_display: false,
    });
    assert!(
        status.contains("signature=valid") && status.contains("headers=protected"),
        "{status}"
    );
    let h = header(&shown);
    assert!(h.contains("To: bob@smime.example"), "{h}");
    assert!(
        !h.contains("carlos"),
        "the forwarder's To must not be shown: {h}"
    );
    assert!(h.contains("Subject: Befund M."), "{h}");
}

/// The limit, shown so it stays documented: without header protection the signature is still
/// valid and the outer To (the forwarder's) is what the reader sees.
#[test]
fn without_header_protection_only_the_signature_is_vouched_for() {
    let (shown, status) = forwarded(smime::Protection::Off);
    assert!(status.contains("signature=valid"), "{status}");
    assert!(!status.contains("headers=protected"), "{status}");
    assert!(
        header(&shown).contains("To: carlos@smime.example"),
        "{shown}"
    );
}

/// The same limit with every step made by OpenSSL (`openssl cms`: Alice signs and encrypts to
/// Bob, Bob decrypts and encrypts to Carlos): valid, and the forwarder's To is shown.
#[test]
fn an_openssl_made_forward_is_valid_and_shows_the_outer_to() {
    let v = testkit::vectors().join("rfc9216");
    let p = |n: &str| v.join(n).display().to_string();
    let entity = b"Content-Type: text/plain\r\n\r\nDer Befund ist unauffaellig.\r\n";
    let signed = testkit::openssl_sign_as("alice", &[], entity);
    let to_bob = testkit::openssl_pipe(
        &["cms", "-encrypt", "-aes256", &p("bob.encrypt.crt")],
        &signed,
    )
    .unwrap();
    let opened = testkit::openssl_pipe(
        &[
            "cms",
            "-decrypt",
            "-recip",
            &p("bob.encrypt.crt"),
            "-inkey",
            &p("bob.encrypt.key"),
        ],
        &to_bob,
    )
    .unwrap();
    // The same signed message (OpenSSL's encryption wrote its line ends as CRLF).
    let lf = |b: &[u8]| String::from_utf8_lossy(b).replace('\r', "");
    assert!(
        lf(&opened) == lf(&signed),
        "Bob's copy is not Alice's message"
    );
    let (_pki, carlos, carlos_crt) = carlos();
    let again =
        testkit::openssl_pipe(&["cms", "-encrypt", "-aes256", &carlos_crt], &opened).unwrap();
    let mut forward = b"From: alice@smime.example\r\nTo: carlos@smime.example\r\n\
        Subject: Befund M.\r\n"
        .to_vec();
    forward.extend_from_slice(&again);
    let mut store = CertStore::new();
    store.add_anchor(cert("ca.rsa.crt"));
    let shown = present(&forward, &[&carlos], &store, SystemTime::now());
    assert!(shown.status.contains("signature=valid"), "{}", shown.status);
    let text = String::from_utf8(shown.message.clone()).unwrap();
    assert!(header(&text).contains("To: carlos@smime.example"), "{text}");
    assert!(text.contains("Der Befund ist unauffaellig."), "{text}");
}

/// Header protection declared by the forwarder, outside the signature: Bob puts a forged
/// Subject into the encrypted part's header block, around Alice's signed part (which carries
/// no protected header of its own), and declares it `hp="cipher"`. The signature is valid, but
/// nothing the signer signed vouches for those fields, so the status must not say
/// `headers=protected`.
#[test]
fn header_protection_outside_the_signature_is_not_claimed() {
    let alice = identity("alice.sign.key", "alice.sign.crt");
    let now = SystemTime::now();
    let opts = sign_options(now);
    let signed = String::from_utf8(
        smime::sign(
            b"From: alice@smime.example\r\nTo: bob@smime.example\r\nSubject: Befund M.\r\n\
              MIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\nDer Befund ist unauffaellig.\r\n",
            &alice,
            &opts,
        )
        .unwrap(),
    )
    .unwrap();
    // The signed entity (its Content-Type and body), with Bob's fields and declaration added.
    let (header, body) = signed.split_once("\r\n\r\n").unwrap();
    let content_type = header
        .split("\r\n")
        .skip_while(|l| !l.to_ascii_lowercase().starts_with("content-type:"))
        .take_while(|l| {
            l.to_ascii_lowercase().starts_with("content-type:") || l.starts_with([' ', '\t'])
        })
        .collect::<Vec<_>>()
        .join("\r\n");
    let entity = format!(
        "{content_type}; hp=\"cipher\"\r\nFrom: alice@smime.example\r\nTo: carlos@smime.example\r\n\
         Subject: Kuendigung zum Monatsende\r\n\r\n{body}"
    );
    let (_pki, carlos, carlos_crt) = carlos();
    let enc = testkit::openssl_pipe(
        &["cms", "-encrypt", "-aes256", "-binary", &carlos_crt],
        entity.as_bytes(),
    )
    .unwrap();
    let mut forward =
        b"From: alice@smime.example\r\nTo: carlos@smime.example\r\nSubject: [...]\r\n".to_vec();
    forward.extend_from_slice(&enc);
    let mut store = CertStore::new();
    store.add_anchor(cert("ca.rsa.crt"));
    let shown = present(&forward, &[&carlos], &store, now);
    assert!(shown.status.contains("signature=valid"), "{}", shown.status);
    assert!(
        !shown.status.contains("headers=protected"),
        "fields from outside the signature claimed as protected: {}",
        shown.status
    );
}
