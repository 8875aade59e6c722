//! A real mail provider for the end-to-end tests: Postfix and Dovecot from
//! `scripts/mailserver.sh`, with users alice@smime.example (alice-pw) and bob@smime.example
//! (bob-pw), in a temporary directory, stopped when dropped.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use testkit::procs::{free_port, is_root};

/// A running Postfix + Dovecot in a temporary directory; stopped when dropped.
pub struct Provider {
    /// The provider's directory (configuration, TLS files, Maildirs, logs).
    pub dir: tempfile::TempDir,
    /// Postfix: AUTH without TLS.
    pub plain: u16,
    /// Postfix: submission with STARTTLS + AUTH.
    pub submission: u16,
    /// Postfix: SMTPS + AUTH.
    pub smtps: u16,
    /// Dovecot: IMAP with STARTTLS.
    pub imap: u16,
    /// Dovecot: IMAPS.
    pub imaps: u16,
    /// Dovecot: POP3 with STLS.
    pub pop3: u16,
    /// Dovecot: POP3S.
    pub pop3s: u16,
}

impl Provider {
    /// Starts Postfix and Dovecot on free ports.
    pub fn start() -> Provider {
        assert!(
            is_root(),
            "these tests start Postfix and Dovecot and must run as root (CI does)"
        );
        let dir = tempfile::tempdir().unwrap();
        let (plain, submission, smtps, imap, imaps, pop3, pop3s) = (
            free_port(),
            free_port(),
            free_port(),
            free_port(),
            free_port(),
            free_port(),
            free_port(),
        );
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/mailserver.sh");
        let o = Command::new(script)
            .arg("start")
            .arg(dir.path())
            .args(["alice@smime.example:alice-pw", "bob@smime.example:bob-pw"])
            .env("SMTP_PLAIN_PORT", plain.to_string())
            .env("SUBMISSION_PORT", submission.to_string())
            .env("SMTPS_PORT", smtps.to_string())
            .env("IMAP_PORT", imap.to_string())
            .env("IMAPS_PORT", imaps.to_string())
            .env("POP3_PORT", pop3.to_string())
            .env("POP3S_PORT", pop3s.to_string())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "mailserver.sh failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        Provider {
            dir,
            plain,
            submission,
            smtps,
            imap,
            imaps,
            pop3,
            pop3s,
        }
    }

    /// The CA of the provider's TLS certificate.
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("tls/ca.pem")
    }

    /// `new/` of a user's Maildir.
    pub fn maildir(&self, user: &str) -> PathBuf {
        self.dir
            .path()
            .join("mail/smime.example")
            .join(user)
            .join("new")
    }

    /// Waits until `user` has `n` messages (Postfix delivers asynchronously) and returns them.
    pub fn wait_messages(&self, user: &str, n: usize) -> Vec<Vec<u8>> {
        let start = Instant::now();
        loop {
            let mut files: Vec<PathBuf> = std::fs::read_dir(self.maildir(user))
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            if files.len() >= n || start.elapsed() > Duration::from_secs(20) {
                files.sort_by_key(|f| std::fs::metadata(f).unwrap().modified().unwrap());
                return files.iter().map(|f| std::fs::read(f).unwrap()).collect();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// How many messages wait in `new/`.
    pub fn count(&self, user: &str) -> usize {
        std::fs::read_dir(self.maildir(user)).unwrap().count()
    }

    /// Postfix's log.
    pub fn postfix_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log/postfix.log")).unwrap_or_default()
    }

    /// Whether a Postfix session ended with `counts` in its "disconnect from" line (Postfix's
    /// own tally of the commands it got, e.g. " mail=1/2 rcpt=2/4").
    pub fn postfix_session_ended_with(&self, counts: &str) -> bool {
        self.postfix_log()
            .lines()
            .any(|l| l.contains("disconnect from") && l.contains(counts))
    }

    /// Writes `files` (name, content) into Postfix's configuration directory, sets `settings`
    /// ("name = value", where `{conf}` stands for that directory) and reloads Postfix: a
    /// provider with its own checks for one test.
    pub fn configure_postfix(&self, files: &[(&str, &str)], settings: &[&str]) {
        let conf = self.dir.path().join("postfix");
        for (name, content) in files {
            std::fs::write(conf.join(name), content).unwrap();
        }
        let run = |c: &mut Command| {
            let o = c.output().unwrap();
            assert!(
                o.status.success(),
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
        };
        for setting in settings {
            let setting = setting.replace("{conf}", &conf.display().to_string());
            run(Command::new("postconf")
                .arg("-c")
                .arg(&conf)
                .args(["-e", &setting]));
        }
        run(Command::new("postfix").arg("-c").arg(&conf).arg("reload"));
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/mailserver.sh");
        let _ = Command::new(script)
            .arg("stop")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

impl Provider {
    /// Puts a message straight into a user's Maildir, as if the provider had delivered it.
    pub fn deliver(&self, user: &str, name: &str, message: &[u8]) {
        let dir = self.maildir(user);
        let tmp = dir.parent().unwrap().join("tmp").join(name);
        std::fs::write(&tmp, message).unwrap();
        std::os::unix::fs::chown(&tmp, Some(5000), Some(5000)).unwrap();
        std::fs::rename(&tmp, dir.join(name)).unwrap();
    }
}

impl Provider {
    /// Every message of a user, read or not (Dovecot moves what it has seen to `cur/`).
    pub fn all_messages(&self, user: &str) -> Vec<Vec<u8>> {
        let new = self.maildir(user);
        let cur = new.parent().unwrap().join("cur");
        let mut files: Vec<PathBuf> = [new, cur]
            .iter()
            .flat_map(|d| std::fs::read_dir(d).unwrap().map(|e| e.unwrap().path()))
            .collect();
        files.sort();
        files.iter().map(|f| std::fs::read(f).unwrap()).collect()
    }
}

impl Provider {
    /// Adds a Dovecot login of any form (a user name with a space, say) with its password;
    /// Dovecot reads its passwd-file again when it changes. Its mail lives in `mail/NAME`.
    pub fn add_login(&self, name: &str, password: &str) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(self.dir.path().join("users"))
            .unwrap();
        writeln!(f, "{name}:{{PLAIN}}{password}").unwrap();
        // Dovecot's default auth_username_chars leave out the space; empty allows any name.
        let conf = self.dir.path().join("dovecot.conf");
        let mut c = std::fs::OpenOptions::new()
            .append(true)
            .open(&conf)
            .unwrap();
        writeln!(c, "auth_username_chars =").unwrap();
        let o = Command::new("doveadm")
            .arg("-c")
            .arg(&conf)
            .arg("reload")
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "doveadm reload: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    /// Creates a Maildir folder (`""` for the inbox) of a mail home (relative to `mail/`, e.g.
    /// `smime.example/bob` or a bare login) holding `messages`, with the given UIDVALIDITY, so
    /// that two folders or two users can have the same UIDVALIDITY and UIDs (as servers that
    /// number every folder from 1 do).
    pub fn folder_with(&self, home: &str, folder: &str, uidvalidity: u32, messages: &[&[u8]]) {
        let mut dir = self.dir.path().join("mail").join(home);
        if !folder.is_empty() {
            dir = dir.join(format!(".{folder}"));
        }
        for sub in ["new", "cur", "tmp"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        let mut list = format!("3 V{uidvalidity} N{}\n", messages.len() + 1);
        for (i, m) in messages.iter().enumerate() {
            let name = format!("{}.M{i}P1.test", 1_800_000_000 + i);
            std::fs::write(dir.join("cur").join(format!("{name}:2,")), m).unwrap();
            list.push_str(&format!("{} :{name}\n", i + 1));
        }
        std::fs::write(dir.join("dovecot-uidlist"), list).unwrap();
        let status = std::process::Command::new("chown")
            .args(["-R", "5000:5000"])
            .arg(self.dir.path().join("mail"))
            .status()
            .unwrap();
        assert!(status.success());
    }
}
