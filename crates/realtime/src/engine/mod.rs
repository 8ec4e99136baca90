//! The engine: where events live and how other processes learn of new ones.
//!
//! # Contract (every engine passes the same tests)
//! - [`Engine::append`] stores events in the order given and answers only once they are
//!   durable as far as the engine promises (memory: never; sqlite: fsync'd). Ids ascend
//!   engine-wide and are never reused, even after the newest events are purged.
//! - Ids become visible in order: no reader sees id N+1 while id N is still invisible. The hub
//!   relies on this to tail the log with a single "after id" cursor.
//! - [`Engine::read`] answers events with an id greater than `after`, ascending.
//! - [`Position::floor`] is the highest id retention has removed; a cursor below it may have
//!   missed events. [`Position::epoch`] changes when the store is replaced or lost.
//! - [`Engine::changes`] fires when this process appended (and, for engines that can tell,
//!   when another process did); the hub also polls at the check interval, so an engine that
//!   cannot tell about other processes is still correct, only slower.

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::Notify;

use crate::channel::ChannelHash;
use crate::error::Result;
use crate::event::{Epoch, Event, EventId, NewEvent};

pub mod memory;
#[cfg(feature = "sqlite")]
pub mod sqlite;

pub use memory::MemoryEngine;
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteEngine;

/// For engine implementations: seconds since the Unix epoch, now (an event's `timecreated`).
pub use crate::token::now_secs;

/// Where a store stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// The store's incarnation.
    pub epoch: Epoch,
    /// The newest id ever appended (0 when none).
    pub head: EventId,
    /// The newest id removed by retention (0 when none): events at or below it may be gone.
    pub floor: EventId,
}

/// A store of events with fan-out to the processes that read it. See the module doc.
#[async_trait]
pub trait Engine: Send + Sync + 'static {
    /// A short name for logs and `/api/status` (`memory`, `sqlite`, ...).
    fn name(&self) -> &'static str;

    /// Appends events in order and returns them as stored, once durable.
    ///
    /// # Errors
    /// [`crate::Error::EngineUnavailable`] when nothing could be stored; then nothing was.
    async fn append(&self, events: Vec<NewEvent>) -> Result<Vec<Event>>;

    /// Up to `limit` events with id greater than `after`, ascending; only those of `hashes`
    /// when given.
    ///
    /// # Errors
    /// [`crate::Error::EngineUnavailable`] when the store cannot be read.
    async fn read(
        &self,
        after: EventId,
        hashes: Option<&[ChannelHash]>,
        limit: usize,
    ) -> Result<Vec<Event>>;

    /// The store's epoch, head and floor.
    ///
    /// # Errors
    /// [`crate::Error::EngineUnavailable`] when the store cannot be read.
    async fn position(&self) -> Result<Position>;

    /// Removes the oldest events, those created before `before` (Unix seconds), as one
    /// contiguous run of ids from the start, and raises the floor to match. Returns how many.
    ///
    /// # Errors
    /// [`crate::Error::EngineUnavailable`] when the store cannot be written.
    async fn purge(&self, before: i64) -> Result<u64>;

    /// A signal that new events may be readable.
    fn changes(&self) -> Arc<Notify>;

    /// Finishes pending work and releases the store. Appends after this fail.
    async fn close(&self) {}
}
