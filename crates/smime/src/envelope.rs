//! CMS EnvelopedData (RFC 5652 §6) and AuthEnvelopedData (RFC 5083/5084): one content key, wrapped
//! for each recipient with RSA key transport (PKCS#1 v1.5 or OAEP), content under AES-GCM or AES-CBC.

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::cipher::{
    DecryptionContext, EncryptionContext, PaddedBlockDecryptingKey, PaddedBlockEncryptingKey,
    UnboundCipherKey,
};
use aws_lc_rs::rsa::{OaepPublicEncryptingKey, Pkcs1PublicEncryptingKey};
use cms::authenveloped_data::AuthEnvelopedData;
use cms::content_info::{CmsVersion, ContentInfo};
use cms::enveloped_data::{
    EnvelopedData, KeyTransRecipientInfo, RecipientIdentifier, RecipientInfo, RecipientInfos,
};
use der::asn1::OctetString;
use der::{Any, Encode, Tagged};
use spki::AlgorithmIdentifierOwned;
use zeroize::Zeroizing;

use crate::alg::{self, ContentCipher};
use crate::cert::Cert;
use std::borrow::Borrow;

use crate::keys::{oaep_from_params, Identity};
use crate::signed::{der_err, oaep_sha256_alg};
use crate::Error;

/// How the content key is wrapped for RSA recipients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeyTransport {
    /// RSA PKCS#1 v1.5, readable by every client (the default).
    #[default]
    RsaPkcs1v15,
    /// RSA-OAEP with SHA-256 and MGF1-SHA-256.
    RsaOaepSha256,
}

/// Options for encryption.
#[derive(Debug, Clone, Copy)]
pub struct EncryptOptions {
    /// The content cipher (GCM produces AuthEnvelopedData, CBC EnvelopedData).
    pub cipher: ContentCipher,
    /// The key transport for RSA recipients.
    pub key_transport: KeyTransport,
}

impl Default for EncryptOptions {
    fn default() -> Self {
        EncryptOptions {
            cipher: ContentCipher::Aes256Gcm,
            key_transport: KeyTransport::RsaPkcs1v15,
        }
    }
}

/// GCMParameters (RFC 5084): nonce and tag length.
#[derive(der::Sequence)]
struct GcmParams {
    nonce: OctetString,
    #[asn1(default = "default_icv")]
    icv_len: u8,
}

fn default_icv() -> u8 {
    12
}

fn random(len: usize) -> Result<Zeroizing<Vec<u8>>, Error> {
    let mut v = Zeroizing::new(vec![0u8; len]);
    aws_lc_rs::rand::fill(&mut v).map_err(|_| Error::Key("no system randomness".into()))?;
    Ok(v)
}

fn cipher_alg(c: ContentCipher) -> &'static aws_lc_rs::cipher::Algorithm {
    match c.key_len() {
        16 => &aws_lc_rs::cipher::AES_128,
        24 => &aws_lc_rs::cipher::AES_192,
        _ => &aws_lc_rs::cipher::AES_256,
    }
}

fn aead_alg(c: ContentCipher) -> &'static aws_lc_rs::aead::Algorithm {
    match c.key_len() {
        16 => &aws_lc_rs::aead::AES_128_GCM,
        24 => &aws_lc_rs::aead::AES_192_GCM,
        _ => &aws_lc_rs::aead::AES_256_GCM,
    }
}

/// Encrypts `content` for every recipient certificate; returns DER ContentInfo.
pub fn encrypt(
    content: Vec<u8>,
    recipients: &[Cert],
    opts: &EncryptOptions,
) -> Result<Vec<u8>, Error> {
    Ok(encrypt_parts(content, recipients, opts)?.to_vec())
}

/// Encrypts `content` in place and returns the DER in pieces (see [`EnvelopeDer`]).
pub fn encrypt_parts(
    content: Vec<u8>,
    recipients: &[Cert],
    opts: &EncryptOptions,
) -> Result<EnvelopeDer, Error> {
    if recipients.is_empty() {
        return Err(Error::Key("no recipients to encrypt to".into()));
    }
    if matches!(
        opts.cipher,
        ContentCipher::Des3Cbc | ContentCipher::Aes192Cbc | ContentCipher::Aes192Gcm
    ) {
        return Err(Error::Unsupported(format!(
            "encrypting with {}",
            opts.cipher.label()
        )));
    }
    let cek = random(opts.cipher.key_len())?;
    let mut infos = Vec::with_capacity(recipients.len());
    for r in recipients {
        infos.push(if r.spki().algorithm.oid == alg::ID_EC_PUBLIC_KEY {
            RecipientInfo::Kari(ecdh::agree_for(r, &cek)?)
        } else {
            RecipientInfo::Ktri(wrap_for(r, &cek, opts.key_transport)?)
        });
    }
    // RFC 5652 §6.1: EnvelopedData is version 2 as soon as any recipient is not a v0 KTRI.
    let all_ktri = infos.iter().all(|r| matches!(r, RecipientInfo::Ktri(_)));
    // The SET OF is written from each RecipientInfo's encoding, sorted as DER requires
    // (ascending octets, X.690 §11.6): each is encoded once, instead of twice per comparison
    // as `SetOfVec`'s sort does (that and the re-encoding were 2 % of the proxy's CPU).
    let mut encoded = infos
        .iter()
        .map(|r| r.to_der().map_err(der_err))
        .collect::<Result<Vec<_>, _>>()?;
    drop(infos);
    encoded.sort_unstable();
    let parts: Vec<&[u8]> = encoded.iter().map(Vec::as_slice).collect();
    let recips = crate::ber::tlv(0x31, &parts);

    // Encrypted in place: the content buffer becomes the ciphertext, no copy.
    let mut buf = content;
    let (outer_oid, alg_params, mac) = if opts.cipher.is_aead() {
        let nonce = random(12)?;
        let key = LessSafeKey::new(
            UnboundKey::new(aead_alg(opts.cipher), &cek).map_err(|_| Error::DecryptFailed)?,
        );
        let tag = key
            .seal_in_place_separate_tag(
                Nonce::try_assume_unique_for_key(&nonce).map_err(|_| Error::DecryptFailed)?,
                Aad::empty(),
                &mut buf,
            )
            .map_err(|_| Error::Key("AES-GCM encryption failed".into()))?;
        let params = GcmParams {
            nonce: OctetString::new(nonce.to_vec()).map_err(der_err)?,
            icv_len: 16,
        };
        (
            alg::ID_AUTH_ENVELOPED_DATA,
            Any::encode_from(&params).map_err(der_err)?,
            Some(OctetString::new(tag.as_ref().to_vec()).map_err(der_err)?),
        )
    } else {
        let iv = random(16)?;
        let key = PaddedBlockEncryptingKey::cbc_pkcs7(
            UnboundCipherKey::new(cipher_alg(opts.cipher), &cek)
                .map_err(|_| Error::Key("bad content key".into()))?,
        )
        .map_err(|_| Error::Key("AES-CBC unavailable".into()))?;
        let iv_arr: [u8; 16] = iv.as_slice().try_into().expect("16 bytes");
        key.less_safe_encrypt(&mut buf, EncryptionContext::Iv128(iv_arr.into()))
            .map_err(|_| Error::Key("AES-CBC encryption failed".into()))?;
        (
            alg::ID_ENVELOPED_DATA,
            Any::encode_from(&OctetString::new(iv.to_vec()).map_err(der_err)?).map_err(der_err)?,
            None,
        )
    };
    let content_alg = AlgorithmIdentifierOwned {
        oid: opts.cipher.oid(),
        parameters: Some(alg_params),
    };
    let version = if outer_oid == alg::ID_ENVELOPED_DATA && !all_ktri {
        CmsVersion::V2
    } else {
        CmsVersion::V0
    };
    EnvelopeDer::assemble(outer_oid, version, &recips, &content_alg, buf, mac.as_ref())
}

/// A DER ContentInfo (EnvelopedData or AuthEnvelopedData) in three pieces, so that a large
/// ciphertext is never copied just to be framed: `prefix ++ ciphertext ++ suffix` is the DER.
#[derive(Debug)]
pub struct EnvelopeDer {
    /// Everything up to and including the header of the encrypted content.
    pub prefix: Vec<u8>,
    /// The encrypted content (the bulk of the message).
    pub ciphertext: Vec<u8>,
    /// What follows the encrypted content (the GCM tag for AuthEnvelopedData).
    pub suffix: Vec<u8>,
}

impl EnvelopeDer {
    /// The whole DER as one buffer.
    pub fn to_vec(&self) -> Vec<u8> {
        [&self.prefix[..], &self.ciphertext, &self.suffix].concat()
    }

    /// Frames (Auth)EnvelopedData around `ciphertext`, following RFC 5652 §6.1 / RFC 5083 §2.1
    /// field by field (no originatorInfo or attributes); `recips` is the encoded SET OF
    /// RecipientInfo.
    fn assemble(
        outer_oid: der::asn1::ObjectIdentifier,
        version: CmsVersion,
        recips: &[u8],
        content_alg: &AlgorithmIdentifierOwned,
        ciphertext: Vec<u8>,
        mac: Option<&OctetString>,
    ) -> Result<Self, Error> {
        use crate::ber::write_length;
        let tlv_len = |content: usize| 1 + crate::ber::encoded_length_len(content) + content;
        let version = version.to_der().map_err(der_err)?;
        let data_oid = alg::ID_DATA.to_der().map_err(der_err)?;
        let alg_der = content_alg.to_der().map_err(der_err)?;
        let suffix = match mac {
            Some(m) => m.to_der().map_err(der_err)?,
            None => Vec::new(),
        };
        let eci_content = data_oid.len() + alg_der.len() + tlv_len(ciphertext.len());
        let inner_content = version.len() + recips.len() + tlv_len(eci_content) + suffix.len();
        let outer_oid_der = outer_oid.to_der().map_err(der_err)?;
        let ci_content = outer_oid_der.len() + tlv_len(tlv_len(inner_content));

        let mut p = Vec::with_capacity(64 + recips.len() + alg_der.len());
        p.push(0x30);
        write_length(ci_content, &mut p);
        p.extend_from_slice(&outer_oid_der);
        p.push(0xa0);
        write_length(tlv_len(inner_content), &mut p);
        p.push(0x30);
        write_length(inner_content, &mut p);
        p.extend_from_slice(&version);
        p.extend_from_slice(recips);
        p.push(0x30);
        write_length(eci_content, &mut p);
        p.extend_from_slice(&data_oid);
        p.extend_from_slice(&alg_der);
        p.push(0x80); // [0] IMPLICIT OCTET STRING, primitive
        write_length(ciphertext.len(), &mut p);
        Ok(EnvelopeDer {
            prefix: p,
            ciphertext,
            suffix,
        })
    }
}

fn wrap_for(r: &Cert, cek: &[u8], kt: KeyTransport) -> Result<KeyTransRecipientInfo, Error> {
    if r.spki().algorithm.oid != alg::RSA_ENCRYPTION {
        return Err(Error::Unsupported(format!(
            "recipient key type {} for \"{}\" (envelopd encrypts to RSA and EC P-256/P-384 certificates)",
            alg::name(&r.spki().algorithm.oid),
            r.subject()
        )));
    }
    let public = r.rsa_encrypting_key()?;
    let mut out = vec![0u8; public.key_size_bytes()];
    let (alg_id, n) = match kt {
        KeyTransport::RsaPkcs1v15 => {
            let k = Pkcs1PublicEncryptingKey::new(public)
                .map_err(|_| Error::Key("RSA key unusable".into()))?;
            let n = k
                .encrypt(cek, &mut out)
                .map_err(|_| Error::Key("RSA encryption failed".into()))?
                .len();
            (
                AlgorithmIdentifierOwned {
                    oid: alg::RSA_ENCRYPTION,
                    parameters: Some(Any::from(der::asn1::Null)),
                },
                n,
            )
        }
        KeyTransport::RsaOaepSha256 => {
            let k = OaepPublicEncryptingKey::new(public)
                .map_err(|_| Error::Key("RSA key unusable".into()))?;
            let n = k
                .encrypt(&aws_lc_rs::rsa::OAEP_SHA256_MGF1SHA256, cek, &mut out, None)
                .map_err(|_| Error::Key("RSA-OAEP encryption failed".into()))?
                .len();
            (oaep_sha256_alg()?, n)
        }
    };
    out.truncate(n);
    Ok(KeyTransRecipientInfo {
        version: CmsVersion::V0,
        rid: RecipientIdentifier::IssuerAndSerialNumber(r.issuer_and_serial()),
        key_enc_alg: alg_id,
        enc_key: OctetString::new(out).map_err(der_err)?,
    })
}

/// The result of opening an envelope.
#[derive(Debug)]
pub struct Opened {
    /// The decrypted content.
    pub content: Vec<u8>,
    /// The content cipher the sender used.
    pub cipher: ContentCipher,
}

/// An envelope's parsed fields, owned, so the DER they came from can be freed before decrypting.
struct ParsedEnvelope {
    recips: RecipientInfos,
    eci: cms::enveloped_data::EncryptedContentInfo,
    mac: Option<OctetString>,
    aad: Vec<u8>,
}

/// Decrypts EnvelopedData or AuthEnvelopedData with whichever identity it was encrypted for.
pub fn decrypt<K: Borrow<Identity>>(ci: ContentInfo, keys: &[K]) -> Result<Opened, Error> {
    let parsed = parse_envelope(&ci.content_type, &ci.content.to_der().map_err(der_err)?)?;
    drop(ci);
    open_envelope(parsed, None, keys)
}

/// Decrypts a DER/BER ContentInfo given as bytes. Takes the buffer by value and frees it once
/// the envelope is parsed, so a large message is held at most twice at any moment.
pub fn decrypt_der<K: Borrow<Identity>>(der: Vec<u8>, keys: &[K]) -> Result<Opened, Error> {
    if let Some((parsed, range)) = hollow(&der)? {
        // The ciphertext is decrypted where it lies: the DER's own buffer becomes the content
        // (a 20 MB message is not copied into a parsed structure first).
        let mut content = der;
        content.truncate(range.end);
        content.drain(..range.start);
        return open_envelope(parsed, Some(content), keys);
    }
    let parsed = {
        let normalized = crate::ber::normalize(&der)?;
        let (content_type, inner) = split_content_info(&normalized)?;
        parse_envelope(&content_type, inner)?
    };
    drop(der);
    open_envelope(parsed, None, keys)
}

/// What [`decrypt_der_in_place`] did with the buffer it was given.
#[derive(Debug)]
pub enum InPlace<T> {
    /// Opened; `T` says how to put the buffer back.
    Done(T),
    /// Not opened, for this reason; the buffer as it was.
    Failed(Error, Vec<u8>),
    /// Not an envelope this path takes (BER, the ciphertext in pieces): the buffer as it was,
    /// for [`decrypt_der`].
    NotHere(Vec<u8>),
}

/// How to turn content decrypted by [`decrypt_der_in_place`] back into the envelope's DER.
pub struct EnvelopeUndo(Undo);

enum Undo {
    /// AES-CBC, decrypted where it lay: the DER in front of the ciphertext and after it, and
    /// the key, IV and ciphertext length that encrypt the content back into it.
    Cbc {
        before: Vec<u8>,
        after: Vec<u8>,
        key: CbcKey,
        padded: usize,
    },
    /// Any other cipher, decrypted from a copy: the DER itself.
    Kept(Vec<u8>),
}

/// An AES-CBC content cipher with its key and IV.
struct CbcKey {
    cipher: ContentCipher,
    cek: Zeroizing<Vec<u8>>,
    iv: [u8; 16],
}

impl CbcKey {
    /// Encrypts whole blocks in place: the ciphertext they were decrypted from, again.
    fn encrypt(&self, blocks: &mut [u8]) {
        let key = UnboundCipherKey::new(cipher_alg(self.cipher), &self.cek)
            .and_then(aws_lc_rs::cipher::EncryptingKey::cbc)
            .expect("the key decrypted these blocks");
        key.less_safe_encrypt(blocks, EncryptionContext::Iv128(self.iv.into()))
            .expect("whole blocks");
    }
}

impl std::fmt::Debug for EnvelopeUndo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The content key stays out of every rendering.
        f.debug_struct("EnvelopeUndo").finish_non_exhaustive()
    }
}

impl EnvelopeUndo {
    /// The envelope's DER as it was, from the content decrypted out of it (unchanged).
    pub fn restore(self, mut content: Vec<u8>) -> Vec<u8> {
        match self.0 {
            Undo::Cbc {
                before,
                after,
                key,
                padded,
            } => {
                // PKCS#7 padding is fixed by the length: n bytes of value n.
                let pad = padded.saturating_sub(content.len());
                content.resize(padded, pad as u8);
                key.encrypt(&mut content);
                let mut der = before;
                der.reserve_exact(content.len() + after.len());
                der.extend_from_slice(&content);
                der.extend_from_slice(&after);
                der
            }
            Undo::Kept(der) => der,
        }
    }
}

/// Like [`decrypt_der`], giving the buffer back unchanged when it cannot open it: AES-CBC is
/// decrypted where it lies and, should its padding be wrong, encrypted again (the reader is
/// then shown the stored message, which must not have changed); other ciphers are decrypted
/// from a copy of the ciphertext. With what it takes to put the envelope back if a later layer
/// of the message fails.
pub fn decrypt_der_in_place<K: Borrow<Identity>>(
    mut der: Vec<u8>,
    keys: &[K],
) -> InPlace<(Opened, EnvelopeUndo)> {
    let (parsed, range) = match hollow(&der) {
        Ok(Some(found)) => found,
        Ok(None) => return InPlace::NotHere(der),
        Err(e) => return InPlace::Failed(e, der),
    };
    let keyed = match content_key(parsed, keys) {
        Ok(k) => k,
        Err(e) => return InPlace::Failed(e, der),
    };
    let cbc = matches!(
        keyed.cipher,
        ContentCipher::Aes128Cbc | ContentCipher::Aes192Cbc | ContentCipher::Aes256Cbc
    );
    if !cbc {
        return match decrypt_content(keyed, Some(der[range].to_vec())) {
            Ok(opened) => InPlace::Done((opened, EnvelopeUndo(Undo::Kept(der)))),
            Err(e) => InPlace::Failed(e, der),
        };
    }
    let iv = match cbc_iv(&keyed.params) {
        Ok(iv) => iv,
        Err(e) => return InPlace::Failed(e, der),
    };
    let padded = range.len();
    // Whole blocks only: aws-lc refuses anything else before touching a byte, so this is the
    // one failure that leaves the ciphertext as it was by itself.
    if padded == 0 || padded % 16 != 0 {
        return InPlace::Failed(Error::DecryptFailed, der);
    }
    let Ok(key) = UnboundCipherKey::new(cipher_alg(keyed.cipher), &keyed.cek)
        .and_then(PaddedBlockDecryptingKey::cbc_pkcs7)
    else {
        return InPlace::Failed(Error::DecryptFailed, der);
    };
    let decrypted = key
        .decrypt(&mut der[range.clone()], DecryptionContext::Iv128(iv.into()))
        .map(|plain| plain.len());
    let key = CbcKey {
        cipher: keyed.cipher,
        cek: keyed.cek,
        iv,
    };
    match decrypted {
        Ok(n) => {
            let undo = EnvelopeUndo(Undo::Cbc {
                before: der[..range.start].to_vec(),
                after: der[range.end..].to_vec(),
                key,
                padded,
            });
            let mut content = der;
            content.truncate(range.start + n);
            content.drain(..range.start);
            InPlace::Done((
                Opened {
                    content,
                    cipher: keyed.cipher,
                },
                undo,
            ))
        }
        Err(_) => {
            // Wrong padding (a wrong key or a changed ciphertext): the blocks were decrypted
            // in place, and encrypting them again gives the ciphertext back.
            key.encrypt(&mut der[range]);
            InPlace::Failed(Error::DecryptFailed, der)
        }
    }
}

/// For an envelope already in DER with its ciphertext in one primitive `[0]`: the envelope
/// parsed from a copy without the ciphertext, and where the ciphertext lies in `der`. `None`
/// for anything else (BER, constructed content), which is parsed the ordinary way.
fn hollow(der: &[u8]) -> Result<Option<(ParsedEnvelope, std::ops::Range<usize>)>, Error> {
    use crate::ber::{children, read_tlv, tlv};
    if !matches!(crate::ber::normalize(der)?, std::borrow::Cow::Borrowed(_)) {
        return Ok(None);
    }
    let (content_type, inner) = split_content_info(der)?;
    let (tag, body, _) = read_tlv(inner)?;
    if tag != 0x30 {
        return Ok(None);
    }
    let kids = children(body)?;
    // (Auth)EnvelopedData: … recipientInfos SET, then the (auth)encryptedContentInfo SEQUENCE.
    let Some(set) = kids.iter().position(|k| k.first() == Some(&0x31)) else {
        return Ok(None);
    };
    let Some(at) = (set + 1..kids.len()).find(|&i| kids[i].first() == Some(&0x30)) else {
        return Ok(None);
    };
    let (_, eci_body, _) = read_tlv(kids[at])?;
    let eci_kids = children(eci_body)?;
    let [oid, alg, content] = eci_kids.as_slice() else {
        return Ok(None);
    };
    if content.first() != Some(&0x80) {
        return Ok(None);
    }
    let (_, data, _) = read_tlv(content)?;
    let start = data.as_ptr() as usize - der.as_ptr() as usize;
    let eci = tlv(0x30, &[oid, alg, &[0x80, 0x00]]);
    let parts: Vec<&[u8]> = kids
        .iter()
        .enumerate()
        .map(|(i, k)| if i == at { eci.as_slice() } else { *k })
        .collect();
    let parsed = parse_envelope(&content_type, &tlv(0x30, &parts))?;
    Ok(Some((parsed, start..start + data.len())))
}

/// Splits DER `ContentInfo ::= SEQUENCE { contentType OID, content [0] EXPLICIT ANY }` into the
/// type and the inner element's bytes, borrowing instead of copying the content.
pub fn split_content_info(der: &[u8]) -> Result<(der::asn1::ObjectIdentifier, &[u8]), Error> {
    use der::Decode;
    let bad = || Error::Malformed("CMS ContentInfo: not a SEQUENCE { OID, [0] content }".into());
    let (tag, body, total) = crate::ber::read_tlv(der)?;
    if tag != 0x30 || total != der.len() {
        return Err(bad());
    }
    let kids = crate::ber::children(body)?;
    let [oid, wrapped] = kids.as_slice() else {
        return Err(bad());
    };
    let oid = der::asn1::ObjectIdentifier::from_der(oid)
        .map_err(|e| Error::Malformed(format!("CMS content type: {e}")))?;
    let (tag, inner, _) = crate::ber::read_tlv(wrapped)?;
    if tag != 0xa0 {
        return Err(bad());
    }
    let (_, _, inner_total) = crate::ber::read_tlv(inner)?;
    if inner_total != inner.len() {
        return Err(bad());
    }
    Ok((oid, inner))
}

fn parse_envelope(
    content_type: &der::asn1::ObjectIdentifier,
    inner: &[u8],
) -> Result<ParsedEnvelope, Error> {
    use der::Decode;
    if *content_type == alg::ID_ENVELOPED_DATA {
        let ed = EnvelopedData::from_der(inner)
            .map_err(|e| Error::Malformed(format!("EnvelopedData: {e}")))?;
        if !matches!(
            ed.version,
            CmsVersion::V0 | CmsVersion::V2 | CmsVersion::V3 | CmsVersion::V4
        ) {
            return Err(Error::Malformed(
                "EnvelopedData with an invalid version".into(),
            ));
        }
        Ok(ParsedEnvelope {
            recips: ed.recip_infos,
            eci: ed.encrypted_content,
            mac: None,
            aad: Vec::new(),
        })
    } else if *content_type == alg::ID_AUTH_ENVELOPED_DATA {
        let aed = AuthEnvelopedData::from_der(inner)
            .map_err(|e| Error::Malformed(format!("AuthEnvelopedData: {e}")))?;
        if aed.version != CmsVersion::V0 {
            return Err(Error::Malformed(
                "AuthEnvelopedData version must be 0".into(),
            ));
        }
        let aad = match &aed.auth_attrs {
            Some(a) => a.to_der().map_err(der_err)?,
            None => Vec::new(),
        };
        Ok(ParsedEnvelope {
            recips: aed.recip_infos,
            eci: aed.auth_encrypted_content_info,
            mac: Some(aed.mac),
            aad,
        })
    } else {
        Err(Error::NotSmime(format!(
            "expected an encrypted message, found {}",
            alg::name(content_type)
        )))
    }
}

/// Opens a parsed envelope; `content`: its ciphertext when taken out of the DER beforehand.
fn open_envelope<K: Borrow<Identity>>(
    p: ParsedEnvelope,
    content: Option<Vec<u8>>,
    keys: &[K],
) -> Result<Opened, Error> {
    decrypt_content(content_key(p, keys)?, content)
}

/// An envelope checked and its content key unwrapped, before its content is touched.
struct Keyed {
    cipher: ContentCipher,
    cek: Zeroizing<Vec<u8>>,
    params: Any,
    mac: Option<OctetString>,
    aad: Vec<u8>,
    encrypted_content: Option<OctetString>,
}

fn content_key<K: Borrow<Identity>>(p: ParsedEnvelope, keys: &[K]) -> Result<Keyed, Error> {
    let ParsedEnvelope {
        recips,
        eci,
        mac,
        aad,
    } = p;
    // Fields outside the AEAD are still checked strictly: a changed byte anywhere in the envelope
    // must not go unnoticed, and envelopd only understands MIME (id-data) inside.
    if eci.content_type != alg::ID_DATA {
        return Err(Error::Malformed(format!(
            "the envelope holds {}, not a MIME message",
            alg::name(&eci.content_type)
        )));
    }
    let cipher = ContentCipher::from_oid(&eci.content_enc_alg.oid)?;
    if cipher.is_aead() != mac.is_some() {
        return Err(Error::Malformed(format!(
            "{} used in the wrong envelope type",
            cipher.label()
        )));
    }

    let keys: Vec<&Identity> = keys.iter().map(Borrow::borrow).collect();
    let cek = unwrap_key(&recips, &keys, cipher.key_len())?;
    let params = eci
        .content_enc_alg
        .parameters
        .clone()
        .ok_or_else(|| Error::Malformed("content cipher without parameters".into()))?;
    Ok(Keyed {
        cipher,
        cek,
        params,
        mac,
        aad,
        encrypted_content: eci.encrypted_content,
    })
}

/// The IV of an AES-CBC content cipher.
fn cbc_iv(params: &Any) -> Result<[u8; 16], Error> {
    let iv: OctetString = params
        .decode_as()
        .map_err(|e| Error::Malformed(format!("CBC parameters: {e}")))?;
    iv.as_bytes()
        .try_into()
        .map_err(|_| Error::Malformed("AES-CBC IV must be 16 bytes".into()))
}

fn decrypt_content(k: Keyed, content: Option<Vec<u8>>) -> Result<Opened, Error> {
    let Keyed {
        cipher,
        cek,
        params,
        mac,
        aad,
        encrypted_content,
    } = k;
    let mut buf = match content {
        Some(c) => c,
        None => encrypted_content
            .ok_or_else(|| Error::Malformed("the envelope carries no encrypted content".into()))?
            .into_bytes()
            .into_vec(),
    };
    let n = if let Some(mac) = mac {
        let p: GcmParams = params
            .decode_as()
            .map_err(|e| Error::Malformed(format!("GCM parameters: {e}")))?;
        if p.icv_len != 16 || mac.as_bytes().len() != 16 {
            return Err(Error::Unsupported(format!(
                "AES-GCM with a {}-byte tag (envelopd requires 16)",
                mac.as_bytes().len()
            )));
        }
        let nonce = Nonce::try_assume_unique_for_key(p.nonce.as_bytes())
            .map_err(|_| Error::Unsupported("AES-GCM nonce that is not 12 bytes long".into()))?;
        buf.reserve_exact(16);
        buf.extend_from_slice(mac.as_bytes());
        let key = LessSafeKey::new(
            UnboundKey::new(aead_alg(cipher), &cek).map_err(|_| Error::DecryptFailed)?,
        );
        key.open_in_place(nonce, Aad::from(aad.as_slice()), &mut buf)
            .map_err(|_| Error::DecryptFailed)?
            .len()
    } else if cipher == ContentCipher::Des3Cbc {
        let iv: OctetString = params
            .decode_as()
            .map_err(|e| Error::Malformed(format!("CBC parameters: {e}")))?;
        buf = des3_cbc_decrypt(&cek, iv.as_bytes(), buf)?;
        buf.len()
    } else {
        let a = cbc_iv(&params)?;
        let key = PaddedBlockDecryptingKey::cbc_pkcs7(
            UnboundCipherKey::new(cipher_alg(cipher), &cek).map_err(|_| Error::DecryptFailed)?,
        )
        .map_err(|_| Error::DecryptFailed)?;
        key.decrypt(&mut buf, DecryptionContext::Iv128(a.into()))
            .map_err(|_| Error::DecryptFailed)?
            .len()
    };
    buf.truncate(n);
    Ok(Opened {
        content: buf,
        cipher,
    })
}

fn unwrap_key(
    recips: &RecipientInfos,
    keys: &[&Identity],
    key_len: usize,
) -> Result<Zeroizing<Vec<u8>>, Error> {
    let mut seen = Vec::new();
    let mut other_kinds = 0;
    for ri in recips.0.iter() {
        if let RecipientInfo::Kari(ka) = ri {
            match ecdh::unwrap(ka, keys, key_len)? {
                ecdh::Unwrapped::Key(k) => return Ok(k),
                ecdh::Unwrapped::NotForUs(names) => seen.extend(names),
            }
            continue;
        }
        let RecipientInfo::Ktri(kt) = ri else {
            other_kinds += 1;
            continue;
        };
        let id = keys.iter().find(|id| match &kt.rid {
            RecipientIdentifier::IssuerAndSerialNumber(isn) => id.cert.matches_issuer_serial(isn),
            RecipientIdentifier::SubjectKeyIdentifier(ski) => id.cert.matches_ski(ski.0.as_bytes()),
        });
        let Some(id) = id else {
            seen.push(match &kt.rid {
                RecipientIdentifier::IssuerAndSerialNumber(isn) => describe_isn(isn),
                RecipientIdentifier::SubjectKeyIdentifier(ski) => {
                    format!("key id {}", hex(ski.0.as_bytes()))
                }
            });
            continue;
        };
        let expected_version = match kt.rid {
            RecipientIdentifier::IssuerAndSerialNumber(_) => CmsVersion::V0,
            RecipientIdentifier::SubjectKeyIdentifier(_) => CmsVersion::V2,
        };
        if kt.version != expected_version {
            return Err(Error::Malformed(
                "KeyTransRecipientInfo with a wrong version".into(),
            ));
        }
        let oaep = match kt.key_enc_alg.oid {
            alg::RSA_ENCRYPTION => {
                let null_or_absent = kt
                    .key_enc_alg
                    .parameters
                    .as_ref()
                    .is_none_or(|p| p.tag() == der::Tag::Null && p.value().is_empty());
                if !null_or_absent {
                    return Err(Error::Malformed("rsaEncryption with parameters".into()));
                }
                None
            }
            alg::ID_RSAES_OAEP => Some(oaep_from_params(kt.key_enc_alg.parameters.as_ref())?),
            other => {
                return Err(Error::Unsupported(format!(
                    "key transport {}",
                    alg::name(&other)
                )))
            }
        };
        return id.key.rsa_decrypt(kt.enc_key.as_bytes(), oaep, key_len);
    }
    if seen.is_empty() && other_kinds > 0 {
        return Err(Error::Unsupported(
            "the message uses only KEK, password or other recipient types, which envelopd cannot open"
                .into(),
        ));
    }
    Err(Error::NoRecipient(seen.join("; ")))
}

/// Describes an issuer-and-serial recipient identifier for error messages.
fn describe_isn(isn: &cms::cert::IssuerAndSerialNumber) -> String {
    format!(
        "serial {} from \"{}\"",
        hex(isn.serial_number.as_bytes()),
        isn.issuer
    )
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Triple-DES CBC, read-only, for old mail. `aws-lc-rs` gates 3DES behind a feature that needs
/// bindgen at build time, so RustCrypto's `des` + `cbc` (already used by PKCS#12) do this one job.
fn des3_cbc_decrypt(key: &[u8], iv: &[u8], mut buf: Vec<u8>) -> Result<Vec<u8>, Error> {
    use cbc::cipher::{block_padding::Pkcs7, BlockModeDecrypt, KeyIvInit};
    let dec = cbc::Decryptor::<des::TdesEde3>::new_from_slices(key, iv)
        .map_err(|_| Error::Malformed("3DES key or IV has the wrong length".into()))?;
    let n = dec
        .decrypt_padded::<Pkcs7>(&mut buf)
        .map_err(|_| Error::DecryptFailed)?
        .len();
    buf.truncate(n);
    Ok(buf)
}

/// RFC 5753 ephemeral-static ECDH key agreement (KeyAgreeRecipientInfo) with the ANSI X9.63 KDF
/// and AES key wrap: the way S/MIME encrypts to EC certificates.
mod ecdh {
    use aws_lc_rs::key_wrap::{KeyEncryptionKey, KeyWrap, AES_128, AES_256};
    use cms::enveloped_data::{
        KeyAgreeRecipientIdentifier, KeyAgreeRecipientInfo, OriginatorIdentifierOrKey,
        OriginatorPublicKey, RecipientEncryptedKey,
    };
    use der::asn1::{BitString, ObjectIdentifier as Oid, OctetString};
    use der::{Any, Encode};
    use spki::AlgorithmIdentifierOwned;
    use zeroize::Zeroizing;

    use super::{der_err, describe_isn, hex, CmsVersion};
    use crate::alg::{self, Digest};
    use crate::cert::Cert;
    use crate::keys::{ecdh_alg, Identity};
    use crate::Error;

    /// ECC-CMS-SharedInfo (RFC 5753 §7.2), the KDF's context.
    #[derive(der::Sequence)]
    struct SharedInfo {
        key_info: AlgorithmIdentifierOwned,
        #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
        entity_u_info: Option<OctetString>,
        #[asn1(context_specific = "2", tag_mode = "EXPLICIT")]
        supp_pub_info: OctetString,
    }

    fn kdf_digest(scheme: &Oid) -> Result<Digest, Error> {
        Ok(match *scheme {
            alg::DH_SHA1_KDF => Digest::Sha1,
            alg::DH_SHA256_KDF => Digest::Sha256,
            alg::DH_SHA384_KDF => Digest::Sha384,
            alg::DH_SHA512_KDF => Digest::Sha512,
            other => {
                return Err(Error::Unsupported(format!(
                    "key agreement scheme {}",
                    alg::name(&other)
                )))
            }
        })
    }

    fn wrap_key_len(wrap: &Oid) -> Result<usize, Error> {
        Ok(match *wrap {
            alg::AES128_WRAP => 16,
            alg::AES192_WRAP => 24,
            alg::AES256_WRAP => 32,
            other => {
                return Err(Error::Unsupported(format!(
                    "key wrap {}",
                    alg::name(&other)
                )))
            }
        })
    }

    /// ANSI X9.63 KDF: Hash(Z || counter || SharedInfo) blocks, truncated to the KEK length.
    fn x963_kdf(
        digest: Digest,
        z: &[u8],
        wrap: &Oid,
        ukm: Option<&OctetString>,
    ) -> Result<Zeroizing<Vec<u8>>, Error> {
        let len = wrap_key_len(wrap)?;
        let info = SharedInfo {
            key_info: AlgorithmIdentifierOwned {
                oid: *wrap,
                parameters: None,
            },
            entity_u_info: ukm.cloned(),
            supp_pub_info: OctetString::new(((len * 8) as u32).to_be_bytes().to_vec())
                .map_err(der_err)?,
        }
        .to_der()
        .map_err(der_err)?;
        let mut out = Zeroizing::new(Vec::with_capacity(len + 64));
        let mut counter = 1u32;
        while out.len() < len {
            let mut ctx = aws_lc_rs::digest::Context::new(digest.algorithm());
            ctx.update(z);
            ctx.update(&counter.to_be_bytes());
            ctx.update(&info);
            out.extend_from_slice(ctx.finish().as_ref());
            counter += 1;
        }
        out.truncate(len);
        Ok(out)
    }

    fn kek(key: &[u8]) -> Result<KeyEncryptionKey<aws_lc_rs::key_wrap::AesBlockCipher>, Error> {
        let cipher = match key.len() {
            16 => &AES_128,
            32 => &AES_256,
            _ => return Err(Error::Unsupported("AES-192 key wrap".into())),
        };
        KeyEncryptionKey::new(cipher, key).map_err(|_| Error::Key("bad key-encryption key".into()))
    }

    /// Builds the KeyAgreeRecipientInfo for an EC recipient: a fresh ephemeral key on the
    /// recipient's curve, SHA-256 (P-256) or SHA-384 (P-384) KDF, AES-256 key wrap.
    pub fn agree_for(r: &Cert, cek: &[u8]) -> Result<KeyAgreeRecipientInfo, Error> {
        let curve: Oid = r
            .spki()
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.decode_as().ok())
            .ok_or_else(|| {
                Error::Certificate(format!("EC key of \"{}\" has no named curve", r.subject()))
            })?;
        let algo = ecdh_alg(&curve)?;
        let (scheme, digest) = if curve == alg::SECP384R1 {
            (alg::DH_SHA384_KDF, Digest::Sha384)
        } else {
            (alg::DH_SHA256_KDF, Digest::Sha256)
        };
        let peer = r
            .spki()
            .subject_public_key
            .as_bytes()
            .ok_or_else(|| Error::Certificate("EC public key is not whole bytes".into()))?;
        let eph = aws_lc_rs::agreement::PrivateKey::generate(algo)
            .map_err(|_| Error::Key("cannot generate an ephemeral EC key".into()))?;
        let eph_pub = eph
            .compute_public_key()
            .map_err(|_| Error::Key("cannot compute the ephemeral public key".into()))?;
        let kek_bytes = aws_lc_rs::agreement::agree(
            &eph,
            aws_lc_rs::agreement::UnparsedPublicKey::new(algo, peer),
            Error::Certificate(format!(
                "the EC public key of \"{}\" is invalid",
                r.subject()
            )),
            |z| x963_kdf(digest, z, &alg::AES256_WRAP, None),
        )?;
        let mut wrapped = vec![0u8; cek.len() + 8];
        let n = kek(&kek_bytes)?
            .wrap(cek, &mut wrapped)
            .map_err(|_| Error::Key("AES key wrap failed".into()))?
            .len();
        wrapped.truncate(n);
        let wrap_alg = AlgorithmIdentifierOwned {
            oid: alg::AES256_WRAP,
            parameters: None,
        };
        Ok(KeyAgreeRecipientInfo {
            version: CmsVersion::V3,
            originator: OriginatorIdentifierOrKey::OriginatorKey(OriginatorPublicKey {
                algorithm: AlgorithmIdentifierOwned {
                    oid: alg::ID_EC_PUBLIC_KEY,
                    parameters: None,
                },
                public_key: BitString::from_bytes(eph_pub.as_ref()).map_err(der_err)?,
            }),
            ukm: None,
            key_enc_alg: AlgorithmIdentifierOwned {
                oid: scheme,
                parameters: Some(Any::encode_from(&wrap_alg).map_err(der_err)?),
            },
            recipient_enc_keys: vec![RecipientEncryptedKey {
                rid: KeyAgreeRecipientIdentifier::IssuerAndSerialNumber(r.issuer_and_serial()),
                enc_key: OctetString::new(wrapped).map_err(der_err)?,
            }],
        })
    }

    /// The outcome of looking at one KeyAgreeRecipientInfo.
    pub enum Unwrapped {
        /// The content-encryption key, for one of our identities.
        Key(Zeroizing<Vec<u8>>),
        /// None of its recipients is ours; their descriptions for the error message.
        NotForUs(Vec<String>),
    }

    /// Unwraps the content key if one of `keys` is among this KARI's recipients.
    pub fn unwrap(
        ka: &KeyAgreeRecipientInfo,
        keys: &[&Identity],
        key_len: usize,
    ) -> Result<Unwrapped, Error> {
        let mut names = Vec::new();
        for rek in &ka.recipient_enc_keys {
            let id = keys.iter().find(|id| match &rek.rid {
                KeyAgreeRecipientIdentifier::IssuerAndSerialNumber(isn) => {
                    id.cert.matches_issuer_serial(isn)
                }
                KeyAgreeRecipientIdentifier::RKeyId(k) => {
                    id.cert.matches_ski(k.subject_key_identifier.0.as_bytes())
                }
            });
            let Some(id) = id else {
                names.push(match &rek.rid {
                    KeyAgreeRecipientIdentifier::IssuerAndSerialNumber(isn) => describe_isn(isn),
                    KeyAgreeRecipientIdentifier::RKeyId(k) => {
                        format!("key id {}", hex(k.subject_key_identifier.0.as_bytes()))
                    }
                });
                continue;
            };
            if ka.version != CmsVersion::V3 {
                return Err(Error::Malformed(
                    "KeyAgreeRecipientInfo version must be 3".into(),
                ));
            }
            let OriginatorIdentifierOrKey::OriginatorKey(orig) = &ka.originator else {
                return Err(Error::Unsupported(
                    "ECDH with a static originator key (only ephemeral-static is supported)".into(),
                ));
            };
            if orig.algorithm.oid != alg::ID_EC_PUBLIC_KEY {
                return Err(Error::Unsupported(format!(
                    "key agreement with {} keys",
                    alg::name(&orig.algorithm.oid)
                )));
            }
            let digest = kdf_digest(&ka.key_enc_alg.oid)?;
            let wrap: AlgorithmIdentifierOwned = ka
                .key_enc_alg
                .parameters
                .as_ref()
                .ok_or_else(|| {
                    Error::Malformed("key agreement without a key wrap algorithm".into())
                })?
                .decode_as()
                .map_err(|e| Error::Malformed(format!("key wrap algorithm: {e}")))?;
            if wrap.parameters.is_some() {
                return Err(Error::Malformed("AES key wrap with parameters".into()));
            }
            let point = orig
                .public_key
                .as_bytes()
                .ok_or_else(|| Error::Malformed("originator key is not whole bytes".into()))?;
            let z = id.key.ecdh(point)?;
            let kek_bytes = x963_kdf(digest, &z, &wrap.oid, ka.ukm.as_ref())?;
            let wrapped = rek.enc_key.as_bytes();
            let mut cek = Zeroizing::new(vec![0u8; wrapped.len()]);
            let n = kek(&kek_bytes)?
                .unwrap(wrapped, &mut cek)
                .map_err(|_| Error::DecryptFailed)?
                .len();
            cek.truncate(n);
            if cek.len() != key_len {
                return Err(Error::DecryptFailed);
            }
            return Ok(Unwrapped::Key(cek));
        }
        Ok(Unwrapped::NotForUs(names))
    }
}
