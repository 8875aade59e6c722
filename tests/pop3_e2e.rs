//! End to end on the POP3 side: a real Dovecot POP3 server (STLS and POP3S upstream), the
//! reading sides' test set (S/MIME from envelopd's SMTP path, OpenSSL, gpgsm and NSS; forged
//! status, Efail, spoofed signer, undecryptable, plain), read through `envelopd run`'s POP3 side
//! by Python's poplib, curl, fetchmail (with and without `keep`), mpop, getmail6 and s-nail.
//! Every size envelopd lists is the size RETR sends, TOP's header is RETR's, RETR shows exactly
//! what the IMAP side shows, UIDLs are the server's, and only the client's DELE + QUIT deletes.

mod common;

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::lab::Lab;
use common::provider::Provider;
use common::reading::*;
use testkit::procs::{free_port, wait_for, Proc};

/// envelopd for one practice with SMTP, IMAP and POP3 in front of `provider` (POP3 upstream
/// with `pop3_tls` on `pop3_port`); `others` are further RFC 9216 identities on the same
/// gateway.
fn envelopd_pop3(
    provider: &Provider,
    who: &str,
    pop3_tls: &str,
    pop3_port: u16,
    others: &[&str],
) -> (tempfile::TempDir, u16, u16, u16, Proc) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    common::practice_dir(d, who, &[]);
    let mut extra = String::new();
    for o in others {
        std::fs::copy(
            common::rfc9216().join(format!("{o}.p12")),
            d.join(format!("keys/{o}.p12")),
        )
        .unwrap();
        std::fs::write(d.join(format!("keys/{o}-pw")), format!("{o}\n")).unwrap();
        for f in [format!("keys/{o}.p12"), format!("keys/{o}-pw")] {
            std::fs::set_permissions(d.join(f), std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        extra.push_str(&format!(
            "[[identity]]\naddresses = [\"{o}@smime.example\"]\npkcs12 = \"keys/{o}.p12\"\npassword_file = \"keys/{o}-pw\"\n"
        ));
    }
    let (smtp, imap, pop3) = (free_port(), free_port(), free_port());
    std::fs::write(
        d.join("proxy.toml"),
        format!(
            "[smtp]\nlisten = \"127.0.0.1:{smtp}\"\n[imap]\nlisten = \"127.0.0.1:{imap}\"\n[pop3]\nlisten = \"127.0.0.1:{pop3}\"\n\
             [upstream.smtp]\nhost = \"localhost\"\nport = {}\ntls = \"starttls\"\nca_file = \"{ca}\"\nsystem_roots = false\n\
             [upstream.imap]\nhost = \"localhost\"\nport = {}\ntls = \"implicit\"\nca_file = \"{ca}\"\nsystem_roots = false\n\
             [upstream.pop3]\nhost = \"localhost\"\nport = {pop3_port}\ntls = \"{pop3_tls}\"\nca_file = \"{ca}\"\nsystem_roots = false\n\
             [certificates]\nanchors = [\"trust\"]\nrecipients = \"certs\"\n\
             [[identity]]\naddresses = [\"{who}@smime.example\"]\npkcs12 = \"keys/{who}.p12\"\npassword_file = \"keys/pw\"\n{extra}",
            provider.submission,
            provider.imaps,
            ca = provider.ca().display()
        ),
    )
    .unwrap();
    let p = common::run_envelopd(&d.join("proxy.toml"), &d.join("envelopd.log"));
    wait_for(smtp);
    wait_for(imap);
    wait_for(pop3);
    (dir, smtp, imap, pop3, p)
}

fn log_of(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("envelopd.log")).unwrap_or_default()
}

/// Reads the mailbox with `tests/clients/pop3_read.py`.
fn poplib_read(port: u16, user: &str, pw: &str, auth: bool, dir: &Path) -> serde_json::Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/clients/pop3_read.py");
    let mut c = Command::new("python3");
    c.arg(script).args([&port.to_string(), user, pw]);
    if auth {
        c.arg("auth");
    }
    let o = c.output().unwrap();
    assert!(
        o.status.success(),
        "pop3_read.py: {}\nenvelopd's log:\n{}",
        String::from_utf8_lossy(&o.stderr),
        log_of(dir)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

/// Runs a short Python poplib program against `port` (logged in as Bob).
fn poplib(port: u16, program: &str) -> Output {
    let code = format!(
        "import poplib\np = poplib.POP3('127.0.0.1', {port}, timeout=60)\np.user('bob@smime.example')\np.pass_('bob-pw')\n{program}\n"
    );
    Command::new("python3")
        .arg("-c")
        .arg(code)
        .output()
        .unwrap()
}

/// The header section of a message and its first `k` body lines, as TOP returns them.
fn top(message: &[u8], k: usize) -> Vec<u8> {
    let header = smime::mime::split(message).header.len();
    let mut end = (header + 2).min(message.len());
    for _ in 0..k {
        if end >= message.len() {
            break;
        }
        end = match message[end..].iter().position(|b| *b == b'\n') {
            Some(p) => end + p + 1,
            None => message.len(),
        };
    }
    message[..end].to_vec()
}

fn run_client(cmd: &mut Command, what: &str, dir: &Path) -> Output {
    let o = cmd.stdin(Stdio::null()).output().unwrap();
    assert!(
        o.status.success(),
        "{what}: {}{}\nenvelopd's log:\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
        log_of(dir)
    );
    o
}

fn files_in(dir: &Path) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for sub in ["new", "cur"] {
        if let Ok(rd) = std::fs::read_dir(dir.join(sub)) {
            for e in rd {
                out.push(std::fs::read(e.unwrap().path()).unwrap());
            }
        }
    }
    out
}

#[test]
fn pop3_clients_read_decrypted_verified_mail_with_exact_sizes() {
    let provider = Provider::start();
    let lab = Lab::new();
    // Alice's practice sends through envelopd (signed + encrypted to Bob).
    let (_ad, alice_smtp, _ai, _ap, _alice) =
        envelopd_pop3(&provider, "alice", "implicit", provider.pop3s, &[]);
    let o = send_mail(
        alice_smtp,
        "alice@smime.example",
        "alice-pw",
        "bob@smime.example",
        "smtp-path",
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    provider.wait_messages("bob", 1);
    deliver_test_messages(&provider, &lab);
    let stored_before = provider.all_messages("bob");
    let count = stored_before.len();
    assert_eq!(count, 12);

    // Bob reads by POP3 with STLS to the provider.
    let (bob_dir, _bs, bob_imap, bob_pop3, _bob) =
        envelopd_pop3(&provider, "bob", "starttls", provider.pop3, &[]);
    let bd = bob_dir.path();
    let seen = poplib_read(bob_pop3, "bob@smime.example", "bob-pw", false, bd);
    assert!(
        !seen["greeting"].as_str().unwrap().contains('<'),
        "no APOP banner: {}",
        seen["greeting"]
    );
    let capa = seen["capa"].as_object().unwrap();
    for c in ["TOP", "UIDL", "USER", "SASL", "RESP-CODES", "PIPELINING"] {
        assert!(capa.contains_key(c), "{c} in {capa:?}");
    }
    assert_eq!(seen["stat"][0], count);
    let messages = seen["messages"].as_object().unwrap();
    assert_eq!(messages.len(), count);
    let mut total = 0;
    let mut by_subject: HashMap<String, Vec<u8>> = HashMap::new();
    for (n, m) in messages {
        let retr = b64d(&m["retr"]);
        let listed = seen["list"][n].as_u64().unwrap();
        // RFC 1939: LIST's size is the exact size RETR sends.
        assert_eq!(listed, retr.len() as u64, "LIST vs RETR for {n}");
        assert_eq!(
            m["octets"].as_u64().unwrap(),
            listed,
            "octets poplib counted for {n}"
        );
        assert_eq!(m["list_one"].as_u64().unwrap(), listed, "LIST {n}");
        assert_eq!(
            m["retr_status"].as_str().unwrap(),
            format!("+OK {listed} octets"),
            "RETR {n}'s status"
        );
        assert_eq!(
            b64d(&m["top0"]),
            top(&retr, 0),
            "TOP {n} 0 is RETR's header"
        );
        assert_eq!(b64d(&m["top2"]), top(&retr, 2), "TOP {n} 2");
        total += listed;
        by_subject.insert(subject_of(&retr), retr);
    }
    assert_eq!(seen["stat"][1].as_u64().unwrap(), total);
    let status = |s: &str| {
        status_of(
            by_subject
                .get(s)
                .unwrap_or_else(|| panic!("{s} in {:?}", by_subject.keys())),
        )
        .unwrap_or_default()
    };
    assert!(
        status("smtp-path").starts_with(
            "decrypted=aes-256-cbc; integrity=none; signature=valid; signer=alice@smime.example"
        ),
        "{}",
        status("smtp-path")
    );
    assert!(
        String::from_utf8_lossy(&by_subject["smtp-path"]).contains(SECRET),
        "decrypted text"
    );
    assert!(status("openssl-gcm").starts_with("decrypted=aes-256-gcm; signature=valid"));
    assert!(
        status("gpgsm-ber").starts_with("decrypted=aes-256-cbc"),
        "{}",
        status("gpgsm-ber")
    );
    assert!(
        status("nss-ber").starts_with("decrypted="),
        "{}",
        status("nss-ber")
    );
    assert!(
        !status("nss-ber").starts_with("decrypted=failed"),
        "{}",
        status("nss-ber")
    );
    assert!(status("from-mismatch").contains("signature=from-mismatch"));
    assert!(status("not-for-bob").starts_with("decrypted=failed"));
    let forged = &by_subject["forged-status"];
    assert_eq!(
        String::from_utf8_lossy(forged)
            .matches("X-Envelopd:")
            .count(),
        1,
        "the forged status is replaced"
    );
    assert!(status("forged-status").starts_with("decrypted=no; signature=none"));
    assert!(status("html-cbc").contains("remote-content=blocked"));
    let plain_stored = stored_before
        .iter()
        .find(|m| subject_of(m) == "plain")
        .unwrap();
    assert_eq!(&by_subject["plain"], plain_stored, "plain mail as stored");
    assert_eq!(
        status_of(&by_subject["efail"]),
        None,
        "a nested part is not opened"
    );

    // RETR shows exactly what the IMAP side shows.
    for (n, m) in messages {
        let o = run_client(
            Command::new("curl").args([
                "-sS",
                &format!("imap://127.0.0.1:{bob_imap}/INBOX;MAILINDEX={n}"),
                "--user",
                "bob@smime.example:bob-pw",
            ]),
            "curl imap",
            bd,
        );
        assert_eq!(
            o.stdout,
            b64d(&m["retr"]),
            "IMAP BODY[] and POP3 RETR of message {n}"
        );
    }

    // UIDLs are the server's.
    let straight = Command::new("curl")
        .args(["-sS", &format!("pop3://127.0.0.1:{}/", provider.pop3)])
        .args(["--user", "bob@smime.example:bob-pw", "-X", "UIDL"])
        .output()
        .unwrap();
    let uidl: String = seen["uidl"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(n, u)| (n.parse::<u32>().unwrap(), u.as_str().unwrap().to_string()))
        .collect::<std::collections::BTreeMap<_, _>>()
        .iter()
        .map(|(n, u)| format!("{n} {u}\r\n"))
        .collect();
    assert_eq!(String::from_utf8_lossy(&straight.stdout), uidl);

    // curl pop3://: message 1 as poplib got it.
    let o = run_client(
        Command::new("curl").args([
            "-sS",
            &format!("pop3://127.0.0.1:{bob_pop3}/1"),
            "--user",
            "bob@smime.example:bob-pw",
        ]),
        "curl pop3",
        bd,
    );
    assert_eq!(o.stdout, b64d(&messages["1"]["retr"]), "curl's RETR 1");

    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    // fetchmail, keeping mail on the server: all messages once, none the second time.
    std::fs::create_dir(w.join("fetched")).unwrap();
    std::fs::write(
        w.join("deliver.sh"),
        format!(
            "#!/bin/sh\ncat > {}/fetched/$(date +%s%N).eml\n",
            w.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(w.join("deliver.sh"), std::fs::Permissions::from_mode(0o700)).unwrap();
    let rc = w.join("fetchmailrc");
    std::fs::write(
        &rc,
        format!(
            "poll 127.0.0.1 protocol POP3 port {bob_pop3} uidl user \"bob@smime.example\" password \"bob-pw\" keep sslproto \"\" mda \"{}/deliver.sh\"\n",
            w.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&rc, std::fs::Permissions::from_mode(0o600)).unwrap();
    let fetchmail = |w: &Path| {
        let o = Command::new("fetchmail")
            .arg("-f")
            .arg(w.join("fetchmailrc"))
            .args(["--nosyslog", "--nodetach"])
            .env("FETCHMAILHOME", w)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        // 1: no new mail.
        assert!(
            matches!(o.status.code(), Some(0) | Some(1)),
            "fetchmail: {}{}\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr),
            log_of(bd)
        );
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let said = fetchmail(w);
    let fetched = std::fs::read_dir(w.join("fetched")).unwrap().count();
    assert_eq!(fetched, count, "fetchmail got every message: {said}");
    assert!(
        !said.contains("mismatch"),
        "fetchmail found no size mismatch: {said}"
    );
    fetchmail(w);
    assert_eq!(
        std::fs::read_dir(w.join("fetched")).unwrap().count(),
        count,
        "the second run downloads nothing again"
    );
    let secret_copies = std::fs::read_dir(w.join("fetched"))
        .unwrap()
        .filter(|e| {
            String::from_utf8_lossy(&std::fs::read(e.as_ref().unwrap().path()).unwrap())
                .contains("X-Envelopd: decrypted=aes-256-cbc; integrity=none; signature=valid")
        })
        .count();
    assert!(secret_copies >= 1, "fetchmail got the decrypted message");

    // mpop, keeping mail and fetching only new messages.
    std::fs::create_dir_all(w.join("mpop-mail/new")).unwrap();
    std::fs::create_dir_all(w.join("mpop-mail/cur")).unwrap();
    std::fs::create_dir_all(w.join("mpop-mail/tmp")).unwrap();
    let mpoprc = w.join("mpoprc");
    std::fs::write(
        &mpoprc,
        format!(
            "account default\nhost 127.0.0.1\nport {bob_pop3}\ntls off\nauth user\nuser bob@smime.example\npassword bob-pw\nkeep on\nonly_new on\nuidls_file {0}/mpop-uidls\ndelivery maildir {0}/mpop-mail\n",
            w.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&mpoprc, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mpop = || {
        run_client(
            Command::new("mpop").arg("-C").arg(&mpoprc).arg("-q"),
            "mpop",
            bd,
        )
    };
    mpop();
    let got = files_in(&w.join("mpop-mail"));
    assert_eq!(got.len(), count, "mpop got every message");
    mpop();
    assert_eq!(
        files_in(&w.join("mpop-mail")).len(),
        count,
        "mpop: nothing twice"
    );
    // mpop writes LF line ends and adds its own Received field at the top.
    let lf = |b: &[u8]| String::from_utf8_lossy(b).replace("\r\n", "\n");
    let smtp_path = lf(&by_subject["smtp-path"]);
    assert!(
        got.iter().any(|m| lf(m).ends_with(&smtp_path)),
        "mpop's copy of the decrypted message"
    );

    // getmail6, not deleting, reading only new mail.
    let gm = w.join("getmail");
    std::fs::create_dir_all(gm.join("mail/new")).unwrap();
    std::fs::create_dir_all(gm.join("mail/cur")).unwrap();
    std::fs::create_dir_all(gm.join("mail/tmp")).unwrap();
    // getmail delivers as another user when it runs as root (as the tests do).
    let nobody = Command::new("chown")
        .args(["-R", "nobody"])
        .arg(gm.join("mail"))
        .status()
        .unwrap();
    assert!(nobody.success());
    std::fs::write(
        gm.join("getmailrc"),
        format!(
            "[retriever]\ntype = SimplePOP3Retriever\nserver = 127.0.0.1\nport = {bob_pop3}\nusername = bob@smime.example\npassword = bob-pw\n\n[destination]\ntype = Maildir\npath = {}/mail/\nuser = nobody\n\n[options]\nread_all = false\ndelete = false\nverbose = 0\n",
            gm.display()
        ),
    )
    .unwrap();
    let getmail = || {
        run_client(
            Command::new("getmail")
                .arg("--rcfile")
                .arg(gm.join("getmailrc"))
                .arg("--getmaildir")
                .arg(&gm),
            "getmail",
            bd,
        )
    };
    getmail();
    let got = files_in(&gm.join("mail"));
    assert_eq!(got.len(), count, "getmail got every message");
    getmail();
    assert_eq!(
        files_in(&gm.join("mail")).len(),
        count,
        "getmail: nothing twice"
    );
    let copy = got
        .iter()
        .map(|m| lf(m))
        .find(|m| m.contains("Subject: smtp-path"))
        .expect("getmail's copy of the decrypted message");
    // getmail files messages through Python's email package, which folds and reorders
    // header fields: the status and the decrypted text must be there.
    assert!(
        copy.contains("X-Envelopd: decrypted=aes-256-cbc; integrity=none; signature=valid;")
            && copy.contains(SECRET),
        "getmail's copy:\n{copy}"
    );

    // s-nail: prints the decrypted text with envelopd's status (message 1: OpenSSL's).
    let o = Command::new("s-nail")
        .args(["-n", "-R", "-S", "v15-compat", "-S", "password=bob-pw"])
        .args(["-Y", "Print 1", "-Y", "quit", "-f"])
        .arg(format!("pop3://bob%40smime.example@127.0.0.1:{bob_pop3}"))
        .env("HOME", w)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains(SECRET)
            && out.contains(
                "X-Envelopd: decrypted=aes-256-gcm; signature=valid; signer=alice@smime.example"
            ),
        "s-nail:\n{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );

    // mutt (pop://), driven in a pseudo-terminal (it needs one): copies message 1 out.
    std::fs::write(
        w.join("muttrc"),
        "set pop_pass=\"bob-pw\"\nset pop_delete=no\nset ssl_starttls=no\nset ssl_force_tls=no\n\
         set sort=mailbox-order\nset confirmcreate=no\nset confirmappend=no\nset mbox_type=mbox\n",
    )
    .unwrap();
    std::fs::create_dir_all(w.join("Mail")).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/clients/mutt_pop3.py");
    let o = Command::new("python3")
        .arg(script)
        .arg(w.join("muttrc"))
        .arg(format!("pop://bob%40smime.example@127.0.0.1:{bob_pop3}/"))
        .arg(w.join("mutt.mbox"))
        .env("HOME", w)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    // An mbox: mutt's "From " line first, the message after it, with mutt's own Content-Length
    // and Lines fields added to the header.
    let saved = lf(&std::fs::read(w.join("mutt.mbox")).unwrap_or_default());
    let piped: String = saved
        .split_once('\n')
        .map(|(_, m)| m.to_string())
        .unwrap_or_default()
        .split_inclusive('\n')
        .filter(|l| !l.starts_with("Content-Length: ") && !l.starts_with("Lines: "))
        .collect();
    assert_eq!(
        piped.trim_end(),
        lf(&b64d(&messages["1"]["retr"])).trim_end(),
        "mutt's message 1 (exit {:?}): {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stderr)
            .chars()
            .take(2000)
            .collect::<String>()
    );

    // The server's copies were never changed.
    let mut after = provider.all_messages("bob");
    let mut before = stored_before.clone();
    after.sort();
    before.sort();
    assert_eq!(after, before, "the stored copies are as they were");

    // DELE + RSET keeps, DELE + QUIT deletes, at the server.
    let o = poplib(bob_pop3, "p.dele(1)\np.rset()\np.quit()");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(provider.all_messages("bob").len(), count);
    let o = poplib(bob_pop3, "p.dele(1)\np.dele(2)\nprint(p.stat())\np.quit()");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        String::from_utf8_lossy(&o.stdout).starts_with(&format!("({}, ", count - 2)),
        "STAT after DELE: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    assert_eq!(provider.all_messages("bob").len(), count - 2);

    // fetchmail without keep: everything fetched, then deleted at the server.
    std::fs::write(
        &rc,
        std::fs::read_to_string(&rc)
            .unwrap()
            .replace(" keep ", " fetchall "),
    )
    .unwrap();
    std::fs::remove_dir_all(w.join("fetched")).unwrap();
    std::fs::create_dir(w.join("fetched")).unwrap();
    fetchmail(w);
    assert_eq!(
        std::fs::read_dir(w.join("fetched")).unwrap().count(),
        count - 2
    );
    assert_eq!(
        provider.all_messages("bob").len(),
        0,
        "fetchmail deleted what it fetched"
    );
}

#[test]
fn a_login_decrypts_only_with_its_own_keys_and_pop3s_upstream_works() {
    let provider = Provider::start();
    let v = common::rfc9216();
    let p = |n: &str| v.join(n).display().to_string();
    // One gateway for both: Alice's and Bob's keys.
    let (dir, _s, _i, pop3, _proc) =
        envelopd_pop3(&provider, "bob", "implicit", provider.pop3s, &["alice"]);
    let d = dir.path();
    let to_bob = openssl(
        &[
            "cms",
            "-encrypt",
            "-aes-256-gcm",
            "-from",
            "alice@smime.example",
            "-to",
            "bob@smime.example",
            "-subject",
            "for-bob",
            &p("bob.encrypt.crt"),
        ],
        format!("Content-Type: text/plain\r\n\r\n{SECRET}\r\n").as_bytes(),
    );
    // The same message lands in both mailboxes (Alice was in Bcc, say).
    provider.deliver("bob", "1.for-bob", &to_bob);
    provider.deliver("alice", "1.for-bob", &to_bob);
    let bob = poplib_read(pop3, "bob@smime.example", "bob-pw", true, d);
    let shown = b64d(&bob["messages"]["1"]["retr"]);
    assert!(
        status_of(&shown)
            .unwrap()
            .starts_with("decrypted=aes-256-gcm"),
        "{}",
        String::from_utf8_lossy(&shown)
    );
    assert!(String::from_utf8_lossy(&shown).contains(SECRET));
    let alice = poplib_read(pop3, "alice@smime.example", "alice-pw", false, d);
    let shown = b64d(&alice["messages"]["1"]["retr"]);
    let status = status_of(&shown).unwrap();
    assert!(
        status.starts_with("decrypted=failed"),
        "Alice's login never uses Bob's key: {status}"
    );
    assert!(!String::from_utf8_lossy(&shown).contains(SECRET));
    assert_eq!(
        alice["list"]["1"].as_u64().unwrap(),
        shown.len() as u64,
        "sizes follow the login's own view"
    );
    // A wrong password is the server's answer, and counts as a failed login.
    let o = Command::new("python3")
        .arg("-c")
        .arg(format!(
            "import poplib\np = poplib.POP3('127.0.0.1', {pop3})\np.user('bob@smime.example')\ntry:\n    p.pass_('wrong')\nexcept poplib.error_proto as e:\n    print(e)\n"
        ))
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("-ERR"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
}
