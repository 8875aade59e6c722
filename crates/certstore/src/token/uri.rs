//! PKCS#11 URIs (RFC 7512) as p11-kit, OpenSSL and GnuTLS write them, and the PIN files they
//! point to.

use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

/// A PKCS#11 URI (RFC 7512), the parts envelopd uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pkcs11Uri {
    /// `token=`: the token's label.
    pub token: Option<String>,
    /// `serial=`: the token's serial number.
    pub serial: Option<String>,
    /// `object=`: the key's label.
    pub object: Option<String>,
    /// `id=`: the key's CKA_ID.
    pub id: Option<Vec<u8>>,
    /// `type=`: `private`, `cert` …
    pub kind: Option<String>,
    /// `?module-path=`: the PKCS#11 module to load.
    pub module_path: Option<PathBuf>,
    /// `?pin-source=`: where the PIN is (`file:/path` or a path).
    pub pin_source: Option<String>,
    /// `?pin-value=`: the PIN itself (discouraged: it then sits in the configuration).
    pub pin_value: Option<Zeroizing<String>>,
}

impl Pkcs11Uri {
    /// Reads a `pkcs11:` URI; unknown attributes are errors (a typo must not match another key).
    pub fn parse(uri: &str) -> Result<Self, String> {
        let rest = uri
            .strip_prefix("pkcs11:")
            .ok_or_else(|| format!("not a PKCS#11 URI (they start with \"pkcs11:\"): {uri}"))?;
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let mut u = Pkcs11Uri::default();
        for attr in path.split(';').filter(|a| !a.is_empty()) {
            let (name, value) = attr
                .split_once('=')
                .ok_or_else(|| format!("PKCS#11 URI attribute without a value: {attr}"))?;
            let raw = pct_decode(value)?;
            let text =
                || String::from_utf8(raw.clone()).map_err(|_| format!("{name} is not UTF-8"));
            match name {
                "token" => u.token = Some(text()?),
                "serial" => u.serial = Some(text()?),
                "object" => u.object = Some(text()?),
                "id" => u.id = Some(raw),
                "type" => u.kind = Some(text()?),
                "manufacturer"
                | "model"
                | "library-manufacturer"
                | "library-description"
                | "library-version"
                | "slot-description"
                | "slot-manufacturer"
                | "slot-id" => {}
                other => return Err(format!("unknown PKCS#11 URI attribute \"{other}\"")),
            }
        }
        for attr in query.split('&').filter(|a| !a.is_empty()) {
            let (name, value) = attr
                .split_once('=')
                .ok_or_else(|| format!("PKCS#11 URI attribute without a value: {attr}"))?;
            let raw = pct_decode(value)?;
            let text = String::from_utf8(raw).map_err(|_| format!("{name} is not UTF-8"))?;
            match name {
                "module-path" => u.module_path = Some(PathBuf::from(text)),
                "pin-source" => u.pin_source = Some(text),
                "pin-value" => u.pin_value = Some(Zeroizing::new(text)),
                "module-name" => {
                    return Err(
                        "module-name is not supported: give module-path (the module's file)".into(),
                    )
                }
                other => return Err(format!("unknown PKCS#11 URI query attribute \"{other}\"")),
            }
        }
        if u.kind.as_deref().is_some_and(|k| k != "private") {
            return Err(format!(
                "the URI names a {} object; envelopd needs the private key (type=private)",
                u.kind.as_deref().unwrap_or("")
            ));
        }
        if u.object.is_none() && u.id.is_none() {
            return Err("the URI must name the key: object=<label> or id=<hex as %xx>".into());
        }
        Ok(u)
    }

    /// The PIN the URI points to (`pin-source=file:/path` or a path; `pin-value=`).
    pub fn pin(&self) -> Result<Option<Zeroizing<String>>, String> {
        if let Some(v) = &self.pin_value {
            return Ok(Some(v.clone()));
        }
        let Some(src) = &self.pin_source else {
            return Ok(None);
        };
        let path = src.strip_prefix("file:").unwrap_or(src);
        read_pin_file(Path::new(path)).map(Some)
    }
}

/// Reads a PIN file (its first line), refusing one that others may read.
pub fn read_pin_file(path: &Path) -> Result<Zeroizing<String>, String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|e| format!("PIN file {}: {e}", path.display()))?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(format!(
            "PIN file {} may be read by others (mode {:o}): chmod 600 it",
            path.display(),
            meta.permissions().mode() & 0o777
        ));
    }
    let text = Zeroizing::new(
        std::fs::read_to_string(path).map_err(|e| format!("PIN file {}: {e}", path.display()))?,
    );
    Ok(Zeroizing::new(
        text.lines()
            .next()
            .unwrap_or("")
            .trim_end_matches('\r')
            .to_string(),
    ))
}

fn pct_decode(s: &str) -> Result<Vec<u8>, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("bad %-escape in PKCS#11 URI value {s:?}"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_as_p11_kit_openssl_and_gnutls_write_them() {
        let u = Pkcs11Uri::parse(
            "pkcs11:token=Praxis%20Dr.%20M;object=praxis-2026;id=%01%a2;type=private?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/pin",
        )
        .unwrap();
        assert_eq!(u.token.as_deref(), Some("Praxis Dr. M"));
        assert_eq!(u.object.as_deref(), Some("praxis-2026"));
        assert_eq!(u.id.as_deref(), Some(&[0x01, 0xa2][..]));
        assert_eq!(
            u.module_path.as_deref(),
            Some(Path::new("/usr/lib/softhsm/libsofthsm2.so"))
        );
        assert_eq!(u.pin_source.as_deref(), Some("file:/etc/pin"));
        for (bad, why) in [
            ("token=x;object=y", "not a PKCS#11 URI"),
            ("pkcs11:token=x", "must name the key"),
            ("pkcs11:object=y;type=cert", "needs the private key"),
            (
                "pkcs11:object=y;colour=red",
                "unknown PKCS#11 URI attribute",
            ),
            ("pkcs11:object=%zz", "bad %-escape"),
            (
                "pkcs11:object=y?module-name=softhsm2",
                "module-name is not supported",
            ),
        ] {
            let err = Pkcs11Uri::parse(bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn a_pin_file_others_can_read_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("pin");
        std::fs::write(&p, "1234\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(read_pin_file(&p).unwrap_err().contains("chmod 600"));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_pin_file(&p).unwrap().as_str(), "1234");
    }
}
