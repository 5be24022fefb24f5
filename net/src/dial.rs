//! Keeping a connection to one peer: dial, run, and after any failure dial again with
//! exponential back-off.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use rustls::ClientConfig;
use tokio::{net::TcpStream, time::Instant};

use crate::{
    conn::{ConnConfig, ConnError, Inbound, LinkStats, PeerHandle, connection},
    secure,
    transport::Transport,
};

/// Delays between attempts: `min`, doubling up to `max`; back to `min` after a connection
/// that lasted `stable` or more.
#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    /// First delay.
    pub min: Duration,
    /// Largest delay.
    pub max: Duration,
    /// A connection up this long resets the delay.
    pub stable: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            min: Duration::from_millis(100),
            max: Duration::from_secs(10),
            stable: Duration::from_secs(30),
        }
    }
}

impl Backoff {
    fn next(&self, current: Duration) -> Duration {
        (current * 2).clamp(self.min, self.max)
    }
}

/// What happened to one attempt, for the caller's log.
#[derive(Debug)]
pub enum Attempt {
    /// TCP connect or the TLS handshake failed.
    DialFailed(String),
    /// A connection was up, then ended.
    Ended(ConnError),
}

/// Dials `addr` until a TLS connection is up, then runs it (configured by `cfg`, counted in
/// `stats`), handing the caller its handle and inbound queues through `on_connect`; when it
/// ends, reports it through `on_attempt`, waits and dials again. Runs until the caller drops
/// the future (or `on_connect` returns `false`).
pub async fn keep_connected(
    addr: SocketAddr,
    tls: Arc<ClientConfig>,
    transport: Transport,
    (cfg, stats): (ConnConfig, Arc<LinkStats>),
    backoff: Backoff,
    mut on_connect: impl FnMut(PeerHandle, Inbound) -> bool,
    mut on_attempt: impl FnMut(&Attempt, Duration),
) {
    let mut delay = backoff.min;
    loop {
        let attempt = async {
            let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
            let stream = transport.wrap(tcp).map_err(|e| e.to_string())?;
            secure::connect(tls.clone(), stream).await.map_err(|e| e.to_string())
        };
        let outcome = match tokio::time::timeout(cfg.hello_timeout, attempt).await {
            Err(_) => Attempt::DialFailed("timed out".into()),
            Ok(Err(e)) => Attempt::DialFailed(e),
            Ok(Ok(tls)) => {
                let (handle, inbound, driver) = connection(cfg.clone());
                if !on_connect(handle, inbound) {
                    return;
                }
                let up = Instant::now();
                let ended = driver.counted_in(stats.clone()).run(tls).await;
                if up.elapsed() >= backoff.stable {
                    delay = backoff.min;
                }
                Attempt::Ended(ended)
            }
        };
        on_attempt(&outcome, delay);
        tokio::time::sleep(delay).await;
        delay = backoff.next(delay);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_maximum() {
        let b = Backoff {
            min: Duration::from_millis(100),
            max: Duration::from_millis(1_000),
            stable: Duration::ZERO,
        };
        let mut d = b.min;
        let mut seen = vec![d];
        for _ in 0..6 {
            d = b.next(d);
            seen.push(d);
        }
        let ms: Vec<u128> = seen.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, [100, 200, 400, 800, 1_000, 1_000, 1_000]);
    }
}
