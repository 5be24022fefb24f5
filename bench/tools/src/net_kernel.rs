//! The kernel part of `caasiope bench net`: ns per 64-byte send on one socket of a loopback
//! connection and its receive on the other, through `send`/`recv` system calls or io_uring
//! operations, without tokio or the streams (what the transports cost below them).

use std::{io, time::Instant};

/// Bytes of each kernel-measurement message.
const KERNEL_SIZE: usize = 64;

/// The kernel alone: ns per 64-byte send on one socket of a loopback connection and its
/// receive on the other, without tokio or the streams, over `connections` connections at once:
/// a send on every connection, then a receive on every one. `uring == false`: `send`/`recv`
/// system calls, one each. `uring == true`: io_uring `Send`/`Recv` operations as the io_uring
/// stream makes them (the sockets the ring's fixed files, `MSG_DONTWAIT`, completing inside the
/// `io_uring_enter` that submits them), every connection's sends in one `io_uring_enter` and
/// every receive in another — one operation per enter with one connection, as the stream does,
/// and what a ring shared by several peers' connections could batch with more.
pub(crate) fn kernel_operations(uring: bool, connections: usize) -> anyhow::Result<f64> {
    use std::os::fd::{AsRawFd, RawFd};

    let rounds = (20_000 / connections).max(1);
    let sockets = loopback_pairs(connections)?;
    let fds: Vec<RawFd> = sockets.iter().flat_map(|(a, b)| [a.as_raw_fd(), b.as_raw_fd()]).collect();
    let message = [0x5au8; KERNEL_SIZE];
    let mut got = vec![[0u8; KERNEL_SIZE]; connections];
    let mut have = vec![0usize; connections];
    let mut ring = if uring {
        let ring = io_uring::IoUring::new((2 * connections).next_power_of_two() as u32)?;
        // Sending socket of connection k: fixed file 2k; receiving: 2k + 1.
        ring.submitter().register_files(&fds)?;
        Some(ring)
    } else {
        None
    };
    // This round's results (connection, bytes or -errno), reused: nothing allocates in the loop.
    let mut results = Vec::with_capacity(connections);
    let started = Instant::now();
    for _ in 0..rounds {
        send_round(ring.as_mut(), &sockets, &message, &mut results)?;
        receive_round(ring.as_mut(), &sockets, &mut got, &mut have, &mut results)?;
    }
    Ok(started.elapsed().as_nanos() as f64 / (rounds * connections) as f64)
}

/// `connections` loopback connections, both ends without Nagle and non-blocking.
fn loopback_pairs(connections: usize) -> anyhow::Result<Vec<(std::net::TcpStream, std::net::TcpStream)>> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let mut sockets = Vec::with_capacity(connections);
    for _ in 0..connections {
        let a = std::net::TcpStream::connect(listener.local_addr()?)?;
        let (b, _) = listener.accept()?;
        for s in [&a, &b] {
            s.set_nodelay(true)?;
            s.set_nonblocking(true)?;
        }
        sockets.push((a, b));
    }
    Ok(sockets)
}

/// A system call's result: bytes, or -errno.
fn direct(r: isize) -> i32 {
    if r < 0 { -io::Error::last_os_error().raw_os_error().unwrap_or(0) } else { r as i32 }
}

/// Sends `message` on every connection's first socket: through `ring` (all in one
/// `io_uring_enter`), else one `send` each.
fn send_round(
    ring: Option<&mut io_uring::IoUring>,
    sockets: &[(std::net::TcpStream, std::net::TcpStream)],
    message: &[u8; KERNEL_SIZE],
    results: &mut Vec<(usize, i32)>,
) -> anyhow::Result<()> {
    use std::os::fd::AsRawFd;

    use io_uring::{opcode, types};

    match ring {
        Some(ring) => {
            for k in 0..sockets.len() {
                let sqe = opcode::Send::new(types::Fixed(2 * k as u32), message.as_ptr(), KERNEL_SIZE as u32)
                    .flags(libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
                    .build()
                    .user_data(k as u64);
                // SAFETY: `message` outlives the operation: its completion is taken below
                // (if entering fails, the caller's ring, declared after it, is closed first).
                unsafe { ring.submission().push(&sqe) }.map_err(|_| anyhow::anyhow!("queue full"))?;
            }
            results.clear();
            complete(ring, sockets.len(), results)?;
            for &(_, sent) in results.iter() {
                anyhow::ensure!(sent == KERNEL_SIZE as i32, "send: {sent}");
            }
        }
        None => {
            for (a, _) in sockets {
                // SAFETY: a send of `message`, borrowed for the call, on a socket `a` owns.
                let sent = direct(unsafe {
                    libc::send(
                        a.as_raw_fd(),
                        message.as_ptr().cast(),
                        KERNEL_SIZE,
                        libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                    )
                });
                anyhow::ensure!(sent == KERNEL_SIZE as i32, "send: {sent}");
            }
        }
    }
    Ok(())
}

/// Receives the message on every connection's second socket into `got`, counting in `have`:
/// through `ring` (each pass's receives in one `io_uring_enter`), else one `recv` each.
fn receive_round(
    mut ring: Option<&mut io_uring::IoUring>,
    sockets: &[(std::net::TcpStream, std::net::TcpStream)],
    got: &mut [[u8; KERNEL_SIZE]],
    have: &mut [usize],
    results: &mut Vec<(usize, i32)>,
) -> anyhow::Result<()> {
    use std::os::fd::AsRawFd;

    use io_uring::{opcode, types};

    let connections = sockets.len();
    have.fill(0);
    // Loopback delivers within the send: the receives find the bytes (a retry only if not).
    while have.iter().any(|&h| h < KERNEL_SIZE) {
        results.clear();
        match &mut ring {
            Some(ring) => {
                let mut submitted = 0;
                for k in (0..connections).filter(|&k| have[k] < KERNEL_SIZE) {
                    let dst = &mut got[k][have[k]..];
                    let sqe =
                        opcode::Recv::new(types::Fixed(2 * k as u32 + 1), dst.as_mut_ptr(), dst.len() as u32)
                            .flags(libc::MSG_DONTWAIT)
                            .build()
                            .user_data(k as u64);
                    // SAFETY: as for the sends; `got` outlives the operation.
                    unsafe { ring.submission().push(&sqe) }.map_err(|_| anyhow::anyhow!("queue full"))?;
                    submitted += 1;
                }
                complete(ring, submitted, results)?;
            }
            None => {
                for k in (0..connections).filter(|&k| have[k] < KERNEL_SIZE) {
                    let dst = &mut got[k][have[k]..];
                    // SAFETY: a receive into `dst`, borrowed for the call, on a socket `b` owns.
                    let n = unsafe {
                        libc::recv(
                            sockets[k].1.as_raw_fd(),
                            dst.as_mut_ptr().cast(),
                            dst.len(),
                            libc::MSG_DONTWAIT,
                        )
                    };
                    results.push((k, direct(n)));
                }
            }
        }
        for &(k, n) in results.iter() {
            match n {
                n if n > 0 => have[k] += n as usize,
                n if n == -libc::EAGAIN || n == -libc::EINTR => {}
                n => anyhow::bail!("receive: {n}"),
            }
        }
    }
    Ok(())
}

/// Submits the `n` queued operations in one `io_uring_enter` and appends their completions
/// (connection, result) to `done`; a `MSG_DONTWAIT` socket operation completes inside the call.
fn complete(ring: &mut io_uring::IoUring, n: usize, done: &mut Vec<(usize, i32)>) -> anyhow::Result<()> {
    let start = done.len();
    let mut want = 0;
    loop {
        ring.submit_and_wait(want)?;
        done.extend(ring.completion().map(|c| (c.user_data() as usize, c.result())));
        let have = done.len() - start;
        if have >= n {
            return Ok(());
        }
        want = n - have;
    }
}
