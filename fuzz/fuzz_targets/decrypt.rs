//! Message-level decryption and layer opening with Bob's RFC 9216 key on arbitrary messages.
#![no_main]
use std::sync::OnceLock;

fn bob() -> &'static [smime::Identity] {
    static BOB: OnceLock<Vec<smime::Identity>> = OnceLock::new();
    BOB.get_or_init(|| {
        let key = include_bytes!("../../../shared/vectors/rfc9216/bob.encrypt.key");
        let crt = include_bytes!("../../../shared/vectors/rfc9216/bob.encrypt.crt");
        let key = smime::PrivateKey::load(key, None).unwrap();
        vec![smime::Identity::new(key, smime::parse_certificates(crt).unwrap()).unwrap()]
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| smime::fuzz_targets::decrypt(data, bob()));
