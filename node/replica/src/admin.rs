//! The admin endpoint (loopback only): `GET /healthz`, `GET /metrics` (Prometheus text) and
//! `GET /committed?from=H` (the last committed ledgers' heights, commit times and transaction
//! ids, one line each: what `bench localnet` measures finality with).
//!
//! A deliberately tiny HTTP/1.1 responder — fixed paths, one bounded request per connection;
//! requests over 8 KiB, slower than 5 s or not a GET are answered with 4xx and closed. The
//! metrics themselves are [`crate::metrics`].

use std::{net::SocketAddr, sync::Arc, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

use crate::metrics::Metrics;

/// Serves the admin endpoint until the runtime stops: at most
/// [`limits::ADMIN_CONNECTIONS_MAX`] connections, [`limits::ADMIN_CONNECTIONS_PER_SOURCE`] from one
/// source (others closed at once), each request read and answered within
/// [`limits::ADMIN_REQUEST_DEADLINE`].
pub(crate) async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    role: &'static str,
    transport: &'static str,
) {
    if let Err(e) = edge::widen_backlog(&listener, limits::LISTEN_BACKLOG) {
        eprintln!("caasiope: cannot widen the accept queue: {e}");
    }
    let slots = edge::Slots::new(
        limits::ADMIN_CONNECTIONS_MAX,
        limits::ADMIN_CONNECTIONS_PER_SOURCE,
        metrics.edge.admin.clone(),
    );
    loop {
        let (mut stream, from) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tokio::time::sleep(edge::accept_backoff(&e)).await;
                continue;
            }
        };
        let Ok(slot) = slots.admit(from.ip()) else { continue };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let answered = tokio::time::timeout(limits::ADMIN_REQUEST_DEADLINE, async {
                let response = match read_request(&mut stream).await {
                    Ok(path) if path == "/healthz" => ok("text/plain", "ok\n"),
                    Ok(path) if path.starts_with("/healthz?") => ok("text/plain", "ok\n"),
                    Ok(path) if path.starts_with("/committed") => {
                        let from =
                            path.split_once("?from=").and_then(|(_, h)| h.parse::<u64>().ok()).unwrap_or(0);
                        ok("text/plain", &metrics.committed(from))
                    }
                    Ok(path) if path == "/metrics" => {
                        ok("text/plain; version=0.0.4", &metrics.render(role, transport))
                    }
                    Ok(_) => status("404 Not Found", "no such path; try /healthz or /metrics\n"),
                    Err(why) => status(why, "bad request\n"),
                };
                let _ = stream.write_all(response.as_bytes()).await;
                let _ = stream.shutdown().await;
            })
            .await;
            if answered.is_err() {
                slot.stats().deadline_missed();
            }
        });
    }
}

async fn read_request(stream: &mut tokio::net::TcpStream) -> Result<String, &'static str> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk).await.map_err(|_| "400 Bad Request")?;
        if n == 0 {
            return Err("400 Bad Request");
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > limits::ADMIN_REQUEST_BYTES_MAX {
            return Err("431 Request Header Fields Too Large");
        }
    }
    let line = buf.split(|&b| b == b'\r').next().unwrap_or_default();
    let line = std::str::from_utf8(line).map_err(|_| "400 Bad Request")?;
    let mut parts = line.split(' ');
    match (parts.next(), parts.next()) {
        (Some("GET"), Some(path)) => Ok(path.to_owned()),
        (Some(_), Some(_)) => Err("405 Method Not Allowed"),
        _ => Err("400 Bad Request"),
    }
}

fn ok(content_type: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
}

fn status(status: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// `GET path` on `addr`, for tests and `localnet`: the body of a 200 answer.
pub fn get(addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.1\r\nhost: {addr}\r\n\r\n")?;
    let mut text = String::new();
    s.take(16 << 20).read_to_string(&mut text)?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    if !head.starts_with("HTTP/1.1 200") {
        anyhow::bail!("{}", head.lines().next().unwrap_or("no answer"));
    }
    Ok(body.to_owned())
}

/// The value of metric `name` (without labels) in a Prometheus text body.
pub fn metric(body: &str, name: &str) -> Option<u64> {
    body.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')).and_then(|v| v.trim().parse().ok())
    })
}
