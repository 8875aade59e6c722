//! The fuzz targets' entry points on stable Rust: thousands of random and mutated IMAP inputs
//! through the server-side and client-side parsers; none may panic or loop.

use proptest::prelude::*;

const SEEDS: &[&[u8]] = &[
    b"* 1 FETCH (UID 7 RFC822.SIZE 44 BODY[] {12}\r\nSubject: x\r\n BODY[HEADER.FIELDS (CONTENT-TYPE X-ENVELOPD)] {2}\r\n\r\n FLAGS (\\Seen))\r\na OK done\r\n",
    b"* 2 FETCH (BODYSTRUCTURE ((\"TEXT\" \"PLAIN\" (\"CHARSET\" \"us-ascii\") NIL NIL \"7BIT\" 5 1 NIL NIL NIL NIL) \"MIXED\" (\"BOUNDARY\" \"b\") NIL NIL NIL))\r\n",
    b"* CAPABILITY IMAP4rev1 COMPRESS=DEFLATE IDLE\r\n* OK [CAPABILITY IMAP4rev1 BINARY] hi\r\n",
    b"Subject: s\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: message/rfc822\r\n\r\nSubject: in\r\n\r\nx\r\n--b--\r\n",
    b"a UID FETCH 1:* (UID RFC822.SIZE BODY.PEEK[HEADER.FIELDS (From Subject)] BODYSTRUCTURE)\r\nb SEARCH OR BODY x NOT TEXT y SINCE 1-Jan-2026\r\nc APPEND Sent (\\Seen) {5}\r\nhello\r\n",
];

const SESSIONS: &[&[u8]] = &[
    b"a LOGIN doc pw\r\nb SELECT INBOX\r\nc FETCH 1:* (FLAGS BODY.PEEK[HEADER] BODYSTRUCTURE)\r\n\xffd UID FETCH 1:* (BODY[] RFC822.SIZE ENVELOPE BODY[1]<0.5>)\r\ne SEARCH BODY hello\r\nf APPEND Sent {5}\r\nhello\r\ng IDLE\r\nDONE\r\nh LOGOUT\r\n",
    b"a AUTHENTICATE PLAIN\r\nAGRvYwBwdw==\r\nb EXAMINE {5}\r\nINBOX\r\nc FETCH 2,3 (BODY[TEXT] BODY[HEADER.FIELDS (X-Envelopd)])\r\nd STARTTLS\r\n",
];

/// The session target reaches past login into FETCH rewriting and SEARCH (so the fuzzer
/// explores the core, not just its greeting), and runs the kept findings.
#[test]
fn session_seeds_reach_fetch_and_search_and_kept_findings_run() {
    let out = String::from_utf8_lossy(&imap::fuzz_targets::session(SESSIONS[0])).into_owned();
    assert!(out.contains("d OK fetched"), "{out}");
    assert!(
        out.contains("X-Envelopd: decrypted=failed"),
        "the S/MIME message was not shown: {out}"
    );
    assert!(out.contains("e OK SEARCH completed"), "{out}");
    let out = String::from_utf8_lossy(&imap::fuzz_targets::session(SESSIONS[1])).into_owned();
    assert!(out.contains("c OK fetched"), "{out}");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/regressions");
    if let Ok(dir) = std::fs::read_dir(root.join("imap_session")) {
        for f in dir.flatten() {
            imap::fuzz_targets::session(&std::fs::read(f.path()).unwrap());
        }
    }
}

/// The inputs `fuzz/run.sh` kept from earlier findings (`fuzz/regressions/<target>`).
#[test]
fn kept_fuzzer_findings_run_cleanly() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/regressions");
    for (target, run) in [
        ("imap_server", imap::fuzz_targets::server as fn(&[u8])),
        ("imap_client", imap::fuzz_targets::client),
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
        imap::fuzz_targets::server(&data);
        imap::fuzz_targets::client(&data);
        imap::fuzz_targets::session(&data);
    }

    #[test]
    fn mutated_sessions_never_panic(
        seed in 0..SESSIONS.len(),
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..12),
    ) {
        imap::fuzz_targets::session(&testkit::mutate(SESSIONS[seed], &edits, Some(0xff)));
    }

    #[test]
    fn mutated_seeds_never_panic(
        seed in 0..SEEDS.len(),
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..12),
    ) {
        let data = testkit::mutate(SEEDS[seed], &edits, None);
        imap::fuzz_targets::server(&data);
        imap::fuzz_targets::client(&data);
    }
}
