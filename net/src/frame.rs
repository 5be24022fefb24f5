//! Frames of the multiplexed connection: `[channel u8][length u32 BE][payload]`.
//!
//! The decoder is sans-IO: bytes go in as they arrive from TLS, whole frames come out. It
//! holds at most one frame's bytes, refuses an unknown channel or a length above the hard
//! maximum as soon as the header is in (before any payload is buffered), and never panics.

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
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
    /// Header of the frame being read, once complete.
    header: Option<(Channel, usize)>,
}

impl Decoder {
    /// A decoder at the start of a stream.
    pub fn new() -> Self {
        Self::default()
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
                    if self.buf.len() < HEADER_LEN {
                        break;
                    }
                    let channel =
                        Channel::from_u8(self.buf[0]).ok_or(FrameError::UnknownChannel(self.buf[0]))?;
                    let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]);
                    if len as usize > PAYLOAD_MAX {
                        return Err(FrameError::TooLarge(u64::from(len)));
                    }
                    self.buf.clear();
                    self.buf.reserve(len as usize);
                    self.header = Some((channel, len as usize));
                    (channel, len as usize)
                }
            };
            let take = (len - self.buf.len()).min(bytes.len());
            self.buf.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.buf.len() == len {
                frames.push(Frame { channel, payload: std::mem::take(&mut self.buf) });
                self.header = None;
            }
        }
        Ok(())
    }

    /// Bytes held for an incomplete frame.
    pub fn buffered(&self) -> usize {
        self.buf.len()
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
}
