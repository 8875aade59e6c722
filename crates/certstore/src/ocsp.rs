//! OCSP (RFC 6960) as the second revocation source: the request for one certificate, and the
//! checked reading of a responder's answer. Pure: the daemon posts the request.
//!
//! The ASN.1 structures are declared here with `der` 0.8 derives: RustCrypto's `x509-ocsp`
//! 0.2 is built on `der` 0.7 / `x509-cert` 0.2, and pulling a second ASN.1 stack into the build
//! for five SEQUENCEs is not worth it. Signatures are checked with the S/MIME core's verifier.

use std::time::{Duration, SystemTime};

use der::asn1::{BitString, GeneralizedTime, Null, ObjectIdentifier as Oid, OctetString};
use der::{Decode, Encode, Sequence};
use smime::alg::Digest;
use smime::Cert;
use x509_cert::ext::pkix::crl::CrlReason;
use x509_cert::ext::pkix::ExtendedKeyUsage;
use x509_cert::ext::Extensions;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::AlgorithmIdentifierOwned;

use crate::revocation::{OcspAnswer, Status};

const ID_PKIX_OCSP_BASIC: Oid = Oid::new_unwrap("1.3.6.1.5.5.7.48.1.1");
const ID_KP_OCSP_SIGNING: Oid = Oid::new_unwrap("1.3.6.1.5.5.7.3.9");

/// The largest OCSP answer read.
pub const MAX_OCSP_SIZE: usize = 64 << 10;

#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
struct CertId {
    hash_algorithm: AlgorithmIdentifierOwned,
    issuer_name_hash: OctetString,
    issuer_key_hash: OctetString,
    serial_number: SerialNumber,
}

#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
struct Request {
    req_cert: CertId,
    #[asn1(context_specific = "0", optional = "true", tag_mode = "EXPLICIT")]
    single_request_extensions: Option<Extensions>,
}

#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
struct TbsRequest {
    request_list: Vec<Request>,
}

#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
struct OcspRequest {
    tbs_request: TbsRequest,
}

#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
struct ResponseBytes {
    response_type: Oid,
    response: OctetString,
}

#[derive(Clone, Copy, Debug, Eq, PartialEq, der::Enumerated)]
#[repr(u32)]
enum ResponseStatus {
    Successful = 0,
    MalformedRequest = 1,
    InternalError = 2,
    TryLater = 3,
    SigRequired = 5,
    Unauthorized = 6,
}

#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
struct OcspResponse {
    response_status: ResponseStatus,
    #[asn1(context_specific = "0", optional = "true", tag_mode = "EXPLICIT")]
    response_bytes: Option<ResponseBytes>,
}

#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
struct RevokedInfo {
    revocation_time: GeneralizedTime,
    #[asn1(context_specific = "0", optional = "true", tag_mode = "EXPLICIT")]
    revocation_reason: Option<CrlReason>,
}

#[derive(Clone, Debug, Eq, PartialEq, der::Choice)]
enum CertStatus {
    #[asn1(context_specific = "0", tag_mode = "IMPLICIT")]
    Good(Null),
    #[asn1(context_specific = "1", tag_mode = "IMPLICIT", constructed = "true")]
    Revoked(RevokedInfo),
    #[asn1(context_specific = "2", tag_mode = "IMPLICIT")]
    Unknown(Null),
}

#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
struct SingleResponse {
    cert_id: CertId,
    cert_status: CertStatus,
    this_update: GeneralizedTime,
    #[asn1(context_specific = "0", optional = "true", tag_mode = "EXPLICIT")]
    next_update: Option<GeneralizedTime>,
    #[asn1(context_specific = "1", optional = "true", tag_mode = "EXPLICIT")]
    single_extensions: Option<Extensions>,
}

#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
struct ResponseData {
    #[asn1(context_specific = "0", optional = "true", tag_mode = "EXPLICIT")]
    version: Option<u8>,
    responder_id: der::Any,
    produced_at: GeneralizedTime,
    responses: Vec<SingleResponse>,
    #[asn1(context_specific = "1", optional = "true", tag_mode = "EXPLICIT")]
    response_extensions: Option<Extensions>,
}

#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
struct BasicOcspResponse {
    tbs_response_data: ResponseData,
    signature_algorithm: AlgorithmIdentifierOwned,
    signature: BitString,
    #[asn1(context_specific = "0", optional = "true", tag_mode = "EXPLICIT")]
    certs: Option<Vec<der::Any>>,
}

/// The CertID of `cert` issued by `issuer` (SHA-1, as RFC 5019 responders expect).
fn cert_id(cert: &Cert, issuer: &Cert) -> Result<CertId, String> {
    cert_id_with(cert, issuer, Digest::Sha1)
}

/// The CertID of `cert` issued by `issuer` with the issuer's name and key hashed by `hash`.
fn cert_id_with(cert: &Cert, issuer: &Cert, hash: Digest) -> Result<CertId, String> {
    let name = issuer
        .parsed()
        .tbs_certificate()
        .subject()
        .to_der()
        .map_err(|e| e.to_string())?;
    let key = issuer
        .spki()
        .subject_public_key
        .as_bytes()
        .ok_or("issuer key is not whole bytes")?;
    Ok(CertId {
        hash_algorithm: AlgorithmIdentifierOwned {
            oid: hash.oid(),
            parameters: Some(der::Any::from(Null)),
        },
        issuer_name_hash: OctetString::new(hash.digest(&name)).map_err(|e| e.to_string())?,
        issuer_key_hash: OctetString::new(hash.digest(key)).map_err(|e| e.to_string())?,
        serial_number: cert.parsed().tbs_certificate().serial_number().clone(),
    })
}

/// The DER OCSPRequest for one certificate (unsigned, no nonce: answers are cached anyway).
pub fn request(cert: &Cert, issuer: &Cert) -> Result<Vec<u8>, String> {
    OcspRequest {
        tbs_request: TbsRequest {
            request_list: vec![Request {
                req_cert: cert_id(cert, issuer)?,
                single_request_extensions: None,
            }],
        },
    }
    .to_der()
    .map_err(|e| e.to_string())
}

/// Reads a responder's answer about `cert` (issued by `issuer`) at `at`: it must be signed by
/// the issuer or by a responder certificate the issuer gave id-kp-OCSPSigning, and be current.
pub fn read_response(
    data: &[u8],
    cert: &Cert,
    issuer: &Cert,
    at: SystemTime,
) -> Result<OcspAnswer, String> {
    if data.len() > MAX_OCSP_SIZE {
        return Err("the OCSP answer is too large".into());
    }
    let outer = OcspResponse::from_der(data).map_err(|e| format!("not an OCSP response: {e}"))?;
    let what = match outer.response_status {
        ResponseStatus::Successful => "",
        ResponseStatus::MalformedRequest => "malformedRequest",
        ResponseStatus::InternalError => "internalError",
        ResponseStatus::TryLater => "tryLater",
        ResponseStatus::SigRequired => "sigRequired",
        ResponseStatus::Unauthorized => "unauthorized",
    };
    if !what.is_empty() {
        return Err(format!("the OCSP responder answered {what}"));
    }
    let bytes = outer
        .response_bytes
        .ok_or("OCSP success without a response")?;
    if bytes.response_type != ID_PKIX_OCSP_BASIC {
        return Err(format!(
            "unsupported OCSP response type {}",
            bytes.response_type
        ));
    }
    let basic_der = bytes.response.as_bytes();
    let basic = BasicOcspResponse::from_der(basic_der)
        .map_err(|e| format!("malformed OCSP response: {e}"))?;
    let raw_tbs = smime::ber::signed_part(basic_der).map_err(|e| e.to_string())?;
    let signature = basic
        .signature
        .as_bytes()
        .ok_or("OCSP signature is not whole bytes")?;
    // Signed by the issuer itself, or by a delegated responder the issuer certified.
    let mut signers = vec![issuer.clone()];
    for c in basic.certs.iter().flatten() {
        let Ok(der) = c.to_der() else { continue };
        let Ok(rc) = Cert::from_der(&der) else {
            continue;
        };
        // Certified over SHA-1, the responder certificate itself could be a collision twin of
        // something the CA signed (the same rule as for every certificate link).
        let delegated = !rc.signed_with_sha1()
            && rc.is_signed_by(issuer).is_ok()
            && rc.validity_problem(at).is_none()
            && matches!(rc.parsed().tbs_certificate().get_extension::<ExtendedKeyUsage>(),
                Ok(Some((_, eku))) if eku.0.contains(&ID_KP_OCSP_SIGNING));
        if delegated {
            signers.push(rc);
        }
    }
    if !signers.iter().any(|s| {
        smime::sigalg::verify(
            s.spki(),
            &basic.signature_algorithm,
            None,
            raw_tbs,
            signature,
        )
        .is_ok()
    }) {
        return Err(
            "the OCSP answer is not signed by the issuing CA or a responder it authorised".into(),
        );
    }
    // The serial and both issuer hashes, in whichever hash the responder chose (RFC 6960
    // §4.1.1): a serial alone may be another CA's certificate.
    let single = basic
        .tbs_response_data
        .responses
        .iter()
        .find(|r| {
            let Ok(hash) = Digest::from_oid(&r.cert_id.hash_algorithm.oid) else {
                return false;
            };
            cert_id_with(cert, issuer, hash).is_ok_and(|want| {
                r.cert_id.serial_number == want.serial_number
                    && r.cert_id.issuer_key_hash == want.issuer_key_hash
                    && r.cert_id.issuer_name_hash == want.issuer_name_hash
            })
        })
        .ok_or("the OCSP answer is about another certificate")?;
    let this_update = single.this_update.to_system_time();
    if this_update > at + Duration::from_secs(300) {
        return Err("the OCSP answer is dated in the future".into());
    }
    let next_update = single.next_update.map(|t| t.to_system_time());
    if next_update.is_some_and(|n| n < at) {
        return Err("the OCSP answer is out of date".into());
    }
    let status = match &single.cert_status {
        // A SHA-1 signature (chosen-prefix collisions) cannot vouch for "good"; a revocation it
        // shows is believed (forging one only denies service).
        CertStatus::Good(_) if smime::sigalg::is_sha1(&basic.signature_algorithm) => {
            Status::Unknown(
                "the OCSP answer is signed with SHA-1, which collisions make forgeable: it \
                 can show a revocation, not that the certificate is good"
                    .into(),
            )
        }
        CertStatus::Good(_) => Status::Good,
        CertStatus::Revoked(info) => Status::Revoked {
            date: info.revocation_time.to_system_time(),
            reason: info.revocation_reason.map(crate::revocation::reason_name),
        },
        CertStatus::Unknown(_) => {
            Status::Unknown("the OCSP responder does not know the certificate".into())
        }
    };
    Ok(OcspAnswer {
        status,
        // Without a nextUpdate the answer is used for an hour.
        next_update: Some(next_update.unwrap_or(this_update + Duration::from_secs(3600))),
        this_update,
    })
}
