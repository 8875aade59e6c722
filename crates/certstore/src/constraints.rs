//! Path checks beyond the links themselves (RFC 5280 §6.1): name constraints of every CA on
//! the path (directory names, e-mail addresses, DNS names, URIs) applied to the certificates
//! below it, and refusal of any critical extension envelopd does not recognise.
//!
//! Certificate policies are recognised but not processed: envelopd validates with the RFC 5280
//! defaults (any policy acceptable, no explicit policy required), which is what S/MIME mail
//! validation asks for; a CA relying on requireExplicitPolicy is not honoured (documented).

use der::asn1::ObjectIdentifier as Oid;
use smime::Cert;
use x509_cert::ext::pkix::constraints::name::NameConstraints;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::SubjectAltName;

use crate::{rdn_key, Rejection};

/// Extensions envelopd recognises (processed, or safe to accept under the RFC 5280 defaults).
/// Object identifiers, not their text: this runs for every certificate of every path built.
const KNOWN: &[Oid] = &[
    Oid::new_unwrap("2.5.29.9"),           // subjectDirectoryAttributes
    Oid::new_unwrap("2.5.29.14"),          // subjectKeyIdentifier
    Oid::new_unwrap("2.5.29.15"),          // keyUsage
    Oid::new_unwrap("2.5.29.16"),          // privateKeyUsagePeriod
    Oid::new_unwrap("2.5.29.17"),          // subjectAltName
    Oid::new_unwrap("2.5.29.18"),          // issuerAltName
    Oid::new_unwrap("2.5.29.19"),          // basicConstraints
    Oid::new_unwrap("2.5.29.30"),          // nameConstraints
    Oid::new_unwrap("2.5.29.31"),          // cRLDistributionPoints
    Oid::new_unwrap("2.5.29.32"),          // certificatePolicies
    Oid::new_unwrap("2.5.29.33"),          // policyMappings
    Oid::new_unwrap("2.5.29.35"),          // authorityKeyIdentifier
    Oid::new_unwrap("2.5.29.36"),          // policyConstraints
    Oid::new_unwrap("2.5.29.37"),          // extKeyUsage
    Oid::new_unwrap("2.5.29.46"),          // freshestCRL
    Oid::new_unwrap("2.5.29.54"),          // inhibitAnyPolicy
    Oid::new_unwrap("1.3.6.1.5.5.7.1.1"),  // authorityInfoAccess
    Oid::new_unwrap("1.3.6.1.5.5.7.1.11"), // subjectInfoAccess
    Oid::new_unwrap("1.3.6.1.5.5.7.1.3"),  // qcStatements (eIDAS)
];

/// PKCS #9 emailAddress in a subject name: checked like an rfc822Name.
const EMAIL_ADDRESS: Oid = Oid::new_unwrap("1.2.840.113549.1.9.1");

/// Refuses a certificate with an extension present twice or an unreadable extension envelopd
/// decides trust by ([`Cert::extension_problem`]).
pub fn check_readable(c: &Cert) -> Result<(), Rejection> {
    match c.extension_problem() {
        Some(why) => Err(Rejection::Untrusted {
            subject: c.subject(),
            why: why.to_string(),
        }),
        None => Ok(()),
    }
}

/// Refuses a certificate [`check_readable`] refuses, or one with a critical extension envelopd
/// does not recognise.
pub fn check_critical(c: &Cert) -> Result<(), Rejection> {
    check_readable(c)?;
    for ext in c
        .parsed()
        .tbs_certificate()
        .extensions()
        .into_iter()
        .flatten()
    {
        if ext.critical && !KNOWN.contains(&ext.extn_id) {
            return Err(Rejection::Untrusted {
                subject: c.subject(),
                why: format!(
                    "it has a critical extension envelopd does not know ({})",
                    ext.extn_id
                ),
            });
        }
    }
    Ok(())
}

/// One name of a certificate, in the forms name constraints compare.
enum Name {
    Dn(Vec<String>),
    Email(String),
    Dns(String),
    Uri(String),
}

fn rdn_keys(n: &x509_cert::name::Name) -> Vec<String> {
    n.iter_rdn().map(rdn_key).collect()
}

fn names_of(c: &Cert) -> Vec<Name> {
    let tbs = c.parsed().tbs_certificate();
    let mut out = Vec::new();
    let subject = tbs.subject();
    if !subject.is_empty() {
        out.push(Name::Dn(rdn_keys(subject)));
        for atv in subject.iter() {
            if atv.oid == EMAIL_ADDRESS {
                out.push(Name::Email(
                    String::from_utf8_lossy(atv.value.value()).to_ascii_lowercase(),
                ));
            }
        }
    }
    if let Ok(Some((_, san))) = tbs.get_extension::<SubjectAltName>() {
        for g in san.0 {
            match g {
                GeneralName::Rfc822Name(m) => {
                    out.push(Name::Email(m.to_string().to_ascii_lowercase()))
                }
                GeneralName::DnsName(d) => out.push(Name::Dns(d.to_string().to_ascii_lowercase())),
                GeneralName::UniformResourceIdentifier(u) => out.push(Name::Uri(u.to_string())),
                GeneralName::DirectoryName(n) => out.push(Name::Dn(rdn_keys(&n))),
                // RFC 8398 §6 (RFC 9598): rfc822Name constraints apply to SmtpUTF8Mailbox too,
                // compared with the domain in A-labels. Without this a CA limited to one domain
                // could name any other mailbox this way, and envelopd believes these names.
                GeneralName::OtherName(ref o) if o.type_id == smime::cert::SMTP_UTF8_MAILBOX => {
                    let text = smime::cert::mailbox_of(&g).unwrap_or_default();
                    out.push(Name::Email(match smime::Address::parse(&text) {
                        Ok(a) => a.key().to_string(),
                        Err(_) => text.to_lowercase(),
                    }));
                }
                _ => {}
            }
        }
    }
    out
}

fn domain_within(host: &str, constraint: &str) -> bool {
    let c = constraint.to_ascii_lowercase();
    if let Some(rest) = c.strip_prefix('.') {
        host.ends_with(&format!(".{rest}"))
    } else {
        host == c || host.ends_with(&format!(".{c}"))
    }
}

fn uri_host(uri: &str) -> Option<String> {
    let rest = uri.split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next()?;
    let host = authority.rsplit('@').next()?;
    let host = host.split(':').next()?;
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

/// Whether `name` falls within the subtree `base`; None when they are of different types.
fn within(name: &Name, base: &GeneralName) -> Option<bool> {
    match (name, base) {
        (Name::Dn(n), GeneralName::DirectoryName(b)) => {
            let b = rdn_keys(b);
            Some(n.len() >= b.len() && n[..b.len()] == b[..])
        }
        (Name::Email(m), GeneralName::Rfc822Name(b)) => {
            let b = b.to_string().to_ascii_lowercase();
            let host = m.rsplit_once('@').map_or("", |(_, h)| h);
            Some(if b.contains('@') {
                *m == b
            } else if let Some(rest) = b.strip_prefix('.') {
                host.ends_with(&format!(".{rest}"))
            } else {
                host == b
            })
        }
        (Name::Dns(d), GeneralName::DnsName(b)) => Some(domain_within(d, b.as_ref())),
        (Name::Uri(u), GeneralName::UniformResourceIdentifier(b)) => {
            let b = b.to_string().to_ascii_lowercase();
            Some(uri_host(u).is_some_and(|h| {
                if let Some(rest) = b.strip_prefix('.') {
                    h.ends_with(&format!(".{rest}"))
                } else {
                    h == b
                }
            }))
        }
        _ => None,
    }
}

fn kind(name: &Name) -> u8 {
    match name {
        Name::Dn(_) => 0,
        Name::Email(_) => 1,
        Name::Dns(_) => 2,
        Name::Uri(_) => 3,
    }
}

fn base_kind(base: &GeneralName) -> Option<u8> {
    match base {
        GeneralName::DirectoryName(_) => Some(0),
        GeneralName::Rfc822Name(_) => Some(1),
        GeneralName::DnsName(_) => Some(2),
        GeneralName::UniformResourceIdentifier(_) => Some(3),
        _ => None,
    }
}

/// Applies the name constraints of every CA on `path` (leaf first, anchor last) to the
/// certificates below it; self-issued intermediates are exempt (RFC 5280 §6.1.3 (b)).
pub fn check_name_constraints(path: &[Cert]) -> Result<(), Rejection> {
    for (i, ca) in path.iter().enumerate().skip(1) {
        let Ok(Some((_, nc))) = ca
            .parsed()
            .tbs_certificate()
            .get_extension::<NameConstraints>()
        else {
            continue;
        };
        for (j, below) in path[..i].iter().enumerate() {
            if j > 0 && below.is_self_issued() {
                continue;
            }
            for name in names_of(below) {
                let refuse = |why: &str| Rejection::Untrusted {
                    subject: below.subject(),
                    why: format!("{why} the name constraints of \"{}\"", ca.subject()),
                };
                for ex in nc.excluded_subtrees.iter().flatten() {
                    if within(&name, &ex.base) == Some(true) {
                        return Err(refuse("one of its names is excluded by"));
                    }
                }
                let permitted: Vec<&GeneralName> = nc
                    .permitted_subtrees
                    .iter()
                    .flatten()
                    .map(|p| &p.base)
                    .filter(|b| base_kind(b) == Some(kind(&name)))
                    .collect();
                if !permitted.is_empty()
                    && !permitted.iter().any(|b| within(&name, b) == Some(true))
                {
                    return Err(refuse("one of its names is outside"));
                }
            }
        }
    }
    Ok(())
}
