//! envelopd's certificate store: trust anchors, intermediate CAs and recipient certificates, and
//! the one place that decides whether a certificate may be used for an address right now.
//!
//! A certificate is usable only if it chains to a trust anchor (intermediates from the store or
//! the message), every certificate on the path is within its validity period, issuers are CAs
//! allowed to sign certificates (basicConstraints, keyUsage, pathLenConstraint), the key is strong
//! enough (RSA ≥ 2048 bits, EC P-256/P-384), its key usage fits the purpose (keyEncipherment or
//! keyAgreement to encrypt, digitalSignature or nonRepudiation to sign), its extended key usage
//! allows e-mail protection (or is absent or anyExtendedKeyUsage), and it names the address under
//! envelopd's one comparison rule ([`smime::address`]: the whole address ASCII-case-insensitive,
//! IDNA domains, SAN first and the subject emailAddress only without one, no wildcards).
//!
//! This is the only path validator in envelopd: `envelopd smime verify`, the IMAP status, the
//! outgoing policy, harvesting, `check`, `certs` and `explain` all ask it, and [`verdict`] turns
//! its answer plus the signature and the message's originator fields into the one status a
//! reader is shown.
//! Every rejection says why, in words a practice's IT person can act on.
//!
//! Revocation ([`revocation`]): every certificate on the path below the anchor is checked
//! against the CRLs (and OCSP answers) the store holds; a revoked one is never used, and one
//! whose status is unknown is used or not as the [`RevocationMode`] says.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod constraints;
pub mod ocsp;
pub mod revocation;
pub mod token;
pub mod verdict;

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use std::sync::Arc;

pub use revocation::{Revocation, RevocationMode, Status};
use smime::cert::fmt_time;
use smime::{Address, Cert};
use x509_cert::ext::pkix::{BasicConstraints, KeyUsage};

/// The longest certification path followed (leaf, intermediates, anchor).
pub const MAX_PATH_LEN: usize = 8;

/// The most links (certificate, candidate issuer) one path search checks before it gives up.
/// A signed message carries whatever CA certificates its sender likes: k keys that all certify
/// each other under one name are k² certificates through which the depth-first search has k^7
/// paths, each step an RSA or ECDSA verification, so 36 such certificates (a 40 KB message)
/// took 37 s of CPU per verification and 64 would take hours (the CPU-exhaustion attack on path
/// builders, CVE-2018-16875 in Go, GHSA-fh2r-99q2-6mmg in rustls-webpki). Real paths check a
/// handful of links (one per level, a few more where a CA was renewed or cross-certified); 100
/// is also what Go and webpki allow.
pub const MAX_SIGNATURE_CHECKS: usize = 100;

/// What a certificate is to be used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Encrypting mail to the certificate's owner.
    Encrypt,
    /// Verifying the owner's signature.
    Sign,
}

/// Why a certificate cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// The store holds no certificate for the address.
    #[error("no certificate for {0}")]
    NoCertificate(String),
    /// The certificate is for other addresses.
    #[error("certificate \"{subject}\" is for {has}, not for {wanted}")]
    WrongAddress {
        /// Subject of the certificate.
        subject: String,
        /// The addresses it names.
        has: String,
        /// The address it was needed for.
        wanted: String,
    },
    /// The certificate (or one on its path) has expired.
    #[error("certificate \"{subject}\" expired on {date}")]
    Expired {
        /// Subject of the expired certificate.
        subject: String,
        /// Its notAfter.
        date: String,
    },
    /// The certificate (or one on its path) is not valid yet.
    #[error("certificate \"{subject}\" is not valid before {date}")]
    NotYetValid {
        /// Subject of the certificate.
        subject: String,
        /// Its notBefore.
        date: String,
    },
    /// Key usage or extended key usage does not allow this purpose.
    #[error("certificate \"{subject}\" may not be used for this: {why}")]
    WrongUsage {
        /// Subject of the certificate.
        subject: String,
        /// What is missing.
        why: String,
    },
    /// The key is too weak or of a kind envelopd does not use.
    #[error("certificate \"{subject}\" has an unacceptable key: {why}")]
    WeakKey {
        /// Subject of the certificate.
        subject: String,
        /// Why.
        why: String,
    },
    /// No path to a trust anchor, or a broken link on the way.
    #[error("certificate \"{subject}\" is not trusted: {why}")]
    Untrusted {
        /// Subject of the certificate.
        subject: String,
        /// Why.
        why: String,
    },
    /// The certificate (or one on its path) was revoked by its CA.
    #[error("certificate \"{subject}\" was revoked on {date}{}", reason.as_ref().map(|r| format!(" ({r})")).unwrap_or_default())]
    Revoked {
        /// Subject of the revoked certificate.
        subject: String,
        /// When.
        date: String,
        /// The CA's reason code, if given.
        reason: Option<String>,
    },
    /// Revocation checking is required and the status could not be found out.
    #[error("certificate \"{subject}\": revocation status unknown ({why}), and revocation = \"require\"")]
    RevocationUnknown {
        /// Subject of the certificate.
        subject: String,
        /// Why the status is unknown.
        why: String,
    },
}

/// A file the store could not use.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct LoadError {
    /// The file or directory.
    pub path: PathBuf,
    /// What was wrong.
    pub reason: String,
}

/// Trust anchors, intermediate CAs and end-entity certificates.
#[derive(Debug, Default, Clone)]
pub struct CertStore {
    anchors: Vec<Cert>,
    intermediates: Vec<Cert>,
    certs: Vec<Cert>,
    verified: SignatureCache,
    /// SMIMECapabilities learnt from verified signed mail, by address.
    capabilities: std::collections::HashMap<Address, Vec<String>>,
    /// The certificate a correspondent asked to be encrypted to (SMIMEEncryptionKeyPreference
    /// in verified signed mail), by address.
    preferred: std::collections::HashMap<Address, Cert>,
    /// CRLs and OCSP answers, shared with the fetcher that keeps them current.
    revocation: Arc<Revocation>,
    revocation_mode: RevocationMode,
}

/// The AES-GCM content-encryption OIDs (RFC 5084): 128, 192 and 256 bits.
const GCM_OIDS: [&str; 3] = [
    "2.16.840.1.101.3.4.1.6",
    "2.16.840.1.101.3.4.1.26",
    "2.16.840.1.101.3.4.1.46",
];

/// Certificate signatures already checked, by the (certificate, issuer) pair of SHA-256
/// fingerprints.
/// A signature does not change with time, so every message to the same recipient need not repeat
/// the RSA or ECDSA verification of the same chain (it was a tenth of the proxy's CPU per message).
/// Only successes are kept, and at most [`SignatureCache::MAX`] of them.
#[derive(Debug, Default)]
struct SignatureCache(std::sync::Mutex<std::collections::HashSet<([u8; 32], [u8; 32])>>);

impl SignatureCache {
    const MAX: usize = 100_000;

    fn key(cert: &Cert, issuer: &Cert) -> ([u8; 32], [u8; 32]) {
        // The certificates' own fingerprints (each computed once per certificate), not their
        // DER: hashing both encodings again for every link was ~2 % of the instructions per
        // message; hashing the two fingerprints into one was still a quarter of path building.
        (cert.sha256(), issuer.sha256())
    }

    fn signed_by(&self, cert: &Cert, issuer: &Cert) -> bool {
        let key = Self::key(cert, issuer);
        let known = |set: &std::collections::HashSet<([u8; 32], [u8; 32])>| set.contains(&key);
        if self.0.lock().map(|s| known(&s)).unwrap_or(false) {
            return true;
        }
        let ok = cert.is_signed_by(issuer).is_ok();
        if ok {
            if let Ok(mut set) = self.0.lock() {
                if set.len() >= Self::MAX {
                    set.clear();
                }
                set.insert(key);
            }
        }
        ok
    }
}

impl Clone for SignatureCache {
    fn clone(&self) -> Self {
        let set = self.0.lock().map(|s| s.clone()).unwrap_or_default();
        SignatureCache(std::sync::Mutex::new(set))
    }
}

/// Where Debian keeps the system's trust anchors (TLS roots; S/MIME CAs are often among them).
pub const SYSTEM_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";

impl CertStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// The trust anchors.
    pub fn anchors(&self) -> &[Cert] {
        &self.anchors
    }

    /// The end-entity certificates (recipients and own certificates).
    pub fn certs(&self) -> &[Cert] {
        &self.certs
    }

    /// Adds a trust anchor (a CA the practice trusts).
    pub fn add_anchor(&mut self, cert: Cert) {
        if !self.anchors.contains(&cert) {
            self.anchors.push(cert);
        }
    }

    /// Adds a certificate: CA certificates become intermediates, others recipient certificates.
    pub fn add_cert(&mut self, cert: Cert) {
        let list = if is_ca(&cert) {
            &mut self.intermediates
        } else {
            &mut self.certs
        };
        if !list.contains(&cert) {
            list.push(cert);
        }
    }

    /// Loads trust anchors from a file (PEM bundle or DER) or every file of a directory.
    pub fn load_anchors(&mut self, path: &Path) -> Result<usize, LoadError> {
        let (certs, errors) = read_path(path);
        if let Some(e) = errors.into_iter().next() {
            // A trust anchor file that cannot be read is a configuration error, not a warning.
            return Err(e);
        }
        let n = certs.len();
        certs.into_iter().for_each(|c| self.add_anchor(c));
        Ok(n)
    }

    /// Records what a correspondent's client announced in a verified signature (SMIMECapabilities).
    pub fn set_capabilities(&mut self, address: &str, oids: Vec<String>) {
        if let (false, Ok(a)) = (oids.is_empty(), Address::parse(address)) {
            self.capabilities.insert(a, oids);
        }
    }

    /// True when the address's client announced AES-GCM in verified signed mail.
    pub fn announces_gcm(&self, address: &str) -> bool {
        Address::parse(address)
            .ok()
            .and_then(|a| self.capabilities.get(&a))
            .is_some_and(|caps| caps.iter().any(|c| GCM_OIDS.contains(&c.as_str())))
    }

    /// True when [`CertStore::set_capabilities`] would change nothing.
    pub fn has_capabilities(&self, address: &str, oids: &[String]) -> bool {
        oids.is_empty()
            || Address::parse(address)
                .ok()
                .and_then(|a| self.capabilities.get(&a))
                .is_some_and(|known| known == oids)
    }

    /// True when [`CertStore::set_preferred`] would change nothing.
    pub fn has_preferred(&self, address: &str, cert: &Cert) -> bool {
        Address::parse(address)
            .ok()
            .is_none_or(|a| self.preferred.get(&a) == Some(cert))
    }

    /// True when [`CertStore::learn`] would change nothing.
    pub fn knows(&self, cert: &Cert) -> bool {
        self.certs.contains(cert)
    }

    /// Records the certificate `address` asked to be encrypted to (from a verified signature).
    pub fn set_preferred(&mut self, address: &str, cert: Cert) {
        if let Ok(a) = Address::parse(address) {
            self.preferred.insert(a, cert);
        }
    }

    /// Adds a certificate learnt from verified mail, if it is new; true when it was.
    pub fn learn(&mut self, cert: Cert) -> bool {
        if self.certs.contains(&cert) {
            return false;
        }
        self.certs.push(cert);
        true
    }

    /// Sets what to do when a certificate's revocation status is unknown.
    pub fn set_revocation_mode(&mut self, mode: RevocationMode) {
        self.revocation_mode = mode;
    }

    /// The revocation mode.
    pub fn revocation_mode(&self) -> RevocationMode {
        self.revocation_mode
    }

    /// The revocation data (shared: a clone of the store sees the same CRLs).
    pub fn revocation(&self) -> &Arc<Revocation> {
        &self.revocation
    }

    /// Checks a CRL (DER or PEM) against the store's CAs and keeps it; `source` names where it
    /// came from. Returns the CRL, or why it cannot be used.
    pub fn add_crl(&self, data: &[u8], source: &str) -> Result<revocation::Crl, String> {
        let issuers: Vec<&Cert> = self.anchors.iter().chain(&self.intermediates).collect();
        let crl = revocation::Crl::verified(data, &issuers, source)?;
        self.revocation.add(crl.clone());
        Ok(crl)
    }

    /// The CRL distribution point URLs of every certificate in the store, without repeats.
    pub fn crl_urls(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for c in self.certs.iter().chain(&self.intermediates) {
            for u in revocation::crl_urls(c) {
                if !out.contains(&u) {
                    out.push(u);
                }
            }
        }
        out
    }

    /// Certificates whose revocation status is unknown from CRLs but whose chain names an OCSP
    /// responder: (certificate, its issuer, responder URL), for the fetcher to ask.
    pub fn ocsp_candidates(&self, at: SystemTime) -> Vec<(Cert, Cert, String)> {
        let mut out = Vec::new();
        for c in self.certs.iter().chain(&self.intermediates) {
            let urls = revocation::ocsp_urls(c);
            if urls.is_empty() {
                continue;
            }
            let Ok(path) = self.build_path(c, &[], at) else {
                continue;
            };
            let Some(issuer) = path.get(1) else { continue };
            if matches!(self.revocation.status(c, issuer, at), Status::Unknown(_)) {
                out.push((c.clone(), issuer.clone(), urls[0].clone()));
            }
        }
        out
    }

    /// The intermediate CA certificates.
    pub fn intermediates(&self) -> &[Cert] {
        &self.intermediates
    }

    /// Loads the system trust store ([`SYSTEM_ROOTS`]).
    pub fn load_system_roots(&mut self) -> Result<usize, LoadError> {
        self.load_anchors(Path::new(SYSTEM_ROOTS))
    }

    /// Loads recipient and intermediate certificates from a file or directory (files of any name,
    /// PEM or DER). Files that cannot be used are skipped and reported, so one bad file does not
    /// take the practice's whole address book down.
    pub fn load_certs(&mut self, path: &Path) -> (usize, Vec<LoadError>) {
        let (certs, errors) = read_path(path);
        let n = certs.len();
        certs.into_iter().for_each(|c| self.add_cert(c));
        (n, errors)
    }

    /// The best certificate to encrypt to `address` at `at`: the one its owner asked for in
    /// verified signed mail (SMIMEEncryptionKeyPreference) if it is valid, otherwise the newest
    /// valid one (latest notBefore: a renewal replaces the old certificate at once, a
    /// signing-only certificate never qualifies). Without a valid one, the reason why the newest
    /// candidate fails.
    pub fn encryption_cert(&self, address: &str, at: SystemTime) -> Result<Cert, Rejection> {
        let Ok(wanted) = Address::parse(address) else {
            return Err(Rejection::NoCertificate(address.to_string()));
        };
        let mut candidates: Vec<&Cert> = self.certs.iter().filter(|c| c.names(&wanted)).collect();
        if candidates.is_empty() {
            return Err(Rejection::NoCertificate(address.to_string()));
        }
        if let Some(p) = self.preferred.get(&wanted) {
            if self.validate(p, Purpose::Encrypt, address, &[], at).is_ok() {
                return Ok(p.clone());
            }
        }
        candidates.sort_by_key(|c| std::cmp::Reverse((c.validity().0, c.validity().1)));
        let mut first_problem = None;
        for c in candidates {
            match self.validate(c, Purpose::Encrypt, address, &[], at) {
                Ok(_) => return Ok(c.clone()),
                Err(e) => {
                    first_problem.get_or_insert(e);
                }
            }
        }
        Err(first_problem.expect("at least one candidate"))
    }

    /// Validates `cert` for `purpose` and `address` at `at`; `carried` are extra intermediates
    /// (e.g. from the signed message). Returns the path from the certificate to its anchor.
    pub fn validate(
        &self,
        cert: &Cert,
        purpose: Purpose,
        address: &str,
        carried: &[Cert],
        at: SystemTime,
    ) -> Result<Vec<Cert>, Rejection> {
        // Readable extensions first: which addresses a certificate names is only known once
        // its subjectAltName is unambiguous (the path's checks repeat this, from the cache).
        constraints::check_readable(cert)?;
        if !Address::parse(address).is_ok_and(|a| cert.names(&a)) {
            return Err(wrong_address(cert, address));
        }
        check_validity(cert, at)?;
        check_key(cert, purpose)?;
        check_usage(cert, purpose)?;
        let path = self.build_path(cert, carried, at)?;
        self.check_path_rules(&path)?;
        self.check_revocation(&path, at)?;
        Ok(path)
    }

    /// The path checks of [`CertStore::validate`] without the address, usage and key-size ones:
    /// validity, a path to an anchor with every link checked, and revocation. For path
    /// validation suites (NIST PKITS), whose certificates name no mail address.
    pub fn validate_chain(
        &self,
        cert: &Cert,
        carried: &[Cert],
        at: SystemTime,
    ) -> Result<Vec<Cert>, Rejection> {
        check_validity(cert, at)?;
        let path = self.build_path(cert, carried, at)?;
        self.check_path_rules(&path)?;
        self.check_revocation(&path, at)?;
        Ok(path)
    }

    /// Like [`CertStore::add_crl`], also accepting CRLs signed by CA certificates a message
    /// carried (`carried`). Such a CRL only ever answers for certificates whose validated path
    /// runs through that very key, so an unvalidated carrier cannot vouch for anything.
    pub fn add_crl_with(
        &self,
        data: &[u8],
        source: &str,
        carried: &[Cert],
    ) -> Result<revocation::Crl, String> {
        let issuers: Vec<&Cert> = self
            .anchors
            .iter()
            .chain(&self.intermediates)
            .chain(carried.iter().filter(|c| is_ca(c)))
            .collect();
        let crl = revocation::Crl::verified(data, &issuers, source)?;
        self.revocation.add(crl.clone());
        Ok(crl)
    }

    /// Critical extensions and name constraints along a built path.
    fn check_path_rules(&self, path: &[Cert]) -> Result<(), Rejection> {
        for c in path {
            constraints::check_critical(c)?;
        }
        constraints::check_name_constraints(path)
    }

    /// The revocation status of every certificate on `path` below its anchor.
    fn check_revocation(&self, path: &[Cert], at: SystemTime) -> Result<(), Rejection> {
        // Nothing to check against, and an unknown status is acceptable: skip the per-link work
        // (this runs for every recipient of every message).
        if self.revocation_mode == RevocationMode::Off
            || (self.revocation_mode == RevocationMode::Prefer && self.revocation.is_empty())
        {
            return Ok(());
        }
        for pair in path.windows(2) {
            match self.revocation.status(&pair[0], &pair[1], at) {
                Status::Good => {}
                Status::Revoked { date, reason } => {
                    return Err(Rejection::Revoked {
                        subject: pair[0].subject(),
                        date: fmt_time(date),
                        reason,
                    })
                }
                Status::Unknown(why) => {
                    if self.revocation_mode == RevocationMode::Require {
                        return Err(Rejection::RevocationUnknown {
                            subject: pair[0].subject(),
                            why,
                        });
                    }
                }
            }
        }
        Ok(())
    }

    /// The revocation status of `cert` as the store sees it: the first problem on its path
    /// (revoked, or unknown), or good. For listings; [`CertStore::validate`] applies it.
    pub fn revocation_status(&self, cert: &Cert, carried: &[Cert], at: SystemTime) -> Status {
        let Ok(path) = self.build_path(cert, carried, at) else {
            return Status::Unknown("no path to a trust anchor".into());
        };
        let mut worst = Status::Good;
        for pair in path.windows(2) {
            match self.revocation.status(&pair[0], &pair[1], at) {
                Status::Good => {}
                r @ Status::Revoked { .. } => return r,
                u @ Status::Unknown(_) => worst = u,
            }
        }
        worst
    }

    /// Finds a path from `leaf` to an anchor, checking every link.
    fn build_path(
        &self,
        leaf: &Cert,
        carried: &[Cert],
        at: SystemTime,
    ) -> Result<Vec<Cert>, Rejection> {
        let pool: Vec<&Cert> = self
            .intermediates
            .iter()
            .chain(carried.iter().filter(|c| is_ca(c)))
            .collect();
        let mut path = vec![leaf.clone()];
        let mut last_problem = None;
        let mut budget = MAX_SIGNATURE_CHECKS;
        if self.extend(&mut path, &pool, at, &mut last_problem, &mut budget) {
            return Ok(path);
        }
        if budget == 0 {
            return Err(Rejection::Untrusted {
                subject: leaf.subject(),
                why: format!(
                    "no path to a trusted CA within {MAX_SIGNATURE_CHECKS} signature checks ({} \
                     candidate CA certificates; a real chain needs a few: a broken or hostile \
                     set of certificates)",
                    pool.len()
                ),
            });
        }
        // A leaf signed by another end-entity certificate (a classic way to fake a chain) is
        // named as such, rather than as a missing CA (the remaining checks are the limit here
        // too: a message may carry any number of same-named certificates).
        if last_problem.is_none() {
            let issuer = name_key(leaf.parsed().tbs_certificate().issuer());
            let fake = carried
                .iter()
                .chain(&self.certs)
                .filter(|c| !is_ca(c) && name_key(c.parsed().tbs_certificate().subject()) == issuer)
                .take(budget)
                .find(|c| leaf.is_signed_by(c).is_ok());
            if let Some(fake) = fake {
                return Err(Rejection::Untrusted {
                    subject: leaf.subject(),
                    why: format!("its issuer \"{}\" is not a CA certificate", fake.subject()),
                });
            }
        }
        Err(last_problem.unwrap_or_else(|| Rejection::Untrusted {
            subject: leaf.subject(),
            why: format!(
                "no trusted CA issued it (issuer \"{}\"); add the CA certificate to the trust anchors",
                leaf.issuer()
            ),
        }))
    }

    /// Whether `issuer` signed `cert`, as one of the `budget` link checks left; None when none
    /// is left. Every check counts, also one the cache answers: the cache makes a check cheap,
    /// not the search narrow.
    fn check_link(&self, cert: &Cert, issuer: &Cert, budget: &mut usize) -> Option<bool> {
        *budget = budget.checked_sub(1)?;
        Some(self.verified.signed_by(cert, issuer))
    }

    /// Depth-first search for an anchor above the last certificate of `path`, checking at most
    /// `budget` more links (none left: the search stops, unsuccessful).
    fn extend(
        &self,
        path: &mut Vec<Cert>,
        pool: &[&Cert],
        at: SystemTime,
        problem: &mut Option<Rejection>,
        budget: &mut usize,
    ) -> bool {
        let current = path.last().expect("path starts with the leaf").clone();
        if self.anchors.contains(&current) {
            return true;
        }
        let issuer = current.parsed().tbs_certificate().issuer();
        // Names as RFC 5280 compares them; the exact-bytes case (nearly all) needs no
        // preparation of the strings.
        let issuer_key = std::cell::OnceCell::new();
        let subject_of = |c: &Cert| {
            let subject = c.parsed().tbs_certificate().subject();
            subject == issuer || name_key(subject) == *issuer_key.get_or_init(|| name_key(issuer))
        };
        // The anchor is the end of the path: its own validity is not the chain's concern (RFC 5280
        // §6.1), but the practice should know, so an expired anchor still fails.
        for anchor in self.anchors.iter().filter(|a| subject_of(a)) {
            let Some(signed) = self.check_link(&current, anchor, budget) else {
                return false;
            };
            if signed {
                if let Err(e) = not_sha1(&current).and(check_validity(anchor, at)) {
                    *problem = Some(e);
                    continue;
                }
                path.push(anchor.clone());
                return true;
            }
        }
        if path.len() >= MAX_PATH_LEN {
            return false;
        }
        let candidates: Vec<&Cert> = pool
            .iter()
            .copied()
            .filter(|c| subject_of(c) && !path.contains(c))
            .collect();
        for next in candidates {
            match self.check_link(&current, next, budget) {
                None => return false,
                Some(false) => continue,
                Some(true) => {}
            }
            // Self-issued intermediates (key rollover) do not count against pathLenConstraint.
            let below = path[1..].iter().filter(|c| !c.is_self_issued()).count();
            if let Err(e) = not_sha1(&current)
                .and(check_issuer(next, below))
                .and(check_validity(next, at))
            {
                *problem = Some(e);
                continue;
            }
            path.push(next.clone());
            if self.extend(path, pool, at, problem, budget) {
                return true;
            }
            path.pop();
        }
        false
    }
}

/// Whether a session logged in as `login` may use the keys of an identity with these
/// `addresses` and extra `logins`, for signing and for decrypting alike: the login is one of
/// the addresses (the one address rule), or one of the `logins` (as an address by the same
/// rule, otherwise a user name in any ASCII case). On a shared gateway nobody signs as, or reads
/// the mail of, a colleague through envelopd.
pub fn login_may_use(addresses: &[String], logins: &[String], login: &str) -> bool {
    addresses.iter().any(|a| smime::same_mailbox(a, login))
        || logins
            .iter()
            .any(|l| smime::same_mailbox(l, login) || l.eq_ignore_ascii_case(login))
}

/// A distinguished name in the form RFC 5280 §7.1 compares (after RFC 4518 preparation, in
/// the simplified form most path validators use): string values case-folded with white space
/// trimmed and runs of it collapsed, whatever their string type; other values by their bytes.
/// So "CN=GOOD  CA" issued by a CA whose subject says "CN=Good CA" chains, as it must.
pub fn name_key(name: &x509_cert::name::Name) -> String {
    name.iter_rdn().map(rdn_key).collect::<Vec<_>>().join(",")
}

/// One RDN in the form [`name_key`] compares (multi-valued RDNs sorted).
pub fn rdn_key(rdn: &x509_cert::name::RelativeDistinguishedName) -> String {
    use der::{Tag, Tagged};
    let mut parts: Vec<String> = rdn
        .iter()
        .map(|atv| {
            let v = &atv.value;
            let text = match v.tag() {
                Tag::Utf8String | Tag::PrintableString | Tag::Ia5String | Tag::VisibleString => {
                    String::from_utf8(v.value().to_vec()).ok()
                }
                Tag::TeletexString => Some(v.value().iter().map(|&b| b as char).collect()),
                Tag::BmpString => {
                    let units: Vec<u16> = v
                        .value()
                        .chunks(2)
                        .map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))
                        .collect();
                    String::from_utf16(&units).ok()
                }
                _ => None,
            };
            let value = match text {
                Some(t) => t
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
                    .to_lowercase(),
                None => format!(
                    "#{}",
                    v.value()
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect::<String>()
                ),
            };
            format!("{}={value}", atv.oid)
        })
        .collect();
    parts.sort();
    parts.join("+")
}

/// True when the certificate is a CA (basicConstraints cA = true).
fn is_ca(c: &Cert) -> bool {
    matches!(c.parsed().tbs_certificate().get_extension::<BasicConstraints>(), Ok(Some((_, bc))) if bc.ca)
}

/// An issuer on the path must be a CA allowed to sign certificates, with room for the
/// `below` non-self-issued intermediates under it (pathLenConstraint).
fn check_issuer(issuer: &Cert, below: usize) -> Result<(), Rejection> {
    let untrusted = |why: String| Rejection::Untrusted {
        subject: issuer.subject(),
        why,
    };
    // Basic constraints and keyCertSign: the same rule the S/MIME core applies.
    if let Some(problem) = issuer.ca_problem() {
        return Err(untrusted(problem));
    }
    if let Ok(Some((_, bc))) = issuer
        .parsed()
        .tbs_certificate()
        .get_extension::<BasicConstraints>()
    {
        if bc
            .path_len_constraint
            .is_some_and(|max| below > max as usize)
        {
            return Err(untrusted(format!(
                "its path length limit {} is exceeded",
                bc.path_len_constraint.unwrap_or_default()
            )));
        }
    }
    Ok(())
}

/// A link signed with SHA-1 does not count: with chosen-prefix collisions (SHAmbles, 2020) a
/// certificate the CA signed can be swapped for another one under the same signature. The
/// CA/Browser Forum's S/MIME rules and Thunderbird refuse such certificates; signed messages
/// with a SHA-1 digest stay readable, marked weak (their own rule in the verdict).
fn not_sha1(c: &Cert) -> Result<(), Rejection> {
    if c.signed_with_sha1() {
        return Err(Rejection::Untrusted {
            subject: c.subject(),
            why: "its issuer signed it with SHA-1, which collisions make forgeable".into(),
        });
    }
    Ok(())
}

fn check_validity(c: &Cert, at: SystemTime) -> Result<(), Rejection> {
    let (from, to) = c.validity();
    if at < from {
        Err(Rejection::NotYetValid {
            subject: c.subject(),
            date: fmt_time(from),
        })
    } else if at > to {
        Err(Rejection::Expired {
            subject: c.subject(),
            date: fmt_time(to),
        })
    } else {
        Ok(())
    }
}

/// RSA of at least 2048 bits, EC on P-256/P-384, Ed25519 for signing only.
fn check_key(c: &Cert, purpose: Purpose) -> Result<(), Rejection> {
    let weak = |why: String| Rejection::WeakKey {
        subject: c.subject(),
        why,
    };
    let spki = c.spki();
    match spki.algorithm.oid {
        smime::alg::RSA_ENCRYPTION => {
            let bits = rsa_bits(spki.subject_public_key.raw_bytes())
                .ok_or_else(|| weak("the RSA key cannot be parsed".into()))?;
            if bits < 2048 {
                return Err(weak(format!(
                    "RSA with {bits} bits (at least 2048 are required)"
                )));
            }
        }
        smime::alg::ID_EC_PUBLIC_KEY => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.decode_as::<der::asn1::ObjectIdentifier>().ok());
            if !matches!(curve, Some(smime::alg::SECP256R1 | smime::alg::SECP384R1)) {
                return Err(weak("an EC curve other than P-256 or P-384".into()));
            }
        }
        smime::alg::ID_ED25519 if purpose == Purpose::Sign => {}
        other => {
            return Err(weak(format!(
                "{} keys are not supported for {}",
                smime::alg::name(&other),
                if purpose == Purpose::Sign {
                    "signing"
                } else {
                    "encryption"
                }
            )))
        }
    }
    Ok(())
}

/// The bit length of an RSAPublicKey's modulus.
fn rsa_bits(rsa_public_key: &[u8]) -> Option<usize> {
    let (_, seq, _) = smime::ber::read_tlv(rsa_public_key).ok()?;
    let kids = smime::ber::children(seq).ok()?;
    let (tag, n, _) = smime::ber::read_tlv(kids.first()?).ok()?;
    if tag != 0x02 {
        return None;
    }
    let n = match n.iter().position(|&b| b != 0) {
        Some(i) => &n[i..],
        None => return Some(0),
    };
    Some(n.len() * 8 - n[0].leading_zeros() as usize)
}

fn check_usage(c: &Cert, purpose: Purpose) -> Result<(), Rejection> {
    let wrong = |why: &str| Rejection::WrongUsage {
        subject: c.subject(),
        why: why.to_string(),
    };
    let tbs = c.parsed().tbs_certificate();
    if let Ok(Some((_, ku))) = tbs.get_extension::<KeyUsage>() {
        match purpose {
            Purpose::Sign if !ku.digital_signature() && !ku.non_repudiation() => {
                return Err(wrong("its key usage does not include digitalSignature"))
            }
            Purpose::Encrypt => {
                let ec = c.spki().algorithm.oid == smime::alg::ID_EC_PUBLIC_KEY;
                if ec && !ku.key_agreement() {
                    return Err(wrong("its key usage does not include keyAgreement"));
                }
                if !ec && !ku.key_encipherment() {
                    return Err(wrong("its key usage does not include keyEncipherment"));
                }
            }
            _ => {}
        }
    }
    if !c.allows_email_protection() {
        return Err(wrong(
            "it is not meant for e-mail protection (extended key usage)",
        ));
    }
    Ok(())
}

fn wrong_address(c: &Cert, wanted: &str) -> Rejection {
    let has = c.mailboxes();
    Rejection::WrongAddress {
        subject: c.subject(),
        has: if has.is_empty() {
            "no e-mail address".into()
        } else {
            has.join(", ")
        },
        wanted: wanted.to_string(),
    }
}

/// Reads every certificate in a file or directory; unreadable files are reported, not fatal.
fn read_path(path: &Path) -> (Vec<Cert>, Vec<LoadError>) {
    let mut certs = Vec::new();
    let mut errors = Vec::new();
    let err = |p: &Path, reason: String| LoadError {
        path: p.to_path_buf(),
        reason,
    };
    let files: Vec<PathBuf> = if path.is_dir() {
        match std::fs::read_dir(path) {
            Ok(rd) => {
                let mut v: Vec<PathBuf> = rd
                    .filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| p.is_file())
                    .collect();
                v.sort();
                v
            }
            Err(e) => return (certs, vec![err(path, e.to_string())]),
        }
    } else {
        vec![path.to_path_buf()]
    };
    for f in files {
        match std::fs::read(&f) {
            Ok(data) => match smime::parse_certificates(&data) {
                Ok(cs) => certs.extend(cs),
                Err(e) => errors.push(err(&f, e.to_string())),
            },
            Err(e) => errors.push(err(&f, e.to_string())),
        }
    }
    (certs, errors)
}

/// The entry point shared by the `trust` fuzz target in `fuzz/` and its replay test, so that
/// both run exactly the same code on untrusted input.
#[doc(hidden)]
pub mod fuzz_targets {
    use super::*;

    /// The moment the fuzz target judges at (2030-01-01, inside the RFC 9216 certificates'
    /// validity), so that a finding does not depend on the day it is replayed.
    pub fn fixed_time() -> SystemTime {
        SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_893_456_000)
    }

    /// The trust layer on arbitrary bytes, each way they reach it: as a signed message (the
    /// verdict and the certificates it would teach), as certificates (each validated with the
    /// others carried, as a message's are), as a CRL of `issuer` and as an OCSP answer about
    /// `leaf` (`issuer`'s): parsed, and when the signature holds, asked about `leaf`; all at
    /// `at`. `store` trusts `issuer`.
    pub fn trust(data: &[u8], store: &CertStore, issuer: &Cert, leaf: &Cert, at: SystemTime) {
        if let Ok(v) = smime::verify(data) {
            let signed = verdict::Signed::of(&v);
            let judged = verdict::judge(&signed, &v.originators, store, at);
            let _ = verdict::harvestable(&judged, &signed, &v.originators, store, at);
        }
        if let Ok(certs) = smime::parse_certificates(data) {
            for c in certs.iter().take(4) {
                let address = c
                    .mailboxes()
                    .into_iter()
                    .next()
                    .unwrap_or_else(|| "a@example.org".into());
                for purpose in [Purpose::Sign, Purpose::Encrypt] {
                    let _ = store.validate(c, purpose, &address, &certs, at);
                }
                let _ = store.revocation_status(c, &certs, at);
            }
        }
        if let Ok(crl) = revocation::Crl::verified(data, &[issuer], "fuzz") {
            let known = Revocation::default();
            known.add(crl);
            let _ = known.status(leaf, issuer, at);
        }
        if let Ok(answer) = ocsp::read_response(data, leaf, issuer, at) {
            let known = Revocation::default();
            known.add_ocsp(leaf, issuer, answer);
            let _ = known.status(leaf, issuer, at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_addresses_follow_the_one_rule() {
        // The store compares through smime::Address; its own unit tests cover the rule, the
        // certificate-level tests (SAN, DN only, mixed case, IDN) are in tests/validation.rs.
        assert!(smime::same_mailbox(
            "Alice@Example.ORG",
            "alice@example.org"
        ));
        assert!(!smime::same_mailbox("*@example.org", "alice@example.org"));
    }

    #[test]
    fn rsa_bits_reads_the_modulus() {
        // SEQUENCE { INTEGER 0x00 0x80 ..(256 bytes).., INTEGER 65537 }
        let mut n = vec![0x00, 0x80];
        n.extend(std::iter::repeat_n(1u8, 255));
        let mut key = vec![0x30, 0x82, 0x01, 0x0a, 0x02, 0x82, 0x01, 0x01];
        key.extend(&n);
        key.extend([0x02, 0x03, 0x01, 0x00, 0x01]);
        assert_eq!(rsa_bits(&key), Some(2048));
    }
}
