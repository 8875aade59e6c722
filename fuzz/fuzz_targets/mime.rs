//! MIME splitting, header parsing, canonicalisation and signature verification on raw messages.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| smime::fuzz_targets::mime(data));
