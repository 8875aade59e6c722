//! The POP3 server's bytes as answers to a logged-in client's commands: status lines,
//! multi-line listings and messages, byte-stuffing, terminators, lies and truncation.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    pop3::fuzz_targets::server(data);
});
