//! LDAP lookup end to end: a real OpenLDAP (`slapd` from Debian, started by the test) holds
//! Bob's certificate, envelopd has none for him; mail to Bob goes out encrypted to that
//! certificate. A directory that is down or never answers costs at most its deadline, and the
//! policy decides as if there were no directory.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use testkit::procs::{free_port, smtp_sink, wait_for, Proc};

/// slapd with one entry: Bob with his RFC 9216 encryption certificate.
fn slapd(dir: &Path) -> (Proc, u16) {
    let port = free_port();
    std::fs::create_dir_all(dir.join("db")).unwrap();
    let conf = dir.join("slapd.conf");
    std::fs::write(
        &conf,
        format!(
            "include /etc/ldap/schema/core.schema\ninclude /etc/ldap/schema/cosine.schema\n\
             include /etc/ldap/schema/inetorgperson.schema\nmodulepath /usr/lib/ldap\nmoduleload back_mdb\n\
             pidfile {d}/slapd.pid\ndatabase mdb\nsuffix \"dc=praxis,dc=example\"\n\
             rootdn \"cn=admin,dc=praxis,dc=example\"\nrootpw secret\ndirectory {d}/db\n",
            d = dir.display()
        ),
    )
    .unwrap();
    let der = Command::new("openssl")
        .args(["x509", "-outform", "DER", "-in"])
        .arg(common::rfc9216().join("bob.encrypt.crt"))
        .output()
        .unwrap()
        .stdout;
    let b64 = ldif_base64(&der);
    // Anna, at an internationalised domain: a directory's mail attribute is ASCII (IA5), so
    // it holds her address with the domain in A-labels; her certificate (issued here by the
    // RFC 9216 CA, with OpenSSL) names it the same way.
    let pki = testkit::Pki::new();
    let ca = (
        common::rfc9216().join("ca.rsa.key").display().to_string(),
        common::rfc9216().join("ca.rsa.crt").display().to_string(),
    );
    let (_, anna) = pki.issue_digest(
        "anna",
        "/CN=Anna",
        "2048",
        &format!(
            "subjectAltName=email:anna@xn--bcher-kva.example\n{}",
            testkit::MAIL_LEAF
        ),
        &ca,
        "-sha256",
    );
    let anna =
        ldif_base64(smime::parse_certificates(&std::fs::read(anna).unwrap()).unwrap()[0].der());
    let ldif = dir.join("data.ldif");
    std::fs::write(
        &ldif,
        format!(
            "dn: dc=praxis,dc=example\nobjectClass: dcObject\nobjectClass: organization\no: Praxis\ndc: praxis\n\n\
             dn: cn=Bob,dc=praxis,dc=example\nobjectClass: inetOrgPerson\nobjectClass: pkiUser\ncn: Bob\nsn: Bob\n\
             mail: bob@smime.example\nuserCertificate;binary:: {b64}\n\n\
             dn: cn=Anna,dc=praxis,dc=example\nobjectClass: inetOrgPerson\nobjectClass: pkiUser\ncn: Anna\nsn: Anna\n\
             mail: anna@xn--bcher-kva.example\nuserCertificate;binary:: {anna}\n"
        ),
    )
    .unwrap();
    let o = Command::new("slapadd")
        .arg("-f")
        .arg(&conf)
        .arg("-l")
        .arg(&ldif)
        .output()
        .expect("slapadd (package slapd) is installed");
    assert!(
        o.status.success(),
        "slapadd: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let p = Proc(
        Command::new("slapd")
            .arg("-f")
            .arg(&conf)
            .arg("-h")
            .arg(format!("ldap://127.0.0.1:{port}/"))
            .args(["-d", "0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("slapd is installed"),
    );
    wait_for(port);
    (p, port)
}

/// DER as one line of base64, as LDIF's `attr:: value` takes it.
fn ldif_base64(der: &[u8]) -> String {
    let b64 = smime::mime::base64_lines(der);
    String::from_utf8(b64).unwrap().split_whitespace().collect()
}

/// A TCP server that accepts and then says nothing.
fn silent_server() -> (std::thread::JoinHandle<()>, u16) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let h = std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in l.incoming().take(8) {
            held.push(c);
        }
        std::thread::sleep(Duration::from_secs(30));
    });
    (h, port)
}

struct Daemon {
    dir: tempfile::TempDir,
    listen: u16,
    _sink: Proc,
    _proc: Proc,
}

fn daemon(ldap_port: u16) -> Daemon {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for sub in ["trust", "certs", "dump"] {
        std::fs::create_dir(d.join(sub)).unwrap();
    }
    std::fs::copy(common::rfc9216().join("ca.rsa.crt"), d.join("trust/ca.pem")).unwrap();
    let (listen, upstream) = (free_port(), free_port());
    let config = format!(
        "[smtp]\nlisten = \"127.0.0.1:{listen}\"\n[upstream.smtp]\nhost = \"127.0.0.1\"\nport = {upstream}\ntls = \"none\"\n\
         [certificates]\nanchors = [\"trust\"]\nrecipients = \"certs\"\nrevocation = \"off\"\n\
         [[directory]]\nurl = \"ldap://127.0.0.1:{ldap_port}\"\nbase = \"dc=praxis,dc=example\"\ntimeout = 2\n\
         [policy]\nfallback = \"refuse\"\n"
    );
    std::fs::write(d.join("proxy.toml"), config).unwrap();
    let sink = smtp_sink(&d.join("dump"), upstream, &[]);
    let p = common::run_envelopd(&d.join("proxy.toml"), &d.join("envelopd.log"));
    wait_for(listen);
    Daemon {
        dir,
        listen,
        _sink: sink,
        _proc: p,
    }
}

impl Daemon {
    fn send(&self, to: &str) -> (String, Duration) {
        let start = Instant::now();
        let o = Command::new("swaks")
            .args(["--server", &format!("127.0.0.1:{}", self.listen)])
            .args(["--from", "alice@smime.example", "--to", to])
            .args([
                "--header",
                "Subject: Befund",
                "--body",
                "unauffaellig",
                "--timeout",
                "30",
            ])
            .output()
            .unwrap();
        (
            String::from_utf8_lossy(&o.stdout).into_owned(),
            start.elapsed(),
        )
    }

    fn stored(&self) -> Vec<Vec<u8>> {
        let mut files: Vec<_> = std::fs::read_dir(self.dir.path().join("dump"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        files
            .iter()
            .map(|f| std::fs::read(f).unwrap())
            .filter(|m| String::from_utf8_lossy(m).contains("Subject:"))
            .collect()
    }

    /// `envelopd check` on this daemon's configuration (the provider is the running sink).
    fn check(&self) -> (i32, String) {
        let o = Command::new(env!("CARGO_BIN_EXE_envelopd"))
            .args(["check", "--config"])
            .arg(self.dir.path().join("proxy.toml"))
            .output()
            .unwrap();
        (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stdout).into_owned(),
        )
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("envelopd.log")).unwrap_or_default()
    }
}

#[test]
fn a_certificate_only_in_slapd_encrypts_the_message() {
    let ldap_dir = tempfile::tempdir().unwrap();
    let (_slapd, port) = slapd(ldap_dir.path());
    let d = daemon(port);
    let (t, _) = d.send("bob@smime.example");
    assert!(common::swaks_reply(&t).contains("250"), "{t}\n{}", d.log());
    let stored = d.stored();
    assert_eq!(stored.len(), 1);
    assert!(String::from_utf8_lossy(&stored[0]).contains("application/pkcs7-mime"));
    let plain = testkit::openssl_pipe(
        &[
            "cms",
            "-decrypt",
            "-inkey",
            common::rfc9216().join("bob.encrypt.key").to_str().unwrap(),
        ],
        &stored[0],
    )
    .unwrap();
    assert!(String::from_utf8_lossy(&plain).contains("unauffaellig"));
    assert!(
        d.log().contains("using a certificate from the directory"),
        "{}",
        d.log()
    );
    // Someone the directory does not know: refused as before, and quickly.
    let (t, took) = d.send("carol@smime.example");
    assert!(
        common::swaks_reply(&t).contains("550") && t.contains("no certificate"),
        "{t}"
    );
    assert!(took < Duration::from_secs(5), "{took:?}");
    // `envelopd explain` asks the directory too.
    let o = Command::new(env!("CARGO_BIN_EXE_envelopd"))
        .args(["explain", "--config"])
        .arg(d.dir.path().join("proxy.toml"))
        .args(["--from", "alice@smime.example", "--to", "bob@smime.example"])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("bob@smime.example: encrypted with"), "{out}");
    // A recipient written with a Unicode domain (as an SMTPUTF8 client writes it) is found
    // under the A-label form the directory holds, and her certificate is hers under the one
    // address rule.
    let o = Command::new(env!("CARGO_BIN_EXE_envelopd"))
        .args(["explain", "--config"])
        .arg(d.dir.path().join("proxy.toml"))
        .args([
            "--from",
            "alice@smime.example",
            "--to",
            "anna@bücher.example",
        ])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("anna@bücher.example: encrypted with"), "{out}");
    // `envelopd check` asks the directory once and says it answers.
    let (code, out) = d.check();
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!(
            "ok       directory ldap://127.0.0.1:{port}: answers searches under \"dc=praxis,dc=example\""
        )),
        "{out}"
    );
}

#[test]
fn a_directory_that_is_down_or_silent_costs_at_most_its_deadline() {
    let closed = free_port();
    let d = daemon(closed);
    let (t, took) = d.send("bob@smime.example");
    assert!(common::swaks_reply(&t).contains("550"), "{t}");
    assert!(took < Duration::from_secs(10), "{took:?}");
    assert!(d.log().contains("directory lookup failed"), "{}", d.log());
    // `envelopd check` warns (mail still goes on, decided as without the directory).
    let (code, out) = d.check();
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!("warning  directory ldap://127.0.0.1:{closed}:"))
            && out.contains("treated as having none until it answers"),
        "{out}"
    );

    let (_silent, port) = silent_server();
    let d = daemon(port);
    let (t, took) = d.send("bob@smime.example");
    assert!(common::swaks_reply(&t).contains("550"), "{t}");
    assert!(
        took < Duration::from_secs(10),
        "deadline 2 s, took {took:?}"
    );
    assert!(
        d.log().contains("timed out") || d.log().contains("lookup failed"),
        "{}",
        d.log()
    );
    // The second message to the same address does not wait again (the answer is cached).
    let (t, took) = d.send("bob@smime.example");
    assert!(common::swaks_reply(&t).contains("550"), "{t}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    // A directory that never answers: `check` gives up at its deadline and says so.
    let started = Instant::now();
    let (code, out) = d.check();
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!("warning  directory ldap://127.0.0.1:{port}:"))
            && (out.contains("no answer within 2 s") || out.contains("timeout")),
        "{out}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}
