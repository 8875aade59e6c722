//! Signature verification: maps an X.509/CMS signature algorithm identifier and a public key onto
//! the matching `aws-lc-rs` verification algorithm. Refused algorithms (DSA, MD5) name themselves.

use aws_lc_rs::signature::{self, UnparsedPublicKey, VerificationAlgorithm};
use der::asn1::ObjectIdentifier as Oid;
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};

use crate::alg::{self, Digest};
use crate::Error;

/// RSASSA-PSS-params (RFC 4055); only the hash is needed, MGF1 must use the same hash.
#[derive(der::Sequence)]
struct PssParams {
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    hash: Option<AlgorithmIdentifierOwned>,
    #[asn1(context_specific = "1", tag_mode = "EXPLICIT", optional = "true")]
    mgf: Option<AlgorithmIdentifierOwned>,
    #[asn1(context_specific = "2", tag_mode = "EXPLICIT", optional = "true")]
    salt_len: Option<u32>,
    #[asn1(context_specific = "3", tag_mode = "EXPLICIT", optional = "true")]
    trailer: Option<u32>,
}

/// The hash and salt length named by RSASSA-PSS parameters (SHA-1 and 20 when absent, RFC 4055).
pub fn pss_params(params: Option<&der::Any>) -> Result<(Digest, u16), Error> {
    let Some(params) = params else {
        return Ok((Digest::Sha1, 20));
    };
    let p: PssParams = params
        .decode_as()
        .map_err(|e| Error::Malformed(format!("RSASSA-PSS parameters: {e}")))?;
    let hash = p
        .hash
        .as_ref()
        .map_or(Ok(Digest::Sha1), |h| Digest::from_oid(&h.oid))?;
    if let Some(mgf) = &p.mgf {
        let inner = mgf
            .parameters
            .as_ref()
            .and_then(|a| a.decode_as::<AlgorithmIdentifierOwned>().ok());
        if mgf.oid != alg::ID_MGF1 || inner.map(|i| i.oid) != Some(hash.oid()) {
            return Err(Error::Unsupported(
                "RSA-PSS with a mask generation hash different from the message hash".into(),
            ));
        }
    }
    if p.trailer.is_some_and(|t| t != 1) {
        return Err(Error::Unsupported(
            "RSA-PSS with a trailer field other than 1".into(),
        ));
    }
    let salt = u16::try_from(p.salt_len.unwrap_or(20))
        .map_err(|_| Error::Malformed("RSA-PSS salt length out of range".into()))?;
    Ok((hash, salt))
}

/// True when `sig_alg` signs a SHA-1 digest (RSA PKCS #1, ECDSA or RSA-PSS over SHA-1), whose
/// chosen-prefix collisions are practical (SHAmbles, 2020): such a signature no longer shows the
/// signer signed this very data. One rule for certificates, CRLs and OCSP answers.
pub fn is_sha1(sig_alg: &AlgorithmIdentifierOwned) -> bool {
    match sig_alg.oid {
        alg::SHA1_WITH_RSA | alg::ECDSA_WITH_SHA1 => true,
        alg::ID_RSASSA_PSS => matches!(
            pss_params(sig_alg.parameters.as_ref()),
            Ok((Digest::Sha1, _))
        ),
        _ => false,
    }
}

fn curve_of(spki: &SubjectPublicKeyInfoOwned) -> Option<Oid> {
    spki.algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.decode_as::<Oid>().ok())
}

/// Verifies `signature` over `message` with the key in `spki`.
///
/// `digest` is the CMS digestAlgorithm, needed where the signature algorithm is the bare key type
/// (`rsaEncryption`, `id-ecPublicKey`) as OpenSSL and others write it.
pub fn verify(
    spki: &SubjectPublicKeyInfoOwned,
    sig_alg: &AlgorithmIdentifierOwned,
    digest: Option<Digest>,
    message: &[u8],
    signature: &[u8],
) -> Result<(), Error> {
    let key_alg = spki.algorithm.oid;
    let key_bytes = spki
        .subject_public_key
        .as_bytes()
        .ok_or_else(|| Error::Certificate("public key is not a whole number of bytes".into()))?;
    let refuse = |what: &Oid| {
        Err(Error::Unsupported(format!(
            "signature algorithm {}",
            alg::name(what)
        )))
    };
    let algo: &'static dyn VerificationAlgorithm = match sig_alg.oid {
        alg::ID_DSA | alg::DSA_WITH_SHA1 | alg::MD5_WITH_RSA => return refuse(&sig_alg.oid),
        _ if key_alg == alg::ID_DSA => return refuse(&key_alg),
        alg::RSA_ENCRYPTION
        | alg::SHA1_WITH_RSA
        | alg::SHA256_WITH_RSA
        | alg::SHA384_WITH_RSA
        | alg::SHA512_WITH_RSA => {
            let d = match sig_alg.oid {
                alg::SHA1_WITH_RSA => Digest::Sha1,
                alg::SHA256_WITH_RSA => Digest::Sha256,
                alg::SHA384_WITH_RSA => Digest::Sha384,
                alg::SHA512_WITH_RSA => Digest::Sha512,
                _ => digest.ok_or_else(|| {
                    Error::Malformed("rsaEncryption signature without a digest algorithm".into())
                })?,
            };
            match d {
                Digest::Sha1 => &signature::RSA_PKCS1_1024_8192_SHA1_FOR_LEGACY_USE_ONLY,
                Digest::Sha256 => &signature::RSA_PKCS1_1024_8192_SHA256_FOR_LEGACY_USE_ONLY,
                Digest::Sha384 => &signature::RSA_PKCS1_2048_8192_SHA384,
                Digest::Sha512 => &signature::RSA_PKCS1_1024_8192_SHA512_FOR_LEGACY_USE_ONLY,
            }
        }
        alg::ID_RSASSA_PSS => {
            // The salt length is a run-time parameter (OpenSSL uses the maximum by default), so
            // the parameters are built here and used directly rather than as a `'static`.
            let (d, salt) = pss_params(sig_alg.parameters.as_ref())?;
            let base = match d {
                Digest::Sha256 => signature::RSA_PSS_2048_8192_SHA256,
                Digest::Sha384 => signature::RSA_PSS_2048_8192_SHA384,
                Digest::Sha512 => signature::RSA_PSS_2048_8192_SHA512,
                Digest::Sha1 => return Err(Error::Unsupported("RSA-PSS with SHA-1".into())),
            };
            let params = base.with_pss_salt_length(signature::RsaPssSaltLength::Custom(salt));
            return params
                .verify_sig(key_bytes, message, signature)
                .map_err(|_| {
                    Error::BadSignature("the signature does not match the signed data".into())
                });
        }
        alg::ECDSA_WITH_SHA1
        | alg::ECDSA_WITH_SHA256
        | alg::ECDSA_WITH_SHA384
        | alg::ECDSA_WITH_SHA512
        | alg::ID_EC_PUBLIC_KEY => {
            let d = match sig_alg.oid {
                alg::ECDSA_WITH_SHA1 => Digest::Sha1,
                alg::ECDSA_WITH_SHA256 => Digest::Sha256,
                alg::ECDSA_WITH_SHA384 => Digest::Sha384,
                alg::ECDSA_WITH_SHA512 => Digest::Sha512,
                _ => digest.unwrap_or(Digest::Sha256),
            };
            match (curve_of(spki), d) {
                (Some(alg::SECP256R1), Digest::Sha1) => &signature::ECDSA_P256_SHA1_ASN1,
                (Some(alg::SECP256R1), Digest::Sha256) => &signature::ECDSA_P256_SHA256_ASN1,
                (Some(alg::SECP256R1), Digest::Sha384) => &signature::ECDSA_P256_SHA384_ASN1,
                (Some(alg::SECP256R1), Digest::Sha512) => &signature::ECDSA_P256_SHA512_ASN1,
                (Some(alg::SECP384R1), Digest::Sha256) => &signature::ECDSA_P384_SHA256_ASN1,
                (Some(alg::SECP384R1), Digest::Sha384) => &signature::ECDSA_P384_SHA384_ASN1,
                (Some(alg::SECP384R1), Digest::Sha512) => &signature::ECDSA_P384_SHA512_ASN1,
                (c, d) => {
                    return Err(Error::Unsupported(format!(
                        "ECDSA on curve {} with {}",
                        c.map_or("?".into(), |c| c.to_string()),
                        d.micalg()
                    )))
                }
            }
        }
        alg::ID_ED25519 => &signature::ED25519,
        other => return refuse(&other),
    };
    UnparsedPublicKey::new(algo, key_bytes)
        .verify(message, signature)
        .map_err(|_| Error::BadSignature("the signature does not match the signed data".into()))
}
