//! Starting and stopping the real servers the end-to-end tests talk to.

use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A port that was free a moment ago (bound to port 0, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
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
        .arg("10")
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
