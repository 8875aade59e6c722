//! `envelopd certs list|show|import|remove`: the certificate store as a practice's IT person
//! sees it — every certificate with its addresses, expiry, whether envelopd would encrypt to it
//! (and if not, why), and its revocation status; importing checks a certificate before it is
//! kept, removing takes an address's files out of the recipient directories.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{bail, Context, Result};
use certstore::{CertStore, Purpose, Status};
use serde_json::json;
use smime::cert::fmt_time;
use smime::Cert;

use crate::config::Config;

fn days_left(c: &Cert, now: SystemTime) -> i64 {
    let until = c.validity().1;
    match until.duration_since(now) {
        Ok(d) => (d.as_secs() / 86400) as i64,
        Err(e) => -((e.duration().as_secs() / 86400) as i64) - 1,
    }
}

fn store_of(cfg: &Config) -> Result<CertStore> {
    Ok(store_and_own(cfg)?.0)
}

/// The store, and the practice's own certificates with where their keys are ("a file", or the
/// token's description): a key in a token cannot be copied, one in a file can.
fn store_and_own(cfg: &Config) -> Result<(CertStore, Vec<(Cert, String)>)> {
    let loaded = crate::daemon::load(cfg)?;
    let own = loaded
        .identities
        .iter()
        .map(|i| (i.identity.cert.clone(), i.identity.key.location()))
        .chain(
            loaded
                .decryption_keys
                .iter()
                .map(|k| (k.identity.cert.clone(), k.identity.key.location())),
        )
        .collect();
    Ok((
        crate::revocation::with_local_crls(&cfg.certificates, loaded.store).0,
        own,
    ))
}

fn revocation_text(s: &Status) -> String {
    match s {
        Status::Good => "not revoked".into(),
        Status::Revoked { date, reason } => format!(
            "REVOKED on {}{}",
            fmt_time(*date),
            reason
                .as_ref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        ),
        Status::Unknown(why) => format!("revocation status unknown: {why}"),
    }
}

/// One certificate as listed.
fn describe(store: &CertStore, c: &Cert, now: SystemTime) -> serde_json::Value {
    let addresses = c.mailboxes();
    let encrypt: Vec<serde_json::Value> = addresses
        .iter()
        .map(|a| match store.validate(c, Purpose::Encrypt, a, &[], now) {
            // No mail is ever addressed to "*@…": such a certificate matches nobody.
            Ok(_) if a.contains('*') => json!({"address": a, "usable": false,
                "reason": "a wildcard address: envelopd uses a certificate only for the exact address it names"}),
            Ok(_) => json!({"address": a, "usable": true}),
            Err(e) => json!({"address": a, "usable": false, "reason": e.to_string()}),
        })
        .collect();
    json!({
        "addresses": addresses,
        "subject": c.subject(),
        "issuer": c.issuer(),
        "serial": hex(c.parsed().tbs_certificate().serial_number().as_bytes()),
        "not_before": fmt_time(c.validity().0),
        "not_after": fmt_time(c.validity().1),
        "days_left": days_left(c, now),
        "encrypt": encrypt,
        "revocation": revocation_text(&store.revocation_status(c, &[], now)),
    })
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02X}")).collect()
}

/// `certs list`: every end-entity certificate, optionally only those expiring within `days`.
pub fn list(
    cfg: &Config,
    expiring: Option<u64>,
    now: SystemTime,
) -> Result<(String, serde_json::Value)> {
    let (store, own) = store_and_own(cfg)?;
    let mut certs: Vec<&Cert> = store.certs().iter().collect();
    certs.sort_by_key(|c| c.validity().1);
    let mut items = Vec::new();
    let mut text = String::new();
    for c in certs {
        let d = days_left(c, now);
        if expiring.is_some_and(|n| d > n as i64) {
            continue;
        }
        let mut v = describe(&store, c, now);
        let key = own.iter().find(|(o, _)| o == c).map(|(_, k)| k.clone());
        if let Some(k) = &key {
            v["own_key"] = json!(k);
        }
        let usable = v["encrypt"]
            .as_array()
            .map(|a| a.iter().any(|e| e["usable"] == true))
            .unwrap_or(false);
        let state = if usable {
            "usable".to_string()
        } else {
            v["encrypt"][0]["reason"]
                .as_str()
                .unwrap_or("names no e-mail address")
                .to_string()
        };
        let when = if d < 0 {
            format!("expired {} days ago", -d)
        } else {
            format!("{d} days left")
        };
        text.push_str(&format!(
            "{:<32} until {} ({when}): {state}{}\n",
            c.mailboxes().join(", "),
            &fmt_time(c.validity().1)[..10],
            key.map(|k| format!(" [own key: {k}]")).unwrap_or_default(),
        ));
        items.push(v);
    }
    if items.is_empty() {
        text.push_str(match expiring {
            Some(n) => {
                if n == 1 {
                    "no certificate expires within a day\n"
                } else {
                    "no certificate expires within that many days\n"
                }
            }
            None => "no certificates\n",
        });
    }
    Ok((text, json!({ "certificates": items })))
}

/// `certs show ADDRESS`: every certificate naming the address, in detail.
pub fn show(cfg: &Config, address: &str, now: SystemTime) -> Result<(String, serde_json::Value)> {
    let store = store_of(cfg)?;
    let matching: Vec<&Cert> = store
        .certs()
        .iter()
        .filter(|c| smime::Address::parse(address).is_ok_and(|a| c.names(&a)))
        .collect();
    if matching.is_empty() {
        bail!("no certificate for {address} (envelopd encrypts to nobody at that address)");
    }
    let mut text = String::new();
    let mut items = Vec::new();
    for c in matching {
        let v = describe(&store, c, now);
        text.push_str(&format!(
            "certificate \"{}\"\n  addresses:   {}\n  issuer:      {}\n  serial:      {}\n  valid:       {} to {} ({} days left)\n  revocation:  {}\n",
            c.subject(),
            c.mailboxes().join(", "),
            c.issuer(),
            v["serial"].as_str().unwrap_or(""),
            v["not_before"].as_str().unwrap_or(""),
            v["not_after"].as_str().unwrap_or(""),
            v["days_left"],
            v["revocation"].as_str().unwrap_or(""),
        ));
        for e in v["encrypt"].as_array().into_iter().flatten() {
            text.push_str(&format!(
                "  encrypt to {}: {}\n",
                e["address"].as_str().unwrap_or(""),
                if e["usable"] == true {
                    "yes".to_string()
                } else {
                    format!("no, {}", e["reason"].as_str().unwrap_or(""))
                }
            ));
        }
        let sign = match store.validate(c, Purpose::Sign, address, &[], now) {
            Ok(path) => format!(
                "yes (chain: {})",
                path.iter()
                    .map(Cert::subject)
                    .collect::<Vec<_>>()
                    .join(" <- ")
            ),
            Err(e) => format!("no, {e}"),
        };
        text.push_str(&format!("  signatures from {address} trusted: {sign}\n"));
        items.push(v);
    }
    Ok((text, json!({ "certificates": items })))
}

fn recipients_dir(cfg: &Config) -> Result<&Path> {
    cfg.certificates
        .recipients
        .as_deref()
        .context("the configuration has no [certificates] recipients directory")
}

fn pem(c: &Cert) -> String {
    der::pem::encode_string("CERTIFICATE", der::pem::LineEnding::LF, c.der())
        .expect("a certificate encodes as PEM")
}

/// A file name from an address or subject: letters, digits and `@._-` only.
fn file_name(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "@._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// `certs import FILE`: keeps the end-entity certificates in FILE that envelopd can encrypt to
/// (and the CA certificates their chains need) in the recipients directory; refuses, with the
/// reasons, when none is usable.
pub fn import(cfg: &Config, file: &Path, now: SystemTime) -> Result<String> {
    let dir = recipients_dir(cfg)?.to_path_buf();
    let data = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let certs = smime::parse_certificates(&data)
        .map_err(|e| anyhow::anyhow!("{}: no certificate in it: {e}", file.display()))?;
    let store = store_of(cfg)?;
    let (cas, leaves): (Vec<Cert>, Vec<Cert>) =
        certs.into_iter().partition(|c| c.ca_problem().is_none());
    if leaves.is_empty() {
        bail!(
            "{} holds only CA certificates; add CAs you trust to the trust anchors instead",
            file.display()
        );
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut report = String::new();
    let mut problems = Vec::new();
    let mut kept = 0;
    for leaf in &leaves {
        let mut usable = None;
        for a in leaf.mailboxes() {
            match store.validate(leaf, Purpose::Encrypt, &a, &cas, now) {
                Ok(path) => {
                    usable = Some((a, path));
                    break;
                }
                Err(e) => problems.push(format!("{a}: {e}")),
            }
        }
        let Some((address, path)) = usable else {
            if leaf.mailboxes().is_empty() {
                problems.push(format!("\"{}\" names no e-mail address", leaf.subject()));
            }
            continue;
        };
        let mut target = dir.join(format!("{}.pem", file_name(&address)));
        if target.exists() && std::fs::read(&target).ok().as_deref() != Some(pem(leaf).as_bytes()) {
            let serial = hex(leaf.parsed().tbs_certificate().serial_number().as_bytes());
            target = dir.join(format!(
                "{}-{}.pem",
                file_name(&address),
                &serial[..serial.len().min(16)]
            ));
        }
        write_new(&target, &pem(leaf))?;
        kept += 1;
        report.push_str(&format!(
            "imported {address}: \"{}\", valid until {}, kept as {}\n",
            leaf.subject(),
            &fmt_time(leaf.validity().1)[..10],
            target.display()
        ));
        // The intermediates the path needed and the store does not have yet.
        for ca in path.iter().skip(1) {
            if cas.contains(ca)
                && !store.intermediates().contains(ca)
                && !store.anchors().contains(ca)
            {
                let t = dir.join(format!("ca-{}.pem", file_name(&ca.subject())));
                write_new(&t, &pem(ca))?;
                report.push_str(&format!(
                    "imported CA \"{}\" as {}\n",
                    ca.subject(),
                    t.display()
                ));
            }
        }
    }
    if kept == 0 {
        bail!(
            "nothing imported from {}: {}",
            file.display(),
            problems.join("; ")
        );
    }
    for p in problems {
        report.push_str(&format!("not imported: {p}\n"));
    }
    report.push_str("envelopd reads the recipients directory at start: restart it to use them\n");
    Ok(report)
}

fn write_new(path: &PathBuf, text: &str) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

/// `certs remove ADDRESS`: deletes the files in the recipient and harvested directories whose
/// certificates are for the address (a file that also holds other people's certificates is left
/// alone and named).
pub fn remove(cfg: &Config, address: &str) -> Result<String> {
    let mut report = String::new();
    let dirs: Vec<&Path> = [
        cfg.certificates.recipients.as_deref(),
        cfg.certificates.harvested.as_deref(),
    ]
    .into_iter()
    .flatten()
    .collect();
    let mut removed = 0;
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        let mut files: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        files.sort();
        for f in files.into_iter().filter(|f| f.is_file()) {
            let Ok(certs) = std::fs::read(&f).map(|d| smime::parse_certificates(&d)) else {
                continue;
            };
            let Ok(certs) = certs else { continue };
            let leaves: Vec<&Cert> = certs.iter().filter(|c| c.ca_problem().is_some()).collect();
            let for_address = |c: &&Cert| smime::Address::parse(address).is_ok_and(|a| c.names(&a));
            if !leaves.iter().any(for_address) {
                continue;
            }
            if leaves.iter().all(for_address) {
                std::fs::remove_file(&f).with_context(|| format!("removing {}", f.display()))?;
                removed += 1;
                report.push_str(&format!("removed {}\n", f.display()));
            } else {
                report.push_str(&format!(
                    "left {}: it also holds certificates for other addresses\n",
                    f.display()
                ));
            }
        }
    }
    if cfg
        .identities
        .iter()
        .any(|i| i.addresses.iter().any(|a| smime::same_mailbox(a, address)))
    {
        report.push_str(&format!(
            "{address} is one of the practice's own identities: its certificate comes from the [[identity]] in the configuration and stays\n"
        ));
    }
    if removed == 0 && !report.contains("left ") {
        bail!("no certificate file for {address} in the recipient or harvested directories");
    }
    report.push_str("restart envelopd for the change to take effect\n");
    Ok(report)
}
