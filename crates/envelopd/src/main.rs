//! The `envelopd` binary: the command line (`run`, `check`, `explain`, `certs`, `keys`, `tls`,
//! `smime`). `run` is the daemon ([`daemon`]); `smime` is a front end to the S/MIME core in the
//! style of `openssl cms` (input from stdin or `--in`, output to stdout or `--out`, errors on
//! stderr with a non-zero exit status) whose `verify` gives the certificate store's one verdict.
//! Protocol and crypto logic live in the library crates; this one wires them to files and flags.

#![forbid(unsafe_code)]

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Parser, Subcommand};

use smime::{ContentCipher, Digest, EncryptOptions, KeyTransport};

mod certs;
mod check;
mod config;
mod daemon;
mod explain;
mod keyfiles;
mod keys;
mod revocation;
mod status;
mod tls;

use keyfiles::{read_certs, KeySource};

#[derive(Parser)]
#[command(name = "envelopd", version, about = "S/MIME encrypting mail proxy")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// S/MIME operations on single messages.
    #[command(subcommand)]
    Smime(Box<SmimeCommand>),
    /// Run the proxy: mail programs submit to the SMTP listener, envelopd signs and encrypts.
    Run {
        /// The configuration file.
        #[arg(long, default_value = "proxy.toml")]
        config: PathBuf,
    },
    /// Explain what envelopd would do with a message and why, recipient by recipient.
    Explain {
        /// The configuration file.
        #[arg(long, default_value = "proxy.toml")]
        config: PathBuf,
        /// The sender.
        #[arg(long)]
        from: String,
        /// A To recipient (repeatable).
        #[arg(long)]
        to: Vec<String>,
        /// A Cc recipient (repeatable).
        #[arg(long)]
        cc: Vec<String>,
        /// A Bcc recipient (repeatable).
        #[arg(long)]
        bcc: Vec<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// TLS material for the listeners.
    #[command(subcommand)]
    Tls(TlsCommand),
    /// The practice's own keys: import (there is no export).
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Recipient certificates: list, show, import, remove.
    #[command(subcommand)]
    Certs(CertsCommand),
    /// Check a configuration and report what envelopd would work with.
    Check {
        /// The configuration file.
        #[arg(long, default_value = "proxy.toml")]
        config: PathBuf,
        /// Do not try to connect to the provider.
        #[arg(long)]
        no_connect: bool,
    },
}

#[derive(Subcommand)]
enum TlsCommand {
    /// Create a self-signed certificate and key for a first setup of the LAN listeners.
    Selfsigned {
        /// Host name or IP address mail programs connect to (repeatable).
        #[arg(long = "name", required = true)]
        names: Vec<String>,
        /// Where to write the certificate (PEM).
        #[arg(long, default_value = "tls/envelopd.crt")]
        cert: PathBuf,
        /// Where to write the private key (PEM, mode 0600).
        #[arg(long, default_value = "tls/envelopd.key")]
        key: PathBuf,
        /// Validity in days.
        #[arg(long, default_value_t = 825)]
        days: u32,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Check a PKCS#12 file (key + certificate) and keep it, with its password, mode 0600.
    Import {
        /// The configuration file (the key goes into `keys/` beside it).
        #[arg(long, default_value = "proxy.toml")]
        config: PathBuf,
        /// The PKCS#12 file (.p12/.pfx), e.g. exported from Windows or issued by the CA.
        file: PathBuf,
        /// A file whose first line is the password (otherwise asked, or read from stdin).
        #[arg(long)]
        password_file: Option<PathBuf>,
        /// The sender address(es) this key signs for (default: those in the certificate).
        #[arg(long)]
        address: Vec<String>,
        /// Move the key(s) into this PKCS#11 token instead, e.g. 'pkcs11:token=Praxis;object=praxis-2026'
        /// (not extractable afterwards; the file must then be destroyed).
        #[arg(long)]
        to_token: Option<String>,
        /// With --to-token: the PKCS#11 module (unless the URI has module-path).
        #[arg(long, requires = "to_token")]
        module: Option<PathBuf>,
        /// With --to-token: a file whose first line is the token's PIN.
        #[arg(long, requires = "to_token")]
        pin_file: Option<PathBuf>,
    },
    /// Generate a key pair inside a PKCS#11 token (it can never be read out) and write a
    /// certificate request for the practice's CA.
    Generate {
        /// The new key as a PKCS#11 URI: token and label, e.g.
        /// 'pkcs11:token=Praxis;object=praxis-2026' (module-path and pin-source may be in it).
        #[arg(long)]
        token: String,
        /// The PKCS#11 module (unless the URI has module-path).
        #[arg(long)]
        module: Option<PathBuf>,
        /// A file whose first line is the token's PIN (unless the URI has pin-source).
        #[arg(long)]
        pin_file: Option<PathBuf>,
        /// The address(es) the certificate is for; repeat for several.
        #[arg(long, required = true)]
        address: Vec<String>,
        /// The name in the request (default: the first address).
        #[arg(long)]
        name: Option<String>,
        /// rsa2048 (default), rsa3072, rsa4096, p256 or p384.
        #[arg(long, default_value = "rsa2048")]
        kind: String,
        /// Where to write the certificate request (PEM).
        #[arg(long)]
        csr: PathBuf,
    },
}

#[derive(Subcommand)]
enum CertsCommand {
    /// Every certificate with its addresses, expiry and whether envelopd encrypts to it.
    List {
        /// The configuration file.
        #[arg(long, default_value = "proxy.toml")]
        config: PathBuf,
        /// Only those expiring within this many days (exit status 1 if there are any).
        #[arg(long)]
        expiring: Option<u64>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// The certificates of one address in detail: chain, validity, revocation, decisions.
    Show {
        /// The configuration file.
        #[arg(long, default_value = "proxy.toml")]
        config: PathBuf,
        /// The e-mail address.
        address: String,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Check a certificate file (PEM/DER, with its chain) and keep it in the recipients directory.
    Import {
        /// The configuration file.
        #[arg(long, default_value = "proxy.toml")]
        config: PathBuf,
        /// The certificate file.
        file: PathBuf,
    },
    /// Remove an address's certificate files from the recipient and harvested directories.
    Remove {
        /// The configuration file.
        #[arg(long, default_value = "proxy.toml")]
        config: PathBuf,
        /// The e-mail address.
        address: String,
    },
}

#[derive(Subcommand)]
enum SmimeCommand {
    /// Sign a message (multipart/signed, detached PKCS#7 signature).
    Sign {
        #[command(flatten)]
        io: Io,
        #[command(flatten)]
        key: KeyArgs,
        /// Further certificates to include (intermediate CAs), PEM.
        #[arg(long)]
        chain: Vec<PathBuf>,
        /// Digest algorithm: sha256 (default), sha384 or sha512.
        #[arg(long)]
        digest: Option<String>,
        /// Use RSA-PSS instead of RSA PKCS#1 v1.5.
        #[arg(long)]
        pss: bool,
        /// The sender's separate encryption certificate to announce (SMIMEEncryptionKeyPreference).
        #[arg(long)]
        encryption_cert: Option<PathBuf>,
        /// Also encrypt the signed message to this recipient certificate (PEM or DER), in one
        /// pass; repeat for several recipients.
        #[arg(long = "encrypt-to")]
        encrypt_to: Vec<PathBuf>,
        /// With --encrypt-to: content cipher, as for `encrypt --cipher`.
        #[arg(long, default_value = "aes256-gcm", requires = "encrypt_to")]
        cipher: String,
        /// With --encrypt-to: wrap the content key with RSA-OAEP (SHA-256).
        #[arg(long, requires = "encrypt_to")]
        oaep: bool,
    },
    /// Encrypt a message for one or more recipients.
    Encrypt {
        #[command(flatten)]
        io: Io,
        /// A recipient certificate (PEM or DER); repeat for several recipients.
        #[arg(long = "to", required = true)]
        to: Vec<PathBuf>,
        /// Content cipher: aes256-gcm (default), aes128-gcm, aes256-cbc, aes128-cbc.
        #[arg(long, default_value = "aes256-gcm")]
        cipher: String,
        /// Wrap the content key with RSA-OAEP (SHA-256) instead of PKCS#1 v1.5.
        #[arg(long)]
        oaep: bool,
    },
    /// Decrypt an encrypted message.
    Decrypt {
        #[command(flatten)]
        io: Io,
        #[command(flatten)]
        key: KeyArgs,
    },
    /// Verify a signed message; prints the content on stdout and a JSON status line on stderr.
    /// The verdict is the one the IMAP side shows (same validator, same address rule).
    Verify {
        #[command(flatten)]
        io: Io,
        /// A trusted CA certificate (PEM); repeat for several.
        #[arg(long = "ca", required = true)]
        ca: Vec<PathBuf>,
        /// Further intermediate CA certificates (PEM) for building the path.
        #[arg(long = "intermediate")]
        intermediate: Vec<PathBuf>,
        /// A CRL (DER or PEM) signed by one of the CAs; repeat for several.
        #[arg(long = "crl")]
        crl: Vec<PathBuf>,
        /// Revocation checking: off, prefer (use what is known; the default) or require (a
        /// certificate whose status is unknown is not valid).
        #[arg(long, default_value = "prefer")]
        revocation: String,
        /// Check certificates at this time (RFC 3339, e.g. 2030-01-01T00:00:00Z) instead of now.
        #[arg(long)]
        at: Option<String>,
    },
}

#[derive(Args)]
struct Io {
    /// Read the message from this file instead of stdin.
    #[arg(long = "in")]
    input: Option<PathBuf>,
    /// Write the result to this file instead of stdout.
    #[arg(long = "out")]
    output: Option<PathBuf>,
}

#[derive(Args)]
struct KeyArgs {
    /// Certificate belonging to --key (PEM or DER; for a token key, optional: the token's own).
    #[arg(long, requires = "key")]
    cert: Option<PathBuf>,
    /// Private key: PKCS#8 (plain or encrypted) or PKCS#1, PEM or DER; or a key in a token, as a
    /// PKCS#11 URI: 'pkcs11:token=…;object=…?module-path=…&pin-source=file:…'.
    #[arg(long)]
    key: Option<PathBuf>,
    /// PKCS#12 file with key and certificates (instead of --key/--cert).
    #[arg(long, conflicts_with_all = ["key", "cert"])]
    p12: Option<PathBuf>,
    /// File holding the password for --p12 or an encrypted --key.
    #[arg(long)]
    password_file: Option<PathBuf>,
    /// Environment variable holding the password.
    #[arg(long, conflicts_with = "password_file")]
    password_env: Option<String>,
    /// Accept key files that other users can read (normally refused).
    #[arg(long)]
    allow_insecure_key_file: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("envelopd: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Restarts the daemon (same process, arguments and environment) with glibc's mmap threshold
/// fixed, unless it is set already.
///
/// Why: glibc raises its mmap threshold to the size of every large block freed (up to 32 MiB),
/// so after the first 20 MB message, message-sized buffers come from per-thread arenas, which
/// keep freed memory; the CPU pool's threads then hold hundreds of MiB (measured: peak RSS
/// 477 MiB instead of 155 MiB for a 1 GB folder sync). With the threshold fixed, a buffer of 1
/// MiB or more goes back to the system when freed. glibc reads the setting only from the
/// environment at start; setting it this way needs no `unsafe` call to `mallopt`.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use std::os::unix::process::CommandExt;
        const VAR: &str = "MALLOC_MMAP_THRESHOLD_";
        let tuned = std::env::var_os(VAR).is_some()
            || std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("mmap_threshold"));
        if tuned {
            return;
        }
        let Ok(exe) = std::env::current_exe() else {
            return;
        };
        let mut args = std::env::args_os();
        let arg0 = args.next().unwrap_or_else(|| exe.clone().into_os_string());
        let err = std::process::Command::new(&exe)
            .arg0(arg0)
            .args(args)
            .env(VAR, "1048576")
            .exec();
        // Only reached when the restart failed: the daemon runs on, with glibc's default.
        eprintln!("envelopd: note: could not restart with {VAR} set ({err}); running without it");
    }
}

fn read_input(io: &Io) -> Result<Vec<u8>> {
    let mut data = Vec::new();
    match &io.input {
        Some(p) => {
            // Room for the S/MIME framing, so that signing or encrypting in place never has
            // to move a large message to a bigger buffer.
            let mut f =
                std::fs::File::open(p).with_context(|| format!("reading {}", p.display()))?;
            let len = f.metadata().map(|m| m.len() as usize).unwrap_or(0);
            data.reserve_exact(len + 64 * 1024);
            f.read_to_end(&mut data)
                .with_context(|| format!("reading {}", p.display()))?;
        }
        None => {
            std::io::stdin()
                .read_to_end(&mut data)
                .context("reading stdin")?;
        }
    }
    Ok(data)
}

/// The recipients' certificates and the encryption options from the command line.
fn encryption(
    to: &[PathBuf],
    cipher: &str,
    oaep: bool,
) -> Result<(Vec<smime::Cert>, EncryptOptions)> {
    let cipher = ContentCipher::from_name(cipher).with_context(|| {
        format!("unknown --cipher {cipher:?} (aes256-gcm, aes128-gcm, aes256-cbc, aes128-cbc)")
    })?;
    let mut recipients = Vec::new();
    for p in to {
        recipients.push(read_certs(p)?.remove(0));
    }
    let opts = EncryptOptions {
        cipher,
        key_transport: if oaep {
            KeyTransport::RsaOaepSha256
        } else {
            KeyTransport::RsaPkcs1v15
        },
    };
    Ok((recipients, opts))
}

fn write_output(io: &Io, data: &[u8]) -> Result<()> {
    write_output_with(io, |w| w.write_all(data))
}

/// Writes the output through `write` (which may produce it in pieces) to the file or stdout.
fn write_output_with(
    io: &Io,
    write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<()> {
    match &io.output {
        Some(p) => {
            let mut f =
                std::fs::File::create(p).with_context(|| format!("writing {}", p.display()))?;
            write(&mut f)
                .and_then(|_| f.flush())
                .with_context(|| format!("writing {}", p.display()))
        }
        None => {
            let mut out = std::io::stdout().lock();
            write(&mut out)
                .and_then(|_| out.flush())
                .context("writing stdout")
        }
    }
}

fn key_source(args: &KeyArgs) -> Result<KeySource> {
    if args.p12.is_some() && args.password_file.is_none() && args.password_env.is_none() {
        bail!("--p12 needs --password-file or --password-env");
    }
    if let Some(k) = &args.key {
        if args.cert.is_none() && !keyfiles::is_token_uri(k) {
            bail!("--key needs --cert (the certificate belonging to the key)");
        }
    }
    Ok(KeySource {
        pkcs12: args.p12.clone(),
        key: args.key.clone(),
        cert: args.cert.clone(),
        password_file: args.password_file.clone(),
        password_env: args.password_env.clone(),
        module: None,
        encryption_key: None,
        encryption_cert: None,
        allow_insecure: args.allow_insecure_key_file,
    })
}

fn parse_time(s: &str) -> Result<SystemTime> {
    let b = s.as_bytes();
    let ok = b.len() == 20 && b[4] == b'-' && b[7] == b'-' && b[10] == b'T' && b[19] == b'Z';
    if !ok {
        bail!("--at must look like 2030-01-01T00:00:00Z, got {s:?}");
    }
    let n = |r: std::ops::Range<usize>| s[r].parse::<u16>().context("bad number in --at");
    let dt = der::DateTime::new(
        n(0..4)?,
        n(5..7)? as u8,
        n(8..10)? as u8,
        n(11..13)? as u8,
        n(14..16)? as u8,
        n(17..19)? as u8,
    )
    .map_err(|e| anyhow::anyhow!("invalid --at time {s:?}: {e}"))?;
    Ok(dt.to_system_time())
}

fn run_certs(cmd: CertsCommand) -> Result<ExitCode> {
    let now = SystemTime::now();
    match cmd {
        CertsCommand::List {
            config,
            expiring,
            json,
        } => {
            let cfg = config::Config::load(&config)?;
            let (text, value) = certs::list(&cfg, expiring, now)?;
            let found = value["certificates"]
                .as_array()
                .is_some_and(|a| !a.is_empty());
            if json {
                println!("{value}");
            } else {
                print!("{text}");
            }
            Ok(if expiring.is_some() && found {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
        CertsCommand::Show {
            config,
            address,
            json,
        } => {
            let cfg = config::Config::load(&config)?;
            let (text, value) = certs::show(&cfg, &address, now)?;
            if json {
                println!("{value}");
            } else {
                print!("{text}");
            }
            Ok(ExitCode::SUCCESS)
        }
        CertsCommand::Import { config, file } => {
            let cfg = config::Config::load(&config)?;
            print!("{}", certs::import(&cfg, &file, now)?);
            Ok(ExitCode::SUCCESS)
        }
        CertsCommand::Remove { config, address } => {
            let cfg = config::Config::load(&config)?;
            print!("{}", certs::remove(&cfg, &address)?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    let cmd = match cli.command {
        Command::Smime(cmd) => *cmd,
        Command::Run { config } => {
            tune_allocator();
            let cfg = config::Config::load(&config)?;
            daemon::run(cfg, config)?;
            return Ok(ExitCode::SUCCESS);
        }
        Command::Certs(c) => return run_certs(c),
        Command::Tls(TlsCommand::Selfsigned {
            names,
            cert,
            key,
            days,
        }) => {
            for p in [&cert, &key] {
                if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)
                        .with_context(|| format!("creating {}", dir.display()))?;
                }
            }
            print!("{}", tls::selfsigned(&names, &cert, &key, days)?);
            return Ok(ExitCode::SUCCESS);
        }
        Command::Keys(KeysCommand::Import {
            config,
            file,
            password_file,
            address,
            to_token: Some(uri),
            module,
            pin_file,
        }) => {
            print!(
                "{}",
                keys::import_to_token(
                    &config,
                    &file,
                    password_file.as_deref(),
                    &address,
                    &uri,
                    module.as_deref(),
                    pin_file.as_deref(),
                )?
            );
            return Ok(ExitCode::SUCCESS);
        }
        Command::Keys(KeysCommand::Import {
            config,
            file,
            password_file,
            address,
            ..
        }) => {
            let cfg = config::Config::load(&config)?;
            print!(
                "{}",
                keys::import(
                    &config,
                    &cfg,
                    &file,
                    password_file.as_deref(),
                    &address,
                    SystemTime::now()
                )?
            );
            return Ok(ExitCode::SUCCESS);
        }
        Command::Keys(KeysCommand::Generate {
            token,
            module,
            pin_file,
            address,
            name,
            kind,
            csr,
        }) => {
            let kind = match kind.as_str() {
                "rsa2048" => certstore::token::NewKey::Rsa(2048),
                "rsa3072" => certstore::token::NewKey::Rsa(3072),
                "rsa4096" => certstore::token::NewKey::Rsa(4096),
                "p256" => certstore::token::NewKey::P256,
                "p384" => certstore::token::NewKey::P384,
                other => bail!("--kind {other}: choose rsa2048, rsa3072, rsa4096, p256 or p384"),
            };
            let (pem, lines) = keys::generate_in_token(
                &token,
                module.as_deref(),
                pin_file.as_deref(),
                kind,
                &address,
                name.as_deref(),
            )?;
            std::fs::write(&csr, pem).with_context(|| format!("writing {}", csr.display()))?;
            println!(
                "generated a key inside the token (sensitive, not extractable: it cannot be read out or copied)\n\
                 certificate request for your CA: {}\n\
                 once the certificate is issued, add to proxy.toml:\n\n{lines}",
                csr.display()
            );
            return Ok(ExitCode::SUCCESS);
        }
        Command::Explain {
            config,
            from,
            to,
            cc,
            bcc,
            json,
        } => {
            let cfg = config::Config::load(&config)?;
            let q = explain::Question { from, to, cc, bcc };
            if q.to.is_empty() && q.cc.is_empty() && q.bcc.is_empty() {
                anyhow::bail!("name at least one recipient (--to, --cc or --bcc)");
            }
            let (text, value) = explain::explain(&cfg, &q, SystemTime::now())?;
            if json {
                println!("{value}");
            } else {
                print!("{text}");
            }
            return Ok(ExitCode::SUCCESS);
        }
        Command::Check { config, no_connect } => {
            let cfg = config::Config::load(&config)?;
            let report = check::check(&cfg, SystemTime::now(), !no_connect);
            print!("{}", report.render(&config));
            return Ok(if report.ready() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            });
        }
    };
    match cmd {
        SmimeCommand::Sign {
            io,
            key,
            chain,
            digest,
            pss,
            encryption_cert,
            encrypt_to,
            cipher,
            oaep,
        } => {
            let mut id = key_source(&key)?.load()?;
            for c in &chain {
                id.chain.extend(read_certs(c)?);
            }
            let digest = match digest.as_deref() {
                None => None,
                Some("sha256") | Some("sha-256") => Some(Digest::Sha256),
                Some("sha384") | Some("sha-384") => Some(Digest::Sha384),
                Some("sha512") | Some("sha-512") => Some(Digest::Sha512),
                Some(other) => bail!("unknown --digest {other:?} (use sha256, sha384 or sha512)"),
            };
            let encryption_cert = match encryption_cert {
                Some(p) => Some(read_certs(&p)?.remove(0)),
                None => None,
            };
            let opts = smime::SignOptions {
                digest,
                rsa_padding: if pss {
                    smime::RsaPadding::Pss
                } else {
                    smime::RsaPadding::Pkcs1v15
                },
                signing_time: SystemTime::now(),
                encryption_cert,
            };
            let msg = read_input(&io)?;
            if encrypt_to.is_empty() {
                write_output(&io, &smime::sign(&msg, &id, &opts)?)?;
                return Ok(ExitCode::SUCCESS);
            }
            let (recipients, enc_opts) = encryption(&encrypt_to, &cipher, oaep)?;
            // Signed and encrypted in the message's own buffer, base64-encoded on the way out.
            let out =
                smime::message::sign_and_encrypt_message(msg, &id, &opts, &recipients, &enc_opts)?;
            write_output_with(&io, |mut w| out.write_to(&mut w))?;
            Ok(ExitCode::SUCCESS)
        }
        SmimeCommand::Encrypt {
            io,
            to,
            cipher,
            oaep,
        } => {
            let (recipients, opts) = encryption(&to, &cipher, oaep)?;
            let msg = read_input(&io)?;
            // The ciphertext is base64-encoded on its way out, never held as a whole text.
            let encrypted = smime::message::encrypt_message(msg, &recipients, &opts)?;
            write_output_with(&io, |mut w| encrypted.write_to(&mut w))?;
            Ok(ExitCode::SUCCESS)
        }
        SmimeCommand::Decrypt { io, key } => {
            let ids = key_source(&key)?.load_all()?;
            let msg = read_input(&io)?;
            let d = smime::decrypt_owned(msg, &ids)?;
            if d.cipher.is_weak() {
                eprintln!(
                    "envelopd: warning: the sender used the weak cipher {}",
                    d.cipher.label()
                );
            }
            write_output(&io, &d.message)?;
            Ok(ExitCode::SUCCESS)
        }
        SmimeCommand::Verify {
            io,
            ca,
            intermediate,
            crl,
            revocation,
            at,
        } => {
            let mut store = certstore::CertStore::new();
            for p in &ca {
                read_certs(p)?.into_iter().for_each(|c| store.add_anchor(c));
            }
            for p in &intermediate {
                read_certs(p)?.into_iter().for_each(|c| store.add_cert(c));
            }
            store.set_revocation_mode(match revocation.as_str() {
                "off" => certstore::RevocationMode::Off,
                "prefer" => certstore::RevocationMode::Prefer,
                "require" => certstore::RevocationMode::Require,
                other => bail!("--revocation must be off, prefer or require, not \"{other}\""),
            });
            for p in &crl {
                let data = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
                store
                    .add_crl(&data, &p.display().to_string())
                    .map_err(|e| anyhow!("{}: {e}", p.display()))?;
            }
            let at = match at {
                Some(s) => parse_time(&s)?,
                None => SystemTime::now(),
            };
            let msg = read_input(&io)?;
            let v = match smime::verify(&msg) {
                Ok(v) => v,
                // A signed message whose signature cannot be read at all (damaged, more than 8
                // signers): invalid, as the reading sides show it, not an error of the tool.
                Err(e) if smime::message::signature_unreadable(&msg, &e) => {
                    let status = serde_json::json!({
                        "valid": false,
                        "signature": "invalid",
                        "reason": e.to_string(),
                        "signers": [],
                    });
                    eprintln!("{status}");
                    return Ok(ExitCode::from(1));
                }
                Err(e) => return Err(e.into()),
            };
            let signed = certstore::verdict::Signed::of(&v);
            let verdict = certstore::verdict::judge(&signed, &v.originators, &store, at);
            let signers: Vec<serde_json::Value> = v
                .signers
                .iter()
                .map(|s| {
                    serde_json::json!({
                        "subject": s.subject,
                        "addresses": s.cert.as_ref().map(smime::Cert::mailboxes).unwrap_or_default(),
                        "signing_time": s.signing_time.map(smime::cert::fmt_time),
                        "digest": s.digest,
                        "signature_ok": s.is_valid(),
                        "problem": s.problem,
                        // The certification path alone (PKITS-style checks; the verdict above
                        // adds the address, usage and header rules).
                        "path": s.cert.as_ref().map(|c| {
                            match store.validate_chain(c, &v.certificates, at) {
                                Ok(_) => "ok".to_string(),
                                Err(e) => e.to_string(),
                            }
                        }),
                    })
                })
                .collect();
            let status = serde_json::json!({
                "valid": verdict.is_valid(),
                "signature": verdict.status.as_str(),
                "reason": verdict.reason,
                "signer": verdict.signer,
                "sender": verdict.sender,
                "from": v.originators.single_from().ok().map(ToString::to_string),
                "signers": signers,
                "certificates": v.certificates.len(),
            });
            eprintln!("{status}");
            write_output(&io, &v.message)?;
            Ok(if verdict.is_valid() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
    }
}
