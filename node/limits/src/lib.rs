//! Every operational limit of a Caasiope node, in one place.
//!
//! Two kinds of bound hold a node's memory, disk and CPU in check:
//! - **Protocol limits** (`engine::limits`): what every validator must agree on, checked when
//!   bytes from outside are decoded (transaction size, inputs, validators…). Changing one is a
//!   protocol change.
//! - **Operational limits** (this crate): what one node chooses — how many transactions it
//!   proposes, how many it pools, how many connections, streams and requests it serves, how
//!   many bytes a peer may make it hold. They may differ between nodes; each is defined here
//!   once and the code that enforces it imports it from here.
//!
//! Some bounds are owned by the library crate that enforces them (a wire format's decoder, the
//! consensus core's per-peer budgets, a connection's channel budgets, the HTTP API contract's
//! page sizes): those are re-exported
//! here under one roof, so this page lists every limit a node runs with. The compile-time
//! assertions at the end tie them together: changing one so that another no longer holds
//! (a block that no longer fits a frame, a pool smaller than a block…) fails the build.
//!
//! Units come last in names (`_BYTES`, `_MS`, `_PER_SECOND`); a bare `_MAX` counts items.
//! Client-side bounds (the wallet's files and prompts) live with the client: a server never
//! links it.

use std::time::Duration;

pub use api::routes::{EVIDENCE_LIMIT_MAX, HISTORY_LIMIT_DEFAULT, HISTORY_LIMIT_MAX};
pub use consensus::{
    EVIDENCE_PER_VALIDATOR_MAX, EXECUTED_MAX, FUTURE_FAILURES_PER_PEER_MAX, FUTURE_PER_SIGNER_MAX,
    PROPOSALS_PER_ROUND_MAX, SIGN_STATE_VOTES_MAX, WAL_COMPACT_BYTES, WAL_HARD_FACTOR,
    wire::{FETCH_IDS_MAX, GOSSIP_TXS_MAX},
};
/// The protocol limits, for reading them next to the node's.
pub use engine::limits as protocol;
pub use net::{conn::ChannelBytes, frame::PAYLOAD_MAX as FRAME_PAYLOAD_MAX_BYTES};
pub use storage::{
    EVIDENCE_BYTES_MAX, EVIDENCE_PAGE_MAX, GROWTH_STEP_BYTES, HISTORY_PAGE_MAX, MAP_SIZE_MAX_BYTES,
};

// ---------------------------------------------------------------------------------------------
// Blocks

/// Transactions a validator puts in a block it proposes, and the most it accepts in another's
/// proposal (bounds a height's execution; the bytes are bounded apart). The protocol allows
/// [`protocol::BLOCK_TXS_MAX`]; at one block a second this is 10× the design's 1,000 tx/s.
pub const BLOCK_TXS_MAX: usize = 10_000;

/// Bytes reserved in a ledger's sync frame for everything but its transactions: the header,
/// the transaction count and a certificate of up to [`protocol::VALIDATORS_MAX`] signatures
/// (about 9 KB; a test in the replica measures the real encoding against this).
pub const LEDGER_OVERHEAD_MAX_BYTES: usize = 64 << 10;

/// Bytes of transactions (their canonical encodings) a block carries: a committed ledger
/// travels to a peer that syncs it in one frame, so it must fit one.
pub const BLOCK_BYTES_MAX: usize = FRAME_PAYLOAD_MAX_BYTES - LEDGER_OVERHEAD_MAX_BYTES;

// ---------------------------------------------------------------------------------------------
// The mempool and the intake

/// Transactions admitted and not yet committed.
pub const POOL_TXS_MAX: usize = 200_000;

/// Bytes of canonical encodings the pool holds at most (its memory is a small multiple: the
/// decoded transactions): 200,000 transfers take ~48 MB, so only large transactions meet it —
/// 2,000 of the largest (32 KiB) fill it.
pub const POOL_BYTES_MAX: usize = 64 << 20;

/// Client submissions are refused ("busy") while this many transactions wait, whatever the
/// commit rate allows: past it, more intake only spends the CPU that consensus needs to commit
/// what is already waiting (measured: without it, offered load above the peak halved the
/// committed rate).
pub const POOL_ADMIT_MAX: usize = 15_000;

/// Client submissions are refused ("busy") while more transactions wait than this many times
/// the larger of the last ledger's count and what commits in a block interval at the recent
/// rate (more than one, so a ledger may take all that waited and the next more: admission grows
/// with the load): at the peak a transaction waits about this many intervals, not seconds
/// behind a full pool. 1.5 against 2: finality p99 at the 4-validator peak with 250 ms blocks
/// 676 ms against 836 ms, the committed rate the same (docs/PERFORMANCE.md, issue 21).
pub const POOL_WAIT_INTERVALS: f64 = 1.5;

/// Transactions admitted whatever the commit rate (an idle network takes a burst of this many,
/// and the measured rate has room to grow from nothing).
pub const POOL_ADMIT_MIN: usize = 2_000;

/// Client submissions are refused ("busy") while this many received transactions wait for
/// verification: the intake is behind, and what it admits late reaches proposals the others
/// must then fetch and verify while the round waits.
pub const INTAKE_ADMIT_MAX: usize = 4_000;

/// Client transactions admitted and waiting to be gossiped (flushed every few milliseconds):
/// past it, one is not gossiped; a proposal naming it makes the others fetch it.
pub const GOSSIP_QUEUE_TXS_MAX: usize = 100_000;

/// How long the explorer API waits for the intake's verdict on a submission before it answers
/// "busy" (the intake is stalled: the host is far behind).
pub const SUBMIT_VERDICT_TIMEOUT: Duration = Duration::from_secs(10);

/// Transactions in one batch between the staged pipeline's threads (decode → verify → apply);
/// larger submissions are split.
pub const STAGE_BATCH_TXS_MAX: usize = 512;

/// Batches waiting in each queue between pipeline stages.
pub const STAGE_QUEUE_BATCHES_MAX: usize = 32;

/// Batches of received transactions waiting in each of the intake's queues (decode → verify →
/// admit): deep enough for every peer's gossip and this node's clients at once.
pub const INTAKE_QUEUE_BATCHES_MAX: usize = 256;

/// Bytes of the filter in front of the store's replay table, taken at start by every role: the
/// replay window's ids of stored ledgers are kept there instead of in memory (rate × TTL ids:
/// 25 million at 7,000 tx/s and the one-hour TTL, ~1.5 GB in maps). At 7,000 tx/s and the
/// one-hour TTL it gives ~10 bits an id (a few percent of lookups then read the table); past
/// that, more lookups read the table and the memory stays the same.
pub const REPLAY_FILTER_BYTES: usize = 32 << 20;

/// Sealed ledgers waiting for the store (single-validator mode).
pub const COMMIT_QUEUE_LEDGERS_MAX: usize = 4;

// ---------------------------------------------------------------------------------------------
// Peers (the replica host): what one peer may make this node hold or do

/// Peers a running process may add to its configuration's (SIGHUP reloads `[[peers]]`): the
/// host's queue keeps room for their frames too; more need a restart.
pub const PEERS_ADDED_MAX: usize = 16;

/// Events queued for the host thread besides the peers' frames (each peer has its own share,
/// [`FRAMES_IN_FLIGHT_PER_PEER`]): connections, verified batches.
pub const HOST_EVENTS_BASE: usize = 4_096;

/// Frames of one peer handed to the host thread and not yet handled (each holds one of these
/// slots until the host drops it, besides its bytes' share of the connection's channel budget,
/// [`ChannelBytes::DEFAULT`]): with the host's queue sized for every peer's slots, one peer's
/// flood fills only its own share and never makes the host drop another peer's frames.
pub const FRAMES_IN_FLIGHT_PER_PEER: usize = 512;

/// TLS handshakes the peer listener runs at once.
pub const HANDSHAKES_MAX: usize = 64;

/// TLS handshakes the peer listener runs at once for one source (an IPv4 address or an IPv6
/// /64): one source cannot take every slot and lock the listed peers out.
pub const HANDSHAKES_PER_SOURCE: usize = 8;

/// Ledger requests a connection keeps waiting to be served; more are dropped (the peer asks
/// again).
pub const SERVE_QUEUE_MAX: usize = 4;

/// Ledgers served at once over all connections (each is a store read and an encoding).
pub const SERVES_AT_ONCE: usize = 2;

/// Ledgers served per second to one peer, and its burst.
pub const SERVE_LEDGERS_PER_SECOND: f64 = 100.0;

/// Snapshot records served per second to one peer, and its burst: a million accounts are
/// ~4,100 records, served in seconds within the bytes budget below (which they share with
/// ledgers).
pub const SERVE_SNAPSHOT_RECORDS_PER_SECOND: f64 = 2_000.0;

/// Records a process fetching a snapshot keeps asked for and not yet answered: within what the
/// serving connection queues ([`SERVE_QUEUE_MAX`]), so none is dropped.
pub const SNAPSHOT_RECORDS_IN_FLIGHT: usize = SERVE_QUEUE_MAX;

/// How long a process fetching a snapshot waits for a record before it tries another peer.
pub const SNAPSHOT_RECORD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// How long a process fetching a snapshot gives one peer for the whole of it: a peer that
/// answers each record just within [`SNAPSHOT_RECORD_TIMEOUT`] cannot hold the join for hours
/// (a 10M-account snapshot, ~540 MB, takes ~20 s within the serving budget).
pub const SNAPSHOT_FETCH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30 * 60);

/// Ledgers between two snapshots a networked process takes of its store, to serve peers that
/// join by state sync (`snapshot_every_ledgers`; 0: none). About 3 hours at a ledger a second;
/// each replaces the last (~74 MB at a million accounts).
pub const SNAPSHOT_EVERY_LEDGERS: u64 = 10_000;

/// Bytes of ledgers served per second to one peer, and its burst: a peer catching up a day of
/// full ledgers still gets them at this rate; one asking for nothing else cannot take the
/// store's or the link's whole bandwidth.
pub const SERVE_BYTES_PER_SECOND: f64 = 32.0 * 1024.0 * 1024.0;

/// Transaction bodies served per second to one peer that asks for them (and its burst): a
/// validator fetching a whole block's missing bodies gets them at once, one asking for nothing
/// else cannot keep the host thread encoding.
pub const FETCH_IDS_PER_SECOND: f64 = 20_000.0;

/// A penalized peer is not heard for this long, doubled for each repeated fault …
pub const BAN_MIN: Duration = Duration::from_secs(2);

/// … up to this.
pub const BAN_MAX: Duration = Duration::from_secs(120);

// ---------------------------------------------------------------------------------------------
// The consensus log (replica WAL)

/// Largest log record: the bodies of a block of [`BLOCK_BYTES_MAX`] with their length
/// prefixes, or a proposal of [`BLOCK_TXS_MAX`] ids.
pub const WAL_RECORD_BYTES_MAX: usize = 8 << 20;

/// Largest log read back: above what the driver lets it grow to (it is compacted past
/// [`WAL_COMPACT_BYTES`] once the round's votes are signed, and past [`WAL_HARD_FACTOR`] times
/// that whatever the step, plus the compacted head and a record).
pub const WAL_LOG_BYTES_MAX: u64 =
    (WAL_HARD_FACTOR + 1) * WAL_COMPACT_BYTES + 2 * (WAL_RECORD_BYTES_MAX as u64);

// ---------------------------------------------------------------------------------------------
// The public edge: the explorer's HTTP API, the submit port, the admin port

/// Length of the kernel's queue of connections not yet accepted, on every listener (capped by
/// `net.core.somaxconn`, 4,096 on current kernels): a source whose connections are refused
/// and reopened in a loop does not crowd other clients' handshakes out of it.
pub const LISTEN_BACKLOG: u32 = 4_096;

/// HTTP connections the explorer serves at once.
pub const API_CONNECTIONS_MAX: usize = 4_096;

/// HTTP connections the explorer serves at once to one source (an IPv4 address or an IPv6
/// /64); its next ones are closed at once. A backend behind one address (an exchange's pool of
/// connections, a NAT) still gets this many; one client opening thousands takes no more.
pub const API_CONNECTIONS_PER_SOURCE: usize = 128;

/// An HTTP connection with no byte read or written for this long is closed.
pub const API_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// A request's header must arrive whole within this of the server starting to read it (on a
/// kept-alive connection, from the end of the previous answer): trickling bytes does not hold a
/// connection longer.
pub const API_HEADER_DEADLINE: Duration = Duration::from_secs(10);

/// Longest request target (path and query) the API reads; longer is answered 414.
pub const API_URI_BYTES_MAX: usize = 8 << 10;

/// Largest header block (names and values) the API reads; larger is answered 431 …
pub const API_HEADER_BYTES_MAX: usize = 16 << 10;

/// … as are more header fields than this.
pub const API_HEADERS_MAX: usize = 64;

/// Most bytes an API connection buffers from its client (hyper's read buffer): a request head
/// that does not fit is refused by hyper (431, no body). Bounds the memory of connections
/// that send long heads: [`API_CONNECTIONS_MAX`] × this.
pub const API_READ_BUFFER_BYTES: usize = 32 << 10;

/// A request's body must arrive whole within this of its header (answered 408 otherwise).
pub const API_BODY_DEADLINE: Duration = Duration::from_secs(10);

/// Seconds a 503 answer (busy, stopping) tells its client to wait before asking again
/// (`Retry-After`).
pub const API_RETRY_AFTER_SECS: u32 = 1;

/// Live `/v1/stream` subscribers served at once; more are refused as busy (503, `Retry-After`).
/// A live subscriber costs its connection and a cursor: the events of each ledger are rendered
/// once and shared.
pub const STREAMS_MAX: usize = 2_048;

/// Latest ledgers whose rendered events the explorer keeps for its live streams, at most
/// [`STREAM_RING_BYTES`] of them (at least one ledger). A live subscriber that falls further
/// behind is cut with a final `end` event (`lagged`) and resumes from the store when it
/// reconnects.
pub const STREAM_RING_LEDGERS: usize = 64;

/// Bytes of rendered events the explorer keeps for its live streams.
pub const STREAM_RING_BYTES: usize = 32 << 20;

/// A stream replaying ledgers older than those kept reads the store by pages of at most this
/// many ledgers …
pub const STREAM_PAGE_LEDGERS: u64 = 16;

/// … and stops a page once it holds this many bytes of events (a page holds at least one
/// ledger's).
pub const STREAM_PAGE_BYTES: usize = 256 << 10;

/// Replay pages held at once by all streams (one per replaying stream; more wait): replays
/// hold at most this many pages in memory.
pub const STREAM_REPLAY_PAGES: usize = 64;

/// Replay pages read from the store at once (on blocking threads).
pub const STREAM_REPLAY_READS: usize = 2;

/// A stream with nothing to send writes a keep-alive comment this often.
pub const STREAM_KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Recent ledgers the explorer keeps decoded (with their ids).
pub const API_RECENT_LEDGERS: usize = 16;

/// Client transactions whose admission time a process keeps until they commit (for
/// `caasiope_submit_to_commit_seconds`); the oldest are forgotten first.
pub const SUBMIT_CLOCK_TXS_MAX: usize = 65_536;

/// … and for at most this long (past any transaction's time to live).
pub const SUBMIT_CLOCK_AGE_MAX: Duration = Duration::from_secs(2 * 3_600);

/// Memory for what this explorer remembers of the transactions submitted through it — ids,
/// expirations and verdicts, never bodies; the oldest are forgotten first.
pub const SUBMITTED_BYTES_MAX: usize = 128 << 20;

/// What one remembered submission is counted for, the words of its refusal aside (its id, its
/// expiration and verdict, and the map's overhead at its lowest load).
pub const SUBMITTED_ENTRY_BYTES: usize = 256;

/// The words of a refusal kept with a submission (longer ones are cut).
pub const SUBMITTED_REASON_BYTES_MAX: usize = 256;

/// Client connections served at once on the submit port (each on two threads: one reads and
/// submits, one writes the answers).
pub const SUBMIT_CONNECTIONS_MAX: usize = 64;

/// Frames of the submit port taken as one intake batch.
pub const SUBMIT_BATCH_FRAMES_MAX: usize = 256;

/// Batches of one submit-port connection submitted and not yet answered: past it, the
/// connection is not read until the oldest is answered (the intake is far behind).
pub const SUBMIT_BATCHES_IN_FLIGHT: usize = 16;

/// Submit-port connections served at once to one source (an IPv4 address or an IPv6 /64).
pub const SUBMIT_CONNECTIONS_PER_SOURCE: usize = 8;

/// A submit-port connection idle this long is closed.
pub const SUBMIT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// A submitted frame must arrive whole within this of its first byte; the connection is closed
/// otherwise.
pub const SUBMIT_FRAME_DEADLINE: Duration = Duration::from_secs(10);

/// Bytes of one admin-port request.
pub const ADMIN_REQUEST_BYTES_MAX: usize = 8 * 1024;

/// Admin-port connections served at once.
pub const ADMIN_CONNECTIONS_MAX: usize = 64;

/// Admin-port connections served at once to one source (the port is loopback-only: sources are
/// 127.0.0.0/8 addresses and ::1).
pub const ADMIN_CONNECTIONS_PER_SOURCE: usize = 16;

/// An admin-port request is read and answered within this, or its connection is closed.
pub const ADMIN_REQUEST_DEADLINE: Duration = Duration::from_secs(5);

/// Ledgers the admin port keeps for `/committed`.
pub const ADMIN_RECENT_LEDGERS_MAX: usize = 512;

/// Bytes of transaction ids the admin port keeps for `/committed` (the oldest ledgers are
/// forgotten first; the latest is kept whatever its size): 262,144 ids, 26 full ledgers, ~90 s
/// at 3,000 tx/s.
pub const ADMIN_RECENT_IDS_BYTES_MAX: usize = 8 << 20;

/// Ledgers per `/committed` answer.
pub const COMMITTED_PAGE_LEDGERS_MAX: usize = 64;

/// Bytes after which a `/committed` answer ends (one ledger of [`BLOCK_TXS_MAX`] ids is about
/// 650 KB).
pub const COMMITTED_PAGE_BYTES: usize = 4 << 20;

// ---------------------------------------------------------------------------------------------
// Files and command-line input

/// Bytes of a node's configuration file (a genesis file is bounded by
/// [`protocol::GENESIS_BYTES_MAX`]).
pub const CONFIG_BYTES_MAX: u64 = 1 << 20;

/// Bytes of a ceremony's member file (`member.json`: a name, keys and addresses).
pub const MEMBER_FILE_BYTES_MAX: u64 = 16 * 1024;

/// Bytes of a key file (a secret key is 64 hex characters; comments and whitespace fit).
pub const KEY_FILE_BYTES_MAX: u64 = 1024;

/// Hex text `tx decode --hex` reads: two characters per byte of the largest transaction, and as
/// much again for whitespace (line-wrapped dumps such as `xxd -p` add one byte per 60).
pub const TX_HEX_TEXT_MAX_BYTES: usize = 4 * protocol::TX_BYTES_MAX;

/// Hex text read for an evidence proof or a validator set: two proposals of the largest value.
pub const EVIDENCE_HEX_TEXT_MAX_BYTES: usize = 32 << 20;

// ---------------------------------------------------------------------------------------------
// How they relate

/// The largest encoding of a ledger's non-transaction parts, counted generously: a header of
/// hashes and counters (under 1 KiB), the transaction count, and a certificate of
/// [`protocol::VALIDATORS_MAX`] (index, 65-byte signature) pairs with its round and count.
const LEDGER_OVERHEAD_ESTIMATE_BYTES: usize = 1024 + 4 + 8 + protocol::VALIDATORS_MAX * (1 + 65);

const _: () = {
    // A block the node proposes is one the protocol accepts, and one it can fill.
    assert!(BLOCK_TXS_MAX <= protocol::BLOCK_TXS_MAX);
    assert!(BLOCK_BYTES_MAX >= protocol::TX_BYTES_MAX);
    // A committed ledger fits one sync frame, and the frame fits its channel.
    assert!(LEDGER_OVERHEAD_ESTIMATE_BYTES <= LEDGER_OVERHEAD_MAX_BYTES);
    assert!(BLOCK_BYTES_MAX + LEDGER_OVERHEAD_MAX_BYTES <= FRAME_PAYLOAD_MAX_BYTES);
    assert!(ChannelBytes::DEFAULT.sync >= FRAME_PAYLOAD_MAX_BYTES);
    assert!(ChannelBytes::DEFAULT.consensus >= FRAME_PAYLOAD_MAX_BYTES);
    // A gossip frame of the most transactions, each with its length, fits a frame; so does a
    // request for the most bodies.
    assert!(4 + GOSSIP_TXS_MAX * (4 + protocol::TX_BYTES_MAX) <= FRAME_PAYLOAD_MAX_BYTES);
    assert!(5 + FETCH_IDS_MAX * 32 <= FRAME_PAYLOAD_MAX_BYTES);
    // A log record holds a block's bodies (each with its length) or a proposal's ids.
    assert!(BLOCK_BYTES_MAX + 4 * BLOCK_TXS_MAX + 1024 <= WAL_RECORD_BYTES_MAX);
    assert!(BLOCK_TXS_MAX * 32 + 1024 <= WAL_RECORD_BYTES_MAX);
    // The pool holds what clients may make wait, and more than a block: admission stops while
    // a full block still waits, and the pool never refuses a body a proposal needs for want of
    // room taken by clients.
    assert!(BLOCK_TXS_MAX <= POOL_ADMIT_MAX);
    assert!(POOL_ADMIT_MIN <= POOL_ADMIT_MAX);
    assert!(POOL_WAIT_INTERVALS > 1.0);
    assert!(POOL_ADMIT_MAX + INTAKE_ADMIT_MAX + BLOCK_TXS_MAX <= POOL_TXS_MAX);
    assert!(STAGE_BATCH_TXS_MAX <= INTAKE_ADMIT_MAX);
    assert!(STAGE_BATCH_TXS_MAX <= protocol::BLOCK_TXS_MAX);
    // The explorer remembers the fate of everything the pool can hold.
    assert!(POOL_TXS_MAX * (SUBMITTED_ENTRY_BYTES + SUBMITTED_REASON_BYTES_MAX) <= SUBMITTED_BYTES_MAX);
    // Streams are connections too.
    assert!(STREAMS_MAX < API_CONNECTIONS_MAX);
    // hyper's minimum; the limits answered with a JSON body must fit in it.
    assert!(API_READ_BUFFER_BYTES >= 8192);
    assert!(API_URI_BYTES_MAX + API_HEADER_BYTES_MAX < API_READ_BUFFER_BYTES);
    // One source's share of a listener leaves room for others.
    assert!(API_CONNECTIONS_PER_SOURCE < API_CONNECTIONS_MAX);
    assert!(SUBMIT_CONNECTIONS_PER_SOURCE < SUBMIT_CONNECTIONS_MAX);
    assert!(ADMIN_CONNECTIONS_PER_SOURCE < ADMIN_CONNECTIONS_MAX);
    assert!(HANDSHAKES_PER_SOURCE < HANDSHAKES_MAX);
    // The API's page limits (part of its contract) are pages the store serves.
    assert!(HISTORY_LIMIT_DEFAULT <= HISTORY_LIMIT_MAX);
    assert!(HISTORY_LIMIT_MAX <= HISTORY_PAGE_MAX);
    assert!(EVIDENCE_LIMIT_MAX <= EVIDENCE_PAGE_MAX);
    // A `/committed` page holds at least one full ledger's ids (64 hex characters, quotes and
    // a comma each).
    assert!(BLOCK_TXS_MAX * 67 <= COMMITTED_PAGE_BYTES);
    assert!(COMMITTED_PAGE_LEDGERS_MAX <= ADMIN_RECENT_LEDGERS_MAX);
    // An evidence proof kept by the store can be read back as hex.
    assert!(2 * EVIDENCE_BYTES_MAX <= EVIDENCE_HEX_TEXT_MAX_BYTES);
    assert!(BAN_MIN.as_millis() <= BAN_MAX.as_millis());
};
