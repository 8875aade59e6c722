//! CMS SignedData (RFC 5652 §5, RFC 8551 §2.5): creating detached signatures with the S/MIME
//! signed attributes, and verifying every SignerInfo of received signatures.

use std::time::SystemTime;

use cms::content_info::{CmsVersion, ContentInfo};
use cms::signed_data::{
    EncapsulatedContentInfo, SignedData, SignerIdentifier, SignerInfo, SignerInfos,
};
use der::asn1::{ObjectIdentifier as Oid, OctetString, SetOfVec};
use der::{Any, Decode, Encode};
use spki::AlgorithmIdentifierOwned;
use x509_cert::attr::Attribute;
use x509_cert::time::Time;

use crate::alg::{self, Digest};
use crate::cert::Cert;
use crate::keys::{Identity, RsaPadding};
use crate::{ber, sigalg, Error};

/// Options for signing.
#[derive(Debug, Clone)]
pub struct SignOptions {
    /// The digest; `None` picks the key's default (SHA-256, SHA-384 for P-384).
    pub digest: Option<Digest>,
    /// RSA signature padding.
    pub rsa_padding: RsaPadding,
    /// The signingTime attribute (the caller's clock; the library reads none).
    pub signing_time: SystemTime,
    /// The sender's separate encryption certificate, announced with SMIMEEncryptionKeyPreference.
    pub encryption_cert: Option<Cert>,
}

pub(crate) fn der_err(e: der::Error) -> Error {
    Error::Malformed(format!("DER: {e}"))
}

fn attr(oid: Oid, value: Any) -> Result<Attribute, Error> {
    let mut values = SetOfVec::new();
    values.insert(value).map_err(der_err)?;
    Ok(Attribute { oid, values })
}

fn alg_id(oid: Oid) -> AlgorithmIdentifierOwned {
    AlgorithmIdentifierOwned {
        oid,
        parameters: None,
    }
}

/// RSAES-OAEP-params for SHA-256 with MGF1-SHA-256 (RFC 4055), used in key transport and in
/// the SMIMECapabilities announcement.
pub(crate) fn oaep_sha256_alg() -> Result<AlgorithmIdentifierOwned, Error> {
    let hash = alg_id(alg::ID_SHA256);
    let mgf = AlgorithmIdentifierOwned {
        oid: alg::ID_MGF1,
        parameters: Some(Any::encode_from(&hash).map_err(der_err)?),
    };
    let mut content = Vec::new();
    for (n, v) in [(0u32, hash), (1, mgf)] {
        der::asn1::ContextSpecific {
            tag_number: der::TagNumber(n),
            tag_mode: der::TagMode::Explicit,
            value: v,
        }
        .encode_to_vec(&mut content)
        .map_err(der_err)?;
    }
    Ok(AlgorithmIdentifierOwned {
        oid: alg::ID_RSAES_OAEP,
        parameters: Some(Any::new(der::Tag::Sequence, content).map_err(der_err)?),
    })
}

/// The SMIMECapabilities envelopd announces, strongest first (RFC 8551 §2.5.2).
fn capabilities() -> Result<Any, Error> {
    let caps = vec![
        alg_id(alg::AES256_GCM),
        alg_id(alg::AES128_GCM),
        alg_id(alg::AES256_CBC),
        alg_id(alg::AES128_CBC),
        oaep_sha256_alg()?,
        alg_id(alg::RSA_ENCRYPTION),
    ];
    Any::encode_from(&caps).map_err(der_err)
}

/// Creates a detached CMS SignedData over `content`, returned as DER ContentInfo.
pub fn sign_detached(content: &[u8], id: &Identity, opts: &SignOptions) -> Result<Vec<u8>, Error> {
    let digest = opts.digest.unwrap_or_else(|| id.key.default_digest());
    let md = digest.digest(content);
    let time = Time::try_from(opts.signing_time).map_err(der_err)?;
    let mut attrs = vec![
        attr(
            alg::ID_CONTENT_TYPE,
            Any::encode_from(&alg::ID_DATA).map_err(der_err)?,
        )?,
        attr(
            alg::ID_SIGNING_TIME,
            Any::encode_from(&time).map_err(der_err)?,
        )?,
        attr(
            alg::ID_MESSAGE_DIGEST,
            Any::encode_from(&OctetString::new(md).map_err(der_err)?).map_err(der_err)?,
        )?,
        attr(alg::ID_SMIME_CAPABILITIES, capabilities()?)?,
        // Binds the signature to this certificate (see `ess`): without it, a second
        // certificate for the same key could be swapped in and shown as the signer.
        attr(
            alg::ID_SIGNING_CERTIFICATE_V2,
            crate::ess::signing_certificate_v2(&id.cert)?,
        )?,
    ];
    if let Some(enc) = &opts.encryption_cert {
        // SMIMEEncryptionKeyPreference ::= CHOICE { issuerAndSerialNumber [0] IMPLICIT ... }
        let isn = enc.issuer_and_serial().to_der().map_err(der_err)?;
        let (_, inner, _) = ber::read_tlv(&isn)?;
        let pref = Any::new(
            der::Tag::ContextSpecific {
                constructed: true,
                number: der::TagNumber(0),
            },
            inner.to_vec(),
        )
        .map_err(der_err)?;
        attrs.push(attr(alg::ID_ENCRYPTION_KEY_PREFERENCE, pref)?);
    }
    let signed_attrs = SetOfVec::try_from(attrs).map_err(der_err)?;
    // The signature covers the DER of the attributes with the SET OF tag (RFC 5652 §5.4).
    let to_sign = signed_attrs.to_der().map_err(der_err)?;
    let (sig_alg, signature) = id.key.sign(&to_sign, digest, opts.rsa_padding)?;

    let signer = SignerInfo {
        version: CmsVersion::V1,
        sid: SignerIdentifier::IssuerAndSerialNumber(id.cert.issuer_and_serial()),
        digest_alg: alg_id(digest.oid()),
        signed_attrs: Some(signed_attrs),
        signature_algorithm: sig_alg,
        signature: OctetString::new(signature).map_err(der_err)?,
        unsigned_attrs: None,
    };
    // The certificate set is written from the certificates' own DER, sorted as DER's SET OF
    // requires (ascending encodings) and without duplicates, rather than cloned, re-encoded and
    // compared structurally: that took about a tenth of envelopd's CPU per submitted message.
    let mut certs: Vec<&[u8]> = vec![id.cert.der()];
    certs.extend(id.chain.iter().map(Cert::der));
    if let Some(enc) = &opts.encryption_cert {
        certs.push(enc.der());
    }
    certs.sort_unstable();
    certs.dedup();
    let mut digest_algs = SetOfVec::new();
    digest_algs.insert(alg_id(digest.oid())).map_err(der_err)?;
    let encap = EncapsulatedContentInfo {
        econtent_type: alg::ID_DATA,
        econtent: None,
    };
    // SignedData ::= SEQUENCE { version, digestAlgorithms, encapContentInfo,
    //   certificates [0] IMPLICIT CertificateSet, signerInfos }
    let signed_data = ber::tlv(
        0x30,
        &[
            &CmsVersion::V1.to_der().map_err(der_err)?,
            &digest_algs.to_der().map_err(der_err)?,
            &encap.to_der().map_err(der_err)?,
            &ber::tlv(0xa0, &certs),
            &SignerInfos::try_from(vec![signer])
                .map_err(der_err)?
                .to_der()
                .map_err(der_err)?,
        ],
    );
    let oid = alg::ID_SIGNED_DATA.to_der().map_err(der_err)?;
    Ok(ber::tlv(0x30, &[&oid, &ber::tlv(0xa0, &[&signed_data])]))
}

/// What verification found out about one SignerInfo.
#[derive(Debug, Clone)]
pub struct SignerReport {
    /// The signer certificate, if the message carried it.
    pub cert: Option<Cert>,
    /// Further carried certificates matching the signer identifier that the signature verifies
    /// with as well: the same key certified again (a renewal, another address). Empty when the
    /// signature names its certificate (ESS signing-certificate attribute). The certificate
    /// store may take one of these where `cert` does not validate (e.g. an expired certificate
    /// carried before its renewal).
    pub also: Vec<Cert>,
    /// Subject of the signer certificate (or the signer identifier when absent).
    pub subject: String,
    /// The signingTime attribute, if present.
    pub signing_time: Option<SystemTime>,
    /// Digest algorithm name (`sha-256` …).
    pub digest: String,
    /// The digest algorithm, when envelopd knows it (SHA-1 is verified but judged weak).
    pub digest_algorithm: Option<Digest>,
    /// SMIMECapabilities announced by the signer (algorithm OIDs, strongest first).
    pub capabilities: Vec<String>,
    /// Whether the SignerInfo carried signed attributes (S/MIME requires them for mail).
    pub signed_attributes: bool,
    /// The certificate the signer asked to be encrypted to (SMIMEEncryptionKeyPreference,
    /// issuerAndSerialNumber form), if any.
    pub encryption_key_preference: Option<cms::cert::IssuerAndSerialNumber>,
    /// None when the signature itself checks out (signature value, signed attributes, the
    /// content digest); otherwise why not. Whether the certificate may be trusted, and for
    /// which address, is the certificate store's judgement (`certstore::verdict`), not this.
    pub problem: Option<String>,
}

impl SignerReport {
    /// True when the signature itself checks out (see [`SignerReport::problem`]).
    pub fn is_valid(&self) -> bool {
        self.problem.is_none()
    }
}

/// The result of verifying a CMS SignedData.
#[derive(Debug, Clone)]
pub struct CmsVerified {
    /// The encapsulated content; None for a detached signature (the caller has the content).
    pub content: Option<Vec<u8>>,
    /// One report per SignerInfo.
    pub signers: Vec<SignerReport>,
    /// Every certificate the message carried (for harvesting after verification).
    pub certificates: Vec<Cert>,
    /// Every CRL the message carried (DER), for the certificate store to check and use.
    pub crls: Vec<Vec<u8>>,
    /// What the signature says it signs (eContentType): `id-data` for a mail message.
    pub content_type: Oid,
}

/// Parses BER/DER bytes as a CMS ContentInfo (after BER normalisation).
pub fn parse_content_info(data: &[u8]) -> Result<ContentInfo, Error> {
    let der = ber::normalize(data)?;
    ContentInfo::from_der(&der).map_err(|e| Error::Malformed(format!("CMS ContentInfo: {e}")))
}

/// Verifies a CMS SignedData cryptographically; `detached` is the content for detached
/// signatures. Trust in the signer's certificate is not judged here.
///
/// Structural problems are errors; a signature that does not verify is reported per signer. A
/// detached signature whose SignedData also embeds content is invalid for every signer: the
/// part a reader sees is not the part that was signed (OpenSSL and Thunderbird refuse it too).
pub fn verify_cms(ci: &ContentInfo, detached: Option<&[u8]>) -> Result<CmsVerified, Error> {
    if ci.content_type != alg::ID_SIGNED_DATA {
        return Err(Error::NotSmime(format!(
            "expected signed-data, found {}",
            alg::name(&ci.content_type)
        )));
    }
    let sd = decode_signed_data(&ci.content)?;
    // Fields outside the signature are checked strictly too, so that no changed byte goes unnoticed.
    if sd.version != expected_version(&sd) {
        return Err(Error::Malformed(format!(
            "SignedData version {} does not match its contents (RFC 5652 §5.1 requires {})",
            sd.version as u8,
            expected_version(&sd) as u8
        )));
    }
    if sd.signer_infos.0.is_empty() {
        return Err(Error::BadSignature("the signature has no signers".into()));
    }
    if sd.signer_infos.0.len() > MAX_SIGNERS {
        return Err(Error::Malformed(format!(
            "the signature has {} signers; envelopd checks messages with at most {MAX_SIGNERS}",
            sd.signer_infos.0.len()
        )));
    }
    let encapsulated: Option<Vec<u8>> = match &sd.encap_content_info.econtent {
        Some(any) => {
            let os: OctetString = any
                .decode_as()
                .map_err(|e| Error::Malformed(format!("encapsulated content: {e}")))?;
            Some(os.into_bytes().into_vec())
        }
        None => None,
    };
    let both = encapsulated.is_some() && detached.is_some();
    let content: &[u8] = match (&encapsulated, detached) {
        (_, Some(d)) => d,
        (Some(c), None) => c,
        (None, None) => {
            return Err(Error::Malformed(
                "detached signature without the signed content".into(),
            ))
        }
    };
    let mut certificates = Vec::new();
    if let Some(set) = &sd.certificates {
        for choice in set.0.iter() {
            if let cms::cert::CertificateChoices::Certificate(c) = choice {
                certificates.push(Cert::from_der(&c.to_der().map_err(der_err)?)?);
            }
        }
    }
    let crls = sd
        .crls
        .iter()
        .flat_map(|set| set.0.iter())
        .filter_map(|c| match c {
            cms::revocation::RevocationInfoChoice::Crl(list) => list.to_der().ok(),
            _ => None,
        })
        .collect();
    let signers = sd
        .signer_infos
        .0
        .iter()
        .map(|si| {
            let mut report = verify_signer(
                si,
                &sd.digest_algorithms,
                &sd.encap_content_info.econtent_type,
                content,
                &certificates,
            );
            if both {
                report.problem = Some(
                    "the detached signature also embeds content: the part shown is not the one signed"
                        .into(),
                );
            }
            report
        })
        .collect();
    Ok(CmsVerified {
        content: encapsulated,
        signers,
        certificates,
        crls,
        content_type: sd.encap_content_info.econtent_type,
    })
}

/// The SignedData version RFC 5652 §5.1 prescribes for these contents. Checked exactly: the
/// version is outside the signature, and a changed byte anywhere must not go unnoticed.
fn expected_version(sd: &SignedData) -> CmsVersion {
    let other_certs = sd.certificates.as_ref().is_some_and(|c| {
        c.0.iter()
            .any(|c| matches!(c, cms::cert::CertificateChoices::Other(_)))
    });
    let other_crls = sd.crls.as_ref().is_some_and(|c| {
        c.0.iter()
            .any(|c| matches!(c, cms::revocation::RevocationInfoChoice::Other(_)))
    });
    if other_certs || other_crls {
        CmsVersion::V5
    } else if sd.encap_content_info.econtent_type != alg::ID_DATA
        || sd
            .signer_infos
            .0
            .iter()
            .any(|s| s.version == CmsVersion::V3)
    {
        CmsVersion::V3
    } else {
        CmsVersion::V1
    }
}

/// Decodes SignedData; if only its embedded CRLs fail to parse (old v1 CRLs), they are dropped:
/// envelopd does not take revocation data from messages, the certificate store fetches its own.
fn decode_signed_data(content: &Any) -> Result<SignedData, Error> {
    let first = match content.decode_as::<SignedData>() {
        Ok(sd) => return Ok(sd),
        Err(e) => e,
    };
    let mut kids: Vec<&[u8]> = ber::children(content.value())?;
    let before = kids.len();
    kids.retain(|k| k.first() != Some(&0xa1));
    if kids.len() == before {
        return Err(Error::Malformed(format!("SignedData: {first}")));
    }
    let body: Vec<u8> = kids.concat();
    let any = Any::new(der::Tag::Sequence, body).map_err(der_err)?;
    any.decode_as()
        .map_err(|e| Error::Malformed(format!("SignedData: {e}")))
}

/// The most signers a signature may have. Mail has one, rarely two (an RSA and an ECDSA
/// signature side by side); every signer costs a signature verification and a path search, and
/// a crafted message could otherwise carry thousands of valid ones for the price of one.
pub const MAX_SIGNERS: usize = 8;

/// At most this many carried certificates matching one signer identifier are tried (each try
/// is a signature verification; a real message has one, a renewal with the same key two).
const MAX_SIGNER_CANDIDATES: usize = 4;

/// The carried certificates matching the signer identifier, in the message's order.
fn signer_candidates<'a>(sid: &SignerIdentifier, certs: &'a [Cert]) -> Vec<&'a Cert> {
    certs
        .iter()
        .filter(|c| match sid {
            SignerIdentifier::IssuerAndSerialNumber(isn) => c.matches_issuer_serial(isn),
            SignerIdentifier::SubjectKeyIdentifier(ski) => c.matches_ski(ski.0.as_bytes()),
        })
        .take(MAX_SIGNER_CANDIDATES)
        .collect()
}

fn verify_signer(
    si: &SignerInfo,
    digest_algs: &SetOfVec<AlgorithmIdentifierOwned>,
    econtent_type: &Oid,
    content: &[u8],
    certs: &[Cert],
) -> SignerReport {
    // The signer's certificate is the first candidate the signature verifies with (and that
    // its signing-certificate attribute names, if it has one), not simply the first match: a
    // certificate with the same identifier placed before the real one (anyone can make one; it
    // just would not validate) must not turn a good signature into a broken one.
    let candidates = signer_candidates(&si.sid, certs);
    let mut problem = None;
    let mut cert = None;
    let mut also = Vec::new();
    for c in &candidates {
        match check_signer(si, digest_algs, econtent_type, content, Some(c)) {
            Ok(()) if cert.is_none() => {
                cert = Some((*c).clone());
                problem = None;
            }
            Ok(()) => also.push((*c).clone()),
            Err(e) if cert.is_none() && problem.is_none() => problem = Some(e.to_string()),
            Err(_) => {}
        }
    }
    if candidates.is_empty() {
        problem = check_signer(si, digest_algs, econtent_type, content, None)
            .err()
            .map(|e| e.to_string());
    }
    let cert = cert.or_else(|| candidates.first().map(|c| (*c).clone()));
    let mut report = SignerReport {
        subject: cert
            .as_ref()
            .map_or_else(|| "(signer certificate not included)".into(), Cert::subject),
        cert,
        also,
        signing_time: None,
        digest: alg::name(&si.digest_alg.oid),
        digest_algorithm: Digest::from_oid(&si.digest_alg.oid).ok(),
        capabilities: Vec::new(),
        signed_attributes: si.signed_attrs.is_some(),
        encryption_key_preference: None,
        problem: None,
    };
    if let Some(attrs) = &si.signed_attrs {
        for a in attrs.iter() {
            let Some(v) = a.values.get(0) else { continue };
            if a.oid == alg::ID_SIGNING_TIME {
                report.signing_time = v.decode_as::<Time>().ok().map(|t| t.to_system_time());
            } else if a.oid == alg::ID_SMIME_CAPABILITIES {
                if let Ok(caps) = v.decode_as::<Vec<AlgorithmIdentifierOwned>>() {
                    report.capabilities = caps.iter().map(|c| c.oid.to_string()).collect();
                }
            } else if a.oid == alg::ID_ENCRYPTION_KEY_PREFERENCE
                && der::Tagged::tag(v)
                    == (der::Tag::ContextSpecific {
                        constructed: true,
                        number: der::TagNumber(0),
                    })
            {
                // [0] IMPLICIT IssuerAndSerialNumber: the SEQUENCE's contents under another tag.
                let mut seq = vec![0x30];
                let len = v.value().len();
                if len < 128 {
                    seq.push(len as u8);
                } else if len < 256 {
                    seq.extend_from_slice(&[0x81, len as u8]);
                } else {
                    seq.extend_from_slice(&[0x82, (len >> 8) as u8, len as u8]);
                }
                seq.extend_from_slice(v.value());
                report.encryption_key_preference =
                    cms::cert::IssuerAndSerialNumber::from_der(&seq).ok();
            }
        }
    }
    report.problem = problem;
    report
}

fn check_signer(
    si: &SignerInfo,
    digest_algs: &SetOfVec<AlgorithmIdentifierOwned>,
    econtent_type: &Oid,
    content: &[u8],
    cert: Option<&Cert>,
) -> Result<(), Error> {
    let cert = cert.ok_or_else(|| {
        Error::BadSignature("the signer's certificate is not included in the message".into())
    })?;
    let digest = Digest::from_oid(&si.digest_alg.oid)?;
    if !digest_algs.iter().any(|a| a.oid == si.digest_alg.oid) {
        return Err(Error::BadSignature(
            "the signer's digest algorithm is not announced in the SignedData".into(),
        ));
    }
    let expected_version = match si.sid {
        SignerIdentifier::IssuerAndSerialNumber(_) => CmsVersion::V1,
        SignerIdentifier::SubjectKeyIdentifier(_) => CmsVersion::V3,
    };
    if si.version != expected_version {
        return Err(Error::BadSignature(
            "SignerInfo with a wrong version".into(),
        ));
    }
    let Some(attrs) = si.signed_attrs.as_ref() else {
        // RFC 5652 §5.4: without signed attributes the signature covers the content itself,
        // which is allowed only for id-data. Mail-level verification adds its own stricter rule.
        if econtent_type != &alg::ID_DATA {
            return Err(Error::BadSignature(
                "signed attributes are required for this content type".into(),
            ));
        }
        return sigalg::verify(
            cert.spki(),
            &si.signature_algorithm,
            Some(digest),
            content,
            si.signature.as_bytes(),
        );
    };
    let single = |oid: Oid| -> Result<&Any, Error> {
        let mut found = attrs.iter().filter(|a| a.oid == oid);
        let a = found
            .next()
            .ok_or_else(|| Error::BadSignature(format!("signed attribute {oid} is missing")))?;
        if found.next().is_some() || a.values.len() != 1 {
            return Err(Error::BadSignature(format!(
                "signed attribute {oid} must occur exactly once"
            )));
        }
        Ok(a.values.get(0).expect("one value"))
    };
    let ct: Oid = single(alg::ID_CONTENT_TYPE)?
        .decode_as()
        .map_err(|e| Error::BadSignature(format!("contentType attribute: {e}")))?;
    if &ct != econtent_type {
        return Err(Error::BadSignature(
            "the contentType attribute does not match the signed content".into(),
        ));
    }
    let md: OctetString = single(alg::ID_MESSAGE_DIGEST)?
        .decode_as()
        .map_err(|e| Error::BadSignature(format!("messageDigest attribute: {e}")))?;
    if md.as_bytes() != digest.digest(content).as_slice() {
        return Err(Error::BadSignature(
            "the message was changed after signing (digest mismatch)".into(),
        ));
    }
    crate::ess::check(attrs, cert)?;
    let signed = attrs.to_der().map_err(der_err)?;
    sigalg::verify(
        cert.spki(),
        &si.signature_algorithm,
        Some(digest),
        &signed,
        si.signature.as_bytes(),
    )
}
