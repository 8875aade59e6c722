//! The certificate cases of a practice, built by OpenSSL (root, intermediate; leaves valid,
//! expired, not yet valid, revoked by a local CRL, wrong EKU, wrong key usage, address mismatch,
//! wildcard address, RSA-1024, and one whose intermediate only arrives with it), run through
//! `envelopd explain` and `envelopd certs list|show|import|remove`: each gives the documented
//! decision and reason.

use std::process::Command;

const ENVELOPD: &str = env!("CARGO_BIN_EXE_envelopd");
use testkit::MAIL_LEAF as LEAF;

struct Practice {
    pki: testkit::Pki,
    dir: tempfile::TempDir,
}

fn leaf(extra: &str) -> String {
    format!("{LEAF}{extra}\n")
}

fn practice() -> Practice {
    let pki = testkit::Pki::new();
    let root = pki.root("Praxis Root CA");
    let inter = pki.issue(
        "Praxis Mail CA",
        "2048",
        "basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\n",
        &root,
    );
    let other_inter = pki.issue(
        "Praxis Second CA",
        "2048",
        "basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\n",
        &root,
    );
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for sub in ["trust", "certs", "crls"] {
        std::fs::create_dir(d.join(sub)).unwrap();
    }
    std::fs::copy(&root.1, d.join("trust/root.pem")).unwrap();
    std::fs::copy(&inter.1, d.join("certs/mail-ca.pem")).unwrap();
    let keep = |crt: &str, name: &str| {
        std::fs::copy(crt, d.join("certs").join(name)).unwrap();
    };
    for (name, kind, ext) in [
        ("valid", "2048", leaf("subjectAltName=email:valid@praxis.example")),
        ("revoked", "2048", leaf("subjectAltName=email:revoked@praxis.example")),
        ("tls", "2048", "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=email:tls@praxis.example\n".into()),
        ("signonly", "2048", "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=emailProtection\nsubjectAltName=email:signonly@praxis.example\n".into()),
        ("mismatch", "2048", leaf("subjectAltName=email:Dave@praxis.example")),
        ("wildcard", "2048", leaf("subjectAltName=email:*@praxis.example")),
        ("weak", "1024", leaf("subjectAltName=email:weak@praxis.example")),
    ] {
        let (_, crt) = pki.issue(name, kind, &ext, &inter);
        keep(&crt, &format!("{name}.pem"));
    }
    let (_, crt) = pki.issue_dated(
        "expired",
        &leaf("subjectAltName=email:expired@praxis.example"),
        &inter,
        "20200101000000Z",
        "20210101000000Z",
    );
    keep(&crt, "expired.pem");
    let (_, crt) = pki.issue_dated(
        "notyet",
        &leaf("subjectAltName=email:notyet@praxis.example"),
        &inter,
        "20400101000000Z",
        "20410101000000Z",
    );
    keep(&crt, "notyet.pem");
    // Under the second intermediate, which the practice does not have.
    let (_, crt) = pki.issue(
        "chained",
        "2048",
        &leaf("subjectAltName=email:chained@praxis.example"),
        &other_inter,
    );
    let bundle =
        std::fs::read_to_string(&crt).unwrap() + &std::fs::read_to_string(&other_inter.1).unwrap();
    std::fs::write(pki.dir().join("chained-bundle.pem"), bundle).unwrap();
    keep(&crt, "chained.pem");
    // A local CRL revoking one of them.
    let crl = pki.crl(
        "mail-ca",
        &inter,
        &[(&pki.p("revoked.crt"), "keyCompromise")],
        None,
    );
    std::fs::copy(crl, d.join("crls/mail-ca.crl")).unwrap();
    std::fs::write(
        d.join("proxy.toml"),
        "[smtp]\nlisten = \"127.0.0.1:10587\"\n[upstream.smtp]\nhost = \"127.0.0.1\"\nport = 25\ntls = \"none\"\n\
         [certificates]\nanchors = [\"trust\"]\nrecipients = \"certs\"\ncrls = [\"crls\"]\n\
         [policy]\nfallback = \"refuse\"\n",
    )
    .unwrap();
    Practice { pki, dir }
}

fn envelopd(p: &Practice, args: &[&str]) -> (i32, String, String) {
    let config = p.dir.path().join("proxy.toml");
    let mut c = Command::new(ENVELOPD);
    c.arg(args[0]);
    let rest = &args[1..];
    if args[0] == "certs" {
        c.arg(rest[0]).arg("--config").arg(&config).args(&rest[1..]);
    } else {
        c.arg("--config").arg(&config).args(rest);
    }
    let o = c.output().unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn every_certificate_case_gets_its_decision_and_reason() {
    let p = practice();
    let cases: &[(&str, &str)] = &[
        ("valid", "certificate valid"),
        ("expired", "expired on 2021-01-01"),
        ("notyet", "is not valid before 2040-01-01"),
        ("revoked", "was revoked on"),
        ("tls", "may not be used for this"),
        ("signonly", "keyEncipherment"),
        // The certificate says Dave@praxis.example: the same mailbox under the one address
        // rule (smime::address), as NSS/Thunderbird and Outlook see it.
        ("dave", "certificate valid"),
        ("anyone", "no certificate"),
        ("weak", "1024"),
        ("chained", "not trusted"),
    ];
    let mut table = String::new();
    for (who, reason) in cases {
        let address = format!("{who}@praxis.example");
        let (code, out, err) = envelopd(
            &p,
            &[
                "explain",
                "--from",
                "doc@praxis.example",
                "--to",
                &address,
                "--json",
            ],
        );
        assert_eq!(code, 0, "{err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let row = &v["recipients"][0];
        let text = row["reason"]
            .as_str()
            .or(row["detail"].as_str())
            .unwrap_or_default()
            .to_string();
        if matches!(*who, "valid" | "dave") {
            assert_eq!(v["outcome"], "delivered", "{out}");
            assert_eq!(row["outcome"], "encrypted", "{out}");
        } else {
            assert_eq!(v["outcome"], "refused", "{who}: {out}");
            assert!(text.contains(reason), "{who}: {text}");
        }
        table.push_str(&format!("{address:<28} {}\n", row["outcome"]));
    }
    // The wildcard certificate names "*@praxis.example" literally: no address matches it.
    assert!(table.contains("anyone@praxis.example        \"refused\""));
    println!("{table}");
}

#[test]
fn certs_list_show_import_and_remove() {
    let p = practice();
    let (code, out, err) = envelopd(&p, &["certs", "list"]);
    assert_eq!(code, 0, "{err}");
    for needle in [
        "valid@praxis.example",
        "days ago): certificate \"CN=expired\" expired on 2021-01-01",
        "wildcard address",
        "revoked on",
        "1024",
    ] {
        assert!(out.contains(needle), "{needle}:\n{out}");
    }
    let valid_line = out.lines().find(|l| l.starts_with("valid@")).unwrap();
    assert!(valid_line.ends_with(": usable"), "{valid_line}");
    // Expiring: the 30-day test certificates are within 60 days, not within 10; the expired
    // one is always listed. Exit status 1 when something is listed (for monitoring).
    let (code, out, _) = envelopd(&p, &["certs", "list", "--expiring", "60", "--json"]);
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let listed: Vec<String> = v["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["addresses"][0].as_str().unwrap().to_string())
        .collect();
    assert!(
        listed.contains(&"valid@praxis.example".to_string()),
        "{listed:?}"
    );
    assert!(
        !listed.contains(&"notyet@praxis.example".to_string()),
        "{listed:?}"
    );
    let (code, out, _) = envelopd(&p, &["certs", "list", "--expiring", "10"]);
    assert_eq!(code, 1, "the expired one is listed: {out}");
    assert!(!out.contains("valid@praxis.example"), "{out}");

    let (code, out, err) = envelopd(&p, &["certs", "show", "revoked@praxis.example"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("REVOKED on") && out.contains("keyCompromise"),
        "{out}"
    );
    assert!(
        out.contains("encrypt to revoked@praxis.example: no"),
        "{out}"
    );
    let (code, out, _) = envelopd(&p, &["certs", "show", "valid@praxis.example"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("encrypt to valid@praxis.example: yes"),
        "{out}"
    );
    assert!(
        out.contains("CN=valid <- CN=Praxis Mail CA <- CN=Praxis Root CA"),
        "{out}"
    );
    let (code, _, err) = envelopd(&p, &["certs", "show", "nobody@praxis.example"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("no certificate for nobody@praxis.example"),
        "{err}"
    );

    // Import: the leaf alone is refused (its CA is unknown); with its chain it is kept, CA too.
    let alone = p.pki.p("chained.crt");
    let (code, _, err) = envelopd(&p, &["certs", "import", &alone]);
    assert_ne!(code, 0);
    assert!(err.contains("not trusted"), "{err}");
    std::fs::remove_file(p.dir.path().join("certs/chained.pem")).unwrap();
    let bundle = p.pki.dir().join("chained-bundle.pem");
    let (code, out, err) = envelopd(&p, &["certs", "import", bundle.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("imported chained@praxis.example"), "{out}");
    assert!(out.contains("imported CA \"CN=Praxis Second CA\""), "{out}");
    let (_, out, _) = envelopd(
        &p,
        &[
            "explain",
            "--from",
            "doc@praxis.example",
            "--to",
            "chained@praxis.example",
        ],
    );
    assert!(out.contains("encrypted with"), "{out}");
    // Garbage is refused with a reason.
    let junk = p.pki.write("junk.pem", "not a certificate");
    let (code, _, err) = envelopd(&p, &["certs", "import", &junk]);
    assert_ne!(code, 0);
    assert!(err.contains("no certificate"), "{err}");

    // Remove: the file goes, and explain says there is no certificate any more.
    let (code, out, err) = envelopd(&p, &["certs", "remove", "valid@praxis.example"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("removed") && out.contains("valid.pem"),
        "{out}"
    );
    assert!(!p.dir.path().join("certs/valid.pem").exists());
    let (_, out, _) = envelopd(
        &p,
        &[
            "explain",
            "--from",
            "doc@praxis.example",
            "--to",
            "valid@praxis.example",
        ],
    );
    assert!(out.contains("no certificate"), "{out}");
    let (code, _, err) = envelopd(&p, &["certs", "remove", "valid@praxis.example"]);
    assert_ne!(code, 0);
    assert!(err.contains("no certificate file"), "{err}");
}

#[test]
fn keys_import_keeps_the_key_private_and_the_daemon_warns_before_it_expires() {
    use std::os::unix::fs::PermissionsExt;
    let p = practice();
    let d = p.dir.path();
    let inter = (p.pki.p("Praxis Mail CA.key"), p.pki.p("Praxis Mail CA.crt"));
    let (key, crt) = p.pki.issue(
        "doc",
        "2048",
        &leaf("subjectAltName=email:doc@praxis.example"),
        &inter,
    );
    let p12 = p.pki.p("doc.p12");
    testkit::openssl_ok(&[
        "pkcs12",
        "-export",
        "-inkey",
        &key,
        "-in",
        &crt,
        "-certfile",
        &inter.1,
        "-passout",
        "pass:geheim",
        "-out",
        &p12,
    ]);
    let import = |stdin: &str| {
        let mut c = Command::new(ENVELOPD)
            .args(["keys", "import", "--config"])
            .arg(d.join("proxy.toml"))
            .arg(&p12)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        c.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
        let o = c.wait_with_output().unwrap();
        (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let (code, _, err) = import("falsch\n");
    assert_ne!(code, 0);
    assert!(err.contains("wrong password"), "{err}");
    assert!(!d.join("keys").join("doc@praxis.example.p12").exists());
    let (code, out, err) = import("geheim\n");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("mail from it will be signed"), "{out}");
    let mode = |f: &str| std::fs::metadata(d.join(f)).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode("keys"), 0o700);
    assert_eq!(mode("keys/doc@praxis.example.p12"), 0o600);
    assert_eq!(mode("keys/doc@praxis.example.pass"), 0o600);
    let (code, _, err) = import("geheim\n");
    assert_ne!(code, 0);
    assert!(err.contains("already exists"), "{err}");
    // The printed section is a working identity.
    let section = &out[out.find("[[identity]]").unwrap()..];
    let port = testkit::procs::free_port();
    let config = std::fs::read_to_string(d.join("proxy.toml"))
        .unwrap()
        .replace("127.0.0.1:10587", &format!("127.0.0.1:{port}"));
    std::fs::write(d.join("proxy.toml"), format!("{config}{section}")).unwrap();
    let (code, out, err) = envelopd(&p, &["check", "--no-connect"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("identity doc@praxis.example") && out.contains("can sign"),
        "{out}"
    );
    // The daemon warns that the (30-day) certificate runs out.
    let log = d.join("run.log");
    let mut run = testkit::procs::Proc(
        Command::new(ENVELOPD)
            .args(["run", "--config"])
            .arg(d.join("proxy.toml"))
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    testkit::procs::wait_for(port);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("own certificate expires on") && text.contains("order the renewal"),
        "{text}"
    );
    let _ = run.0.kill();
    let _ = run.0.wait();
    // A key file others may read: the daemon refuses to start, and says what to do.
    std::fs::set_permissions(
        d.join("keys/doc@praxis.example.pass"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let o = Command::new(ENVELOPD)
        .args(["run", "--config"])
        .arg(d.join("proxy.toml"))
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("readable by other users") && err.contains("chmod 600"),
        "{err}"
    );
}
