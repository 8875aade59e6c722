//! A laboratory of the three independent S/MIME engines (OpenSSL `cms`, GnuPG `gpgsm`, NSS
//! `cmsutil`) set up with the RFC 9216 keys: used by the interop matrix and by the end-to-end
//! tests that check what a real mail server stored.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const ENVELOPD: &str = env!("CARGO_BIN_EXE_envelopd");

/// Temporary keyrings of all three engines.
pub struct Lab {
    pub dir: tempfile::TempDir,
    pub gnupg: PathBuf,
    pub nss_alice: String,
    pub nss_bob: String,
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf")
            .args(["--kill", "gpg-agent"])
            .env("GNUPGHOME", &self.gnupg)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Runs a tool with optional stdin and extra environment.
pub fn run(cmd: &str, args: &[&str], stdin: Option<&[u8]>, env: &[(&str, &Path)]) -> Output {
    let mut c = Command::new(cmd);
    c.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        c.env(k, v);
    }
    let mut child = c
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e} (is it installed? .ci/run installs it)"));
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input).unwrap();
    }
    child.wait_with_output().unwrap()
}

/// The tool's stdout on success, else its last error lines.
pub fn ok(o: &Output, what: &str) -> Result<Vec<u8>, String> {
    if o.status.success() {
        Ok(o.stdout.clone())
    } else {
        let err = String::from_utf8_lossy(&o.stderr);
        let last: Vec<&str> = err
            .lines()
            .filter(|l| !l.contains("Note:") && !l.contains("CRL"))
            .collect();
        Err(format!(
            "{what} failed: {}",
            last.iter()
                .rev()
                .take(2)
                .rev()
                .cloned()
                .collect::<Vec<_>>()
                .join(" / ")
        ))
    }
}

impl Lab {
    pub fn new() -> Lab {
        let dir = tempfile::tempdir().unwrap();
        for e in std::fs::read_dir(super::vectors().join("rfc9216")).unwrap() {
            let e = e.unwrap();
            let to = dir.path().join(e.file_name());
            std::fs::copy(e.path(), &to).unwrap();
            set_mode(&to, 0o600);
        }
        let gnupg = dir.path().join("gnupg");
        std::fs::create_dir(&gnupg).unwrap();
        set_mode(&gnupg, 0o700);
        std::fs::write(gnupg.join("gpg-agent.conf"), "allow-loopback-pinentry\n").unwrap();
        std::fs::write(gnupg.join("gpgsm.conf"), "disable-crl-checks\n").unwrap();
        let mut lab = Lab {
            nss_alice: format!("sql:{}", dir.path().join("nss-alice").display()),
            nss_bob: format!("sql:{}", dir.path().join("nss-bob").display()),
            dir,
            gnupg,
        };
        lab.setup_gpgsm();
        lab.setup_nss();
        lab
    }

    pub fn p(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    pub fn write(&self, name: &str, data: &[u8]) -> String {
        let p = self.p(name);
        std::fs::write(&p, data).unwrap();
        p
    }

    /// A PKCS#12 with 3DES everywhere, the format gpgsm 2.2 and old Windows understand.
    pub fn legacy_p12(&self, who: &str, pass: &str) -> String {
        let out = self.p(&format!("{who}-3des.p12"));
        let o = run(
            "openssl",
            &[
                "pkcs12",
                "-export",
                "-certpbe",
                "PBE-SHA1-3DES",
                "-keypbe",
                "PBE-SHA1-3DES",
                "-macalg",
                "sha1",
                "-inkey",
                &self.p(&format!("{who}.key")),
                "-in",
                &self.p(&format!("{who}.crt")),
                "-name",
                &who.replace('.', ""),
                "-passout",
                &format!("pass:{pass}"),
                "-out",
                &out,
            ],
            None,
            &[],
        );
        ok(&o, "openssl pkcs12 -export").unwrap();
        out
    }

    /// A fresh EC CA and an e-mail-protection leaf for alice@smime.example on `curve`.
    pub fn ec_identity(&self, curve: &str) -> (String, String, String) {
        let tag = curve.replace('-', "").to_lowercase();
        let (cakey, cacrt, key, csr, crt, ext) = (
            self.p(&format!("ec-{tag}-ca.key")),
            self.p(&format!("ec-{tag}-ca.crt")),
            self.p(&format!("ec-{tag}.key")),
            self.p(&format!("ec-{tag}.csr")),
            self.p(&format!("ec-{tag}.crt")),
            self.write(&format!("ec-{tag}.ext"), b"basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyAgreement\nextendedKeyUsage=emailProtection\nsubjectAltName=email:alice@smime.example\n"),
        );
        let (paramgen, casubj) = (
            format!("ec_paramgen_curve:{curve}"),
            format!("/CN=Test EC {curve} CA"),
        );
        let steps: Vec<Vec<&str>> = vec![
            vec![
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                &paramgen,
                "-out",
                &cakey,
            ],
            vec![
                "req", "-x509", "-new", "-key", &cakey, "-subj", &casubj, "-days", "3650", "-out",
                &cacrt,
            ],
            vec![
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                &paramgen,
                "-out",
                &key,
            ],
            vec![
                "req",
                "-new",
                "-key",
                &key,
                "-subj",
                "/CN=Alice EC",
                "-out",
                &csr,
            ],
            vec![
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                &cacrt,
                "-CAkey",
                &cakey,
                "-CAcreateserial",
                "-days",
                "3650",
                "-extfile",
                &ext,
                "-out",
                &crt,
            ],
        ];
        for s in steps {
            ok(&run("openssl", &s, None, &[]), "openssl (EC test PKI)").unwrap();
        }
        set_mode(Path::new(&key), 0o600);
        (key, crt, cacrt)
    }

    pub fn gpgsm(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        let mut all = vec!["--batch", "--pinentry-mode", "loopback"];
        all.extend_from_slice(args);
        run("gpgsm", &all, stdin, &[("GNUPGHOME", &self.gnupg)])
    }

    pub fn setup_gpgsm(&mut self) {
        // Start the agent detached from our pipes, or it would hold them open forever.
        let _ = Command::new("gpgconf")
            .args(["--launch", "gpg-agent"])
            .env("GNUPGHOME", &self.gnupg)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        // gpgsm 2.2 gives up on a multi-recipient envelope when it knows the certificate of an
        // earlier recipient but not its key, so it holds both encryption keys.
        for who in ["alice.sign", "bob.encrypt", "alice.encrypt"] {
            // gpgsm 2.2 occasionally misreads a PKCS#12 (salt-dependent); a fresh export helps.
            let mut imported = false;
            for _ in 0..8 {
                let p12 = self.legacy_p12(who, "x");
                let o = self.gpgsm(&["--passphrase-fd", "0", "--import", &p12], Some(b"x\n"));
                if o.status.success() {
                    imported = true;
                    break;
                }
            }
            assert!(imported, "gpgsm could not import {who}");
        }
        ok(
            &self.gpgsm(&["--import", &self.p("ca.rsa.crt")], None),
            "gpgsm --import CA",
        )
        .unwrap();
        // The first use of a freshly imported key sometimes fails in gpg-agent 2.2 ("No secret
        // key") and works from then on; warm the agent up with an OpenSSL-made envelope so the
        // matrix measures gpgsm's steady state, not this start-up quirk.
        let probe = self.write("probe.txt", b"probe\r\n");
        let o = run(
            "openssl",
            &[
                "cms",
                "-encrypt",
                "-aes256",
                "-outform",
                "DER",
                "-in",
                &probe,
                &self.p("bob.encrypt.crt"),
            ],
            None,
            &[],
        );
        let der = self.write("probe.p7m", &ok(&o, "openssl cms -encrypt").unwrap());
        let warm = (0..5).any(|_| {
            self.gpgsm(&["--passphrase-fd", "0", "--decrypt", &der], Some(b"x\n"))
                .status
                .success()
        });
        assert!(warm, "gpgsm cannot decrypt with the imported key at all");
        let fp = run(
            "openssl",
            &[
                "x509",
                "-in",
                &self.p("ca.rsa.crt"),
                "-noout",
                "-fingerprint",
                "-sha1",
            ],
            None,
            &[],
        );
        let fp = String::from_utf8(fp.stdout).unwrap();
        let fp = fp.trim().split('=').nth(1).unwrap().to_string();
        std::fs::write(self.gnupg.join("trustlist.txt"), format!("{fp} S\n")).unwrap();
    }

    pub fn setup_nss(&mut self) {
        for (db, who) in [
            (self.nss_alice.clone(), "alice.sign"),
            (self.nss_bob.clone(), "bob.encrypt"),
        ] {
            std::fs::create_dir_all(db.trim_start_matches("sql:")).unwrap();
            ok(
                &run(
                    "certutil",
                    &["-N", "-d", &db, "--empty-password"],
                    None,
                    &[],
                ),
                "certutil -N",
            )
            .unwrap();
            ok(
                &run(
                    "certutil",
                    &[
                        "-A",
                        "-d",
                        &db,
                        "-n",
                        "ca",
                        "-t",
                        "C,C,C",
                        "-i",
                        &self.p("ca.rsa.crt"),
                    ],
                    None,
                    &[],
                ),
                "certutil -A",
            )
            .unwrap();
            let p12 = self.legacy_p12(who, "x");
            ok(
                &run("pk12util", &["-i", &p12, "-d", &db, "-W", "x"], None, &[]),
                "pk12util",
            )
            .unwrap();
        }
    }

    pub fn envelopd(&self, args: &[&str], stdin: &[u8]) -> Output {
        run(ENVELOPD, args, Some(stdin), &[])
    }

    /// `openssl cms -verify` of a whole signed message; returns the content it printed.
    pub fn openssl_verify(&self, signed: &[u8], ca: &str) -> Result<Vec<u8>, String> {
        let f = self.write("to-verify.eml", signed);
        let o = run(
            "openssl",
            &["cms", "-verify", "-CAfile", ca, "-in", &f],
            None,
            &[],
        );
        ok(&o, "openssl cms -verify")
    }

    /// NSS `cmsutil` on the two parts of a `multipart/signed` message; returns its status lines.
    pub fn nss_verify(&self, signed: &[u8]) -> String {
        let (content, sig) = split_signed(signed);
        let cf = self.write("nss-content", &content);
        let sf = self.write("nss-sig.p7s", &sig);
        let args = [
            "-D",
            "-n",
            "-h",
            "2",
            "-i",
            &sf,
            "-c",
            &cf,
            "-d",
            &self.nss_alice,
        ];
        let o = run("cmsutil", &args, None, &[]);
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }

    /// `envelopd smime verify`: Ok with the output message only when the status says valid.
    pub fn envelopd_verify(&self, signed: &[u8], ca: &str) -> Result<Vec<u8>, String> {
        let o = self.envelopd(&["smime", "verify", "--ca", ca], signed);
        let status = String::from_utf8_lossy(&o.stderr).to_string();
        if o.status.success() && status.contains("\"valid\":true") {
            Ok(o.stdout)
        } else {
            Err(status)
        }
    }
}

pub fn set_mode(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Splits an envelopd `multipart/signed` message into (signed content, signature DER).
pub fn split_signed(msg: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let e = smime::mime::split(msg);
    let ct = smime::mime::content_type(e.header);
    let parts = smime::mime::split_multipart(e.body, ct.param("boundary").unwrap()).unwrap();
    let sig = smime::mime::split(parts[1]);
    (
        parts[0].to_vec(),
        smime::mime::base64_decode(sig.body).unwrap(),
    )
}

/// The DER inside an envelopd `application/pkcs7-mime` message.
pub fn p7m_der(msg: &[u8]) -> Vec<u8> {
    smime::mime::base64_decode(smime::mime::split(msg).body).unwrap()
}
