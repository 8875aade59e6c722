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
