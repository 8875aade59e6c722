//! Throughput of sign, encrypt, decrypt and verify at 4 KiB, 1 MiB and 16 MiB, next to the raw
//! primitive baselines measured in the same run: SHA-256, AES-256-GCM, and SHA-256 + AES-256-GCM
//! (the least work any sign-then-encrypt must do). `scripts/bench-vs-openssl.sh` turns these into
//! ratios and adds `openssl cms` on the same inputs.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use smime::{EncryptOptions, Identity, PrivateKey, SignOptions};

const SIZES: [(usize, &str); 3] = [(4 << 10, "4KiB"), (1 << 20, "1MiB"), (16 << 20, "16MiB")];

fn vectors() -> PathBuf {
    std::env::var_os("ENVELOPD_VECTORS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/vectors")
        })
        .join("rfc9216")
}

fn identity(key: &str, crt: &str) -> Identity {
    let k = PrivateKey::load(&std::fs::read(vectors().join(key)).unwrap(), None).unwrap();
    Identity::new(
        k,
        smime::parse_certificates(&std::fs::read(vectors().join(crt)).unwrap()).unwrap(),
    )
    .unwrap()
}

/// A mail with a base64 attachment-like body of about `size` bytes (what practices send: PDFs).
pub fn message(size: usize) -> Vec<u8> {
    let mut m = b"From: alice@smime.example\r\nTo: bob@smime.example\r\nSubject: Befund\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n".to_vec();
    let mut x: u32 = 0x1234_5678;
    let raw: Vec<u8> = (0..size * 3 / 4)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    m.extend_from_slice(&smime::mime::base64_lines(&raw));
    m
}

fn bench(c: &mut Criterion) {
    let alice = identity("alice.sign.key", "alice.sign.crt");
    let bob = identity("bob.encrypt.key", "bob.encrypt.crt");
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_893_456_000);
    let sign_opts = SignOptions {
        digest: None,
        rsa_padding: smime::RsaPadding::Pkcs1v15,
        signing_time: at,
        encryption_cert: None,
    };
    let enc_opts = EncryptOptions::default();
    let recipients = [bob.cert.clone()];

    for (size, label) in SIZES {
        let msg = message(size);
        let signed = smime::sign(&msg, &alice, &sign_opts).unwrap();
        let encrypted = smime::encrypt(&signed, &recipients, &enc_opts).unwrap();
        let mut g = c.benchmark_group(label);
        g.throughput(Throughput::Bytes(msg.len() as u64));
        if size >= 1 << 20 {
            g.sample_size(10).measurement_time(Duration::from_secs(3));
        }
        g.bench_function(BenchmarkId::new("sign", label), |b| {
            b.iter(|| smime::sign(&msg, &alice, &sign_opts).unwrap())
        });
        g.bench_function(BenchmarkId::new("encrypt", label), |b| {
            b.iter(|| smime::encrypt(&msg, &recipients, &enc_opts).unwrap())
        });
        g.bench_function(BenchmarkId::new("sign+encrypt", label), |b| {
            b.iter(|| {
                smime::sign_and_encrypt(&msg, &alice, &sign_opts, &recipients, &enc_opts).unwrap()
            })
        });
        g.bench_function(BenchmarkId::new("decrypt", label), |b| {
            b.iter(|| smime::decrypt(&encrypted, std::slice::from_ref(&bob)).unwrap())
        });
        g.bench_function(BenchmarkId::new("verify", label), |b| {
            b.iter(|| assert!(smime::verify(&signed).unwrap().is_valid()))
        });
        // Baselines: the raw primitives on the same number of bytes, in this same run.
        g.bench_function(BenchmarkId::new("raw-sha256", label), |b| {
            b.iter(|| aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &msg))
        });
        let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &[7u8; 32]).unwrap());
        let mut buf = msg.clone();
        g.bench_function(BenchmarkId::new("raw-aes256gcm", label), |b| {
            b.iter(|| {
                key.seal_in_place_separate_tag(
                    Nonce::assume_unique_for_key([1; 12]),
                    Aad::empty(),
                    &mut buf,
                )
                .unwrap()
            })
        });
        g.bench_function(BenchmarkId::new("raw-sha256+aes256gcm", label), |b| {
            b.iter(|| {
                std::hint::black_box(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &msg));
                key.seal_in_place_separate_tag(
                    Nonce::assume_unique_for_key([1; 12]),
                    Aad::empty(),
                    &mut buf,
                )
                .unwrap()
            })
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
