//! A load client in the manner of Postfix's smtp-source, with STARTTLS: SESSIONS clients at
//! once, each message on a connection of its own (EHLO, STARTTLS, EHLO, MAIL, RCPT, DATA,
//! QUIT), until MESSAGES were accepted. Like a sending MTA with a client session cache, it
//! resumes TLS sessions: the first handshake to a target is full, later ones resume a session
//! the target issued, as long as the same `tls` configuration (its cache) is used.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::ClientConfig;

use crate::smtp::client::{ClientSettings, Connection, TlsMode};
use crate::tls::policy::TlsPolicy;

/// One load run.
#[derive(Debug, Clone)]
pub struct Load {
    pub target: SocketAddr,
    pub messages: usize,
    pub sessions: usize,
    pub starttls: bool,
    pub from: String,
    pub to: String,
    pub message: Arc<Vec<u8>>,
    /// The client configuration, whose session cache lets later handshakes resume: keep one per
    /// target across runs.
    pub tls: Arc<ClientConfig>,
}

/// What a run achieved.
#[derive(Debug, Clone, Copy)]
pub struct Accepted {
    pub messages: usize,
    pub elapsed: Duration,
    /// TLS handshakes made, and how many of them resumed a session.
    pub handshakes: usize,
    pub resumed: usize,
}

impl Accepted {
    pub fn rate(&self) -> f64 {
        self.messages as f64 / self.elapsed.as_secs_f64()
    }
}

impl Load {
    /// Sends every message; fails on the first refusal or broken connection.
    pub async fn run(&self) -> anyhow::Result<Accepted> {
        let settings = ClientSettings {
            helo_name: "load.test".into(),
            timeout: Duration::from_secs(60),
            tls: self.tls.clone(),
        };
        let mode = if self.starttls {
            TlsMode::Required
        } else {
            TlsMode::Plaintext
        };
        let next = Arc::new(AtomicUsize::new(0));
        let handshakes = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
        let start = Instant::now();
        let mut clients = tokio::task::JoinSet::new();
        for _ in 0..self.sessions.max(1) {
            let (next, settings, load) = (next.clone(), settings.clone(), self.clone());
            let handshakes = handshakes.clone();
            clients.spawn(async move {
                let policy = TlsPolicy::opportunistic(settings.tls.clone());
                let to = [load.to.clone()];
                while next.fetch_add(1, Ordering::Relaxed) < load.messages {
                    let mut conn =
                        Connection::open(load.target, "mta.test", &settings, mode).await?;
                    conn.authorize(&policy)?;
                    if let Some(tls) = conn.tls() {
                        handshakes[usize::from(tls.resumed)].fetch_add(1, Ordering::Relaxed);
                    }
                    let replies = conn.send(&policy, &load.from, &to, &load.message).await?;
                    if let Some(Err(r)) = replies.first() {
                        anyhow::bail!("refused: {r}");
                    }
                    conn.quit().await;
                }
                anyhow::Ok(())
            });
        }
        while let Some(r) = clients.join_next().await {
            r??;
        }
        Ok(Accepted {
            messages: self.messages,
            elapsed: start.elapsed(),
            handshakes: handshakes.iter().map(|n| n.load(Ordering::Relaxed)).sum(),
            resumed: handshakes[1].load(Ordering::Relaxed),
        })
    }
}
