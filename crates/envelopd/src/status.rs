//! The loopback status endpoint: `/metrics` (OpenMetrics text for Prometheus), `/` (a small
//! server-rendered status page: certificates and their expiry, the provider's health, the last
//! decisions without content) and `/health` (for a plain up/down check).
//!
//! Requests are parsed with `httparse` (hyper's parser); one request per connection, bounded in
//! size and time. The page is served on loopback only and answers only requests that name a
//! loopback host, so a web page in the practice's browser cannot read it through DNS rebinding.

use std::fmt::Write as _;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use certstore::CertStore;
use net::observe::{self, Expiry};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Largest request accepted (header block), bytes.
const MAX_REQUEST: usize = 8192;

/// Days before expiry from which a certificate is shown as needing attention.
const SOON_DAYS: u64 = 30;

/// What the status page shows besides the process-wide records.
pub struct Status {
    /// Certificates and anchors, as the listeners use them.
    pub store: Arc<RwLock<CertStore>>,
    /// The practice's own certificates: (addresses, certificate).
    pub own: Vec<(String, smime::Cert)>,
    /// The listeners: (name, description).
    pub listeners: Vec<(String, String)>,
}

/// Serves until `stop` turns true.
pub async fn serve(
    listener: TcpListener,
    status: Arc<Status>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                let status = status.clone();
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(Duration::from_secs(10), answer(stream, &status)).await;
                });
            }
            _ = stop.changed() => return,
        }
    }
}

async fn answer(mut stream: TcpStream, status: &Status) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    let (method, path, host) = loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf) {
            Ok(httparse::Status::Complete(_)) => {
                let host = req
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("host"))
                    .map(|h| String::from_utf8_lossy(h.value).into_owned());
                break (
                    req.method.unwrap_or("").to_string(),
                    req.path.unwrap_or("").to_string(),
                    host,
                );
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_REQUEST => continue,
            _ => return respond(&mut stream, 400, "text/plain", "bad request\n").await,
        }
    };
    if !host.as_deref().is_some_and(loopback_host) {
        return respond(&mut stream, 403, "text/plain", "only for this machine\n").await;
    }
    if method != "GET" && method != "HEAD" {
        return respond(&mut stream, 405, "text/plain", "GET only\n").await;
    }
    let (code, kind, body) = match path.split('?').next().unwrap_or("") {
        "/metrics" => (
            200,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            observe::get().encode(&expiries(status)),
        ),
        "/" => (
            200,
            "text/html; charset=utf-8",
            page(status, SystemTime::now()),
        ),
        "/health" => (200, "text/plain", "ok\n".to_string()),
        _ => (404, "text/plain", "not found\n".to_string()),
    };
    let body = if method == "HEAD" {
        String::new()
    } else {
        body
    };
    respond(&mut stream, code, kind, &body).await
}

/// `localhost`, `127.0.0.1`, `[::1]`, with or without a port.
fn loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

async fn respond(stream: &mut TcpStream, code: u16, kind: &str, body: &str) -> std::io::Result<()> {
    let reason = match code {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        _ => "Method Not Allowed",
    };
    let head = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\
         Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\nReferrer-Policy: no-referrer\r\n\
         Content-Security-Policy: default-src 'none'; style-src 'unsafe-inline'\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

fn serial(c: &smime::Cert) -> String {
    c.parsed()
        .tbs_certificate()
        .serial_number()
        .as_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Every own and recipient certificate with its expiry, for the metrics.
fn expiries(status: &Status) -> Vec<Expiry> {
    let mut out: Vec<Expiry> = status
        .own
        .iter()
        .map(|(who, c)| Expiry {
            kind: "identity",
            address: who.clone(),
            serial: serial(c),
            not_after: c.validity().1,
        })
        .collect();
    let store = status.store.read().unwrap_or_else(|e| e.into_inner());
    for c in store.certs() {
        out.push(Expiry {
            kind: "recipient",
            address: c.mailboxes().join(","),
            serial: serial(c),
            not_after: c.validity().1,
        });
    }
    out
}

/// Text safe inside HTML element content and attribute values.
fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

fn when(t: SystemTime) -> String {
    smime::cert::fmt_time(t)
        .replace('T', " ")
        .replace('Z', " UTC")
}

/// "expired", "in N days" and a CSS class for a certificate's notAfter.
fn expiry_state(not_after: SystemTime, now: SystemTime) -> (String, &'static str) {
    match not_after.duration_since(now) {
        Err(_) => ("EXPIRED".into(), "bad"),
        Ok(left) => {
            let days = left.as_secs() / 86400;
            let class = if days < SOON_DAYS { "warn" } else { "ok" };
            (format!("in {days} days"), class)
        }
    }
}

/// The status page.
pub fn page(status: &Status, now: SystemTime) -> String {
    let o = observe::get();
    let mut h = String::with_capacity(16 * 1024);
    let up = now.duration_since(o.started).unwrap_or_default().as_secs();
    let _ = write!(
        h,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>envelopd status</title>\
         <meta name=\"viewport\" content=\"width=device-width\"><style>\
         body{{font:15px/1.4 system-ui,sans-serif;margin:1.5em auto;max-width:70em;color:#222;padding:0 1em}}\
         h1{{font-size:1.5em;margin:0}} h2{{font-size:1.1em;margin:1.6em 0 .4em;border-bottom:1px solid #ccc}}\
         table{{border-collapse:collapse;width:100%}} th,td{{text-align:left;padding:.25em .6em;border-bottom:1px solid #eee;vertical-align:top}}\
         th{{background:#f4f4f4;font-weight:600}} .ok{{color:#176f2c}} .warn{{color:#9a6700;font-weight:600}} .bad{{color:#b42318;font-weight:700}}\
         .muted{{color:#777}} code{{font-size:.95em}}</style></head><body>\
         <h1>envelopd status</h1><p class=\"muted\">version {} &middot; running for {}h {}m &middot; page made {}</p>",
        env!("CARGO_PKG_VERSION"),
        up / 3600,
        up % 3600 / 60,
        esc(&when(now))
    );

    h.push_str(
        "<h2>Listeners</h2><table><tr><th>Side</th><th>Listening</th><th>Sessions open</th></tr>",
    );
    for (name, desc) in &status.listeners {
        let _ = write!(
            h,
            "<tr><td>{}</td><td><code>{}</code></td><td>{}</td></tr>",
            esc(name),
            esc(desc),
            o.open_sessions(&name.to_ascii_lowercase())
        );
    }
    h.push_str("</table>");

    h.push_str("<h2>Provider</h2><table><tr><th>Server</th><th>Address</th><th>Last success</th><th>Last failure</th></tr>");
    let health = o.health();
    if health.is_empty() {
        h.push_str("<tr><td colspan=\"4\" class=\"muted\">not contacted yet</td></tr>");
    }
    for (proto, x) in health {
        let ok = x.last_ok.map(when).unwrap_or_else(|| "never".into());
        let (fail, class) = match (&x.last_error, x.last_ok) {
            (Some((t, why)), last_ok) => (
                format!("{} &mdash; {}", esc(&when(*t)), esc(why)),
                if last_ok.is_some_and(|ok| ok > *t) {
                    "muted"
                } else {
                    "bad"
                },
            ),
            (None, _) => ("none".into(), "ok"),
        };
        let _ = write!(
            h,
            "<tr><td>{}</td><td><code>{}</code></td><td>{}</td><td class=\"{class}\">{fail}</td></tr>",
            proto.to_ascii_uppercase(),
            esc(&x.target),
            esc(&ok)
        );
    }
    h.push_str("</table>");

    h.push_str("<h2>Own certificates</h2><table><tr><th>Addresses</th><th>Subject</th><th>Valid until</th><th>Expires</th></tr>");
    if status.own.is_empty() {
        h.push_str("<tr><td colspan=\"4\" class=\"muted\">none: mail is not signed</td></tr>");
    }
    for (who, c) in &status.own {
        let until = c.validity().1;
        let (state, class) = expiry_state(until, now);
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"{class}\">{state}</td></tr>",
            esc(who),
            esc(&c.subject()),
            esc(&when(until))
        );
    }
    h.push_str("</table>");

    let store = status.store.read().unwrap_or_else(|e| e.into_inner());
    let mut certs: Vec<&smime::Cert> = store.certs().iter().collect();
    certs.sort_by_key(|c| c.validity().1);
    let attention: Vec<&&smime::Cert> = certs
        .iter()
        .filter(|c| expiry_state(c.validity().1, now).1 != "ok")
        .collect();
    let _ = write!(
        h,
        "<h2>Recipient certificates</h2><p>{} held, {} trust anchors; {} expired or expiring within {SOON_DAYS} days{}</p>",
        certs.len(),
        store.anchors().len(),
        attention.len(),
        if attention.is_empty() { "." } else { ":" }
    );
    if !attention.is_empty() {
        h.push_str("<table><tr><th>Address</th><th>Valid until</th><th>Expires</th></tr>");
        for c in attention.iter().take(50) {
            let until = c.validity().1;
            let (state, class) = expiry_state(until, now);
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td class=\"{class}\">{state}</td></tr>",
                esc(&c.mailboxes().join(", ")),
                esc(&when(until))
            );
        }
        h.push_str("</table>");
    }
    drop(store);

    let recent = o.recent();
    let _ = write!(
        h,
        "<h2>Last decisions</h2><p class=\"muted\">The last {} messages sent through envelopd; subjects and contents are never kept.</p>\
         <table><tr><th>Time</th><th>From</th><th>Recipients</th><th>Decision</th><th>Cipher</th><th>Signed as</th><th>Reply</th></tr>",
        observe::RECENT
    );
    if recent.is_empty() {
        h.push_str("<tr><td colspan=\"7\" class=\"muted\">no messages yet</td></tr>");
    }
    for d in recent {
        let class = match (d.reply / 100, d.decision.as_str()) {
            (2, "plaintext") => "warn",
            (2, _) => "ok",
            _ => "bad",
        };
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"{class}\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&when(d.at)),
            esc(&d.from),
            d.recipients,
            esc(&d.decision),
            esc(&d.cipher),
            esc(&d.signed_as),
            d.reply
        );
    }
    h.push_str("</table><p class=\"muted\">Metrics for Prometheus: <code>/metrics</code></p></body></html>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_hosts_are_answered() {
        for ok in [
            "localhost",
            "localhost:9187",
            "127.0.0.1:9187",
            "[::1]:9187",
            "127.0.0.2",
        ] {
            assert!(loopback_host(ok), "{ok}");
        }
        for bad in [
            "evil.example:9187",
            "192.0.2.1",
            "localhost.evil.example",
            "[2001:db8::1]:1",
        ] {
            assert!(!loopback_host(bad), "{bad}");
        }
    }

    #[test]
    fn html_is_escaped() {
        assert_eq!(esc("<b a=\"x\">&'"), "&lt;b a=&quot;x&quot;&gt;&amp;&#39;");
    }
}
