//! What the mail program is shown for one stored message: the S/MIME layers opened (only those
//! that make up the whole message, so nothing nested inside other content is ever spliced into
//! the text), every incoming copy of the status header removed, and envelopd's own status header
//! on top. Pure: the keys, the certificate store and the time are parameters. The IMAP and the
//! POP3 side both show messages through [`present`], so a message looks the same whichever
//! protocol fetches it; [`BoundKey`] and [`learn`] are the reading sides' shared rules for which
//! keys a login opens mail with and what a verified signature teaches.
//!
//! The status header, one line, `;`-separated `name=value` pairs in this order:
//!
//! ```text
//! X-Envelopd: decrypted=aes-256-gcm; signature=valid; signer=alice@example.org
//! X-Envelopd: decrypted=aes-256-gcm; signature=valid; signer=alice@example.org; headers=protected
//! X-Envelopd: decrypted=aes-256-cbc; integrity=none; signature=none
//! X-Envelopd: decrypted=no; signature=from-mismatch; reason="…"; signer=mallory@example.org
//! X-Envelopd: decrypted=no; signature=sender-mismatch; reason="…"; signer=eve@example.org; sender=boss@example.org
//! X-Envelopd: decrypted=failed; reason="no key for this message"; signature=none
//! ```
//!
//! - `decrypted` is the content cipher (`aes-128-gcm`, `aes-256-cbc`, `3des-cbc` …), `no` when
//!   the message was not encrypted, or `failed` (the message is then shown as stored, with
//!   `reason`; also when it is encrypted only for keys the session's login may not use). A
//!   message signed on the outside whose signature cannot be read at all (damaged, more than 8
//!   signers) is `decrypted=no; signature=invalid; reason="…"`, shown as stored.
//!   `integrity=none` follows for CBC ciphers (no integrity protection, Efail-prone), `weak` for
//!   3DES.
//! - `signature` is the one verdict of `certstore::verdict` (the same as `envelopd smime
//!   verify`): `valid` (the text comes from the single From mailbox: every signer verified and
//!   valid for that address, one From mailbox (a From field repeated with the very same mailbox
//!   counts once), no other address in its display name), `sender-mismatch` (valid, but a Sender field names someone else, with `sender`),
//!   `from-mismatch`, `weak` (SHA-1), `invalid`, `untrusted`, `revoked` (each with `reason`) or
//!   `none`. `signer` names the signer's address (`sender` the other sender's), the domain
//!   in A-labels so that a look-alike internationalised domain cannot pass for another.
//! - `headers=protected`: the sender protected the header fields (RFC 9788); the From, To,
//!   Subject … shown are the ones inside the encryption/signature (the provider's copy of an
//!   encrypted message shows `[...]` as Subject), unprotected outer ones are not shown.
//! - `remote-content=blocked` last: the message was decrypted without integrity protection (CBC)
//!   and carries no valid signature, so its HTML may have been altered in transit (Efail CBC
//!   gadgets); every remote reference in its HTML parts was disabled.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::sync::RwLock;
use std::time::SystemTime;

use certstore::verdict::{self, Signed, Verdict};
use certstore::CertStore;
use smime::{mime, Identity, Layer};

/// The name of envelopd's status header field.
pub const STATUS_FIELD: &str = "X-Envelopd";

/// What the client is shown for one message.
#[derive(Debug, Clone)]
pub struct Presentation {
    /// The whole message as the client sees it (CRLF line ends).
    pub message: Vec<u8>,
    /// The status header's value.
    pub status: String,
    /// Certificates from valid signatures, valid for encrypting to the From address, to be kept.
    pub harvest: Vec<(String, smime::Cert)>,
    /// What the sender's client announced (SMIMECapabilities OIDs), from a valid signature.
    pub capabilities: Vec<(String, Vec<String>)>,
    /// The certificate the sender asked to be encrypted to (SMIMEEncryptionKeyPreference), from
    /// a valid signature, when it is among `harvest`.
    pub preferred: Vec<(String, smime::Cert)>,
}

impl Presentation {
    /// A message shown as it is stored, with no status (a plain message).
    pub fn as_stored(message: Vec<u8>) -> Self {
        Presentation {
            message,
            status: String::new(),
            harvest: Vec::new(),
            capabilities: Vec::new(),
            preferred: Vec::new(),
        }
    }

    /// The bytes this presentation holds in memory (what a cache counts): the message, the
    /// status and the certificates learnt.
    pub fn footprint(&self) -> usize {
        self.message.len()
            + self.status.len()
            + self
                .harvest
                .iter()
                .chain(&self.preferred)
                .map(|(a, c)| a.len() + c.der().len())
                .sum::<usize>()
            + self
                .capabilities
                .iter()
                .map(|(a, caps)| a.len() + caps.iter().map(String::len).sum::<usize>())
                .sum::<usize>()
    }
}

/// True when the stored message needs a presentation of its own: its outermost layer is S/MIME,
/// or it carries a status header (which must not reach the client unchecked).
pub fn needs_presentation(content_type: &str, has_status_field: bool) -> bool {
    // Only the media type matters (parameters, comments and case aside); this runs for every
    // message of every folder listing, so no full header parse.
    let media = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    has_status_field
        || matches!(
            media.as_str(),
            "application/pkcs7-mime" | "application/x-pkcs7-mime" | "multipart/signed"
        )
}

/// [`needs_presentation`] for a stored message's header section (the bytes before the empty
/// line, as a POP3 `TOP n 0` returns them).
pub fn header_needs_presentation(header: &[u8]) -> bool {
    let status = mime::fields(header)
        .iter()
        .any(|f| f.name.eq_ignore_ascii_case(STATUS_FIELD));
    needs_presentation(&mime::content_type(header).mime_type, status)
}

/// Opens a stored message for display.
pub fn present(
    stored: &[u8],
    keys: &[&Identity],
    store: &CertStore,
    at: SystemTime,
) -> Presentation {
    present_owned(stored.to_vec(), keys, store, at)
}

/// Like [`present`], taking the stored message: it is let go as soon as it is opened (a 20 MB
/// message is not held beside its opened form), and shown as it is, uncopied, when it cannot be.
pub fn present_owned(
    stored: Vec<u8>,
    keys: &[&Identity],
    store: &CertStore,
    at: SystemTime,
) -> Presentation {
    present_with(stored, keys, || store, at)
}

/// Like [`present_owned`], with the store behind the daemon's lock, which is held only while
/// the signatures are judged: decrypting and verifying run without it (held through them, one
/// session learning a certificate would stop every other session's opening until then).
pub fn present_shared(
    stored: Vec<u8>,
    keys: &[&Identity],
    store: &RwLock<CertStore>,
    at: SystemTime,
) -> Presentation {
    present_with(
        stored,
        keys,
        || store.read().unwrap_or_else(|e| e.into_inner()),
        at,
    )
}

fn present_with<S: std::ops::Deref<Target = CertStore>>(
    stored: Vec<u8>,
    keys: &[&Identity],
    store: impl FnOnce() -> S,
    at: SystemTime,
) -> Presentation {
    let mut parts: Vec<String> = Vec::new();
    let mut harvest = Vec::new();
    let mut capabilities = Vec::new();
    let mut preferred = Vec::new();
    let mut protected_headers = false;
    let started = std::time::Instant::now();
    // Opened in the stored message's own buffer where it can be; a message that cannot be
    // opened comes back unchanged and is shown as it is.
    let opened = smime::message::open_owned(stored, keys);
    net::observe::get().opened(
        match &opened {
            Err(_) => "failed",
            Ok(o) if o.layers.iter().any(|l| matches!(l, Layer::Encrypted(_))) => "decrypted",
            Ok(_) => "signed_only",
        },
        started.elapsed(),
    );
    let (inner, signature) = match opened {
        Ok(opened) => {
            protected_headers = opened.header_protection.is_some();
            // Judged against the originator fields the reader is finally shown.
            let shown = mime::originators(mime::split(&opened.message).header);
            let mut decrypted = None;
            let mut signature: Option<Verdict> = None;
            let store = store();
            let store: &CertStore = &store;
            for layer in &opened.layers {
                match layer {
                    Layer::Encrypted(cipher) => decrypted = Some(*cipher),
                    Layer::Signed(v) => {
                        let signed = Signed::of(v);
                        let verdict = verdict::judge(&signed, &shown, store, at);
                        if verdict.is_valid() {
                            let certs = verdict::harvestable(&verdict, &signed, &shown, store, at);
                            let from = shown
                                .single_from()
                                .map(ToString::to_string)
                                .unwrap_or_default();
                            let pref = v
                                .signers
                                .first()
                                .and_then(|s| s.encryption_key_preference.as_ref());
                            for c in certs {
                                if pref.is_some_and(|isn| c.matches_issuer_serial(isn)) {
                                    preferred.push((from.clone(), c.clone()));
                                }
                                if !harvest.iter().any(|(_, h)| *h == c) {
                                    harvest.push((from.clone(), c));
                                }
                            }
                            if let Some(first) = v.signers.first() {
                                capabilities.push((from, first.capabilities.clone()));
                            }
                        }
                        // Nested signatures: every layer must be valid; the first that is not
                        // is what the reader is told.
                        if signature.as_ref().is_none_or(Verdict::is_valid) {
                            signature = Some(verdict);
                        }
                    }
                }
            }
            match decrypted {
                Some(c) => {
                    parts.push(format!("decrypted={}", c.label().to_ascii_lowercase()));
                    if c.is_weak() {
                        parts.push("weak".into());
                    }
                    if !c.is_aead() {
                        parts.push("integrity=none".into());
                    }
                }
                None => parts.push("decrypted=no".into()),
            }
            (opened.message, signature.unwrap_or_else(Verdict::unsigned))
        }
        // A signature that cannot be read is an invalid one, not a failed decryption, when the
        // message is signed on the outside and nothing was being decrypted.
        Err((e, stored)) if smime::message::signature_unreadable(&stored, &e) => {
            parts.push("decrypted=no".into());
            (stored, Verdict::unreadable(e.to_string()))
        }
        Err((e, stored)) => {
            parts.push("decrypted=failed".into());
            parts.push(format!("reason={}", verdict::quote(&e.to_string())));
            (stored, Verdict::unsigned())
        }
    };
    let signed = signature.is_valid();
    let signature = signature.header_part();
    parts.push(signature);
    if protected_headers {
        parts.push("headers=protected".into());
    }
    let unprotected = parts.iter().any(|p| p == "integrity=none");
    let inner = if unprotected && !signed {
        let (rewritten, changed) = neutralize_html_parts(&to_crlf(&inner), 0);
        if changed {
            parts.push("remote-content=blocked".into());
        }
        rewritten
    } else {
        inner
    };
    let status = parts.join("; ");
    // The opened message in its own buffer: the status header first, every incoming copy of
    // it left out, then the rest as it is. Only the header block is rewritten; a large body is
    // moved by those few bytes, not copied into a second buffer.
    let mut message = match mime::to_crlf(&inner) {
        std::borrow::Cow::Borrowed(_) => inner,
        std::borrow::Cow::Owned(crlf) => crlf,
    };
    let header_len = mime::split(&message).header.len();
    let mut head = format!("{STATUS_FIELD}: {status}\r\n").into_bytes();
    for f in mime::fields(&message[..header_len]) {
        if !f.name.eq_ignore_ascii_case(STATUS_FIELD) {
            head.extend_from_slice(f.raw);
        }
    }
    message.splice(..header_len, head);
    Presentation {
        message,
        status,
        harvest,
        capabilities,
        preferred,
    }
}

/// A private key for decrypting, and the logins that may use it.
pub struct BoundKey {
    /// The identity's addresses.
    pub addresses: Vec<String>,
    /// Further provider logins allowed to use it (a shared practice mailbox's users).
    pub logins: Vec<String>,
    /// The key and its certificate (shared with the SMTP side when it also signs).
    pub identity: std::sync::Arc<Identity>,
}

impl BoundKey {
    /// Whether a session logged in as `login` may decrypt with this key.
    pub fn usable_by(&self, login: &str) -> bool {
        certstore::login_may_use(&self.addresses, &self.logins, login)
    }
}

/// The keys a session logged in as `login` opens mail with ([`certstore::login_may_use`], the
/// rule signing follows too); none before a login.
pub fn keys_for<'a>(keys: &'a [BoundKey], login: Option<&str>) -> Vec<&'a Identity> {
    match login {
        Some(login) => keys
            .iter()
            .filter(|k| k.usable_by(login))
            .map(|k| &*k.identity)
            .collect(),
        None => Vec::new(),
    }
}

/// Keeps what a verified signature taught: the sender's encryption certificate (in the shared
/// store, and in `harvest_dir` if configured, to survive a restart) and their client's
/// capabilities.
pub fn learn(store: &RwLock<CertStore>, harvest_dir: Option<&std::path::Path>, p: &Presentation) {
    if p.harvest.is_empty() && p.capabilities.is_empty() {
        return;
    }
    {
        // Mostly nothing is new (the same correspondents write again): then no write lock is
        // taken, which would stop every other opening of mail while it waits for them.
        let known = store.read().unwrap_or_else(|e| e.into_inner());
        if p.capabilities
            .iter()
            .all(|(a, caps)| known.has_capabilities(a, caps))
            && p.preferred.iter().all(|(a, c)| known.has_preferred(a, c))
            && p.harvest.iter().all(|(_, c)| known.knows(c))
        {
            return;
        }
    }
    let mut store = store.write().unwrap_or_else(|e| e.into_inner());
    for (address, caps) in &p.capabilities {
        store.set_capabilities(address, caps.clone());
    }
    for (address, cert) in &p.preferred {
        store.set_preferred(address, cert.clone());
    }
    for (address, cert) in &p.harvest {
        if store.learn(cert.clone()) {
            tracing::info!(%address, subject = %cert.subject(), "learnt an encryption certificate from verified signed mail");
            if let Some(dir) = harvest_dir {
                let name = format!(
                    "{}-{}.der",
                    address.replace(['/', '\\'], "_"),
                    fingerprint(cert)
                );
                let tmp = dir.join(format!(".{name}.tmp"));
                let saved = std::fs::create_dir_all(dir)
                    .and_then(|_| std::fs::write(&tmp, cert.der()))
                    .and_then(|_| std::fs::rename(&tmp, dir.join(&name)));
                if let Err(e) = saved {
                    tracing::warn!(error = %e, dir = %dir.display(), "could not save a learnt certificate");
                }
            }
        }
    }
}

/// The first 16 hex digits of a certificate's SHA-256 (for file names).
fn fingerprint(cert: &smime::Cert) -> String {
    cert.sha256()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn to_crlf(data: &[u8]) -> Vec<u8> {
    mime::to_crlf(data).into_owned()
}

/// MIME deeper than this is left alone by the HTML rewriting (it then shows no HTML anyway in
/// the clients envelopd serves; the bound keeps the recursion small).
const MAX_HTML_DEPTH: usize = 16;

/// Disables remote references in every `text/html` part (decoded, rewritten, re-encoded as
/// UTF-8 base64); returns the message and whether anything changed.
fn neutralize_html_parts(entity: &[u8], depth: usize) -> (Vec<u8>, bool) {
    let e = mime::split(entity);
    let ct = mime::content_type(e.header);
    if ct.is_multipart() && depth < MAX_HTML_DEPTH {
        let Some(boundary) = ct.param("boundary") else {
            return (entity.to_vec(), false);
        };
        let Ok(children) = mime::split_multipart(e.body, boundary) else {
            return (entity.to_vec(), false);
        };
        let parts: Vec<(Vec<u8>, bool)> = children
            .into_iter()
            .map(|child| neutralize_html_parts(child, depth + 1))
            .collect();
        if !parts.iter().any(|(_, changed)| *changed) {
            return (entity.to_vec(), false);
        }
        let parts: Vec<&[u8]> = parts.iter().map(|(p, _)| p.as_slice()).collect();
        let head = &entity[..entity.len() - e.body.len()];
        return (mime::join_multipart(head, boundary, &parts), true);
    }
    if ct.mime_type != "text/html" {
        return (entity.to_vec(), false);
    }
    let Some(parsed) = mail_parser::MessageParser::default().parse(entity) else {
        return (entity.to_vec(), false);
    };
    let Some(html) = parsed.body_html(0) else {
        return (entity.to_vec(), false);
    };
    let (safe, changed) = block_remote_references(&html);
    if !changed {
        return (entity.to_vec(), false);
    }
    let mut out = mime::select_fields(e.header, |name| {
        name != "content-type" && name != "content-transfer-encoding"
    });
    out.extend_from_slice(
        b"Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n",
    );
    out.extend_from_slice(&mime::base64_lines(safe.as_bytes()));
    (out, true)
}

/// Rewrites `http:`, `https:` and protocol-relative `//` references so no client loads them.
pub fn block_remote_references(html: &str) -> (String, bool) {
    let lower = html.to_ascii_lowercase();
    let mut out = String::with_capacity(html.len() + 64);
    let mut last = 0;
    let mut i = 0;
    let bytes = lower.as_bytes();
    while i < bytes.len() {
        let rest = &lower[i..];
        let scheme = rest.starts_with("http:") || rest.starts_with("https:");
        let relative = rest.starts_with("//")
            && i > 0
            && matches!(bytes[i - 1], b'=' | b'"' | b'\'' | b'(' | b' ');
        if scheme || relative {
            out.push_str(&html[last..i]);
            out.push_str("blocked-by-envelopd:");
            last = i;
            i += 2;
            continue;
        }
        i += 1;
    }
    if last == 0 {
        return (html.to_string(), false);
    }
    out.push_str(&html[last..]);
    (out, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_messages_get_a_shown_form() {
        assert!(needs_presentation(
            "application/pkcs7-mime; smime-type=enveloped-data",
            false
        ));
        assert!(needs_presentation("Application/X-PKCS7-MIME", false));
        assert!(needs_presentation(
            " multipart/signed; protocol=\"application/pkcs7-signature\"",
            false
        ));
        assert!(!needs_presentation("multipart/mixed; boundary=x", false));
        assert!(!needs_presentation(
            "text/plain; name=\"application/pkcs7-mime\"",
            false
        ));
        assert!(!needs_presentation("", false));
        assert!(needs_presentation("text/plain", true));
        assert!(header_needs_presentation(
            b"From: a@x\r\nContent-Type: application/pkcs7-mime;\r\n smime-type=enveloped-data\r\n\r\n"
        ));
        assert!(header_needs_presentation(b"x-envelopd: decrypted=no\r\n"));
        assert!(!header_needs_presentation(
            b"Subject: Content-Type: application/pkcs7-mime\r\n\r\n"
        ));
        assert!(!header_needs_presentation(b""));
    }

    #[test]
    fn the_status_goes_first_and_forged_ones_go_in_the_messages_own_buffer() {
        let store = CertStore::new();
        let shared = RwLock::new(CertStore::new());
        let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000);
        let forged = format!(
            "{STATUS_FIELD}: decrypted=aes-256-gcm; signature=valid\r\nFrom: a@b\r\nx-envelopd: signature=valid\r\nSubject: s\r\n\r\nbody {STATUS_FIELD}: stays\r\n"
        );
        for (stored, header, body) in [
            (
                forged.as_str(),
                "From: a@b\r\nSubject: s\r\n",
                "\r\nbody X-Envelopd: stays\r\n",
            ),
            // Bare LF becomes CRLF; a message without a header block gets only the status.
            (
                "From: a@b\nSubject: s\n\nline\n",
                "From: a@b\r\nSubject: s\r\n",
                "\r\nline\r\n",
            ),
            ("\r\nno header\r\n", "", "\r\nno header\r\n"),
        ] {
            let owned = present_owned(stored.as_bytes().to_vec(), &[], &store, at);
            let via_lock = present_shared(stored.as_bytes().to_vec(), &[], &shared, at);
            assert_eq!(owned.message, via_lock.message);
            assert_eq!(owned.status, via_lock.status);
            let want = format!("{STATUS_FIELD}: {}\r\n{header}{body}", owned.status);
            assert_eq!(String::from_utf8(owned.message).unwrap(), want);
            assert!(!owned.status.contains("valid"), "{}", owned.status);
        }
    }

    /// A signature that cannot be read is an invalid signature on a message that was not
    /// encrypted; an envelope that cannot be opened is a failed decryption.
    #[test]
    fn unreadable_signatures_are_invalid_and_unopenable_envelopes_failed() {
        let store = CertStore::new();
        let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000);
        let shown = |m: &str| present_owned(m.as_bytes().to_vec(), &[], &store, at).status;
        let clear = "From: a@b\r\nContent-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; micalg=sha-256; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n--b\r\nContent-Type: application/pkcs7-signature\r\nContent-Transfer-Encoding: base64\r\n\r\nMAMCAQA=\r\n--b--\r\n";
        let opaque = "From: a@b\r\nContent-Type: application/pkcs7-mime; smime-type=signed-data\r\nContent-Transfer-Encoding: base64\r\n\r\nMAMCAQA=\r\n";
        for m in [clear, opaque] {
            let status = shown(m);
            assert!(
                status.starts_with("decrypted=no; signature=invalid; reason=\"malformed"),
                "{status}"
            );
        }
        let enveloped = opaque.replace("signed-data", "enveloped-data");
        let status = shown(&enveloped);
        assert!(
            status.starts_with("decrypted=failed; reason=") && status.ends_with("signature=none"),
            "{status}"
        );
    }

    #[test]
    fn remote_references_are_blocked_but_text_stays() {
        let (out, changed) = block_remote_references(
            "<img src=\"http://evil.example/x?\"><a href='HTTPS://x'>t</a><div style=\"background:url(//e/x)\">secret</div>",
        );
        assert!(changed);
        assert!(!out.to_ascii_lowercase().contains("src=\"http"), "{out}");
        assert!(!out.to_ascii_lowercase().contains("href='https"), "{out}");
        assert!(!out.contains("url(//"), "{out}");
        assert!(out.contains("secret"));
        assert_eq!(
            block_remote_references("<p>plain</p>"),
            ("<p>plain</p>".into(), false)
        );
    }

    #[test]
    fn only_html_parts_are_rewritten() {
        let msg = b"Content-Type: multipart/alternative; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nsee http://x\r\n--b\r\nContent-Type: text/html\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n<img src=3D\"http://evil/\">\r\n--b--\r\n";
        let (out, changed) = neutralize_html_parts(msg, 0);
        assert!(changed);
        let text = String::from_utf8_lossy(&out);
        assert!(
            text.contains("see http://x"),
            "plain text is not HTML: {text}"
        );
        let parsed = mail_parser::MessageParser::default()
            .parse(&out[..])
            .unwrap();
        let html = parsed.body_html(0).unwrap();
        assert!(
            html.contains("blocked-by-envelopd:") && !html.contains("\"http"),
            "{html}"
        );
    }
}
