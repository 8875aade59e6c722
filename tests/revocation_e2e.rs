//! Revocation end to end: envelopd fetches CRLs from an HTTP distribution point started by the
//! test (which can also answer 404, garbage, a CRL of the wrong CA, or nothing at all), keeps
//! them on disk, and the SMTP side refuses revoked recipients; fetch failures follow
//! `revocation = "prefer" | "require"` and never hold up a mail session.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use testkit::procs::{free_port, smtp_sink, wait_for, Proc};

use testkit::MAIL_LEAF as LEAF;

/// The PKI (root -> mail CA -> good, revoked) and its distribution point.
struct World {
    pki: testkit::Pki,
    http_dir: tempfile::TempDir,
    _http: Proc,
}

fn der_crl(pem: &str, out: &Path) {
    let o = Command::new("openssl")
        .args(["crl", "-in", pem, "-outform", "DER", "-out"])
        .arg(out)
        .output()
        .unwrap();
    assert!(o.status.success());
}

fn world() -> World {
    let http_dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/clients/crl_server.py");
    let http = Proc(
        Command::new("python3")
            .arg(script)
            .arg(port.to_string())
            .arg(http_dir.path())
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for(port);
    let url = |name: &str| format!("crlDistributionPoints=URI:http://127.0.0.1:{port}/{name}\n");
    let pki = testkit::Pki::new();
    let root = pki.root("Praxis Root CA");
    let inter = pki.issue(
        "Praxis Mail CA",
        "2048",
        &format!(
            "basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\n{}",
            url("root.crl")
        ),
        &root,
    );
    let certs = pki.dir().join("certs");
    std::fs::create_dir(&certs).unwrap();
    std::fs::copy(&inter.1, certs.join("mail-ca.pem")).unwrap();
    for who in ["good", "revoked"] {
        let (_, crt) = pki.issue(
            who,
            "2048",
            &format!(
                "{LEAF}subjectAltName=email:{who}@praxis.example\n{}",
                url("mail-ca.crl")
            ),
            &inter,
        );
        std::fs::copy(crt, certs.join(format!("{who}.pem"))).unwrap();
    }
    let h = http_dir.path();
    der_crl(
        &pki.crl(
            "mail-ca",
            &inter,
            &[(&pki.p("revoked.crt"), "keyCompromise")],
            None,
        ),
        &h.join("mail-ca.crl"),
    );
    der_crl(&pki.crl("root", &root, &[], None), &h.join("root.crl"));
    // The same names from an imposter CA with other keys.
    let imposter = testkit::Pki::new();
    let fake_root = imposter.root("Praxis Root CA");
    let fake_inter = imposter.root("Praxis Mail CA");
    der_crl(
        &imposter.crl("m", &fake_inter, &[], None),
        &h.join("wrong-mail-ca.crl"),
    );
    der_crl(
        &imposter.crl("r", &fake_root, &[], None),
        &h.join("wrong-root.crl"),
    );
    World {
        pki,
        http_dir,
        _http: http,
    }
}

impl World {
    fn mode(&self, mode: &str) {
        std::fs::write(self.http_dir.path().join("mode"), mode).unwrap();
    }

    fn requests(&self) -> usize {
        std::fs::read_to_string(self.http_dir.path().join("requests.log"))
            .unwrap_or_default()
            .lines()
            .count()
    }
}

/// One envelopd in front of smtp-sink, with its own state directory.
struct Daemon {
    dir: tempfile::TempDir,
    listen: u16,
    _sink: Proc,
    proc: Option<Proc>,
}

impl Daemon {
    fn start(w: &World, revocation: &str) -> Daemon {
        Daemon::start_in(w, revocation, tempfile::tempdir().unwrap())
    }

    fn start_in(w: &World, revocation: &str, dir: tempfile::TempDir) -> Daemon {
        let d = dir.path();
        std::fs::create_dir_all(d.join("dump")).unwrap();
        let (listen, upstream) = (free_port(), free_port());
        std::fs::write(
            d.join("proxy.toml"),
            format!(
                "[smtp]\nlisten = \"127.0.0.1:{listen}\"\n\
                 [upstream.smtp]\nhost = \"127.0.0.1\"\nport = {upstream}\ntls = \"none\"\n\
                 [certificates]\nanchors = [\"{root}\"]\nrecipients = \"{certs}\"\n\
                 revocation = \"{revocation}\"\ncrl_cache = \"crl-cache\"\ncrl_timeout = 2\ncrl_interval = 1\n\
                 [policy]\nfallback = \"refuse\"\n",
                root = w.pki.p("Praxis Root CA.crt"),
                certs = w.pki.dir().join("certs").display(),
            ),
        )
        .unwrap();
        let sink = smtp_sink(&d.join("dump"), upstream, &[]);
        let proc = common::run_envelopd(&d.join("proxy.toml"), &d.join("envelopd.log"));
        wait_for(listen);
        Daemon {
            dir,
            listen,
            _sink: sink,
            proc: Some(proc),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("envelopd.log")).unwrap_or_default()
    }

    /// Waits (at most 20 s) until the log contains `text` `n` times.
    fn wait_log(&self, text: &str, n: usize) {
        let start = Instant::now();
        while self.log().matches(text).count() < n {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "no {n}× {text:?} in the log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn send(&self, to: &str) -> (String, Duration) {
        let start = Instant::now();
        let o: Output = Command::new("swaks")
            .args(["--server", &format!("127.0.0.1:{}", self.listen)])
            .args(["--from", "doc@praxis.example", "--to", to])
            .args(["--header", "Subject: Befund", "--body", "unauffaellig"])
            .args(["--timeout", "30"])
            .output()
            .unwrap();
        (
            String::from_utf8_lossy(&o.stdout).into_owned(),
            start.elapsed(),
        )
    }

    fn stored(&self) -> Vec<String> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.dir.path().join("dump"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        files
            .iter()
            .map(|f| String::from_utf8_lossy(&std::fs::read(f).unwrap()).into_owned())
            .filter(|m| m.contains("Subject:"))
            .collect()
    }

    fn stop(mut self) -> tempfile::TempDir {
        drop(self.proc.take());
        self.dir
    }
}

#[test]
fn revoked_recipients_are_refused_with_crls_fetched_over_http_and_cached() {
    let w = world();
    w.mode("good");
    let d = Daemon::start(&w, "prefer");
    d.wait_log("CRL fetched", 2);
    let (t, _) = d.send("good@praxis.example");
    assert!(common::swaks_reply(&t).contains("250"), "{t}");
    assert!(d.stored()[0].contains("application/pkcs7-mime"));
    let (t, _) = d.send("revoked@praxis.example");
    let reply = common::swaks_reply(&t);
    assert!(
        reply.contains("550")
            && reply.contains("revoked@praxis.example")
            && reply.contains("revoked on"),
        "{t}"
    );
    assert!(t.contains("keyCompromise"), "{t}");
    assert_eq!(
        d.stored().len(),
        1,
        "nothing sent for the revoked recipient"
    );
    assert!(
        d.log().lines().any(|l| l.contains("audit v1 ")
            && l.contains("rcpts=revoked@praxis.example")
            && l.contains("decision=refused")
            && l.contains("reply=550")),
        "{}",
        d.log()
    );
    let cached = std::fs::read_dir(d.dir.path().join("crl-cache"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "crl")
        })
        .count();
    assert_eq!(cached, 2);

    // Restarted while the distribution point is down: the cached CRLs still apply at once.
    let dir = d.stop();
    w.mode("404");
    let d = Daemon::start_in(&w, "require", dir);
    d.wait_log("revocation checking", 1);
    assert!(d.log().contains("cached=2"), "{}", d.log());
    let (t, _) = d.send("revoked@praxis.example");
    assert!(
        common::swaks_reply(&t).contains("550") && t.contains("revoked on"),
        "{t}"
    );
    let (t, _) = d.send("good@praxis.example");
    assert!(common::swaks_reply(&t).contains("250"), "{t}");
}

#[test]
fn fetch_failures_follow_the_policy_and_never_hold_up_a_session() {
    let w = world();
    for (mode, log_says) in [
        ("404", "HTTP 404"),
        ("garbage", "not a CRL"),
        ("wrong", "does not verify"),
        ("slow", "CRL could not be fetched"),
    ] {
        w.mode(mode);
        let before = w.requests();
        let strict = Daemon::start(&w, "require");
        let lenient = Daemon::start(&w, "prefer");
        // The sessions go on while the fetch fails (or hangs): no wait on the network.
        let (t, took) = strict.send("good@praxis.example");
        let reply = common::swaks_reply(&t);
        assert!(
            reply.contains("550") && reply.contains("revocation status unknown"),
            "{mode}: {t}"
        );
        assert!(took < Duration::from_secs(10), "{mode}: took {took:?}");
        let (t, took) = lenient.send("good@praxis.example");
        assert!(common::swaks_reply(&t).contains("250"), "{mode}: {t}");
        assert!(took < Duration::from_secs(10), "{mode}: took {took:?}");
        assert!(lenient.stored()[0].contains("application/pkcs7-mime"));
        strict.wait_log(log_says, 1);
        lenient.wait_log(log_says, 1);
        assert!(
            w.requests() > before,
            "{mode}: the distribution point was asked"
        );
        // The revoked recipient's CRL never arrived: under "prefer" it is used, under
        // "require" refused — and neither daemon crashed.
        assert!(common::swaks_reply(&lenient.send("revoked@praxis.example").0).contains("250"));
        assert!(common::swaks_reply(&strict.send("revoked@praxis.example").0).contains("550"));
    }
}

/// OCSP as the second source: leaves without a CRL distribution point but with an OCSP
/// responder (`openssl ocsp`, signed by the issuing CA) in their AIA. A responder signing with
/// another CA's key is not believed.
#[test]
fn ocsp_answers_from_openssl_decide_when_there_is_no_crl() {
    let http_dir = tempfile::tempdir().unwrap();
    let (http_port, ocsp_port, rogue_port) = (free_port(), free_port(), free_port());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/clients/crl_server.py");
    let _http = Proc(
        Command::new("python3")
            .arg(script)
            .arg(http_port.to_string())
            .arg(http_dir.path())
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let pki = testkit::Pki::new();
    let root = pki.root("Praxis Root CA");
    let inter = pki.issue(
        "Praxis Mail CA",
        "2048",
        &format!("basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\ncrlDistributionPoints=URI:http://127.0.0.1:{http_port}/root.crl\n"),
        &root,
    );
    der_crl(
        &pki.crl("root", &root, &[], None),
        &http_dir.path().join("root.crl"),
    );
    let certs = pki.dir().join("certs");
    std::fs::create_dir(&certs).unwrap();
    std::fs::copy(&inter.1, certs.join("mail-ca.pem")).unwrap();
    for (who, port) in [
        ("good", ocsp_port),
        ("revoked", ocsp_port),
        ("rogue", rogue_port),
    ] {
        let (_, crt) = pki.issue(
            who,
            "2048",
            &format!("{LEAF}subjectAltName=email:{who}@praxis.example\nauthorityInfoAccess=OCSP;URI:http://127.0.0.1:{port}/\n"),
            &inter,
        );
        std::fs::copy(crt, certs.join(format!("{who}.pem"))).unwrap();
    }
    let index = pki.ca_index(
        "mail-ca",
        &inter,
        &[&pki.p("good.crt"), &pki.p("rogue.crt")],
        &[(&pki.p("revoked.crt"), "keyCompromise")],
    );
    // `openssl ocsp` serves one connection at a time and hangs on one that closes without a
    // request, so readiness is read from its log instead of probing the port.
    let responder = |port: u16, signer: &(String, String)| {
        let log = pki.dir().join(format!("ocsp-{port}.log"));
        let p = Proc(
            Command::new("openssl")
                .args(["ocsp", "-index", &index, "-port", &port.to_string()])
                .args(["-rsigner", &signer.1, "-rkey", &signer.0, "-CA", &inter.1])
                .args(["-ndays", "1"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .unwrap(),
        );
        let start = Instant::now();
        while !std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("waiting for OCSP client connections")
        {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "openssl ocsp did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        p
    };
    let _ocsp = responder(ocsp_port, &inter);
    // The rogue responder signs with a key the mail CA never authorised.
    let stranger = pki.root("Stranger CA");
    let _rogue = responder(rogue_port, &stranger);

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("dump")).unwrap();
    let (listen, upstream) = (free_port(), free_port());
    std::fs::write(
        d.join("proxy.toml"),
        format!(
            "[smtp]\nlisten = \"127.0.0.1:{listen}\"\n\
             [upstream.smtp]\nhost = \"127.0.0.1\"\nport = {upstream}\ntls = \"none\"\n\
             [certificates]\nanchors = [\"{}\"]\nrecipients = \"{}\"\n\
             revocation = \"require\"\ncrl_timeout = 3\ncrl_interval = 1\n\
             [policy]\nfallback = \"refuse\"\n",
            root.1,
            certs.display(),
        ),
    )
    .unwrap();
    let daemon = Daemon {
        _sink: smtp_sink(&d.join("dump"), upstream, &[]),
        proc: Some(common::run_envelopd(
            &d.join("proxy.toml"),
            &d.join("envelopd.log"),
        )),
        dir,
        listen,
    };
    wait_for(listen);
    daemon.wait_log("OCSP answer", 2);
    daemon.wait_log("not signed by the issuing CA", 1);
    let (t, _) = daemon.send("good@praxis.example");
    assert!(
        common::swaks_reply(&t).contains("250"),
        "{t}\n{}",
        daemon.log()
    );
    assert!(daemon.stored()[0].contains("application/pkcs7-mime"));
    let (t, _) = daemon.send("revoked@praxis.example");
    let reply = common::swaks_reply(&t);
    assert!(
        reply.contains("550") && reply.contains("revoked on") && reply.contains("keyCompromise"),
        "{t}"
    );
    let (t, _) = daemon.send("rogue@praxis.example");
    let reply = common::swaks_reply(&t);
    assert!(
        reply.contains("550") && reply.contains("revocation status unknown"),
        "{t}"
    );
}
