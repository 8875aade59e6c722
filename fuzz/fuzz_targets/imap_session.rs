//! A whole IMAP session in process: the mail program's bytes through the sans-I/O core against
//! an in-memory server (FETCH rewriting, SEARCH, APPEND, IDLE, SASL, literals).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    imap::fuzz_targets::session(data);
});
