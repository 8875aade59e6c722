//! Revocation: certificate revocation lists (RFC 5280 §5) kept verified in memory, and the
//! status of a certificate from them. Pure: fetching (HTTP, files, the disk cache) is the
//! daemon's job; here CRL bytes come in, are checked against the CA that must have signed them,
//! and answer "good", "revoked" or "unknown, because …".
//!
//! CRLs are parsed with `x509-cert` (RustCrypto, the same types as the certificates) and their
//! signatures checked with the S/MIME core's `aws-lc-rs` verifier, so a CRL is trusted exactly as
//! far as the CA certificate it chains to.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::SystemTime;

use der::{Decode, Encode};
use smime::cert::fmt_time;
use smime::Cert;
use x509_cert::crl::CertificateList;
use x509_cert::ext::pkix::crl::dp::IssuingDistributionPoint;
use x509_cert::ext::pkix::crl::CrlReason;
use x509_cert::ext::pkix::name::{DistributionPointName, GeneralName};
use x509_cert::ext::pkix::{AuthorityInfoAccessSyntax, CrlDistributionPoints, KeyUsage, KeyUsages};

/// id-ce-issuingDistributionPoint (RFC 5280 §5.2.5).
const ID_CE_ISSUING_DISTRIBUTION_POINT: der::asn1::ObjectIdentifier =
    der::asn1::ObjectIdentifier::new_unwrap("2.5.29.28");

/// The largest CRL accepted (bytes); national CAs publish CRLs of a few MiB.
pub const MAX_CRL_SIZE: usize = 32 << 20;

/// What to do when the revocation status of a certificate cannot be found out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RevocationMode {
    /// Do not check revocation at all.
    Off,
    /// Use revocation data when it can be had; a certificate with unknown status is used
    /// (and the daemon logs that it could not check).
    #[default]
    Prefer,
    /// A certificate whose status is unknown is not used.
    Require,
}

/// The revocation status of one certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Not revoked according to fresh data.
    Good,
    /// Revoked.
    Revoked {
        /// When, according to the CA.
        date: SystemTime,
        /// The CRL reason code, if given (`keyCompromise` …).
        reason: Option<String>,
    },
    /// No usable revocation data; why.
    Unknown(String),
}

/// A CRL whose signature was checked against its issuing CA.
#[derive(Debug, Clone)]
pub struct Crl {
    issuer: Vec<u8>,
    issuer_text: String,
    signer_key: [u8; 32],
    this_update: SystemTime,
    next_update: Option<SystemTime>,
    revoked: HashMap<Vec<u8>, (SystemTime, Option<String>)>,
    source: String,
    scope: Scope,
    /// Signed over a SHA-1 digest: it can show a revocation (a forged one only denies service),
    /// never that a certificate is good (a forged one could hide a revocation).
    sha1: bool,
}

/// What an issuingDistributionPoint extension limits a CRL to (RFC 5280 §5.2.5).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Scope {
    only_user: bool,
    only_ca: bool,
    /// Covers only some revocation reasons: it can prove "revoked", never "good".
    partial: bool,
    /// The distribution point names it is for (URIs, directory names as [`crate::name_key`]).
    names: Vec<String>,
}

/// The names of a distribution point, comparable across certificates and CRLs.
fn dp_names(name: &DistributionPointName) -> Vec<String> {
    match name {
        DistributionPointName::FullName(names) => names
            .iter()
            .filter_map(|g| match g {
                GeneralName::UniformResourceIdentifier(u) => Some(format!("uri:{u}")),
                GeneralName::DirectoryName(n) => Some(format!("dn:{}", crate::name_key(n))),
                _ => None,
            })
            .collect(),
        // Relative names would need the CRL issuer prepended; such a CRL applies to no
        // certificate here (its status then stays unknown rather than wrongly good).
        DistributionPointName::NameRelativeToCRLIssuer(_) => vec!["relative".into()],
    }
}

impl Crl {
    /// Parses a CRL (DER or PEM) and checks it was signed by one of `issuers` (a CA certificate
    /// whose subject is the CRL's issuer and that may sign CRLs). `source` names where it came
    /// from, for messages.
    pub fn verified(data: &[u8], issuers: &[&Cert], source: &str) -> Result<Crl, String> {
        if data.len() > MAX_CRL_SIZE {
            return Err(format!(
                "the CRL is {} bytes, more than the {} accepted",
                data.len(),
                MAX_CRL_SIZE
            ));
        }
        let der = pem_or_der(data)?;
        let list = CertificateList::<x509_cert::certificate::Rfc5280>::from_der(&der)
            .map_err(|e| format!("not a CRL (X.509 CertificateList): {e}"))?;
        let tbs = &list.tbs_cert_list;
        if list.signature_algorithm.to_der().ok() != tbs.signature.to_der().ok() {
            return Err("the CRL's two signature algorithm fields differ".into());
        }
        // Critical extensions envelopd does not implement (delta CRLs, indirect CRLs, partial
        // scopes) make the CRL unusable rather than misread (RFC 5280 §5.2).
        let mut scope = Scope::default();
        for ext in tbs.crl_extensions.iter().flatten() {
            // Matched by its OID from RFC 5280: x509-cert 0.3.0 associates IssuingDistributionPoint
            // with the subjectInfoAccess OID by mistake.
            if ext.extn_id == ID_CE_ISSUING_DISTRIBUTION_POINT {
                let idp = IssuingDistributionPoint::from_der(ext.extn_value.as_bytes())
                    .map_err(|e| format!("the CRL's issuingDistributionPoint is malformed: {e}"))?;
                if idp.indirect_crl || idp.only_contains_attribute_certs {
                    return Err(
                        "indirect CRLs and attribute-certificate CRLs are not supported".into(),
                    );
                }
                scope = Scope {
                    only_user: idp.only_contains_user_certs,
                    only_ca: idp.only_contains_ca_certs,
                    partial: idp.only_some_reasons.is_some(),
                    names: idp
                        .distribution_point
                        .as_ref()
                        .map(dp_names)
                        .unwrap_or_default(),
                };
            } else if ext.critical {
                // Delta CRLs (deltaCRLIndicator) and anything else critical: unusable rather
                // than misread (RFC 5280 §5.2).
                return Err(format!(
                    "the CRL has a critical extension envelopd does not support ({})",
                    ext.extn_id
                ));
            }
        }
        let issuer = crate::name_key(&tbs.issuer).into_bytes();
        let raw_tbs = smime::ber::signed_part(&der).map_err(|e| e.to_string())?;
        let signature = list
            .signature
            .as_bytes()
            .ok_or("the CRL signature is not a whole number of bytes")?;
        let mut problem = format!(
            "no CA certificate for the CRL's issuer \"{}\" is known",
            tbs.issuer
        );
        let mut signer = None;
        for ca in issuers {
            if crate::name_key(ca.parsed().tbs_certificate().subject()).as_bytes() != issuer {
                continue;
            }
            if let Ok(Some((_, ku))) = ca.parsed().tbs_certificate().get_extension::<KeyUsage>() {
                if !ku.0.contains(KeyUsages::CRLSign) {
                    problem = format!("the CA \"{}\" may not sign CRLs (keyUsage)", ca.subject());
                    continue;
                }
            }
            match smime::sigalg::verify(
                ca.spki(),
                &list.signature_algorithm,
                None,
                raw_tbs,
                signature,
            ) {
                Ok(()) => {
                    signer = Some(*ca);
                    break;
                }
                Err(e) => {
                    problem = format!(
                        "the CRL's signature does not verify with the key of \"{}\": {e}",
                        ca.subject()
                    )
                }
            }
        }
        let signer = signer.ok_or(problem)?;
        let mut revoked = HashMap::new();
        for entry in tbs.revoked_certificates.iter().flatten() {
            let mut reason = None;
            for ext in entry.crl_entry_extensions.iter().flatten() {
                if ext.extn_id == <CrlReason as der::oid::AssociatedOid>::OID {
                    reason = CrlReason::from_der(ext.extn_value.as_bytes())
                        .ok()
                        .map(reason_name);
                } else if ext.critical {
                    // certificateIssuer (indirect CRLs) and anything else critical.
                    return Err(format!(
                        "a CRL entry has a critical extension envelopd does not support ({})",
                        ext.extn_id
                    ));
                }
            }
            revoked.insert(
                entry.serial_number.as_bytes().to_vec(),
                (entry.revocation_date.to_system_time(), reason),
            );
        }
        Ok(Crl {
            issuer,
            issuer_text: tbs.issuer.to_string(),
            signer_key: key_id(signer),
            this_update: tbs.this_update.to_system_time(),
            next_update: tbs.next_update.map(|t| t.to_system_time()),
            revoked,
            source: source.to_string(),
            scope,
            sha1: smime::sigalg::is_sha1(&list.signature_algorithm),
        })
    }

    /// The issuing CA's name.
    pub fn issuer(&self) -> &str {
        &self.issuer_text
    }

    /// When the CA issued this CRL.
    pub fn this_update(&self) -> SystemTime {
        self.this_update
    }

    /// When the CA promises the next one (the CRL is stale after that).
    pub fn next_update(&self) -> Option<SystemTime> {
        self.next_update
    }

    /// How many certificates it lists as revoked.
    pub fn revoked_count(&self) -> usize {
        self.revoked.len()
    }

    /// True when its issuer signed it over a SHA-1 digest: its revocations count, its silence
    /// does not (the status of a certificate it does not list stays unknown).
    pub fn signed_with_sha1(&self) -> bool {
        self.sha1
    }

    /// Where it came from (URL or file).
    pub fn source(&self) -> &str {
        &self.source
    }
}

/// The RFC 5280 name of a CRL reason code.
pub fn reason_name(r: CrlReason) -> String {
    match r {
        CrlReason::Unspecified => "unspecified",
        CrlReason::KeyCompromise => "keyCompromise",
        CrlReason::CaCompromise => "cACompromise",
        CrlReason::AffiliationChanged => "affiliationChanged",
        CrlReason::Superseded => "superseded",
        CrlReason::CessationOfOperation => "cessationOfOperation",
        CrlReason::CertificateHold => "certificateHold",
        CrlReason::RemoveFromCRL => "removeFromCRL",
        CrlReason::PrivilegeWithdrawn => "privilegeWithdrawn",
        CrlReason::AaCompromise => "aACompromise",
    }
    .to_string()
}

fn pem_or_der(data: &[u8]) -> Result<Vec<u8>, String> {
    if data.starts_with(b"-----") || data.trim_ascii_start().starts_with(b"-----BEGIN") {
        smime::cert::pem_blocks(data)
            .into_iter()
            .find(|(label, _)| label == "X509 CRL")
            .map(|(_, der)| der)
            .ok_or_else(|| "PEM without an X509 CRL block".to_string())
    } else {
        Ok(data.to_vec())
    }
}

/// SHA-256 of a certificate's public key: which key signed a CRL.
fn key_id(c: &Cert) -> [u8; 32] {
    let spki = c.spki().to_der().unwrap_or_default();
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &spki);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// The HTTP(S) URLs of a certificate's CRL distribution points.
pub fn crl_urls(c: &Cert) -> Vec<String> {
    cert_dp_names(c)
        .into_iter()
        .filter_map(|n| n.strip_prefix("uri:").map(str::to_string))
        .filter(|u| u.starts_with("http://") || u.starts_with("https://"))
        .collect()
}

/// The names of every CRL distribution point of a certificate (for matching a CRL's scope).
fn cert_dp_names(c: &Cert) -> Vec<String> {
    let Ok(Some((_, dps))) = c
        .parsed()
        .tbs_certificate()
        .get_extension::<CrlDistributionPoints>()
    else {
        return Vec::new();
    };
    dps.0
        .iter()
        .filter_map(|dp| dp.distribution_point.as_ref())
        .flat_map(dp_names)
        .collect()
}

/// The OCSP responder URLs of a certificate (Authority Information Access).
pub fn ocsp_urls(c: &Cert) -> Vec<String> {
    const ID_AD_OCSP: der::asn1::ObjectIdentifier =
        der::asn1::ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.1");
    let Ok(Some((_, aia))) = c
        .parsed()
        .tbs_certificate()
        .get_extension::<AuthorityInfoAccessSyntax>()
    else {
        return Vec::new();
    };
    aia.0
        .iter()
        .filter(|a| a.access_method == ID_AD_OCSP)
        .filter_map(|a| match &a.access_location {
            GeneralName::UniformResourceIdentifier(u) => Some(u.to_string()),
            _ => None,
        })
        .filter(|u| u.starts_with("http://"))
        .collect()
}

/// An answer from an OCSP responder, already checked.
#[derive(Debug, Clone)]
pub struct OcspAnswer {
    /// The status it gave.
    pub status: Status,
    /// When it stops being current.
    pub next_update: Option<SystemTime>,
    /// When the responder produced it.
    pub this_update: SystemTime,
}

/// The revocation data envelopd holds: verified CRLs, newest per CA key, and OCSP answers.
/// Shared between the certificate store (which asks) and the fetcher (which adds).
#[derive(Debug, Default)]
pub struct Revocation {
    crls: RwLock<Vec<Crl>>,
    ocsp: RwLock<HashMap<OcspKey, OcspAnswer>>,
}

impl Revocation {
    /// Keeps a verified CRL (replacing an older one from the same CA key); false when an equal
    /// or newer one is already held. A CRL signed over SHA-1 and one signed otherwise never
    /// replace each other: a forged SHA-1 CRL must not push out the genuine list of revocations.
    pub fn add(&self, crl: Crl) -> bool {
        let mut crls = self.crls.write().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = crls.iter_mut().find(|c| {
            c.issuer == crl.issuer
                && c.signer_key == crl.signer_key
                && c.scope == crl.scope
                && c.sha1 == crl.sha1
        }) {
            if old.this_update >= crl.this_update {
                return false;
            }
            *old = crl;
            return true;
        }
        crls.push(crl);
        true
    }

    /// True when no CRL and no OCSP answer is held.
    pub fn is_empty(&self) -> bool {
        self.crls
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
            && self
                .ocsp
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .is_empty()
    }

    /// Every CRL held.
    pub fn crls(&self) -> Vec<Crl> {
        self.crls.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Keeps an OCSP answer for `cert` issued by `issuer`. An answer that only says "unknown"
    /// (e.g. "good" signed over SHA-1) does not replace a held revocation: a forged answer must
    /// not hide it.
    pub fn add_ocsp(&self, cert: &Cert, issuer: &Cert, answer: OcspAnswer) {
        let mut held = self.ocsp.write().unwrap_or_else(|e| e.into_inner());
        let key = ocsp_key(cert, issuer);
        let keeps_revocation = matches!(answer.status, Status::Unknown(_))
            && held
                .get(&key)
                .is_some_and(|old| matches!(old.status, Status::Revoked { .. }));
        if !keeps_revocation {
            held.insert(key, answer);
        }
    }

    /// The status of `cert` (issued by `issuer`) at `at`: a revocation in any held CRL or OCSP
    /// answer wins; otherwise good only when current data says so.
    pub fn status(&self, cert: &Cert, issuer: &Cert, at: SystemTime) -> Status {
        let issuer_name = crate::name_key(cert.parsed().tbs_certificate().issuer()).into_bytes();
        let serial = cert
            .parsed()
            .tbs_certificate()
            .serial_number()
            .as_bytes()
            .to_vec();
        let key = key_id(issuer);
        let mut unknown = Vec::new();
        {
            let crls = self.crls.read().unwrap_or_else(|e| e.into_inner());
            let cert_is_ca = cert.ca_problem().is_none();
            let cert_dps: Vec<String> = cert_dp_names(cert);
            let applicable = crls.iter().filter(|c| {
                c.issuer == issuer_name
                    && c.signer_key == key
                    && !(c.scope.only_user && cert_is_ca)
                    && (!c.scope.only_ca || cert_is_ca)
                    && (c.scope.names.is_empty()
                        || c.scope.names.iter().any(|n| cert_dps.contains(n)))
            });
            let mut good = false;
            for crl in applicable {
                if let Some((date, reason)) = crl.revoked.get(&serial) {
                    return Status::Revoked {
                        date: *date,
                        reason: reason.clone(),
                    };
                }
                match crl.next_update {
                    Some(next) if next < at => unknown.push(format!(
                        "the CRL of \"{}\" is out of date since {}",
                        crl.issuer_text,
                        fmt_time(next)
                    )),
                    _ if crl.this_update > at + std::time::Duration::from_secs(300) => unknown
                        .push(format!(
                            "the CRL of \"{}\" was issued after the time asked about",
                            crl.issuer_text
                        )),
                    _ if crl.scope.partial => unknown.push(format!(
                        "the CRL of \"{}\" covers only some revocation reasons",
                        crl.issuer_text
                    )),
                    _ if crl.sha1 => unknown.push(format!(
                        "the CRL of \"{}\" is signed with SHA-1, which collisions make \
                         forgeable: it can show a revocation, not that a certificate is good",
                        crl.issuer_text
                    )),
                    _ => good = true,
                }
            }
            if good {
                return Status::Good;
            }
        }
        if let Some(a) = self
            .ocsp
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&ocsp_key(cert, issuer))
        {
            let current = a.next_update.is_none_or(|n| n >= at);
            match &a.status {
                Status::Revoked { .. } => return a.status.clone(),
                Status::Good if current => return Status::Good,
                Status::Good => unknown.push("the OCSP answer is out of date".into()),
                Status::Unknown(why) => unknown.push(why.clone()),
            }
        }
        if unknown.is_empty() {
            let urls = crl_urls(cert);
            unknown.push(if urls.is_empty() && ocsp_urls(cert).is_empty() {
                format!(
                    "no CRL of \"{}\" is known and the certificate names no place to get one",
                    cert.issuer()
                )
            } else {
                format!("no CRL of \"{}\" could be fetched yet", cert.issuer())
            });
        }
        Status::Unknown(unknown.join("; "))
    }
}

/// (SHA-256 of the issuer's key, serial number): one certificate.
type OcspKey = (Vec<u8>, Vec<u8>);

fn ocsp_key(cert: &Cert, issuer: &Cert) -> OcspKey {
    (
        key_id(issuer).to_vec(),
        cert.parsed()
            .tbs_certificate()
            .serial_number()
            .as_bytes()
            .to_vec(),
    )
}
