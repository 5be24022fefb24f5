//! `GET /v1/stream`: server-sent events, `ledger` then its `transaction`s, from a height
//! (docs/API.md). Each stream is a task that follows the published head, bounded in number and
//! in how far it reads ahead of its client.

use std::{
    convert::Infallible,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use api::{ErrorCode, routes};
use axum::{
    extract::State as AxState,
    http::StatusCode,
    response::sse::{Event, KeepAlive, Sse},
};
use engine::Address;
use futures_util::StreamExt as _;

use super::{
    Explorer,
    api::{ApiError, QueryMap, Shared, ledger_answer, parse_address, parse_height, query, stored_ledger},
};

use limits::{STREAM_BUFFER_LEDGERS, STREAMS_MAX};

/// Decrements the live-stream count when a stream ends.
struct StreamSlot(Arc<AtomicUsize>);

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

pub(super) async fn stream(
    AxState(e): AxState<Shared>,
    q: QueryMap,
    streams: Arc<AtomicUsize>,
) -> Result<Sse<impl futures_util::Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let q = query(q)?;
    let head = *e.head.borrow();
    let from = q.get("from").map(|h| parse_height(h)).transpose()?.unwrap_or(head + 1);
    if from > head.saturating_add(1) {
        return Err(ApiError::bad_request(format!(
            "from {from} is past the next ledger ({}): subscribe from at most the head + 1",
            head.saturating_add(1)
        )));
    }
    let address = q.get("address").map(|a| parse_address(a)).transpose()?;
    if streams.fetch_add(1, Ordering::Relaxed) >= STREAMS_MAX {
        streams.fetch_sub(1, Ordering::Relaxed);
        return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Busy, "too many live streams"));
    }
    let slot = StreamSlot(streams);
    let (tx, rx) = tokio::sync::mpsc::channel::<Event>(STREAM_BUFFER_LEDGERS);
    let mut heads = e.head.subscribe();
    tokio::spawn(async move {
        let _slot = slot;
        let mut next = from.max(1);
        loop {
            let head = *heads.borrow_and_update();
            while next <= head {
                let events = {
                    let e = e.clone();
                    let address = address;
                    tokio::task::spawn_blocking(move || ledger_events(&e, next, address.as_ref())).await
                };
                let Ok(Ok(events)) = events else { return };
                for ev in events {
                    if tx.send(ev).await.is_err() {
                        return;
                    }
                }
                next += 1;
            }
            tokio::select! {
                changed = heads.changed() => if changed.is_err() { return },
                () = tx.closed() => return,
            }
        }
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx).map(Ok::<_, Infallible>);
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// The JSON text of an event's data.
fn event_data<T: serde::Serialize>(data: &T) -> Result<String, ApiError> {
    serde_json::to_string(data).map_err(|err| ApiError::internal(format!("json: {err}")))
}

/// The events of ledger `height`: the ledger, then its transactions (touching `address`).
fn ledger_events(e: &Explorer, height: u64, address: Option<&Address>) -> Result<Vec<Event>, ApiError> {
    let l = stored_ledger(e, height)?
        .ok_or_else(|| ApiError::not_found(format!("no ledger at height {height}")))?;
    let id = height.to_string();
    let mut out = Vec::with_capacity(1 + l.txs.len());
    let ledger = ledger_answer(&e.chain_id, &l.header, &l.certificate, &l.ids);
    out.push(Event::default().event(routes::STREAM_EVENT_LEDGER).id(id.clone()).data(event_data(&ledger)?));
    for (index, (tx, tx_id)) in l.txs.iter().zip(&l.ids).enumerate() {
        let touches = |a: &Address| {
            tx.tx.inputs.iter().chain(&tx.tx.outputs).any(|l| l.address == *a) || tx.tx.fee.payer == *a
        };
        if address.is_none_or(touches) {
            let data = event_data(&api::TxRef { id: *tx_id, height, index: index as u32 })?;
            out.push(Event::default().event(routes::STREAM_EVENT_TRANSACTION).id(id.clone()).data(data));
        }
    }
    Ok(out)
}
