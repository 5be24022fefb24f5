//! `GET /v1/stream`: server-sent events, `ledger` then its `transaction`s, from a height or
//! after the last event a client got (`Last-Event-ID`), docs/API.md. A stream is a cursor over
//! the [feed](super::feed) polled by its connection: no task or thread of its own. Ledgers older
//! than the feed's ring are replayed from the store by pages, a bounded number at once; a live
//! stream that falls behind the ring is cut with a final `end` event.

use std::{
    convert::Infallible,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use api::ErrorCode;
use axum::{
    body::{Body, Bytes},
    extract::State as AxState,
    http::{HeaderMap, StatusCode, header},
    response::Response,
};
use engine::Address;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{
    Explorer,
    api::{ApiError, QueryMap, Shared, parse_address, parse_height, query, read_ledger},
    feed::{Cursor, Position, Rendered, Step},
};

use limits::{
    STREAM_KEEP_ALIVE, STREAM_PAGE_BYTES, STREAM_PAGE_LEDGERS, STREAM_REPLAY_PAGES, STREAM_REPLAY_READS,
    STREAMS_MAX,
};

/// What the streams of an explorer share besides the feed: their count and the replay bounds.
#[derive(Debug)]
pub(crate) struct Streams {
    live: AtomicUsize,
    /// One permit per replay page held in memory.
    pages: Arc<Semaphore>,
    /// One permit per replay page being read from the store.
    reads: Semaphore,
}

impl Default for Streams {
    fn default() -> Self {
        Self {
            live: AtomicUsize::new(0),
            pages: Arc::new(Semaphore::new(STREAM_REPLAY_PAGES)),
            reads: Semaphore::new(STREAM_REPLAY_READS),
        }
    }
}

impl Streams {
    /// Live streams.
    pub(crate) fn live(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }
}

/// Counts a live stream until it ends.
struct Slot(Arc<Explorer>);

impl Drop for Slot {
    fn drop(&mut self) {
        let live = self.0.streams.live.fetch_sub(1, Ordering::Relaxed) - 1;
        self.0.host.streams(live);
    }
}

pub(super) async fn stream(
    AxState(e): AxState<Shared>,
    headers: HeaderMap,
    q: QueryMap,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    let head = *e.head.borrow();
    let next = head.saturating_add(1);
    // An EventSource reconnects with the URL it started with and the id of the last event it
    // got: the id wins.
    let cursor = match headers.get("last-event-id") {
        Some(id) => {
            let id = id.to_str().unwrap_or_default().trim();
            let cursor = Cursor::after_event(id).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "Last-Event-ID {id:?} is not an event id of this stream (H or H:I)"
                ))
            })?;
            if cursor.height > head {
                return Err(ApiError::bad_request(format!(
                    "Last-Event-ID {id:?} names a ledger above the head ({head})"
                )));
            }
            cursor
        }
        None => {
            let from = q.get("from").map(|h| parse_height(h)).transpose()?.unwrap_or(next);
            if from > next {
                return Err(ApiError::bad_request(format!(
                    "from {from} is past the next ledger ({next}): subscribe from at most the head + 1"
                )));
            }
            Cursor::at(from.max(1))
        }
    };
    let address = q.get("address").map(|a| parse_address(a)).transpose()?;
    let live = e.streams.live.fetch_add(1, Ordering::Relaxed);
    if live >= STREAMS_MAX {
        e.streams.live.fetch_sub(1, Ordering::Relaxed);
        return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Busy, "too many live streams"));
    }
    e.host.streams(live + 1);
    let subscriber = Subscriber {
        ended: false,
        feed: e.feed.watch(),
        slot: Slot(e),
        at: Position { cursor, address, live: false },
        page: None,
    };
    let events = futures_util::stream::unfold(subscriber, |mut s| async move {
        let chunk = s.next_chunk().await?;
        Some((Ok::<_, Infallible>(chunk), s))
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        // Proxies in front of the API must not hold events back.
        .header("x-accel-buffering", "no")
        .body(Body::from_stream(events))
        .map_err(|err| ApiError::internal(format!("response: {err}")))
}

/// One stream's state, polled by its connection.
struct Subscriber {
    slot: Slot,
    feed: tokio::sync::watch::Receiver<u64>,
    at: Position,
    ended: bool,
    /// The replay page last sent, until the connection asks for more.
    page: Option<OwnedSemaphorePermit>,
}

impl Subscriber {
    /// The next bytes to send (events or a keep-alive), `None` once the stream ended.
    async fn next_chunk(&mut self) -> Option<Bytes> {
        self.page = None;
        if self.ended {
            return None;
        }
        let e = self.slot.0.clone();
        loop {
            match e.feed.step(&mut self.at) {
                Step::Send(chunk) => return Some(chunk),
                Step::End(reason, last) => {
                    self.ended = true;
                    e.host.stream_ended(reason);
                    return Some(last);
                }
                Step::Replay => match self.replay(&e).await {
                    Ok(chunk) if chunk.is_empty() => {}
                    Ok(chunk) => return Some(chunk),
                    Err(_) => return None,
                },
                Step::Wait => {
                    tokio::select! {
                        changed = self.feed.changed() => if changed.is_err() { return None },
                        () = tokio::time::sleep(STREAM_KEEP_ALIVE) => return Some(Bytes::from_static(b":\n\n")),
                    }
                }
            }
        }
    }

    /// Reads the next page of ledgers older than the ring from the store, moving the cursor.
    async fn replay(&mut self, e: &Arc<Explorer>) -> Result<Bytes, ApiError> {
        let page = e.streams.pages.clone().acquire_owned().await.map_err(|_| ApiError::unavailable())?;
        let read = e.streams.reads.acquire().await.map_err(|_| ApiError::unavailable())?;
        let (reader, cursor, address) = (e.clone(), self.at.cursor, self.at.address);
        let (chunk, cursor) =
            tokio::task::spawn_blocking(move || read_page(&reader, cursor, address.as_ref()))
                .await
                .map_err(|_| ApiError::unavailable())??;
        drop(read);
        self.at.cursor = cursor;
        self.page = Some(page);
        Ok(chunk)
    }
}

/// The events of the ledgers from `cursor` up to the ring's first (excluded), at most a page.
fn read_page(
    e: &Explorer,
    mut cursor: Cursor,
    address: Option<&Address>,
) -> Result<(Bytes, Cursor), ApiError> {
    let stop = e.feed.first().min(cursor.height.saturating_add(STREAM_PAGE_LEDGERS));
    let mut out = Vec::new();
    while cursor.height < stop && out.len() < STREAM_PAGE_BYTES {
        let ledger = read_ledger(e, cursor.height, false)?
            .ok_or_else(|| ApiError::not_found(format!("no ledger at height {}", cursor.height)))?;
        let rendered = Rendered::render(&e.chain_id, &ledger)?;
        out.extend_from_slice(&rendered.frames(cursor.next_tx, address));
        cursor = Cursor::at(cursor.height + 1);
    }
    Ok((Bytes::from(out), cursor))
}
