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

use std::{ops::Deref, sync::Arc, time::Duration};

use tokio::{
    io::{AsyncRead, AsyncWrite},
    sync::{
        OwnedSemaphorePermit, Semaphore, TryAcquireError,
        mpsc::{self, error::TrySendError},
    },
    time::{Instant, timeout, timeout_at},
};

use crate::{
    frame::{self, Channel, Decoder, Frame, FrameError},
    secure::{Secure, SecureError, SecureReader, SecureWriter},
};

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
pub struct Driver {
    outbound: [mpsc::Receiver<Payload>; 4],
    inbound: [mpsc::Sender<Payload>; 4],
    /// Bytes each channel may still take in.
    inbound_room: [Arc<Semaphore>; 4],
    frame_max: [usize; 4],
    cfg: ConnConfig,
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
        },
    )
}

fn unzip<A, B>([(a0, b0), (a1, b1), (a2, b2), (a3, b3)]: [(A, B); 4]) -> ([A; 4], [B; 4]) {
    ([a0, a1, a2, a3], [b0, b1, b2, b3])
}

impl Driver {
    /// Runs the connection over `link` until it fails, or until every [`PeerHandle`] or the
    /// [`Inbound`] is dropped ([`ConnError::Closed`]).
    pub async fn run<S>(self, link: Secure<S>) -> ConnError
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let Self { mut outbound, inbound, inbound_room, frame_max, cfg } = self;
        let Secure { reader: mut rd, writer: mut wr, .. } = link;
        // Frames above their channel's budget are refused at their header.
        let mut decoder = Decoder::with_payload_max(frame_max);
        let early = match hello(&mut rd, &mut wr, &mut decoder, &cfg).await {
            Ok(frames) => frames,
            Err(e) => return e,
        };
        // Pongs the reader owes, handed to the writer.
        let (pong_tx, pong_rx) = mpsc::channel::<()>(4);
        let reader = read_loop(&mut rd, &mut decoder, early, &pong_tx, &inbound, &inbound_room, &cfg);
        let writer = write_loop(&mut wr, &mut outbound, pong_rx, &cfg);
        let end = tokio::select! {
            e = reader => e,
            e = writer => e,
        };
        // An orderly end, this side's or the peer's, is said with `close_notify` (for as long as
        // a write may take), so the peer can tell it from a connection lost.
        if matches!(end, ConnError::Closed | ConnError::PeerClosed) {
            let _ = timeout(cfg.write_timeout, wr.close()).await;
        }
        end
    }
}

/// Reads frames until the connection fails: control frames answered here (a ping owes a pong,
/// handed to the writer), every other frame queued on its channel within its budget.
async fn read_loop<R: AsyncRead + Unpin>(
    rd: &mut SecureReader<R>,
    decoder: &mut Decoder,
    early: Vec<Frame>,
    pong_tx: &mpsc::Sender<()>,
    inbound: &[mpsc::Sender<Payload>; 4],
    inbound_room: &[Arc<Semaphore>; 4],
    cfg: &ConnConfig,
) -> ConnError {
    let mut pending = early;
    loop {
        for Frame { channel, payload } in pending.drain(..) {
            if channel == Channel::Control {
                match payload.first() {
                    // A peer that pings faster than pongs drain is flooding.
                    Some(&PING) => {
                        if pong_tx.try_send(()).is_err() {
                            return ConnError::Flood(Channel::Control);
                        }
                    }
                    Some(&PONG) => {}
                    _ => return ConnError::Hello("unexpected control message".into()),
                }
                continue;
            }
            let i = channel as usize;
            if let Err(e) = admit(&inbound[i], &inbound_room[i], channel, payload, cfg.flood_timeout).await {
                return e;
            }
        }
        let read = rd.read(|plain| decoder.push_into(plain, &mut pending).map_err(ConnError::from));
        match timeout(cfg.idle_timeout, read).await {
            Err(_) => return ConnError::Idle(cfg.idle_timeout),
            Ok(Err(e)) => return e,
            Ok(Ok(_)) => {}
        }
    }
}

/// Writes until the connection fails or every sender is dropped: control and consensus first,
/// whole queues; then gossip and sync in turn, a bounded share each; a ping when quiet.
async fn write_loop<W: AsyncWrite + Unpin>(
    wr: &mut SecureWriter<W>,
    outbound: &mut [mpsc::Receiver<Payload>; 4],
    mut pong_rx: mpsc::Receiver<()>,
    cfg: &ConnConfig,
) -> ConnError {
    let [control, gossip, consensus, sync] = outbound;
    let mut out = Outgoing::default();
    let mut last_write = Instant::now();
    let mut next_low = 0usize;
    loop {
        out.clear();
        drain(control, Channel::Control, usize::MAX, &mut out);
        while pong_rx.try_recv().is_ok() {
            out.push(Channel::Control, vec![PONG].into());
        }
        drain(consensus, Channel::Consensus, usize::MAX, &mut out);
        if next_low % 2 == 0 {
            drain(gossip, Channel::Gossip, cfg.turn_bytes, &mut out);
            drain(sync, Channel::Sync, cfg.turn_bytes, &mut out);
        } else {
            drain(sync, Channel::Sync, cfg.turn_bytes, &mut out);
            drain(gossip, Channel::Gossip, cfg.turn_bytes, &mut out);
        }
        next_low += 1;
        if out.is_empty() {
            // Wait for anything to send, or ping when quiet.
            let until = last_write + cfg.ping_interval;
            tokio::select! {
                biased;
                r = control.recv() => match r { Some(p) => out.push(Channel::Control, p), None => return ConnError::Closed },
                r = consensus.recv() => match r { Some(p) => out.push(Channel::Consensus, p), None => return ConnError::Closed },
                Some(()) = pong_rx.recv() => out.push(Channel::Control, vec![PONG].into()),
                r = gossip.recv() => match r { Some(p) => out.push(Channel::Gossip, p), None => return ConnError::Closed },
                r = sync.recv() => match r { Some(p) => out.push(Channel::Sync, p), None => return ConnError::Closed },
                () = tokio::time::sleep_until(until) => out.push(Channel::Control, vec![PING].into()),
            }
        }
        match timeout(cfg.write_timeout, out.write_to(wr)).await {
            Err(_) => return ConnError::WriteStalled(cfg.write_timeout),
            Ok(Err(e)) => return e.into(),
            Ok(Ok(())) => last_write = Instant::now(),
        }
    }
}

/// Queues an inbound frame once its channel has room for its bytes and a slot for it. Until
/// then the reading stops (TCP pushes back on the peer), for at most `flood`: a peer whose
/// frame still does not fit sends far more than this node consumes.
async fn admit(
    queue: &mpsc::Sender<Payload>,
    room: &Arc<Semaphore>,
    channel: Channel,
    bytes: Vec<u8>,
    flood: Duration,
) -> Result<(), ConnError> {
    // The decoder bounds a frame to its channel's `frame_max`, within both `u32` and the
    // budget, so the bytes come once the node drops what it holds.
    let n = u32::try_from(bytes.len()).map_err(|_| ConnError::Flood(channel))?;
    let deadline = Instant::now() + flood;
    let permit = match room.clone().try_acquire_many_owned(n) {
        Ok(p) => p,
        Err(_) => {
            let wait = async {
                tokio::select! {
                    p = room.clone().acquire_many_owned(n) => p.map_err(|_| ConnError::Closed),
                    // Nobody listens any more: the node is closing this connection.
                    () = queue.closed() => Err(ConnError::Closed),
                }
            };
            timeout_at(deadline, wait).await.map_err(|_| ConnError::Flood(channel))??
        }
    };
    let payload = match queue.try_send(Payload { bytes, permit: Some(permit) }) {
        Ok(()) => return Ok(()),
        Err(TrySendError::Closed(_)) => return Err(ConnError::Closed),
        Err(TrySendError::Full(p)) => p,
    };
    match timeout_at(deadline, queue.send(payload)).await {
        Err(_) => Err(ConnError::Flood(channel)),
        Ok(Err(_)) => Err(ConnError::Closed),
        Ok(Ok(())) => Ok(()),
    }
}

fn push(channel: Channel, payload: &[u8], out: &mut Vec<u8>) {
    // Payloads were checked by `PeerHandle::send`; control payloads are a byte.
    let _ = frame::encode(channel, payload, out);
}

/// Frames gathered for one write: each header and the payload it heads, moved from its queue
/// (not copied: TLS copies each byte once, into the record sealing it). The payloads keep their
/// channels' bytes counted until the write is done and they are cleared.
#[derive(Default)]
struct Outgoing {
    frames: Vec<([u8; frame::HEADER_LEN], Payload)>,
    bytes: usize,
}

impl Outgoing {
    fn push(&mut self, channel: Channel, payload: Payload) {
        // Payloads were checked by `PeerHandle::send`; control payloads are a byte.
        if let Ok(header) = frame::header(channel, payload.len()) {
            self.bytes += header.len() + payload.len();
            self.frames.push((header, payload));
        }
    }

    fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    fn clear(&mut self) {
        self.frames.clear();
        self.bytes = 0;
    }

    /// Seals every frame into TLS records and writes them, flushed.
    async fn write_to<W: AsyncWrite + Unpin>(&self, wr: &mut SecureWriter<W>) -> Result<(), SecureError> {
        let parts: Vec<&[u8]> = self.frames.iter().flat_map(|(h, p)| [&h[..], &p[..]]).collect();
        wr.write(&parts).await
    }
}

/// Moves queued frames of `channel` into `out` until about `budget` bytes.
fn drain(rx: &mut mpsc::Receiver<Payload>, channel: Channel, budget: usize, out: &mut Outgoing) {
    let start = out.bytes;
    while out.bytes - start < budget {
        match rx.try_recv() {
            Ok(p) => out.push(channel, p),
            Err(_) => break,
        }
    }
}

/// The hello this node sends: `tag 1 | version u16 BE | n u8 | chain id [n]`, the chain id cut
/// to `CHAIN_ID_MAX` (64) bytes (a genesis allows 32). Public with [`parse_hello`] so that the
/// fuzz targets check the two against each other.
pub fn hello_payload(cfg: &ConnConfig) -> Vec<u8> {
    let mut p = vec![HELLO];
    p.extend_from_slice(&PROTOCOL_VERSION.to_be_bytes());
    let id = cfg.chain_id.as_bytes();
    p.push(id.len().min(CHAIN_ID_MAX) as u8);
    p.extend_from_slice(&id[..id.len().min(CHAIN_ID_MAX)]);
    p
}

async fn hello<R, W>(
    rd: &mut SecureReader<R>,
    wr: &mut SecureWriter<W>,
    decoder: &mut Decoder,
    cfg: &ConnConfig,
) -> Result<Vec<Frame>, ConnError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut out = Vec::new();
    push(Channel::Control, &hello_payload(cfg), &mut out);
    let exchange = async {
        wr.write(&[&out]).await?;
        let mut frames = Vec::new();
        while frames.is_empty() {
            rd.read(|plain| decoder.push_into(plain, &mut frames).map_err(ConnError::from)).await?;
        }
        check_hello(&frames[0], cfg)?;
        // The peer may already have sent more after its hello: those frames are the
        // connection's first.
        frames.remove(0);
        Ok(frames)
    };
    timeout(cfg.hello_timeout, exchange).await.map_err(|_| ConnError::Hello("timed out".into()))?
}

fn check_hello(f: &Frame, cfg: &ConnConfig) -> Result<(), ConnError> {
    if f.channel != Channel::Control {
        return Err(ConnError::Hello("the first frame is not a hello".into()));
    }
    let chain = parse_hello(&f.payload)?;
    if chain != cfg.chain_id {
        return Err(ConnError::Hello(format!("chain {chain:?}, this node is on {:?}", cfg.chain_id)));
    }
    Ok(())
}

/// Decodes a peer's hello payload (the layout of [`hello_payload`]) and returns its chain id.
///
/// A hello of another protocol version is refused on its version alone, before the rest is
/// read: what follows the version is that version's layout, and "protocol version 2" is what
/// the operator needs to read. A chain id longer than `CHAIN_ID_MAX` (64 bytes) or not UTF-8 is
/// malformed (no node sends one). Public so that the fuzz targets run the one decoder the
/// connection runs; whether the chain is this node's is the caller's check.
pub fn parse_hello(payload: &[u8]) -> Result<&str, ConnError> {
    let [HELLO, a, b, len, chain @ ..] = payload else {
        return Err(ConnError::Hello("the first frame is not a hello".into()));
    };
    let version = u16::from_be_bytes([*a, *b]);
    if version != PROTOCOL_VERSION {
        return Err(ConnError::Hello(format!(
            "protocol version {version}, this node speaks {PROTOCOL_VERSION}"
        )));
    }
    if chain.len() != usize::from(*len) || chain.len() > CHAIN_ID_MAX {
        return Err(ConnError::Hello("malformed".into()));
    }
    std::str::from_utf8(chain).map_err(|_| ConnError::Hello("malformed".into()))
}
