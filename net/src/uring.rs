//! The io_uring transport: every socket read and write of a peer connection is an io_uring
//! operation, exposed as a tokio `AsyncRead + AsyncWrite` stream so the same TLS and connection
//! code runs over it.
//!
//! A read or write is submitted with `MSG_DONTWAIT` and waited for in the same
//! `io_uring_enter`, so it completes inside that call — with bytes, or with `EAGAIN` — straight
//! into or out of the caller's buffer: no copy, no thread between the task and the kernel, and
//! no buffer the kernel could touch after the call returns. Readiness (when to try again after
//! `EAGAIN`) comes from tokio's reactor watching the socket, as for the epoll transport.
//!
//! Two earlier designs measured slower than epoll (docs/PERFORMANCE.md): one ring thread
//! serving every stream (a channel and two wake-ups per operation), and readiness from a
//! multishot poll request in a ring per direction (each wake-up first runs as task work on the
//! thread that armed the poll, then wakes the reactor through the ring's descriptor: one hop
//! more than epoll for every wait).

use std::{
    io,
    os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd},
    pin::Pin,
    task::{Context, Poll, ready},
};

use io_uring::{IoUring, opcode, squeue, types};
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf, unix::AsyncFd};

/// Submission entries of a stream's ring (one operation at a time).
const RING_ENTRIES: u32 = 2;
/// The socket, as the ring's registered file.
const SOCKET: types::Fixed = types::Fixed(0);
/// Most buffers one vectored write passes.
const IOV_MAX: usize = 1024;

/// The io_uring transport's factory: checks once that rings can be made; each stream makes its
/// own.
#[derive(Clone, Debug)]
pub struct Uring(());

impl Uring {
    /// Fails where the kernel or a container forbids io_uring.
    pub fn new() -> io::Result<Self> {
        available()?;
        Ok(Self(()))
    }

    /// Moves a connected socket onto io_uring. Must run inside a tokio runtime (the socket is
    /// registered with its reactor for readiness).
    pub fn stream(&self, tcp: tokio::net::TcpStream) -> io::Result<UringStream> {
        let std = tcp.into_std()?;
        // SAFETY: `into_raw_fd` gives up ownership of a valid socket descriptor.
        let socket = unsafe { OwnedFd::from_raw_fd(std.into_raw_fd()) };
        let ring = IoUring::new(RING_ENTRIES)?;
        // The socket as the ring's fixed file 0: the kernel takes no reference to the file per
        // operation.
        ring.submitter().register_files(&[socket.as_raw_fd()])?;
        let fd = SocketFd(socket.as_raw_fd());
        // SAFETY: the socket stays open for as long as `ready` lives: both are fields of the
        // stream, and `ready` is declared (so dropped, deregistered) first.
        let ready = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE | Interest::WRITABLE) }
            .map_err(|e| e.into_parts().1)?;
        Ok(UringStream { ready, ring, broken: false, socket })
    }
}

/// A socket's descriptor, as tokio's reactor watches it.
struct SocketFd(RawFd);

impl AsRawFd for SocketFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

/// A TCP connection whose reads and writes go through io_uring.
pub struct UringStream {
    ready: AsyncFd<SocketFd>,
    ring: IoUring,
    /// The ring failed in a way that may leave an entry unsubmitted: never enter it again.
    broken: bool,
    // Declared last: closed after the ring and the registration (fields drop in order).
    socket: OwnedFd,
}

impl std::fmt::Debug for UringStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UringStream").field("fd", &self.socket.as_raw_fd()).finish_non_exhaustive()
    }
}

/// What one operation's result means for the caller.
enum Step {
    Done(io::Result<usize>),
    /// Not ready: wait for readiness.
    Wait,
    /// Interrupted: try again.
    Again,
}

fn step(r: i32) -> Step {
    match r {
        r if r >= 0 => Step::Done(Ok(r as usize)),
        r if r == -libc::EAGAIN => Step::Wait,
        r if r == -libc::EINTR => Step::Again,
        r => Step::Done(Err(io::Error::from_raw_os_error(-r))),
    }
}

impl UringStream {
    fn poll_send(&mut self, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        let bufs = &bufs[..bufs.len().min(IOV_MAX)];
        if bufs.iter().all(|b| b.is_empty()) {
            return Poll::Ready(Ok(0));
        }
        let fd = SOCKET;
        let flags = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
        loop {
            let mut guard = ready!(self.ready.poll_write_ready(cx))?;
            let r = if let [one] = bufs {
                let sqe = opcode::Send::new(fd, one.as_ptr(), one.len() as u32).flags(flags).build();
                // SAFETY: a MSG_DONTWAIT send of `one`, borrowed for this call.
                unsafe { Self::run(&mut self.ring, &mut self.broken, &sqe) }?
            } else {
                // SAFETY: an all-zero msghdr is valid; the fields below fill it.
                let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
                // `IoSlice` is ABI-compatible with `iovec` on Unix.
                msg.msg_iov = bufs.as_ptr().cast_mut().cast();
                msg.msg_iovlen = bufs.len() as _;
                let sqe = opcode::SendMsg::new(fd, &msg).flags(flags as u32).build();
                // SAFETY: a MSG_DONTWAIT send of `bufs` through `msg`, both borrowed for this call.
                unsafe { Self::run(&mut self.ring, &mut self.broken, &sqe) }?
            };
            match step(r) {
                Step::Done(d) => {
                    // A short write means the socket's buffer is full: wait for room instead of
                    // trying again into EAGAIN (as tokio's own sockets do).
                    if d.as_ref().is_ok_and(|&n| n < bufs.iter().map(|b| b.len()).sum()) {
                        guard.clear_ready();
                    }
                    return Poll::Ready(d);
                }
                Step::Wait => guard.clear_ready(),
                Step::Again => {}
            }
        }
    }

    /// Submits `sqe` and waits inside `io_uring_enter` for its completion; its result (a byte
    /// count or `-errno`). Takes the fields it needs, so callers may hold a readiness guard.
    ///
    /// # Safety
    ///
    /// `sqe` must be a `MSG_DONTWAIT` socket operation (so it completes without waiting for
    /// the network) whose buffers stay valid until this returns; it returns only once the
    /// completion is taken, or with the ring marked broken and never entered again.
    unsafe fn run(ring: &mut IoUring, broken: &mut bool, sqe: &squeue::Entry) -> io::Result<i32> {
        if *broken {
            return Err(io::Error::other("io_uring ring failed"));
        }
        // SAFETY: per this function's contract; the queue is empty (one operation at a time,
        // each completion taken before returning).
        if unsafe { ring.submission().push(sqe) }.is_err() {
            return Err(io::Error::other("io_uring submission queue full"));
        }
        // A MSG_DONTWAIT socket operation completes inside the submitting call, its completion
        // posted before the call returns: enter without waiting, and wait only if it is not.
        let mut want = 0;
        loop {
            match ring.submit_and_wait(want) {
                Ok(_) => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR | libc::EAGAIN | libc::EBUSY)) => {}
                Err(e) => {
                    // The entry may still sit in the queue, pointing at the caller's buffer.
                    *broken = true;
                    return Err(e);
                }
            }
            if let Some(cqe) = ring.completion().next() {
                return Ok(cqe.result());
            }
            want = 1;
        }
    }
}

impl AsyncRead for UringStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if out.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        let fd = SOCKET;
        loop {
            let mut guard = ready!(this.ready.poll_read_ready(cx))?;
            let dst = out.initialize_unfilled();
            let sqe =
                opcode::Recv::new(fd, dst.as_mut_ptr(), dst.len() as u32).flags(libc::MSG_DONTWAIT).build();
            // SAFETY: a MSG_DONTWAIT receive into `dst`, borrowed for this call.
            let r = unsafe { Self::run(&mut this.ring, &mut this.broken, &sqe) }?;
            match step(r) {
                Step::Done(n) => {
                    let n = n?;
                    // A short read means the socket is drained: wait for more instead of trying
                    // again into EAGAIN (as tokio's own sockets do).
                    if n > 0 && n < dst.len() {
                        guard.clear_ready();
                    }
                    out.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Step::Wait => guard.clear_ready(),
                Step::Again => {}
            }
        }
    }
}

impl AsyncWrite for UringStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        self.poll_send(cx, &[io::IoSlice::new(data)])
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.poll_send(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Nothing is buffered: a write returns once its bytes are in the socket.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // SAFETY: plain syscall on a descriptor this stream owns.
        let rc = unsafe { libc::shutdown(self.socket.as_raw_fd(), libc::SHUT_WR) };
        Poll::Ready(if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) })
    }
}

/// Whether this kernel and container allow io_uring (a ring can be set up).
pub fn available() -> Result<(), io::Error> {
    IoUring::new(2).map(drop)
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// Bytes written vectored and in single writes through one ring arrive whole and in order
    /// through the other, across many short writes and `EAGAIN` waits (8 MiB through socket
    /// buffers far smaller).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bytes_cross_in_order_through_rings() {
        let Ok(uring) = Uring::new() else {
            eprintln!("io_uring unavailable here: nothing to test");
            return;
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let dialed = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        let (mut tx, mut rx) = (uring.stream(dialed).unwrap(), uring.stream(accepted).unwrap());
        let data: Vec<u8> = (0..8 << 20).map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
        let expected = data.clone();
        let writer = tokio::spawn(async move {
            for (k, chunk) in data.chunks(100_003).enumerate() {
                if k % 2 == 0 {
                    tx.write_all(chunk).await.unwrap();
                } else {
                    let (a, b) = chunk.split_at(chunk.len() / 3);
                    let mut bufs = [io::IoSlice::new(a), io::IoSlice::new(b)];
                    let mut bufs = &mut bufs[..];
                    while !bufs.is_empty() {
                        let n = tx.write_vectored(bufs).await.unwrap();
                        io::IoSlice::advance_slices(&mut bufs, n);
                    }
                }
            }
            tx.shutdown().await.unwrap();
        });
        let mut got = Vec::new();
        rx.read_to_end(&mut got).await.unwrap();
        writer.await.unwrap();
        assert!(got == expected, "{} bytes received of {}", got.len(), expected.len());
    }
}
