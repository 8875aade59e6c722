//! The client-facing SMTP session: commands parsed with `smtp-proto`, MAIL and RCPT relayed to
//! the provider with its replies, the message collected at DATA, transformed by the policy, and
//! sent; **the client's final reply is the provider's reply to the transformed message**. There is
//! no local queue: if the provider does not take the message, the client gets 4xx/5xx and keeps it.
//!
//! This first version relays to a provider without TLS or AUTH (a server on this machine) and
//! offers neither STARTTLS nor AUTH to clients; both come next.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use certstore::CertStore;
use policy::{decide, Decision, Identities, MessageFacts, PolicyConfig};
use smime::{Cert, Identity, SignOptions};
use smtp_proto::request::receiver::{DataReceiver, RequestReceiver};
use smtp_proto::Request;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

use crate::outgoing::{copies, Refusal};
use crate::upstream::{Reply, Timeouts, Upstream};

/// One signing identity and the sender addresses it may sign for.
pub struct SenderIdentity {
    /// The addresses (the certificate must name each).
    pub addresses: Vec<String>,
    /// Key and certificates.
    pub identity: Identity,
    /// A separate encryption certificate for the Sent copy, if any.
    pub encryption_cert: Option<Cert>,
}

/// Everything a session needs, shared by all sessions.
pub struct Context {
    /// `host:port` of the provider's submission server.
    pub upstream: String,
    /// The name envelopd uses in EHLO and its greeting.
    pub hostname: String,
    /// Certificates and trust anchors.
    pub store: CertStore,
    /// The practice's signing identities.
    pub identities: Vec<SenderIdentity>,
    /// The outgoing policy.
    pub policy: PolicyConfig,
    /// The largest message accepted (bytes), unless the provider announces less.
    pub max_size: usize,
    /// The most recipients per message.
    pub max_recipients: usize,
    /// Waits towards the provider.
    pub timeouts: Timeouts,
    /// How long a client may be silent.
    pub client_timeout: Duration,
}

impl Context {
    fn identity_for(&self, address: &str) -> Option<&SenderIdentity> {
        self.identities.iter().find(|i| {
            i.addresses
                .iter()
                .any(|a| certstore::address_matches(a, address))
        })
    }
}

impl Identities for Context {
    fn can_sign_as(&self, address: &str) -> bool {
        self.identity_for(address).is_some_and(|i| {
            self.store
                .validate(
                    &i.identity.cert,
                    certstore::Purpose::Sign,
                    address,
                    &i.identity.chain,
                    SystemTime::now(),
                )
                .is_ok()
        })
    }

    fn own_encryption_cert(&self, address: &str) -> Option<Cert> {
        let i = self.identity_for(address)?;
        let cert = i
            .encryption_cert
            .clone()
            .unwrap_or_else(|| i.identity.cert.clone());
        self.store
            .validate(
                &cert,
                certstore::Purpose::Encrypt,
                address,
                &i.identity.chain,
                SystemTime::now(),
            )
            .is_ok()
            .then_some(cert)
    }
}

/// How long open sessions may take to finish after shutdown was asked for.
pub const DRAIN_TIME: Duration = Duration::from_secs(60);

/// Accepts clients until `shutdown` turns true; one task per connection. Then stops accepting,
/// tells idle sessions goodbye (421), lets sessions in the middle of a message finish (at most
/// [`DRAIN_TIME`]) and returns: a message being relayed is never cut off by a restart.
pub async fn serve(
    listener: TcpListener,
    ctx: Arc<Context>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    use tracing::Instrument;
    let mut sessions = tokio::task::JoinSet::new();
    let mut next_id: u64 = 0;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = accepted?;
                // Replies are small and each waits for the next command: no Nagle delay.
                let _ = stream.set_nodelay(true);
                next_id += 1;
                let session = Session::new(stream, ctx.clone(), shutdown.clone());
                let span = tracing::info_span!("smtp", session = next_id, %peer);
                sessions.spawn(
                    async move {
                        tracing::debug!("connected");
                        // A broken client connection ends only its own session.
                        if let Err(e) = session.run().await {
                            tracing::info!(error = %e, "client connection ended");
                        }
                    }
                    .instrument(span),
                );
            }
            _ = shutdown.changed() => break,
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
        }
    }
    drop(listener);
    tracing::info!(
        open = sessions.len(),
        "no new connections; letting open sessions finish"
    );
    let drain = async { while sessions.join_next().await.is_some() {} };
    if timeout(DRAIN_TIME, drain).await.is_err() {
        tracing::warn!(
            open = sessions.len(),
            "sessions still open after the drain time; closing them"
        );
        sessions.abort_all();
    }
    Ok(())
}

struct Session {
    client: TcpStream,
    ctx: Arc<Context>,
    shutdown: tokio::sync::watch::Receiver<bool>,
    inbuf: Vec<u8>,
    helo: bool,
    mail_from: Option<String>,
    rcpts: Vec<String>,
    upstream: Option<Upstream>,
}

enum Flow {
    Continue,
    Quit,
}

impl Session {
    fn new(
        client: TcpStream,
        ctx: Arc<Context>,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        Session {
            client,
            ctx,
            shutdown,
            inbuf: Vec::with_capacity(4096),
            helo: false,
            mail_from: None,
            rcpts: Vec::new(),
            upstream: None,
        }
    }

    async fn send(&mut self, reply: &Reply) -> std::io::Result<()> {
        self.client.write_all(reply.line().as_bytes()).await
    }

    /// Reads more client input. Between commands (`idle`) a shutdown ends the session with 421;
    /// in the middle of a message it does not, so the message can still be delivered.
    async fn fill(&mut self, idle: bool) -> std::io::Result<bool> {
        let mut chunk = [0u8; 8192];
        let read = timeout(self.ctx.client_timeout, self.client.read(&mut chunk));
        let n = if idle {
            if *self.shutdown.borrow() {
                let _ = self
                    .send(&Reply::new(
                        421,
                        "4.3.2",
                        "envelopd is shutting down, try again shortly",
                    ))
                    .await;
                return Ok(false);
            }
            let mut shutdown = self.shutdown.clone();
            tokio::select! {
                r = read => r,
                _ = shutdown.changed() => {
                    let _ = self.send(&Reply::new(421, "4.3.2", "envelopd is shutting down, try again shortly")).await;
                    return Ok(false);
                }
            }
        } else {
            read.await
        };
        let n = match n {
            Ok(r) => r?,
            Err(_) => {
                let _ = self
                    .send(&Reply::new(421, "4.4.2", "timeout, closing"))
                    .await;
                return Ok(false);
            }
        };
        self.inbuf.extend_from_slice(&chunk[..n]);
        Ok(n > 0)
    }

    async fn run(mut self) -> std::io::Result<()> {
        let greeting = Reply::new(220, "", format!("{} ESMTP envelopd", self.ctx.hostname));
        self.send(&greeting).await?;
        let mut receiver = RequestReceiver::default();
        loop {
            // Parse as many commands as are buffered (pipelining), then read more.
            let mut iter = self.inbuf.iter();
            let parsed = receiver.ingest(&mut iter).map(|r| r.into_owned());
            let consumed = self.inbuf.len() - iter.as_slice().len();
            self.inbuf.drain(..consumed);
            let flow = match parsed {
                Ok(req) => self.handle(req).await?,
                Err(smtp_proto::Error::NeedsMoreData { .. }) => {
                    if !self.fill(true).await? {
                        break;
                    }
                    continue;
                }
                Err(e) => {
                    self.send(&syntax_reply(&e)).await?;
                    Flow::Continue
                }
            };
            if let Flow::Quit = flow {
                break;
            }
        }
        if let Some(up) = self.upstream.take() {
            up.quit().await;
        }
        Ok(())
    }

    async fn handle(&mut self, req: Request<String>) -> std::io::Result<Flow> {
        let reply = match req {
            Request::Ehlo { host: _ } | Request::Helo { host: _ } => {
                let is_ehlo = matches!(req, Request::Ehlo { .. });
                self.reset().await;
                self.helo = true;
                if is_ehlo {
                    let size = self.ctx.max_size;
                    let text = format!(
                        "250-{}\r\n250-SIZE {size}\r\n250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n250 PIPELINING\r\n",
                        self.ctx.hostname
                    );
                    self.client.write_all(text.as_bytes()).await?;
                    return Ok(Flow::Continue);
                }
                Reply::new(250, "", self.ctx.hostname.clone())
            }
            Request::Mail { from } => self.mail(from.address, from.size).await,
            Request::Rcpt { to } => self.rcpt(to.address).await,
            Request::Data => return self.data().await.map(|_| Flow::Continue),
            Request::Rset => {
                self.reset().await;
                Reply::new(250, "2.0.0", "OK")
            }
            Request::Noop { .. } => Reply::new(250, "2.0.0", "OK"),
            Request::Quit => {
                self.send(&Reply::new(221, "2.0.0", "Bye")).await?;
                return Ok(Flow::Quit);
            }
            Request::Vrfy { .. } => {
                Reply::new(252, "2.5.0", "cannot verify, but will try to deliver")
            }
            Request::StartTls => Reply::new(454, "4.7.0", "TLS is not available on this listener"),
            Request::Auth { .. } => {
                Reply::new(502, "5.5.1", "AUTH is not offered on this listener")
            }
            Request::Bdat { .. } => Reply::new(502, "5.5.1", "BDAT is not supported, use DATA"),
            other => Reply::new(502, "5.5.1", format!("{} is not supported", other.name())),
        };
        self.send(&reply).await?;
        Ok(Flow::Continue)
    }

    async fn reset(&mut self) {
        if self.mail_from.is_some() {
            if let Some(up) = self.upstream.as_mut() {
                if up.command("RSET").await.is_err() {
                    self.upstream = None;
                }
            }
        }
        self.mail_from = None;
        self.rcpts.clear();
    }

    async fn mail(&mut self, from: String, size: usize) -> Reply {
        if !self.helo {
            return Reply::new(503, "5.5.1", "say EHLO first");
        }
        if self.mail_from.is_some() {
            return Reply::new(503, "5.5.1", "nested MAIL command");
        }
        if size > self.ctx.max_size {
            return Reply::new(
                552,
                "5.3.4",
                format!("message too big (limit {} bytes)", self.ctx.max_size),
            );
        }
        if self.upstream.is_none() {
            match Upstream::connect(&self.ctx.upstream, &self.ctx.hostname, self.ctx.timeouts).await
            {
                Ok(up) => self.upstream = Some(up),
                Err(r) => return r,
            }
        }
        let up = self.upstream.as_mut().expect("connected above");
        match up.command(&format!("MAIL FROM:<{from}>")).await {
            Ok(r) => {
                if r.is_positive() {
                    self.mail_from = Some(from);
                }
                r
            }
            Err(r) => {
                self.upstream = None;
                r
            }
        }
    }

    async fn rcpt(&mut self, to: String) -> Reply {
        if self.mail_from.is_none() {
            return Reply::new(503, "5.5.1", "need MAIL before RCPT");
        }
        if self.rcpts.len() >= self.ctx.max_recipients {
            return Reply::new(
                452,
                "4.5.3",
                format!("too many recipients (at most {})", self.ctx.max_recipients),
            );
        }
        let Some(up) = self.upstream.as_mut() else {
            return Reply::new(451, "4.4.1", "provider connection lost");
        };
        match up.command(&format!("RCPT TO:<{to}>")).await {
            Ok(r) => {
                if r.is_positive() {
                    self.rcpts.push(to);
                }
                r
            }
            Err(r) => {
                self.upstream = None;
                r
            }
        }
    }

    /// Collects the message, decides, sends, and answers with the provider's final reply.
    async fn data(&mut self) -> std::io::Result<()> {
        if self.mail_from.is_none() {
            return self
                .send(&Reply::new(503, "5.5.1", "need MAIL before DATA"))
                .await;
        }
        if self.rcpts.is_empty() {
            return self
                .send(&Reply::new(554, "5.5.1", "no valid recipients"))
                .await;
        }
        self.send(&Reply::new(354, "", "end data with <CR><LF>.<CR><LF>"))
            .await?;
        let limit = self.ctx.max_size;
        let mut message = Vec::with_capacity(64 * 1024);
        let mut receiver = DataReceiver::new();
        let mut too_big = false;
        loop {
            let mut iter = self.inbuf.iter();
            let done = if too_big {
                // Keep reading to the end of the data, but do not keep it.
                let mut sink = Vec::new();
                receiver.ingest(&mut iter, &mut sink)
            } else {
                receiver.ingest(&mut iter, &mut message)
            };
            let consumed = self.inbuf.len() - iter.as_slice().len();
            self.inbuf.drain(..consumed);
            if message.len() > limit {
                too_big = true;
                message = Vec::new();
            }
            if done {
                break;
            }
            if !self.fill(false).await? {
                // The client went away mid-DATA: nothing was sent, nothing is lost.
                self.upstream = None;
                return Ok(());
            }
        }
        let reply = if too_big {
            Reply::new(
                552,
                "5.3.4",
                format!("message too big (limit {limit} bytes)"),
            )
        } else {
            self.deliver(message).await
        };
        self.mail_from = None;
        self.rcpts.clear();
        self.send(&reply).await
    }

    async fn deliver(&mut self, message: Vec<u8>) -> Reply {
        let rcpts = self.rcpts.clone();
        let from = self.mail_from.clone().unwrap_or_default();
        let facts = MessageFacts::from_message(&message, rcpts.clone());
        let now = SystemTime::now();
        let decision = decide(
            &facts,
            &self.ctx.store,
            self.ctx.as_ref(),
            &self.ctx.policy,
            now,
        );
        let signer = match &decision {
            Decision::Deliver {
                sign_as: Some(a), ..
            } => self.ctx.identity_for(a).map(|i| &i.identity),
            _ => None,
        };
        let encryption_cert = match &decision {
            Decision::Deliver {
                sign_as: Some(a), ..
            } => self
                .ctx
                .identity_for(a)
                .and_then(|i| i.encryption_cert.clone()),
            _ => None,
        };
        let opts = SignOptions {
            digest: None,
            rsa_padding: smime::RsaPadding::Pkcs1v15,
            signing_time: now,
            encryption_cert,
        };
        log_decision(&decision, rcpts.len(), message.len());
        let out = match copies(&message, &rcpts, &decision, signer, &opts) {
            Ok(c) => c,
            Err(Refusal::Policy {
                code,
                enhanced,
                text,
            }) => {
                self.reset().await;
                return Reply::new(code, enhanced, text);
            }
            Err(Refusal::Crypto(e)) => {
                tracing::error!(error = %e, "signing or encryption failed");
                self.reset().await;
                return Reply::new(
                    451,
                    "4.7.0",
                    format!("envelopd could not sign or encrypt the message: {e}"),
                );
            }
        };
        drop(message);
        let Some(up) = self.upstream.as_mut() else {
            return Reply::new(451, "4.4.1", "provider connection lost");
        };
        // The common case: one copy for exactly the recipients already given to the provider,
        // so the open transaction continues and the provider's reply is the client's reply.
        if out.len() == 1 && out[0].recipients == rcpts {
            return match up.data(&out[0].message).await {
                Ok(r) => r,
                Err(r) => {
                    self.upstream = None;
                    r
                }
            };
        }
        // Several copies (Bcc privacy, split): one transaction each.
        if let Err(r) = up.command("RSET").await {
            self.upstream = None;
            return r;
        }
        let mut delivered: Vec<&str> = Vec::new();
        for copy in &out {
            match up.transaction(&from, &copy.recipients, &copy.message).await {
                Ok(r) if r.is_positive() => {
                    delivered.extend(copy.recipients.iter().map(String::as_str))
                }
                Ok(r) | Err(r) => {
                    if delivered.is_empty() {
                        // Nothing went out: the client gets the provider's answer and keeps the message.
                        return r;
                    }
                    // Some copies are out and cannot be recalled: say exactly who has it.
                    return Reply::new(
                        554,
                        "5.0.0",
                        format!(
                            "partly delivered: accepted for {}; refused for {}: {} {}",
                            delivered.join(", "),
                            copy.recipients.join(", "),
                            r.code,
                            r.text
                        ),
                    );
                }
            }
        }
        Reply::new(
            250,
            "2.0.0",
            format!("delivered in {} separately protected copies", out.len()),
        )
    }
}

/// One event per decision: what was done, to how many, never who wrote what.
fn log_decision(decision: &Decision, recipients: usize, size: usize) {
    match decision {
        Decision::PassThrough => {
            tracing::info!(
                recipients,
                size,
                "already protected by the client: passed through"
            )
        }
        Decision::Refuse { text, .. } => {
            tracing::info!(recipients, size, reason = %text, "refused")
        }
        Decision::Deliver {
            sign_as,
            deliveries,
            unprotected,
        } => {
            let encrypted = deliveries.iter().filter(|d| d.encrypt.is_some()).count();
            tracing::info!(
                recipients,
                size,
                signed_as = sign_as.as_deref().unwrap_or("-"),
                copies = deliveries.len(),
                encrypted_copies = encrypted,
                "sending"
            );
            for (address, why) in unprotected {
                tracing::warn!(%address, reason = %why, "sent unencrypted (policy fallback)");
            }
        }
    }
}

fn syntax_reply(e: &smtp_proto::Error) -> Reply {
    match e {
        smtp_proto::Error::UnknownCommand => Reply::new(500, "5.5.2", "unknown command"),
        smtp_proto::Error::ResponseTooLong => Reply::new(500, "5.5.6", "line too long"),
        smtp_proto::Error::InvalidSenderAddress => Reply::new(501, "5.1.7", "bad sender address"),
        smtp_proto::Error::InvalidRecipientAddress => {
            Reply::new(501, "5.1.3", "bad recipient address")
        }
        smtp_proto::Error::SyntaxError { syntax } => {
            Reply::new(501, "5.5.2", format!("syntax: {syntax}"))
        }
        smtp_proto::Error::InvalidParameter { param } => {
            Reply::new(501, "5.5.4", format!("invalid parameter {param}"))
        }
        smtp_proto::Error::UnsupportedParameter { param } => {
            Reply::new(504, "5.5.4", format!("unsupported parameter {param}"))
        }
        other => Reply::new(500, "5.5.2", format!("{other:?}")),
    }
}
