//! The one signature verdict: what envelopd tells a reader about a signed message, decided in
//! one place for every path (`envelopd smime verify`, the IMAP status, harvesting).
//!
//! `signature=valid` promises: the text shown comes from the person the message's single From
//! mailbox names. It needs all of:
//! - at least one signer, and every SignerInfo checks out (signature value, signed attributes
//!   present, content digest over exactly the part shown; a detached signature that also embeds
//!   content is invalid);
//! - every signer certificate is valid for signing mail as the From address by the certificate
//!   store (chain to a trust anchor, validity, key usage and EKU, key strength, name
//!   constraints, revocation) under the one address rule ([`smime::address`]);
//! - one From mailbox: every From field holds exactly one mailbox and all name the same one
//!   (OpenSSL-made mail repeats From inside the signed part), no display name shows another
//!   address; a Sender naming someone else is reported, not valid;
//! - a digest other engines still accept (SHA-1 is `weak`) and a signing time not in the future
//!   beyond [`MAX_CLOCK_SKEW`].
//!
//! Anything else gets another value with the reason, so a reader's filter on `valid` is safe.

use std::time::{Duration, SystemTime};

use smime::mime::Originators;
use smime::{Address, Cert, Digest, SignerReport};

use crate::{CertStore, Purpose, Rejection};

/// How far in the future a signing time may lie (clocks of senders' machines drift).
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(15 * 60);

/// The signature status values, as the status header writes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Not signed (no signature layer).
    None,
    /// Signed by the From mailbox, as [`crate::verdict`] describes.
    Valid,
    /// Signed and verified, but with an algorithm other engines refuse (SHA-1).
    Weak,
    /// The signature does not verify, or a rule for trustworthy mail is broken.
    Invalid,
    /// No trust anchor vouches for the signer's certificate.
    Untrusted,
    /// The From field is not one mailbox the signer's certificate names.
    FromMismatch,
    /// Signed by the From mailbox, but a Sender field names someone else.
    SenderMismatch,
    /// The signer's certificate (or its CA) was revoked.
    Revoked,
}

impl Status {
    /// The value as written in the status header (`from-mismatch` …).
    pub fn as_str(self) -> &'static str {
        match self {
            Status::None => "none",
            Status::Valid => "valid",
            Status::Weak => "weak",
            Status::Invalid => "invalid",
            Status::Untrusted => "untrusted",
            Status::FromMismatch => "from-mismatch",
            Status::SenderMismatch => "sender-mismatch",
            Status::Revoked => "revoked",
        }
    }
}

/// The verdict on one signature layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The status.
    pub status: Status,
    /// Why, when not valid.
    pub reason: Option<String>,
    /// The signer's address: the From address the certificate names, or the certificate's first
    /// address when it names another one.
    pub signer: Option<String>,
    /// The Sender address that is not the From one (with [`Status::SenderMismatch`]).
    pub sender: Option<String>,
}

impl Verdict {
    /// True only for [`Status::Valid`].
    pub fn is_valid(&self) -> bool {
        self.status == Status::Valid
    }

    /// The verdict for an unsigned message.
    pub fn unsigned() -> Self {
        Verdict {
            status: Status::None,
            reason: None,
            signer: None,
            sender: None,
        }
    }

    /// The verdict for a signature that could not be read at all (damaged, or beyond what
    /// envelopd checks, such as more than 8 signers): invalid, with why.
    pub fn unreadable(why: String) -> Self {
        Self::new(Status::Invalid, Some(why), None)
    }

    fn new(status: Status, reason: Option<String>, signer: Option<String>) -> Self {
        Verdict {
            status,
            reason,
            signer,
            sender: None,
        }
    }

    /// The `signature=…` part of the status header: `signature=VALUE`, then `reason="…"`,
    /// `signer=ADDRESS` and `sender=ADDRESS` when present; nothing that could end the line.
    pub fn header_part(&self) -> String {
        let mut out = format!("signature={}", self.status.as_str());
        if let Some(r) = &self.reason {
            out.push_str(&format!("; reason={}", quote(r)));
        }
        if let Some(s) = &self.signer {
            out.push_str(&format!("; signer={}", bare(s)));
        }
        if let Some(s) = &self.sender {
            out.push_str(&format!("; sender={}", bare(s)));
        }
        out
    }
}

/// A value as a quoted string without anything that could end the header line.
pub fn quote(text: &str) -> String {
    let clean: String = text
        .chars()
        .filter(|c| !c.is_control())
        .map(|c| if c == '"' { '\'' } else { c })
        .take(200)
        .collect();
    format!("\"{clean}\"")
}

/// An address as a bare header token (nothing that separates or ends parameters), its domain
/// as A-labels: `signer=alice@xn--smme-m9d.example`, not a `smіme.example` whose `і` is
/// Cyrillic and which a reader cannot tell from `smime.example` (browsers and Thunderbird show
/// such names as punycode too); a local part that reads as another, ASCII one escaped the same
/// way (`{U+0430}lice@…`, see [`smime::Address::for_status`]).
fn bare(text: &str) -> String {
    let text = smime::Address::parse(text).map_or_else(|_| text.to_string(), |a| a.for_status());
    text.chars()
        .filter(|c| !c.is_control() && !matches!(c, '"' | ';' | ' ' | '\\'))
        .take(200)
        .collect()
}

/// What one signature layer carried, as the S/MIME core reports it.
pub struct Signed<'a> {
    /// One report per SignerInfo.
    pub signers: &'a [SignerReport],
    /// Every certificate the signature carried (intermediates for the path).
    pub certificates: &'a [Cert],
    /// Every CRL the signature carried (DER): used when a CA on the path signed it.
    pub crls: &'a [Vec<u8>],
}

impl<'a> Signed<'a> {
    /// The parts of a verified message the verdict needs.
    pub fn of(v: &'a smime::Verified) -> Self {
        Signed {
            signers: &v.signers,
            certificates: &v.certificates,
            crls: &v.crls,
        }
    }
}

/// Judges one signature layer for a reader who is shown `shown` as the message's originator
/// fields, at time `at`. See the module documentation for what `valid` requires.
pub fn judge(
    signed: &Signed<'_>,
    shown: &Originators,
    store: &CertStore,
    at: SystemTime,
) -> Verdict {
    // CRLs the message carries count when a CA on a validated path signed them (RFC 5652 lets a
    // signer include them; PKITS relies on it). Others are simply not used.
    for (i, crl) in signed.crls.iter().enumerate() {
        let _ = store.add_crl_with(crl, &format!("crl {i} in the message"), signed.certificates);
    }
    let Some(first) = signed.signers.first() else {
        return Verdict::new(
            Status::Invalid,
            Some("the signature has no signer".into()),
            None,
        );
    };
    let from = shown.single_from();
    // Who signed, for the reader: the From address when the certificate names it.
    let signer_of = |s: &SignerReport| -> Option<String> {
        let cert = s.cert.as_ref()?;
        match &from {
            Ok(f) if cert.names(f) => Some(f.to_string()),
            _ => cert.addresses().first().map(ToString::to_string),
        }
    };
    let mut first_signer = signer_of(first);
    for (i, s) in signed.signers.iter().enumerate() {
        let mut signer = signer_of(s).or_else(|| first_signer.clone());
        let Some(cert) = &s.cert else {
            return Verdict::new(
                Status::Invalid,
                Some("the signer's certificate is missing".into()),
                signer,
            );
        };
        if let Some(p) = &s.problem {
            return Verdict::new(Status::Invalid, Some(p.clone()), signer);
        }
        // The certificate the signature verified with, or another carried one it verifies
        // with too (the same key certified again: an expired certificate carried before its
        // renewal must not hide the renewal). Every one of them certifies the signing key, so
        // taking one that validates is what removing the others would give; the first one's
        // failure is reported when none does.
        let mut first_failure = None;
        for (n, c) in std::iter::once(cert).chain(&s.also).enumerate() {
            match signing_cert_ok(c, &from, signed.certificates, store, at) {
                Ok(()) => {
                    first_failure = None;
                    if n > 0 {
                        // The one taken names the From address (it was checked).
                        signer = from.as_ref().ok().map(ToString::to_string);
                        if i == 0 {
                            first_signer = signer.clone();
                        }
                    }
                    break;
                }
                Err(v) => {
                    first_failure.get_or_insert(v);
                }
            }
        }
        if let Some(mut v) = first_failure {
            v.signer = signer;
            return v;
        }
        if let Some(t) = s.signing_time {
            if t > at + MAX_CLOCK_SKEW {
                return Verdict::new(
                    Status::Invalid,
                    Some(format!(
                        "signed in the future ({}); the signature cannot have been made yet",
                        smime::cert::fmt_time(t)
                    )),
                    signer,
                );
            }
        }
        if s.digest_algorithm == Some(Digest::Sha1) {
            return Verdict::new(
                Status::Weak,
                Some(
                    "SHA-1 digest: such signatures can be forged (chosen-prefix collisions)".into(),
                ),
                signer,
            );
        }
    }
    let Ok(from) = from else {
        return Verdict::new(Status::Invalid, Some("no From field".into()), first_signer);
    };
    if let Some(other) = shown.other_senders(from).into_iter().next() {
        return Verdict {
            status: Status::SenderMismatch,
            reason: Some(format!(
                "the Sender field names {other}, who did not sign; the signer is {from}"
            )),
            signer: first_signer,
            sender: Some(other),
        };
    }
    Verdict::new(Status::Valid, None, first_signer)
}

/// Whether `cert` may sign mail as the From address at `at`: the path first (an untrusted or
/// revoked signer is that, whatever From says), then everything else for signing mail as that
/// address (the address itself, key strength, key usage and EKU), the checks
/// `CertStore::validate` makes besides the path, which is built once. The verdict's signer is
/// left for the caller to fill in.
fn signing_cert_ok(
    cert: &Cert,
    from: &Result<&Address, String>,
    carried: &[Cert],
    store: &CertStore,
    at: SystemTime,
) -> Result<(), Verdict> {
    store
        .validate_chain(cert, carried, at)
        .map_err(|r| rejected(r, None))?;
    let from = from
        .as_ref()
        .map_err(|why| Verdict::new(Status::FromMismatch, Some(why.clone()), None))?;
    if !cert.names(from) {
        return Err(rejected(
            crate::wrong_address(cert, &from.to_string()),
            None,
        ));
    }
    crate::check_key(cert, Purpose::Sign)
        .and_then(|_| crate::check_usage(cert, Purpose::Sign))
        .map_err(|r| rejected(r, None))
}

/// The verdict for a certificate the store refused.
fn rejected(r: Rejection, signer: Option<String>) -> Verdict {
    let status = match &r {
        Rejection::WrongAddress { .. } | Rejection::NoCertificate(_) => Status::FromMismatch,
        Rejection::Untrusted { .. } => Status::Untrusted,
        Rejection::Revoked { .. } => Status::Revoked,
        _ => Status::Invalid,
    };
    Verdict::new(status, Some(r.to_string()), signer)
}

/// The most carried certificates naming the From address that [`harvestable`] considers, in
/// the message's order. A signature carries one or two (the signing and a separate encryption
/// certificate; three while one is renewed); each is validated with a path search of its own, so
/// without a limit a valid signature could bring thousands to check.
pub const MAX_HARVEST_CANDIDATES: usize = 4;

/// Certificates a valid signature carried that may be used to encrypt to its From address (a
/// separate encryption certificate travels in the signature; the signing certificate itself
/// may not allow encryption). Empty unless `verdict` is valid.
pub fn harvestable(
    verdict: &Verdict,
    signed: &Signed<'_>,
    shown: &Originators,
    store: &CertStore,
    at: SystemTime,
) -> Vec<Cert> {
    if !verdict.is_valid() {
        return Vec::new();
    }
    let Ok(from) = shown.single_from() else {
        return Vec::new();
    };
    let carried = signed
        .certificates
        .iter()
        .filter(|c| c.names(from))
        .take(MAX_HARVEST_CANDIDATES);
    let from = from.to_string();
    let mut out: Vec<Cert> = Vec::new();
    for cert in carried.chain(signed.signers.iter().filter_map(|s| s.cert.as_ref())) {
        let usable = store
            .validate(cert, Purpose::Encrypt, &from, signed.certificates, at)
            .is_ok();
        if usable && !out.contains(cert) {
            out.push(cert.clone());
        }
    }
    out
}
