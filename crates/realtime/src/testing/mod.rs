//! Test support (feature `test-util`): the engine conformance suite that every engine passes.
//!
//! Give [`engine_conformance`] a factory that makes a fresh, empty engine; it panics with a
//! message naming the broken rule of the engine contract (see [`crate::engine`]).

pub mod sse;
pub mod ws;

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde_json::value::RawValue;

use crate::engine::Engine;
use crate::event::{EventId, NewEvent};
use crate::secret::Secret;
use crate::token::now_secs;
use crate::Channel;

/// A new event on `(1, component, area, itemid)` with `payload`.
///
/// # Panics
/// When the channel or payload is invalid (a bug in the test).
pub fn new_event(component: &str, area: &str, itemid: i64, payload: &str) -> NewEvent {
    let channel = Channel::new(1, component, area, itemid, "").expect("a valid test channel");
    let hash = channel.hash(&Secret::from_bytes(b"conformance".to_vec()));
    let payload = RawValue::from_string(payload.to_string()).expect("valid test JSON");
    NewEvent {
        channel,
        hash,
        payload,
    }
}

/// Runs every conformance check, each on a fresh engine from `make`.
///
/// # Panics
/// On the first broken rule.
pub async fn engine_conformance<F, Fut>(make: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Engine>>,
{
    append_read_order_and_filter(make().await).await;
    concurrent_appends(make().await).await;
    purge_floor_and_no_reuse(make().await).await;
    resume_exactly_once_through_a_hub(make().await, 10_000).await;
    resume_exactly_once_through_a_hub(make().await, 3).await;
    retention_is_told_through_a_hub(make().await).await;
    changes_fire_on_append(make().await).await;
}

/// A hub over `e` with its tail running, and the token that stops it.
async fn hub_over(
    e: Arc<dyn Engine>,
    cache: usize,
) -> (Arc<crate::hub::Hub>, tokio_util::sync::CancellationToken) {
    let hub = crate::hub::Hub::new(e, cache).await.expect("hub");
    let cancel = tokio_util::sync::CancellationToken::new();
    tokio::spawn(
        hub.clone()
            .run_tail(Duration::from_millis(50), cancel.clone()),
    );
    (hub, cancel)
}

/// Waits until the hub has taken `id` from the engine.
async fn hub_reaches(hub: &crate::hub::Hub, id: EventId) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while hub.head().id < id {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the hub's tail did not reach {id:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Resuming from any cursor delivers every later event of the channel once, in order, from
/// the hub's cache or (with a tiny cache) from the engine.
async fn resume_exactly_once_through_a_hub(e: Arc<dyn Engine>, cache: usize) {
    let (hub, cancel) = hub_over(e.clone(), cache).await;
    let start = hub.head();
    let mut mine = Vec::new();
    let mut last = EventId(0);
    for i in 0..30 {
        let component = if i % 3 == 0 { "mod_other" } else { "mod_mine" };
        let stored = e
            .append(vec![new_event(component, "x", 0, &i.to_string())])
            .await
            .expect("append");
        if component == "mod_mine" {
            mine.push(stored[0].id);
        }
        last = stored[0].id;
    }
    hub_reaches(&hub, last).await;
    let hash = new_event("mod_mine", "x", 0, "0").hash;
    let hashes = std::slice::from_ref(&hash);
    // Read it all in small steps from the start, then again from the middle.
    for (from, expect) in [
        (start.clone(), &mine[..]),
        (
            crate::Cursor {
                epoch: start.epoch.clone(),
                id: mine[9],
            },
            &mine[10..],
        ),
    ] {
        let mut cursor = from;
        let mut got = Vec::new();
        loop {
            let batch = hub.fetch(hashes, &cursor, 4).await.expect("fetch");
            assert!(batch.recovered, "a retained cursor resumes");
            if batch.events.is_empty() {
                break;
            }
            got.extend(batch.events.iter().map(|ev| ev.id));
            cursor = batch.cursor;
        }
        assert_eq!(
            got, expect,
            "every later event once, in order (cache of {cache})"
        );
    }
    cancel.cancel();
}

/// A cursor older than retention is told `recovered: false` with a cursor that then resumes.
async fn retention_is_told_through_a_hub(e: Arc<dyn Engine>) {
    let (hub, cancel) = hub_over(e.clone(), 10_000).await;
    let old = hub.head();
    let stored = e
        .append(
            (0..3)
                .map(|i| new_event("mod_r", "x", 0, &i.to_string()))
                .collect(),
        )
        .await
        .expect("append");
    hub_reaches(&hub, stored[2].id).await;
    e.purge(now_secs() + 10).await.expect("purge");
    let hash = stored[0].hash.clone();
    // The hub learns the floor at its next position check.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let batch = loop {
        let batch = hub
            .fetch(std::slice::from_ref(&hash), &old, 100)
            .await
            .expect("fetch");
        if !batch.recovered {
            break batch;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "a purged cursor was never told"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(batch.events.is_empty());
    let next = e
        .append(vec![new_event("mod_r", "x", 0, "\"after\"")])
        .await
        .expect("append");
    hub_reaches(&hub, next[0].id).await;
    let resumed = hub
        .fetch(std::slice::from_ref(&hash), &batch.cursor, 100)
        .await
        .expect("fetch");
    assert!(resumed.recovered);
    assert_eq!(
        resumed.events.iter().map(|ev| ev.id).collect::<Vec<_>>(),
        vec![next[0].id]
    );
    cancel.cancel();
}

async fn append_read_order_and_filter(e: Arc<dyn Engine>) {
    let start = e.position().await.expect("position");
    assert_eq!(start.head, EventId(0), "a fresh engine starts at 0");
    let a = new_event("mod_a", "x", 1, r#"{"n":1}"#);
    let b = new_event("mod_b", "y", 2, r#"[1,"two"]"#);
    let hash_a = a.hash.clone();
    let stored = e
        .append(vec![a, b, new_event("mod_a", "x", 1, "3")])
        .await
        .expect("append");
    let ids: Vec<i64> = stored.iter().map(|s| s.id.0).collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "ids ascend in the order given: {ids:?}"
    );
    let all = e.read(EventId(0), None, 100).await.expect("read");
    assert_eq!(all.len(), 3);
    assert_eq!(
        all[1].payload.get(),
        r#"[1,"two"]"#,
        "payloads come back as stored"
    );
    assert_eq!(
        (
            all[1].component.as_str(),
            all[1].area.as_str(),
            all[1].itemid
        ),
        ("mod_b", "y", 2)
    );
    let only_a = e
        .read(EventId(0), Some(std::slice::from_ref(&hash_a)), 100)
        .await
        .expect("read");
    assert_eq!(
        only_a.iter().map(|s| s.id.0).collect::<Vec<_>>(),
        vec![ids[0], ids[2]]
    );
    let after_first = e
        .read(stored[0].id, Some(&[hash_a]), 100)
        .await
        .expect("read");
    assert_eq!(after_first.len(), 1, "read is strictly after");
    assert_eq!(
        e.read(EventId(0), None, 2).await.expect("read").len(),
        2,
        "limit holds"
    );
    assert_eq!(e.position().await.expect("position").head, stored[2].id);
}

async fn concurrent_appends(e: Arc<dyn Engine>) {
    let tasks: Vec<_> = (0..16)
        .map(|t| {
            let e = e.clone();
            tokio::spawn(async move {
                let mut ids = Vec::new();
                for i in 0..25 {
                    let stored = e
                        .append(vec![new_event("mod_c", "x", t, &i.to_string())])
                        .await
                        .expect("append");
                    ids.push(stored[0].id);
                }
                ids
            })
        })
        .collect();
    let mut acknowledged = HashSet::new();
    for t in tasks {
        for id in t.await.expect("task") {
            assert!(acknowledged.insert(id), "id {id:?} given twice");
        }
    }
    let all = e.read(EventId(0), None, 10_000).await.expect("read");
    assert_eq!(all.len(), 400, "every acknowledged event is readable");
    assert!(all.windows(2).all(|w| w[0].id < w[1].id), "reads ascend");
    assert!(all.iter().all(|ev| acknowledged.contains(&ev.id)));
    // Per notifier, order is kept.
    for t in 0..16 {
        let mine: Vec<i64> = all
            .iter()
            .filter(|ev| ev.itemid == t)
            .map(|ev| ev.payload.get().parse().expect("n"))
            .collect();
        assert_eq!(mine, (0..25).collect::<Vec<i64>>());
    }
}

async fn purge_floor_and_no_reuse(e: Arc<dyn Engine>) {
    let stored = e
        .append(
            (0..5)
                .map(|i| new_event("mod_p", "x", 0, &i.to_string()))
                .collect(),
        )
        .await
        .expect("append");
    assert_eq!(
        e.purge(now_secs() - 3_600).await.expect("purge"),
        0,
        "young events stay"
    );
    let removed = e.purge(now_secs() + 10).await.expect("purge");
    assert_eq!(removed, 5);
    let pos = e.position().await.expect("position");
    assert_eq!(pos.floor, stored[4].id, "the floor is the last removed id");
    assert_eq!(pos.head, stored[4].id, "the head stays after a purge");
    let next = e
        .append(vec![new_event("mod_p", "x", 0, "5")])
        .await
        .expect("append");
    assert!(
        next[0].id > stored[4].id,
        "ids are never reused after a purge"
    );
    assert_eq!(e.read(EventId(0), None, 100).await.expect("read").len(), 1);
}

async fn changes_fire_on_append(e: Arc<dyn Engine>) {
    let changes = e.changes();
    let waiter = tokio::spawn(async move { changes.notified().await });
    tokio::time::sleep(Duration::from_millis(20)).await;
    e.append(vec![new_event("mod_n", "x", 0, "1")])
        .await
        .expect("append");
    tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("the change signal fired")
        .expect("task");
    e.close().await;
    assert!(
        e.append(vec![new_event("mod_n", "x", 0, "2")])
            .await
            .is_err(),
        "appends after close fail"
    );
}
