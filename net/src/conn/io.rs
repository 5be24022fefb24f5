//! A connection's reading and writing once it is up: the hello exchange, the reader that queues
//! frames within their channels' budgets, and the writer that serves the channels in priority
//! order (see the module above for the rules).

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite},
    sync::{
        Semaphore,
        mpsc::{self, error::TrySendError},
    },
    time::{Instant, timeout, timeout_at},
};

use super::{
    CHAIN_ID_MAX, ConnConfig, ConnError, Driver, HELLO, LinkStats, PING, PONG, PROTOCOL_VERSION, Payload,
};
use crate::{
    frame::{self, Channel, Decoder, Frame},
    secure::{Secure, SecureError, SecureReader, SecureWriter},
};

impl Driver {
    /// Runs the connection over `link` until it fails, or until every [`PeerHandle`](super::PeerHandle) or the
    /// [`Inbound`](super::Inbound) is dropped ([`ConnError::Closed`]).
    pub async fn run<S>(self, link: Secure<S>) -> ConnError
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let Self { mut outbound, inbound, inbound_room, frame_max, cfg, stats } = self;
        let Secure { reader: mut rd, writer: mut wr, .. } = link;
        // Frames above their channel's budget are refused at their header.
        let mut decoder = Decoder::with_payload_max(frame_max);
        let early = match hello(&mut rd, &mut wr, &mut decoder, &cfg).await {
            Ok(frames) => frames,
            Err(e) => return e,
        };
        // Pongs the reader owes, handed to the writer.
        let (pong_tx, pong_rx) = mpsc::channel::<()>(4);
        // The ping in flight: when it was sent, for its round trip.
        let ping = Ping { since: Instant::now(), sent_ns: AtomicU64::new(0), stats };
        let reader =
            read_loop(&mut rd, &mut decoder, early, &pong_tx, (&inbound, &inbound_room), &cfg, &ping);
        let writer = write_loop(&mut wr, &mut outbound, pong_rx, &cfg, &ping);
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

/// The connection's ping in flight (one at a time) and where its round trip is counted.
struct Ping {
    since: Instant,
    /// When the ping in flight was sent, ns after `since` (0: none in flight).
    sent_ns: AtomicU64,
    stats: Arc<LinkStats>,
}

impl Ping {
    /// Marks a ping sent now, unless one is in flight; whether to send it.
    fn send(&self) -> bool {
        let now = u64::try_from(self.since.elapsed().as_nanos()).unwrap_or(u64::MAX).max(1);
        self.sent_ns.compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
    }

    /// A pong arrived: the round trip of the ping in flight, if any (a pong nobody asked for
    /// measures nothing).
    fn pong(&self) {
        let sent = self.sent_ns.swap(0, Ordering::Relaxed);
        if sent != 0 {
            let elapsed = self.since.elapsed().saturating_sub(Duration::from_nanos(sent));
            self.stats.round_trip(elapsed);
        }
    }
}

/// Reads frames until the connection fails: control frames answered here (a ping owes a pong,
/// handed to the writer), every other frame queued on its channel within its budget.
async fn read_loop<R: AsyncRead + Unpin>(
    rd: &mut SecureReader<R>,
    decoder: &mut Decoder,
    early: Vec<Frame>,
    pong_tx: &mpsc::Sender<()>,
    (inbound, inbound_room): (&[mpsc::Sender<Payload>; 4], &[Arc<Semaphore>; 4]),
    cfg: &ConnConfig,
    ping: &Ping,
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
                    Some(&PONG) => ping.pong(),
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
            Ok(Ok(n)) => ping.stats.received(n),
        }
    }
}

/// Writes until the connection fails or every sender is dropped: control and consensus first,
/// whole queues; then gossip and sync in turn, a bounded share each; a ping when quiet, and one
/// every ping interval anyway (its round trip is measured; one in flight at a time).
async fn write_loop<W: AsyncWrite + Unpin>(
    wr: &mut SecureWriter<W>,
    outbound: &mut [mpsc::Receiver<Payload>; 4],
    mut pong_rx: mpsc::Receiver<()>,
    cfg: &ConnConfig,
    ping: &Ping,
) -> ConnError {
    let [control, gossip, consensus, sync] = outbound;
    let mut out = Outgoing::default();
    let mut last_write = Instant::now();
    let mut last_ping = Instant::now();
    let mut next_low = 0usize;
    loop {
        out.clear();
        drain(control, Channel::Control, usize::MAX, &mut out);
        if last_ping.elapsed() >= cfg.ping_interval && ping.send() {
            out.push(Channel::Control, vec![PING].into());
            last_ping = Instant::now();
        }
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
                () = tokio::time::sleep_until(until) => {
                    // A ping keeps the link alive; it is timed if none is in flight.
                    if ping.send() {
                        last_ping = Instant::now();
                    }
                    out.push(Channel::Control, vec![PING].into());
                }
            }
        }
        match timeout(cfg.write_timeout, out.write_to(wr)).await {
            Err(_) => return ConnError::WriteStalled(cfg.write_timeout),
            Ok(Err(e)) => return e.into(),
            Ok(Ok(())) => {
                ping.stats.sent(out.bytes);
                last_write = Instant::now();
            }
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
