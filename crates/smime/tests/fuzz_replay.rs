//! Runs the `cargo fuzz` entry points (`smime::fuzz_targets`) on stable Rust over seed inputs
//! and thousands of deterministic mutations of them (truncations, bit flips, insertions, spliced
//! lengths), so CI exercises the untrusted-input parsers without a nightly fuzzer. A panic or an
//! endless loop here is a bug; errors are the expected outcome.

mod common;
use common::*;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Deterministic mutations of `seed`, in the spirit of libFuzzer's default mutators.
fn mutations(seed: &[u8], count: usize, rng: &mut Rng) -> Vec<Vec<u8>> {
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let mut m = seed.to_vec();
        for _ in 0..1 + rng.below(3) {
            let len = m.len();
            match (i + rng.below(7)) % 7 {
                0 => m.truncate(rng.below(len + 1)),
                1 if len > 0 => {
                    let p = rng.below(len);
                    m[p] ^= 1 << rng.below(8);
                }
                2 if len > 0 => {
                    let p = rng.below(len);
                    m[p] = [0x00, 0x80, 0xff, 0x30, 0xa0, 0x24, 0x04, b'\n', b'-'][rng.below(9)];
                }
                3 => {
                    let p = rng.below(len + 1);
                    let b = rng.next().to_le_bytes();
                    m.splice(p..p, b[..1 + rng.below(8)].iter().copied());
                }
                4 if len > 8 => {
                    // Duplicate a slice (nested structures, repeated boundaries).
                    let a = rng.below(len);
                    let b = (a + rng.below(64)).min(len);
                    let chunk = m[a..b].to_vec();
                    let p = rng.below(len);
                    m.splice(p..p, chunk);
                }
                5 if len > 0 => {
                    // Huge length claim at a random place.
                    let p = rng.below(len);
                    m.splice(p..p, [0x84, 0x7f, 0xff, 0xff, 0xff]);
                }
                _ if len > 1 => {
                    let p = rng.below(len);
                    m.remove(p);
                }
                _ => m.push(0),
            }
        }
        out.push(m);
    }
    out
}

fn bob() -> smime::Identity {
    identity("rfc9216/bob.encrypt.key", "rfc9216/bob.encrypt.crt")
}

fn alice() -> smime::Identity {
    identity("rfc9216/alice.sign.key", "rfc9216/alice.sign.crt")
}

const MAIL: &[u8] = b"From: alice@smime.example\r\nTo: bob@smime.example\r\nSubject: seed\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nGr\xc3\xbc\xc3\x9fe\r\n--b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\nAAECAwQ=\r\n--b--\r\n";

fn signed_mail() -> Vec<u8> {
    smime::sign(MAIL, &alice(), &sign_opts()).unwrap()
}

#[test]
fn cms_target_survives_mutated_vectors() {
    let mut rng = Rng(0x5eed_0001);
    let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(vectors().join("rfc4134"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "bin"))
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    let enc = smime::encrypt(MAIL, &[bob().cert], &smime::EncryptOptions::default()).unwrap();
    seeds.push(smime::mime::base64_decode(smime::mime::split(&enc).body).unwrap());
    let mut n = 0;
    for seed in &seeds {
        smime::fuzz_targets::cms(seed);
        for m in mutations(seed, 300, &mut rng) {
            smime::fuzz_targets::cms(&m);
            n += 1;
        }
    }
    assert!(n >= 300 * seeds.len());
}

#[test]
fn mime_target_survives_mutated_messages() {
    let mut rng = Rng(0x5eed_0002);
    let mut seeds = vec![
        MAIL.to_vec(),
        signed_mail(),
        read("rfc4134/4.8.eml"),
        read("rfc4134/5.3.eml"),
    ];
    seeds.push(b"Content-Type: multipart/mixed; boundary=\"\"\r\n\r\n--\r\n--\r\n".to_vec());
    for seed in &seeds {
        smime::fuzz_targets::mime(seed);
        for m in mutations(seed, 400, &mut rng) {
            smime::fuzz_targets::mime(&m);
        }
    }
}

#[test]
fn decrypt_target_survives_mutated_envelopes() {
    let mut rng = Rng(0x5eed_0003);
    let keys = [bob()];
    let mut seeds = Vec::new();
    for cipher in [
        smime::ContentCipher::Aes256Gcm,
        smime::ContentCipher::Aes128Cbc,
    ] {
        let opts = smime::EncryptOptions {
            cipher,
            key_transport: smime::KeyTransport::RsaPkcs1v15,
        };
        seeds.push(smime::encrypt(&signed_mail(), &[keys[0].cert.clone()], &opts).unwrap());
    }
    seeds.push(read("rfc4134/5.3.eml"));
    for seed in &seeds {
        smime::fuzz_targets::decrypt(seed, &keys);
        for m in mutations(seed, 150, &mut rng) {
            smime::fuzz_targets::decrypt(&m, &keys);
        }
    }
}

/// The inputs `fuzz/run.sh` kept from earlier findings (`fuzz/regressions/<target>`).
fn kept(target: &str) -> Vec<Vec<u8>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/regressions")
        .join(target);
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|f| std::fs::read(f.path()).unwrap())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn kept_fuzzer_findings_run_cleanly() {
    for m in kept("cms") {
        smime::fuzz_targets::cms(&m);
    }
    for m in kept("mime") {
        smime::fuzz_targets::mime(&m);
    }
    let keys = [bob()];
    for m in kept("decrypt") {
        smime::fuzz_targets::decrypt(&m, &keys);
    }
}
