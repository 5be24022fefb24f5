//! The public edge's fair shares, one mechanism for every listener of a process (the explorer's
//! HTTP API, the submit port, the admin port, the peer listener's handshakes): a listener holds
//! at most a global number of connections and at most a smaller number per *source* — an IPv4
//! address, or an IPv6 /64 (what one host can cheaply vary) — so one client cannot take every
//! slot and lock the others out. A connection over either bound is closed at once and counted;
//! the counts are what `/metrics` reports per listener (`caasiope_edge_*`).
//!
//! Deadlines are each listener's own (an HTTP header, a body, a submit frame): they count their
//! closures in the same [`Stats`]. The bounds themselves live in `caasiope-limits`.

use std::{
    collections::{HashMap, hash_map::Entry},
    io,
    net::{IpAddr, Ipv6Addr},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

/// The source a connection is counted against: an IPv4 address (also when it arrives
/// IPv4-mapped on an IPv6 socket), or the /64 of an IPv6 address.
pub fn source(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
        },
    }
}

/// What one listener counted since the process started (and the connections it holds now).
#[derive(Debug, Default)]
pub struct Stats {
    /// Connections held now.
    pub open: AtomicU64,
    /// Connections accepted and served.
    pub accepted: AtomicU64,
    /// Connections closed at once: the listener held its global number.
    pub refused_full: AtomicU64,
    /// Connections closed at once: their source held its share.
    pub refused_source: AtomicU64,
    /// Connections closed because a request did not arrive whole in time (a header, a body, a
    /// frame).
    pub deadline_closed: AtomicU64,
}

impl Stats {
    /// Counts a connection closed for missing a deadline.
    pub fn deadline_missed(&self) {
        self.deadline_closed.fetch_add(1, Ordering::Relaxed);
    }
}

/// Why a connection was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The listener holds its global number of connections.
    Full,
    /// The connection's source holds its share.
    Source,
}

/// The connection slots of one listener: a global bound and a bound per source.
#[derive(Debug)]
pub struct Slots {
    global: usize,
    per_source: usize,
    /// Connections held per source (only sources holding one), and their total.
    held: Mutex<(HashMap<IpAddr, usize>, usize)>,
    stats: Arc<Stats>,
}

impl Slots {
    /// Slots for `global` connections, `per_source` of them for one source at most, counted in
    /// `stats`.
    pub fn new(global: usize, per_source: usize, stats: Arc<Stats>) -> Arc<Self> {
        Arc::new(Self { global, per_source: per_source.min(global), held: Mutex::default(), stats })
    }

    /// What this listener counted.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// A slot for a connection from `from`, or why not (counted).
    pub fn admit(self: &Arc<Self>, from: IpAddr) -> Result<Slot, Refusal> {
        let source = source(from);
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let (per_source, total) = &mut *held;
        let refusal = if *total >= self.global {
            Some((Refusal::Full, &self.stats.refused_full))
        } else if per_source.get(&source).is_some_and(|&n| n >= self.per_source) {
            Some((Refusal::Source, &self.stats.refused_source))
        } else {
            None
        };
        if let Some((why, counter)) = refusal {
            counter.fetch_add(1, Ordering::Relaxed);
            return Err(why);
        }
        *per_source.entry(source).or_insert(0) += 1;
        *total += 1;
        self.stats.open.fetch_add(1, Ordering::Relaxed);
        self.stats.accepted.fetch_add(1, Ordering::Relaxed);
        Ok(Slot { slots: self.clone(), source })
    }
}

/// A connection's slot; given back when dropped.
#[derive(Debug)]
pub struct Slot {
    slots: Arc<Slots>,
    source: IpAddr,
}

impl Slot {
    /// What the listener that gave this slot counts.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.slots.stats
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut held = self.slots.held.lock().unwrap_or_else(PoisonError::into_inner);
        let (per_source, total) = &mut *held;
        if let Entry::Occupied(mut n) = per_source.entry(self.source) {
            *n.get_mut() -= 1;
            if *n.get() == 0 {
                n.remove();
            }
        }
        *total -= 1;
        self.slots.stats.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How long an accept loop waits after `error` before accepting again: nothing for what ends
/// one connection only (it was reset before it was accepted, a signal), a pause for what would
/// fail again at once (out of descriptors or memory), so the loop never spins.
pub fn accept_backoff(error: &io::Error) -> Duration {
    match error.kind() {
        io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset | io::ErrorKind::Interrupted => {
            Duration::ZERO
        }
        _ => Duration::from_millis(50),
    }
}

/// Sets the kernel's queue of connections completed and not yet accepted on a listening socket
/// to `backlog` (capped by `net.core.somaxconn`). The standard library and mio listen with 128:
/// a source opening connections faster than they are accepted and closed fills such a queue, and
/// the kernel then drops other clients' handshakes (each retried a second later).
pub fn widen_backlog(listener: &impl std::os::fd::AsRawFd, backlog: u32) -> io::Result<()> {
    let backlog = i32::try_from(backlog).unwrap_or(i32::MAX);
    // SAFETY: listen(2) on a descriptor the caller's listener owns; on a socket already
    // listening it only changes the queue's length.
    if unsafe { libc::listen(listener.as_raw_fd(), backlog) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Raises the soft limit on open files to the hard limit (every connection is a descriptor;
/// the usual soft limit of 1,024 is below the connections the listeners are sized for).
/// Returns the soft limit now in force.
pub fn raise_open_files_limit() -> io::Result<u64> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes one rlimit through a valid pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
        // SAFETY: setrlimit reads one rlimit through a valid pointer.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raw const raised) } != 0 {
            return Err(io::Error::last_os_error());
        }
        limit = raised;
    }
    Ok(limit.rlim_cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_are_ipv4_addresses_and_ipv6_slash_64s() {
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        assert_eq!(source(v4), v4);
        assert_eq!(source("::ffff:192.0.2.7".parse().unwrap()), v4);
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff:1:2:3".parse().unwrap();
        assert_eq!(source(a), "2001:db8:1:2::".parse::<IpAddr>().unwrap());
        assert_eq!(source(a), source(b));
        assert_ne!(source(a), source("2001:db8:1:3::1".parse().unwrap()));
    }

    /// A source gets its share and no more, the same /64 is the same source, another source
    /// still gets in until the global bound, and dropped slots are given back; every refusal
    /// is counted by reason.
    #[test]
    fn a_source_holds_its_share_and_the_listener_its_total() {
        let slots = Slots::new(5, 2, Arc::default());
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let a2: IpAddr = "2001:db8:1:2::2".parse().unwrap();
        let held: Vec<Slot> = (0..2).map(|_| slots.admit(a).unwrap()).collect();
        assert_eq!(slots.admit(a2).unwrap_err(), Refusal::Source);
        let others: Vec<Slot> = (1..=3).map(|i| slots.admit(IpAddr::from([10, 0, 0, i])).unwrap()).collect();
        assert_eq!(slots.admit(IpAddr::from([10, 0, 0, 9])).unwrap_err(), Refusal::Full);
        let stats = slots.stats();
        assert_eq!(stats.open.load(Ordering::Relaxed), 5);
        assert_eq!(stats.refused_source.load(Ordering::Relaxed), 1);
        assert_eq!(stats.refused_full.load(Ordering::Relaxed), 1);
        drop(held);
        assert!(slots.admit(a2).is_ok(), "the source's slots came back");
        drop(others);
        assert_eq!(stats.open.load(Ordering::Relaxed), 0);
        assert!(slots.held.lock().unwrap().0.is_empty(), "no entry is kept for a source holding none");
    }

    #[test]
    fn the_open_files_limit_is_raised_to_the_hard_limit() {
        let soft = raise_open_files_limit().unwrap();
        let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: as in raise_open_files_limit.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut limit) }, 0);
        assert_eq!((soft, limit.rlim_cur), (limit.rlim_max, limit.rlim_max));
    }

    /// A widened queue holds more completed connections than the standard library's 128 while
    /// nothing accepts them.
    #[test]
    fn a_widened_backlog_queues_more_than_128_connections() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        widen_backlog(&listener, 1024).unwrap();
        let addr = listener.local_addr().unwrap();
        let queued: Vec<std::net::TcpStream> = (0..300)
            .map_while(|_| std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok())
            .collect();
        // The kernel caps the queue at net.core.somaxconn (4,096 on current kernels).
        let cap = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok())
            .unwrap_or(4_096);
        assert_eq!(queued.len(), 300.min(cap + 1), "the queue held {} connections", queued.len());
    }

    #[test]
    fn accept_errors_that_would_repeat_pause_the_loop() {
        let emfile = io::Error::from_raw_os_error(libc::EMFILE);
        assert!(accept_backoff(&emfile) > Duration::ZERO);
        assert_eq!(accept_backoff(&io::Error::from(io::ErrorKind::ConnectionAborted)), Duration::ZERO);
    }
}
