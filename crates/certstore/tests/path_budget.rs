//! The CPU-exhaustion attack on certification path building (CVE-2018-16875 in Go's
//! crypto/x509, GHSA-fh2r-99q2-6mmg in rustls-webpki), as a signed message can mount it: k keys
//! that all carry the same name and all certify each other are k² CA certificates through which
//! a depth-first search finds k^7 dead-end paths, each step a signature verification. Before
//! the limit, 25 such certificates cost 6 s of CPU per verification, 36 cost 37 s. The meshes
//! are made by OpenSSL and by NSS `certutil`; each is also shown to be genuine (with one of its
//! keys trusted, the same message validates), so the refusal is the limit and nothing else.

use std::path::Path;
use std::time::SystemTime;

use certstore::{CertStore, Purpose, Rejection, MAX_SIGNATURE_CHECKS};

/// A mesh: its CA certificates (`[i * k + j]` is key i certified by key j) and a mail
/// certificate under key 0.
struct Mesh {
    k: usize,
    cas: Vec<smime::Cert>,
    leaf: smime::Cert,
    email: &'static str,
}

fn cert(pem: &[u8]) -> smime::Cert {
    smime::parse_certificates(pem).unwrap().remove(0)
}

fn openssl_mesh(pki: &testkit::Pki, k: usize) -> Mesh {
    let email = "mallory@mesh.example";
    let (cas, leaf) = pki.mesh(k, "Mesh CA", email);
    Mesh {
        k,
        cas: cas
            .iter()
            .map(|p| cert(&std::fs::read(p).unwrap()))
            .collect(),
        leaf: cert(&std::fs::read(&leaf.1).unwrap()),
        email,
    }
}

/// The same with NSS: one database per key (NSS gives all certificates of one subject one
/// nickname, so one database cannot hold k CAs of the same name).
fn nss_mesh(k: usize) -> (Vec<testkit::Pki>, Mesh) {
    let pkis: Vec<testkit::Pki> = (0..k).map(|_| testkit::Pki::new()).collect();
    let nss: Vec<testkit::NssCa> = pkis
        .iter()
        .map(|p| testkit::NssCa::new(p, "Mesh CA"))
        .collect();
    let requests: Vec<String> = pkis
        .iter()
        .zip(&nss)
        .map(|(p, ca)| {
            let out = p.p("ca-request.der");
            ca.ca_request("CN=Mesh CA", &out);
            out
        })
        .collect();
    let mut cas = Vec::new();
    for (i, request) in requests.iter().enumerate() {
        for (j, issuer) in nss.iter().enumerate() {
            cas.push(if i == j {
                cert(&nss[i].export("ca"))
            } else {
                smime::Cert::from_der(&issuer.certify_ca(request, (100 * i + j) as u32 + 10))
                    .unwrap()
            });
        }
    }
    nss[0].issue("mallory", "SHA256", &[]);
    let leaf = cert(&nss[0].export("mallory"));
    (
        pkis,
        Mesh {
            k,
            cas,
            leaf,
            email: "mallory@praxis.example",
        },
    )
}

fn store_trusting(anchor: &smime::Cert) -> CertStore {
    let mut s = CertStore::new();
    s.add_anchor(anchor.clone());
    s
}

/// With an unrelated anchor the search over the mesh stops at the limit and says so; with one
/// of the mesh's own keys trusted, the same leaf and the same carried certificates validate.
fn check(mesh: &Mesh, unrelated: &smime::Cert) {
    let now = SystemTime::now();
    let hostile =
        store_trusting(unrelated).validate(&mesh.leaf, Purpose::Sign, mesh.email, &mesh.cas, now);
    match hostile {
        Err(Rejection::Untrusted { why, .. }) => {
            assert!(
                why.contains(&format!("within {MAX_SIGNATURE_CHECKS} signature checks"))
                    && why.contains(&format!("{} candidate CA certificates", mesh.k * mesh.k)),
                "{why}"
            )
        }
        other => panic!("{other:?}"),
    }
    // Key 1's self-signed certificate as the anchor: the leaf (under key 0) reaches it through
    // a certificate of key 0 made by key 1, which the mesh carries.
    let genuine = store_trusting(&mesh.cas[mesh.k + 1])
        .validate(&mesh.leaf, Purpose::Sign, mesh.email, &mesh.cas, now)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(genuine.len() >= 3, "{}", genuine.len());
    assert_eq!(genuine.last(), Some(&mesh.cas[mesh.k + 1]));
}

#[test]
fn an_openssl_mesh_of_cross_certified_cas_is_given_up_on_at_the_limit() {
    let pki = testkit::Pki::new();
    let mesh = openssl_mesh(&pki, 5);
    let other = pki.root("Other Root");
    check(&mesh, &cert(&std::fs::read(Path::new(&other.1)).unwrap()));
}

#[test]
fn an_nss_mesh_of_cross_certified_cas_is_given_up_on_at_the_limit() {
    let (_dirs, mesh) = nss_mesh(4);
    let pki = testkit::Pki::new();
    let other = pki.root("Other Root");
    check(&mesh, &cert(&std::fs::read(Path::new(&other.1)).unwrap()));
}

/// The limit leaves room for real chains: a three-level chain where every level also has
/// same-named certificates of other keys (a renewed or cross-certified CA) still validates.
#[test]
fn a_real_chain_among_same_named_decoys_still_validates() {
    let pki = testkit::Pki::new();
    let root = pki.root("Praxis Root");
    let ca = "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n";
    let mut carried = Vec::new();
    let mut issuer = root.clone();
    for level in ["Praxis Policy CA", "Praxis Mail CA"] {
        // Three decoys first (same name, other keys, signed by the same issuer: they verify
        // as links, but lead nowhere), then the real one.
        for d in 0..3 {
            let decoy = pki.issue_as(
                &format!("{level}-decoy{d}"),
                &format!("/CN={level}"),
                "2048",
                ca,
                &issuer,
            );
            carried.push(cert(&std::fs::read(&decoy.1).unwrap()));
        }
        let real = pki.issue_as(level, &format!("/CN={level}"), "2048", ca, &issuer);
        carried.push(cert(&std::fs::read(&real.1).unwrap()));
        issuer = real;
    }
    let leaf = pki.issue(
        "alice",
        "2048",
        &format!(
            "{}subjectAltName=email:alice@praxis.example\n",
            testkit::MAIL_LEAF
        ),
        &issuer,
    );
    let store = store_trusting(&cert(&std::fs::read(&root.1).unwrap()));
    let path = store
        .validate(
            &cert(&std::fs::read(&leaf.1).unwrap()),
            Purpose::Sign,
            "alice@praxis.example",
            &carried,
            SystemTime::now(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(path.len(), 4);
}
