//! BER/DER normalisation and the CMS parsers (ContentInfo, SignedData, envelopes) on raw bytes.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| smime::fuzz_targets::cms(data));
