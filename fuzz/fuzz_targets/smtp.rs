//! SMTP bytes from a mail program: command parsing, AUTH, DATA/BDAT and the session's states.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    smtp::fuzz_targets::session(data);
});
