//! The uplink session as two pure state machines: [`ClientSession`] (the agent's end) and
//! [`ServerSession`] (the aggregator's end) of the protocol in `docs/WIRE.md`.
//!
//! Nothing here touches a socket, a stream, a disk or a clock. Like `quinn-proto`, every
//! method that depends on time takes `now`, in milliseconds since the Unix epoch as the
//! driver's clock reads it (the same value goes into the `clock_ms` fields of hello, welcome
//! and heartbeat frames). A driver moves bytes between QUIC streams and the session, reads
//! and deletes buffered batches, writes batches durably, and sleeps until [`poll_timeout`]
//! (`ClientSession::poll_timeout`, `ServerSession::poll_timeout`).
//!
//! # Call order
//!
//! A driver repeats, until the session reports an error or finishes:
//!
//! 1. feed every input that happened: `handle_*` (a received frame, a connection that came up
//!    or went away, the buffer's new state, a batch written durably, a deadline that passed);
//! 2. drain the outputs: `poll_transmit` until `None` (frames and batches to send, on which
//!    [`Lane`]), then `poll_event` until `None` (what the driver must do: delete acknowledged
//!    batches, apply a refusal, store check assignments);
//! 3. wait for the next input or for `poll_timeout`, and call `handle_timeout(now)` when
//!    the deadline passes.
//!
//! The order matters only in one place: a [`ClientEvent::Acked`] must be acted on (batches
//! deleted) only after it was polled, and never before; everything else is idempotent.
//!
//! # What each side guarantees
//!
//! The client sends batches in seq order, at most [`ClientConfig::window`] unacknowledged,
//! resends everything unacknowledged after a reconnect, and tells its driver to delete a
//! batch only when the server acknowledged it (contract 1 in `DESIGN.md`). The server checks
//! the hello (protocol version, identity), that seqs on each stream increase, classifies each
//! batch as next, duplicate or after a gap, and acknowledges cumulatively, in seq order, only
//! what its driver reported durable (contracts 1 and 2).

mod client;
mod server;
#[cfg(test)]
mod tests;

pub use client::{BufferState, ClientConfig, ClientError, ClientEvent, ClientSession, Transmit};
pub use server::{
    HOLD_ACKS_VERSION, RUN_CHECK_VERSION, Refusal, ServerConfig, ServerEvent, ServerSession,
    ServerTransmit, Verdict,
};

/// Which stream a frame travels on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Lane {
    /// The bidirectional control stream: hello, welcome, refusal, heartbeats, acks, checks.
    Control,
    /// The unidirectional batch stream: every batch once, in seq order, acknowledged.
    Batch,
    /// The unidirectional live stream (higher priority): copies of the newest batches while
    /// a backlog drains; stored at once, never acknowledged.
    Live,
}

/// Time in milliseconds since the Unix epoch, as the driver's clock reads it.
pub type Millis = i64;
