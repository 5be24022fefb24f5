//! TLS 1.3 between nodes: the handshake in rustls, the records here.
//!
//! rustls makes the handshake — both certificates checked by [`crate::tls`]'s verifiers, the
//! key schedule — and then hands over the traffic secrets through the API it provides for kernel
//! TLS ([`rustls::kernel`]). This module then seals and opens the TLS 1.3 records (RFC 8446 §5)
//! with aws-lc-rs's AEAD: the work kernel TLS would do, which this project's kernels do not offer
//! (no `tls` upper-layer protocol). Why: rustls 0.23's buffered API copies every received byte
//! from the socket's buffer into its deframer, from there into a plaintext chunk, and from that
//! into the caller's buffer (and regrows its deframer as it goes); here a record is decrypted
//! in place in the read buffer and its plaintext handed straight to the caller, and records are
//! sealed in place in the write buffer. On the wire it is plain TLS 1.3: a peer on rustls's own
//! record layer interoperates (tests below).
//!
//! Key updates (RFC 8446 §4.6.3): rustls computes the next secrets; each side updates its
//! sending key after [`KEY_UPDATE_RECORDS`] records (well under AES-GCM's confidentiality limit)
//! and answers a peer's request for an update. Post-handshake session tickets are not sent
//! ([`crate::tls`] turns them off; a client hands any it receives to rustls).

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicBool, Ordering},
};

use aws_lc_rs::aead::{self, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use rustls::{
    ConnectionTrafficSecrets, client::ClientConnectionData, kernel::KernelConnection,
    server::ServerConnectionData,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};

use crate::Identity;

mod handshake;

pub use self::handshake::{accept, connect};

/// Largest plaintext of a record (2^14 bytes).
pub const PLAINTEXT_MAX: usize = 1 << 14;
/// A record's header: type, legacy version, length.
const HEADER: usize = 5;
/// The AEAD tag ending every record.
const TAG: usize = 16;
/// Largest ciphertext of a TLS 1.3 record (2^14 + 256).
const CIPHERTEXT_MAX: usize = PLAINTEXT_MAX + 256;
/// Bytes read from the socket at once, once the handshake is made.
pub const READ_BUFFER: usize = 256 * 1024;
/// The read buffer of a handshake: rustls takes handshake messages of up to 64 KiB.
const HANDSHAKE_BUFFER: usize = 64 * 1024 + HEADER;
/// Sealed records are written out once this many bytes wait.
const WRITE_BATCH: usize = 256 * 1024;
/// Records sealed under one key before it is updated: 2^22, a margin under the 2^23–2^24
/// records rustls's providers allow AES-GCM keys (ChaCha20-Poly1305 has no such limit).
pub const KEY_UPDATE_RECORDS: u64 = 1 << 22;
/// Records without application data in a row (empty ones, key updates) before the peer counts
/// as flooding (rustls allows as many).
const IDLE_RECORDS_MAX: u8 = 32;

const APPLICATION_DATA: u8 = 23;
const HANDSHAKE: u8 = 22;
const ALERT: u8 = 21;
const KEY_UPDATE: u8 = 24;
const NEW_SESSION_TICKET: u8 = 4;

/// Why a secure connection failed.
#[derive(Debug, thiserror::Error)]
pub enum SecureError {
    /// The socket failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// rustls refused the handshake or a post-handshake step.
    #[error("tls: {0}")]
    Tls(#[from] rustls::Error),
    /// The peer broke the record protocol (a bad tag, an oversized or malformed record).
    #[error("tls record: {0}")]
    Record(&'static str),
    /// The peer sent an alert other than `close_notify`.
    #[error("tls: the peer sent alert {0}")]
    Alert(u8),
    /// The peer closed the connection in order (`close_notify`).
    #[error("closed by the peer")]
    Closed,
    /// The stream ended without `close_notify` (the peer, or the path to it, went away).
    #[error("the stream ended without close_notify")]
    Ended,
}

/// One direction's key: the AEAD key, the static IV and the next record's sequence number.
struct RecordKey {
    key: LessSafeKey,
    iv: [u8; NONCE_LEN],
    seq: u64,
}

impl RecordKey {
    fn new(seq: u64, secrets: ConnectionTrafficSecrets) -> Result<Self, SecureError> {
        let (algorithm, key, iv) = match secrets {
            ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (&aead::AES_128_GCM, key, iv),
            ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (&aead::AES_256_GCM, key, iv),
            ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => (&aead::CHACHA20_POLY1305, key, iv),
            _ => return Err(SecureError::Record("a cipher suite this node does not seal")),
        };
        let key = UnboundKey::new(algorithm, key.as_ref()).map_err(|_| SecureError::Record("bad key"))?;
        let iv = iv.as_ref().try_into().map_err(|_| SecureError::Record("bad iv"))?;
        Ok(Self { key: LessSafeKey::new(key), iv, seq })
    }

    /// The next record's nonce: the IV XOR the sequence number (RFC 8446 §5.3).
    fn next_nonce(&mut self) -> Result<Nonce, SecureError> {
        let mut nonce = self.iv;
        for (n, s) in nonce[NONCE_LEN - 8..].iter_mut().zip(self.seq.to_be_bytes()) {
            *n ^= s;
        }
        self.seq = self.seq.checked_add(1).ok_or(SecureError::Record("sequence numbers exhausted"))?;
        Ok(Nonce::assume_unique_for_key(nonce))
    }
}

/// rustls's side of an established connection: it computes the next secrets on key updates.
enum Kernel {
    Client(KernelConnection<ClientConnectionData>),
    Server(KernelConnection<ServerConnectionData>),
}

impl Kernel {
    fn next_tx(&mut self) -> Result<RecordKey, SecureError> {
        let (seq, secrets) = match self {
            Self::Client(k) => k.update_tx_secret()?,
            Self::Server(k) => k.update_tx_secret()?,
        };
        RecordKey::new(seq, secrets)
    }

    fn next_rx(&mut self) -> Result<RecordKey, SecureError> {
        let (seq, secrets) = match self {
            Self::Client(k) => k.update_rx_secret()?,
            Self::Server(k) => k.update_rx_secret()?,
        };
        RecordKey::new(seq, secrets)
    }

    fn new_session_ticket(&mut self, payload: &[u8]) -> Result<(), SecureError> {
        match self {
            Self::Client(k) => Ok(k.handle_new_session_ticket(payload)?),
            Self::Server(_) => Err(SecureError::Record("a session ticket sent to a server")),
        }
    }
}

/// What the two halves of a connection share.
struct Shared {
    kernel: Mutex<Kernel>,
    /// The peer asked for a key update: the writer sends one before its next record.
    answer_update: AtomicBool,
}

impl Shared {
    fn kernel(&self) -> std::sync::MutexGuard<'_, Kernel> {
        self.kernel.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// An established TLS 1.3 connection, in two halves that run independently.
pub struct Secure<S> {
    /// Opens the peer's records.
    pub reader: SecureReader<ReadHalf<S>>,
    /// Seals this side's records.
    pub writer: SecureWriter<WriteHalf<S>>,
    /// The peer's identity, from its certificate.
    pub peer: Identity,
}

impl<S> std::fmt::Debug for Secure<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secure").field("peer", &self.peer).finish_non_exhaustive()
    }
}

/// The receiving half: reads records, opens them in place, hands over their plaintext.
pub struct SecureReader<R> {
    io: R,
    rx: RecordKey,
    buf: Box<[u8]>,
    /// Bytes not yet taken are `buf[start..end]`.
    start: usize,
    end: usize,
    /// Records without application data since the last with some.
    idle_records: u8,
    /// A failure met after plaintext that was handed over first: the next read's result.
    failed: Option<SecureError>,
    shared: Arc<Shared>,
}

/// The sending half: seals records in place in its buffer and writes them.
pub struct SecureWriter<W> {
    io: W,
    tx: RecordKey,
    out: Vec<u8>,
    /// Records sealed under one key before it is updated.
    update_after: u64,
    /// Sending keys used so far (1 + the key updates sent).
    keys_used: u64,
    shared: Arc<Shared>,
}

impl<R> std::fmt::Debug for SecureReader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecureReader")
            .field("seq", &self.rx.seq)
            .field("buffered", &(self.end - self.start))
            .finish()
    }
}

impl<W> std::fmt::Debug for SecureWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecureWriter").field("seq", &self.tx.seq).finish()
    }
}

impl<R: AsyncRead + Unpin> SecureReader<R> {
    /// Waits for application data and hands the plaintext of every complete record that has
    /// arrived to `sink`, in order; returns the bytes handed over (at least one).
    ///
    /// Fails on a record that does not open (wrong key, altered bytes), is oversized or
    /// malformed, on any alert other than `close_notify`; with [`SecureError::Closed`] after
    /// `close_notify`, and [`SecureError::Ended`] at the end of the stream without it.
    pub async fn read<E>(&mut self, mut sink: impl FnMut(&[u8]) -> Result<(), E>) -> Result<usize, E>
    where
        E: From<SecureError>,
    {
        loop {
            if let Some(e) = self.failed.take() {
                return Err(e.into());
            }
            let mut handed = 0;
            loop {
                match self.open_next() {
                    Ok(Some(content)) => {
                        if !content.is_empty() {
                            handed += content.len();
                            sink(&self.buf[content])?;
                        }
                    }
                    Ok(None) => break,
                    // What arrived before the failure is handed over first.
                    Err(e) if handed > 0 => {
                        self.failed = Some(e);
                        return Ok(handed);
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            if handed > 0 {
                return Ok(handed);
            }
            self.fill().await?;
        }
    }

    /// Opens the next complete record: the range of its application data in the buffer (empty
    /// for a record of another type, handled here), or `None` if no complete record is there.
    fn open_next(&mut self) -> Result<Option<std::ops::Range<usize>>, SecureError> {
        let Some(len) = self.next_record()? else { return Ok(None) };
        let at = self.start;
        self.start += HEADER + len;
        let header: [u8; HEADER] = self.buf[at..at + HEADER].try_into().unwrap_or_default();
        let nonce = self.rx.next_nonce()?;
        let body = &mut self.buf[at + HEADER..at + HEADER + len];
        let plain = self
            .rx
            .key
            .open_in_place(nonce, Aad::from(header), body)
            .map_err(|_| SecureError::Record("a record does not open (bad_record_mac)"))?;
        // The inner plaintext: content, its type, then zero padding (RFC 8446 §5.2).
        let Some(typ_at) = plain.iter().rposition(|&b| b != 0) else {
            return Err(SecureError::Record("a record without a content type"));
        };
        let (content, typ) = (&plain[..typ_at], plain[typ_at]);
        if content.len() > PLAINTEXT_MAX {
            return Err(SecureError::Record("record_overflow"));
        }
        let data = at + HEADER..at + HEADER + typ_at;
        if typ == APPLICATION_DATA && !content.is_empty() {
            self.idle_records = 0;
        } else {
            self.idle_records += 1;
            if self.idle_records > IDLE_RECORDS_MAX {
                return Err(SecureError::Record("too many records without data"));
            }
        }
        match typ {
            APPLICATION_DATA => Ok(Some(data)),
            HANDSHAKE => {
                post_handshake(content, &mut self.rx, &self.shared)?;
                Ok(Some(at..at))
            }
            ALERT => Err(match content {
                [_, 0] => SecureError::Closed,
                [_, description] => SecureError::Alert(*description),
                _ => SecureError::Record("a malformed alert"),
            }),
            _ => Err(SecureError::Record("an unexpected record type")),
        }
    }

    /// The ciphertext length of the complete record at `start`, if one is there.
    fn next_record(&self) -> Result<Option<usize>, SecureError> {
        if self.end - self.start < HEADER {
            return Ok(None);
        }
        let Some(&[typ, _, _, hi, lo]) = self.buf.get(self.start..self.start + HEADER) else {
            return Ok(None);
        };
        let len = usize::from(u16::from_be_bytes([hi, lo]));
        if typ != APPLICATION_DATA {
            return Err(SecureError::Record("an unprotected record after the handshake"));
        }
        if len > CIPHERTEXT_MAX {
            return Err(SecureError::Record("record_overflow"));
        }
        if len < TAG + 1 {
            return Err(SecureError::Record("a record shorter than its tag"));
        }
        Ok((self.start + HEADER + len <= self.end).then_some(len))
    }

    /// Reads more bytes, first making room for a whole record after those kept.
    async fn fill(&mut self) -> Result<(), SecureError> {
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
        } else if self.buf.len() - self.start < HEADER + CIPHERTEXT_MAX || self.end == self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            (self.start, self.end) = (0, self.end - self.start);
        }
        match self.io.read(&mut self.buf[self.end..]).await? {
            0 => Err(SecureError::Ended),
            n => {
                self.end += n;
                Ok(())
            }
        }
    }
}

/// A handshake record after the handshake: key updates, and session tickets to a client.
fn post_handshake(mut messages: &[u8], rx: &mut RecordKey, shared: &Shared) -> Result<(), SecureError> {
    if messages.is_empty() {
        return Err(SecureError::Record("an empty handshake record"));
    }
    while let [typ, a, b, c, rest @ ..] = messages {
        let len = u32::from_be_bytes([0, *a, *b, *c]) as usize;
        if rest.len() < len {
            // Fragmented across records: neither rustls nor this module sends these so.
            return Err(SecureError::Record("a fragmented post-handshake message"));
        }
        let (body, rest) = rest.split_at(len);
        match *typ {
            KEY_UPDATE => {
                let request = match body {
                    [r @ (0 | 1)] => *r == 1,
                    _ => return Err(SecureError::Record("a malformed key_update")),
                };
                if !rest.is_empty() {
                    return Err(SecureError::Record("a key_update not at the end of its record"));
                }
                *rx = shared.kernel().next_rx()?;
                if request {
                    shared.answer_update.store(true, Ordering::Release);
                }
            }
            NEW_SESSION_TICKET => shared.kernel().new_session_ticket(body)?,
            _ => return Err(SecureError::Record("an unexpected post-handshake message")),
        }
        messages = rest;
    }
    if messages.is_empty() { Ok(()) } else { Err(SecureError::Record("a fragmented post-handshake message")) }
}

impl<W: AsyncWrite + Unpin> SecureWriter<W> {
    /// Seals `parts`, concatenated, into records and writes them out, flushed.
    pub async fn write(&mut self, parts: &[&[u8]]) -> Result<(), SecureError> {
        if self.shared.answer_update.swap(false, Ordering::Acquire) {
            self.update_key(false)?;
        }
        // The record being filled: where its header starts.
        let mut open: Option<usize> = None;
        for part in parts {
            let mut part = *part;
            while !part.is_empty() {
                let at = match open {
                    Some(at) => at,
                    None => {
                        if self.out.len() >= WRITE_BATCH {
                            self.io.write_all(&self.out).await?;
                            self.out.clear();
                        }
                        if self.tx.seq >= self.update_after {
                            self.update_key(false)?;
                        }
                        let at = self.out.len();
                        self.out.extend_from_slice(&[0; HEADER]);
                        open = Some(at);
                        at
                    }
                };
                let room = PLAINTEXT_MAX - (self.out.len() - at - HEADER);
                let take = room.min(part.len());
                self.out.extend_from_slice(&part[..take]);
                part = &part[take..];
                if take == room {
                    self.seal(at, APPLICATION_DATA)?;
                    open = None;
                }
            }
        }
        if let Some(at) = open {
            self.seal(at, APPLICATION_DATA)?;
        }
        self.io.write_all(&self.out).await?;
        self.out.clear();
        self.io.flush().await?;
        Ok(())
    }

    /// Seals the record whose header starts at `at` and whose content runs to the end of the
    /// buffer, as content type `typ`.
    fn seal(&mut self, at: usize, typ: u8) -> Result<(), SecureError> {
        self.out.push(typ);
        let len = (self.out.len() - at - HEADER + TAG) as u16;
        let [hi, lo] = len.to_be_bytes();
        let header = [APPLICATION_DATA, 3, 3, hi, lo];
        self.out[at..at + HEADER].copy_from_slice(&header);
        let nonce = self.tx.next_nonce()?;
        let tag = self
            .tx
            .key
            .seal_in_place_separate_tag(nonce, Aad::from(header), &mut self.out[at + HEADER..])
            .map_err(|_| SecureError::Record("sealing failed"))?;
        self.out.extend_from_slice(tag.as_ref());
        Ok(())
    }

    /// Sends a key update (asking the peer to update too if `request`) and seals what follows
    /// under the next key.
    fn update_key(&mut self, request: bool) -> Result<(), SecureError> {
        let at = self.out.len();
        self.out.extend_from_slice(&[0; HEADER]);
        self.out.extend_from_slice(&[KEY_UPDATE, 0, 0, 1, u8::from(request)]);
        self.seal(at, HANDSHAKE)?;
        self.tx = self.shared.kernel().next_tx()?;
        self.keys_used += 1;
        Ok(())
    }

    /// Sending keys used so far: one, plus one per key update sent.
    pub fn keys_used(&self) -> u64 {
        self.keys_used
    }

    /// Seals a key update (asking the peer to update its own key too if `request`) into the
    /// next write.
    pub fn request_key_update(&mut self, request: bool) -> Result<(), SecureError> {
        self.update_key(request)
    }

    /// Records sealed under one key before it is updated ([`KEY_UPDATE_RECORDS`] by default;
    /// tests lower it).
    pub fn set_key_update_after(&mut self, records: u64) {
        self.update_after = records.max(1);
    }

    /// The stream under TLS (bytes written to it bypass TLS: for tests of misbehaving peers).
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.io
    }

    /// Sends `close_notify` and shuts the sending side down.
    pub async fn close(&mut self) -> Result<(), SecureError> {
        let at = self.out.len();
        self.out.extend_from_slice(&[0; HEADER]);
        self.out.extend_from_slice(&[1, 0]);
        self.seal(at, ALERT)?;
        self.io.write_all(&self.out).await?;
        self.out.clear();
        self.io.shutdown().await?;
        Ok(())
    }
}
