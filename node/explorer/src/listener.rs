//! The API's listener and how its connections are served (bounds in `caasiope-limits`):
//! - at most [`limits::API_CONNECTIONS_MAX`] connections at once (more wait in the kernel's
//!   backlog), at most [`limits::API_CONNECTIONS_PER_SOURCE`] from one source — an IPv4 address
//!   or an IPv6 /64 — whose next connections are closed at once and counted (`caasiope-edge`);
//! - a request's header must arrive whole within [`limits::API_HEADER_DEADLINE`] (hyper's header
//!   timer; the connection is closed and counted otherwise), its body within
//!   [`limits::API_BODY_DEADLINE`] of the header ([`DeadlineBody`]: answered 408);
//! - a connection without a byte either way for [`limits::API_IDLE_TIMEOUT`] is closed (a live
//!   event stream writes a keep-alive every 15 s).
//!
//! So a client that opens connections and sends nothing, or a header or a body byte by byte,
//! holds a bounded share for a bounded time.

use std::{
    error::Error as StdError,
    io,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use axum::body::Bytes;
use edge::{Slot, Slots, Stats};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    io::{AsyncRead, AsyncWrite, Interest, ReadBuf, unix::AsyncFd},
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore},
    time::{Instant, Sleep},
};

/// A [`TcpListener`] bounded in connections (in all and per source) and idleness.
pub(crate) struct Limited {
    /// Accepted from directly: a connection refused is closed before the runtime registers it,
    /// so refusing costs an `accept` and a `close` (a source reopening refused connections in
    /// a loop is served from the same queue as everyone else, and that queue must drain fast).
    inner: AsyncFd<std::net::TcpListener>,
    global: Arc<Semaphore>,
    slots: Arc<Slots>,
    idle: Duration,
}

impl Limited {
    /// `connections` at once, `per_source` of them from one source, counted in `stats`.
    pub(crate) fn new(
        inner: TcpListener,
        connections: usize,
        per_source: usize,
        idle: Duration,
        stats: Arc<Stats>,
    ) -> io::Result<Self> {
        let inner = inner.into_std()?;
        // SAFETY: the std listener owns its descriptor: open, and the one `as_raw_fd` returns,
        // for as long as the `AsyncFd` owns the listener.
        let inner = unsafe { AsyncFd::register_with_interest(inner, Interest::READABLE) }?;
        let slots = Slots::new(connections, per_source, stats);
        Ok(Self { inner, global: Arc::new(Semaphore::new(connections)), slots, idle })
    }

    /// The next connection within the bounds; those over its source's share are closed here.
    pub(crate) async fn accept(&mut self) -> Conn {
        // Never closed: acquiring only waits for a connection to end.
        let permit = loop {
            if let Ok(p) = self.global.clone().acquire_owned().await {
                break p;
            }
        };
        loop {
            let Ok(mut ready) = self.inner.readable().await else {
                // The runtime is stopping.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let (stream, from) = match ready.try_io(|l| l.get_ref().accept()) {
                Ok(Ok(accepted)) => accepted,
                Ok(Err(e)) => {
                    // Out of descriptors and the like: wait a moment instead of spinning.
                    tokio::time::sleep(edge::accept_backoff(&e)).await;
                    continue;
                }
                // Nothing left to accept: wait for the next.
                Err(_) => continue,
            };
            // Over its source's share: dropped, so closed at once (and counted).
            let Ok(slot) = self.slots.admit(from.ip()) else { continue };
            let Ok(stream) = stream.set_nonblocking(true).and_then(|()| TcpStream::from_std(stream)) else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let idle = Box::pin(tokio::time::sleep(self.idle));
            let reading = Arc::new(AtomicBool::new(false));
            let last = Instant::now();
            return Conn { stream, slot, _permit: permit, idle, timeout: self.idle, last, reading };
        }
    }
}

/// Serves `service` on `listener` until the runtime stops: HTTP/1.1, each connection on its own
/// task, the header deadline kept by hyper's timer (axum's `serve` sets none).
pub(crate) async fn serve<S>(mut listener: Limited, service: S, header_deadline: Duration)
where
    S: hyper::service::Service<
            hyper::Request<hyper::body::Incoming>,
            Response = axum::response::Response,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    loop {
        let conn = listener.accept().await;
        let (stats, reading) = (conn.slot.stats().clone(), conn.reading.clone());
        let service = service.clone();
        tokio::spawn(async move {
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new())
                .header_read_timeout(header_deadline)
                .max_buf_size(limits::API_READ_BUFFER_BYTES);
            if let Err(e) = http.serve_connection(TokioIo::new(conn), service).await
                && e.is_timeout()
                && reading.load(Ordering::Relaxed)
            {
                stats.deadline_missed();
            }
        });
    }
}

/// An accepted connection: its slots are freed when it is dropped (its source's slot first,
/// then the permit a waiting accept takes: fields drop in order).
pub(crate) struct Conn {
    stream: TcpStream,
    slot: Slot,
    _permit: OwnedSemaphorePermit,
    /// Fires at the earliest the connection can have been idle too long; when it does, the
    /// connection is closed only if nothing moved since `last`, else it is set again for
    /// `last + timeout` (so I/O only reads the clock: resetting a timer on every read and write
    /// took ~1.5 % of a small answer's time).
    idle: Pin<Box<Sleep>>,
    timeout: Duration,
    /// When bytes last moved either way.
    last: Instant,
    /// Whether bytes were read since the last write: a request under way. Hyper's header timer
    /// also ends a kept-alive connection that stays silent after an answer; only one that
    /// started a request and did not finish its header missed a deadline.
    reading: Arc<AtomicBool>,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn").field("stream", &self.stream).finish_non_exhaustive()
    }
}

impl Conn {
    fn active(&mut self) {
        self.last = Instant::now();
    }

    /// Pending I/O: an error once the connection has been idle too long (the timer wakes the
    /// task when it fires).
    fn idle_check(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        while self.idle.as_mut().poll(cx).is_ready() {
            let due = self.last + self.timeout;
            if due <= Instant::now() {
                return Poll::Ready(io::Error::new(io::ErrorKind::TimedOut, "idle connection"));
            }
            // Bytes moved since it was set: idle since `last` at most.
            self.idle.as_mut().reset(due);
        }
        Poll::Pending
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
                    self.reading.store(true, Ordering::Relaxed);
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
                    self.reading.store(false, Ordering::Relaxed);
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
                    self.reading.store(false, Ordering::Relaxed);
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

/// Gives a request's body its deadline, [`limits::API_BODY_DEADLINE`] from now (its header has
/// just been read); a request without a body is left as it is.
pub(crate) fn with_body_deadline(request: axum::extract::Request) -> axum::extract::Request {
    if http_body::Body::is_end_stream(request.body()) {
        return request;
    }
    request.map(|body| axum::body::Body::new(DeadlineBody::new(body, limits::API_BODY_DEADLINE)))
}

/// A request body that must arrive whole before a deadline: past it, reading fails with
/// [`BodyDeadlineMissed`] (the handler answers 408).
pub(crate) struct DeadlineBody {
    inner: axum::body::Body,
    deadline: Pin<Box<Sleep>>,
}

impl DeadlineBody {
    /// `inner`, due within `within` from now.
    pub(crate) fn new(inner: axum::body::Body, within: Duration) -> Self {
        Self { inner, deadline: Box::pin(tokio::time::sleep(within)) }
    }
}

/// The error a [`DeadlineBody`] fails with.
#[derive(Debug)]
pub(crate) struct BodyDeadlineMissed;

impl std::fmt::Display for BodyDeadlineMissed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the request body did not arrive within {} s", limits::API_BODY_DEADLINE.as_secs())
    }
}

impl StdError for BodyDeadlineMissed {}

impl BodyDeadlineMissed {
    /// Whether `error` (or what caused it) is a missed body deadline.
    pub(crate) fn caused(error: &(dyn StdError + 'static)) -> bool {
        let mut cause = Some(error);
        while let Some(e) = cause {
            if e.is::<Self>() {
                return true;
            }
            cause = e.source();
        }
        false
    }
}

impl http_body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        match this.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(BodyDeadlineMissed.into()))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use axum::{
        Router,
        extract::rejection::BytesRejection,
        http::StatusCode,
        routing::{get, post},
    };

    use super::*;

    struct Server {
        addr: std::net::SocketAddr,
        stats: Arc<Stats>,
        runtime: tokio::runtime::Runtime,
    }

    /// Serves `GET /` and `POST /` (which reads its body, given `body_within` to arrive)
    /// through a [`Limited`] listener.
    fn serve(
        slots: usize,
        per_source: usize,
        idle: Duration,
        header: Duration,
        body_within: Duration,
    ) -> Server {
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap();
        let stats = Arc::new(Stats::default());
        let limited = runtime
            .block_on(async { Limited::new(listener, slots, per_source, idle, stats.clone()) })
            .unwrap();
        let router = Router::new()
            .route("/", get(|| async { "ok" }))
            .route(
                "/",
                post(|body: Result<Bytes, BytesRejection>| async move {
                    match body {
                        Ok(b) => (StatusCode::OK, format!("{} bytes", b.len())),
                        Err(r) if BodyDeadlineMissed::caused(&r) => {
                            (StatusCode::REQUEST_TIMEOUT, r.body_text())
                        }
                        Err(r) => (r.status(), r.body_text()),
                    }
                }),
            )
            .layer(axum::middleware::map_request(move |r: axum::extract::Request| async move {
                r.map(|b| axum::body::Body::new(DeadlineBody::new(b, body_within)))
            }));
        runtime.spawn(super::serve(limited, hyper_util::service::TowerToHyperService::new(router), header));
        Server { addr, stats, runtime }
    }

    const LONG: Duration = Duration::from_secs(600);
    const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n";

    fn answer(mut s: std::net::TcpStream, request: &[u8]) -> String {
        s.write_all(request).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        answer
    }

    /// A connection from `source` (a loopback address) to `addr`.
    fn connect_from(server: &Server, source: [u8; 4]) -> std::net::TcpStream {
        server.runtime.block_on(async {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.bind((std::net::Ipv4Addr::from(source), 0).into()).unwrap();
            let stream = socket.connect(server.addr).await.unwrap().into_std().unwrap();
            stream.set_nonblocking(false).unwrap();
            stream
        })
    }

    /// Whether the server closes `s` (end of stream) within 30 s, having sent nothing.
    fn closed(s: &mut std::net::TcpStream) -> bool {
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        match s.read(&mut [0u8; 64]) {
            Ok(n) => n == 0,
            Err(e) => e.kind() == io::ErrorKind::ConnectionReset,
        }
    }

    #[test]
    fn a_request_waits_for_a_free_slot() {
        let server = serve(2, 2, LONG, LONG, LONG);
        let mut silent: Vec<_> = (0..2).map(|_| std::net::TcpStream::connect(server.addr).unwrap()).collect();
        let mut third = std::net::TcpStream::connect(server.addr).unwrap();
        third.write_all(REQUEST).unwrap();
        // Both slots are held: no answer yet.
        third.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        let mut buf = [0u8; 64];
        assert!(third.read(&mut buf).is_err(), "answered while every slot was taken");
        // One silent connection goes: the request is served.
        drop(silent.pop());
        assert!(answer(third, b"").starts_with("HTTP/1.1 200"));
    }

    #[test]
    fn an_idle_connection_is_closed() {
        let server = serve(8, 8, Duration::from_millis(200), LONG, LONG);
        let mut silent = std::net::TcpStream::connect(server.addr).unwrap();
        // Half a request header, then nothing.
        silent.write_all(b"GET / HTTP/1.1\r\nhost").unwrap();
        assert!(closed(&mut silent), "the idle connection stays open");
        // The listener still serves.
        assert!(
            answer(std::net::TcpStream::connect(server.addr).unwrap(), REQUEST).starts_with("HTTP/1.1 200")
        );
    }

    /// The idle timer is set again, not fired, while bytes keep moving.
    #[test]
    fn a_connection_moving_bytes_is_not_idle() {
        let server = serve(8, 8, Duration::from_millis(300), LONG, LONG);
        let mut s = std::net::TcpStream::connect(server.addr).unwrap();
        // Four idle periods' worth of header, a byte every third of one.
        for b in REQUEST[..12].iter() {
            std::thread::sleep(Duration::from_millis(100));
            s.write_all(&[*b]).unwrap();
        }
        assert!(answer(s, &REQUEST[12..]).starts_with("HTTP/1.1 200"));
    }

    /// One source past its share has its next connections closed at once (and counted); another
    /// source is served meanwhile.
    #[test]
    fn a_source_past_its_share_is_closed_at_once_and_others_are_served() {
        let server = serve(16, 2, LONG, LONG, LONG);
        let _held: Vec<_> = (0..2).map(|_| connect_from(&server, [127, 0, 0, 1])).collect();
        let mut over = connect_from(&server, [127, 0, 0, 1]);
        assert!(closed(&mut over), "a third connection from one source is kept");
        let other = connect_from(&server, [127, 0, 0, 2]);
        assert!(answer(other, REQUEST).starts_with("HTTP/1.1 200"));
        assert_eq!(server.stats.refused_source.load(std::sync::atomic::Ordering::Relaxed), 1);
    }

    /// A header sent a byte at a time (each byte well inside the idle timeout) is cut at the
    /// header deadline, and counted.
    #[test]
    fn a_trickled_header_is_cut_at_its_deadline() {
        let server = serve(8, 8, LONG, Duration::from_millis(400), LONG);
        let mut s = std::net::TcpStream::connect(server.addr).unwrap();
        let started = std::time::Instant::now();
        let mut cut = false;
        for &b in b"GET / HTTP/1.1\r\nhost: a-very-long-host-name-sent-slowly\r\n".iter() {
            if s.write_all(&[b]).is_err() {
                cut = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(cut || closed(&mut s), "the trickling header was let through");
        assert!(started.elapsed() < Duration::from_secs(30));
        let deadline_closed = || server.stats.deadline_closed.load(std::sync::atomic::Ordering::Relaxed);
        let until = std::time::Instant::now() + Duration::from_secs(10);
        while deadline_closed() == 0 && std::time::Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(deadline_closed(), 1);
    }

    /// A body that does not arrive whole in time is answered 408; one that does is read.
    #[test]
    fn a_body_late_past_its_deadline_is_answered_408() {
        let server = serve(8, 8, LONG, LONG, Duration::from_millis(300));
        let s = std::net::TcpStream::connect(server.addr).unwrap();
        let late = answer(s, b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\nonly ten b");
        assert!(late.starts_with("HTTP/1.1 408"), "{late}");
        let s = std::net::TcpStream::connect(server.addr).unwrap();
        let whole =
            answer(s, b"POST / HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: 5\r\n\r\nhello");
        assert!(whole.starts_with("HTTP/1.1 200") && whole.ends_with("5 bytes"), "{whole}");
    }
}
