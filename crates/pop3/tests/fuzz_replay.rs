//! The POP3 fuzz targets' entry points on stable Rust: random and mutated client and server
//! bytes through the core; none may panic or loop, and kept findings replay.

use proptest::prelude::*;

const SESSIONS: &[&[u8]] = &[
    b"CAPA\r\nUSER u\r\nPASS p\r\nSTAT\r\nLIST\r\nUIDL\r\n\xffRETR 2\r\nTOP 3 1\r\nLIST 2\r\nDELE 1\r\nRSET\r\nRETR 4\r\nQUIT\r\n",
    b"AUTH PLAIN\r\nAHUAcA==\r\nRETR 1\r\nSTLS\r\nAPOP u x\r\n\xffAUTH PLAIN AHUAcA==\r\nTOP 2 0\r\n",
];

const REPLIES: &[&[u8]] = &[
    b"+OK\r\n+OK\r\n+OK 2 30\r\n+OK\r\n1 10\r\n2 20\r\n.\r\n+OK\r\n1 a\r\n2 b\r\n.\r\n\xff+OK\r\nContent-Type: application/pkcs7-mime\r\n\r\n.\r\n+OK\r\nX-Envelopd: x\r\n\r\n.\r\n+OK 10 octets\r\nSubject: s\r\n\r\n..x\r\n.\r\n",
];

/// The client target reaches past login into sizes and shown messages (so the fuzzer explores
/// the core, not just its greeting), and kept findings run.
#[test]
fn seeds_reach_shown_messages_and_kept_findings_run() {
    let out = String::from_utf8_lossy(&pop3::fuzz_targets::client(SESSIONS[0])).into_owned();
    assert!(out.contains("X-Envelopd: decrypted=failed"), "{out}");
    assert!(out.contains("+OK 4 "), "STAT answered: {out}");
    let out = String::from_utf8_lossy(&pop3::fuzz_targets::client(SESSIONS[1])).into_owned();
    assert!(out.contains("+OK Logged in."), "{out}");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/regressions");
    for (target, run) in [
        (
            "pop3_client",
            (|d: &[u8]| drop(pop3::fuzz_targets::client(d))) as fn(&[u8]),
        ),
        ("pop3_server", pop3::fuzz_targets::server),
    ] {
        if let Ok(dir) = std::fs::read_dir(root.join(target)) {
            for f in dir.flatten() {
                run(&std::fs::read(f.path()).unwrap());
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..400)) {
        pop3::fuzz_targets::client(&data);
        pop3::fuzz_targets::server(&data);
    }

    #[test]
    fn mutated_sessions_never_panic(
        seed in 0..SESSIONS.len(),
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..12),
    ) {
        pop3::fuzz_targets::client(&testkit::mutate(SESSIONS[seed], &edits, Some(0xff)));
    }

    #[test]
    fn mutated_replies_never_panic(
        seed in 0..REPLIES.len(),
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..12),
    ) {
        pop3::fuzz_targets::server(&testkit::mutate(REPLIES[seed], &edits, Some(0xff)));
    }
}
