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

/// `envelopd keys generate`: a key pair made inside a token (it can never be read out) and a
/// PKCS#10 certificate request for the practice's CA, signed by the new key, naming the
/// addresses (subjectAltName), mail signing and encryption usages, and e-mail protection.
/// Returns the request (PEM) and the `[[identity]]` lines to add once the certificate is back.
pub fn generate_in_token(
    uri: &str,
    module: Option<&Path>,
    pin_file: Option<&Path>,
    kind: certstore::token::NewKey,
    addresses: &[String],
    name: Option<&str>,
) -> Result<(String, String)> {
    if addresses.is_empty() {
        bail!("give the address(es) the key is for: --address praxis@example.org");
    }
    let pin = match pin_file {
        Some(p) => Some(certstore::token::read_pin_file(p).map_err(|e| anyhow::anyhow!(e))?),
        None => None,
    };
    let opened =
        certstore::token::generate(uri, module, pin, kind).map_err(|e| anyhow::anyhow!(e))?;
    let key = opened.key.clone();
    let (sensitive, extractable, _) =
        certstore::token::protection(&key).map_err(|e| anyhow::anyhow!("{e}"))?;
    if !sensitive || extractable {
        bail!("the token made the key readable (sensitive={sensitive}, extractable={extractable}): do not use it");
    }
    let kind = smime::ExternalKey::kind(&*key);
    let public = smime::ExternalKey::public_key(&*key);
    let private = smime::PrivateKey::external(key);
    let pem = csr(
        &private,
        &kind,
        &public,
        addresses,
        name.unwrap_or(&addresses[0]),
    )?;
    let mut lines = format!(
        "[[identity]]\naddresses = [{}]\nkey = \"{}\"\ncert = \"keys/<the certificate your CA issues>.pem\"\n",
        addresses
            .iter()
            .map(|a| format!("\"{a}\""))
            .collect::<Vec<_>>()
            .join(", "),
        uri.split('?').next().unwrap_or(uri)
    );
    if let Some(m) = module {
        lines.push_str(&format!("module = \"{}\"\n", m.display()));
    }
    if let Some(p) = pin_file {
        lines.push_str(&format!("pin_file = \"{}\"\n", p.display()));
    }
    Ok((pem, lines))
}

/// A PKCS#10 request for a key envelopd can sign with (in a token), as PEM.
fn csr(
    key: &smime::PrivateKey,
    kind: &smime::ExternalKind,
    public: &[u8],
    addresses: &[String],
    name: &str,
) -> Result<String> {
    use der::asn1::{BitString, Ia5String, OctetString, SetOfVec};
    use der::oid::AssociatedOid;
    use der::{Encode, EncodePem};
    use x509_cert::ext::pkix::name::GeneralName;
    use x509_cert::ext::pkix::{ExtendedKeyUsage, KeyUsage, KeyUsages, SubjectAltName};
    use x509_cert::request::{CertReq, CertReqInfo, ExtensionReq, Version};

    let (algorithm, usages, digest) = match kind {
        smime::ExternalKind::Rsa(_) => (
            spki::AlgorithmIdentifierOwned {
                oid: smime::alg::RSA_ENCRYPTION,
                parameters: Some(der::asn1::Null.into()),
            },
            KeyUsages::DigitalSignature | KeyUsages::NonRepudiation | KeyUsages::KeyEncipherment,
            smime::Digest::Sha256,
        ),
        smime::ExternalKind::Ec(curve) => (
            spki::AlgorithmIdentifierOwned {
                oid: smime::alg::ID_EC_PUBLIC_KEY,
                parameters: Some(der::Any::encode_from(curve)?),
            },
            KeyUsages::DigitalSignature | KeyUsages::NonRepudiation | KeyUsages::KeyAgreement,
            if *curve == smime::alg::SECP384R1 {
                smime::Digest::Sha384
            } else {
                smime::Digest::Sha256
            },
        ),
    };
    if public.is_empty() {
        bail!("the token does not show the new key's public part");
    }
    let san = SubjectAltName(
        addresses
            .iter()
            .map(|a| Ia5String::new(a).map(GeneralName::Rfc822Name))
            .collect::<der::Result<Vec<_>>>()
            .context("an address is not ASCII (an internationalised address needs a CA that issues SmtpUTF8Mailbox)")?,
    );
    let ext = |oid, critical, value: Vec<u8>| -> Result<x509_cert::ext::Extension> {
        Ok(x509_cert::ext::Extension {
            extn_id: oid,
            critical,
            extn_value: OctetString::new(value)?,
        })
    };
    let extensions = ExtensionReq(vec![
        ext(SubjectAltName::OID, false, san.to_der()?)?,
        ext(KeyUsage::OID, true, KeyUsage(usages).to_der()?)?,
        ext(
            ExtendedKeyUsage::OID,
            false,
            ExtendedKeyUsage(vec![der::oid::ObjectIdentifier::new_unwrap(
                "1.3.6.1.5.5.7.3.4",
            )])
            .to_der()?,
        )?,
    ]);
    let mut attributes = SetOfVec::new();
    attributes.insert(x509_cert::attr::Attribute::try_from(extensions)?)?;
    let subject: x509_cert::name::Name = format!("CN={}", name.replace([',', '+', '=', '\\'], " "))
        .parse()
        .context("the name for the request")?;
    let info = CertReqInfo {
        version: Version::V1,
        subject,
        public_key: spki::SubjectPublicKeyInfoOwned {
            algorithm,
            subject_public_key: BitString::from_bytes(public)?,
        },
        attributes,
    };
    let (sig_alg, signature) = key.sign(&info.to_der()?, digest, smime::RsaPadding::Pkcs1v15)?;
    let req = CertReq {
        info,
        algorithm: sig_alg,
        signature: BitString::from_bytes(&signature)?,
    };
    Ok(req.to_pem(der::pem::LineEnding::LF)?)
}

/// `envelopd keys import FILE.p12 --to-token URI`: moves every key of a PKCS#12 file (and its
/// certificate) into a token, marked sensitive and not extractable, the signing key under the
/// URI's label and a separate encryption key under `<label>-enc`; writes the certificates beside
/// the configuration (`keys/`), and tells the user to destroy the file, which still holds the
/// keys. Returns the report with the `[[identity]]` lines.
pub fn import_to_token(
    config_path: &Path,
    file: &Path,
    password_file: Option<&Path>,
    addresses: &[String],
    uri: &str,
    module: Option<&Path>,
    pin_file: Option<&Path>,
) -> Result<String> {
    let data =
        Zeroizing::new(std::fs::read(file).with_context(|| format!("reading {}", file.display()))?);
    let pw = password(password_file)?;
    let keys = smime::keys::pkcs12_keys(&data, &pw).map_err(|e| {
        anyhow::anyhow!(
            "{}: cannot open it (wrong password, or not a PKCS#12 file): {e}",
            file.display()
        )
    })?;
    let parsed = certstore::token::Pkcs11Uri::parse(uri).map_err(|e| anyhow::anyhow!(e))?;
    let label = parsed
        .object
        .clone()
        .context("name the key with object=<label> in the URI")?;
    let pin = match pin_file {
        Some(p) => Some(certstore::token::read_pin_file(p).map_err(|e| anyhow::anyhow!(e))?),
        None => None,
    };
    let addresses: Vec<String> = if addresses.is_empty() {
        keys[0].1.mailboxes()
    } else {
        addresses.to_vec()
    };
    if addresses.is_empty() {
        bail!(
            "the certificate names no e-mail address; give the practice's address with --address"
        );
    }
    let dir = config_path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .join("keys");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    let base = uri.split('?').next().unwrap_or(uri).to_string();
    let mut report = String::new();
    let mut lines = format!(
        "[[identity]]\naddresses = [{}]\n",
        addresses
            .iter()
            .map(|a| format!("\"{a}\""))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for (i, (der, cert)) in keys.iter().enumerate() {
        let this_label = match i {
            0 => label.clone(),
            1 => format!("{label}-enc"),
            n => format!("{label}-{n}"),
        };
        let this_uri = uri.replacen(
            &format!("object={label}"),
            &format!("object={this_label}"),
            1,
        );
        let this_base = base.replacen(
            &format!("object={label}"),
            &format!("object={this_label}"),
            1,
        );
        let id = cert.sha256()[..8].to_vec();
        let opened = certstore::token::import(&this_uri, module, pin.clone(), der, cert, &id)
            .map_err(|e| anyhow::anyhow!(e))?;
        let (sensitive, extractable, _) =
            certstore::token::protection(&opened.key).map_err(|e| anyhow::anyhow!("{e}"))?;
        if !sensitive || extractable {
            bail!("the token keeps the key readable (sensitive={sensitive}, extractable={extractable})");
        }
        let cert_file = dir.join(format!("{this_label}.pem"));
        std::fs::write(&cert_file, pem_cert(cert.der()))
            .with_context(|| format!("writing {}", cert_file.display()))?;
        report.push_str(&format!(
            "moved the {} key of \"{}\" into the token as \"{this_label}\" (sensitive, not extractable); certificate in {}\n",
            if i == 0 { "signing" } else { "encryption" },
            cert.subject(),
            cert_file.display()
        ));
        if i == 0 {
            lines.push_str(&format!(
                "key = \"{this_base}\"\ncert = \"keys/{this_label}.pem\"\n"
            ));
        } else if i == 1 {
            lines.push_str(&format!(
                "encryption_key = \"{this_base}\"\nencryption_cert = \"keys/{this_label}.pem\"\n"
            ));
        }
    }
    if let Some(m) = module {
        lines.push_str(&format!("module = \"{}\"\n", m.display()));
    }
    if let Some(p) = pin_file {
        lines.push_str(&format!("pin_file = \"{}\"\n", p.display()));
    }
    report.push_str(&format!(
        "\nThe file {} still holds the private key(s): anyone with it and its password can sign and read as the practice.\n\
         Destroy it now (shred -u {}) and every copy (downloads, mail attachments, backups).\n\
         \nAdd to {}:\n\n{lines}",
        file.display(),
        file.display(),
        config_path.display()
    ));
    Ok(report)
}

fn pem_cert(der: &[u8]) -> String {
    let b64 = smime::mime::base64_lines(der);
    format!(
        "-----BEGIN CERTIFICATE-----\n{}-----END CERTIFICATE-----\n",
        String::from_utf8_lossy(&b64).replace("\r\n", "\n")
    )
}
