//! The io_uring transport: socket reads and writes submitted to one ring served by a dedicated
//! thread, exposed as tokio `AsyncRead + AsyncWrite` streams so the same TLS and connection
//! code runs over it.
//!
//! Requests reach the ring thread through a channel and an eventfd (a read on the eventfd is
//! always armed in the ring, so a new request wakes a thread that waits for completions). Each
//! operation owns its buffer until its completion comes back: a stream dropped with a read in
//! flight leaves the buffer with the ring, never dangling. Connecting and accepting stay with
//! tokio; the data path — every byte of every peer connection — goes through the ring.

use std::{
    collections::HashMap,
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll, ready},
    thread::JoinHandle,
};

use io_uring::{IoUring, opcode, types};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    sync::oneshot,
};

/// Entries of the submission queue.
const RING_ENTRIES: u32 = 256;
/// Bytes one read asks for.
const READ_BYTES: usize = 64 * 1024;
/// Most bytes one write takes.
const WRITE_BYTES: usize = 256 * 1024;
/// The eventfd read's user data.
const WAKE: u64 = u64::MAX;

type Reply = oneshot::Sender<(io::Result<usize>, Vec<u8>)>;

enum Op {
    Recv { fd: RawFd, buf: Vec<u8>, reply: Reply },
    Send { fd: RawFd, buf: Vec<u8>, reply: Reply },
}

struct Shared {
    requests: crossbeam_channel::Sender<Op>,
    wake: OwnedFd,
    /// The ring thread is (about to be) waiting in the kernel: a new request must wake it. While
    /// it runs, requests are picked up without a syscall.
    sleeping: Arc<AtomicBool>,
}

impl Shared {
    fn submit(&self, op: Op) -> io::Result<()> {
        self.requests.send(op).map_err(|_| io::Error::other("the io_uring thread has stopped"))?;
        if !self.sleeping.swap(false, Ordering::SeqCst) {
            return Ok(());
        }
        let one = 1u64.to_ne_bytes();
        // SAFETY: writes 8 bytes from a live buffer to an eventfd this struct owns.
        let n = unsafe { libc::write(self.wake.as_raw_fd(), one.as_ptr().cast(), one.len()) };
        if n == 8 { Ok(()) } else { Err(io::Error::last_os_error()) }
    }
}

/// A ring and its thread. Cloning shares them; the thread stops when the last clone and every
/// stream made from it are gone.
#[derive(Clone)]
pub struct Uring {
    shared: Arc<Shared>,
    _thread: Arc<ThreadGuard>,
}

impl std::fmt::Debug for Uring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Uring").finish_non_exhaustive()
    }
}

struct ThreadGuard(Option<JoinHandle<()>>);

impl Drop for ThreadGuard {
    fn drop(&mut self) {
        // The thread ends once the request channel is closed (all `Shared` gone); it is not
        // joined here, since the last `Shared` may go after this guard.
        drop(self.0.take());
    }
}

impl Uring {
    /// Sets up a ring and its thread; fails where the kernel or a container forbids io_uring.
    pub fn new() -> io::Result<Self> {
        let ring = IoUring::new(RING_ENTRIES)?;
        // SAFETY: plain syscall; the returned descriptor is owned below.
        let efd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if efd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `efd` is a fresh descriptor owned by nobody else.
        let wake = unsafe { OwnedFd::from_raw_fd(efd) };
        // SAFETY: `dup` of a descriptor we own; the copy is owned by the ring thread.
        let thread_wake = unsafe { libc::dup(efd) };
        if thread_wake < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: as above.
        let thread_wake = unsafe { OwnedFd::from_raw_fd(thread_wake) };
        let (requests, rx) = crossbeam_channel::unbounded();
        let sleeping = Arc::new(AtomicBool::new(false));
        let flag = sleeping.clone();
        let thread = std::thread::Builder::new()
            .name("io-uring".into())
            .spawn(move || run_ring(ring, &thread_wake, &rx, &flag))?;
        Ok(Self {
            shared: Arc::new(Shared { requests, wake, sleeping }),
            _thread: Arc::new(ThreadGuard(Some(thread))),
        })
    }

    /// Moves a connected socket onto the ring.
    pub fn stream(&self, tcp: tokio::net::TcpStream) -> io::Result<UringStream> {
        let std = tcp.into_std()?;
        // SAFETY: `into_raw_fd` gives up ownership of a valid socket descriptor.
        let fd = unsafe { OwnedFd::from_raw_fd(std::os::fd::IntoRawFd::into_raw_fd(std)) };
        Ok(UringStream {
            fd,
            shared: self.shared.clone(),
            read: None,
            leftover: Vec::new(),
            pos: 0,
            write: None,
            write_done: None,
        })
    }
}

fn run_ring(
    mut ring: IoUring,
    wake: &OwnedFd,
    requests: &crossbeam_channel::Receiver<Op>,
    sleeping: &AtomicBool,
) {
    let mut wake_buf = [0u8; 8];
    let mut inflight: HashMap<u64, Op> = HashMap::new();
    let mut next_id = 0u64;
    let arm_wake = |ring: &mut IoUring, buf: &mut [u8; 8]| {
        let sqe = opcode::Read::new(types::Fd(wake.as_raw_fd()), buf.as_mut_ptr(), 8).build().user_data(WAKE);
        // SAFETY: the buffer lives in this function's frame for as long as the ring does.
        while unsafe { ring.submission().push(&sqe) }.is_err() {
            let _ = ring.submit();
        }
    };
    arm_wake(&mut ring, &mut wake_buf);
    let mut open = true;
    loop {
        // New requests.
        loop {
            let op = match requests.try_recv() {
                Ok(op) => op,
                Err(crossbeam_channel::TryRecvError::Empty) => break,
                Err(crossbeam_channel::TryRecvError::Disconnected) => {
                    open = false;
                    break;
                }
            };
            let id = next_id;
            next_id = next_id.wrapping_add(1) % WAKE;
            let mut op = op;
            let sqe = match &mut op {
                Op::Recv { fd, buf, .. } => {
                    opcode::Recv::new(types::Fd(*fd), buf.as_mut_ptr(), buf.len() as u32)
                        .build()
                        .user_data(id)
                }
                Op::Send { fd, buf, .. } => opcode::Send::new(types::Fd(*fd), buf.as_ptr(), buf.len() as u32)
                    .flags(libc::MSG_NOSIGNAL)
                    .build()
                    .user_data(id),
            };
            // The buffer's heap memory does not move when `op` moves into the map.
            inflight.insert(id, op);
            // SAFETY: the buffer stays alive in `inflight` until the completion is taken.
            while unsafe { ring.submission().push(&sqe) }.is_err() {
                let _ = ring.submit();
            }
        }
        if !open && inflight.is_empty() {
            return;
        }
        // Announce the wait, then look once more: a request sent before the announcement is
        // picked up now, one sent after it finds the flag set and writes the eventfd.
        sleeping.store(true, Ordering::SeqCst);
        if !requests.is_empty() {
            sleeping.store(false, Ordering::SeqCst);
            let _ = ring.submit();
            continue;
        }
        let waited = ring.submit_and_wait(1);
        sleeping.store(false, Ordering::SeqCst);
        if let Err(e) = waited {
            if e.kind() != io::ErrorKind::Interrupted {
                // The ring is unusable: fail every operation so no stream waits forever.
                for (_, op) in inflight.drain() {
                    let (Op::Recv { buf, reply, .. } | Op::Send { buf, reply, .. }) = op;
                    let _ = reply.send((Err(io::Error::other(format!("io_uring: {e}"))), buf));
                }
                return;
            }
        }
        let done: Vec<(u64, i32)> = ring.completion().map(|c| (c.user_data(), c.result())).collect();
        for (id, result) in done {
            if id == WAKE {
                arm_wake(&mut ring, &mut wake_buf);
                continue;
            }
            let Some(op) = inflight.remove(&id) else { continue };
            let (Op::Recv { buf, reply, .. } | Op::Send { buf, reply, .. }) = op;
            let result =
                if result < 0 { Err(io::Error::from_raw_os_error(-result)) } else { Ok(result as usize) };
            // The stream may be gone; its buffer is freed here.
            let _ = reply.send((result, buf));
        }
    }
}

/// A TCP connection whose reads and writes go through the ring.
pub struct UringStream {
    fd: OwnedFd,
    shared: Arc<Shared>,
    read: Option<oneshot::Receiver<(io::Result<usize>, Vec<u8>)>>,
    /// Bytes received and not yet handed out.
    leftover: Vec<u8>,
    pos: usize,
    write: Option<oneshot::Receiver<(io::Result<usize>, Vec<u8>)>>,
    /// A write that completed during a flush, reported by the next `poll_write`.
    write_done: Option<io::Result<usize>>,
}

impl std::fmt::Debug for UringStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UringStream").field("fd", &self.fd.as_raw_fd()).finish_non_exhaustive()
    }
}

fn completed(
    cx: &mut Context<'_>,
    rx: &mut oneshot::Receiver<(io::Result<usize>, Vec<u8>)>,
) -> Poll<(io::Result<usize>, Vec<u8>)> {
    match ready!(Pin::new(rx).poll(cx)) {
        Ok(done) => Poll::Ready(done),
        Err(_) => Poll::Ready((Err(io::Error::other("the io_uring thread has stopped")), Vec::new())),
    }
}

use std::future::Future as _;

impl AsyncRead for UringStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if this.pos < this.leftover.len() {
                let n = (this.leftover.len() - this.pos).min(out.remaining());
                out.put_slice(&this.leftover[this.pos..this.pos + n]);
                this.pos += n;
                return Poll::Ready(Ok(()));
            }
            match &mut this.read {
                Some(rx) => {
                    let (result, mut buf) = ready!(completed(cx, rx));
                    this.read = None;
                    let n = result?;
                    if n == 0 {
                        return Poll::Ready(Ok(()));
                    }
                    buf.truncate(n);
                    this.leftover = buf;
                    this.pos = 0;
                }
                None => {
                    let (reply, rx) = oneshot::channel();
                    let buf = std::mem::take(&mut this.leftover);
                    let mut buf =
                        if buf.capacity() >= READ_BYTES { buf } else { Vec::with_capacity(READ_BYTES) };
                    buf.resize(READ_BYTES, 0);
                    this.shared.submit(Op::Recv { fd: this.fd.as_raw_fd(), buf, reply })?;
                    this.read = Some(rx);
                    this.pos = 0;
                }
            }
        }
    }
}

impl AsyncWrite for UringStream {
    /// A write copies (up to 256 KiB of) `data` and completes on a later call, which must pass
    /// the same bytes first — as every tokio writer does while a write is pending. Writers that
    /// buffer (TLS) hand over their remaining bytes only when polled again: flush after writing,
    /// as `AsyncWrite` requires (the connection's writer does).
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if let Some(done) = this.write_done.take() {
            return Poll::Ready(done);
        }
        if this.write.is_none() {
            if data.is_empty() {
                return Poll::Ready(Ok(0));
            }
            let (reply, rx) = oneshot::channel();
            let buf = data[..data.len().min(WRITE_BYTES)].to_vec();
            this.shared.submit(Op::Send { fd: this.fd.as_raw_fd(), buf, reply })?;
            this.write = Some(rx);
        }
        let Some(rx) = &mut this.write else { return Poll::Ready(Ok(0)) };
        let (result, _) = ready!(completed(cx, rx));
        this.write = None;
        Poll::Ready(result)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // A write in the ring is waited for; its byte count goes to the next `poll_write`
        // (called with the same bytes), which has not been told yet.
        let this = &mut *self;
        if let Some(rx) = &mut this.write {
            let (result, _) = ready!(completed(cx, rx));
            this.write = None;
            let failed = result.as_ref().err().map(|e| io::Error::new(e.kind(), e.to_string()));
            this.write_done = Some(result);
            if let Some(e) = failed {
                return Poll::Ready(Err(e));
            }
        }
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // SAFETY: plain syscall on a descriptor this stream owns.
        let rc = unsafe { libc::shutdown(self.fd.as_raw_fd(), libc::SHUT_WR) };
        Poll::Ready(if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) })
    }
}

impl Drop for UringStream {
    fn drop(&mut self) {
        // A read still in the ring would wait for data that may never come: shutting the socket
        // down completes it (with 0) before the descriptor closes.
        // SAFETY: plain syscall on a descriptor this stream owns.
        unsafe { libc::shutdown(self.fd.as_raw_fd(), libc::SHUT_RDWR) };
    }
}

/// Whether this kernel and container allow io_uring (a ring can be set up).
pub fn available() -> Result<(), io::Error> {
    IoUring::new(2).map(drop)
}
