//! Drafts and Sent copies a mail program stores through envelopd's IMAP side (Thunderbird saves
//! a draft with `APPEND Drafts (\Draft)`; Outlook's Sent folder is "Sent Items", German clients'
//! "Entwürfe" is `Entw&APw-rfe` in modified UTF-7) are stored encrypted to the practice's own
//! certificate, on real Dovecot's disk as ciphertext, and read back through envelopd as plain
//! text; a folder not meant for it keeps the message as it was given.

mod common;

use common::provider::Provider;
use testkit::procs::{free_port, wait_for};

#[test]
fn drafts_and_sent_copies_are_stored_encrypted_and_read_back_plain() {
    let provider = Provider::start();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    common::practice_dir(d, "bob", &[]);
    let (smtp, imap) = (free_port(), free_port());
    std::fs::write(
        d.join("proxy.toml"),
        format!(
            "{}[certificates]\nanchors = [\"trust\"]\nrecipients = \"certs\"\n\
             [[identity]]\naddresses = [\"bob@smime.example\"]\npkcs12 = \"keys/bob.p12\"\npassword_file = \"keys/pw\"\n",
            common::reading_sections(&provider, smtp, imap)
        ),
    )
    .unwrap();
    let _p = common::run_envelopd(&d.join("proxy.toml"), &d.join("envelopd.log"));
    wait_for(imap);
    let draft = |n: &str| {
        format!("From: bob@smime.example\r\nTo: alice@smime.example\r\nSubject: Entwurf {n}\r\n\r\nBefundentwurf {n}: bitte pruefen\r\n")
    };
    // The last two get their name as a literal (`APPEND {4}` CRLF `Sent ...`), as some
    // programs send it: the folder still decides.
    let folders = [
        "Drafts",
        "Entw&APw-rfe",
        "Sent Items",
        "Notizen",
        "Gesendet",
        "Ablage",
    ];
    let literal = |f: &str| matches!(f, "Gesendet" | "Ablage");
    let mut steps = vec![serde_json::json!(["login", "bob@smime.example", "bob-pw"])];
    for (i, f) in folders.iter().enumerate() {
        steps.push(serde_json::json!(["create", f]));
        steps.push(serde_json::json!([
            if literal(f) {
                "append-literal"
            } else {
                "append"
            },
            f,
            "(\\Draft \\Seen)",
            draft(&i.to_string())
        ]));
    }
    for f in folders {
        steps.push(serde_json::json!(["select", f]));
        steps.push(serde_json::json!(["fetch-all"]));
    }
    let r = common::imap_steps(
        imap,
        serde_json::Value::Array(steps),
        &d.join("envelopd.log"),
    );
    for (i, f) in folders.iter().enumerate() {
        assert_eq!(r[2 + 2 * i], "OK", "APPEND to {f}");
        // Read back through envelopd.
        let m = &r[1 + 2 * folders.len() + 2 * i + 1][0];
        let body = smime::mime::base64_decode(m["body"].as_str().unwrap().as_bytes()).unwrap();
        let body = String::from_utf8_lossy(&body);
        assert!(body.contains(&format!("Befundentwurf {i}")), "{f}: {body}");
        let status = m["status"].as_str().unwrap();
        // On Dovecot's disk.
        let folder = provider
            .dir
            .path()
            .join(format!("mail/smime.example/bob/.{f}"));
        let stored: Vec<Vec<u8>> = ["new", "cur"]
            .iter()
            .flat_map(|s| std::fs::read_dir(folder.join(s)).unwrap())
            .map(|e| std::fs::read(e.unwrap().path()).unwrap())
            .collect();
        assert_eq!(stored.len(), 1, "{f}");
        let disk = String::from_utf8_lossy(&stored[0]);
        if matches!(*f, "Notizen" | "Ablage") {
            assert!(status.is_empty(), "{f}: {status}");
            assert!(
                disk.contains(&format!("Befundentwurf {i}")),
                "{f}: kept as given"
            );
        } else {
            assert!(status.starts_with("decrypted=aes-256-gcm"), "{f}: {status}");
            assert!(
                disk.contains("application/pkcs7-mime") && !disk.contains("Befundentwurf"),
                "{f}: {disk}"
            );
            // The provider sees neither the Subject (header protection) nor the text.
            assert!(!disk.contains("Entwurf"), "{f}: {disk}");
        }
    }
}
