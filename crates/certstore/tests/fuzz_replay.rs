//! The `trust` fuzz target's entry point (`certstore::fuzz_targets::trust`) on stable Rust:
//! seeds made here by OpenSSL (a signed message, a certificate chain, a CRL and an OCSP answer
//! of the RFC 9216 CA, a message carrying a cross-certified mesh) and random mutations of them;
//! none may panic or hang. Also runs the inputs `fuzz/run.sh` kept (`fuzz/regressions/trust`).

use std::sync::OnceLock;
use std::time::SystemTime;

use certstore::CertStore;
use proptest::prelude::*;

struct Fixture {
    store: CertStore,
    ca: smime::Cert,
    alice: smime::Cert,
    seeds: Vec<Vec<u8>>,
    _pki: testkit::Pki,
}

fn v(name: &str) -> String {
    testkit::rfc9216(name).display().to_string()
}

fn one(pem: &[u8]) -> smime::Cert {
    smime::parse_certificates(pem).unwrap().remove(0)
}

fn signed(signer: &str, key: &str, carried: &str, from: &str) -> Vec<u8> {
    let text = format!("From: {from}\r\nSubject: seed\r\n\r\nx\r\n");
    testkit::openssl_pipe(
        &[
            "cms",
            "-sign",
            "-signer",
            signer,
            "-inkey",
            key,
            "-certfile",
            carried,
        ],
        text.as_bytes(),
    )
    .unwrap()
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let pki = testkit::Pki::new();
        // The CA's files copied: `openssl ca` writes its serial and database next to them.
        let copy = |name: &str| pki.write(name, &std::fs::read_to_string(v(name)).unwrap());
        let ca_files = (copy("ca.rsa.key"), copy("ca.rsa.crt"));
        let (alice_crt, bob_crt) = (copy("alice.sign.crt"), copy("bob.sign.crt"));
        let ca = one(&std::fs::read(&ca_files.1).unwrap());
        let alice = one(&std::fs::read(&alice_crt).unwrap());
        let mut store = CertStore::new();
        store.add_anchor(ca.clone());

        let mut seeds = vec![signed(
            &alice_crt,
            &v("alice.sign.key"),
            &ca_files.1,
            "alice@smime.example",
        )];
        seeds.push(
            [
                std::fs::read(&alice_crt).unwrap(),
                std::fs::read(&ca_files.1).unwrap(),
            ]
            .concat(),
        );
        let crl = pki.crl(
            "seed",
            &ca_files,
            &[(&bob_crt, "keyCompromise")],
            Some(("20260101000000Z", "20361231000000Z")),
        );
        seeds.push(std::fs::read(&crl).unwrap());
        let index = pki.ca_index("ocsp", &ca_files, &[&alice_crt], &[]);
        let req = pki.p("alice.req");
        std::fs::write(&req, certstore::ocsp::request(&alice, &ca).unwrap()).unwrap();
        let resp = pki.p("alice.resp");
        testkit::openssl_ok(&[
            "ocsp",
            "-index",
            &index,
            "-rsigner",
            &ca_files.1,
            "-rkey",
            &ca_files.0,
            "-CA",
            &ca_files.1,
            "-reqin",
            &req,
            "-respout",
            &resp,
            "-ndays",
            "3650",
        ]);
        seeds.push(std::fs::read(&resp).unwrap());
        let (cas, (key, crt)) = pki.mesh(3, "Mesh CA", "mallory@smime.example");
        let all: String = cas
            .iter()
            .map(|p| std::fs::read_to_string(p).unwrap())
            .collect();
        let mesh = pki.write("mesh.pem", &all);
        seeds.push(signed(&crt, &key, &mesh, "mallory@smime.example"));
        Fixture {
            store,
            ca,
            alice,
            seeds,
            _pki: pki,
        }
    })
}

fn run(data: &[u8], at: SystemTime) {
    let f = fixture();
    certstore::fuzz_targets::trust(data, &f.store, &f.ca, &f.alice, at);
}

/// The seeds reach past parsing: the CRL and the OCSP answer verify against the CA (so
/// mutations explore what follows a good signature too), the signed message is valid.
#[test]
fn the_seeds_reach_the_trust_layer_and_kept_findings_run() {
    let f = fixture();
    let now = SystemTime::now();
    let crl = certstore::revocation::Crl::verified(&f.seeds[2], &[&f.ca], "seed").unwrap();
    assert_eq!(crl.revoked_count(), 1);
    certstore::ocsp::read_response(&f.seeds[3], &f.alice, &f.ca, now).unwrap();
    let v = smime::verify(&f.seeds[0]).unwrap();
    let judged = certstore::verdict::judge(
        &certstore::verdict::Signed::of(&v),
        &v.originators,
        &f.store,
        now,
    );
    assert!(judged.is_valid(), "{judged:?}");
    for s in &f.seeds {
        run(s, now);
        run(s, certstore::fuzz_targets::fixed_time());
    }
    let kept =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/regressions/trust");
    for file in std::fs::read_dir(kept).into_iter().flatten().flatten() {
        run(
            &std::fs::read(file.path()).unwrap(),
            certstore::fuzz_targets::fixed_time(),
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Random edits of a seed: flipped, set, inserted and removed bytes, a cut.
    #[test]
    fn mutated_seeds_never_panic(
        which in 0usize..5,
        edits in proptest::collection::vec((any::<u16>(), any::<u8>(), 0u8..4), 1..6),
        cut in proptest::option::of(any::<u16>()),
    ) {
        let mut m = fixture().seeds[which].clone();
        for (at, byte, kind) in edits {
            if m.is_empty() {
                break;
            }
            let i = at as usize % m.len();
            match kind {
                0 => m[i] ^= 1 << (byte % 8),
                1 => m[i] = byte,
                2 => m.insert(i, byte),
                _ => {
                    m.remove(i);
                }
            }
        }
        if let Some(c) = cut {
            m.truncate(c as usize % (m.len() + 1));
        }
        run(&m, SystemTime::now());
    }
}
