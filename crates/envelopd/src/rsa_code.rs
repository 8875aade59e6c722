//! Which of aws-lc's two RSA code paths the daemon runs, chosen by measuring both on this CPU.
//!
//! Every message envelopd signs costs one RSA private-key operation, every encrypted message
//! it opens for a mail program another: they are most of its CPU time. On a CPU with AVX2,
//! BMI2 and ADX, aws-lc (like OpenSSL, whose assembly it shares) always takes its MULX/ADX
//! code for them, the faster one on Intel; on the AMD EPYC this project is built on, its AVX2
//! ("RSAZ") code signs 15-35 % faster (`openssl speed rsa2048`, one and both cores), and
//! envelopd needs about 12 % less CPU per signed and encrypted message (bench/REPORT.md).
//! Neither library decides by measuring; both read the CPU features once, at start, with the
//! `OPENSSL_ia32cap` environment variable as the documented way to mask some. So `envelopd
//! run` times both paths in short child processes (the same public RFC 9216 test key, the
//! same work, in turns) and, when the AVX2 code is clearly faster, replaces itself with itself
//! started with ADX masked for aws-lc. Both paths are aws-lc's own constant-time code; only
//! the speed differs. Whoever sets `OPENSSL_ia32cap` decides instead (`~0` masks nothing: the
//! libraries' own choice; an empty value is no mask, it switches off every CPU feature), and
//! envelopd says so in its log.

use std::ffi::OsString;
use std::process::Command;
use std::time::Instant;

/// Clears ADX (CPUID leaf 7, EBX bit 19) for aws-lc, which then prefers its AVX2 RSA code.
pub const AVX2_MASK: &str = ":~0x80000";

/// Set for the re-started daemon: what was measured and chosen (see `note`), for its log.
const CHOSEN: &str = "ENVELOPD_RSA_CODE_CHOSEN";

/// The hidden subcommand a timing child runs (`Command::RsaTiming` in main.rs).
const TIMING_COMMAND: &str = "rsa-timing";

/// The AVX2 code must be this much faster before it is chosen: timings on a busy machine
/// wobble, and without a clear gain the libraries' own choice stands.
const MARGIN: f64 = 0.95;

/// What was decided, for the log once logging is set up.
#[derive(Debug, Clone, PartialEq)]
pub enum Choice {
    /// Only one RSA code path exists on this CPU (no AVX2, or no MULX/ADX).
    OnlyOne,
    /// `OPENSSL_ia32cap` was set by whoever started envelopd; it decides.
    AsSet(String),
    /// Both measured; `avx2` says whether the AVX2 code runs now.
    Measured {
        /// Microseconds per RSA-2048 signature with the libraries' default (MULX/ADX) code.
        default_us: f64,
        /// Microseconds per RSA-2048 signature with the AVX2 code.
        avx2_us: f64,
        /// Whether the daemon runs the AVX2 code.
        avx2: bool,
    },
    /// A timing child failed; the libraries' default stands.
    Failed(String),
}

impl Choice {
    /// One sentence for the log.
    pub fn describe(&self) -> String {
        match self {
            Choice::OnlyOne => "RSA: this CPU has one RSA code path in aws-lc".into(),
            Choice::AsSet(v) => {
                format!("RSA: code path as set by OPENSSL_ia32cap={v:?} (no measuring)")
            }
            Choice::Measured {
                default_us,
                avx2_us,
                avx2,
            } => format!(
                "RSA: measured {default_us:.0} µs per signature with the MULX/ADX code, \
                 {avx2_us:.0} µs with the AVX2 code; running the {} code",
                if *avx2 { "AVX2" } else { "MULX/ADX" }
            ),
            Choice::Failed(why) => {
                format!("RSA: could not time the code paths ({why}); running the default")
            }
        }
    }
}

/// Decides before anything in this process touches aws-lc; when the AVX2 code wins, replaces
/// this process with itself started with ADX masked (it returns only when it does not).
pub fn settle() -> Choice {
    if let Ok(line) = std::env::var(CHOSEN) {
        // The re-started daemon: the measuring is done. The note parses back into the choice.
        return parse_note(&line).unwrap_or(Choice::Failed(line));
    }
    if let Some(v) = std::env::var_os("OPENSSL_ia32cap") {
        return Choice::AsSet(v.to_string_lossy().into_owned());
    }
    if !both_paths_exist() {
        return Choice::OnlyOne;
    }
    let (default_us, avx2_us) = match measure() {
        Ok(t) => t,
        Err(e) => return Choice::Failed(e),
    };
    let avx2 = avx2_us < default_us * MARGIN;
    let choice = Choice::Measured {
        default_us,
        avx2_us,
        avx2,
    };
    if avx2 {
        if let Err(e) = restart_with_mask(&choice) {
            return Choice::Failed(format!("starting again with the AVX2 code: {e}"));
        }
    }
    choice
}

#[cfg(target_arch = "x86_64")]
fn both_paths_exist() -> bool {
    std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("bmi2")
        && std::arch::is_x86_feature_detected!("adx")
}

#[cfg(not(target_arch = "x86_64"))]
fn both_paths_exist() -> bool {
    false
}

/// The best of two children per path, taken in turns (default, AVX2, default, AVX2) so that a
/// burst of load elsewhere does not favour one of them.
fn measure() -> Result<(f64, f64), String> {
    let mut default = f64::MAX;
    let mut avx2 = f64::MAX;
    for _ in 0..2 {
        default = default.min(time_child(None)?);
        avx2 = avx2.min(time_child(Some(AVX2_MASK))?);
    }
    Ok((default, avx2))
}

fn time_child(mask: Option<&str>) -> Result<f64, String> {
    let exe = std::env::current_exe().map_err(|e| format!("finding envelopd's own file: {e}"))?;
    let mut c = Command::new(exe);
    c.arg(TIMING_COMMAND);
    if let Some(m) = mask {
        c.env("OPENSSL_ia32cap", m);
    }
    let out = c
        .output()
        .map_err(|e| format!("starting a timing run: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    match text.trim().parse::<f64>() {
        Ok(us) if out.status.success() && us > 0.0 => Ok(us),
        _ => Err(format!(
            "a timing run said {:?} {}",
            text.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        )),
    }
}

fn note(choice: &Choice) -> String {
    match choice {
        Choice::Measured {
            default_us,
            avx2_us,
            avx2,
        } => format!("{default_us:.1} {avx2_us:.1} {avx2}"),
        _ => String::new(),
    }
}

fn parse_note(line: &str) -> Option<Choice> {
    let mut it = line.split(' ');
    let default_us = it.next()?.parse().ok()?;
    let avx2_us = it.next()?.parse().ok()?;
    let avx2 = it.next()?.parse().ok()?;
    Some(Choice::Measured {
        default_us,
        avx2_us,
        avx2,
    })
}

/// Replaces this process (same PID, same arguments, descriptors and environment) with envelopd
/// started with the AVX2 code; returns only on failure.
fn restart_with_mask(choice: &Choice) -> std::io::Result<()> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe()?;
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let err = Command::new(exe)
        .args(args)
        .env("OPENSSL_ia32cap", AVX2_MASK)
        .env(CHOSEN, note(choice))
        .exec();
    Err(err)
}

/// The timing child: microseconds per RSA-2048 PKCS#1 v1.5 SHA-256 signature on stdout, the
/// best of three rounds of eight after two to warm up. The key is Alice's signing key from RFC
/// 9216 (public test data, `../shared/vectors/rfc9216/alice.sign.key`), used for nothing else.
pub fn timing_child() -> anyhow::Result<()> {
    use aws_lc_rs::signature::{RsaKeyPair, RSA_PKCS1_SHA256};
    const KEY: &[u8] = include_bytes!("rfc9216-alice-sign.pk8");
    let key = RsaKeyPair::from_pkcs8(KEY).map_err(|e| anyhow::anyhow!("test key: {e}"))?;
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let mut sig = vec![0u8; key.public_modulus_len()];
    let mut sign = || {
        key.sign(&RSA_PKCS1_SHA256, &rng, b"envelopd timing", &mut sig)
            .map_err(|e| anyhow::anyhow!("signing: {e}"))
    };
    for _ in 0..2 {
        sign()?;
    }
    let mut best = f64::MAX;
    for _ in 0..3 {
        let t = Instant::now();
        for _ in 0..8 {
            sign()?;
        }
        best = best.min(t.elapsed().as_secs_f64() * 1e6 / 8.0);
    }
    println!("{best:.1}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_note_for_the_restarted_daemon_reads_back_as_the_choice() {
        let c = Choice::Measured {
            default_us: 1100.34,
            avx2_us: 700.5,
            avx2: true,
        };
        assert_eq!(
            parse_note(&note(&c)),
            Some(Choice::Measured {
                default_us: 1100.3,
                avx2_us: 700.5,
                avx2: true
            })
        );
        assert_eq!(parse_note("garbage"), None);
        assert!(
            c.describe().contains("running the AVX2 code"),
            "{}",
            c.describe()
        );
    }
}
