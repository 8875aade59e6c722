//! Private keys: loading PKCS#8 (PEM or DER, encrypted or not), PKCS#1 RSA keys and PKCS#12
//! bundles, and the key operations S/MIME needs (sign, RSA key-transport decryption, ECDH).
//!
//! Key bytes live inside `aws-lc-rs` key objects, which AWS-LC wipes when freed; every
//! intermediate copy we hold (decoded PEM, decrypted PKCS#8, passwords) is `Zeroizing`. A key
//! that must not be copied at all lives in a token and is reached through [`ExternalKey`]
//! (implemented outside this pure core, by `certstore::token` for PKCS#11).

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{
    OaepAlgorithm, OaepPrivateDecryptingKey, Pkcs1PrivateDecryptingKey, PrivateDecryptingKey,
};
use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};
use der::{asn1::ObjectIdentifier as Oid, Decode};
use zeroize::Zeroizing;

use crate::alg::{self, Digest};
use crate::cert::{pem_blocks, Cert};
use crate::Error;

/// How RSA signatures are padded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RsaPadding {
    /// PKCS#1 v1.5, understood by every client (the default).
    #[default]
    Pkcs1v15,
    /// RSASSA-PSS with salt length = digest length.
    Pss,
}

/// What kind of key an [`ExternalKey`] is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExternalKind {
    /// RSA with a modulus of this many bits.
    Rsa(usize),
    /// ECDSA/ECDH on this named curve.
    Ec(Oid),
}

/// A private key envelopd cannot read: it lives in a token (a smart card, a USB token, an HSM)
/// and signs or decrypts when asked. The key never enters envelopd's memory.
pub trait ExternalKey: Send + Sync {
    /// Where the key lives, for messages and logs (never a PIN).
    fn describe(&self) -> String;
    /// RSA or EC, and its size or curve.
    fn kind(&self) -> ExternalKind;
    /// The public key as certificates carry it in subjectPublicKey (RSA: the DER
    /// RSAPublicKey; EC: the uncompressed point).
    fn public_key(&self) -> Vec<u8>;
    /// Signs `message` hashed with `digest`: RSA with `padding` (the signature value), EC with
    /// ECDSA (r and s as fixed-width big-endian numbers, as PKCS#11 returns them).
    fn sign(&self, message: &[u8], digest: Digest, padding: RsaPadding) -> Result<Vec<u8>, Error>;
    /// RSA decryption of a wrapped content key (PKCS#1 v1.5, or OAEP with this digest for
    /// hash and MGF1). `Ok(None)` when the token found the ciphertext invalid; an error when the
    /// token itself failed (removed, locked), which the reader must be told.
    fn rsa_decrypt(
        &self,
        encrypted: &[u8],
        oaep: Option<Digest>,
    ) -> Result<Option<Zeroizing<Vec<u8>>>, Error>;
    /// The ECDH shared secret (X coordinate) with a peer's uncompressed point.
    fn ecdh(&self, peer_point: &[u8]) -> Result<Zeroizing<Vec<u8>>, Error>;
}

enum Kind {
    Rsa {
        sign: RsaKeyPair,
        decrypt: PrivateDecryptingKey,
    },
    Ecdsa {
        pkcs8: Zeroizing<Vec<u8>>,
        curve: Oid,
    },
    Ed25519(Ed25519KeyPair),
    External(std::sync::Arc<dyn ExternalKey>),
}

/// A private key usable for signing and (RSA) decryption.
pub struct PrivateKey {
    kind: Kind,
}

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material, only what kind of key this is.
        write!(f, "PrivateKey({})", self.describe())
    }
}

impl PrivateKey {
    /// A key held by a token.
    pub fn external(key: std::sync::Arc<dyn ExternalKey>) -> Self {
        PrivateKey {
            kind: Kind::External(key),
        }
    }

    /// Where the key lives, for listings: the token's description, or "a file".
    pub fn location(&self) -> String {
        match &self.kind {
            Kind::External(k) => k.describe(),
            _ => format!("{} in a file", self.describe()),
        }
    }

    /// Whether the key lives in a token (and cannot be copied).
    pub fn is_external(&self) -> bool {
        matches!(self.kind, Kind::External(_))
    }

    /// Loads a key from PEM or DER: PKCS#8 (`PRIVATE KEY`), encrypted PKCS#8
    /// (`ENCRYPTED PRIVATE KEY`, needs `password`) or PKCS#1 (`RSA PRIVATE KEY`).
    pub fn load(data: &[u8], password: Option<&[u8]>) -> Result<Self, Error> {
        let blocks = pem_blocks(data);
        let mut candidates: Vec<(String, Zeroizing<Vec<u8>>)> = blocks
            .into_iter()
            .filter(|(l, _)| l.ends_with("PRIVATE KEY"))
            .map(|(l, d)| (l, Zeroizing::new(d)))
            .collect();
        if candidates.is_empty() {
            if data.starts_with(b"-----") {
                return Err(Error::Key("no PRIVATE KEY block in the PEM file".into()));
            }
            candidates.push(("DER".into(), Zeroizing::new(data.to_vec())));
        }
        let (label, der) = candidates.remove(0);
        match label.as_str() {
            "RSA PRIVATE KEY" => Self::from_pkcs1_rsa(&der),
            "ENCRYPTED PRIVATE KEY" => Self::from_encrypted_pkcs8(&der, password),
            "PRIVATE KEY" => Self::from_pkcs8(&der),
            _ => {
                // DER of unknown kind: encrypted PKCS#8 first (it has a distinctive structure).
                if pkcs8::EncryptedPrivateKeyInfoRef::try_from(der.as_slice()).is_ok() {
                    Self::from_encrypted_pkcs8(&der, password)
                } else if pkcs8::PrivateKeyInfoRef::try_from(der.as_slice()).is_ok() {
                    Self::from_pkcs8(&der)
                } else {
                    Self::from_pkcs1_rsa(&der)
                }
            }
        }
    }

    fn from_encrypted_pkcs8(der: &[u8], password: Option<&[u8]>) -> Result<Self, Error> {
        let password = password.ok_or_else(|| {
            Error::Key("the private key is encrypted; a password is needed".into())
        })?;
        let info = pkcs8::EncryptedPrivateKeyInfoRef::try_from(der)
            .map_err(|e| Error::Key(format!("cannot parse encrypted PKCS#8 key: {e}")))?;
        let doc = info.decrypt(password).map_err(|_| {
            Error::Key(
                "cannot decrypt the private key: wrong password or unsupported scheme".into(),
            )
        })?;
        Self::from_pkcs8(doc.as_bytes())
    }

    fn from_pkcs1_rsa(der: &[u8]) -> Result<Self, Error> {
        let sign = RsaKeyPair::from_der(der).map_err(|e| match e.to_string().as_str() {
            "TooSmall" => rsa_rejected(e),
            _ => Error::Key(format!("not a usable RSA/PKCS#8 private key: {e}")),
        })?;
        // Re-derive a PKCS#8 form for the decryption key without leaving copies behind.
        let pkcs8 = wrap_pkcs1_in_pkcs8(der);
        let decrypt = PrivateDecryptingKey::from_pkcs8(&pkcs8).map_err(rsa_rejected)?;
        Ok(PrivateKey {
            kind: Kind::Rsa { sign, decrypt },
        })
    }

    /// Loads an unencrypted PKCS#8 DER key.
    pub fn from_pkcs8(der: &[u8]) -> Result<Self, Error> {
        let info = pkcs8::PrivateKeyInfoRef::try_from(der)
            .map_err(|e| Error::Key(format!("cannot parse PKCS#8 key: {e}")))?;
        let oid = info.algorithm.oid;
        let kind = match oid {
            alg::RSA_ENCRYPTION => Kind::Rsa {
                sign: RsaKeyPair::from_pkcs8(der).map_err(rsa_rejected)?,
                decrypt: PrivateDecryptingKey::from_pkcs8(der).map_err(rsa_rejected)?,
            },
            alg::ID_EC_PUBLIC_KEY => {
                let curve = info
                    .algorithm
                    .parameters
                    .and_then(|p| p.decode_as::<Oid>().ok())
                    .ok_or_else(|| Error::Key("EC key without a named curve".into()))?;
                let key = PrivateKey {
                    kind: Kind::Ecdsa {
                        pkcs8: Zeroizing::new(der.to_vec()),
                        curve,
                    },
                };
                // Validate now so a bad key fails at load time, not at first use.
                key.ecdsa_pair(key.default_digest())?;
                key.kind
            }
            alg::ID_ED25519 => Kind::Ed25519(
                Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
                    .map_err(|e| Error::Key(format!("Ed25519 key rejected: {e}")))?,
            ),
            other => {
                return Err(Error::Unsupported(format!(
                    "private key type {}",
                    alg::name(&other)
                )))
            }
        };
        Ok(PrivateKey { kind })
    }

    /// A short description such as `RSA-3072` for messages and logs.
    pub fn describe(&self) -> String {
        match &self.kind {
            Kind::Rsa { sign, .. } => format!("RSA-{}", sign.public_modulus_len() * 8),
            Kind::Ecdsa { curve, .. } => match *curve {
                alg::SECP256R1 => "ECDSA-P256".into(),
                alg::SECP384R1 => "ECDSA-P384".into(),
                _ => format!("EC({curve})"),
            },
            Kind::Ed25519(_) => "Ed25519".into(),
            Kind::External(k) => k.describe(),
        }
    }

    /// The public key in the raw form certificates carry in subjectPublicKey.
    pub fn public_key_bytes(&self) -> Vec<u8> {
        match &self.kind {
            Kind::Rsa { sign, .. } => sign.public_key().as_ref().to_vec(),
            Kind::Ecdsa { .. } => self
                .ecdsa_pair(self.default_digest())
                .map(|p| p.public_key().as_ref().to_vec())
                .unwrap_or_default(),
            Kind::Ed25519(k) => k.public_key().as_ref().to_vec(),
            Kind::External(k) => k.public_key(),
        }
    }

    /// True when this key belongs to the certificate.
    pub fn matches(&self, cert: &Cert) -> bool {
        let mine = self.public_key_bytes();
        let theirs = cert.spki().subject_public_key.raw_bytes();
        if mine == theirs {
            return true;
        }
        // aws-lc-rs may render the RSA public key as SubjectPublicKeyInfo; compare the inner key.
        spki::SubjectPublicKeyInfoRef::from_der(&mine)
            .map(|s| s.subject_public_key.raw_bytes() == theirs)
            .unwrap_or(false)
    }

    /// The digest used by default with this key (SHA-384 for P-384, SHA-256 otherwise).
    pub fn default_digest(&self) -> Digest {
        match &self.kind {
            Kind::Ecdsa { curve, .. } if *curve == alg::SECP384R1 => Digest::Sha384,
            Kind::External(k) if k.kind() == ExternalKind::Ec(alg::SECP384R1) => Digest::Sha384,
            Kind::Ed25519(_) => Digest::Sha512,
            _ => Digest::Sha256,
        }
    }

    fn ecdsa_pair(&self, digest: Digest) -> Result<EcdsaKeyPair, Error> {
        let Kind::Ecdsa { pkcs8, curve } = &self.kind else {
            return Err(Error::Key("not an EC key".into()));
        };
        let alg = match (*curve, digest) {
            (alg::SECP256R1, Digest::Sha256) => &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            (alg::SECP384R1, Digest::Sha384) => &signature::ECDSA_P384_SHA384_ASN1_SIGNING,
            (c, d) => {
                return Err(Error::Unsupported(format!(
                    "ECDSA signing on {} with {}",
                    alg::name(&c),
                    d.micalg()
                )))
            }
        };
        EcdsaKeyPair::from_pkcs8(alg, pkcs8)
            .map_err(|e| Error::Key(format!("EC key rejected: {e}")))
    }

    /// Signs `message`, returning (signature algorithm identifier, signature value).
    pub fn sign(
        &self,
        message: &[u8],
        digest: Digest,
        padding: RsaPadding,
    ) -> Result<(spki::AlgorithmIdentifierOwned, Vec<u8>), Error> {
        let rng = SystemRandom::new();
        let failed = |_| Error::Key("signing failed".into());
        match &self.kind {
            Kind::Rsa { sign, .. } => {
                let (encoding, alg_id): (&'static dyn signature::RsaEncoding, _) =
                    match (padding, digest) {
                        (RsaPadding::Pkcs1v15, Digest::Sha256) => (
                            &signature::RSA_PKCS1_SHA256,
                            plain_alg(alg::SHA256_WITH_RSA),
                        ),
                        (RsaPadding::Pkcs1v15, Digest::Sha384) => (
                            &signature::RSA_PKCS1_SHA384,
                            plain_alg(alg::SHA384_WITH_RSA),
                        ),
                        (RsaPadding::Pkcs1v15, Digest::Sha512) => (
                            &signature::RSA_PKCS1_SHA512,
                            plain_alg(alg::SHA512_WITH_RSA),
                        ),
                        (RsaPadding::Pss, Digest::Sha256) => {
                            (&signature::RSA_PSS_SHA256, pss_alg(Digest::Sha256)?)
                        }
                        (RsaPadding::Pss, Digest::Sha384) => {
                            (&signature::RSA_PSS_SHA384, pss_alg(Digest::Sha384)?)
                        }
                        (RsaPadding::Pss, Digest::Sha512) => {
                            (&signature::RSA_PSS_SHA512, pss_alg(Digest::Sha512)?)
                        }
                        (_, Digest::Sha1) => {
                            return Err(Error::Unsupported("signing with SHA-1".into()))
                        }
                    };
                let mut sig = vec![0u8; sign.public_modulus_len()];
                sign.sign(encoding, &rng, message, &mut sig)
                    .map_err(failed)?;
                Ok((alg_id, sig))
            }
            Kind::Ecdsa { .. } => {
                let pair = self.ecdsa_pair(digest)?;
                let sig = pair.sign(&rng, message).map_err(failed)?;
                let oid = match digest {
                    Digest::Sha256 => alg::ECDSA_WITH_SHA256,
                    Digest::Sha384 => alg::ECDSA_WITH_SHA384,
                    _ => alg::ECDSA_WITH_SHA512,
                };
                Ok((plain_alg(oid), sig.as_ref().to_vec()))
            }
            Kind::Ed25519(k) => Ok((
                plain_alg(alg::ID_ED25519),
                k.sign(message).as_ref().to_vec(),
            )),
            Kind::External(k) => {
                if digest == Digest::Sha1 {
                    return Err(Error::Unsupported("signing with SHA-1".into()));
                }
                match k.kind() {
                    ExternalKind::Rsa(_) => {
                        let alg_id = match (padding, digest) {
                            (RsaPadding::Pkcs1v15, Digest::Sha384) => {
                                plain_alg(alg::SHA384_WITH_RSA)
                            }
                            (RsaPadding::Pkcs1v15, Digest::Sha512) => {
                                plain_alg(alg::SHA512_WITH_RSA)
                            }
                            (RsaPadding::Pkcs1v15, _) => plain_alg(alg::SHA256_WITH_RSA),
                            (RsaPadding::Pss, d) => pss_alg(d)?,
                        };
                        Ok((alg_id, k.sign(message, digest, padding)?))
                    }
                    ExternalKind::Ec(_) => {
                        let raw = k.sign(message, digest, padding)?;
                        let oid = match digest {
                            Digest::Sha256 => alg::ECDSA_WITH_SHA256,
                            Digest::Sha384 => alg::ECDSA_WITH_SHA384,
                            _ => alg::ECDSA_WITH_SHA512,
                        };
                        Ok((plain_alg(oid), ecdsa_raw_to_der(&raw)?))
                    }
                }
            }
        }
    }

    /// The ECDH shared secret (X coordinate) with a peer's uncompressed public point, for RFC 5753
    /// key agreement; only EC P-256/P-384 keys can do this.
    pub fn ecdh(&self, peer_point: &[u8]) -> Result<Zeroizing<Vec<u8>>, Error> {
        if let Kind::External(k) = &self.kind {
            return match k.kind() {
                ExternalKind::Ec(_) => k.ecdh(peer_point),
                ExternalKind::Rsa(_) => Err(Error::Key(
                    "this key cannot do ECDH key agreement (it is not an EC key)".into(),
                )),
            };
        }
        let Kind::Ecdsa { pkcs8, curve } = &self.kind else {
            return Err(Error::Key(
                "this key cannot do ECDH key agreement (it is not an EC key)".into(),
            ));
        };
        let alg = ecdh_alg(curve)?;
        let key = aws_lc_rs::agreement::PrivateKey::from_private_key_der(alg, pkcs8)
            .map_err(|e| Error::Key(format!("EC key rejected for ECDH: {e}")))?;
        aws_lc_rs::agreement::agree(
            &key,
            aws_lc_rs::agreement::UnparsedPublicKey::new(alg, peer_point),
            Error::DecryptFailed,
            |z| Ok(Zeroizing::new(z.to_vec())),
        )
    }

    /// True for RSA keys (the only kind used for key transport).
    pub fn is_rsa(&self) -> bool {
        match &self.kind {
            Kind::Rsa { .. } => true,
            Kind::External(k) => matches!(k.kind(), ExternalKind::Rsa(_)),
            _ => false,
        }
    }

    /// Unwraps an RSA-encrypted content-encryption key.
    ///
    /// For PKCS#1 v1.5 any failure returns a random key of `expected_len` instead of an error
    /// (implicit rejection, RFC 3218 §2.3.2): the content decryption then fails the same way as with
    /// a wrong key, so no padding oracle (Bleichenbacher/Marvin) is exposed to an attacker.
    pub fn rsa_decrypt(
        &self,
        encrypted: &[u8],
        oaep: Option<&'static OaepAlgorithm>,
        expected_len: usize,
    ) -> Result<Zeroizing<Vec<u8>>, Error> {
        if let Kind::External(k) = &self.kind {
            if !self.is_rsa() {
                return Err(Error::Key(
                    "this key cannot decrypt RSA key transport (it is not an RSA key)".into(),
                ));
            }
            let digest = match oaep {
                None => None,
                Some(o) if std::ptr::eq(o, &aws_lc_rs::rsa::OAEP_SHA1_MGF1SHA1) => {
                    Some(Digest::Sha1)
                }
                Some(o) if std::ptr::eq(o, &aws_lc_rs::rsa::OAEP_SHA256_MGF1SHA256) => {
                    Some(Digest::Sha256)
                }
                Some(o) if std::ptr::eq(o, &aws_lc_rs::rsa::OAEP_SHA384_MGF1SHA384) => {
                    Some(Digest::Sha384)
                }
                Some(o) if std::ptr::eq(o, &aws_lc_rs::rsa::OAEP_SHA512_MGF1SHA512) => {
                    Some(Digest::Sha512)
                }
                Some(_) => return Err(Error::Unsupported("this OAEP variant with a token".into())),
            };
            return match (k.rsa_decrypt(encrypted, digest)?, digest) {
                (Some(key), _) if digest.is_some() || key.len() == expected_len => Ok(key),
                // OAEP failures are not an oracle the way PKCS#1 v1.5 ones are.
                (_, Some(_)) => Err(Error::DecryptFailed),
                // PKCS#1 v1.5: implicit rejection, as for keys in memory.
                (_, None) => {
                    let mut random = Zeroizing::new(vec![0u8; expected_len]);
                    aws_lc_rs::rand::fill(&mut random).map_err(|_| Error::DecryptFailed)?;
                    Ok(random)
                }
            };
        }
        let Kind::Rsa { decrypt, .. } = &self.kind else {
            return Err(Error::Key(
                "this key cannot decrypt RSA key transport (it is not an RSA key)".into(),
            ));
        };
        let mut out = Zeroizing::new(vec![0u8; decrypt.key_size_bytes()]);
        match oaep {
            Some(oaep) => {
                let key = OaepPrivateDecryptingKey::new(decrypt.clone())
                    .map_err(|_| Error::Key("RSA key unusable for OAEP".into()))?;
                let n = key
                    .decrypt(oaep, encrypted, &mut out, None)
                    .map_err(|_| Error::DecryptFailed)?
                    .len();
                out.truncate(n);
                Ok(out)
            }
            None => {
                let key = Pkcs1PrivateDecryptingKey::new(decrypt.clone())
                    .map_err(|_| Error::Key("RSA key unusable for PKCS#1 v1.5".into()))?;
                let mut random = Zeroizing::new(vec![0u8; expected_len]);
                aws_lc_rs::rand::fill(&mut random).map_err(|_| Error::DecryptFailed)?;
                match key.decrypt(encrypted, &mut out) {
                    Ok(pt) if pt.len() == expected_len => {
                        let n = pt.len();
                        out.truncate(n);
                        Ok(out)
                    }
                    _ => Ok(random),
                }
            }
        }
    }
}

/// An ECDSA signature as PKCS#11 gives it (r and s, each as wide as the curve's order) in the
/// DER form CMS carries (`Ecdsa-Sig-Value`, RFC 5753).
pub fn ecdsa_raw_to_der(raw: &[u8]) -> Result<Vec<u8>, Error> {
    use der::Encode;
    if raw.is_empty() || raw.len() % 2 != 0 || raw.len() > 264 {
        return Err(Error::Key(format!(
            "the token returned an ECDSA signature of {} bytes",
            raw.len()
        )));
    }
    let (r, s) = raw.split_at(raw.len() / 2);
    fn int(b: &[u8]) -> Result<der::asn1::UintRef<'_>, Error> {
        der::asn1::UintRef::new(b).map_err(|e| Error::Key(format!("ECDSA signature: {e}")))
    }
    let seq = EcdsaSig {
        r: int(r)?,
        s: int(s)?,
    };
    seq.to_der()
        .map_err(|e| Error::Key(format!("ECDSA signature: {e}")))
}

#[derive(der::Sequence)]
struct EcdsaSig<'a> {
    r: der::asn1::UintRef<'a>,
    s: der::asn1::UintRef<'a>,
}

/// The `aws-lc-rs` ECDH algorithm for a named curve.
pub fn ecdh_alg(curve: &Oid) -> Result<&'static aws_lc_rs::agreement::Algorithm, Error> {
    match *curve {
        alg::SECP256R1 => Ok(&aws_lc_rs::agreement::ECDH_P256),
        alg::SECP384R1 => Ok(&aws_lc_rs::agreement::ECDH_P384),
        other => Err(Error::Unsupported(format!(
            "ECDH on curve {}",
            alg::name(&other)
        ))),
    }
}

fn rsa_rejected(e: aws_lc_rs::error::KeyRejected) -> Error {
    match e.to_string().as_str() {
        "TooSmall" => Error::Key(
            "RSA keys shorter than 2048 bits are refused as too weak (NIST SP 800-131A)".into(),
        ),
        other => Error::Key(format!("RSA key rejected: {other}")),
    }
}

fn plain_alg(oid: Oid) -> spki::AlgorithmIdentifierOwned {
    spki::AlgorithmIdentifierOwned {
        oid,
        parameters: None,
    }
}

/// RSASSA-PSS AlgorithmIdentifier with hash, MGF1(hash) and salt length = hash length.
fn pss_alg(digest: Digest) -> Result<spki::AlgorithmIdentifierOwned, Error> {
    use der::Encode;
    let hash = spki::AlgorithmIdentifierOwned {
        oid: digest.oid(),
        parameters: None,
    };
    let mgf = spki::AlgorithmIdentifierOwned {
        oid: alg::ID_MGF1,
        parameters: Some(der::Any::encode_from(&hash).map_err(der_err)?),
    };
    let salt: u32 = match digest {
        Digest::Sha384 => 48,
        Digest::Sha512 => 64,
        _ => 32,
    };
    let mut content = Vec::new();
    der::asn1::ContextSpecific {
        tag_number: der::TagNumber(0),
        tag_mode: der::TagMode::Explicit,
        value: hash,
    }
    .encode_to_vec(&mut content)
    .map_err(der_err)?;
    der::asn1::ContextSpecific {
        tag_number: der::TagNumber(1),
        tag_mode: der::TagMode::Explicit,
        value: mgf,
    }
    .encode_to_vec(&mut content)
    .map_err(der_err)?;
    der::asn1::ContextSpecific {
        tag_number: der::TagNumber(2),
        tag_mode: der::TagMode::Explicit,
        value: salt,
    }
    .encode_to_vec(&mut content)
    .map_err(der_err)?;
    let params = der::Any::new(der::Tag::Sequence, content).map_err(der_err)?;
    Ok(spki::AlgorithmIdentifierOwned {
        oid: alg::ID_RSASSA_PSS,
        parameters: Some(params),
    })
}

fn der_err(e: der::Error) -> Error {
    Error::Malformed(format!("DER encoding: {e}"))
}

/// Wraps a PKCS#1 RSAPrivateKey in a PKCS#8 PrivateKeyInfo (version 0, rsaEncryption, NULL).
fn wrap_pkcs1_in_pkcs8(pkcs1: &[u8]) -> Zeroizing<Vec<u8>> {
    let mut inner = Zeroizing::new(Vec::with_capacity(pkcs1.len() + 32));
    inner.extend_from_slice(&[0x02, 0x01, 0x00]);
    inner.extend_from_slice(&[
        0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
    ]);
    inner.push(0x04);
    push_len(&mut inner, pkcs1.len());
    inner.extend_from_slice(pkcs1);
    let mut out = Zeroizing::new(Vec::with_capacity(inner.len() + 6));
    out.push(0x30);
    push_len(&mut out, inner.len());
    out.extend_from_slice(&inner);
    out
}

fn push_len(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
    } else if len < 0x100 {
        out.extend_from_slice(&[0x81, len as u8]);
    } else if len < 0x10000 {
        out.extend_from_slice(&[0x82, (len >> 8) as u8, len as u8]);
    } else {
        out.extend_from_slice(&[0x83, (len >> 16) as u8, (len >> 8) as u8, len as u8]);
    }
}

/// A private key with its certificate and chain, e.g. from a PKCS#12 file.
#[derive(Debug)]
pub struct Identity {
    /// The private key.
    pub key: PrivateKey,
    /// The certificate belonging to the key.
    pub cert: Cert,
    /// Further certificates (intermediate and root CAs) from the same source.
    pub chain: Vec<Cert>,
}

impl Identity {
    /// Builds an identity from a key and certificates, picking the certificate that matches the key.
    pub fn new(key: PrivateKey, certs: Vec<Cert>) -> Result<Self, Error> {
        let pos = certs.iter().position(|c| key.matches(c)).ok_or_else(|| {
            Error::Key("none of the given certificates belongs to the private key".into())
        })?;
        let mut certs = certs;
        let cert = certs.remove(pos);
        Ok(Identity {
            key,
            cert,
            chain: certs,
        })
    }

    /// Loads a PKCS#12 file (PBES2/AES as well as legacy 3DES/RC2 exports from Windows).
    ///
    /// A file may hold several keys (RFC 9216's hold a signing and an encryption key); this
    /// returns the one whose certificate may sign, or the only one. See [`Identity::all_from_pkcs12`].
    pub fn from_pkcs12(data: &[u8], password: &str) -> Result<Self, Error> {
        let mut all = Self::all_from_pkcs12(data, password)?;
        let pos = Self::signing_position(&all);
        Ok(all.swap_remove(pos))
    }

    /// Which of a file's identities signs: the first whose certificate may sign mail, else the
    /// first (what [`Identity::from_pkcs12`] returns).
    pub fn signing_position(all: &[Identity]) -> usize {
        all.iter()
            .position(|id| id.cert.smime_signing_problem().is_none())
            .unwrap_or(0)
    }

    /// Loads every key of a PKCS#12 file, each with its certificate and all other certificates
    /// of the file as its chain.
    pub fn all_from_pkcs12(data: &[u8], password: &str) -> Result<Vec<Self>, Error> {
        let store = open_pkcs12(data, password)?;
        let mut certs: Vec<Cert> = Vec::new();
        let mut keys = Vec::new();
        for (_, entry) in store.entries() {
            match entry {
                p12_keystore::KeyStoreEntry::PrivateKeyChain(chain) => {
                    for c in chain.certs() {
                        let c = Cert::from_der(c.as_der())?;
                        if !certs.contains(&c) {
                            certs.push(c);
                        }
                    }
                    keys.push(PrivateKey::from_pkcs8(chain.key().as_der())?);
                }
                p12_keystore::KeyStoreEntry::Certificate(c) => {
                    let c = Cert::from_der(c.as_der())?;
                    if !certs.contains(&c) {
                        certs.push(c);
                    }
                }
                p12_keystore::KeyStoreEntry::Secret(_) => {}
            }
        }
        if keys.is_empty() {
            return Err(Error::Key("the PKCS#12 file holds no private key".into()));
        }
        keys.into_iter()
            .map(|k| Self::new(k, certs.clone()))
            .collect()
    }
}

/// A private key as PKCS#8 DER (wiped when dropped) with the certificate that belongs to it.
pub type KeyWithCert = (Zeroizing<Vec<u8>>, Cert);

/// The private keys of a PKCS#12 file as PKCS#8 DER, each with the certificate that belongs to
/// it, for moving them into a token (`envelopd keys import --to-token`); the signing key first.
pub fn pkcs12_keys(data: &[u8], password: &str) -> Result<Vec<KeyWithCert>, Error> {
    let store = open_pkcs12(data, password)?;
    let mut out: Vec<KeyWithCert> = Vec::new();
    for (_, entry) in store.entries() {
        if let p12_keystore::KeyStoreEntry::PrivateKeyChain(chain) = entry {
            let der = Zeroizing::new(chain.key().as_der().to_vec());
            let key = PrivateKey::from_pkcs8(&der)?;
            let cert = chain
                .certs()
                .iter()
                .filter_map(|c| Cert::from_der(c.as_der()).ok())
                .find(|c| key.matches(c))
                .ok_or_else(|| Error::Key("a key in the PKCS#12 file has no certificate".into()))?;
            out.push((der, cert));
        }
    }
    if out.is_empty() {
        return Err(Error::Key("the PKCS#12 file holds no private key".into()));
    }
    out.sort_by_key(|(_, c)| c.smime_signing_problem().is_some());
    Ok(out)
}

/// Opens a PKCS#12 file from any common exporter: OpenSSL 3 (PBES2/AES), `-legacy` and
/// Windows/Outlook (PBE-SHA1-3DES, SHA-1 MAC), and NSS (`pk12util`, Thunderbird's and Firefox's
/// certificate backups), which write BER with indefinite lengths that `p12-keystore` (DER only)
/// refuses. Such a file is checked against its MAC exactly as written, then read in its DER form.
/// Errors name the cause: a wrong password, an unsupported algorithm, or a damaged file.
fn open_pkcs12(data: &[u8], password: &str) -> Result<p12_keystore::KeyStore, Error> {
    let open = |bytes: &[u8]| {
        p12_keystore::KeyStore::from_pkcs12(
            bytes,
            password,
            p12_keystore::Pkcs12ImportPolicy::Relaxed,
        )
    };
    let first = match open(data) {
        Ok(store) => return Ok(store),
        Err(e) => e,
    };
    if !matches!(first, p12_keystore::error::Error::DerError(_)) {
        return Err(pkcs12_error(first));
    }
    // Perhaps BER: the outer PFX normalised, its authSafe contents (the bytes the MAC covers)
    // kept as they are for the MAC check.
    let damaged =
        |why: String| Error::Key(format!("the PKCS#12 file is damaged or not PKCS#12: {why}"));
    let outer = crate::ber::normalize(data).map_err(|e| damaged(e.to_string()))?;
    let (tag, pfx, _) = crate::ber::read_tlv(&outer).map_err(|e| damaged(e.to_string()))?;
    let parts = crate::ber::children(pfx).map_err(|e| damaged(e.to_string()))?;
    let (Some(version), Some(auth_safe)) = (parts.first(), parts.get(1)) else {
        return Err(damaged("no version and authSafe".into()));
    };
    let mac = parts.get(2);
    let (_, ci, _) = crate::ber::read_tlv(auth_safe).map_err(|e| damaged(e.to_string()))?;
    let ci = crate::ber::children(ci).map_err(|e| damaged(e.to_string()))?;
    let inner = match ci.as_slice() {
        [oid, explicit] if *oid == DATA_OID => {
            let (_, octets, _) =
                crate::ber::read_tlv(explicit).map_err(|e| damaged(e.to_string()))?;
            let (t, inner, _) = crate::ber::read_tlv(octets).map_err(|e| damaged(e.to_string()))?;
            if t != 0x04 {
                return Err(damaged("the authSafe is not an OCTET STRING".into()));
            }
            inner
        }
        _ => {
            return Err(Error::Key(
                "the PKCS#12 file is protected by a public key, which envelopd does not support"
                    .into(),
            ))
        }
    };
    let rebuild = |inner: &[u8], mac: Option<&&[u8]>| {
        let octets = crate::ber::tlv(0x04, &[inner]);
        let explicit = crate::ber::tlv(0xa0, &[&octets]);
        let ci = crate::ber::tlv(0x30, &[DATA_OID, &explicit]);
        let mut fields: Vec<&[u8]> = vec![version, &ci];
        if let Some(m) = mac {
            fields.push(m);
        }
        Zeroizing::new(crate::ber::tlv(tag, &fields))
    };
    let normal = crate::ber::normalize(inner).map_err(|e| damaged(e.to_string()))?;
    if normal.as_ref() == inner && outer.as_ref() == data {
        // It was DER all along: the first answer stands.
        return Err(pkcs12_error(first));
    }
    if mac.is_some() {
        // The MAC over the contents exactly as written: a wrong password shows here.
        match open(&rebuild(inner, mac)) {
            Ok(store) => return Ok(store),
            Err(p12_keystore::error::Error::DerError(_)) => {}
            Err(e) => return Err(pkcs12_error(e)),
        }
    }
    // Integrity checked (or there is no MAC): the same contents in DER, without the MAC that
    // covered their BER form.
    open(&rebuild(&normal, None)).map_err(pkcs12_error)
}

/// `id-data`'s OID in DER (1.2.840.113549.1.7.1).
const DATA_OID: &[u8] = &[
    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01,
];

/// A `p12-keystore` error in the words a practice can act on.
fn pkcs12_error(e: p12_keystore::error::Error) -> Error {
    use p12_keystore::error::Error as E;
    Error::Key(match e {
        E::MacError(_) => {
            "cannot open the PKCS#12 file: wrong password (its integrity check does not match)"
                .into()
        }
        E::UnpadError => "cannot open the PKCS#12 file: wrong password, or a damaged file".into(),
        E::UnsupportedEncryptionScheme
        | E::UnsupportedMacAlgorithm
        | E::UnsupportedContentType
        | E::UnsupportedCertificateType => format!(
            "the PKCS#12 file uses an algorithm envelopd does not support ({e}); export it again with AES (PBES2)"
        ),
        other => format!("the PKCS#12 file is damaged or not PKCS#12: {other}"),
    })
}

/// The RSA-OAEP variant named by RSAES-OAEP-params (SHA-1 when absent, per RFC 3560).
pub fn oaep_from_params(params: Option<&der::Any>) -> Result<&'static OaepAlgorithm, Error> {
    #[derive(der::Sequence)]
    struct OaepParams {
        #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
        hash: Option<spki::AlgorithmIdentifierOwned>,
        #[asn1(context_specific = "1", tag_mode = "EXPLICIT", optional = "true")]
        mgf: Option<spki::AlgorithmIdentifierOwned>,
        #[asn1(context_specific = "2", tag_mode = "EXPLICIT", optional = "true")]
        source: Option<spki::AlgorithmIdentifierOwned>,
    }
    let (hash, mgf_hash) = match params {
        None => (alg::ID_SHA1, alg::ID_SHA1),
        Some(p) => {
            let p: OaepParams = p
                .decode_as()
                .map_err(|e| Error::Malformed(format!("RSA-OAEP parameters: {e}")))?;
            let hash = p.hash.map_or(alg::ID_SHA1, |h| h.oid);
            let mgf_hash = p
                .mgf
                .and_then(|m| m.parameters)
                .and_then(|a| a.decode_as::<spki::AlgorithmIdentifierOwned>().ok())
                .map_or(alg::ID_SHA1, |h| h.oid);
            if p.source.is_some() {
                return Err(Error::Unsupported("RSA-OAEP with a label".into()));
            }
            (hash, mgf_hash)
        }
    };
    match (hash, mgf_hash) {
        (alg::ID_SHA1, alg::ID_SHA1) => Ok(&aws_lc_rs::rsa::OAEP_SHA1_MGF1SHA1),
        (alg::ID_SHA256, alg::ID_SHA256) => Ok(&aws_lc_rs::rsa::OAEP_SHA256_MGF1SHA256),
        (alg::ID_SHA384, alg::ID_SHA384) => Ok(&aws_lc_rs::rsa::OAEP_SHA384_MGF1SHA384),
        (alg::ID_SHA512, alg::ID_SHA512) => Ok(&aws_lc_rs::rsa::OAEP_SHA512_MGF1SHA512),
        (h, m) => Err(Error::Unsupported(format!(
            "RSA-OAEP with hash {} and MGF1 hash {}",
            alg::name(&h),
            alg::name(&m)
        ))),
    }
}
