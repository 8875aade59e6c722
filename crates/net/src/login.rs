//! Who a session logged in as, read the same way by every protocol side: the name decides which
//! keys a session may sign and decrypt with, and which cached messages it sees.

/// The login name in a SASL response (raw bytes, base64 already removed): for PLAIN the authorization identity when one
/// is given (the user the session then acts as, e.g. a master user's target), else the
/// authentication identity; LOGIN's user name; the user of XOAUTH2 (`user=…\x01auth=…`) and
/// OAUTHBEARER (RFC 7628: `n,a=…,\x01…`), so that mail programs logging in with OAuth still
/// get the keys their login is entitled to. Lower-cased; the secret part is never copied.
pub fn sasl_name(mechanism: &str, raw: &[u8]) -> Option<String> {
    let field = |prefix: &[u8], sep: u8| -> Option<Vec<u8>> {
        raw.split(|&b| b == sep)
            .find_map(|f| f.strip_prefix(prefix))
            .map(<[u8]>::to_vec)
    };
    let name = match mechanism {
        "XOAUTH2" => field(b"user=", 0x01)?,
        "OAUTHBEARER" => {
            let gs2 = raw.split(|&b| b == 0x01).next()?;
            gs2.split(|&b| b == b',')
                .find_map(|f| f.strip_prefix(b"a="))?
                .to_vec()
        }
        "PLAIN" => {
            let mut parts = raw.split(|&b| b == 0);
            let authz = parts.next()?;
            let authc = parts.next()?;
            if authz.is_empty() { authc } else { authz }.to_vec()
        }
        "LOGIN" => raw.to_vec(),
        _ => return None,
    };
    let name = String::from_utf8(name).ok()?.to_ascii_lowercase();
    (!name.is_empty()).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_names_from_every_mechanism_envelopd_reads() {
        // With an authorization identity the session acts as that user.
        assert_eq!(
            sasl_name("PLAIN", b"chef@x\0master\0secret").as_deref(),
            Some("chef@x")
        );
        assert_eq!(
            sasl_name("PLAIN", b"\0Alice\0secret").as_deref(),
            Some("alice")
        );
        assert_eq!(sasl_name("LOGIN", b"Bob").as_deref(), Some("bob"));
        assert_eq!(sasl_name("CRAM-MD5", b"x"), None);
        assert_eq!(
            sasl_name(
                "XOAUTH2",
                b"user=Bob@Praxis.example\x01auth=Bearer abc\x01\x01"
            )
            .as_deref(),
            Some("bob@praxis.example")
        );
        assert_eq!(
            sasl_name(
                "OAUTHBEARER",
                b"n,a=bob@praxis.example,\x01host=x\x01auth=Bearer abc\x01\x01"
            )
            .as_deref(),
            Some("bob@praxis.example")
        );
        assert_eq!(
            sasl_name("OAUTHBEARER", b"n,,\x01auth=Bearer abc\x01\x01"),
            None
        );
    }
}
