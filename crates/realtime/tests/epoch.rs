//! When the engine's store is lost and replaced (a Redis restart without persistence, say),
//! every client is told `recovered: false` and continues in the new epoch, on every transport.

mod common;

use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use common::{channel, config, ws, TestServer};
use realtime::engine::{Engine, MemoryEngine, Position};
use realtime::NewEvent;
use realtime::{ChannelHash, Event, EventId};
use serde_json::json;
use tokio::sync::Notify;

/// A memory store that the test can throw away, as a crash would.
struct Losable {
    store: RwLock<Arc<MemoryEngine>>,
    changes: Arc<Notify>,
}

impl Losable {
    fn current(&self) -> Arc<MemoryEngine> {
        self.store.read().expect("lock").clone()
    }
    fn lose(&self) {
        *self.store.write().expect("lock") = Arc::new(MemoryEngine::new());
    }
}

#[async_trait]
impl Engine for Losable {
    fn name(&self) -> &'static str {
        "losable"
    }
    async fn append(&self, events: Vec<NewEvent>) -> realtime::Result<Vec<Event>> {
        let out = self.current().append(events).await;
        self.changes.notify_one();
        out
    }
    async fn read(
        &self,
        after: EventId,
        hashes: Option<&[ChannelHash]>,
        limit: usize,
    ) -> realtime::Result<Vec<Event>> {
        self.current().read(after, hashes, limit).await
    }
    async fn position(&self) -> realtime::Result<Position> {
        self.current().position().await
    }
    async fn purge(&self, before: i64) -> realtime::Result<u64> {
        self.current().purge(before).await
    }
    fn changes(&self) -> Arc<Notify> {
        self.changes.clone()
    }
}

#[tokio::test]
async fn a_lost_store_is_told_to_every_client_and_delivery_goes_on() {
    let engine = Arc::new(Losable {
        store: RwLock::new(Arc::new(MemoryEngine::new())),
        changes: Arc::new(Notify::new()),
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let s = TestServer::start_with(
        config(|c| c.poll.request_timeout_secs = 10),
        engine.clone(),
        dir,
    )
    .await;
    let ch = channel("mod_a", "x", 0);
    let page = s.page(1, json!([ch])).await;
    for _ in 0..3 {
        s.notify(ch.clone(), json!("before")).await;
    }
    let events = s.collect(&page, 3).await;
    assert_eq!(events.len(), 3);
    let (_, body) = s.poll(&page, &page["cursor"]).await;
    let cursor = body["cursor"].clone();

    let mut sock = ws::connect(&s.url).await;
    ws::send(&mut sock, ws::subscribe_frame(&page, &cursor)).await;
    assert_eq!(ws::frame(&mut sock).await["type"], "recovered");
    let waiting = {
        let (http, url, page, cursor) =
            (s.http.clone(), s.url.clone(), page.clone(), cursor.clone());
        tokio::spawn(async move {
            let sub = &page["subscriptions"][0];
            http.post(format!("{url}/poll"))
                .bearer_auth(page["usertoken"].as_str().expect("ut"))
                .json(&json!({"subscriptions": [{"channel": sub["channel"], "token": sub["token"]}], "cursor": cursor}))
                .send()
                .await
                .expect("poll")
                .json::<serde_json::Value>()
                .await
                .expect("json")
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    engine.lose();

    // The waiting poll is woken and told; so is the WebSocket.
    let body = waiting.await.expect("poll task");
    assert_eq!(body["recovered"], false, "{body}");
    let new_cursor = body["cursor"].clone();
    assert_ne!(
        new_cursor.as_str().expect("c").split(':').next(),
        cursor.as_str().expect("c").split(':').next()
    );
    let f = ws::frame(&mut sock).await;
    assert_eq!(f["type"], "not_recovered", "{f}");
    assert_eq!(f["cursor"], new_cursor);

    // New events flow in the new epoch, to both.
    let id = s.notify(ch.clone(), json!("after")).await;
    let (events, _) = ws::events(&mut sock, 1).await;
    assert_eq!(events[0]["id"], id);
    let (_, body) = s.poll(&page, &new_cursor).await;
    assert_eq!(body["recovered"], true);
    assert_eq!(body["events"][0]["payload"], "after");
    s.stop().await;
}
