//! Property: for the same (certificate, address), every path that asks gives the same answer —
//! the outgoing policy (what `explain` and the SMTP side run), the signature verdict (what
//! `envelopd smime verify` runs) and the IMAP status line — for generated spellings of the
//! address: any ASCII case, IDN U-label or A-label, angle brackets, a needlessly quoted local
//! part, and addresses the certificate does not name. Certificates: subjectAltName only, subject
//! emailAddress only (mixed case), subjectAltName in mixed case, an IDN domain.

use std::sync::OnceLock;
use std::time::SystemTime;

use certstore::verdict::{judge, Signed};
use certstore::CertStore;
use proptest::prelude::*;

use testkit::MAIL_LEAF as LEAF;

struct World {
    _pki: testkit::Pki,
    store: CertStore,
    /// (identity, the address as the certificate states it)
    signers: Vec<(smime::Identity, &'static str)>,
}

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        let pki = testkit::Pki::new();
        let root = pki.root("Agreement Root");
        let made: Vec<((String, String), &'static str)> = vec![
            (
                pki.issue_as(
                    "san",
                    "/CN=Anna",
                    "2048",
                    &format!("{LEAF}subjectAltName=email:anna@praxis.example\n"),
                    &root,
                ),
                "anna@praxis.example",
            ),
            (
                pki.issue_as(
                    "dn",
                    "/CN=Berta/emailAddress=Berta@Praxis.example",
                    "2048",
                    LEAF,
                    &root,
                ),
                "Berta@Praxis.example",
            ),
            (
                pki.issue_as(
                    "mixed",
                    "/CN=Dora",
                    "2048",
                    &format!("{LEAF}subjectAltName=email:Dora@Praxis.Example\n"),
                    &root,
                ),
                "Dora@Praxis.Example",
            ),
            (
                pki.issue_as(
                    "idn",
                    "/CN=Emil",
                    "2048",
                    &format!("{LEAF}subjectAltName=email:emil@xn--bcher-kva.example\n"),
                    &root,
                ),
                "emil@xn--bcher-kva.example",
            ),
        ];
        let mut store = CertStore::new();
        store.add_anchor(
            smime::parse_certificates(&std::fs::read(&root.1).unwrap())
                .unwrap()
                .remove(0),
        );
        let signers = made
            .into_iter()
            .map(|((key, crt), stated)| {
                let cert = smime::parse_certificates(&std::fs::read(&crt).unwrap()).unwrap();
                store.add_cert(cert[0].clone());
                let key = smime::PrivateKey::load(&std::fs::read(&key).unwrap(), None).unwrap();
                (smime::Identity::new(key, cert).unwrap(), stated)
            })
            .collect();
        World {
            _pki: pki,
            store,
            signers,
        }
    })
}

/// A spelling of `address` chosen by `flips` (case per character), `form` (IDN form, angle
/// brackets, quoting) and `other` (a different local part).
fn spelling(address: &str, flips: &[bool], form: u8, other: bool) -> String {
    let (local, domain) = address.rsplit_once('@').unwrap();
    let local = if other {
        format!("{local}x")
    } else {
        local.to_string()
    };
    let domain = match (form % 3, domain) {
        (1, "xn--bcher-kva.example") => "bücher.example".to_string(),
        (2, d) if d.starts_with("xn--") => "BÜCHER.example".to_string(),
        (_, d) => d.to_string(),
    };
    let flip = |s: &str, off: usize| -> String {
        s.chars()
            .enumerate()
            .map(|(i, c)| {
                if flips.get(i + off).copied().unwrap_or(false) {
                    if c.is_ascii_lowercase() {
                        c.to_ascii_uppercase()
                    } else {
                        c.to_ascii_lowercase()
                    }
                } else {
                    c
                }
            })
            .collect()
    };
    let local = flip(&local, 0);
    let domain = flip(&domain, local.len());
    let local = if form % 5 == 4 {
        format!("\"{local}\"")
    } else {
        local
    };
    format!("{local}@{domain}")
}

struct NoIds;
impl policy::Identities for NoIds {
    fn can_sign_as(&self, _: &str) -> bool {
        false
    }
    fn own_encryption_cert(&self, _: &str) -> Option<smime::Cert> {
        None
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn policy_verdict_and_imap_status_agree(
        which in 0usize..4,
        flips in prop::collection::vec(any::<bool>(), 40),
        form in any::<u8>(),
        other in any::<bool>(),
        brackets in any::<bool>(),
    ) {
        let w = world();
        let now = SystemTime::now();
        let (id, stated) = &w.signers[which];
        let address = spelling(stated, &flips, form, other);

        // The policy (explain, the SMTP side): is mail to this address encrypted?
        let facts = policy::MessageFacts::from_message(
            format!("From: doc@praxis.example\r\nTo: {address}\r\n\r\nx\r\n").as_bytes(),
            vec![address.clone()],
        );
        let cfg = policy::PolicyConfig::default();
        let encrypted = match policy::decide(&facts, &w.store, &NoIds, &cfg, now) {
            policy::Decision::Deliver { deliveries, .. } => deliveries.iter().any(|d| d.encrypt.is_some()),
            _ => false,
        };

        // The signature verdict (smime verify) and the IMAP status, on mail signed by the
        // certificate with this address in From.
        let from = if brackets { format!("Someone <{address}>") } else { address.clone() };
        let opts = smime::SignOptions {
            digest: None,
            rsa_padding: smime::RsaPadding::Pkcs1v15,
            signing_time: now,
            encryption_cert: None,
        };
        let msg = format!("From: {from}\r\nSubject: s\r\n\r\nhi\r\n");
        let signed = smime::sign(msg.as_bytes(), id, &opts).unwrap();
        let v = smime::verify(&signed).unwrap();
        let verdict = judge(&Signed::of(&v), &v.originators, &w.store, now).is_valid();
        let shown = imap::present::present(&signed, &[], &w.store, now);
        let imap = shown.status.contains("signature=valid");

        prop_assert_eq!(verdict, !other, "{} ({}): {:?}", address, stated, shown.status);
        prop_assert_eq!(imap, verdict, "{}: {}", address, shown.status);
        prop_assert_eq!(encrypted, verdict, "{}: policy", address);
    }
}
