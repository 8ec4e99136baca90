//! A custom engine: a wrapper implementing [`realtime::engine::Engine`] around another engine
//! (here the memory engine) that counts the events appended. The same shape adds metrics,
//! tracing or fault injection around any engine, `SqliteEngine` or `realtime_postgres`
//! included. The node takes any `Arc<dyn Engine>`.
//!
//! Run: `cargo run -p realtime --example counting_engine`; it notifies three events, prints
//! the count and exits.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use realtime::engine::{Engine, MemoryEngine, Position};
use realtime::{Channel, ChannelHash, Config, Event, EventId, NewEvent, Realtime, Secret};
use serde_json::json;
use tokio::sync::Notify;

/// Counts what passes through to `inner`.
struct CountingEngine<E> {
    inner: E,
    appended: AtomicU64,
}

#[async_trait]
impl<E: Engine> Engine for CountingEngine<E> {
    fn name(&self) -> &'static str {
        "counting"
    }

    async fn append(&self, events: Vec<NewEvent>) -> realtime::Result<Vec<Event>> {
        let stored = self.inner.append(events).await?;
        // Counted once stored: a failed append stored nothing.
        self.appended
            .fetch_add(stored.len() as u64, Ordering::Relaxed);
        Ok(stored)
    }

    async fn read(
        &self,
        after: EventId,
        hashes: Option<&[ChannelHash]>,
        limit: usize,
    ) -> realtime::Result<Vec<Event>> {
        self.inner.read(after, hashes, limit).await
    }

    async fn position(&self) -> realtime::Result<Position> {
        self.inner.position().await
    }

    async fn purge(&self, before: i64) -> realtime::Result<u64> {
        self.inner.purge(before).await
    }

    fn changes(&self) -> Arc<Notify> {
        self.inner.changes()
    }

    async fn close(&self) {
        self.inner.close().await;
    }
}

/// Starts a node on the counting engine, notifies three events and answers the count.
pub(crate) async fn run() -> realtime::Result<u64> {
    let engine = Arc::new(CountingEngine {
        inner: MemoryEngine::new(),
        appended: AtomicU64::new(0),
    });
    let rt = Realtime::start(Config::default(), Secret::generate().0, engine.clone()).await?;
    let channel = Channel::new(1, "mod_demo", "counts", 0, "")?;
    for n in 1..=3 {
        let id = rt.notify(&channel, &json!({"n": n})).await?;
        println!(
            "notified event {} on the {} engine",
            id.get(),
            rt.engine_name()
        );
    }
    rt.shutdown().await;
    Ok(engine.appended.load(Ordering::Relaxed))
}

#[tokio::main]
async fn main() -> realtime::Result<()> {
    let appended = run().await?;
    println!("the counting engine stored {appended} events");
    Ok(())
}
