//! Starting and stopping the real servers the end-to-end tests talk to.

use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A port that was free a moment ago, taken below the kernel's ephemeral range.
///
/// Why not port 0: the kernel hands out the same range as source ports of outgoing
/// connections, so a test opening thousands of client connections in parallel could take the
/// number between our probe and the daemon's bind (seen in CI: "nothing listens on 41071").
/// Ports 20000..32000 are never chosen as source ports with Debian's default range.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    // A start that differs between test processes, so two binaries rarely probe the same
    // ports; within one process the counter walks distinct ports (13 is coprime to 12,000).
    static SEED: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    let seed = *SEED.get_or_init(|| {
        std::process::id().wrapping_mul(7919)
            ^ std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0)
    });
    for _ in 0..12_000 {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = 20_000 + (seed.wrapping_add(n.wrapping_mul(13)) % 12_000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in 20000..32000");
}

/// Waits until something accepts connections on the loopback port (at most 10 s).
pub fn wait_for(port: u16) {
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "nothing listens on {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A child process killed when the test ends, pass or fail.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Sends `signal` (`HUP`, `INT`, `TERM`, …) to process `pid` with kill(1).
pub fn signal(pid: u32, signal: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill -{signal} {pid} failed");
}

/// True when the tests run as root (CI does).
pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0\n"))
        .unwrap_or(false)
}

/// Postfix's smtp-sink on `port`, dumping each message into `dir`; `extra` are fault options.
pub fn smtp_sink(dir: &Path, port: u16, extra: &[&str]) -> Proc {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let mut c = Command::new("smtp-sink");
    if is_root() {
        c.args(["-u", "nobody"]);
    }
    c.args(extra)
        .arg("-d")
        .arg(dir.join("%H%M%S"))
        .arg(format!("127.0.0.1:{port}"))
        // A backlog for bursts: with a short queue the kernel drops the handshake's last ACK and
        // the connection completes only after SYN-ACK retransmissions (seconds).
        .arg("256")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let p = Proc(c.spawn().expect("smtp-sink (package postfix) is installed"));
    wait_for(port);
    p
}

/// This machine's first IPv4 address that is not loopback (how a LAN client reaches a gateway).
pub fn lan_address() -> String {
    let o = Command::new("hostname").arg("-I").output().unwrap();
    String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .find(|a| {
            a.parse::<std::net::Ipv4Addr>()
                .is_ok_and(|ip| !ip.is_loopback())
        })
        .expect("the LAN tests need a non-loopback IPv4 address on this machine")
        .to_string()
}
