//! Frames of the multiplexed connection: `[channel u8][length u32 BE][payload]`.
//!
//! The decoder is sans-IO: bytes go in as they arrive from TLS, whole frames come out. It
//! holds at most one frame's bytes, refuses an unknown channel or a length above the hard
//! maximum (or its channel's, [`Decoder::with_payload_max`]) as soon as the header is in, and
//! never panics. Its buffer grows with the payload bytes that have arrived, never from the
//! length a header claims: a peer that sends headers alone makes it allocate nothing.

/// The channels of a peer connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Channel {
    /// Hello (protocol version, chain id), ping.
    Control = 0,
    /// Batched transaction gossip.
    Gossip = 1,
    /// Consensus messages.
    Consensus = 2,
    /// Ledger sync.
    Sync = 3,
}

impl Channel {
    /// Every channel, by number.
    pub const ALL: [Self; 4] = [Self::Control, Self::Gossip, Self::Consensus, Self::Sync];

    /// The channel numbered `n`.
    pub fn from_u8(n: u8) -> Option<Self> {
        Self::ALL.get(usize::from(n)).copied()
    }
}

/// Header bytes: channel and length.
pub const HEADER_LEN: usize = 5;
/// Largest payload of any frame (a ledger-sync chunk fits; larger data is split by its sender).
pub const PAYLOAD_MAX: usize = 4 << 20;

/// A frame: its channel and payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// Channel.
    pub channel: Channel,
    /// Payload.
    pub payload: Vec<u8>,
}

/// Why a byte stream is not a sequence of frames. The connection is closed on any of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// A channel number this protocol does not have.
    #[error("unknown channel {0}")]
    UnknownChannel(u8),
    /// A length above the maximum.
    #[error("frame of {0} bytes, above the {PAYLOAD_MAX}-byte maximum")]
    TooLarge(u64),
    /// A length above the maximum of its channel on this connection (its byte budget).
    #[error("frame of {len} bytes on channel {channel:?}, above its {max}-byte maximum")]
    ChannelTooLarge {
        /// The channel.
        channel: Channel,
        /// The length in the header.
        len: usize,
        /// The channel's maximum.
        max: usize,
    },
    /// A payload passed to [`encode`] above the maximum.
    #[error("payload of {0} bytes, above the {PAYLOAD_MAX}-byte maximum")]
    PayloadTooLarge(usize),
}

/// Appends one frame to `out`.
pub fn encode(channel: Channel, payload: &[u8], out: &mut Vec<u8>) -> Result<(), FrameError> {
    let header = header(channel, payload.len())?;
    out.reserve(HEADER_LEN + payload.len());
    out.extend_from_slice(&header);
    out.extend_from_slice(payload);
    Ok(())
}

/// The header of a frame of `len` payload bytes on `channel`.
pub fn header(channel: Channel, len: usize) -> Result<[u8; HEADER_LEN], FrameError> {
    if len > PAYLOAD_MAX {
        return Err(FrameError::PayloadTooLarge(len));
    }
    let [a, b, c, d] = (len as u32).to_be_bytes();
    Ok([channel as u8, a, b, c, d])
}

/// Turns a byte stream into frames.
#[derive(Debug)]
pub struct Decoder {
    buf: Vec<u8>,
    /// Header of the frame being read, once complete.
    header: Option<(Channel, usize)>,
    /// Largest payload taken on each channel, by number; at most [`PAYLOAD_MAX`].
    payload_max: [usize; 4],
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder {
    /// A decoder at the start of a stream, taking frames up to [`PAYLOAD_MAX`] on every channel.
    pub fn new() -> Self {
        Self::with_payload_max([PAYLOAD_MAX; 4])
    }

    /// A decoder taking frames up to `payload_max[channel as usize]` on each channel (each
    /// capped at [`PAYLOAD_MAX`]): a connection refuses a frame it could never queue.
    pub fn with_payload_max(payload_max: [usize; 4]) -> Self {
        Self { buf: Vec::new(), header: None, payload_max: payload_max.map(|m| m.min(PAYLOAD_MAX)) }
    }

    /// Feeds `bytes` and returns every frame they complete. After an error the stream is
    /// unusable: close the connection.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<Frame>, FrameError> {
        let mut frames = Vec::new();
        self.push_into(bytes, &mut frames)?;
        Ok(frames)
    }

    /// As [`Self::push`], appending the frames to `frames`.
    pub fn push_into(&mut self, mut bytes: &[u8], frames: &mut Vec<Frame>) -> Result<(), FrameError> {
        while !bytes.is_empty() {
            let (channel, len) = match self.header {
                Some(h) => h,
                None => {
                    let take = (HEADER_LEN - self.buf.len()).min(bytes.len());
                    self.buf.extend_from_slice(&bytes[..take]);
                    bytes = &bytes[take..];
                    let &[n, a, b, c, d] = &self.buf[..] else { break };
                    let channel = Channel::from_u8(n).ok_or(FrameError::UnknownChannel(n))?;
                    let len = u32::from_be_bytes([a, b, c, d]);
                    if len as usize > PAYLOAD_MAX {
                        return Err(FrameError::TooLarge(u64::from(len)));
                    }
                    let (len, max) = (len as usize, self.payload_max[channel as usize]);
                    if len > max {
                        return Err(FrameError::ChannelTooLarge { channel, len, max });
                    }
                    // No reserve from `len`: that is the peer's claim, not bytes it sent.
                    self.buf.clear();
                    self.header = Some((channel, len));
                    (channel, len)
                }
            };
            let take = (len - self.buf.len()).min(bytes.len());
            self.grow(take, len);
            self.buf.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.buf.len() == len {
                frames.push(Frame { channel, payload: std::mem::take(&mut self.buf) });
                self.header = None;
            }
        }
        Ok(())
    }

    /// Makes room for `more` arrived bytes of a `len`-byte payload: doubling, so a frame that
    /// comes in many TLS records is copied a bounded number of times, but capped at `len`, so
    /// the buffer is at most twice what has arrived and a finished payload has no spare
    /// capacity (its length is what the connection counts against the channel's budget).
    fn grow(&mut self, more: usize, len: usize) {
        let need = self.buf.len() + more;
        if need > self.buf.capacity() {
            let target = need.max(self.buf.capacity().saturating_mul(2)).min(len);
            self.buf.reserve_exact(target - self.buf.len());
        }
    }

    /// Bytes held for an incomplete frame.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Bytes allocated for an incomplete frame: at most twice [`Self::buffered`] (or a
    /// header's few bytes), whatever length the frame's header claims.
    pub fn buffered_capacity(&self) -> usize {
        self.buf.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_survive_any_split() {
        let mut stream = Vec::new();
        let sent: Vec<Frame> = (0..20u8)
            .map(|i| Frame {
                channel: Channel::ALL[usize::from(i % 4)],
                payload: vec![i; usize::from(i) * 7],
            })
            .collect();
        for f in &sent {
            encode(f.channel, &f.payload, &mut stream).unwrap();
        }
        for step in [1, 2, 3, 5, 7, 64, stream.len()] {
            let mut d = Decoder::new();
            let mut got = Vec::new();
            for chunk in stream.chunks(step) {
                got.extend(d.push(chunk).unwrap());
            }
            assert_eq!(got, sent, "chunks of {step}");
            assert_eq!(d.buffered(), 0);
        }
    }

    #[test]
    fn bad_headers_are_refused_before_any_payload() {
        let mut d = Decoder::new();
        assert_eq!(d.push(&[9, 0, 0, 0, 1, 0]), Err(FrameError::UnknownChannel(9)));
        let mut d = Decoder::new();
        let huge = (PAYLOAD_MAX as u32 + 1).to_be_bytes();
        assert_eq!(
            d.push(&[0, huge[0], huge[1], huge[2], huge[3]]),
            Err(FrameError::TooLarge(PAYLOAD_MAX as u64 + 1))
        );
        assert!(d.buffered() <= HEADER_LEN, "no payload of an oversized frame is buffered");
        let mut d = Decoder::new();
        assert_eq!(d.push(&[0xff; 5]), Err(FrameError::UnknownChannel(0xff)));
        assert!(encode(Channel::Sync, &vec![0; PAYLOAD_MAX + 1], &mut Vec::new()).is_err());
    }

    #[test]
    fn a_header_alone_allocates_nothing_of_its_claimed_length() {
        let mut d = Decoder::new();
        let claimed = (PAYLOAD_MAX as u32).to_be_bytes();
        let head = [Channel::Sync as u8, claimed[0], claimed[1], claimed[2], claimed[3]];
        assert!(d.push(&head).unwrap().is_empty());
        assert!(d.buffered_capacity() <= 2 * HEADER_LEN, "a header alone: {}", d.buffered_capacity());
        assert!(d.push(&[1; 10]).unwrap().is_empty());
        assert_eq!(d.buffered(), 10);
        assert!(d.buffered_capacity() <= 64, "ten bytes of a 4 MiB frame: {}", d.buffered_capacity());
        // The buffer grows with what arrives, in records, to the frame's length and no more.
        let mut arrived = 10;
        let chunk = 16 * 1024;
        for _ in 0..100 {
            assert!(d.push(&vec![1; chunk]).unwrap().is_empty());
            arrived += chunk;
            assert!(d.buffered_capacity() <= 2 * arrived, "{} for {arrived}", d.buffered_capacity());
        }
        let frames = d.push(&vec![1; PAYLOAD_MAX - arrived]).unwrap();
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].payload.len(), PAYLOAD_MAX);
        assert_eq!(frames[0].payload.capacity(), PAYLOAD_MAX, "no spare capacity to go uncounted");
    }

    #[test]
    fn a_channel_maximum_refuses_a_frame_at_its_header() {
        let mut d = Decoder::with_payload_max([16, PAYLOAD_MAX, 100, PAYLOAD_MAX]);
        let mut ok = Vec::new();
        encode(Channel::Consensus, &[5; 100], &mut ok).unwrap();
        encode(Channel::Control, &[1; 16], &mut ok).unwrap();
        assert_eq!(d.push(&ok).unwrap().len(), 2);
        assert_eq!(
            d.push(&[Channel::Consensus as u8, 0, 0, 0, 101]),
            Err(FrameError::ChannelTooLarge { channel: Channel::Consensus, len: 101, max: 100 })
        );
        assert!(d.buffered_capacity() <= 2 * HEADER_LEN, "nothing was kept for it");
    }
}
