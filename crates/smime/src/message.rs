//! Whole-message S/MIME (RFC 8551): wraps a mail message's content in `multipart/signed` or
//! `application/pkcs7-mime`, and unwraps received ones layer by layer.
//!
//! Routing fields (From, To, Subject, Date …) stay outside the S/MIME layers; the `Content-*`
//! fields and the body go inside. Only an S/MIME structure that is the whole message is opened:
//! S/MIME parts nested inside other content are left alone (Efail, RFC 9787).

use crate::alg::ContentCipher;
use crate::cert::Cert;
use crate::envelope::{self, EncryptOptions};
use crate::hp::{self, Declared, Protection};
use crate::keys::Identity;
use crate::mime::{self, ContentType};
use crate::signed::{self, SignOptions, SignerReport};
use crate::Error;

/// The most S/MIME layers opened in one message (signed inside encrypted inside signed …).
pub const MAX_LAYERS: usize = 4;

/// A fresh random MIME boundary (its absence from the content is checked after writing).
fn random_boundary() -> Result<String, Error> {
    let mut r = [0u8; 12];
    aws_lc_rs::rand::fill(&mut r).map_err(|_| Error::Key("no system randomness".into()))?;
    Ok(format!(
        "----=_envelopd_{}",
        r.iter().map(|x| format!("{x:02x}")).collect::<String>()
    ))
}

/// The start of a `multipart/signed` entity, up to its first part.
fn signed_prefix(boundary: &str, digest: crate::alg::Digest) -> String {
    format!(
        "Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\";\r\n micalg={}; boundary=\"{boundary}\"\r\n\r\nThis is a cryptographically signed message in MIME format.\r\n\r\n--{boundary}\r\n",
        digest.micalg()
    )
}

/// The end of a `multipart/signed` entity: the signature part and the closing delimiter.
fn signed_suffix(boundary: &str, signature: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "\r\n--{boundary}\r\nContent-Type: application/pkcs7-signature; name=\"smime.p7s\"\r\nContent-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=\"smime.p7s\"\r\nContent-Description: S/MIME Cryptographic Signature\r\n\r\n"
    )
    .into_bytes();
    mime::append_base64_lines(signature, &mut out);
    out.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    out
}

/// Appends the `multipart/signed` entity for the payload `header` + `body` to `out`. The
/// canonical content is written once, straight into `out`, and hashed there: no intermediate
/// copy of a large message.
fn sign_entity_into(
    header: &[u8],
    body: &[u8],
    id: &Identity,
    opts: &SignOptions,
    out: &mut Vec<u8>,
) -> Result<(), Error> {
    let digest = opts.digest.unwrap_or_else(|| id.key.default_digest());
    let mark = out.len();
    for _ in 0..4 {
        out.truncate(mark);
        let b = random_boundary()?;
        out.extend_from_slice(signed_prefix(&b, digest).as_bytes());
        let start = out.len();
        mime::canonicalize_into(header, body, out, 0)?;
        let content = &out[start..];
        if memchr::memmem::find(content, b.as_bytes()).is_some() {
            continue; // the content happens to contain the boundary: pick another
        }
        let sig = signed::sign_detached(content, id, opts)?;
        out.extend_from_slice(&signed_suffix(&b, &sig));
        return Ok(());
    }
    Err(Error::Mime("cannot find a free MIME boundary".into()))
}

/// Signs a message: `multipart/signed` with a detached `application/pkcs7-signature`.
pub fn sign(message: &[u8], id: &Identity, opts: &SignOptions) -> Result<Vec<u8>, Error> {
    // What `Prepared::new(.., Protection::Off)` + `to_message` make, written straight into the
    // one output buffer: the content is copied once (a 16 MiB message used to be copied three
    // times, each into freshly faulted-in memory).
    let e = mime::split(message);
    let outer = mime::select_fields(e.header, |n| !mime::is_content_field(n) && n != "bcc");
    let header = hp::payload_content_fields(e.header, e.body);
    let mut out = Vec::with_capacity(outer.len() + message.len() + message.len() / 16 + 8192);
    out.extend_from_slice(&outer);
    out.extend_from_slice(b"MIME-Version: 1.0\r\n");
    sign_entity_into(&header, e.body, id, opts, &mut out)?;
    Ok(out)
}

/// Encrypts a message for the recipients: `application/pkcs7-mime` with `enveloped-data`
/// (CBC) or `authEnveloped-data` (GCM).
pub fn encrypt(
    message: &[u8],
    recipients: &[Cert],
    opts: &EncryptOptions,
) -> Result<Vec<u8>, Error> {
    let (outer, entity) = entity_to_encrypt(message)?;
    encrypt_entity(&outer, entity, recipients, opts)
}

/// Like [`encrypt`], but takes the message and reuses its buffer for the encryption where
/// the content needs no re-encoding, so a large message is held about once, then the output.
pub fn encrypt_owned(
    message: Vec<u8>,
    recipients: &[Cert],
    opts: &EncryptOptions,
) -> Result<Vec<u8>, Error> {
    Ok(encrypt_message(message, recipients, opts)?.to_vec())
}

/// Encrypts like [`encrypt_owned`] and returns the result in pieces, to be written out
/// ([`EncryptedMessage::write_to`]) without ever holding the whole base64 text: the message's
/// own buffer becomes the ciphertext, so a large message is held about once in all.
pub fn encrypt_message(
    mut message: Vec<u8>,
    recipients: &[Cert],
    opts: &EncryptOptions,
) -> Result<EncryptedMessage, Error> {
    let (outer, entity) = match entity_in_place(&mut message)? {
        Some(outer) => (outer, message),
        None => {
            let (outer, entity) = entity_to_encrypt(&message)?;
            drop(message);
            (outer, entity)
        }
    };
    let der = envelope::encrypt_parts(entity, recipients, opts)?;
    Ok(EncryptedMessage {
        head: encrypted_head(&outer, opts),
        der,
    })
}

/// When the body of a single-part message is already canonical (CRLF, 7-bit or base64/QP),
/// turns `message` into the inner entity in place (its content fields, then the body) and
/// returns the outer fields; `None` when the content must be re-encoded (then nothing changed).
fn entity_in_place(message: &mut Vec<u8>) -> Result<Option<Vec<u8>>, Error> {
    let Some((outer, head, header_len)) = canonical_single_part(message) else {
        return Ok(None);
    };
    message.splice(..header_len, head);
    Ok(Some(outer))
}

/// For a single-part message whose body canonicalising would leave unchanged: its outer
/// fields, what canonicalising writes before the body (the content fields and the blank line),
/// and the length of its header block. `None` otherwise.
fn canonical_single_part(message: &[u8]) -> Option<(Vec<u8>, Vec<u8>, usize)> {
    let e = mime::split(message);
    let header = hp::payload_content_fields(e.header, e.body);
    // The same decisions as `mime::canonicalize_into` for this header and body.
    let ct = mime::content_type(&header);
    if ct.is_multipart() || !matches!(mime::to_crlf(e.body), std::borrow::Cow::Borrowed(_)) {
        return None;
    }
    let re_encoded = match ct.transfer_encoding.as_str() {
        "base64" | "quoted-printable" => false,
        _ => !mime::is_7bit_safe(e.body),
    };
    if re_encoded {
        return None;
    }
    let mut head = mime::to_crlf(&header).into_owned();
    if !header.is_empty() || !e.body.is_empty() {
        head.extend_from_slice(b"\r\n");
    }
    Some((
        mime::outer_fields(e.header),
        head,
        message.len() - e.body.len(),
    ))
}

/// Signs, then encrypts, like [`sign_and_encrypt`], taking the message by value: when its body
/// is already canonical, the message's own buffer becomes the signed entity and then the
/// ciphertext, so a large message is held about once; the result is written out in pieces
/// ([`EncryptedMessage::write_to`]).
pub fn sign_and_encrypt_message(
    mut message: Vec<u8>,
    id: &Identity,
    sign_opts: &SignOptions,
    recipients: &[Cert],
    enc_opts: &EncryptOptions,
) -> Result<EncryptedMessage, Error> {
    let head = |outer: &[u8]| encrypted_head(outer, enc_opts);
    let Some((outer, content_head, header_len)) = canonical_single_part(&message) else {
        let (outer, entity) = signed_entity(&message, id, sign_opts)?;
        drop(message);
        let der = envelope::encrypt_parts(entity, recipients, enc_opts)?;
        return Ok(EncryptedMessage {
            head: head(&outer),
            der,
        });
    };
    let digest = sign_opts.digest.unwrap_or_else(|| id.key.default_digest());
    let mut boundary = random_boundary()?;
    let wrapper = signed_prefix(&boundary, digest);
    let start = wrapper.len();
    message.splice(..header_len, [wrapper.into_bytes(), content_head].concat());
    let mut tries = 1;
    while memchr::memmem::find(&message[start..], boundary.as_bytes()).is_some() {
        // The content happens to contain the boundary: another one of the same length.
        if tries == 4 {
            return Err(Error::Mime("cannot find a free MIME boundary".into()));
        }
        boundary = random_boundary()?;
        message[..start].copy_from_slice(signed_prefix(&boundary, digest).as_bytes());
        tries += 1;
    }
    let sig = signed::sign_detached(&message[start..], id, sign_opts)?;
    message.extend_from_slice(&signed_suffix(&boundary, &sig));
    let der = envelope::encrypt_parts(message, recipients, enc_opts)?;
    Ok(EncryptedMessage {
        head: head(&outer),
        der,
    })
}

/// An encrypted message: its header block and the envelope's DER, base64-encoded on the way out.
#[derive(Debug)]
pub struct EncryptedMessage {
    head: Vec<u8>,
    der: envelope::EnvelopeDer,
}

impl EncryptedMessage {
    /// The whole message as one buffer.
    pub fn to_vec(&self) -> Vec<u8> {
        let der_len = self.der.prefix.len() + self.der.ciphertext.len() + self.der.suffix.len();
        let mut out = Vec::with_capacity(self.head.len() + mime::base64_lines_len(der_len));
        out.extend_from_slice(&self.head);
        mime::append_base64_lines_chain(
            &[&self.der.prefix, &self.der.ciphertext, &self.der.suffix],
            &mut out,
        );
        out
    }

    /// Writes the message to `w`, encoding the DER in pieces of 64 KiB of text.
    pub fn write_to(&self, w: &mut impl std::io::Write) -> std::io::Result<()> {
        const WINDOW: usize = 57 * 1024;
        w.write_all(&self.head)?;
        let parts: [&[u8]; 3] = [&self.der.prefix, &self.der.ciphertext, &self.der.suffix];
        let mut window = Vec::with_capacity(WINDOW);
        let mut text = Vec::with_capacity(mime::base64_lines_len(WINDOW));
        for part in parts {
            let mut rest = part;
            while !rest.is_empty() {
                let take = (WINDOW - window.len()).min(rest.len());
                window.extend_from_slice(&rest[..take]);
                rest = &rest[take..];
                if window.len() == WINDOW {
                    text.clear();
                    mime::append_base64_lines(&window, &mut text);
                    w.write_all(&text)?;
                    window.clear();
                }
            }
        }
        text.clear();
        mime::append_base64_lines(&window, &mut text);
        w.write_all(&text)
    }
}

/// The outer fields and the canonical inner entity of a message about to be encrypted.
fn entity_to_encrypt(message: &[u8]) -> Result<(Vec<u8>, Vec<u8>), Error> {
    let e = mime::split(message);
    let header = hp::payload_content_fields(e.header, e.body);
    let mut entity = Vec::with_capacity(message.len() + message.len() / 16 + 64);
    mime::canonicalize_into(&header, e.body, &mut entity, 0)?;
    Ok((mime::outer_fields(e.header), entity))
}

/// Signs, then encrypts (the order RFC 8551 §3.7 recommends): the signed entity is built once and
/// encrypted in place, rather than written out as a message and parsed again.
pub fn sign_and_encrypt(
    message: &[u8],
    id: &Identity,
    sign_opts: &SignOptions,
    recipients: &[Cert],
    enc_opts: &EncryptOptions,
) -> Result<Vec<u8>, Error> {
    let (outer, entity) = signed_entity(message, id, sign_opts)?;
    encrypt_entity(&outer, entity, recipients, enc_opts)
}

/// The outer fields of a message and its signed inner entity, written into a new buffer.
fn signed_entity(
    message: &[u8],
    id: &Identity,
    sign_opts: &SignOptions,
) -> Result<(Vec<u8>, Vec<u8>), Error> {
    let mut entity = Vec::with_capacity(message.len() + message.len() / 16 + 8192);
    let e = mime::split(message);
    let header = hp::payload_content_fields(e.header, e.body);
    sign_entity_into(&header, e.body, id, sign_opts, &mut entity)?;
    Ok((mime::outer_fields(e.header), entity))
}

/// A message prepared for one or more protected copies: its outer routing fields (without Bcc)
/// and its inner entity, signed once if a signer is given. Each copy is then encrypted from it,
/// so a message to several separately encrypted groups is signed only once. With header
/// protection ([`Protection::Cipher`]) the payload carries the header fields and the outer
/// Subject is `[...]`.
#[derive(Debug, Clone)]
pub struct Prepared {
    outer: Vec<u8>,
    entity: Vec<u8>,
}

impl Prepared {
    /// Protects the header fields as asked, canonicalises the content and signs it with
    /// `signer`, if given.
    pub fn new(
        message: &[u8],
        signer: Option<(&Identity, &SignOptions)>,
        protection: Protection,
    ) -> Result<Self, Error> {
        let p = hp::protect(message, protection);
        let mut entity = Vec::with_capacity(message.len() + message.len() / 16 + 8192);
        match signer {
            Some((id, opts)) => sign_entity_into(&p.header, &p.body, id, opts, &mut entity)?,
            None => mime::canonicalize_into(&p.header, &p.body, &mut entity, 0)?,
        }
        Ok(Prepared {
            outer: p.outer,
            entity,
        })
    }

    /// Prepares the sender's own copy (Sent, Drafts): unsigned, and Bcc kept (inside the
    /// payload when headers are protected), since only the sender can read it.
    pub fn own_copy(message: &[u8], protection: Protection) -> Result<Self, Error> {
        let p = hp::protect_with(message, protection, true);
        let mut entity = Vec::with_capacity(message.len() + message.len() / 16 + 64);
        mime::canonicalize_into(&p.header, &p.body, &mut entity, 0)?;
        Ok(Prepared {
            outer: p.outer,
            entity,
        })
    }

    /// The whole message: outer fields, MIME-Version and the entity.
    pub fn to_message(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.outer.len() + self.entity.len() + 32);
        out.extend_from_slice(&self.outer);
        out.extend_from_slice(b"MIME-Version: 1.0\r\n");
        out.extend_from_slice(&self.entity);
        out
    }

    /// An encrypted copy for `recipients`.
    pub fn encrypt(&self, recipients: &[Cert], opts: &EncryptOptions) -> Result<Vec<u8>, Error> {
        encrypt_entity(&self.outer, self.entity.clone(), recipients, opts)
    }

    /// Like [`Prepared::encrypt`] for the last copy: the entity's buffer becomes the
    /// ciphertext instead of being copied first.
    pub fn into_encrypted(
        self,
        recipients: &[Cert],
        opts: &EncryptOptions,
    ) -> Result<Vec<u8>, Error> {
        encrypt_entity(&self.outer, self.entity, recipients, opts)
    }
}

fn encrypt_entity(
    outer: &[u8],
    entity: Vec<u8>,
    recipients: &[Cert],
    opts: &EncryptOptions,
) -> Result<Vec<u8>, Error> {
    let der = envelope::encrypt_parts(entity, recipients, opts)?;
    Ok(EncryptedMessage {
        head: encrypted_head(outer, opts),
        der,
    }
    .to_vec())
}

/// The header block of an encrypted message: the outer fields and the S/MIME content fields.
fn encrypted_head(outer: &[u8], opts: &EncryptOptions) -> Vec<u8> {
    let smime_type = if opts.cipher.is_aead() {
        "authEnveloped-data"
    } else {
        "enveloped-data"
    };
    let mut head = outer.to_vec();
    head.extend_from_slice(
        format!(
            "MIME-Version: 1.0\r\nContent-Type: application/pkcs7-mime; smime-type={smime_type}; name=\"smime.p7m\"\r\nContent-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=\"smime.p7m\"\r\nContent-Description: S/MIME Encrypted Message\r\n\r\n"
        )
        .as_bytes(),
    );
    head
}

/// What kind of S/MIME structure a message's outermost layer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `multipart/signed` with a PKCS#7 signature.
    ClearSigned,
    /// `application/pkcs7-mime` (enveloped, authEnveloped or opaque signed data).
    Pkcs7Mime,
    /// Not S/MIME at its outermost layer.
    Plain,
}

/// Classifies a message by its top-level Content-Type.
pub fn kind(message: &[u8]) -> Kind {
    let e = mime::split(message);
    classify(&mime::content_type(e.header))
}

/// Whether `error`, from opening or verifying `message`, means a signature that could not be
/// read at all (damaged, more than 8 signers, not a signature inside): the message is signed
/// on its outside and the failure is no decryption's (no key of ours, a key that failed, a
/// content key that did not open the content). The reading sides show such a message
/// `signature=invalid`, and `envelopd smime verify` says the same.
pub fn signature_unreadable(message: &[u8], error: &Error) -> bool {
    !matches!(
        error,
        Error::DecryptFailed | Error::NoRecipient(_) | Error::Key(_)
    ) && is_signed_outside(message)
}

/// Whether a message is signed on its outside: clear-signed, or opaque signed data
/// (`smime-type=signed-data`).
fn is_signed_outside(message: &[u8]) -> bool {
    let e = mime::split(message);
    let ct = mime::content_type(e.header);
    match classify(&ct) {
        Kind::ClearSigned => true,
        Kind::Pkcs7Mime => ct
            .param("smime-type")
            .is_some_and(|t| t.eq_ignore_ascii_case("signed-data")),
        Kind::Plain => false,
    }
}

fn classify(ct: &ContentType) -> Kind {
    match ct.mime_type.as_str() {
        "multipart/signed" => {
            let proto = ct.param("protocol").unwrap_or("").to_ascii_lowercase();
            if proto.is_empty() || proto.ends_with("pkcs7-signature") {
                Kind::ClearSigned
            } else {
                Kind::Plain
            }
        }
        "application/pkcs7-mime" | "application/x-pkcs7-mime" => Kind::Pkcs7Mime,
        "application/octet-stream"
            if ct
                .param("name")
                .is_some_and(|n| n.to_ascii_lowercase().ends_with(".p7m")) =>
        {
            Kind::Pkcs7Mime
        }
        _ => Kind::Plain,
    }
}

/// Decodes the body of a part according to its transfer encoding.
fn decode_body(ct: &ContentType, body: &[u8]) -> Result<Vec<u8>, Error> {
    match ct.transfer_encoding.as_str() {
        "base64" => mime::base64_decode(body),
        "7bit" | "8bit" | "binary" => Ok(body.to_vec()),
        other => Err(Error::Mime(format!(
            "S/MIME body in unsupported transfer encoding \"{other}\""
        ))),
    }
}

/// Rebuilds a message from the outer fields of `wrapper` and a decrypted/verified inner entity.
/// When the inner entity declares header protection (RFC 9788 `hp`), its header fields are the
/// message's: the outer user-facing fields are dropped, not merged ([`hp`]).
/// Like [`rewrap`], in the decrypted content's own buffer when nothing inside must change
/// (CRLF already, no header protection to undo): the outer fields are put in front of it.
fn rewrap_owned(wrapper_header: &[u8], inner: Vec<u8>) -> (Vec<u8>, Option<Declared>) {
    let (m, declared, _) = rewrap_undoable(wrapper_header, inner);
    (m, declared)
}

/// How [`rewrap_undoable`] made the message: fields put in front of the content (this many
/// bytes), or a new buffer beside the content, which is kept.
enum Rewrapped {
    Prefixed(usize),
    Copied(Vec<u8>),
}

/// [`rewrap_owned`], and how to get the content back from its result.
fn rewrap_undoable(
    wrapper_header: &[u8],
    mut inner: Vec<u8>,
) -> (Vec<u8>, Option<Declared>, Rewrapped) {
    let canonical = matches!(mime::to_crlf(&inner), std::borrow::Cow::Borrowed(_));
    if !canonical || hp::declared(mime::split(&inner).header).is_some() {
        let (m, declared) = rewrap(wrapper_header, &inner);
        return (m, declared, Rewrapped::Copied(inner));
    }
    let prefix = wrapping(mime::outer_fields(wrapper_header), &inner);
    let n = prefix.len();
    inner.splice(0..0, prefix);
    (inner, None, Rewrapped::Prefixed(n))
}

impl Rewrapped {
    /// The content `message` was made from.
    fn undo(self, mut message: Vec<u8>) -> Vec<u8> {
        match self {
            Rewrapped::Prefixed(n) => {
                message.drain(..n);
                message
            }
            Rewrapped::Copied(inner) => inner,
        }
    }
}

/// What goes in front of an unwrapped entity: the `outer` fields, MIME-Version unless the
/// entity has its own, and the empty line when the entity has no header block.
fn wrapping(mut outer: Vec<u8>, inner: &[u8]) -> Vec<u8> {
    let inner_fields = mime::fields(mime::split(inner).header);
    if !inner_fields.iter().any(|f| f.name == "mime-version") {
        outer.extend_from_slice(b"MIME-Version: 1.0\r\n");
    }
    if inner_fields.is_empty() && !inner.starts_with(b"\r\n") {
        outer.extend_from_slice(b"\r\n");
    }
    outer
}

fn rewrap(wrapper_header: &[u8], inner: &[u8]) -> (Vec<u8>, Option<Declared>) {
    let inner = mime::to_crlf(inner);
    let inner_header = mime::split(&inner).header;
    let declared = hp::declared(inner_header);
    let (outer, inner) = match declared {
        Some(_) => (
            hp::outer_fields_beside(wrapper_header, inner_header),
            std::borrow::Cow::Owned(hp::unprotect_payload(&inner)),
        ),
        None => (mime::outer_fields(wrapper_header), inner),
    };
    let mut out = wrapping(outer, &inner);
    out.reserve_exact(inner.len());
    out.extend_from_slice(&inner);
    (out, declared)
}

/// The verification result for a signed message.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The message with the signature layer removed (outer fields + signed entity).
    pub message: Vec<u8>,
    /// One report per signer (the signature itself; trust is the certificate store's verdict).
    pub signers: Vec<SignerReport>,
    /// Every certificate the signature carried.
    pub certificates: Vec<Cert>,
    /// Every CRL the signature carried (DER; not checked here: the certificate store does).
    pub crls: Vec<Vec<u8>>,
    /// The originator fields (From, Sender) of `message` as a reader is shown them: the
    /// protected ones when the signed content declares header protection.
    pub originators: mime::Originators,
    /// The header protection the signed content declared (RFC 9788), if any.
    pub header_protection: Option<Declared>,
}

impl Verified {
    /// True when there is at least one signer and every signature checks out (not whether the
    /// signers are trusted: see `certstore::verdict`).
    pub fn is_valid(&self) -> bool {
        !self.signers.is_empty() && self.signers.iter().all(SignerReport::is_valid)
    }
}

/// Verifies a signed message (clear-signed `multipart/signed` or opaque `signed-data`).
pub fn verify(message: &[u8]) -> Result<Verified, Error> {
    verify_as(message, true)
}

/// Like [`verify`], taking the message: a clear-signed message whose signed part needs no
/// change (CRLF, no header protection) loses its signature layer in its own buffer, so a large
/// message is not held twice.
pub fn verify_owned(message: Vec<u8>) -> Result<Verified, Error> {
    verify_owned_or_back(message).map_err(|(e, _)| e)
}

/// [`verify_owned`], giving the message back unchanged when it cannot be verified (every
/// failure comes before the buffer is changed).
fn verify_owned_or_back(message: Vec<u8>) -> Result<Verified, (Error, Vec<u8>)> {
    match clear_signed_in_place(&message) {
        Some(found) => verify_found(message, found),
        None => verify(&message).map_err(|e| (e, message)),
    }
}

/// [`verify_owned_or_back`] for a message whose parts [`clear_signed_in_place`] found.
fn verify_found(
    mut message: Vec<u8>,
    (signed, header_len, signature): ClearSignedParts,
) -> Result<Verified, (Error, Vec<u8>)> {
    // The parts found just now, the signed one already known to be CRLF: not searched for and
    // checked a second time (each pass over a 20 MB part costs 2-3 ms).
    let verified = verify_clear_signed(
        &message[..header_len],
        std::borrow::Cow::Borrowed(&message[signed.clone()]),
        &message[signature],
        false,
    );
    let mut v = match verified {
        Ok(v) => v,
        Err(e) => return Err((e, message)),
    };
    let prefix = wrapping(
        mime::outer_fields(&message[..header_len]),
        &message[signed.clone()],
    );
    message.truncate(signed.end);
    message.splice(..signed.start, prefix);
    v.originators = mime::originators(mime::split(&message).header);
    v.message = message;
    Ok(v)
}

/// Where a clear-signed message's signed part lies, its header block's length, and where its
/// signature part lies.
type ClearSignedParts = (std::ops::Range<usize>, usize, std::ops::Range<usize>);

/// Where the signed part of a clear-signed message lies, its header block's length and where
/// the signature part lies, when taking the signature layer off needs no change inside the
/// signed part.
fn clear_signed_in_place(message: &[u8]) -> Option<ClearSignedParts> {
    let e = mime::split(message);
    let ct = mime::content_type(e.header);
    if classify(&ct) != Kind::ClearSigned {
        return None;
    }
    let parts = mime::split_multipart(e.body, ct.param("boundary")?).ok()?;
    let [signed, signature] = parts.as_slice() else {
        return None;
    };
    if !matches!(mime::to_crlf(signed), std::borrow::Cow::Borrowed(_))
        || hp::declared(mime::split(signed).header).is_some()
    {
        return None;
    }
    let at = |part: &[u8]| {
        let start = part.as_ptr() as usize - message.as_ptr() as usize;
        start..start + part.len()
    };
    Some((at(signed), e.header.len(), at(signature)))
}

/// [`verify`]; with `take_off` false the signature layer is left on (`message` empty).
fn verify_as(message: &[u8], take_off: bool) -> Result<Verified, Error> {
    let e = mime::split(message);
    let ct = mime::content_type(e.header);
    let (ci, detached) = match classify(&ct) {
        Kind::ClearSigned => {
            let boundary = ct
                .param("boundary")
                .ok_or_else(|| Error::Mime("multipart/signed without a boundary".into()))?;
            let parts = mime::split_multipart(e.body, boundary)?;
            if parts.len() != 2 {
                return Err(Error::Mime(format!(
                    "multipart/signed must have 2 parts, this one has {}",
                    parts.len()
                )));
            }
            // Mail stored with bare LF line ends is verified in its canonical CRLF form.
            return verify_clear_signed(e.header, mime::to_crlf(parts[0]), parts[1], take_off);
        }
        Kind::Pkcs7Mime => (
            signed::parse_content_info(&decode_body(&ct, e.body)?)?,
            None,
        ),
        Kind::Plain => {
            return Err(Error::NotSmime(format!(
                "the message is {}, not S/MIME signed",
                ct.mime_type
            )))
        }
    };
    verified(e.header, ci, detached, take_off)
}

/// Verifies a clear-signed message's two parts under its header block: `signed` (in its CRLF
/// form) against the signature in `signature_part`.
fn verify_clear_signed(
    header: &[u8],
    signed: std::borrow::Cow<'_, [u8]>,
    signature_part: &[u8],
    take_off: bool,
) -> Result<Verified, Error> {
    let sig_part = mime::split(signature_part);
    let sig_ct = mime::content_type(sig_part.header);
    if !sig_ct.mime_type.ends_with("pkcs7-signature") {
        return Err(Error::Mime(format!(
            "the signature part is {}, not application/pkcs7-signature",
            sig_ct.mime_type
        )));
    }
    let der = decode_body(&sig_ct, sig_part.body)?;
    verified(
        header,
        signed::parse_content_info(&der)?,
        Some(signed),
        take_off,
    )
}

/// Verifies opaque signed data already decoded to DER, under the header block it came with
/// (the message it came from is not needed any more).
fn verify_der(header: &[u8], der: &[u8]) -> Result<Verified, Error> {
    verified(header, signed::parse_content_info(der)?, None, true)
}

/// Verifies a parsed signature (over `detached`, or its own content) and takes the signature
/// layer off under `header`.
fn verified(
    header: &[u8],
    ci: cms::content_info::ContentInfo,
    detached: Option<std::borrow::Cow<'_, [u8]>>,
    take_off: bool,
) -> Result<Verified, Error> {
    let mut v = signed::verify_cms(&ci, detached.as_deref())?;
    drop(ci);
    let detached = if take_off { detached } else { None };
    if !take_off {
        v.content = None;
    }
    // A clear-signed message shows its visible part, whatever else the signature embeds (its
    // signers are then invalid: verify_cms says why).
    let inner: std::borrow::Cow<'_, [u8]> = match (v.content.take(), detached) {
        (_, Some(d)) => d,
        // Encapsulated content already in CRLF is used as it is, not copied.
        (Some(encapsulated), None) => match mime::to_crlf(&encapsulated) {
            std::borrow::Cow::Borrowed(_) => std::borrow::Cow::Owned(encapsulated),
            std::borrow::Cow::Owned(crlf) => std::borrow::Cow::Owned(crlf),
        },
        (None, None) if !take_off => std::borrow::Cow::Borrowed(&[][..]),
        (None, None) => return Err(Error::Malformed("signature without content".into())),
    };
    let (message, header_protection) = match inner {
        _ if !take_off => (Vec::new(), None),
        std::borrow::Cow::Owned(inner) => rewrap_owned(header, inner),
        std::borrow::Cow::Borrowed(inner) => rewrap(header, inner),
    };
    // The originators that count are the ones the reader is shown: `rewrap` keeps the protected
    // (inner) fields and drops the outer ones when the content declares header protection.
    let originators = mime::originators(mime::split(&message).header);
    let mut signers = v.signers;
    for s in &mut signers {
        // For mail, a signature without signed attributes is not trustworthy (no binding of
        // content type and time; RFC 8551 §2.5 requires them).
        if s.problem.is_none() && !s.signed_attributes {
            s.problem = Some("the signature has no signed attributes".into());
        }
        // S/MIME signs MIME entities as id-data (RFC 8551 §3.5); a signature made for another
        // kind of content (a timestamp token, a receipt, another protocol's object) is not a
        // signature of this message, even where its bytes read as one.
        if s.problem.is_none() && v.content_type != crate::alg::ID_DATA {
            s.problem = Some(format!(
                "the signature is for content of type {}, not for a mail message",
                crate::alg::name(&v.content_type)
            ));
        }
    }
    Ok(Verified {
        message,
        signers,
        certificates: v.certificates,
        crls: v.crls,
        originators,
        header_protection,
    })
}

/// The result of decrypting a message.
#[derive(Debug)]
pub struct Decrypted {
    /// The message with the encryption layer removed.
    pub message: Vec<u8>,
    /// The content cipher used by the sender.
    pub cipher: ContentCipher,
    /// The header protection the decrypted content declared (RFC 9788), if any.
    pub header_protection: Option<Declared>,
}

/// Decrypts an `application/pkcs7-mime` enveloped or authEnveloped message.
pub fn decrypt<K: std::borrow::Borrow<Identity>>(
    message: &[u8],
    keys: &[K],
) -> Result<Decrypted, Error> {
    let (header, der) = envelope_of(message)?;
    finish_decrypt(&header, der, keys)
}

/// Like [`decrypt`], but takes the message and frees it once its CMS body is decoded.
pub fn decrypt_owned<K: std::borrow::Borrow<Identity>>(
    message: Vec<u8>,
    keys: &[K],
) -> Result<Decrypted, Error> {
    let (header, ct, body_start) = {
        let e = mime::split(&message);
        let ct = mime::content_type(e.header);
        (e.header.to_vec(), ct, message.len() - e.body.len())
    };
    if classify(&ct) != Kind::Pkcs7Mime {
        return Err(Error::NotSmime(format!(
            "the message is {}, not S/MIME encrypted",
            ct.mime_type
        )));
    }
    // The CMS bytes are decoded in the message's own buffer: a large message is not held twice.
    let der = match ct.transfer_encoding.as_str() {
        "base64" => mime::base64_decode_owned(message, body_start)?,
        _ => decode_body(&ct, &message[body_start..])?,
    };
    finish_decrypt(&header, der, keys)
}

/// The header block and the decoded CMS body of an `application/pkcs7-mime` message.
fn envelope_of(message: &[u8]) -> Result<(Vec<u8>, Vec<u8>), Error> {
    let e = mime::split(message);
    let ct = mime::content_type(e.header);
    if classify(&ct) != Kind::Pkcs7Mime {
        return Err(Error::NotSmime(format!(
            "the message is {}, not S/MIME encrypted",
            ct.mime_type
        )));
    }
    Ok((e.header.to_vec(), decode_body(&ct, e.body)?))
}

fn finish_decrypt<K: std::borrow::Borrow<Identity>>(
    header: &[u8],
    der: Vec<u8>,
    keys: &[K],
) -> Result<Decrypted, Error> {
    let opened = envelope::decrypt_der(der, keys)?;
    let (message, header_protection) = rewrap(header, &opened.content);
    Ok(Decrypted {
        message,
        cipher: opened.cipher,
        header_protection,
    })
}

/// One S/MIME layer that was removed while opening a message.
#[derive(Debug)]
pub enum Layer {
    /// An encryption layer and its cipher.
    Encrypted(ContentCipher),
    /// A signature layer and its verification result (with the message field emptied).
    Signed(Verified),
}

/// The result of opening every S/MIME layer of a message.
#[derive(Debug)]
pub struct OpenedMessage {
    /// The innermost message.
    pub message: Vec<u8>,
    /// The layers from outermost to innermost.
    pub layers: Vec<Layer>,
    /// The header protection the innermost content declared (RFC 9788), if any: its header
    /// fields are then the message's.
    pub header_protection: Option<Declared>,
}

/// Opens every whole-message S/MIME layer: decrypts and verifies in whatever order they nest.
pub fn open<K: std::borrow::Borrow<Identity>>(
    message: &[u8],
    keys: &[K],
) -> Result<OpenedMessage, Error> {
    open_layers(message, keys, MAX_LAYERS)
}

/// Like [`open`], taking the stored message, which comes back unchanged when it cannot be
/// opened (the reader is then shown it). The common encrypted message (base64 in lines of one
/// length, DER, AES-CBC, then plain or clear-signed content) is decoded, decrypted and
/// unwrapped in the message's own buffer: no second message-sized buffer is made, whose fresh
/// pages the kernel would clear (a fifth of opening a large message). Every step up to the last
/// check is undone on failure: the base64 text is written again from the decoded bytes, a
/// wrong CBC padding encrypted again. Anything else is opened by [`open`].
pub fn open_owned<K: std::borrow::Borrow<Identity>>(
    message: Vec<u8>,
    keys: &[K],
) -> Result<OpenedMessage, (Error, Vec<u8>)> {
    match open_in_place(message, keys) {
        envelope::InPlace::Done(opened) => Ok(opened),
        envelope::InPlace::Failed(e, message) => Err((e, message)),
        envelope::InPlace::NotHere(message) => open(&message, keys).map_err(|e| (e, message)),
    }
}

fn open_in_place<K: std::borrow::Borrow<Identity>>(
    message: Vec<u8>,
    keys: &[K],
) -> envelope::InPlace<OpenedMessage> {
    use envelope::InPlace;
    // A clear-signed message (signed only) loses its signature layer in its own buffer, as the
    // signed layer inside an encrypted one does below: no copy of a 20 MB signed PDF to show it.
    let message = match clear_signed_owned(message, Vec::new()) {
        InPlace::NotHere(message) => message,
        done_or_failed => return done_or_failed,
    };
    let (header, body_start) = {
        let e = mime::split(&message);
        let ct = mime::content_type(e.header);
        if classify(&ct) != Kind::Pkcs7Mime || ct.transfer_encoding != "base64" {
            return InPlace::NotHere(message);
        }
        (e.header.to_vec(), message.len() - e.body.len())
    };
    let (der, text) = match mime::base64_decode_in_place(message, body_start) {
        Ok(decoded) => decoded,
        Err(message) => return InPlace::NotHere(message),
    };
    // Enveloped data in DER only; opaque signed data and BER go the ordinary way.
    let enveloped = envelope::split_content_info(&der).is_ok_and(|(t, _)| {
        t == crate::alg::ID_ENVELOPED_DATA || t == crate::alg::ID_AUTH_ENVELOPED_DATA
    });
    if !enveloped {
        return InPlace::NotHere(text.restore(&der));
    }
    let (opened, envelope) = match envelope::decrypt_der_in_place(der, keys) {
        InPlace::Done(done) => done,
        InPlace::Failed(e, der) => return InPlace::Failed(e, text.restore(&der)),
        InPlace::NotHere(der) => return InPlace::NotHere(text.restore(&der)),
    };
    let back = |content: Vec<u8>| text.restore(&envelope.restore(content));
    let cipher = opened.cipher;
    let (message, declared, rewrapped) = rewrap_undoable(&header, opened.content);
    let mut layers = vec![Layer::Encrypted(cipher)];
    if kind(&message) == Kind::Plain {
        return InPlace::Done(OpenedMessage {
            message,
            layers,
            header_protection: declared,
        });
    }
    // Clear-signed plain content, the usual case, loses its signature layer in this buffer too.
    let message = match clear_signed_owned(message, vec![Layer::Encrypted(cipher)]) {
        InPlace::NotHere(message) => message,
        InPlace::Failed(e, message) => return InPlace::Failed(e, back(rewrapped.undo(message))),
        done => return done,
    };
    // Other nestings: the ordinary way from here (it takes off at least one layer or fails), the
    // decrypted message borrowed, so it is still there to be put back should a layer fail.
    match open_layers(&message, keys, MAX_LAYERS - 1) {
        Ok(inner) => {
            layers.extend(inner.layers);
            InPlace::Done(OpenedMessage {
                message: inner.message,
                layers,
                header_protection: inner.header_protection,
            })
        }
        Err(e) => InPlace::Failed(e, back(rewrapped.undo(message))),
    }
}

/// A clear-signed message with plain content, verified and unwrapped in its own buffer, its
/// signature layer added to `layers`; the message back untouched when it is not one (NotHere)
/// or its signature cannot be checked (Failed). Its parts are found once: each pass over a
/// 20 MB part costs 2-3 ms.
fn clear_signed_owned(
    message: Vec<u8>,
    mut layers: Vec<Layer>,
) -> envelope::InPlace<OpenedMessage> {
    use envelope::InPlace;
    let found = clear_signed_in_place(&message)
        .filter(|(signed, _, _)| kind(&message[signed.clone()]) == Kind::Plain);
    let Some(found) = found else {
        return InPlace::NotHere(message);
    };
    match verify_found(message, found) {
        Ok(mut v) => {
            let message = std::mem::take(&mut v.message);
            let header_protection = v.header_protection;
            layers.push(Layer::Signed(v));
            InPlace::Done(OpenedMessage {
                message,
                layers,
                header_protection,
            })
        }
        Err((e, message)) => InPlace::Failed(e, message),
    }
}

/// [`open`] with at most `budget` layers taken off.
fn open_layers<K: std::borrow::Borrow<Identity>>(
    message: &[u8],
    keys: &[K],
    budget: usize,
) -> Result<OpenedMessage, Error> {
    // Borrowed until a layer is opened: a plain or failing message is not copied here.
    let mut current = std::borrow::Cow::Borrowed(message);
    let mut layers = Vec::new();
    let mut header_protection = None;
    for _ in 0..budget {
        match kind(&current) {
            Kind::Plain => break,
            Kind::ClearSigned => {
                // Decrypted content is verified and unwrapped in its own buffer.
                let mut v = match std::mem::take(&mut current) {
                    std::borrow::Cow::Owned(owned) => verify_owned(owned)?,
                    std::borrow::Cow::Borrowed(stored) => verify(stored)?,
                };
                current = std::borrow::Cow::Owned(std::mem::take(&mut v.message));
                header_protection = v.header_protection;
                layers.push(Layer::Signed(v));
            }
            Kind::Pkcs7Mime => {
                let e = mime::split(&current);
                let ct = mime::content_type(e.header);
                let der = decode_body(&ct, e.body)?;
                let content_type = envelope::split_content_info(&crate::ber::normalize(&der)?)?.0;
                if content_type == crate::alg::ID_ENVELOPED_DATA
                    || content_type == crate::alg::ID_AUTH_ENVELOPED_DATA
                {
                    let opened = envelope::decrypt_der(der, keys)?;
                    let (m, declared) = rewrap_owned(e.header, opened.content);
                    current = std::borrow::Cow::Owned(m);
                    header_protection = declared;
                    layers.push(Layer::Encrypted(opened.cipher));
                } else {
                    // Opaque signed data: verified from the DER decoded above (not decoded a
                    // second time), with the text it came from let go first.
                    let header = e.header.to_vec();
                    drop(std::mem::take(&mut current));
                    let mut v = verify_der(&header, &der)?;
                    drop(der);
                    current = std::borrow::Cow::Owned(std::mem::take(&mut v.message));
                    header_protection = v.header_protection;
                    layers.push(Layer::Signed(v));
                }
            }
        }
    }
    Ok(OpenedMessage {
        message: current.into_owned(),
        layers,
        header_protection,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Putting the outer fields in front of decrypted content in its own buffer gives exactly
    /// what writing both into a new buffer gives, whatever the content.
    #[test]
    fn rewrapping_in_place_is_the_copying_rewrap() {
        let wrapper = b"From: a@b\r\nTo: c@d\r\nSubject: s\r\nMIME-Version: 1.0\r\nContent-Type: application/pkcs7-mime\r\n\r\n";
        let cases: [&[u8]; 6] = [
            b"Content-Type: text/plain\r\n\r\nhello\r\n",
            b"MIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\nhello\r\n",
            b"\r\nno header at all\r\n",
            b"no header and no empty line\r\n",
            b"Content-Type: text/plain\nbare LF\n\nline\n",
            b"Content-Type: multipart/mixed; boundary=x; hp=\"cipher\"\r\nSubject: p\r\n\r\n--x\r\n\r\na\r\n--x--\r\n",
        ];
        for inner in cases {
            assert_eq!(
                rewrap_owned(wrapper, inner.to_vec()),
                rewrap(wrapper, inner),
                "{}",
                String::from_utf8_lossy(inner)
            );
        }
    }

    /// The in-place entity must be byte for byte what canonicalising into a new buffer makes,
    /// and must leave alone what it cannot do in place.
    #[test]
    fn the_in_place_entity_is_the_canonical_one() {
        let cases: [&[u8]; 8] = [
            b"From: a@b\r\nSubject: s\r\n\r\nhello\r\n",
            b"From: a@b\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\nQUJD\r\n",
            b"From: a@b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nGr\xc3\xbc\xc3\x9fe\r\n",
            b"From: a@b\nSubject: bare LF\n\nline\n",
            b"From: a@b\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n\r\na\r\n--x--\r\n",
            b"From: a@b\r\nBcc: c@d\r\n\r\n",
            b"no header at all\r\n",
            b"",
        ];
        for m in cases {
            let (outer, entity) = entity_to_encrypt(m).unwrap();
            let mut buf = m.to_vec();
            match entity_in_place(&mut buf).unwrap() {
                Some(o) => {
                    assert_eq!(o, outer, "{}", String::from_utf8_lossy(m));
                    assert_eq!(buf, entity, "{}", String::from_utf8_lossy(m));
                }
                None => assert_eq!(buf, m, "left alone: {}", String::from_utf8_lossy(m)),
            }
        }
        let mut plain = cases[0].to_vec();
        assert!(
            entity_in_place(&mut plain).unwrap().is_some(),
            "the common case is in place"
        );
    }
}
