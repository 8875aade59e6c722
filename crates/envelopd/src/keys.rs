//! `envelopd keys import FILE.p12`: puts a practice's key where the daemon reads it — a copy of
//! the PKCS#12 file and its password, both mode 0600 in a `keys` directory (mode 0700) beside the
//! configuration — after checking the password and the certificate, and prints the
//! `[[identity]]` section to add. Keys never leave: there is no export.

use std::io::{BufRead, IsTerminal, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{bail, Context, Result};
use certstore::Purpose;
use zeroize::Zeroizing;

use crate::config::Config;

/// Reads the password: from a file, else asked on the terminal (no echo), else the first line
/// of standard input (for scripts).
fn password(file: Option<&Path>) -> Result<Zeroizing<String>> {
    if let Some(f) = file {
        // The source may lie anywhere (a download folder): read it whatever its mode; the copy
        // envelopd keeps is private.
        let raw = crate::keyfiles::read_secret_file(f, true)?;
        let text = std::str::from_utf8(&raw).context("the password file is not UTF-8")?;
        return Ok(Zeroizing::new(
            text.lines().next().unwrap_or("").to_string(),
        ));
    }
    if std::io::stdin().is_terminal() {
        return Ok(Zeroizing::new(
            rpassword::prompt_password("PKCS#12 password: ").context("reading the password")?,
        ));
    }
    let mut line = Zeroizing::new(String::new());
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading the password from standard input")?;
    Ok(Zeroizing::new(
        line.trim_end_matches(['\r', '\n']).to_string(),
    ))
}

fn write_private(path: &Path, data: &[u8]) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| {
            format!(
                "{} already exists (remove it first if you mean to replace that key)",
                path.display()
            )
        })?;
    f.write_all(data)
        .and_then(|_| f.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

/// Imports a PKCS#12 file; returns the report with the `[[identity]]` section.
pub fn import(
    config_path: &Path,
    cfg: &Config,
    file: &Path,
    password_file: Option<&Path>,
    addresses: &[String],
    now: SystemTime,
) -> Result<String> {
    let data =
        Zeroizing::new(std::fs::read(file).with_context(|| format!("reading {}", file.display()))?);
    let pw = password(password_file)?;
    let signing = smime::Identity::from_pkcs12(&data, &pw).map_err(|e| {
        anyhow::anyhow!(
            "{}: cannot open it (wrong password, or not a PKCS#12 file): {e}",
            file.display()
        )
    })?;
    let addresses: Vec<String> = if addresses.is_empty() {
        signing.cert.mailboxes()
    } else {
        addresses.to_vec()
    };
    if addresses.is_empty() {
        bail!(
            "the certificate names no e-mail address; give the practice's address with --address"
        );
    }
    let mut report = String::new();
    let store = crate::daemon::load(cfg)?.store;
    for a in &addresses {
        match store.validate(&signing.cert, Purpose::Sign, a, &signing.chain, now) {
            Ok(_) => report.push_str(&format!(
                "{a}: certificate \"{}\" valid until {}: mail from it will be signed\n",
                signing.cert.subject(),
                &smime::cert::fmt_time(signing.cert.validity().1)[..10]
            )),
            Err(e) => report.push_str(&format!(
                "warning: {a}: {e}; envelopd will not sign with this key until that is fixed\n"
            )),
        }
    }
    let dir = config_path
        .parent()
        .map(|p| {
            if p.as_os_str().is_empty() {
                Path::new(".")
            } else {
                p
            }
        })
        .unwrap_or(Path::new("."))
        .join("keys");
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .mode(0o700)
            .recursive(true)
            .create(&dir)
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    let stem: String = addresses[0]
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "@._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let (p12, pass): (PathBuf, PathBuf) = (
        dir.join(format!("{stem}.p12")),
        dir.join(format!("{stem}.pass")),
    );
    write_private(&p12, &data)?;
    let mut line = Zeroizing::new(pw.as_bytes().to_vec());
    line.push(b'\n');
    if let Err(e) = write_private(&pass, &line) {
        let _ = std::fs::remove_file(&p12);
        return Err(e);
    }
    report.push_str(&format!(
        "kept {} and its password in {} (mode 0600); delete the original file once you have a backup\n\
         add to {}:\n\n[[identity]]\naddresses = [{}]\npkcs12 = \"{}\"\npassword_file = \"{}\"\n",
        file.display(),
        dir.display(),
        config_path.display(),
        addresses
            .iter()
            .map(|a| format!("\"{a}\""))
            .collect::<Vec<_>>()
            .join(", "),
        p12.display(),
        pass.display()
    ));
    Ok(report)
}
