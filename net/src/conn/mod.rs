//! One multiplexed peer connection over TLS ([`crate::secure`]).
//!
//! Both sides first send a hello on the control channel (protocol version, chain id) and refuse
//! a peer that speaks another version or chain. Then:
//!
//! * **reading**: bytes become frames ([`crate::frame::Decoder`]); each goes to its channel's
//!   inbound queue, bounded in frames and in bytes. A frame's bytes stay counted against its
//!   channel's budget until the consumer *drops* its [`Payload`] (not when it receives it), so
//!   everything this connection has read and the node not yet handled is bounded per channel.
//!   When a channel is out of bytes or slots the connection stops reading, so TCP pushes back
//!   on the sender; a peer whose frame still does not fit after `flood_timeout` — it sends far
//!   more than this node consumes, i.e. it floods — is disconnected, as is one sending a
//!   malformed frame, one above its channel's budget, or nothing at all (not even a ping) for
//!   `idle_timeout`.
//! * **writing**: each channel has its own outbound queue, bounded in frames and in bytes
//!   ([`PeerHandle::send`] fails fast when it is full, [`PeerHandle::send_wait`] waits). The
//!   writer serves control and consensus first, then gossip and sync in turn, a bounded number
//!   of bytes per turn, so a busy channel never starves consensus. A payload's bytes are
//!   counted until the writer has written it. A peer that stops reading makes writes stall;
//!   after `write_timeout` it is disconnected.
//!
//! So a connection holds at most its channels' byte budgets in each direction
//! ([`ChannelBytes::total`]), plus the frame being decoded (at most [`frame::PAYLOAD_MAX`]) and
//! the frames decoded from one read of TLS records ([`crate::secure::READ_BUFFER`] of
//! plaintext) that wait for their budget.
//!
//! Every failure ends this connection only; the caller decides about reconnecting.

use std::{
    ops::Deref,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::sync::{
    OwnedSemaphorePermit, Semaphore, TryAcquireError,
    mpsc::{self, error::TrySendError},
};

use crate::{
    frame::{self, Channel, FrameError},
    secure::SecureError,
};

mod io;

pub use self::io::{hello_payload, parse_hello};

/// Version of this wire protocol, sent in the hello.
pub const PROTOCOL_VERSION: u16 = 1;
/// Longest chain id a hello carries.
const CHAIN_ID_MAX: usize = 64;
/// Longest hello: tag, version, chain id length, chain id.
const HELLO_LEN_MAX: usize = 1 + 2 + 1 + CHAIN_ID_MAX;
/// Control messages.
const HELLO: u8 = 1;
const PING: u8 = 2;
const PONG: u8 = 3;

/// Bounds and timers of a connection.
#[derive(Clone, Debug)]
pub struct ConnConfig {
    /// The chain both sides must be on.
    pub chain_id: String,
    /// Frames waiting per channel, each direction. Their bytes are bounded by
    /// `queue_bytes_max`; this bounds the frames themselves, so a peer sending empty or tiny
    /// frames cannot queue millions (256 by default: a full queue's bookkeeping is a few KiB,
    /// and small frames such as votes still queue without waiting for one another).
    pub queue_frames_max: usize,
    /// Payload bytes waiting per channel, each direction: inbound, read and not yet dropped
    /// by the node; outbound, queued and not yet written.
    pub queue_bytes_max: ChannelBytes,
    /// Bytes one low-priority channel (gossip, sync) may write per turn.
    pub turn_bytes: usize,
    /// A write that makes no progress for this long disconnects the peer.
    pub write_timeout: Duration,
    /// Silence (no frame at all) for this long disconnects the peer.
    pub idle_timeout: Duration,
    /// An inbound frame that waits this long for room in its channel's queue disconnects the
    /// peer (a flood).
    pub flood_timeout: Duration,
    /// A ping is sent after this long without writing.
    pub ping_interval: Duration,
    /// The hello exchange must end within this.
    pub hello_timeout: Duration,
}

impl ConnConfig {
    /// Defaults for `chain_id`.
    pub fn new(chain_id: impl Into<String>) -> Self {
        Self {
            chain_id: chain_id.into(),
            queue_frames_max: 256,
            queue_bytes_max: ChannelBytes::DEFAULT,
            turn_bytes: 256 * 1024,
            write_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            flood_timeout: Duration::from_secs(2),
            ping_interval: Duration::from_secs(5),
            hello_timeout: Duration::from_secs(10),
        }
    }
}

/// A byte budget per channel (see [`ConnConfig::queue_bytes_max`]).
///
/// A frame larger than its channel's budget could never be queued, so it is refused instead of
/// waited for: inbound, as a protocol error at its header ([`FrameError::ChannelTooLarge`], the
/// connection ends); outbound, by [`PeerHandle::send`] and [`PeerHandle::send_wait`] with
/// [`SendError::TooLarge`]. The defaults of the data channels are at least
/// [`frame::PAYLOAD_MAX`] (asserted at compile time), so with them every legal frame fits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelBytes {
    /// Control. Inbound control frames (hello, ping, pong) are answered by the connection and
    /// never queued, so inbound this only bounds a control frame's size; it is raised to the
    /// longest hello if set below it.
    pub control: usize,
    /// Transaction gossip.
    pub gossip: usize,
    /// Consensus messages.
    pub consensus: usize,
    /// Ledger sync.
    pub sync: usize,
}

impl ChannelBytes {
    /// The node's budgets.
    pub const DEFAULT: Self = Self {
        // A hello is at most 68 bytes and a ping or pong one: a peer needs no more.
        control: 4 << 10,
        // Two largest frames: the node handles one batch while the next is read.
        gossip: 8 << 20,
        // Two largest frames, as gossip: a proposal may be large, and votes are small.
        consensus: 8 << 20,
        // Four ledger chunks of up to 4 MiB, so a syncing node keeps the link busy while it
        // applies one.
        sync: 16 << 20,
    };

    /// The budget of `channel`.
    pub const fn get(&self, channel: Channel) -> usize {
        match channel {
            Channel::Control => self.control,
            Channel::Gossip => self.gossip,
            Channel::Consensus => self.consensus,
            Channel::Sync => self.sync,
        }
    }

    /// Every channel's budget added up: what one direction of a connection holds at most in
    /// its queues (about 32 MiB with the defaults).
    pub const fn total(&self) -> usize {
        self.control.saturating_add(self.gossip).saturating_add(self.consensus).saturating_add(self.sync)
    }
}

impl Default for ChannelBytes {
    fn default() -> Self {
        Self::DEFAULT
    }
}

// With the defaults every legal frame fits its channel, and so does a hello.
const _: () = {
    let d = ChannelBytes::DEFAULT;
    assert!(d.gossip >= frame::PAYLOAD_MAX);
    assert!(d.consensus >= frame::PAYLOAD_MAX);
    assert!(d.sync >= frame::PAYLOAD_MAX);
    assert!(d.control >= HELLO_LEN_MAX);
};

/// The bounds of one channel of a connection, from its [`ConnConfig`].
#[derive(Clone, Copy, Debug)]
struct Lane {
    /// The channel's byte budget, each direction.
    bytes: usize,
    /// Its largest frame: never above `bytes`, so a frame that passes this check always gets
    /// its bytes in the end, and a waiting sender or reader cannot deadlock.
    frame_max: usize,
}

impl Lane {
    fn of(cfg: &ConnConfig, channel: Channel) -> Self {
        let mut bytes = cfg.queue_bytes_max.get(channel).min(Semaphore::MAX_PERMITS);
        if channel == Channel::Control {
            // Refusing the hello would refuse every peer.
            bytes = bytes.max(HELLO_LEN_MAX);
        }
        let lane = Self { bytes, frame_max: bytes.min(frame::PAYLOAD_MAX) };
        assert!(lane.frame_max <= lane.bytes && lane.frame_max <= u32::MAX as usize);
        lane
    }
}

/// A frame's payload, its bytes counted against its channel's budget until it is dropped.
///
/// What [`Inbound`] hands over: the connection reads more on the channel only as payloads are
/// dropped, so a consumer keeps the whole path from the socket to its handler bounded by
/// carrying the `Payload` (not a copy of its bytes) to where it is handled, and dropping it
/// there.
pub struct Payload {
    bytes: Vec<u8>,
    /// The bytes' share of the channel's budget, given back when dropped; `None` for a payload
    /// counted against no budget.
    permit: Option<OwnedSemaphorePermit>,
}

impl Payload {
    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.bytes
    }

    /// The bytes, out of their channel's budget: the connection may read more as soon as
    /// this returns, so a caller that keeps the vector is the one bounding it.
    pub fn into_vec(self) -> Vec<u8> {
        let Self { bytes, permit } = self;
        drop(permit);
        bytes
    }

    /// Whether the bytes are counted against a channel's budget.
    pub fn is_counted(&self) -> bool {
        self.permit.is_some()
    }
}

impl Deref for Payload {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.bytes
    }
}

impl AsRef<[u8]> for Payload {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

/// A payload counted against no budget: one made locally (tests, simulators).
impl From<Vec<u8>> for Payload {
    fn from(bytes: Vec<u8>) -> Self {
        Self { bytes, permit: None }
    }
}

impl std::fmt::Debug for Payload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the bytes: a payload may be megabytes.
        f.debug_struct("Payload")
            .field("len", &self.bytes.len())
            .field("counted", &self.is_counted())
            .finish()
    }
}

/// Why a connection ended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnError {
    /// The byte stream failed or closed.
    #[error("i/o: {0}")]
    Io(String),
    /// The peer broke TLS (a record that does not open, a malformed record, an alert).
    #[error("{0}")]
    Tls(String),
    /// The peer sent bytes that are not frames.
    #[error("malformed stream: {0}")]
    Frame(#[from] FrameError),
    /// The peer's hello is missing, malformed or for another protocol or chain.
    #[error("hello refused: {0}")]
    Hello(String),
    /// The peer sent more than this node takes in on a channel.
    #[error("peer floods channel {0:?}")]
    Flood(Channel),
    /// The peer stopped reading.
    #[error("peer does not read (write stalled for {0:?})")]
    WriteStalled(Duration),
    /// The peer went silent.
    #[error("peer silent for {0:?}")]
    Idle(Duration),
    /// The local side closed the connection.
    #[error("closed")]
    Closed,
    /// The peer closed the connection in order (TLS `close_notify`).
    #[error("closed by the peer")]
    PeerClosed,
}

impl From<SecureError> for ConnError {
    fn from(e: SecureError) -> Self {
        match e {
            SecureError::Io(e) => Self::Io(e.to_string()),
            SecureError::Closed => Self::PeerClosed,
            SecureError::Ended => Self::Io(e.to_string()),
            e => Self::Tls(e.to_string()),
        }
    }
}

/// Sends to a connected peer; cloneable. Dropping every handle closes the connection.
#[derive(Clone, Debug)]
pub struct PeerHandle {
    lanes: Arc<[OutLane; 4]>,
}

/// One channel's outbound side, as the handles see it.
#[derive(Debug)]
struct OutLane {
    queue: mpsc::Sender<Payload>,
    /// Bytes the channel may still queue; a queued payload holds its share until written.
    room: Arc<Semaphore>,
    frame_max: usize,
}

/// Why [`PeerHandle::send`] did not queue a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The channel's outbound queue is full (its frames or its bytes): the peer is slow.
    #[error("channel {0:?} is full")]
    Full(Channel),
    /// The connection has ended.
    #[error("connection closed")]
    Closed,
    /// The payload is above [`frame::PAYLOAD_MAX`] or its channel's byte budget: it could
    /// never be queued.
    #[error("payload too large")]
    TooLarge,
}

impl PeerHandle {
    /// Queues `payload` on `channel` without waiting. While a [`Self::send_wait`] waits for
    /// room on the channel, this finds it full: the waiter is served first.
    pub fn send(&self, channel: Channel, payload: Vec<u8>) -> Result<(), SendError> {
        let (lane, n) = self.lane(channel, &payload)?;
        let permit = match lane.room.clone().try_acquire_many_owned(n) {
            Ok(p) => p,
            Err(TryAcquireError::NoPermits) => return Err(SendError::Full(channel)),
            Err(TryAcquireError::Closed) => return Err(SendError::Closed),
        };
        match lane.queue.try_send(Payload { bytes: payload, permit: Some(permit) }) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(SendError::Full(channel)),
            Err(TrySendError::Closed(_)) => Err(SendError::Closed),
        }
    }

    /// Queues `payload` on `channel`, waiting for room (bytes and a slot): for a sender that
    /// would rather slow down than drop (bulk transfers, benchmarks); gossip and consensus use
    /// [`Self::send`].
    pub async fn send_wait(&self, channel: Channel, payload: Vec<u8>) -> Result<(), SendError> {
        let (lane, n) = self.lane(channel, &payload)?;
        // `n` is within the budget (`lane`), so the bytes come once the writer has written
        // what is queued; the queue closes when the connection ends.
        let permit = tokio::select! {
            p = lane.room.clone().acquire_many_owned(n) => p.map_err(|_| SendError::Closed)?,
            () = lane.queue.closed() => return Err(SendError::Closed),
        };
        let payload = Payload { bytes: payload, permit: Some(permit) };
        lane.queue.send(payload).await.map_err(|_| SendError::Closed)
    }

    /// The outbound side of `channel` and the bytes `payload` takes of it, if it fits in a
    /// frame of that channel.
    fn lane(&self, channel: Channel, payload: &[u8]) -> Result<(&OutLane, u32), SendError> {
        let lane = &self.lanes[channel as usize];
        if payload.len() > lane.frame_max {
            return Err(SendError::TooLarge);
        }
        Ok((lane, u32::try_from(payload.len()).map_err(|_| SendError::TooLarge)?))
    }
}

/// The inbound side of a connection: frames of every channel but control, in arrival order per
/// channel.
#[derive(Debug)]
pub struct Inbound {
    /// One receiver per channel ([`Channel::Control`]'s stays empty: the connection answers
    /// it). Each payload counts against its channel's budget until dropped.
    pub channels: [mpsc::Receiver<Payload>; 4],
}

/// Drives one connection: made by [`connection`], consumed by [`Driver::run`].
/// What the connections to one peer carried: frame bytes each way and the last round trip of
/// a ping (every [`ConnConfig::ping_interval`]), counted over every connection given it with
/// [`Driver::counted_in`]; read by anyone (relaxed atomics).
#[derive(Debug, Default)]
pub struct LinkStats {
    received_bytes: AtomicU64,
    sent_bytes: AtomicU64,
    /// The last round trip measured, µs (0: none yet).
    rtt_us: AtomicU64,
}

impl LinkStats {
    /// Frame bytes received (headers and payloads, after TLS).
    pub fn received_bytes(&self) -> u64 {
        self.received_bytes.load(Ordering::Relaxed)
    }

    /// Frame bytes sent.
    pub fn sent_bytes(&self) -> u64 {
        self.sent_bytes.load(Ordering::Relaxed)
    }

    /// The last round trip of a ping to its pong, if one was measured.
    pub fn rtt(&self) -> Option<Duration> {
        match self.rtt_us.load(Ordering::Relaxed) {
            0 => None,
            us => Some(Duration::from_micros(us)),
        }
    }

    fn received(&self, n: usize) {
        self.received_bytes.fetch_add(n as u64, Ordering::Relaxed);
    }

    fn sent(&self, n: usize) {
        self.sent_bytes.fetch_add(n as u64, Ordering::Relaxed);
    }

    fn round_trip(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1);
        self.rtt_us.store(us, Ordering::Relaxed);
    }
}

pub struct Driver {
    outbound: [mpsc::Receiver<Payload>; 4],
    inbound: [mpsc::Sender<Payload>; 4],
    /// Bytes each channel may still take in.
    inbound_room: [Arc<Semaphore>; 4],
    frame_max: [usize; 4],
    cfg: ConnConfig,
    stats: Arc<LinkStats>,
}

impl Driver {
    /// Counts this connection's bytes and round trips in `stats` (the peer's, across its
    /// connections) rather than in its own.
    #[must_use]
    pub fn counted_in(mut self, stats: Arc<LinkStats>) -> Self {
        self.stats = stats;
        self
    }
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver").field("chain_id", &self.cfg.chain_id).finish_non_exhaustive()
    }
}

/// The queues of a new connection: the handle to send with, the inbound queues, and the driver
/// to run over the byte stream.
pub fn connection(cfg: ConnConfig) -> (PeerHandle, Inbound, Driver) {
    // `mpsc::channel` refuses 0.
    let n = cfg.queue_frames_max.max(1);
    let lanes = Channel::ALL.map(|c| Lane::of(&cfg, c));
    let (out_lanes, outbound) = unzip(lanes.map(|lane| {
        let (queue, rx) = mpsc::channel(n);
        (OutLane { queue, room: Arc::new(Semaphore::new(lane.bytes)), frame_max: lane.frame_max }, rx)
    }));
    let (inbound, in_rx) = unzip(std::array::from_fn(|_| mpsc::channel(n)));
    (
        PeerHandle { lanes: Arc::new(out_lanes) },
        Inbound { channels: in_rx },
        Driver {
            outbound,
            inbound,
            inbound_room: lanes.map(|lane| Arc::new(Semaphore::new(lane.bytes))),
            frame_max: lanes.map(|lane| lane.frame_max),
            cfg,
            stats: Arc::default(),
        },
    )
}

fn unzip<A, B>([(a0, b0), (a1, b1), (a2, b2), (a3, b3)]: [(A, B); 4]) -> ([A; 4], [B; 4]) {
    ([a0, a1, a2, a3], [b0, b1, b2, b3])
}
