//! Helpers of the submission-side system tests: an envelopd in front of Postfix's smtp-sink
//! (loopback or gateway mode), and a raw SMTP conversation.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use testkit::procs::{free_port, wait_for, Proc};

/// One envelopd in front of Postfix's smtp-sink (or an AUTH relay in gateway mode).
pub struct Setup {
    _serial: std::sync::MutexGuard<'static, ()>,
    pub dir: tempfile::TempDir,
    pub listen: u16,
    /// Where smtp-sink listens.
    pub upstream: u16,
    /// Gateway mode: envelopd on the LAN address with STARTTLS and logins required (the LAN
    /// address; the AUTH relay in front of smtp-sink).
    pub gateway: Option<(String, Proc)>,
}

/// The tests pick free ports by binding port 0; running them one at a time keeps one test's
/// listener from landing on a port another test just picked.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl Setup {
    pub fn new(fallback: &str) -> Setup {
        Setup::with(fallback, "")
    }

    /// With extra lines for the `[upstream.smtp]` section.
    pub fn with(fallback: &str, upstream_extra: &str) -> Setup {
        Setup::build(fallback, upstream_extra, false, &[])
    }

    /// A practice-wide gateway: listening on every address with STARTTLS (a certificate from
    /// `envelopd tls selfsigned`) and logins required; smtp-sink behind the AUTH relay
    /// (`clients/sink_auth.py`), since smtp-sink itself answers AUTH with 250.
    pub fn gateway(fallback: &str, upstream_extra: &str) -> Setup {
        Setup::build(fallback, upstream_extra, true, &[])
    }

    /// Gateway mode with environment variables for the relay (`clients/sink_auth.py`).
    pub fn gateway_relay_env(fallback: &str, upstream_extra: &str, env: &[(&str, &str)]) -> Setup {
        Setup::build(fallback, upstream_extra, true, env)
    }

    pub fn build(
        fallback: &str,
        upstream_extra: &str,
        gateway: bool,
        relay_env: &[(&str, &str)],
    ) -> Setup {
        let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        super::practice_dir(d, "alice", &["dump"]);
        let (listen, upstream) = (free_port(), free_port());
        let (smtp, relay_port, gateway) = if gateway {
            let lan = testkit::procs::lan_address();
            let o = Command::new(env!("CARGO_BIN_EXE_envelopd"))
                .args(["tls", "selfsigned", "--name", &lan, "--cert"])
                .arg(d.join("tls.crt"))
                .arg("--key")
                .arg(d.join("tls.key"))
                .output()
                .unwrap();
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            let relay_port = free_port();
            let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../tests/clients/sink_auth.py");
            let relay = Proc(
                Command::new("python3")
                    .arg(script)
                    .args([relay_port.to_string(), upstream.to_string()])
                    .env("SINK_AUTH_READS", d.join("relay-reads.txt"))
                    .envs(relay_env.iter().copied())
                    .spawn()
                    .unwrap(),
            );
            wait_for(relay_port);
            (
                format!(
                    "[smtp]\nlisten = \"0.0.0.0:{listen}\"\ntls = \"starttls\"\ncert = \"{}\"\nkey = \"{}\"\n",
                    d.join("tls.crt").display(),
                    d.join("tls.key").display()
                ),
                relay_port,
                Some((lan, relay)),
            )
        } else {
            (
                format!("[smtp]\nlisten = \"127.0.0.1:{listen}\"\n"),
                upstream,
                None,
            )
        };
        std::fs::write(
            d.join("proxy.toml"),
            format!(
                "{smtp}[upstream.smtp]\nhost = \"127.0.0.1\"\nport = {relay_port}\ntls = \"none\"\n{upstream_extra}\n\
                 [certificates]\nanchors = [\"trust\"]\nrecipients = \"certs\"\n\
                 [[identity]]\naddresses = [\"alice@smime.example\"]\npkcs12 = \"keys/alice.p12\"\npassword_file = \"keys/pw\"\nencryption_cert = \"keys/alice-enc.pem\"\n\
                 [policy]\nfallback = \"{fallback}\"\n"
            ),
        )
        .unwrap();
        Setup {
            _serial: serial,
            dir,
            listen,
            upstream,
            gateway,
        }
    }

    pub fn envelopd(&self) -> Proc {
        let p = super::run_envelopd(
            &self.dir.path().join("proxy.toml"),
            &self.dir.path().join("envelopd.log"),
        );
        wait_for(self.listen);
        p
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("envelopd.log")).unwrap_or_default()
    }

    /// Gateway mode: the commands envelopd sent to the relay, one line per read (see
    /// `clients/sink_auth.py`).
    pub fn relay_reads(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("relay-reads.txt")).unwrap_or_default()
    }

    pub fn dump(&self) -> PathBuf {
        self.dir.path().join("dump")
    }

    pub fn stored(&self) -> Vec<Vec<u8>> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.dump())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        // smtp-sink removes the dump of a transaction that was cut off, possibly between the
        // listing and the read: such a file holds no message.
        files.iter().filter_map(|f| std::fs::read(f).ok()).collect()
    }

    /// The stored dumps that hold a message (smtp-sink may also leave envelope-only dumps of
    /// transactions that were reset or aborted).
    pub fn messages(&self) -> Vec<Vec<u8>> {
        self.stored()
            .into_iter()
            .filter(|m| String::from_utf8_lossy(m).contains("\nSubject: "))
            .collect()
    }

    pub fn swaks(&self, to: &[&str], headers: &[&str], body: &str) -> Output {
        self.swaks_with(&[], to, headers, body)
    }

    /// `swaks` with extra options (`--pipeline`); a body of `@FILE` is read from FILE.
    pub fn swaks_with(&self, extra: &[&str], to: &[&str], headers: &[&str], body: &str) -> Output {
        let mut c = Command::new("swaks");
        c.args(extra);
        match &self.gateway {
            None => c.args(["--server", &format!("127.0.0.1:{}", self.listen)]),
            // From another machine's point of view: the LAN address, STARTTLS, a login.
            Some((lan, _)) => c
                .args(["--server", &format!("{lan}:{}", self.listen), "--tls"])
                .args(["--auth", "PLAIN", "--auth-user", "alice@smime.example"])
                .args(["--auth-password", "alice-pw"]),
        };
        c.args(["--from", "alice@smime.example"]);
        c.args(["--to", &to.join(",")]);
        for h in headers {
            c.args(["--header", h]);
        }
        c.args(["--body", body, "--timeout", "30"]);
        c.output().expect("swaks is installed")
    }
}

/// What swaks printed.
pub fn transcript(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

/// The text every test message carries.
pub const BODY: &str = "Befund Herr Muster: unauffaellig.";

/// One SMTP reply from `next_line` (empty at the end of the stream): its lines up to the last
/// one, whose code is not followed by '-'.
pub fn smtp_reply(mut next_line: impl FnMut() -> String) -> String {
    let mut all = String::new();
    loop {
        let line = next_line();
        all.push_str(&line);
        if !line.is_empty() && !line.ends_with('\n') {
            all.push('\n');
        }
        if line.len() < 4 || line.as_bytes()[3] != b'-' {
            return all;
        }
    }
}

/// A raw SMTP conversation: send a line, return the reply lines.
pub struct Raw {
    pub stream: std::io::BufReader<TcpStream>,
}

impl Raw {
    pub fn connect(port: u16) -> Raw {
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut r = Raw {
            stream: std::io::BufReader::new(s),
        };
        assert!(r.reply().starts_with("220 "));
        r
    }

    pub fn reply(&mut self) -> String {
        use std::io::BufRead;
        smtp_reply(|| {
            let mut line = String::new();
            self.stream.read_line(&mut line).unwrap();
            line
        })
    }

    pub fn send(&mut self, bytes: &[u8]) -> String {
        use std::io::Write;
        self.stream.get_mut().write_all(bytes).unwrap();
        self.reply()
    }
}
