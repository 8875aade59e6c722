//! The ESS signing-certificate attributes (RFC 2634 §5.4 `signingCertificate`, RFC 5035
//! `signingCertificateV2`): the signer names, inside the signed attributes, the certificate it
//! signed with, by a hash of that certificate.
//!
//! Why it matters: the signer identifier and the certificates of a SignedData are outside the
//! signature. Where one key is certified twice (a renewal for a new address, or a CA that
//! certified a key for someone who does not hold it), a signature made under one certificate
//! verifies under the other too, and a man in the middle can swap the certificate and the
//! identifier, so that the message is shown as signed by the other identity. With the attribute,
//! the swapped certificate no longer matches what was signed. envelopd writes
//! `signingCertificateV2` into its own signatures and, when a received signature carries either
//! attribute, accepts only the certificate it names (the first entry, RFC 5035 §3).

use der::asn1::OctetString;
use der::{Any, Decode, Encode};
use spki::AlgorithmIdentifierOwned;
use x509_cert::attr::Attributes;

use crate::alg::{self, Digest};
use crate::cert::Cert;
use crate::signed::der_err;
use crate::Error;

/// `ESSCertIDv2 ::= SEQUENCE { hashAlgorithm DEFAULT id-sha256, certHash, issuerSerial OPTIONAL }`.
/// The issuer and serial are not compared: the hash already names exactly one certificate.
#[derive(der::Sequence)]
struct EssCertIdV2 {
    #[asn1(optional = "true")]
    hash_algorithm: Option<AlgorithmIdentifierOwned>,
    cert_hash: OctetString,
    #[asn1(optional = "true")]
    issuer_serial: Option<Any>,
}

/// `SigningCertificateV2 ::= SEQUENCE { certs SEQUENCE OF ESSCertIDv2, policies OPTIONAL }`.
#[derive(der::Sequence)]
struct SigningCertificateV2 {
    certs: Vec<EssCertIdV2>,
    #[asn1(optional = "true")]
    policies: Option<Any>,
}

/// `ESSCertID ::= SEQUENCE { certHash (SHA-1), issuerSerial OPTIONAL }`.
#[derive(der::Sequence)]
struct EssCertId {
    cert_hash: OctetString,
    #[asn1(optional = "true")]
    issuer_serial: Option<Any>,
}

/// `SigningCertificate ::= SEQUENCE { certs SEQUENCE OF ESSCertID, policies OPTIONAL }`.
#[derive(der::Sequence)]
struct SigningCertificate {
    certs: Vec<EssCertId>,
    #[asn1(optional = "true")]
    policies: Option<Any>,
}

/// The value of a `signingCertificateV2` attribute naming `cert` by its SHA-256 hash (the
/// default algorithm, so it is left out, as DER requires for a DEFAULT value).
pub(crate) fn signing_certificate_v2(cert: &Cert) -> Result<Any, Error> {
    let value = SigningCertificateV2 {
        certs: vec![EssCertIdV2 {
            hash_algorithm: None,
            cert_hash: OctetString::new(cert.sha256().to_vec()).map_err(der_err)?,
            issuer_serial: None,
        }],
        policies: None,
    };
    Any::encode_from(&value).map_err(der_err)
}

/// Checks that the ESS signing-certificate attributes, where present, name `cert`; a signature
/// without them passes (most engines do not write them). Each attribute may occur once, with
/// one value, and its first entry must be `cert` (RFC 5035 §3, RFC 2634 §5.4).
pub(crate) fn check(attrs: &Attributes, cert: &Cert) -> Result<(), Error> {
    let bad = |why: &str| Error::BadSignature(format!("signing-certificate attribute: {why}"));
    for (oid, v2) in [
        (alg::ID_SIGNING_CERTIFICATE_V2, true),
        (alg::ID_SIGNING_CERTIFICATE, false),
    ] {
        let mut found = attrs.iter().filter(|a| a.oid == oid);
        let Some(a) = found.next() else { continue };
        if found.next().is_some() || a.values.len() != 1 {
            return Err(bad("must occur exactly once, with one value"));
        }
        let value = a
            .values
            .get(0)
            .expect("one value")
            .to_der()
            .map_err(der_err)?;
        let (digest, hash) = if v2 {
            let sc = SigningCertificateV2::from_der(&value).map_err(|e| bad(&e.to_string()))?;
            let first = sc
                .certs
                .into_iter()
                .next()
                .ok_or_else(|| bad("no certificate"))?;
            let digest = match &first.hash_algorithm {
                None => Digest::Sha256,
                Some(a) => Digest::from_oid(&a.oid)?,
            };
            (digest, first.cert_hash)
        } else {
            let sc = SigningCertificate::from_der(&value).map_err(|e| bad(&e.to_string()))?;
            let first = sc
                .certs
                .into_iter()
                .next()
                .ok_or_else(|| bad("no certificate"))?;
            (Digest::Sha1, first.cert_hash)
        };
        // SHA-256 (nearly always) is the certificate's fingerprint, computed once per
        // certificate and used by the path check as well.
        let expected = match digest {
            Digest::Sha256 => cert.sha256().to_vec(),
            other => other.digest(cert.der()),
        };
        if hash.as_bytes() != expected.as_slice() {
            return Err(Error::BadSignature(
                "the signature names another signing certificate than the one the message \
                 presents (signingCertificate attribute): the certificate was swapped"
                    .into(),
            ));
        }
    }
    Ok(())
}
