//! One answer for one (certificate, address), whoever asks: a generated matrix of certificates
//! (subjectAltName only, subject emailAddress only, both, mixed case, an IDN domain, a wrong
//! extended key usage, expired, from another CA, and one made by NSS `certutil`) times From
//! addresses, judged by `envelopd smime verify`, by the IMAP side reading the message from real
//! Dovecot, and by `envelopd explain` (whether mail to that address would be encrypted with that
//! certificate). All three must agree, and agree with `openssl cms -verify` wherever OpenSSL
//! can decide (it does not look at addresses).

mod common;

use std::path::Path;
use std::process::Command;

use common::provider::Provider;
use testkit::procs::{free_port, wait_for};

use testkit::MAIL_LEAF as LEAF;

/// One certificate of the matrix: its name, key and certificate paths.
struct Case {
    name: &'static str,
    key: String,
    crt: String,
}

/// NSS's own CA and a leaf with the address only in the subject (E=…, no subjectAltName, as
/// `certutil` writes without `--extSAN`); returns (CA certificate, leaf key, leaf certificate).
fn nss_made(dir: &Path) -> (String, String, String) {
    let db = format!("sql:{}", dir.join("nssdb").display());
    std::fs::create_dir_all(dir.join("nssdb")).unwrap();
    std::fs::write(dir.join("noise"), [7u8; 64]).unwrap();
    let noise = dir.join("noise").display().to_string();
    let certutil = |args: &[&str], answers: &str| {
        let o = common::lab::run("certutil", args, Some(answers.as_bytes()), &[]);
        common::lab::ok(&o, &format!("certutil {args:?}")).unwrap();
    };
    certutil(&["-N", "-d", &db, "--empty-password"], "");
    certutil(
        &[
            "-S",
            "-d",
            &db,
            "-n",
            "nssca",
            "-s",
            "CN=NSS Praxis CA,O=Praxis",
            "-x",
            "-t",
            "CT,C,C",
            "-2",
            "--keyUsage",
            "certSigning,crlSigning",
            "-z",
            &noise,
            "-v",
            "12",
            "-g",
            "2048",
            "-m",
            "1",
        ],
        "y\n0\ny\n",
    );
    certutil(
        &[
            "-S",
            "-d",
            &db,
            "-n",
            "nora",
            "-s",
            "E=Nora@Praxis.example,CN=Nora Nss",
            "-c",
            "nssca",
            "-t",
            ",,",
            "-2",
            "--keyUsage",
            "digitalSignature,keyEncipherment",
            "--extKeyUsage",
            "emailProtection",
            "-z",
            &noise,
            "-v",
            "12",
            "-g",
            "2048",
            "-m",
            "2",
        ],
        "n\n-1\nn\n",
    );
    let p = |n: &str| dir.join(n).display().to_string();
    let o = Command::new("certutil")
        .args(["-L", "-d", &db, "-n", "nssca", "-a"])
        .output()
        .unwrap();
    std::fs::write(p("nssca.pem"), o.stdout).unwrap();
    let o = Command::new("pk12util")
        .args(["-o", &p("nora.p12"), "-n", "nora", "-d", &db, "-W", "pw"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    testkit::openssl_ok(&[
        "pkcs12",
        "-in",
        &p("nora.p12"),
        "-passin",
        "pass:pw",
        "-nodes",
        "-nocerts",
        "-out",
        &p("nora.key"),
    ]);
    testkit::openssl_ok(&[
        "pkcs12",
        "-in",
        &p("nora.p12"),
        "-passin",
        "pass:pw",
        "-nokeys",
        "-clcerts",
        "-out",
        &p("nora.crt"),
    ]);
    (p("nssca.pem"), p("nora.key"), p("nora.crt"))
}

#[test]
fn verify_the_imap_status_explain_and_openssl_agree_on_every_certificate_and_address() {
    let provider = Provider::start();
    let pki = testkit::Pki::new();
    let root = pki.root("Praxis Root CA");
    let other_root = pki.root("Other Root CA");
    let issue = |name: &'static str, subject: &str, ext: &str, ca: &(String, String)| {
        let (key, crt) = pki.issue_as(name, subject, "2048", ext, ca);
        Case { name, key, crt }
    };
    let (nss_ca, nora_key, nora_crt) = nss_made(pki.dir());
    let (gkey, gcrt) = pki.issue_dated(
        "expired",
        &format!("{LEAF}subjectAltName=email:gina@praxis.example\n"),
        &root,
        "20200101000000Z",
        "20210101000000Z",
    );
    let cases = vec![
        issue("san", "/CN=Anna", &format!("{LEAF}subjectAltName=email:anna@praxis.example\n"), &root),
        issue("dn", "/CN=Berta/emailAddress=Berta@Praxis.example", LEAF, &root),
        issue("both", "/CN=Carl/emailAddress=chef@praxis.example", &format!("{LEAF}subjectAltName=email:carl@praxis.example\n"), &root),
        issue("mixed", "/CN=Dora", &format!("{LEAF}subjectAltName=email:Dora@Praxis.Example\n"), &root),
        issue("idn", "/CN=Emil", &format!("{LEAF}subjectAltName=email:emil@xn--bcher-kva.example\n"), &root),
        issue("eku", "/CN=Fritz", "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=email:fritz@praxis.example\n", &root),
        Case { name: "expired", key: gkey, crt: gcrt },
        issue("other", "/CN=Hans", &format!("{LEAF}subjectAltName=email:hans@praxis.example\n"), &other_root),
        Case { name: "nss", key: nora_key, crt: nora_crt },
    ];
    // (certificate, From address, whether the address is the one the certificate states: only
    // then can OpenSSL, which ignores addresses, decide the same question).
    let rows: Vec<(&str, &str, bool)> = vec![
        ("san", "anna@praxis.example", true),
        ("san", "ANNA@Praxis.Example", true),
        ("san", "zed@praxis.example", false),
        ("dn", "berta@praxis.example", true),
        ("both", "carl@praxis.example", true),
        ("both", "chef@praxis.example", false),
        ("mixed", "dora@praxis.example", true),
        ("idn", "emil@bücher.example", true),
        ("idn", "emil@xn--bcher-kva.example", true),
        ("eku", "fritz@praxis.example", true),
        ("expired", "gina@praxis.example", true),
        ("other", "hans@praxis.example", true),
        ("nss", "nora@praxis.example", true),
    ];
    let expected_valid = |cert: &str, from: &str| {
        matches!(cert, "san" | "dn" | "mixed" | "idn" | "nss") && !from.starts_with("zed")
            || (cert == "both" && from.starts_with("carl"))
    };

    // The practice: Bob reads; the trust anchors are the practice CA and NSS's CA; every
    // certificate of the matrix is in its address book (for `explain`).
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    common::practice_dir(d, "bob", &[]);
    std::fs::copy(&root.1, d.join("trust/praxis.pem")).unwrap();
    std::fs::copy(&nss_ca, d.join("trust/nss.pem")).unwrap();
    for c in &cases {
        std::fs::copy(&c.crt, d.join(format!("certs/{}.pem", c.name))).unwrap();
    }
    let (smtp, imap) = (free_port(), free_port());
    std::fs::write(
        d.join("proxy.toml"),
        format!(
            "{}[certificates]\nanchors = [\"trust\"]\nrecipients = \"certs\"\n\
             [policy]\nfallback = \"plaintext\"\n\
             [[identity]]\naddresses = [\"bob@smime.example\"]\npkcs12 = \"keys/bob.p12\"\npassword_file = \"keys/pw\"\n",
            common::reading_sections(&provider, smtp, imap)
        ),
    )
    .unwrap();
    let bundle = d.join("anchors.pem");
    std::fs::write(
        &bundle,
        [
            std::fs::read(&root.1).unwrap(),
            std::fs::read(&nss_ca).unwrap(),
        ]
        .concat(),
    )
    .unwrap();

    // One message per row, signed with OpenSSL by the row's certificate.
    let mut messages = Vec::new();
    for (i, (cert, from, _)) in rows.iter().enumerate() {
        let c = cases.iter().find(|c| c.name == *cert).unwrap();
        let signed = testkit::openssl_pipe(
            &[
                "cms", "-sign", "-signer", &c.crt, "-inkey", &c.key, "-binary", "-crlfeol",
            ],
            b"Content-Type: text/plain\r\n\r\nRezept bitte abholen.\r\n",
        )
        .unwrap();
        let mut m =
            format!("From: {from}\r\nTo: bob@smime.example\r\nSubject: row-{i}\r\n").into_bytes();
        m.extend_from_slice(&signed);
        provider.deliver("bob", &format!("{i}.row"), &m);
        messages.push(m);
    }

    // (1) envelopd smime verify.
    let verify: Vec<bool> = messages
        .iter()
        .map(|m| {
            let f = d.join("msg.eml");
            std::fs::write(&f, m).unwrap();
            let o = Command::new(env!("CARGO_BIN_EXE_envelopd"))
                .args(["smime", "verify", "--ca", &root.1, "--ca", &nss_ca, "--in"])
                .arg(&f)
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&o.stderr);
            let json: serde_json::Value =
                serde_json::from_str(err.lines().find(|l| l.starts_with('{')).unwrap()).unwrap();
            assert_eq!(json["valid"] == true, o.status.success());
            json["valid"] == true
        })
        .collect();

    // (2) The IMAP side, reading the messages from Dovecot.
    let p = common::run_envelopd(&d.join("proxy.toml"), &d.join("envelopd.log"));
    wait_for(imap);
    let out = serde_json::Value::Array(common::imap_steps(
        imap,
        serde_json::json!([
            ["login", "bob@smime.example", "bob-pw"],
            ["select", "INBOX"],
            ["fetch-all"]
        ]),
        &d.join("envelopd.log"),
    ));
    let mut imap_valid = vec![None; rows.len()];
    let mut imap_status = vec![String::new(); rows.len()];
    for m in out[2].as_array().unwrap() {
        let body = smime::mime::base64_decode(m["body"].as_str().unwrap().as_bytes()).unwrap();
        let text = String::from_utf8_lossy(&body);
        let i: usize = text
            .lines()
            .find_map(|l| l.strip_prefix("Subject: row-"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let status = m["status"].as_str().unwrap().to_string();
        imap_valid[i] = Some(status.contains("signature=valid"));
        imap_status[i] = status;
    }
    drop(p);

    // (3) explain: would mail to the address be encrypted (with that certificate)?
    let explain: Vec<bool> = rows
        .iter()
        .map(|(_, from, _)| {
            let o = Command::new(env!("CARGO_BIN_EXE_envelopd"))
                .args(["explain", "--config"])
                .arg(d.join("proxy.toml"))
                .args(["--from", "bob@smime.example", "--to", from, "--json"])
                .output()
                .unwrap();
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
            v["recipients"][0]["outcome"] == "encrypted"
        })
        .collect();

    // (4) OpenSSL, where it can decide.
    let mut table = String::new();
    for (i, (cert, from, stated)) in rows.iter().enumerate() {
        let want = expected_valid(cert, from);
        let imap = imap_valid[i].unwrap_or_else(|| panic!("row {i} not read through IMAP"));
        table.push_str(&format!(
            "{cert:8} {from:30} verify={} imap={} explain={} ({})\n",
            verify[i], imap, explain[i], imap_status[i]
        ));
        assert_eq!(verify[i], want, "verify, row {i}: {cert} / {from}\n{table}");
        assert_eq!(imap, want, "IMAP, row {i}: {cert} / {from}\n{table}");
        assert_eq!(
            explain[i], want,
            "explain, row {i}: {cert} / {from}\n{table}"
        );
        if *stated {
            let openssl = testkit::openssl_pipe(
                &[
                    "cms",
                    "-verify",
                    "-CAfile",
                    bundle.to_str().unwrap(),
                    "-purpose",
                    "smimesign",
                    "-out",
                    "/dev/null",
                ],
                &messages[i],
            )
            .is_ok();
            assert_eq!(openssl, want, "openssl, row {i}: {cert} / {from}\n{table}");
        }
    }
    println!("{table}");
}
