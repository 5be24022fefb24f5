//! One multiplexed peer connection over TLS ([`crate::secure`]).
//!
//! Both sides first send a hello on the control channel (protocol version, chain id) and refuse
//! a peer that speaks another version or chain. Then:
//!
//! * **reading**: bytes become frames ([`crate::frame::Decoder`]); each goes to its channel's
//!   bounded inbound queue. When a queue is full the connection stops reading, so TCP pushes
//!   back on the sender; a peer whose frames still do not fit after `flood_timeout` — it sends
//!   far more than this node consumes, i.e. it floods — is disconnected, as is one sending a
//!   malformed or oversized frame, or nothing at all (not even a ping) for `idle_timeout`.
//! * **writing**: each channel has its own bounded outbound queue ([`PeerHandle::send`] fails
//!   fast when it is full). The writer serves control and consensus first, then gossip and sync
//!   in turn, a bounded number of bytes per turn, so a busy channel never starves consensus.
//!   A peer that stops reading makes writes stall; after `write_timeout` it is disconnected.
//!
//! Every failure ends this connection only; the caller decides about reconnecting.

use std::{sync::Arc, time::Duration};

use tokio::{
    io::{AsyncRead, AsyncWrite},
    sync::mpsc::{self, error::TrySendError},
    time::{Instant, timeout},
};

use crate::{
    frame::{self, Channel, Decoder, Frame, FrameError},
    secure::{Secure, SecureError, SecureReader, SecureWriter},
};

/// Version of this wire protocol, sent in the hello.
pub const PROTOCOL_VERSION: u16 = 1;
/// Longest chain id a hello carries.
const CHAIN_ID_MAX: usize = 64;
/// Control messages.
const HELLO: u8 = 1;
const PING: u8 = 2;
const PONG: u8 = 3;

/// Bounds and timers of a connection.
#[derive(Clone, Debug)]
pub struct ConnConfig {
    /// The chain both sides must be on.
    pub chain_id: String,
    /// Frames waiting per channel, each direction.
    pub queue_frames_max: usize,
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
            queue_frames_max: 1_024,
            turn_bytes: 256 * 1024,
            write_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            flood_timeout: Duration::from_secs(2),
            ping_interval: Duration::from_secs(5),
            hello_timeout: Duration::from_secs(10),
        }
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
    queues: Arc<[mpsc::Sender<Vec<u8>>; 4]>,
}

/// Why [`PeerHandle::send`] did not queue a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The channel's outbound queue is full: the peer is slow.
    #[error("channel {0:?} is full")]
    Full(Channel),
    /// The connection has ended.
    #[error("connection closed")]
    Closed,
    /// The payload is above [`frame::PAYLOAD_MAX`].
    #[error("payload too large")]
    TooLarge,
}

impl PeerHandle {
    /// Queues `payload` on `channel` without waiting.
    pub fn send(&self, channel: Channel, payload: Vec<u8>) -> Result<(), SendError> {
        match self.queue(channel, &payload)?.try_send(payload) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(SendError::Full(channel)),
            Err(TrySendError::Closed(_)) => Err(SendError::Closed),
        }
    }

    /// Queues `payload` on `channel`, waiting for room: for a sender that would rather slow
    /// down than drop (bulk transfers, benchmarks); gossip and consensus use [`Self::send`].
    pub async fn send_wait(&self, channel: Channel, payload: Vec<u8>) -> Result<(), SendError> {
        self.queue(channel, &payload)?.send(payload).await.map_err(|_| SendError::Closed)
    }

    /// The outbound queue of `channel`, if `payload` fits in a frame.
    fn queue(&self, channel: Channel, payload: &[u8]) -> Result<&mpsc::Sender<Vec<u8>>, SendError> {
        if payload.len() > frame::PAYLOAD_MAX {
            return Err(SendError::TooLarge);
        }
        Ok(&self.queues[channel as usize])
    }
}

/// The inbound side of a connection: frames of every channel but control, in arrival order per
/// channel.
#[derive(Debug)]
pub struct Inbound {
    /// One receiver per channel ([`Channel::Control`]'s stays empty: the connection answers it).
    pub channels: [mpsc::Receiver<Vec<u8>>; 4],
}

/// Drives one connection: made by [`connection`], consumed by [`Driver::run`].
pub struct Driver {
    outbound: [mpsc::Receiver<Vec<u8>>; 4],
    inbound: [mpsc::Sender<Vec<u8>>; 4],
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
    let n = cfg.queue_frames_max.max(1);
    let (out_tx, out_rx): (Vec<_>, Vec<_>) = (0..4).map(|_| mpsc::channel(n)).unzip();
    let (in_tx, in_rx): (Vec<_>, Vec<_>) = (0..4).map(|_| mpsc::channel(n)).unzip();
    let (Ok(out_tx), Ok(out_rx), Ok(in_tx), Ok(in_rx)) = (
        <[_; 4]>::try_from(out_tx),
        <[_; 4]>::try_from(out_rx),
        <[_; 4]>::try_from(in_tx),
        <[_; 4]>::try_from(in_rx),
    ) else {
        unreachable!("four channels made above")
    };
    (
        PeerHandle { queues: Arc::new(out_tx) },
        Inbound { channels: in_rx },
        Driver { outbound: out_rx, inbound: in_tx, cfg },
    )
}

impl Driver {
    /// Runs the connection over `link` until it fails, or until every [`PeerHandle`] or the
    /// [`Inbound`] is dropped ([`ConnError::Closed`]).
    pub async fn run<S>(self, link: Secure<S>) -> ConnError
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let Self { mut outbound, inbound, cfg } = self;
        let Secure { reader: mut rd, writer: mut wr, .. } = link;
        let mut decoder = Decoder::new();
        let early = match hello(&mut rd, &mut wr, &mut decoder, &cfg).await {
            Ok(frames) => frames,
            Err(e) => return e,
        };
        // Pongs the reader owes, handed to the writer.
        let (pong_tx, mut pong_rx) = mpsc::channel::<()>(4);
        let reader = async {
            let mut pending = early;
            loop {
                for Frame { channel, payload } in pending.drain(..) {
                    if channel == Channel::Control {
                        match payload.first() {
                            // A peer that pings faster than pongs drain is flooding.
                            Some(&PING) => {
                                pong_tx.try_send(()).map_err(|_| ConnError::Flood(Channel::Control))?;
                            }
                            Some(&PONG) => {}
                            _ => return Err(ConnError::Hello("unexpected control message".into())),
                        }
                        continue;
                    }
                    // A full queue stops the reading (TCP pushes back on the peer) for at most
                    // the flood timeout.
                    let queue = &inbound[channel as usize];
                    let payload = match queue.try_send(payload) {
                        Ok(()) => continue,
                        // Nobody listens any more: the node is closing this connection.
                        Err(TrySendError::Closed(_)) => return Err(ConnError::Closed),
                        Err(TrySendError::Full(p)) => p,
                    };
                    match timeout(cfg.flood_timeout, queue.send(payload)).await {
                        Err(_) => return Err(ConnError::Flood(channel)),
                        Ok(Err(_)) => return Err(ConnError::Closed),
                        Ok(Ok(())) => {}
                    }
                }
                let read = rd.read(|plain| decoder.push_into(plain, &mut pending).map_err(ConnError::from));
                match timeout(cfg.idle_timeout, read).await {
                    Err(_) => return Err(ConnError::Idle(cfg.idle_timeout)),
                    Ok(r) => r?,
                };
            }
            #[allow(unreachable_code)]
            Ok::<(), ConnError>(())
        };
        let writer = async {
            let [control, gossip, consensus, sync] = &mut outbound;
            let mut out = Outgoing::default();
            let mut last_write = Instant::now();
            let mut next_low = 0usize;
            loop {
                out.clear();
                // Control and consensus first, whole queues.
                drain(control, Channel::Control, usize::MAX, &mut out);
                while pong_rx.try_recv().is_ok() {
                    out.push(Channel::Control, vec![PONG]);
                }
                drain(consensus, Channel::Consensus, usize::MAX, &mut out);
                // Then gossip and sync in turn, a bounded share each.
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
                        Some(()) = pong_rx.recv() => out.push(Channel::Control, vec![PONG]),
                        r = gossip.recv() => match r { Some(p) => out.push(Channel::Gossip, p), None => return ConnError::Closed },
                        r = sync.recv() => match r { Some(p) => out.push(Channel::Sync, p), None => return ConnError::Closed },
                        () = tokio::time::sleep_until(until) => out.push(Channel::Control, vec![PING]),
                    }
                }
                match timeout(cfg.write_timeout, out.write_to(&mut wr)).await {
                    Err(_) => return ConnError::WriteStalled(cfg.write_timeout),
                    Ok(Err(e)) => return e.into(),
                    Ok(Ok(())) => last_write = Instant::now(),
                }
            }
        };
        let end = tokio::select! {
            r = reader => r.err().unwrap_or(ConnError::Closed),
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

fn push(channel: Channel, payload: &[u8], out: &mut Vec<u8>) {
    // Payloads were checked by `PeerHandle::send`; control payloads are a byte.
    let _ = frame::encode(channel, payload, out);
}

/// Frames gathered for one write: each header and the payload it heads, moved from its queue
/// (not copied: TLS copies each byte once, into the record sealing it).
#[derive(Default)]
struct Outgoing {
    frames: Vec<([u8; frame::HEADER_LEN], Vec<u8>)>,
    bytes: usize,
}

impl Outgoing {
    fn push(&mut self, channel: Channel, payload: Vec<u8>) {
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
fn drain(rx: &mut mpsc::Receiver<Vec<u8>>, channel: Channel, budget: usize, out: &mut Outgoing) {
    let start = out.bytes;
    while out.bytes - start < budget {
        match rx.try_recv() {
            Ok(p) => out.push(channel, p),
            Err(_) => break,
        }
    }
}

fn hello_payload(cfg: &ConnConfig) -> Vec<u8> {
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
    let p = &f.payload;
    if f.channel != Channel::Control || p.first() != Some(&HELLO) || p.len() < 4 {
        return Err(ConnError::Hello("the first frame is not a hello".into()));
    }
    let version = u16::from_be_bytes([p[1], p[2]]);
    if version != PROTOCOL_VERSION {
        return Err(ConnError::Hello(format!(
            "protocol version {version}, this node speaks {PROTOCOL_VERSION}"
        )));
    }
    let len = usize::from(p[3]);
    let chain = p
        .get(4..4 + len)
        .filter(|_| p.len() == 4 + len)
        .ok_or_else(|| ConnError::Hello("malformed".into()))?;
    if chain != cfg.chain_id.as_bytes() {
        return Err(ConnError::Hello(format!(
            "chain {:?}, this node is on {:?}",
            String::from_utf8_lossy(chain),
            cfg.chain_id
        )));
    }
    Ok(())
}
