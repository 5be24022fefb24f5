//! The fan-out behind `GET /v1/stream`: each committed ledger's events are rendered once, as
//! server-sent-event frames, into a ring of the latest ledgers that every live stream reads
//! (docs/API.md). No store read, thread or copy per subscriber per ledger: an unfiltered
//! subscriber gets a reference to the ledger's frames.
//!
//! ```text
//! host ──publish──> head (watch) ──> run: read + render once ──> Ring [first, end) ──> streams
//!                                                                   │ older
//!                                                                   └─> replay: store pages
//! ```

use std::{
    collections::VecDeque,
    sync::{Arc, RwLock},
    time::Duration,
};

use api::routes;
use axum::body::Bytes;
use engine::{Address, tx::SignedTransaction};

use super::{
    Explorer,
    api::{ApiError, StoredLedger, ledger_answer, read_ledger},
};

use limits::{STREAM_RING_BYTES, STREAM_RING_LEDGERS};

/// One ledger's events as server-sent-event frames: the `ledger` event, then one `transaction`
/// event per transaction of its block, in order, in one buffer.
#[derive(Debug)]
pub(crate) struct Rendered {
    height: u64,
    bytes: Bytes,
    /// End of the `ledger` event's frame.
    ledger_end: usize,
    txs: Vec<TxFrame>,
}

/// A `transaction` frame: it ends at `end` and starts where the one before it ends.
#[derive(Debug)]
struct TxFrame {
    end: usize,
    /// Every address the transaction touches (inputs, outputs, fee payer), for `address=`.
    touches: Vec<Address>,
}

/// Where a stream is: the next ledger, and whether its `ledger` event (and which of its
/// transactions) was already sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Cursor {
    pub(crate) height: u64,
    /// `None`: nothing of ledger `height` was sent. `Some(i)`: its `ledger` event and its
    /// transactions below index `i` were.
    pub(crate) next_tx: Option<u32>,
}

impl Cursor {
    /// The start of ledger `height`.
    pub(crate) fn at(height: u64) -> Self {
        Self { height, next_tx: None }
    }

    /// After the event of id `id` (`H` or `H:I`, as the stream names its events).
    pub(crate) fn after_event(id: &str) -> Option<Self> {
        match id.split_once(':') {
            None => Some(Self { height: id.parse().ok()?, next_tx: Some(0) }),
            Some((h, i)) => {
                let index: u32 = i.parse().ok()?;
                Some(Self { height: h.parse().ok()?, next_tx: Some(index.checked_add(1)?) })
            }
        }
    }
}

/// Appends one server-sent-event frame. `data` is compact JSON: it has no line break.
fn frame(out: &mut Vec<u8>, event: &str, id: Option<&str>, data: &str) {
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(event.as_bytes());
    if let Some(id) = id {
        out.extend_from_slice(b"\nid: ");
        out.extend_from_slice(id.as_bytes());
    }
    out.extend_from_slice(b"\ndata: ");
    out.extend_from_slice(data.as_bytes());
    out.extend_from_slice(b"\n\n");
}

fn json<T: serde::Serialize>(data: &T) -> Result<String, ApiError> {
    serde_json::to_string(data).map_err(|err| ApiError::internal(format!("json: {err}")))
}

/// The frame of the last event of a stream the server ends.
pub(crate) fn end_frame(reason: api::StreamEndReason, message: &str) -> Bytes {
    let mut out = Vec::new();
    let data =
        json(&api::StreamEnd { reason, message: message.to_owned() }).unwrap_or_else(|_| String::from("{}"));
    frame(&mut out, routes::STREAM_EVENT_END, None, &data);
    Bytes::from(out)
}

fn touches(tx: &SignedTransaction) -> Vec<Address> {
    let mut out: Vec<Address> =
        tx.tx.inputs.iter().chain(&tx.tx.outputs).map(|l| l.address).chain([tx.tx.fee.payer]).collect();
    out.sort_unstable();
    out.dedup();
    out
}

impl Rendered {
    pub(crate) fn render(chain_id: &str, l: &StoredLedger) -> Result<Self, ApiError> {
        let ledger = json(&ledger_answer(chain_id, &l.header, &l.certificate, &l.ids))?;
        let mut out = Vec::with_capacity(ledger.len() + 64 + l.txs.len() * 160);
        frame(&mut out, routes::STREAM_EVENT_LEDGER, Some(&l.height.to_string()), &ledger);
        let ledger_end = out.len();
        let mut txs = Vec::with_capacity(l.txs.len());
        for (index, (tx, id)) in l.txs.iter().zip(&l.ids).enumerate() {
            let index = u32::try_from(index).map_err(|_| ApiError::internal("block too long"))?;
            let data = json(&api::TxRef { id: *id, height: l.height, index })?;
            frame(&mut out, routes::STREAM_EVENT_TRANSACTION, Some(&format!("{}:{index}", l.height)), &data);
            txs.push(TxFrame { end: out.len(), touches: touches(tx) });
        }
        Ok(Self { height: l.height, bytes: Bytes::from(out), ledger_end, txs })
    }

    /// Memory this ledger's events hold.
    fn cost(&self) -> usize {
        self.bytes.len()
            + self
                .txs
                .iter()
                .map(|t| size_of::<TxFrame>() + t.touches.capacity() * size_of::<Address>())
                .sum::<usize>()
    }

    fn tx_start(&self, index: usize) -> usize {
        match index {
            0 => self.ledger_end,
            i => self.txs.get(i - 1).map_or(self.bytes.len(), |t| t.end),
        }
    }

    /// The frames a stream at `next_tx` (of this ledger) filtered by `address` is sent next.
    pub(crate) fn frames(&self, next_tx: Option<u32>, address: Option<&Address>) -> Bytes {
        let first = next_tx.map_or(0, |i| i as usize).min(self.txs.len());
        let Some(address) = address else {
            return match next_tx {
                None => self.bytes.clone(),
                Some(_) => self.bytes.slice(self.tx_start(first)..),
            };
        };
        let mut out = Vec::new();
        if next_tx.is_none() {
            out.extend_from_slice(&self.bytes[..self.ledger_end]);
        }
        for i in first..self.txs.len() {
            if self.txs[i].touches.binary_search(address).is_ok() {
                out.extend_from_slice(&self.bytes[self.tx_start(i)..self.txs[i].end]);
            }
        }
        Bytes::from(out)
    }
}

/// The latest ledgers' events: heights `first ..` (`first + ledgers.len()` is the next one).
#[derive(Debug)]
struct Ring {
    first: u64,
    ledgers: VecDeque<Arc<Rendered>>,
    bytes: usize,
}

/// Where a stream's next ledger is.
enum Lookup {
    /// In the ring.
    Here(Arc<Rendered>),
    /// Older than the ring (in the store).
    Gone,
    /// Not rendered yet.
    NotYet,
}

/// A stream's place in the feed.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Position {
    pub(crate) cursor: Cursor,
    pub(crate) address: Option<Address>,
    /// Whether the stream has reached the ring: from then on it must keep up with it.
    pub(crate) live: bool,
}

/// What a stream does next.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Send these events (the position moved past them).
    Send(Bytes),
    /// Send this final event and end.
    End(api::StreamEndReason, Bytes),
    /// Read the next ledgers from the store: they are older than the ring.
    Replay,
    /// Wait for the next ledger.
    Wait,
}

/// The fan-out: the ring and who waits on it.
#[derive(Debug)]
pub(crate) struct Feed {
    ring: RwLock<Ring>,
    /// The next height the ring will take: every ledger below it was rendered.
    end: tokio::sync::watch::Sender<u64>,
}

impl Feed {
    /// An empty feed whose first ledger will be `next`.
    pub(crate) fn new(next: u64) -> Self {
        Self {
            ring: RwLock::new(Ring { first: next, ledgers: VecDeque::new(), bytes: 0 }),
            end: tokio::sync::watch::channel(next).0,
        }
    }

    /// Tells when the ring takes another ledger (or the feed closes).
    pub(crate) fn watch(&self) -> tokio::sync::watch::Receiver<u64> {
        self.end.subscribe()
    }

    /// Ends every stream waiting on the feed (the process is stopping).
    pub(crate) fn close(&self) {
        if let Ok(mut ring) = self.ring.write() {
            ring.ledgers.clear();
            ring.bytes = 0;
            ring.first = u64::MAX;
        }
        self.end.send_replace(u64::MAX);
    }

    /// Whether [`Feed::close`] was called.
    pub(crate) fn closed(&self) -> bool {
        *self.end.borrow() == u64::MAX
    }

    fn lookup(&self, height: u64) -> Lookup {
        let Ok(ring) = self.ring.read() else { return Lookup::NotYet };
        if height < ring.first {
            return Lookup::Gone;
        }
        match ring.ledgers.get(usize::try_from(height - ring.first).unwrap_or(usize::MAX)) {
            Some(r) => Lookup::Here(r.clone()),
            None => Lookup::NotYet,
        }
    }

    /// What the stream at `at` does next, moving `at` past what it is to send.
    pub(crate) fn step(&self, at: &mut Position) -> Step {
        loop {
            if self.closed() {
                let reason = api::StreamEndReason::Stopping;
                return Step::End(reason, end_frame(reason, "the process is stopping"));
            }
            match self.lookup(at.cursor.height) {
                Lookup::Here(ledger) => {
                    at.live = true;
                    let chunk = ledger.frames(at.cursor.next_tx, at.address.as_ref());
                    at.cursor = Cursor::at(at.cursor.height + 1);
                    if !chunk.is_empty() {
                        return Step::Send(chunk);
                    }
                }
                Lookup::Gone if at.live => {
                    let message = format!(
                        "this stream fell behind: ledger {} is no longer kept for live streams; \
                         reconnect with Last-Event-ID to resume from the store",
                        at.cursor.height
                    );
                    let reason = api::StreamEndReason::Lagged;
                    return Step::End(reason, end_frame(reason, &message));
                }
                Lookup::Gone => return Step::Replay,
                Lookup::NotYet => return Step::Wait,
            }
        }
    }

    /// The oldest height the ring holds (or will hold next, when empty).
    pub(crate) fn first(&self) -> u64 {
        self.ring.read().map_or(0, |r| r.first)
    }

    fn next(&self) -> u64 {
        *self.end.borrow()
    }

    /// Takes the next ledger, dropping the oldest beyond the bounds.
    fn push(&self, rendered: Rendered) {
        let height = rendered.height;
        if let Ok(mut ring) = self.ring.write() {
            if ring.first == u64::MAX {
                return;
            }
            debug_assert_eq!(
                ring.first + ring.ledgers.len() as u64,
                height,
                "the ring takes ledgers in order"
            );
            ring.bytes += rendered.cost();
            ring.ledgers.push_back(Arc::new(rendered));
            while ring.ledgers.len() > STREAM_RING_LEDGERS
                || (ring.bytes > STREAM_RING_BYTES && ring.ledgers.len() > 1)
            {
                if let Some(old) = ring.ledgers.pop_front() {
                    ring.bytes -= old.cost();
                    ring.first += 1;
                }
            }
        }
        self.end.send_replace(height + 1);
    }
}

/// Renders every ledger the explorer publishes into its feed, once, until the feed closes.
pub(crate) async fn run(e: Arc<Explorer>) {
    let mut heads = e.head.subscribe();
    loop {
        let head = *heads.borrow_and_update();
        while !e.feed.closed() && e.feed.next() <= head {
            let height = e.feed.next();
            let reader = e.clone();
            let rendered = tokio::task::spawn_blocking(move || {
                read_ledger(&reader, height, true)?
                    .ok_or_else(|| ApiError::internal(format!("ledger {height} is published but not stored")))
                    .and_then(|l| Rendered::render(&reader.chain_id, &l))
            })
            .await;
            match rendered {
                Ok(Ok(r)) => e.feed.push(r),
                Ok(Err(err)) => {
                    // The ring must stay whole: try the same ledger again.
                    eprintln!("caasiope: the stream feed cannot read ledger {height}: {err:?}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(_) => return,
            }
        }
        if e.feed.closed() || heads.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine::address::AddressType;

    fn address(n: u8) -> Address {
        Address::new(AddressType::Ecdsa, [n; 20])
    }

    /// A ledger of `height` whose transaction `i` touches `address(touch[i])`; frames carry
    /// recognizable data.
    fn ledger(height: u64, touch: &[u8]) -> Rendered {
        let mut out = Vec::new();
        frame(&mut out, "ledger", Some(&height.to_string()), &format!("L{height}"));
        let ledger_end = out.len();
        let mut txs = Vec::new();
        for (i, n) in touch.iter().enumerate() {
            frame(&mut out, "transaction", Some(&format!("{height}:{i}")), &format!("T{height}.{i}"));
            txs.push(TxFrame { end: out.len(), touches: vec![address(*n)] });
        }
        Rendered { height, bytes: Bytes::from(out), ledger_end, txs }
    }

    /// The data of every event in `chunk`.
    fn data(chunk: &[u8]) -> Vec<String> {
        let text = std::str::from_utf8(chunk).unwrap();
        text.split("\n\n")
            .filter(|e| !e.is_empty())
            .map(|e| e.lines().find_map(|l| l.strip_prefix("data: ")).unwrap().to_owned())
            .collect()
    }

    fn sent(step: Step) -> Vec<String> {
        match step {
            Step::Send(chunk) => data(&chunk),
            other => panic!("expected events, got {other:?}"),
        }
    }

    fn at(height: u64, next_tx: Option<u32>, address: Option<Address>) -> Position {
        Position { cursor: Cursor { height, next_tx }, address, live: false }
    }

    #[test]
    fn frames_resume_and_filter() {
        let l = ledger(5, &[1, 2, 1]);
        assert_eq!(data(&l.frames(None, None)), ["L5", "T5.0", "T5.1", "T5.2"]);
        // Resumed after the ledger event, after transaction 0, after the last.
        assert_eq!(data(&l.frames(Some(0), None)), ["T5.0", "T5.1", "T5.2"]);
        assert_eq!(data(&l.frames(Some(1), None)), ["T5.1", "T5.2"]);
        assert!(l.frames(Some(3), None).is_empty());
        assert!(l.frames(Some(u32::MAX), None).is_empty());
        let one = address(1);
        assert_eq!(data(&l.frames(None, Some(&one))), ["L5", "T5.0", "T5.2"]);
        assert_eq!(data(&l.frames(Some(1), Some(&one))), ["T5.2"]);
        assert_eq!(data(&l.frames(None, Some(&address(9)))), ["L5"]);
    }

    #[test]
    fn a_stream_follows_the_ring_and_skips_what_it_has() {
        let feed = Feed::new(3);
        let mut s = at(3, None, None);
        assert_eq!(feed.step(&mut s), Step::Wait);
        feed.push(ledger(3, &[1]));
        feed.push(ledger(4, &[1, 2]));
        assert_eq!(sent(feed.step(&mut s)), ["L3", "T3.0"]);
        assert_eq!(sent(feed.step(&mut s)), ["L4", "T4.0", "T4.1"]);
        assert_eq!(feed.step(&mut s), Step::Wait);
        // Resumed after transaction 0 of ledger 4 (Last-Event-ID 4:0), filtered: ledgers whose
        // events were all sent are skipped.
        let mut r = at(4, Some(1), Some(address(1)));
        assert_eq!(feed.step(&mut r), Step::Wait);
        assert_eq!(r.cursor, Cursor::at(5));
        // Below the ring: from the store.
        assert_eq!(feed.step(&mut at(2, None, None)), Step::Replay);
    }

    #[test]
    fn a_live_stream_that_falls_behind_the_ring_is_cut_and_a_late_one_replays() {
        let feed = Feed::new(1);
        let mut slow = at(1, None, None);
        feed.push(ledger(1, &[]));
        assert_eq!(sent(feed.step(&mut slow)), ["L1"]);
        for h in 2..=(STREAM_RING_LEDGERS as u64 + 2) {
            feed.push(ledger(h, &[]));
        }
        assert_eq!(feed.first(), 3);
        let Step::End(_, last) = feed.step(&mut slow) else { panic!("the slow stream is cut") };
        let end: api::StreamEnd = serde_json::from_str(&data(&last)[0]).unwrap();
        assert_eq!(end.reason, api::StreamEndReason::Lagged);
        assert!(std::str::from_utf8(&last).unwrap().starts_with("event: end\n"));
        // A stream that never reached the ring reads the store instead.
        assert_eq!(feed.step(&mut at(2, None, None)), Step::Replay);
        // Closing ends every stream.
        feed.close();
        let mut live = at(70, None, None);
        let Step::End(_, last) = feed.step(&mut live) else { panic!("closed") };
        let end: api::StreamEnd = serde_json::from_str(&data(&last)[0]).unwrap();
        assert_eq!(end.reason, api::StreamEndReason::Stopping);
    }

    #[test]
    fn the_ring_is_bounded_in_bytes() {
        let feed = Feed::new(1);
        let per = STREAM_RING_BYTES / 10;
        for h in 1..=20 {
            let mut l = ledger(h, &[]);
            l.bytes = Bytes::from(vec![b'x'; per]);
            l.ledger_end = per;
            feed.push(l);
        }
        let ring = feed.ring.read().unwrap();
        assert!(ring.bytes <= STREAM_RING_BYTES, "{}", ring.bytes);
        assert_eq!(ring.first + ring.ledgers.len() as u64, 21);
        assert!(ring.ledgers.len() >= 9);
    }

    #[test]
    fn cursor_after_event_ids() {
        assert_eq!(Cursor::after_event("7"), Some(Cursor { height: 7, next_tx: Some(0) }));
        assert_eq!(Cursor::after_event("7:0"), Some(Cursor { height: 7, next_tx: Some(1) }));
        assert_eq!(Cursor::after_event("7:41"), Some(Cursor { height: 7, next_tx: Some(42) }));
        for bad in ["", ":", "7:", ":1", "x", "7:x", "-1", "7:4294967295", "7:1:2", "18446744073709551616"] {
            assert_eq!(Cursor::after_event(bad), None, "{bad:?}");
        }
    }
}
