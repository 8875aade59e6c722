//! NIST PKITS through `envelopd smime verify` gives, message by message, the same result as the
//! certificate store judging the same message in process (the certstore PKITS test's way):
//! there is one validator, so the command line cannot disagree with it. PKITS certificates name
//! no mail address (only the name-constraint tests do), so the path result (`signers[].path`) is
//! what is compared; a message is `valid` only where its path is.

use std::path::PathBuf;
use std::process::Command;
use std::time::SystemTime;

use certstore::{CertStore, RevocationMode};

/// The certificate store's judgement in process: the signature by the S/MIME core, the path
/// and revocation (CRLs the message carries, mode `require`) by the store.
fn in_process(ta: &smime::Cert, message: &[u8]) -> String {
    let v = match smime::verify(message) {
        Ok(v) => v,
        Err(e) => return format!("unreadable: {e}"),
    };
    let mut store = CertStore::new();
    store.add_anchor(ta.clone());
    store.set_revocation_mode(RevocationMode::Require);
    for (i, crl) in v.crls.iter().enumerate() {
        let _ = store.add_crl_with(crl, &format!("crl {i} in the message"), &v.certificates);
    }
    if v.signers.is_empty() {
        return "no signer".into();
    }
    for s in &v.signers {
        if let Some(p) = &s.problem {
            return p.clone();
        }
        let Some(cert) = &s.cert else {
            return "no certificate".into();
        };
        if let Err(e) = store.validate_chain(cert, &v.certificates, SystemTime::now()) {
            return e.to_string();
        }
    }
    "ok".into()
}

/// What `envelopd smime verify` says about the same message.
fn through_cli(ta: &str, file: &PathBuf) -> (String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_envelopd"))
        .args([
            "smime",
            "verify",
            "--ca",
            ta,
            "--revocation",
            "require",
            "--in",
        ])
        .arg(file)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    let Some(json) = err.lines().find(|l| l.starts_with('{')) else {
        return ("error".into(), String::new());
    };
    let status: serde_json::Value = serde_json::from_str(json).unwrap();
    let signature = status["signature"].as_str().unwrap_or_default().to_string();
    let signers = status["signers"].as_array().unwrap();
    // A signature that cannot be read: `invalid` with the reason and no signers.
    if let (true, "invalid", Some(why)) = (
        signers.is_empty(),
        signature.as_str(),
        status["reason"].as_str(),
    ) {
        return (format!("unreadable: {why}"), signature);
    }
    if signers.is_empty() {
        return ("no signer".into(), signature);
    }
    for s in signers {
        if s["signature_ok"] != true {
            return (
                s["problem"].as_str().unwrap_or("bad").to_string(),
                signature,
            );
        }
        match s["path"].as_str() {
            Some("ok") => {}
            Some(p) => return (p.to_string(), signature),
            None => return ("no certificate".into(), signature),
        }
    }
    ("ok".into(), signature)
}

#[test]
fn smime_verify_agrees_with_the_certificate_store_on_every_pkits_message() {
    let dir = testkit::pkits_dir();
    let ta_path = dir.join("certs/TrustAnchorRootCertificate.crt");
    let ta = smime::parse_certificates(&std::fs::read(&ta_path).unwrap())
        .unwrap()
        .remove(0);
    // The command line takes PEM or DER alike.
    let ta_arg = ta_path.to_str().unwrap();
    let files = testkit::pkits_messages(&dir);
    assert!(files.len() > 100, "PKITS has its S/MIME messages");
    let (mut same, mut valid_paths, mut valid_verdicts, mut constraint_cases) = (0, 0, 0, 0);
    for f in &files {
        let message = std::fs::read(f).unwrap();
        let mine = in_process(&ta, &message);
        let (cli, signature) = through_cli(ta_arg, f);
        assert_eq!(cli, mine, "{}", f.display());
        // The full verdict never calls a message valid whose path is not.
        if signature == "valid" {
            assert_eq!(cli, "ok", "{}", f.display());
            valid_verdicts += 1;
        }
        // The rfc822Name name-constraint violations (4.13.22/24/26/28/29), which the second
        // validator `smime verify` used to have accepted.
        let name = f.file_name().unwrap().to_string_lossy();
        if name.starts_with("SignedInvalid") && name.contains("RFC822") {
            assert_ne!(signature, "valid", "{name}");
            assert_ne!(cli, "ok", "{name}");
            constraint_cases += 1;
        }
        same += 1;
        valid_paths += usize::from(mine == "ok");
    }
    assert!(
        constraint_cases >= 5,
        "the rfc822Name constraint tests are there"
    );
    println!(
        "PKITS through `smime verify`: {same} of {} messages judged as the certificate store does ({valid_paths} with a valid path, {valid_verdicts} valid for their From address, {constraint_cases} rfc822Name constraint violations refused)",
        files.len()
    );
}
