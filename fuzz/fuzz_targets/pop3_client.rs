//! A whole POP3 session in process: the mail program's bytes through the sans-I/O core against
//! an in-memory server (login, CAPA, STLS, LIST/STAT sizes, RETR/TOP of shown messages).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    pop3::fuzz_targets::client(data);
});
