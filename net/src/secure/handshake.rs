//! The handshake: rustls drives it over the stream, fed whole records only, then hands the
//! traffic secrets to this connection's record layer ([`super`]).

use std::sync::{Arc, Mutex, atomic::AtomicBool};

use rustls::{
    ClientConfig, ServerConfig,
    client::{ClientConnectionData, UnbufferedClientConnection},
    server::{ServerConnectionData, UnbufferedServerConnection},
    unbuffered::{ConnectionState, EncodeError, UnbufferedConnectionCommon, UnbufferedStatus},
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{
    CIPHERTEXT_MAX, HANDSHAKE_BUFFER, HEADER, KEY_UPDATE_RECORDS, Kernel, READ_BUFFER, RecordKey, Secure,
    SecureError, SecureReader, SecureWriter, Shared, WRITE_BATCH,
};
use crate::tls::peer_identity;

/// Dials: makes the handshake as a client over `stream`.
pub async fn connect<S>(config: Arc<ClientConfig>, stream: S) -> Result<Secure<S>, SecureError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let conn = UnbufferedClientConnection::new(config, crate::tls::peer_server_name())?;
    handshake(conn, stream).await
}

/// Accepts: makes the handshake as a server over `stream`.
pub async fn accept<S>(config: Arc<ServerConfig>, stream: S) -> Result<Secure<S>, SecureError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let conn = UnbufferedServerConnection::new(config)?;
    handshake(conn, stream).await
}

/// The client and server connections, as the handshake drives them.
trait Handshake: std::ops::Deref<Target = UnbufferedConnectionCommon<Self::Data>> {
    type Data;
    fn process<'c, 'i>(&'c mut self, incoming: &'i mut [u8]) -> UnbufferedStatus<'c, 'i, Self::Data>;
    fn into_kernel(self) -> Result<(rustls::ExtractedSecrets, Kernel), rustls::Error>;
}

impl Handshake for UnbufferedClientConnection {
    type Data = ClientConnectionData;
    fn process<'c, 'i>(&'c mut self, incoming: &'i mut [u8]) -> UnbufferedStatus<'c, 'i, Self::Data> {
        self.process_tls_records(incoming)
    }
    fn into_kernel(self) -> Result<(rustls::ExtractedSecrets, Kernel), rustls::Error> {
        self.dangerous_into_kernel_connection().map(|(s, k)| (s, Kernel::Client(k)))
    }
}

impl Handshake for UnbufferedServerConnection {
    type Data = ServerConnectionData;
    fn process<'c, 'i>(&'c mut self, incoming: &'i mut [u8]) -> UnbufferedStatus<'c, 'i, Self::Data> {
        self.process_tls_records(incoming)
    }
    fn into_kernel(self) -> Result<(rustls::ExtractedSecrets, Kernel), rustls::Error> {
        self.dangerous_into_kernel_connection().map(|(s, k)| (s, Kernel::Server(k)))
    }
}

/// Drives rustls through the handshake, then takes the traffic secrets over.
async fn handshake<C, S>(mut conn: C, mut stream: S) -> Result<Secure<S>, SecureError>
where
    C: Handshake,
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut unread = Unread {
        // Small while the peer is unauthenticated; the connection's own buffer comes after.
        buf: vec![0u8; HANDSHAKE_BUFFER].into_boxed_slice(),
        start: 0,
        end: 0,
    };
    // rustls is given whole records, one more each time it needs more: so it never sees a
    // record after the one that ends the handshake (it would act on a key update there, and
    // the keys handed over would be ahead of the peer's). Bytes short of a whole record are
    // given too, so a malformed header fails at once.
    let mut want = 1usize;
    let mut out = Vec::new();
    loop {
        let fed = records_end(&unread.buf[..unread.end], unread.start, want);
        let UnbufferedStatus { discard, state } = conn.process(&mut unread.buf[unread.start..fed]);
        let state = match state {
            Ok(s) => s,
            Err(e) => {
                // Tell the peer why, if rustls has an alert to send; the error is what counts.
                drop(send_alert(&mut conn, &mut stream).await);
                return Err(e.into());
            }
        };
        let mut need_bytes = false;
        let mut done = false;
        match state {
            ConnectionState::EncodeTlsData(mut e) => encode(|b| e.encode(b), &mut out)?,
            ConnectionState::TransmitTlsData(t) => {
                stream.write_all(&out).await?;
                stream.flush().await?;
                out.clear();
                t.done();
            }
            ConnectionState::BlockedHandshake => need_bytes = true,
            ConnectionState::WriteTraffic(_) => done = true,
            // Fed no record past the handshake's end, rustls has no application data to give.
            ConnectionState::ReadTraffic(_) => {
                return Err(SecureError::Record("application data inside the handshake"));
            }
            ConnectionState::PeerClosed | ConnectionState::Closed => return Err(SecureError::Closed),
            _ => return Err(SecureError::Record("unexpected handshake state")),
        }
        unread.start += discard;
        if done {
            break;
        }
        if discard > 0 {
            want = 1;
        } else if need_bytes {
            if fed < unread.end {
                want += 1;
            } else {
                unread.read_more(&mut stream).await?;
            }
        }
    }
    if !out.is_empty() {
        stream.write_all(&out).await?;
        stream.flush().await?;
    }
    take_over(conn, stream, &unread)
}

/// Handshake bytes read and not yet given to rustls: `buf[start..end]`.
struct Unread {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
}

impl Unread {
    /// Reads more of the flight, after moving what is unread to the front if the buffer's end
    /// is reached; a flight that fills the whole buffer is refused.
    async fn read_more(&mut self, stream: &mut (impl AsyncRead + Unpin)) -> Result<(), SecureError> {
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
        } else if self.end == self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            (self.start, self.end) = (0, self.end - self.start);
        }
        if self.end == self.buf.len() {
            return Err(SecureError::Record("handshake flight larger than the read buffer"));
        }
        match stream.read(&mut self.buf[self.end..]).await? {
            0 => Err(SecureError::Ended),
            n => {
                self.end += n;
                Ok(())
            }
        }
    }
}

/// The handshake is over: the peer's identity, and the traffic secrets taken from rustls into
/// this connection's own record layer, with the bytes read past the handshake kept for it.
fn take_over<C, S>(conn: C, stream: S, unread: &Unread) -> Result<Secure<S>, SecureError>
where
    C: Handshake,
    S: AsyncRead + AsyncWrite + Unpin,
{
    let peer = peer_identity(conn.peer_certificates()).ok_or(SecureError::Record("no peer certificate"))?;
    let left = &unread.buf[unread.start..unread.end];
    let mut buf = vec![0u8; READ_BUFFER].into_boxed_slice();
    buf[..left.len()].copy_from_slice(left);
    let (start, end) = (0, left.len());
    let (secrets, kernel) = conn.into_kernel()?;
    let rx = RecordKey::new(secrets.rx.0, secrets.rx.1)?;
    let tx = RecordKey::new(secrets.tx.0, secrets.tx.1)?;
    let shared = Arc::new(Shared { kernel: Mutex::new(kernel), answer_update: AtomicBool::new(false) });
    let (rd, wr) = tokio::io::split(stream);
    Ok(Secure {
        reader: SecureReader {
            io: rd,
            rx,
            buf,
            start,
            end,
            idle_records: 0,
            failed: None,
            shared: shared.clone(),
        },
        writer: SecureWriter {
            io: wr,
            tx,
            out: Vec::with_capacity(WRITE_BATCH + HEADER + CIPHERTEXT_MAX),
            update_after: KEY_UPDATE_RECORDS,
            keys_used: 1,
            shared,
        },
        peer,
    })
}

/// The end of the first `records` whole records from `at` in `buf`; the end of `buf` if fewer
/// are whole.
fn records_end(buf: &[u8], mut at: usize, records: usize) -> usize {
    for _ in 0..records {
        let Some(&[_, _, _, hi, lo]) = buf.get(at..at + HEADER) else { return buf.len() };
        let end = at + HEADER + usize::from(u16::from_be_bytes([hi, lo]));
        if end > buf.len() {
            return buf.len();
        }
        at = end;
    }
    at
}

/// Encodes one handshake chunk into `out` through rustls's `encode`.
fn encode(
    mut encode: impl FnMut(&mut [u8]) -> Result<usize, EncodeError>,
    out: &mut Vec<u8>,
) -> Result<(), SecureError> {
    let mut size = 4096;
    loop {
        let at = out.len();
        out.resize(at + size, 0);
        match encode(&mut out[at..]) {
            Ok(n) => {
                out.truncate(at + n);
                return Ok(());
            }
            Err(EncodeError::InsufficientSize(s)) => {
                out.truncate(at);
                size = s.required_size;
            }
            Err(_) => {
                out.truncate(at);
                return Ok(());
            }
        }
    }
}

/// After a failed handshake: sends the alert rustls queued, if any.
async fn send_alert<C: Handshake, S: AsyncWrite + Unpin>(
    conn: &mut C,
    stream: &mut S,
) -> Result<(), SecureError> {
    let mut out = Vec::new();
    if let Ok(ConnectionState::EncodeTlsData(mut e)) = conn.process(&mut []).state {
        encode(|b| e.encode(b), &mut out)?;
    }
    if !out.is_empty() {
        stream.write_all(&out).await?;
        stream.flush().await?;
    }
    Ok(())
}
