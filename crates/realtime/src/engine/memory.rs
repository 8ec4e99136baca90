//! The reference engine: everything in one process's memory. For tests and for embedding
//! apps that do not need durability; events are lost when the process ends.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::sync::Notify;

use super::{Engine, Position};
use crate::channel::ChannelHash;
use crate::error::{Error, Result};
use crate::event::{Epoch, Event, EventId, NewEvent};
use crate::secret::random_hex;
use crate::token::now_secs;

/// Events in a `VecDeque` behind a mutex; a fresh epoch per instance.
#[derive(Debug)]
pub struct MemoryEngine {
    epoch: Epoch,
    state: Mutex<State>,
    changes: Arc<Notify>,
}

#[derive(Debug, Default)]
struct State {
    events: VecDeque<Event>,
    head: i64,
    floor: i64,
    closed: bool,
}

impl Default for MemoryEngine {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryEngine {
    /// An empty store with a new random epoch.
    pub fn new() -> Self {
        MemoryEngine {
            epoch: Epoch(random_hex(8)),
            state: Mutex::new(State::default()),
            changes: Arc::new(Notify::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the deque half-written in a way that
        // matters more than losing the process, so poisoning is ignored.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl Engine for MemoryEngine {
    fn name(&self) -> &'static str {
        "memory"
    }

    async fn append(&self, events: Vec<NewEvent>) -> Result<Vec<Event>> {
        let now = now_secs();
        let stored = {
            let mut st = self.lock();
            if st.closed {
                return Err(Error::EngineUnavailable(
                    "the memory engine is closed".into(),
                ));
            }
            let mut stored = Vec::with_capacity(events.len());
            for new in events {
                st.head += 1;
                let event = Event::from_new(new, EventId(st.head), now);
                st.events.push_back(event.clone());
                stored.push(event);
            }
            stored
        };
        self.changes.notify_one();
        Ok(stored)
    }

    async fn read(
        &self,
        after: EventId,
        hashes: Option<&[ChannelHash]>,
        limit: usize,
    ) -> Result<Vec<Event>> {
        let st = self.lock();
        let start = st.events.partition_point(|e| e.id <= after);
        Ok(st
            .events
            .range(start..)
            .filter(|e| hashes.is_none_or(|h| h.contains(&e.hash)))
            .take(limit)
            .cloned()
            .collect())
    }

    async fn position(&self) -> Result<Position> {
        let st = self.lock();
        Ok(Position {
            epoch: self.epoch.clone(),
            head: EventId(st.head),
            floor: EventId(st.floor),
        })
    }

    async fn purge(&self, before: i64) -> Result<u64> {
        let mut st = self.lock();
        let mut removed = 0;
        while st.events.front().is_some_and(|e| e.timecreated < before) {
            if let Some(e) = st.events.pop_front() {
                st.floor = e.id.0;
                removed += 1;
            }
        }
        Ok(removed)
    }

    fn changes(&self) -> Arc<Notify> {
        self.changes.clone()
    }

    async fn close(&self) {
        self.lock().closed = true;
    }
}
