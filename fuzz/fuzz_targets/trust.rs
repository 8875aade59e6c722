//! The trust layer (verdict, path building, CRLs, OCSP answers) on arbitrary bytes, with the
//! RFC 9216 CA trusted and Alice's signing certificate as the one revocation is asked about.
#![no_main]
use std::sync::OnceLock;

struct Trust {
    store: certstore::CertStore,
    ca: smime::Cert,
    alice: smime::Cert,
}

fn trust() -> &'static Trust {
    static T: OnceLock<Trust> = OnceLock::new();
    T.get_or_init(|| {
        let one = |pem: &[u8]| smime::parse_certificates(pem).unwrap().remove(0);
        let ca = one(include_bytes!("../../../shared/vectors/rfc9216/ca.rsa.crt"));
        let alice = one(include_bytes!(
            "../../../shared/vectors/rfc9216/alice.sign.crt"
        ));
        let mut store = certstore::CertStore::new();
        store.add_anchor(ca.clone());
        Trust { store, ca, alice }
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let t = trust();
    certstore::fuzz_targets::trust(
        data,
        &t.store,
        &t.ca,
        &t.alice,
        certstore::fuzz_targets::fixed_time(),
    )
});
