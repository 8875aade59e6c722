//! IMAP bytes from the mail program (splitting, FETCH and SEARCH plans).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| imap::fuzz_targets::client(data));
