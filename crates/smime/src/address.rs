//! Mail addresses as envelopd compares them: **one type and one rule** for every path (the
//! outgoing policy, signing identities and `logins`, `smime verify`, the IMAP status, harvesting,
//! directory lookups, `explain`, `certs`). Two places that compared addresses differently gave
//! the same certificate and address different answers; this module is the only comparison.
//!
//! The rule:
//! - the whole addr-spec is compared, the local part **case-insensitively for ASCII letters**
//!   (as NSS/Thunderbird and Outlook do, and as providers deliver: `Alice@x` and `alice@x` reach
//!   the same mailbox); bytes outside ASCII in a local part (RFC 6531/8398) are compared exactly;
//! - a quoted local part that needs no quoting is the same as the unquoted one
//!   (`"alice"@x` = `alice@x`, RFC 5321 §4.1.2);
//! - domains are compared after IDNA (UTS #46, as browsers and mail clients apply it): the
//!   A-label and U-label forms are one domain (`bücher.example` = `xn--bcher-kva.example`),
//!   ASCII case-insensitively;
//! - no wildcards: a certificate naming `*@x` or `a@*.x` names nothing usable;
//! - a certificate's addresses are the rfc822Name and SmtpUTF8Mailbox (RFC 8398) entries of its
//!   subjectAltName, or, only when the subjectAltName names no mailbox, the subject's PKCS #9
//!   emailAddress (RFC 8550 §3 asks that both be recognised); see [`crate::Cert::addresses`].
//!
//! IDNA comes from the `idna` crate (the servo/rust-url project's UTS #46 implementation, the
//! one `url` uses), not hand-written tables.

use std::fmt;

/// Why a text is not a mail address envelopd can compare.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("\"{text}\" is not a usable mail address: {why}")]
pub struct AddressError {
    /// The text as given (shortened).
    pub text: String,
    /// What is wrong with it.
    pub why: &'static str,
}

/// A parsed mail address (addr-spec) with its comparison key.
///
/// Equality and hashing use the key only, so `Address` can be a map key for "the same mailbox".
#[derive(Clone)]
pub struct Address {
    /// The local part, unquoted when quoting is not needed.
    local: String,
    /// The domain as written (for showing).
    domain: String,
    /// `local@domain` in the compared form: ASCII of the local part lower-cased, the domain as
    /// lower-case A-labels.
    key: String,
}

/// The longest address accepted (RFC 5321 §4.5.3.1: 64 + 1 + 255, with room for quoting).
const MAX_LEN: usize = 512;

impl Address {
    /// Parses an addr-spec (`local@domain`); angle brackets around it and surrounding white
    /// space are allowed, a display name is not (see [`crate::mime::originators`] for header
    /// fields).
    pub fn parse(text: &str) -> Result<Self, AddressError> {
        let err = |why| AddressError {
            text: text.chars().take(80).collect(),
            why,
        };
        let t = text.trim();
        let t = t
            .strip_prefix('<')
            .and_then(|s| s.strip_suffix('>'))
            .unwrap_or(t)
            .trim();
        if t.is_empty() {
            return Err(err("it is empty"));
        }
        if t.len() > MAX_LEN {
            return Err(err("it is too long"));
        }
        let (local_raw, domain) = t.rsplit_once('@').ok_or_else(|| err("it has no @"))?;
        let local = parse_local(local_raw).ok_or_else(|| err("its local part is not valid"))?;
        if local.is_empty() {
            return Err(err("its local part is empty"));
        }
        let ascii_domain = domain_key(domain).ok_or_else(|| err("its domain is not valid"))?;
        let mut key = String::with_capacity(local.len() + ascii_domain.len() + 1);
        key.push_str(&quote_if_needed(&local.to_ascii_lowercase()));
        key.push('@');
        key.push_str(&ascii_domain);
        Ok(Address {
            local,
            domain: domain.to_string(),
            key,
        })
    }

    /// The comparison key: `local@domain` with ASCII letters of the local part lower-cased and
    /// the domain as lower-case A-labels. Two addresses are the same mailbox exactly when their
    /// keys are equal.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The local part (unquoted).
    pub fn local_part(&self) -> &str {
        &self.local
    }

    /// The domain as lower-case A-labels (`xn--…` for internationalised names).
    pub fn ascii_domain(&self) -> &str {
        self.key.rsplit_once('@').map_or("", |(_, d)| d)
    }

    /// The address with its domain as A-labels (`alice@xn--…`), the local part as written: a
    /// form in which a look-alike domain (a Cyrillic `і` for a Latin `i`) cannot pass for the
    /// real one.
    pub fn with_ascii_domain(&self) -> String {
        format!("{}@{}", quote_if_needed(&self.local), self.ascii_domain())
    }

    /// The address as a status line shows it: the domain in A-labels (as
    /// [`Address::with_ascii_domain`]), and a non-ASCII local part that a reader could take for
    /// a plain ASCII one (its UTS #39 skeleton is ASCII: a Cyrillic `а` for `a`, full-width
    /// letters) with each non-ASCII character written as `{U+0430}`. A mailbox such a local
    /// part names at a public provider would otherwise read as someone else's there.
    pub fn for_status(&self) -> String {
        if self.local.is_ascii() || !unicode_security::skeleton(&self.local).all(|c| c.is_ascii()) {
            return self.with_ascii_domain();
        }
        let local: String = self
            .local
            .chars()
            .map(|c| {
                if c.is_ascii() {
                    c.to_string()
                } else {
                    format!("{{U+{:04X}}}", c as u32)
                }
            })
            .collect();
        format!("{local}@{}", self.ascii_domain())
    }

    /// True when `domain` (a bare domain, e.g. from an override or a directory base) is this
    /// address's domain under the same rule.
    pub fn in_domain(&self, domain: &str) -> bool {
        domain_key(domain.trim()).is_some_and(|d| d == self.ascii_domain())
    }

    /// True when both name the same mailbox.
    pub fn matches(&self, other: &Address) -> bool {
        self.key == other.key
    }

    /// True when `text` parses to the same mailbox (false when it does not parse).
    pub fn is(&self, text: &str) -> bool {
        Address::parse(text).is_ok_and(|a| a.key == self.key)
    }
}

/// True when the two texts are addresses of the same mailbox under envelopd's one rule; false
/// when either is not an address.
pub fn same_mailbox(a: &str, b: &str) -> bool {
    match (Address::parse(a), Address::parse(b)) {
        (Ok(a), Ok(b)) => a.key == b.key,
        _ => false,
    }
}

impl PartialEq for Address {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}

impl Eq for Address {}

impl std::hash::Hash for Address {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.key.hash(state);
    }
}

impl fmt::Display for Address {
    /// The address as written (local part quoted only when needed).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", quote_if_needed(&self.local), self.domain)
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Address({self})")
    }
}

impl std::str::FromStr for Address {
    type Err = AddressError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Address::parse(s)
    }
}

/// RFC 5322 atext, plus any non-ASCII character (RFC 6532 UTF8-non-ascii).
fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c) || !c.is_ascii()
}

fn is_dot_atom(s: &str) -> bool {
    !s.is_empty()
        && s.split('.')
            .all(|a| !a.is_empty() && a.chars().all(is_atext))
}

/// The local part without quoting, or None when it is not a dot-atom or a quoted string.
fn parse_local(raw: &str) -> Option<String> {
    if let Some(inner) = raw.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
        let mut out = String::with_capacity(inner.len());
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => out.push(chars.next()?),
                '"' => return None,
                c if c.is_control() => return None,
                c => out.push(c),
            }
        }
        return Some(out);
    }
    is_dot_atom(raw).then(|| raw.to_string())
}

fn quote_if_needed(local: &str) -> String {
    if is_dot_atom(local) {
        return local.to_string();
    }
    let mut out = String::with_capacity(local.len() + 2);
    out.push('"');
    for c in local.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// A domain as lower-case A-labels, or None when it is not a host name (wildcards, address
/// literals and empty labels included).
fn domain_key(domain: &str) -> Option<String> {
    if domain.is_empty() || domain.contains(['*', '[', ']', ' ', '@']) || domain.ends_with('.') {
        return None;
    }
    let ascii = if domain.is_ascii() {
        domain.to_ascii_lowercase()
    } else {
        idna::domain_to_ascii(domain).ok()?
    };
    if ascii.is_empty()
        || ascii.len() > 255
        || !ascii.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
    {
        return None;
    }
    // A-labels given directly must be valid punycode, or one domain could have two spellings.
    if ascii.split('.').any(|l| l.starts_with("xn--")) {
        let (unicode, result) = idna::domain_to_unicode(&ascii);
        result.ok()?;
        if idna::domain_to_ascii(&unicode).ok()? != ascii {
            return None;
        }
    }
    Some(ascii)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn same(a: &str, b: &str) -> bool {
        same_mailbox(a, b)
    }

    #[test]
    fn ascii_case_does_not_matter_anywhere() {
        assert!(same("Alice@Example.ORG", "alice@example.org"));
        assert!(same("ALICE@example.org", "alice@EXAMPLE.org"));
        assert!(!same("alice@example.org", "alicia@example.org"));
        assert!(!same("alice@example.org", "alice@example.org.evil"));
        assert!(!same("alice@example.org", "alice@sub.example.org"));
    }

    #[test]
    fn angle_brackets_and_white_space_are_not_part_of_it() {
        assert!(same(" <alice@example.org> ", "alice@example.org"));
        assert!(Address::parse("Alice <alice@example.org>").is_err());
    }

    #[test]
    fn a_local_part_that_reads_as_ascii_is_written_out_for_the_status_line() {
        let shown = |a: &str| Address::parse(a).unwrap().for_status();
        assert_eq!(shown("alice@example.org"), "alice@example.org");
        // Cyrillic а, full-width ａ: each reads as a Latin a.
        assert_eq!(shown("\u{430}lice@example.org"), "{U+0430}lice@example.org");
        assert_eq!(
            shown("\u{ff41}lice@example.org"),
            "{U+FF41}lice@example.org"
        );
        // Names that read as nothing else stay as they are; the domain is always A-labels.
        assert_eq!(
            shown("müller@bücher.example"),
            "müller@xn--bcher-kva.example"
        );
        assert_eq!(shown("иван@example.org"), "иван@example.org");
    }

    #[test]
    fn idn_u_label_and_a_label_are_one_domain() {
        assert!(same("anna@bücher.example", "anna@xn--bcher-kva.example"));
        assert!(same("anna@BÜCHER.example", "anna@xn--bcher-kva.example"));
        assert!(same("anna@XN--BCHER-KVA.example", "anna@bücher.example"));
        assert!(!same("anna@bucher.example", "anna@bücher.example"));
        let a = Address::parse("anna@bücher.example").unwrap();
        assert_eq!(a.ascii_domain(), "xn--bcher-kva.example");
        assert_eq!(a.to_string(), "anna@bücher.example");
        assert!(a.in_domain("XN--bcher-kva.example"));
        // An xn-- label that is not valid punycode is no domain at all.
        assert!(Address::parse("anna@xn--zz-.example").is_err());
    }

    #[test]
    fn quoted_local_parts() {
        assert!(same("\"alice\"@example.org", "alice@example.org"));
        assert!(same("\"Alice\"@example.org", "alice@example.org"));
        assert!(same("\"john doe\"@example.org", "\"John Doe\"@example.org"));
        assert!(!same("\"john doe\"@example.org", "johndoe@example.org"));
        assert!(same("\"a\\\"b\"@example.org", "\"A\\\"B\"@example.org"));
        let q = Address::parse("\"john doe\"@example.org").unwrap();
        assert_eq!(q.local_part(), "john doe");
        assert_eq!(q.to_string(), "\"john doe\"@example.org");
        assert!(Address::parse("\"unterminated@example.org").is_err());
        assert!(Address::parse("a b@example.org").is_err());
        assert!(Address::parse("a..b@example.org").is_err());
    }

    #[test]
    fn smtputf8_local_parts_compare_exactly_beyond_ascii() {
        // RFC 8398 SmtpUTF8Mailbox: the non-ASCII local part is kept; ASCII still folds.
        assert!(same("Jörg@bücher.example", "jörg@xn--bcher-kva.example"));
        assert!(!same("jörg@example.org", "JÖRG@example.org"));
        assert!(!same("jörg@example.org", "jorg@example.org"));
    }

    #[test]
    fn wildcards_literals_and_junk_are_not_addresses() {
        for bad in [
            "*@example.org",
            "alice@*.example.org",
            "alice@[192.0.2.1]",
            "example.org",
            "@example.org",
            "alice@",
            "alice@example..org",
            "alice@example.org.",
            "",
            "a@b@c",
        ] {
            let local_wildcard_ok = bad == "*@example.org";
            // `*` is an atext character: `*@x` is an address, but it names only itself.
            if local_wildcard_ok {
                assert!(!same(bad, "alice@example.org"), "{bad}");
            } else {
                assert!(Address::parse(bad).is_err(), "{bad}");
            }
        }
        assert!(
            !same("a@b@c", "a@b@c"),
            "what does not parse matches nothing"
        );
    }

    proptest::proptest! {
        /// Any ASCII case, either IDN form, angle brackets and needless quoting name the same
        /// mailbox; a changed local part never does; the key is a fixed point.
        #[test]
        fn spellings_of_one_mailbox_agree(
            local in "[a-z0-9+_-]{1,6}(\\.[a-z0-9+_-]{1,6}){0,2}",
            flips in proptest::collection::vec(proptest::bool::ANY, 64),
            idn in proptest::bool::ANY,
            quoted in proptest::bool::ANY,
            bracketed in proptest::bool::ANY,
        ) {
            let (u_domain, a_domain) = ("bücher.example", "xn--bcher-kva.example");
            let base = format!("{local}@{}", if idn { u_domain } else { "praxis.example" });
            let mut i = 0;
            let mut flip = |s: &str| -> String {
                s.chars().map(|c| {
                    i += 1;
                    if flips[i % flips.len()] { c.to_ascii_uppercase() } else { c }
                }).collect()
            };
            let l = flip(&local);
            let l = if quoted { format!("\"{l}\"") } else { l };
            let d = flip(if idn { a_domain } else { "praxis.example" });
            let spelled = format!("{l}@{d}");
            let spelled = if bracketed { format!("<{spelled}>") } else { spelled };
            let a = Address::parse(&base).unwrap();
            let b = Address::parse(&spelled).unwrap();
            proptest::prop_assert_eq!(&a, &b);
            proptest::prop_assert!(same_mailbox(&base, &spelled));
            let again = Address::parse(a.key()).unwrap();
            proptest::prop_assert_eq!(again.key(), a.key());
            proptest::prop_assert_eq!(Address::parse(&a.to_string()).unwrap(), a.clone());
            let other = format!("{local}x@praxis.example");
            proptest::prop_assert!(!same_mailbox(&other, &spelled));
        }
    }

    #[test]
    fn equal_addresses_hash_alike() {
        let mut set = std::collections::HashSet::new();
        set.insert(Address::parse("Bob@Example.org").unwrap());
        assert!(set.contains(&Address::parse("bob@example.ORG").unwrap()));
    }
}
