//! Entry point shared by the `cargo fuzz` target `smtp` in `fuzz/` and the corpus replay test,
//! so that both exercise exactly the same code on untrusted input.
//!
//! The fuzzer plays the mail program: its bytes go, in pieces, into a real session over a real
//! loopback connection. Behind the session sits an always-willing provider written here (a
//! real Postfix per input would run a few inputs a second instead of thousands), so commands,
//! AUTH exchanges, DATA and BDAT all reach the relay and policy code.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use crate::session::Context;
use crate::upstream::Timeouts;
use net::conn::{AuthThrottle, Conn, Limits};
use net::target::{Target, TargetTls};

struct Harness {
    rt: tokio::runtime::Runtime,
    listener: TcpListener,
    addr: SocketAddr,
    ctx: Arc<Context>,
    stop: tokio::sync::watch::Receiver<bool>,
    _stop_tx: tokio::sync::watch::Sender<bool>,
}

fn harness() -> &'static Harness {
    static H: OnceLock<Harness> = OnceLock::new();
    H.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let (listener, provider) = rt.block_on(async {
            let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let p = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            (l, p)
        });
        let provider_port = provider.local_addr().expect("addr").port();
        rt.spawn(willing_provider(provider));
        let addr = listener.local_addr().expect("addr");
        let (stop_tx, stop) = tokio::sync::watch::channel(false);
        let ctx = Arc::new(Context {
            upstream: Target {
                host: "127.0.0.1".into(),
                port: provider_port,
                tls: TargetTls::None,
            },
            tls: None,
            require_auth: false,
            hostname: "fuzz".into(),
            store: Arc::new(std::sync::RwLock::new(certstore::CertStore::new())),
            identities: Vec::new(),
            rules: std::sync::RwLock::new(crate::session::Rules {
                policy: policy::PolicyConfig::default(),
                header_protection: crate::outgoing::HeaderProtection {
                    enabled: true,
                    legacy_display: false,
                },
                refuse_foreign_sender: true,
            }),
            limits: Limits::default(),
            auth_throttle: Arc::new(AuthThrottle::new(1_000_000, Duration::from_secs(1))),
            directory: None,
            max_size: 1 << 20,
            max_recipients: 50,
            timeouts: Timeouts {
                connect: Duration::from_secs(2),
                command: Duration::from_secs(2),
                data_end: Duration::from_secs(2),
            },
            client_timeout: Duration::from_secs(2),
        });
        Harness {
            rt,
            listener,
            addr,
            ctx,
            stop,
            _stop_tx: stop_tx,
        }
    })
}

/// A provider that accepts everything: EHLO with AUTH and the usual extensions, any login,
/// any sender and recipient, DATA up to the dot.
async fn willing_provider(listener: TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        // Replies go out as they are written, as a real server flushes its pipelined replies:
        // with Nagle, the second of two small replies would wait for a delayed ACK (40 ms).
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let (r, mut w) = stream.into_split();
            let mut r = BufReader::new(r);
            let _ = w.write_all(b"220 provider ESMTP\r\n").await;
            let mut line = Vec::new();
            loop {
                line.clear();
                if r.read_until(b'\n', &mut line).await.unwrap_or(0) == 0 {
                    return;
                }
                let verb = line
                    .iter()
                    .take(4)
                    .map(|b| b.to_ascii_uppercase())
                    .collect::<Vec<u8>>();
                let reply: &[u8] = match verb.as_slice() {
                    b"EHLO" => b"250-provider\r\n250-AUTH PLAIN LOGIN\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250-PIPELINING\r\n250 SIZE 2000000\r\n",
                    b"AUTH" => b"235 2.7.0 ok\r\n",
                    b"DATA" => {
                        let _ = w.write_all(b"354 go\r\n").await;
                        loop {
                            line.clear();
                            if r.read_until(b'\n', &mut line).await.unwrap_or(0) == 0 {
                                return;
                            }
                            if line == b".\r\n" {
                                break;
                            }
                        }
                        b"250 2.0.0 queued\r\n"
                    }
                    b"QUIT" => {
                        let _ = w.write_all(b"221 bye\r\n").await;
                        return;
                    }
                    _ => b"250 2.0.0 ok\r\n",
                };
                if w.write_all(reply).await.is_err() {
                    return;
                }
            }
        });
    }
}

/// One SMTP session fed `data` as the client's bytes; returns the start of the replies (the
/// replay test checks that a well-formed transaction reaches the provider). The input is written in pieces (split at the byte values 0xff, which stand for "pause here"), so
/// commands are also seen split across reads.
pub fn session(data: &[u8]) -> Vec<u8> {
    let h = harness();
    h.rt.block_on(async {
        let Ok(client) = TcpStream::connect(h.addr).await else {
            return Vec::new();
        };
        let Ok((server, peer)) = h.listener.accept().await else {
            return Vec::new();
        };
        let task = tokio::spawn(crate::session::serve_one(
            Conn::Plain(server),
            peer,
            h.ctx.clone(),
            h.stop.clone(),
        ));
        let (mut r, mut w) = client.into_split();
        let writer = async move {
            for piece in data.split(|b| *b == 0xff) {
                if w.write_all(piece).await.is_err() {
                    return;
                }
                tokio::task::yield_now().await;
            }
            let _ = w.shutdown().await;
        };
        let reader = async move {
            let mut kept = Vec::new();
            let mut chunk = vec![0u8; 16384];
            while let Ok(n @ 1..) = r.read(&mut chunk).await {
                if kept.len() < 65536 {
                    kept.extend_from_slice(&chunk[..n]);
                }
            }
            kept
        };
        let ((), replies) = tokio::join!(writer, reader);
        let _ = task.await;
        replies
    })
}
