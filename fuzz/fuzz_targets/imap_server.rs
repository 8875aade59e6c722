//! IMAP bytes from the server (framing, FETCH parsing and rewriting, message structure).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| imap::fuzz_targets::server(data));
