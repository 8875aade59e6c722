//! X.509 certificates as S/MIME needs them: parsing (PEM bundles or DER), addresses, identifiers
//! and signature checks.
//!
//! Path validation (chain, validity, usage, name constraints, revocation, address) belongs to
//! the certificate store alone (`certstore`): this module only offers its building blocks, so
//! that no second validator with other rules can exist.

use std::time::SystemTime;

use der::{Decode, Encode};
use spki::SubjectPublicKeyInfoOwned;
use x509_cert::ext::pkix::{
    name::GeneralName, BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAltName,
    SubjectKeyIdentifier,
};
use x509_cert::Certificate;

use crate::address::Address;
use crate::{alg, ber, sigalg, Error};

/// A parsed certificate together with its exact DER bytes.
///
/// Shared behind an `Arc`: certificates are cloned into every path, signer set and recipient
/// list built for each message, and a deep copy of a parsed certificate is thousands of small
/// allocations (it was about 1 % of the proxy's CPU per message).
#[derive(Clone)]
pub struct Cert(std::sync::Arc<CertInner>);

impl std::fmt::Debug for Cert {
    /// The subject and the start of the fingerprint: a certificate's bytes in a test failure or
    /// a debug log were pages of numbers that named nothing.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let fp: String = self.sha256()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        write!(f, "Cert({:?}, sha256 {fp}…)", self.subject())
    }
}

/// What a [`Cert`] shares.
#[derive(Debug)]
struct CertInner {
    der: Vec<u8>,
    parsed: Certificate,
    /// The RSA public key made ready for encryption, once per certificate: parsing it and
    /// setting up its Montgomery context for every message was about 1 % of the proxy's CPU.
    rsa_encrypting: std::sync::OnceLock<aws_lc_rs::rsa::PublicEncryptingKey>,
    /// SHA-256 of `der`, once per certificate: the certificate store keys its cache of checked
    /// signatures by it for every link of every path it builds, i.e. several times per message.
    sha256: std::sync::OnceLock<[u8; 32]>,
    /// The addresses the certificate names, parsed once: the policy compares them for every
    /// recipient and the signer of every message (parsing them each time was a fifth of the
    /// policy's work per message).
    addresses: std::sync::OnceLock<Vec<Address>>,
    /// What [`Cert::extension_problem`] found, once per certificate.
    extension_problem: std::sync::OnceLock<Option<String>>,
}

impl PartialEq for Cert {
    fn eq(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0) || self.0.der == other.0.der
    }
}

impl Cert {
    /// Parses one DER certificate.
    pub fn from_der(der: &[u8]) -> Result<Self, Error> {
        let parsed = Certificate::from_der(der)
            .map_err(|e| Error::Certificate(format!("cannot parse certificate: {e}")))?;
        Ok(Cert(std::sync::Arc::new(CertInner {
            der: der.to_vec(),
            parsed,
            rsa_encrypting: std::sync::OnceLock::new(),
            sha256: std::sync::OnceLock::new(),
            addresses: std::sync::OnceLock::new(),
            extension_problem: std::sync::OnceLock::new(),
        })))
    }

    /// The SHA-256 fingerprint of the certificate's DER encoding.
    pub fn sha256(&self) -> [u8; 32] {
        *self.0.sha256.get_or_init(|| {
            let mut fp = [0u8; 32];
            fp.copy_from_slice(crate::alg::Digest::Sha256.digest(&self.0.der).as_ref());
            fp
        })
    }

    /// The subject's RSA key for encrypting to it (a shared handle: clones refer to the same
    /// key and its precomputed values).
    pub fn rsa_encrypting_key(&self) -> Result<aws_lc_rs::rsa::PublicEncryptingKey, Error> {
        if let Some(k) = self.0.rsa_encrypting.get() {
            return Ok(k.clone());
        }
        let unusable = |e: &dyn std::fmt::Display| {
            Error::Certificate(format!("RSA key of \"{}\": {e}", self.subject()))
        };
        let spki_der = self.spki().to_der().map_err(|e| unusable(&e))?;
        let key =
            aws_lc_rs::rsa::PublicEncryptingKey::from_der(&spki_der).map_err(|e| unusable(&e))?;
        // Another thread may have set it meanwhile: either copy is the same key.
        let _ = self.0.rsa_encrypting.set(key.clone());
        Ok(key)
    }

    /// The certificate's DER encoding.
    pub fn der(&self) -> &[u8] {
        &self.0.der
    }

    /// The parsed certificate.
    pub fn parsed(&self) -> &Certificate {
        &self.0.parsed
    }

    /// The subject distinguished name as text.
    pub fn subject(&self) -> String {
        self.0.parsed.tbs_certificate().subject().to_string()
    }

    /// The issuer distinguished name as text.
    pub fn issuer(&self) -> String {
        self.0.parsed.tbs_certificate().issuer().to_string()
    }

    /// The subject public key.
    pub fn spki(&self) -> &SubjectPublicKeyInfoOwned {
        self.0.parsed.tbs_certificate().subject_public_key_info()
    }

    /// The mailbox addresses exactly as the certificate states them: the subjectAltName's
    /// rfc822Name and SmtpUTF8Mailbox (RFC 8398) entries, or, only when the subjectAltName names
    /// no mailbox, the legacy subject emailAddress (RFC 8550 §3). For showing; compare with
    /// [`Cert::addresses`] / [`Cert::names`].
    pub fn mailboxes(&self) -> Vec<String> {
        let tbs = self.0.parsed.tbs_certificate();
        let from_san: Vec<String> = match tbs.get_extension::<SubjectAltName>() {
            Ok(Some((_, san))) => san.0.iter().filter_map(mailbox_of).collect(),
            _ => Vec::new(),
        };
        if !from_san.is_empty() {
            return from_san;
        }
        tbs.subject()
            .iter()
            .filter(|atv| atv.oid == alg::ID_EMAIL_ADDRESS)
            .filter_map(|atv| atv.value.decode_as::<der::asn1::Ia5String>().ok())
            .map(|s| s.as_str().to_string())
            .collect()
    }

    /// The addresses the certificate names ([`Cert::mailboxes`] parsed by the one rule of
    /// [`crate::address`]); entries that are not addresses (wildcards, junk) are left out.
    pub fn addresses(&self) -> &[Address] {
        self.0.addresses.get_or_init(|| {
            self.mailboxes()
                .iter()
                .filter_map(|m| Address::parse(m).ok())
                .collect()
        })
    }

    /// True when the certificate names `address` (the one comparison rule).
    pub fn names(&self, address: &Address) -> bool {
        self.addresses().iter().any(|a| a == address)
    }

    /// The subject key identifier extension, if present.
    pub fn subject_key_id(&self) -> Option<Vec<u8>> {
        match self
            .0
            .parsed
            .tbs_certificate()
            .get_extension::<SubjectKeyIdentifier>()
        {
            Ok(Some((_, ski))) => Some(ski.0.as_bytes().to_vec()),
            _ => None,
        }
    }

    /// The DER of issuer name and serial number, the way CMS identifies a certificate.
    pub fn issuer_and_serial(&self) -> cms::cert::IssuerAndSerialNumber {
        let tbs = self.0.parsed.tbs_certificate();
        cms::cert::IssuerAndSerialNumber {
            issuer: tbs.issuer().clone(),
            serial_number: tbs.serial_number().clone(),
        }
    }

    /// Start and end of validity.
    pub fn validity(&self) -> (SystemTime, SystemTime) {
        let v = self.0.parsed.tbs_certificate().validity();
        (v.not_before.to_system_time(), v.not_after.to_system_time())
    }

    /// Describes why the certificate is not valid at `at`, or None if it is.
    pub fn validity_problem(&self, at: SystemTime) -> Option<String> {
        let (from, to) = self.validity();
        if at < from {
            Some(format!(
                "certificate \"{}\" is not valid before {}",
                self.subject(),
                fmt_time(from)
            ))
        } else if at > to {
            Some(format!(
                "certificate \"{}\" expired on {}",
                self.subject(),
                fmt_time(to)
            ))
        } else {
            None
        }
    }

    /// True when this certificate is identified by the given CMS recipient/signer identifier
    /// (issuer and serial number, or subject key identifier).
    pub fn matches_issuer_serial(&self, isn: &cms::cert::IssuerAndSerialNumber) -> bool {
        let mine = self.issuer_and_serial();
        mine.serial_number == isn.serial_number
            && mine.issuer.to_der().ok() == isn.issuer.to_der().ok()
    }

    /// True when `ski` equals this certificate's subject key identifier.
    pub fn matches_ski(&self, ski: &[u8]) -> bool {
        self.subject_key_id().as_deref() == Some(ski)
    }

    /// Checks that `issuer`'s key signed this certificate.
    pub fn is_signed_by(&self, issuer: &Cert) -> Result<(), Error> {
        // RFC 5280 §4.1.1.2: the outer algorithm (not signed) must equal the signed inner one.
        if self.0.parsed.signature_algorithm().to_der().ok()
            != self.0.parsed.tbs_certificate().signature().to_der().ok()
        {
            return Err(Error::Certificate(format!(
                "certificate \"{}\" has mismatched signature algorithm fields",
                self.subject()
            )));
        }
        let tbs = ber::signed_part(&self.0.der)?;
        sigalg::verify(
            issuer.spki(),
            self.0.parsed.signature_algorithm(),
            None,
            tbs,
            self.0.parsed.signature().as_bytes().ok_or_else(|| {
                Error::Certificate("certificate signature is not a whole number of bytes".into())
            })?,
        )
    }

    /// True when the issuer signed this certificate with SHA-1 (RSA or ECDSA), whose
    /// chosen-prefix collisions are practical: such a signature no longer shows the issuer
    /// signed this very certificate.
    pub fn signed_with_sha1(&self) -> bool {
        sigalg::is_sha1(self.0.parsed.signature_algorithm())
    }

    /// Describes why this certificate may not issue other certificates, or None if it may
    /// (basicConstraints cA, and keyCertSign when keyUsage is present; RFC 5280 §4.2.1.9).
    pub fn ca_problem(&self) -> Option<String> {
        let tbs = self.0.parsed.tbs_certificate();
        let is_ca = matches!(tbs.get_extension::<BasicConstraints>(), Ok(Some((_, bc))) if bc.ca);
        if !is_ca {
            return Some(format!(
                "\"{}\" is not a CA certificate but appears as an issuer in the chain",
                self.subject()
            ));
        }
        if let Ok(Some((_, ku))) = tbs.get_extension::<KeyUsage>() {
            if !ku.key_cert_sign() {
                return Some(format!("\"{}\" may not sign certificates", self.subject()));
            }
        }
        None
    }

    /// Describes why this certificate may not sign S/MIME mail, or None if it may: keyUsage (if
    /// present) must allow digitalSignature or nonRepudiation, and extendedKeyUsage (if present)
    /// must include emailProtection or anyExtendedKeyUsage (RFC 8550 §4.4).
    pub fn smime_signing_problem(&self) -> Option<String> {
        let tbs = self.0.parsed.tbs_certificate();
        if let Ok(Some((_, ku))) = tbs.get_extension::<KeyUsage>() {
            if !ku.digital_signature() && !ku.non_repudiation() {
                return Some(format!(
                    "certificate \"{}\" is not allowed to sign (key usage)",
                    self.subject()
                ));
            }
        }
        if !self.allows_email_protection() {
            return Some(format!(
                "certificate \"{}\" is not for e-mail protection (extended key usage)",
                self.subject()
            ));
        }
        None
    }

    /// Why the certificate's extensions cannot be relied on, if they cannot: an extension that
    /// appears twice (RFC 5280 §4.2 forbids it), or one of those envelopd reads to decide trust
    /// (key usage, extended key usage, basic constraints, subject alternative name, name
    /// constraints) that does not decode.
    ///
    /// Why this is checked at all: the readers of these extensions take "cannot be read" as
    /// "absent", so a second keyUsage would lift the first one's limits, and an unreadable
    /// subjectAltName would let the subject's emailAddress name the holder instead. The
    /// certificate store refuses any certificate on a path for which this is Some.
    pub fn extension_problem(&self) -> Option<&str> {
        self.0
            .extension_problem
            .get_or_init(|| {
                let tbs = self.0.parsed.tbs_certificate();
                let exts: &[x509_cert::ext::Extension] =
                    tbs.extensions().map_or(&[], |e| e.as_slice());
                for (i, e) in exts.iter().enumerate() {
                    if exts[..i].iter().any(|o| o.extn_id == e.extn_id) {
                        let oid = e.extn_id.to_string();
                        let label = match oid.as_str() {
                            "2.5.29.15" => format!("keyUsage ({oid})"),
                            "2.5.29.17" => format!("subjectAltName ({oid})"),
                            "2.5.29.19" => format!("basicConstraints ({oid})"),
                            "2.5.29.30" => format!("nameConstraints ({oid})"),
                            "2.5.29.37" => format!("extKeyUsage ({oid})"),
                            _ => oid,
                        };
                        return Some(format!("it has the extension {label} twice"));
                    }
                }
                let unreadable = |what: &str| Some(format!("its {what} extension cannot be read"));
                if tbs.get_extension::<KeyUsage>().is_err() {
                    return unreadable("key usage");
                }
                if tbs.get_extension::<ExtendedKeyUsage>().is_err() {
                    return unreadable("extended key usage");
                }
                if tbs.get_extension::<BasicConstraints>().is_err() {
                    return unreadable("basic constraints");
                }
                if tbs.get_extension::<SubjectAltName>().is_err() {
                    return unreadable("subject alternative name");
                }
                if tbs
                    .get_extension::<x509_cert::ext::pkix::constraints::name::NameConstraints>()
                    .is_err()
                {
                    return unreadable("name constraints");
                }
                None
            })
            .as_deref()
    }

    /// True when extendedKeyUsage is absent or includes emailProtection or anyExtendedKeyUsage.
    pub fn allows_email_protection(&self) -> bool {
        const EMAIL_PROTECTION: der::asn1::ObjectIdentifier =
            der::asn1::ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.4");
        const ANY_EKU: der::asn1::ObjectIdentifier =
            der::asn1::ObjectIdentifier::new_unwrap("2.5.29.37.0");
        match self
            .0
            .parsed
            .tbs_certificate()
            .get_extension::<ExtendedKeyUsage>()
        {
            Ok(Some((_, eku))) => eku
                .0
                .iter()
                .any(|o| *o == EMAIL_PROTECTION || *o == ANY_EKU),
            _ => true,
        }
    }

    /// True when the certificate names itself as issuer.
    pub fn is_self_issued(&self) -> bool {
        let tbs = self.0.parsed.tbs_certificate();
        tbs.issuer().to_der().ok() == tbs.subject().to_der().ok()
    }
}

/// id-on-SmtpUTF8Mailbox (RFC 8398): an internationalized mailbox in a subjectAltName.
pub const SMTP_UTF8_MAILBOX: der::asn1::ObjectIdentifier =
    der::asn1::ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.8.9");

/// The mailbox a subjectAltName entry names as written: an rfc822Name, or an SmtpUTF8Mailbox
/// (RFC 8398); None for other kinds of name.
pub fn mailbox_of(name: &GeneralName) -> Option<String> {
    match name {
        GeneralName::Rfc822Name(a) => Some(a.as_str().to_string()),
        GeneralName::OtherName(o) if o.type_id == SMTP_UTF8_MAILBOX => o
            .value
            .decode_as::<der::asn1::Utf8StringRef<'_>>()
            .ok()
            .map(|s| s.as_str().to_string()),
        _ => None,
    }
}

/// Formats a time as an RFC 3339 UTC date-time.
pub fn fmt_time(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    match der::DateTime::from_unix_duration(std::time::Duration::from_secs(secs)) {
        Ok(dt) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            dt.year(),
            dt.month(),
            dt.day(),
            dt.hour(),
            dt.minutes(),
            dt.seconds()
        ),
        Err(_) => format!("{secs}s after 1970"),
    }
}

/// Parses certificates from PEM (one or many `CERTIFICATE` blocks) or a single DER certificate.
pub fn parse_certificates(data: &[u8]) -> Result<Vec<Cert>, Error> {
    let blocks = pem_blocks(data);
    if blocks.is_empty() {
        return Ok(vec![Cert::from_der(data)?]);
    }
    let mut out = Vec::new();
    for (label, der) in blocks {
        if label == "CERTIFICATE" || label == "X509 CERTIFICATE" {
            out.push(Cert::from_der(&der)?);
        }
    }
    if out.is_empty() {
        return Err(Error::Certificate(
            "no CERTIFICATE block in PEM input".into(),
        ));
    }
    Ok(out)
}

/// Splits PEM text into (label, decoded bytes) blocks; text around blocks is ignored.
pub fn pem_blocks(data: &[u8]) -> Vec<(String, Vec<u8>)> {
    let Ok(text) = std::str::from_utf8(data) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("-----BEGIN ") {
        let after = &rest[start + 11..];
        let Some(label_end) = after.find("-----") else {
            break;
        };
        let label = &after[..label_end];
        let end_marker = format!("-----END {label}-----");
        let Some(end) = after.find(&end_marker) else {
            break;
        };
        let block = &rest[start..start + 11 + end + end_marker.len()];
        if let Ok((l, der)) = der::pem::decode_vec(block.as_bytes()) {
            out.push((l.to_string(), der));
        } else {
            // Encapsulated headers (legacy "Proc-Type") are not RFC 7468; decode the base64 body.
            let body: String = block
                .lines()
                .filter(|l| !l.starts_with("-----") && !l.contains(':'))
                .collect();
            if let Ok(der) = crate::mime::base64_decode(body.as_bytes()) {
                out.push((label.to_string(), der));
            }
        }
        rest = &after[end + end_marker.len()..];
    }
    out
}
