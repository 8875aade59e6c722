//! Helpers shared by the integration tests of every envelopd crate: where the public test
//! vectors are, and running the real `openssl` command.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod procs;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// One key and certificate (and optionally a CA certificate) exported as PKCS#12 by every common
/// exporter, into `dir`: OpenSSL 3's default (PBES2/AES), `-legacy`, Windows/Outlook's shape
/// (PBE-SHA1-3DES, SHA-1 MAC), and NSS `pk12util` (BER with indefinite lengths, as Thunderbird
/// and Firefox write backups) in its default and its legacy 3DES form. Returns (exporter, file,
/// password).
pub fn pkcs12_exports(
    dir: &std::path::Path,
    key: &str,
    cert: &str,
    ca: Option<&str>,
) -> Vec<(&'static str, PathBuf, &'static str)> {
    use std::process::Command;
    let run = |cmd: &mut Command| {
        let o = cmd.output().unwrap();
        assert!(
            o.status.success(),
            "{cmd:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    let p = |n: &str| dir.join(n);
    let export = |out: &str, extra: &[&str]| {
        let mut c = Command::new("openssl");
        c.args([
            "pkcs12", "-export", "-inkey", key, "-in", cert, "-name", "key",
        ]);
        if let Some(ca) = ca {
            c.args(["-certfile", ca]);
        }
        c.args(["-passout", "pass:geheim", "-out"])
            .arg(p(out))
            .args(extra);
        run(&mut c);
    };
    export("openssl3.p12", &[]);
    export("legacy.p12", &["-legacy"]);
    export(
        "windows.p12",
        &[
            "-keypbe",
            "PBE-SHA1-3DES",
            "-certpbe",
            "PBE-SHA1-3DES",
            "-macalg",
            "sha1",
        ],
    );
    // NSS: a database of its own, the OpenSSL export imported, then exported by pk12util.
    std::fs::create_dir_all(p("nssdb")).unwrap();
    let db = format!("sql:{}", p("nssdb").display());
    run(Command::new("certutil").args(["-N", "-d", &db, "--empty-password"]));
    run(Command::new("pk12util")
        .args(["-i"])
        .arg(p("openssl3.p12"))
        .args(["-d", &db, "-W", "geheim"]));
    run(Command::new("pk12util")
        .args(["-o"])
        .arg(p("nss.p12"))
        .args(["-n", "key", "-d", &db, "-W", "nss-pw"]));
    let tdes = "PKCS #12 V2 PBE With SHA-1 And 3KEY Triple DES-CBC";
    run(Command::new("pk12util")
        .args(["-o"])
        .arg(p("nss-3des.p12"))
        .args([
            "-n", "key", "-d", &db, "-W", "nss-pw", "-c", tdes, "-C", tdes,
        ]));
    vec![
        ("OpenSSL 3 default", p("openssl3.p12"), "geheim"),
        ("OpenSSL -legacy", p("legacy.p12"), "geheim"),
        ("Windows/Outlook shape", p("windows.p12"), "geheim"),
        ("NSS pk12util", p("nss.p12"), "nss-pw"),
        ("NSS pk12util 3DES", p("nss-3des.p12"), "nss-pw"),
    ]
}

/// The NIST PKITS data (`…/x509/PKITS_data` of PyPI's cryptography_vectors): `ENVELOPD_PKITS`,
/// or where `scripts/fetch-pkits.sh` puts it (`target/pkits/PKITS_data`; `scripts/test.sh`
/// runs it). Missing data is a failure that says how to get it, never a test that passes
/// without having run.
pub fn pkits_dir() -> PathBuf {
    let dir = std::env::var_os("ENVELOPD_PKITS").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/pkits/PKITS_data"),
        PathBuf::from,
    );
    assert!(
        dir.join("smime").is_dir(),
        "no NIST PKITS data in {}: run scripts/fetch-pkits.sh (scripts/test.sh does), or set \
         ENVELOPD_PKITS to cryptography_vectors' x509/PKITS_data",
        dir.display()
    );
    dir
}

/// The S/MIME messages of the PKITS data (`smime/*.eml`), sorted by name.
pub fn pkits_messages(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("smime"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "eml"))
        .collect();
    files.sort();
    files
}

/// `../shared/vectors` beside the checkout, or `ENVELOPD_VECTORS`.
pub fn vectors() -> PathBuf {
    std::env::var_os("ENVELOPD_VECTORS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/vectors")
        })
}

/// A file of the RFC 9216 vectors.
pub fn rfc9216(name: &str) -> PathBuf {
    vectors().join("rfc9216").join(name)
}

/// Runs `openssl` with `args`; panics with its error output if it fails.
pub fn openssl_ok(args: &[&str]) {
    let o = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl is installed");
    assert!(
        o.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Runs `openssl` with `args` and `input` on stdin; its stdout, or its error output.
pub fn openssl_pipe(args: &[&str], input: &[u8]) -> Result<Vec<u8>, String> {
    use std::io::Write;
    let mut c = Command::new("openssl")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl is installed");
    c.stdin.take().unwrap().write_all(input).unwrap();
    let o = c.wait_with_output().unwrap();
    if o.status.success() {
        Ok(o.stdout)
    } else {
        Err(String::from_utf8_lossy(&o.stderr).to_string())
    }
}

/// `input` signed by OpenSSL (`openssl cms -sign`, then `extra` options) with the RFC 9216
/// signing key and certificate of `who` (`alice`, `bob`, …).
pub fn openssl_sign_as(who: &str, extra: &[&str], input: &[u8]) -> Vec<u8> {
    let crt = rfc9216(&format!("{who}.sign.crt")).display().to_string();
    let key = rfc9216(&format!("{who}.sign.key")).display().to_string();
    let mut args = vec!["cms", "-sign", "-signer", &crt, "-inkey", &key];
    args.extend_from_slice(extra);
    openssl_pipe(&args, input).unwrap_or_else(|e| panic!("openssl cms -sign as {who}: {e}"))
}

/// The extensions of a mail certificate ([`Pki::issue`]'s `ext`), without its subjectAltName:
/// not a CA, signing and key encipherment, e-mail protection.
pub const MAIL_LEAF: &str = "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=emailProtection\n";

/// A throwaway PKI made with the `openssl` command in a temporary directory.
pub struct Pki {
    dir: tempfile::TempDir,
}

impl Default for Pki {
    fn default() -> Self {
        Self::new()
    }
}

impl Pki {
    /// An empty PKI directory.
    pub fn new() -> Self {
        Pki {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// The directory.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// A path in the directory.
    pub fn p(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// A new private key (`ec` for P-256, else RSA with that many bits), mode 0600.
    pub fn key(&self, name: &str, kind: &str) -> String {
        let key = self.p(&format!("{name}.key"));
        match kind {
            "ec" => openssl_ok(&[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-out",
                &key,
            ]),
            bits => openssl_ok(&[
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                &format!("rsa_keygen_bits:{bits}"),
                "-out",
                &key,
            ]),
        }
        std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        key
    }

    /// A self-signed RSA root CA; returns (key, certificate) paths.
    pub fn root(&self, name: &str) -> (String, String) {
        let key = self.key(name, "2048");
        let crt = self.p(&format!("{name}.crt"));
        let ext = self.write(&format!("{name}.ext"), "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash\n");
        self.self_signed(&key, &format!("/CN={name}"), &ext, &crt);
        (key, crt)
    }

    /// A self-signed certificate `crt` for `key` with `subject` (`/CN=…`) and the extensions in
    /// the file `ext`, valid for 30 days.
    fn self_signed(&self, key: &str, subject: &str, ext: &str, crt: &str) {
        openssl_ok(&[
            "req",
            "-x509",
            "-new",
            "-key",
            key,
            "-subj",
            subject,
            "-days",
            "30",
            "-extensions",
            "v3",
            "-config",
            &self.config(ext),
            "-out",
            crt,
        ]);
    }

    /// Writes a text file in the directory.
    pub fn write(&self, name: &str, text: &str) -> String {
        let p = self.p(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    /// A minimal openssl.cnf whose [v3] section is the given extension file.
    fn config(&self, ext: &str) -> String {
        let body = std::fs::read_to_string(ext).unwrap();
        self.write(
            &format!("{ext}.cnf"),
            &format!("[req]\ndistinguished_name=dn\n[dn]\n[v3]\n{body}"),
        )
    }

    /// Issues a certificate for `name` (key kind, extensions) from `issuer` (key, cert).
    pub fn issue(
        &self,
        name: &str,
        kind: &str,
        ext: &str,
        issuer: &(String, String),
    ) -> (String, String) {
        self.issue_as(name, &format!("/CN={name}"), kind, ext, issuer)
    }

    /// Like [`Pki::issue`] with the subject given in OpenSSL's `/A=v/B=w` form (e.g. with an
    /// `emailAddress` and no subjectAltName, as NSS and older CAs issue them).
    pub fn issue_as(
        &self,
        name: &str,
        subject: &str,
        kind: &str,
        ext: &str,
        issuer: &(String, String),
    ) -> (String, String) {
        self.issue_digest(name, subject, kind, ext, issuer, "-sha256")
    }

    /// Like [`Pki::issue_as`], the issuer signing with the digest `md` (`-sha1`, `-sha256` …).
    pub fn issue_digest(
        &self,
        name: &str,
        subject: &str,
        kind: &str,
        ext: &str,
        issuer: &(String, String),
        md: &str,
    ) -> (String, String) {
        let key = self.key(name, kind);
        let crt = self.issue_for_key(name, &key, subject, ext, issuer, md);
        (key, crt)
    }

    /// A PKCS#10 request `name.csr` for `key` with `subject` (OpenSSL's `/A=v` form), PEM or,
    /// with `der`, DER (what `certutil -C` reads); returns its path.
    pub fn request(&self, name: &str, key: &str, subject: &str, der: bool) -> String {
        let csr = self.p(&format!("{name}.csr"));
        let form = if der { "DER" } else { "PEM" };
        openssl_ok(&[
            "req", "-new", "-key", key, "-subj", subject, "-outform", form, "-out", &csr,
        ]);
        csr
    }

    /// Issues a certificate `name` for an existing `key` (a second certificate for the same
    /// key: a renewal, or a CA certifying a key for someone who does not hold it); returns its
    /// path.
    pub fn issue_for_key(
        &self,
        name: &str,
        key: &str,
        subject: &str,
        ext: &str,
        issuer: &(String, String),
        md: &str,
    ) -> String {
        let (csr, crt) = (
            self.request(name, key, subject, false),
            self.p(&format!("{name}.crt")),
        );
        let extf = self.write(&format!("{name}.ext"), ext);
        openssl_ok(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &issuer.1,
            "-CAkey",
            &issuer.0,
            "-CAcreateserial",
            "-days",
            "30",
            md,
            "-extfile",
            &extf,
            "-out",
            &crt,
        ]);
        crt
    }

    /// The cross-certified mesh of the path-building CPU attack, made with OpenSSL: `k` RSA keys
    /// all named `CN=subject`, each certifying each (k² CA certificates; `[i * k + j]` is key
    /// i certified by key j, `[i * k + i]` self-signed), and a mail certificate for `email`
    /// under key 0. Returns (the CA certificates' paths, the leaf's (key, certificate)).
    pub fn mesh(&self, k: usize, subject: &str, email: &str) -> (Vec<String>, (String, String)) {
        let ca_ext = "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n";
        let ext = self.write("mesh.ext", ca_ext);
        let dn = format!("/CN={subject}");
        let keys: Vec<String> = (0..k)
            .map(|i| self.key(&format!("mesh{i}"), "2048"))
            .collect();
        let own: Vec<String> = keys
            .iter()
            .enumerate()
            .map(|(i, key)| {
                let crt = self.p(&format!("mesh{i}-{i}.crt"));
                self.self_signed(key, &dn, &ext, &crt);
                crt
            })
            .collect();
        let mut cas = Vec::new();
        for i in 0..k {
            for j in 0..k {
                cas.push(if i == j {
                    own[i].clone()
                } else {
                    let issuer = (keys[j].clone(), own[j].clone());
                    self.issue_for_key(
                        &format!("mesh{i}-{j}"),
                        &keys[i],
                        &dn,
                        ca_ext,
                        &issuer,
                        "-sha256",
                    )
                });
            }
        }
        let leaf = self.issue_as(
            "mesh-leaf",
            "/CN=Mesh Leaf",
            "2048",
            &format!("{MAIL_LEAF}subjectAltName=email:{email}\n"),
            &(keys[0].clone(), own[0].clone()),
        );
        (cas, leaf)
    }

    /// A CRL from `ca` (key, cert) listing `revoked` (certificate path, reason code such as
    /// `keyCompromise`), made with `openssl ca`; `dates` optionally sets (lastUpdate,
    /// nextUpdate) as `YYMMDDHHMMSSZ`. Returns the CRL's path (PEM).
    pub fn crl(
        &self,
        name: &str,
        ca: &(String, String),
        revoked: &[(&str, &str)],
        dates: Option<(&str, &str)>,
    ) -> String {
        self.crl_md(name, ca, revoked, dates, "sha256")
    }

    /// Like [`Pki::crl`], signed over the digest `md` (`sha1`, `sha256` …).
    pub fn crl_md(
        &self,
        name: &str,
        ca: &(String, String),
        revoked: &[(&str, &str)],
        dates: Option<(&str, &str)>,
        md: &str,
    ) -> String {
        let (cnf, _) = self.ca_db(name);
        for (crt, reason) in revoked {
            openssl_ok(&[
                "ca",
                "-config",
                &cnf,
                "-keyfile",
                &ca.0,
                "-cert",
                &ca.1,
                "-revoke",
                crt,
                "-crl_reason",
                reason,
            ]);
        }
        let out = self.p(&format!("{name}.crl.pem"));
        let mut args = vec![
            "ca", "-config", &cnf, "-keyfile", &ca.0, "-cert", &ca.1, "-gencrl", "-md", md, "-out",
            &out,
        ];
        if let Some((last, next)) = dates {
            args.extend(["-crl_lastupdate", last, "-crl_nextupdate", next]);
        }
        openssl_ok(&args);
        out
    }

    /// Like [`Pki::issue`] with an explicit validity (`YYYYMMDDHHMMSSZ`), for expired and
    /// not-yet-valid certificates (made with `openssl ca`).
    pub fn issue_dated(
        &self,
        name: &str,
        ext: &str,
        issuer: &(String, String),
        start: &str,
        end: &str,
    ) -> (String, String) {
        let key = self.key(name, "2048");
        let (csr, crt) = (
            self.request(name, &key, &format!("/CN={name}"), false),
            self.p(&format!("{name}.crt")),
        );
        let extf = self.write(&format!("{name}.ext"), ext);
        let db = self.p("dated.db");
        if !std::path::Path::new(&db).exists() {
            std::fs::create_dir_all(format!("{db}/new")).unwrap();
            std::fs::write(format!("{db}/index.txt"), "").unwrap();
            std::fs::write(format!("{db}/serial"), "1000\n").unwrap();
        }
        let cnf = self.write(
            "dated.cnf",
            &format!(
                "[ca]\ndefault_ca=d\n[d]\ndatabase={db}/index.txt\nnew_certs_dir={db}/new\nserial={db}/serial\ndefault_md=sha256\npolicy=p\nunique_subject=no\n[p]\ncommonName=supplied\n"
            ),
        );
        openssl_ok(&[
            "ca",
            "-batch",
            "-config",
            &cnf,
            "-keyfile",
            &issuer.0,
            "-cert",
            &issuer.1,
            "-in",
            &csr,
            "-out",
            &crt,
            "-startdate",
            start,
            "-enddate",
            end,
            "-extfile",
            &extf,
            "-notext",
        ]);
        (key, crt)
    }

    /// An `openssl ca` database for `ca` in which `valid` certificates are listed as valid and
    /// `revoked` ones (path, reason) as revoked, for `openssl ocsp -index`; returns its path.
    pub fn ca_index(
        &self,
        name: &str,
        ca: &(String, String),
        valid: &[&str],
        revoked: &[(&str, &str)],
    ) -> String {
        let (cnf, index) = self.ca_db(name);
        // A fresh list: exactly the entries given here.
        std::fs::write(&index, "").unwrap();
        for crt in valid {
            openssl_ok(&[
                "ca", "-config", &cnf, "-keyfile", &ca.0, "-cert", &ca.1, "-valid", crt,
            ]);
        }
        for (crt, reason) in revoked {
            openssl_ok(&[
                "ca",
                "-config",
                &cnf,
                "-keyfile",
                &ca.0,
                "-cert",
                &ca.1,
                "-revoke",
                crt,
                "-crl_reason",
                reason,
            ]);
        }
        index
    }

    /// The `openssl ca` database and configuration named `name` (created on first use):
    /// returns (configuration, index file).
    fn ca_db(&self, name: &str) -> (String, String) {
        let db = self.p(&format!("{name}.db"));
        std::fs::create_dir_all(&db).unwrap();
        let index = format!("{db}/index.txt");
        if !std::path::Path::new(&index).exists() {
            std::fs::write(&index, "").unwrap();
            std::fs::write(format!("{db}/crlnumber"), "01\n").unwrap();
        }
        let cnf = self.write(
            &format!("{name}.ca.cnf"),
            &format!(
                "[ca]\ndefault_ca=d\n[d]\ndatabase={index}\ncrlnumber={db}/crlnumber\ndefault_md=sha256\ndefault_crl_days=7\nunique_subject=no\n"
            ),
        );
        (cnf, index)
    }
}

/// A fuzz-replay input: `seed` with `edits` applied, each `(position, byte)` replacing, removing,
/// inserting or truncating (chosen by the byte); with `marker`, also inserting that byte (the
/// SMTP harness's "pause here").
pub fn mutate(seed: &[u8], edits: &[(usize, u8)], marker: Option<u8>) -> Vec<u8> {
    let ways = if marker.is_some() { 5 } else { 4 };
    let mut v = seed.to_vec();
    for &(pos, byte) in edits {
        if v.is_empty() {
            break;
        }
        let i = pos % v.len();
        match (byte % ways, marker) {
            (0, _) => v[i] = byte,
            (1, _) => {
                v.remove(i);
            }
            (2, _) => v.insert(i, byte),
            (3, Some(m)) => v.insert(i, m),
            _ => v.truncate(i),
        }
    }
    v
}

/// An NSS database with a CA (`certutil -S -x`) that issues mail certificates.
pub struct NssCa {
    db: String,
    noise: String,
    bc: String,
    serial: std::cell::Cell<u32>,
}

impl NssCa {
    /// A new database in `pki`'s directory with a self-signed CA named `subject`.
    pub fn new(pki: &Pki, subject: &str) -> Self {
        std::fs::create_dir(pki.p("nssdb")).unwrap();
        std::fs::write(pki.p("bc.der"), [0x30, 0x03, 0x01, 0x01, 0xff]).unwrap();
        std::fs::write(pki.p("noise"), [7u8; 64]).unwrap();
        let ca = NssCa {
            db: format!("sql:{}", pki.p("nssdb")),
            noise: pki.p("noise"),
            bc: pki.p("bc.der"),
            serial: std::cell::Cell::new(1),
        };
        ca.run(&["-N", "--empty-password"]);
        let subject = format!("CN={subject}");
        let mut args = vec![
            "-S", "-n", "ca", "-s", &subject, "-x", "-t", "CT,C,C", "-k", "rsa", "-g", "2048",
            "-z", &ca.noise,
        ];
        let ca_args = ca.ca_args(1);
        args.extend(ca_args.iter().map(String::as_str));
        ca.run(&args);
        ca
    }

    /// `certutil -d DB ARGS`; its output.
    pub fn run(&self, args: &[&str]) -> Vec<u8> {
        let o = std::process::Command::new("certutil")
            .args(["-d", &self.db])
            .args(args)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "certutil {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        o.stdout
    }

    /// A leaf `name` for `name@praxis.example`, signed with `hash`, with `extra` options.
    pub fn issue(&self, name: &str, hash: &str, extra: &[&str]) {
        // A subject of its own: NSS gives certificates with the same subject one nickname.
        let subject = format!("CN={name}");
        let mut args = vec![
            "-S",
            "-n",
            name,
            "-s",
            &subject,
            "-c",
            "ca",
            "-t",
            ",,",
            "-k",
            "rsa",
            "-g",
            "2048",
            "-z",
            &self.noise,
        ];
        args.extend(extra);
        self.run_leaf(&args, hash, &format!("{name}@praxis.example"));
    }

    /// `certutil ARGS` with the next serial number and what every mail certificate of this CA
    /// has: one year, signed with `hash`, key usages for mail, `email` as subjectAltName.
    fn run_leaf(&self, args: &[&str], hash: &str, email: &str) -> Vec<u8> {
        self.serial.set(self.serial.get() + 1);
        let (serial, san) = (self.serial.get().to_string(), format!("email:{email}"));
        let mut all = args.to_vec();
        all.extend([
            "-v",
            "12",
            "-m",
            &serial,
            "-Z",
            hash,
            "--keyUsage",
            "digitalSignature,keyEncipherment",
            "--extKeyUsage",
            "emailProtection",
            "--extSAN",
            &san,
        ]);
        self.run(&all)
    }

    /// The certificate `name` (the CA is "ca"), PEM.
    pub fn export(&self, name: &str) -> Vec<u8> {
        self.run(&["-L", "-n", name, "-a"])
    }

    /// A CRL made by `crlutil -G`, signed over `hash` (`SHA1`, `SHA256` …), listing the
    /// certificates with the serial numbers `revoked` (since 2025-12-31), issued 2026-01-01 and
    /// current until 2036 (fixed dates, as [`Pki::crl`]'s callers give); written to `out`
    /// (DER). Without reason codes: crlutil's `addext reasonCode` writes the bare number instead
    /// of an ENUMERATED, which neither OpenSSL nor envelopd can read.
    pub fn crl(&self, revoked: &[u64], hash: &str, out: &str) {
        let mut script = String::from("update=20260101000000Z\nnextupdate=20361231000000Z\n");
        for serial in revoked {
            script += &format!("addcert {serial} 20251231000000Z\n");
        }
        let file = format!("{out}.script");
        std::fs::write(&file, script).unwrap();
        let o = std::process::Command::new("crlutil")
            .args([
                "-G", "-d", &self.db, "-n", "ca", "-c", &file, "-Z", hash, "-o", out,
            ])
            .output()
            .unwrap();
        assert!(
            o.status.success() && std::path::Path::new(out).exists(),
            "crlutil -G: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        // NSS keeps the CRL in its database and refuses a next one with the same dates: the
        // file is what the tests want, so the stored copy goes.
        let o = std::process::Command::new("crlutil")
            .args(["-D", "-d", &self.db, "-n", "ca"])
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "crlutil -D: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }

    /// What every CA certificate made here gets: the serial number, a year's validity, SHA-256,
    /// certificate and CRL signing, basicConstraints cA (critical).
    fn ca_args(&self, serial: u32) -> Vec<String> {
        let bc = format!("2.5.29.19:critical:{}", self.bc);
        let serial = serial.to_string();
        [
            "-m",
            &serial,
            "-v",
            "12",
            "-Z",
            "SHA256",
            "--keyUsage",
            "certSigning,crlSigning",
            "--extGeneric",
            &bc,
        ]
        .map(String::from)
        .to_vec()
    }

    /// A PKCS#10 request (DER, written to `out`) for this database's CA key, with `subject`
    /// (`CN=...`): for another CA to certify that key ([`NssCa::certify_ca`]).
    pub fn ca_request(&self, subject: &str, out: &str) {
        self.run(&[
            "-R",
            "-k",
            "ca",
            "-s",
            subject,
            "-o",
            out,
            "-z",
            &self.noise,
        ]);
    }

    /// Certifies the CA key of the request in `csr` (from [`NssCa::ca_request`]) as a CA
    /// (basicConstraints cA, certificate and CRL signing) with serial number `serial`; returns
    /// the certificate (DER).
    pub fn certify_ca(&self, csr: &str, serial: u32) -> Vec<u8> {
        let out = format!("{csr}.{serial}.der");
        let mut args = vec!["-C", "-c", "ca", "-i", csr, "-o", &out];
        let ca_args = self.ca_args(serial);
        args.extend(ca_args.iter().map(String::as_str));
        self.run(&args);
        std::fs::read(&out).unwrap()
    }

    /// Certifies the PKCS#10 request in `csr` (DER; made with any key, e.g. one that already
    /// has a certificate) as a mail certificate for `email`, with `extra` certutil options;
    /// returns the certificate (DER).
    pub fn certify(&self, csr: &str, email: &str, extra: &[&str]) -> Vec<u8> {
        let mut args = vec!["-C", "-c", "ca", "-i", csr];
        args.extend(extra);
        self.run_leaf(&args, "SHA256", email)
    }
}
