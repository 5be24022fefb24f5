//! The API's listener: at most [`limits::API_CONNECTIONS_MAX`] connections at once (more wait in the
//! kernel's backlog), each closed after [`limits::API_IDLE_TIMEOUT`] without a byte either way — a client
//! that opens connections and sends nothing, or a request header byte by byte forever, holds a
//! slot for a bounded time only. (A live event stream writes a keep-alive every 15 s.)

use std::{
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore},
    time::{Instant, Sleep},
};

/// A [`TcpListener`] bounded in connections and idleness.
pub(crate) struct Limited {
    inner: TcpListener,
    slots: Arc<Semaphore>,
    idle: Duration,
}

impl Limited {
    pub(crate) fn new(inner: TcpListener, connections: usize, idle: Duration) -> Self {
        Self { inner, slots: Arc::new(Semaphore::new(connections)), idle }
    }
}

impl axum::serve::Listener for Limited {
    type Io = Conn;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        // Never closed: acquiring only waits for a connection to end.
        let permit = loop {
            if let Ok(p) = self.slots.clone().acquire_owned().await {
                break p;
            }
        };
        loop {
            match self.inner.accept().await {
                Ok((stream, addr)) => {
                    let _ = stream.set_nodelay(true);
                    let idle = Box::pin(tokio::time::sleep(self.idle));
                    return (Conn { stream, _permit: permit, idle, timeout: self.idle }, addr);
                }
                // Out of descriptors and the like: wait a moment instead of spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// An accepted connection: its slot is freed when it is dropped.
pub(crate) struct Conn {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
    idle: Pin<Box<Sleep>>,
    timeout: Duration,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn").field("stream", &self.stream).finish_non_exhaustive()
    }
}

impl Conn {
    fn active(&mut self) {
        self.idle.as_mut().reset(Instant::now() + self.timeout);
    }

    /// Pending I/O: an error once the connection has been idle too long (the timer wakes the
    /// task when it fires).
    fn idle_check(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        match self.idle.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(io::Error::new(io::ErrorKind::TimedOut, "idle connection")),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.stream).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    self.active();
                }
                Poll::Ready(r)
            }
            Poll::Pending => self.idle_check(cx).map(Err),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.stream).poll_write(cx, data) {
            Poll::Ready(r) => {
                if matches!(r, Ok(n) if n > 0) {
                    self.active();
                }
                Poll::Ready(r)
            }
            Poll::Pending => self.idle_check(cx).map(Err),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.stream).poll_write_vectored(cx, bufs) {
            Poll::Ready(r) => {
                if matches!(r, Ok(n) if n > 0) {
                    self.active();
                }
                Poll::Ready(r)
            }
            Poll::Pending => self.idle_check(cx).map(Err),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use axum::{Router, routing::get};

    use super::*;

    /// Serves `GET /` through a [`Limited`] listener; returns its address.
    fn serve(runtime: &tokio::runtime::Runtime, slots: usize, idle: Duration) -> std::net::SocketAddr {
        let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap();
        let limited = Limited::new(listener, slots, idle);
        runtime.spawn(async move {
            let _ = axum::serve(limited, Router::new().route("/", get(|| async { "ok" }))).await;
        });
        addr
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap()
    }

    const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n";

    #[test]
    fn a_request_waits_for_a_free_slot() {
        let runtime = runtime();
        let addr = serve(&runtime, 2, Duration::from_secs(600));
        let mut silent: Vec<std::net::TcpStream> =
            (0..2).map(|_| std::net::TcpStream::connect(addr).unwrap()).collect();
        let mut third = std::net::TcpStream::connect(addr).unwrap();
        third.write_all(REQUEST).unwrap();
        // Both slots are held: no answer yet.
        third.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        let mut buf = [0u8; 64];
        assert!(third.read(&mut buf).is_err(), "answered while every slot was taken");
        // One silent connection goes: the request is served.
        drop(silent.pop());
        third.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut answer = String::new();
        third.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }

    #[test]
    fn an_idle_connection_is_closed() {
        let runtime = runtime();
        let addr = serve(&runtime, 8, Duration::from_millis(200));
        let mut silent = std::net::TcpStream::connect(addr).unwrap();
        // Half a request header, then nothing.
        silent.write_all(b"GET / HTTP/1.1\r\nhost").unwrap();
        silent.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut buf = [0u8; 64];
        assert_eq!(silent.read(&mut buf).unwrap_or(0), 0, "the idle connection stays open");
        // The listener still serves.
        let mut other = std::net::TcpStream::connect(addr).unwrap();
        other.write_all(REQUEST).unwrap();
        other.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut answer = String::new();
        other.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
}
