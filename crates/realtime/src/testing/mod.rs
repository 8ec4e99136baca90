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

/// A new event on `(contextid, component, area, itemid, details)` with `payload`, built without
/// the boundary's checks (so that a test can hand an engine what notify would refuse).
///
/// # Panics
/// When `payload` is not JSON (a bug in the test).
pub fn raw_event(
    contextid: i64,
    component: &str,
    area: &str,
    itemid: i64,
    details: &str,
    payload: &str,
) -> NewEvent {
    let channel = Channel {
        contextid,
        component: component.to_string(),
        area: area.to_string(),
        itemid,
        details: details.to_string(),
    };
    let hash = channel.hash(&Secret::from_bytes(b"conformance".to_vec()));
    let payload = RawValue::from_string(payload.to_string()).expect("valid test JSON");
    NewEvent {
        channel,
        hash,
        payload,
    }
}

/// Hostile but valid values: every one passes the boundary's rule (`docs/protocol.md`, "What an
/// event may contain") and must come back byte-exact from every engine. `(area, details,
/// payload)`.
pub fn hostile_values() -> Vec<(String, String, String)> {
    let limits = crate::config::LimitsConfig::default();
    let depth = limits.payload_depth;
    // The deepest payload: `depth - 1` arrays around an object holding a string.
    let deepest = format!(
        "{}{{\"k\":\"\\u0000\"}}{}",
        "[".repeat(depth - 1),
        "]".repeat(depth - 1)
    );
    // The largest payload: a string of escapes and multi-byte text filling `payload_bytes`.
    let unit = r#"\u0000\"\\é😀"#;
    let mut big = String::from("\"");
    while big.len() + unit.len() < limits.payload_bytes - 1 {
        big.push_str(unit);
    }
    while big.len() < limits.payload_bytes - 1 {
        big.push('x');
    }
    big.push('"');
    let values: [(&str, &str, &str); 12] = [
        ("quote\"d", "\"", r#""\"""#),
        ("C:\\temp", "C:\\temp\\", r#""C:\\temp""#),
        (
            "back\\slash\\",
            "\\",
            r#"{"path":"C:\\temp\\new","q":"\"\\\""}"#,
        ),
        ("😀", "😀👍🏽", r#""😀""#),
        (
            "\u{202e}rtl",
            "שלום עולם",
            r#"{"rtl":"\u202e","he":"שלום"}"#,
        ),
        (
            "e\u{301}",
            "a\u{300}\u{301}\u{302}",
            r#""\ud83d\ude00 \uD83D\uDE00""#,
        ),
        (
            "{\"a\":1}",
            "[1,2]",
            r#"{ "spaced" :  [ 1 , 2 ] , "nul":"\u0000" }"#,
        ),
        ("x", "", r#""\u0000\u001f\u007f\u0080\u009f\ufffe\uffff""#),
        (
            "x",
            "'; DROP TABLE realtime_events; --",
            r#""\/\b\f\n\r\t""#,
        ),
        (
            "x",
            "%s %d {} $1 ?",
            r#"[1e400, -0, 0.1e-7, 12345678901234567890]"#,
        ),
        ("x", "deep", &deepest),
        ("x", "big", &big),
    ];
    values
        .iter()
        .map(|(a, d, p)| (a.to_string(), d.to_string(), p.to_string()))
        .collect()
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
    a_cursor_ahead_of_the_head_is_told_through_a_hub(make().await).await;
    hostile_values_round_trip(make().await).await;
    hostile_values_round_trip_through_a_hub(make().await, 10_000).await;
    hostile_values_round_trip_through_a_hub(make().await, 1).await;
    a_bad_batch_never_fails_a_good_one(make().await).await;
    purge_raises_the_floor_with_the_trim(make().await).await;
    changes_fire_on_append(make().await).await;
}
/// Every hostile but valid value passes the boundary and comes back byte-exact, read whole and
/// read by channel.
async fn hostile_values_round_trip(e: Arc<dyn Engine>) {
    let limits = crate::config::LimitsConfig::default();
    let values = hostile_values();
    let events: Vec<NewEvent> = values
        .iter()
        .map(|(a, d, p)| raw_event(-7, "mod_hostile", a, 3, d, p))
        .collect();
    for ev in &events {
        Channel::new(
            ev.channel.contextid,
            ev.channel.component.clone(),
            ev.channel.area.clone(),
            ev.channel.itemid,
            ev.channel.details.clone(),
        )
        .expect("a hostile channel the boundary accepts");
        crate::node::check_payload(&ev.payload, limits.payload_bytes, limits.payload_depth)
            .expect("a hostile payload the boundary accepts");
    }
    let stored = e.append(events).await.expect("append hostile values");
    let all = e.read(EventId(0), None, 100).await.expect("read");
    assert_eq!(all.len(), values.len(), "every hostile event is readable");
    for (got, (area, details, payload)) in all.iter().zip(&values) {
        assert_eq!(got.area, *area, "area byte-exact");
        assert_eq!(got.channeldetails, *details, "details byte-exact");
        assert_eq!(got.payload.get(), payload.as_str(), "payload byte-exact");
        assert_eq!((got.contextid, got.itemid), (-7, 3));
        assert_eq!(got.component, "mod_hostile");
    }
    for s in &stored {
        let mine = e
            .read(EventId(0), Some(std::slice::from_ref(&s.hash)), 100)
            .await
            .expect("read by channel");
        assert!(
            mine.iter()
                .any(|m| m.id == s.id && m.payload.get() == s.payload.get()),
            "a hostile event is found by its channel"
        );
    }
}

/// The same values through a hub (its tail with a large cache, the engine read with a tiny
/// one): the event a client receives is the stored one, byte for byte.
async fn hostile_values_round_trip_through_a_hub(e: Arc<dyn Engine>, cache: usize) {
    let (hub, cancel) = hub_over(e.clone(), cache).await;
    let start = hub.head();
    let events: Vec<NewEvent> = hostile_values()
        .iter()
        .map(|(a, d, p)| raw_event(1, "mod_hostile", a, 0, d, p))
        .collect();
    let stored = e.append(events).await.expect("append");
    let last = stored.last().map(|s| s.id).expect("stored");
    hub_reaches(&hub, last).await;
    for s in &stored {
        let batch = hub
            .fetch(std::slice::from_ref(&s.hash), &start, 100)
            .await
            .expect("fetch");
        assert!(batch.recovered);
        let got = batch
            .events
            .iter()
            .find(|c| c.id == s.id)
            .expect("the hostile event reaches the hub");
        let expect = serde_json::to_vec(s).expect("serialise");
        assert_eq!(
            got.json.as_ref(),
            expect.as_slice(),
            "the wire shape is the stored event, byte for byte (cache of {cache})"
        );
    }
    cancel.cancel();
}

/// A batch the boundary would refuse, handed to the engine directly, while many good batches
/// are appended at once: every good one is acknowledged and readable; the bad one is either
/// stored and readable or refused as bad input (400), never as "engine unavailable", and reads
/// keep working.
async fn a_bad_batch_never_fails_a_good_one(e: Arc<dyn Engine>) {
    let deep = format!("{}{}", "[".repeat(30_000), "]".repeat(30_000));
    let bad_batches = vec![
        vec![raw_event(1, "mod_bad", "x", 0, "nul\0here", "1")],
        vec![raw_event(1, "mod_bad", "x", 0, "", r#""\ud800""#)],
        vec![raw_event(1, "mod_bad", "x", 0, "", &deep)],
        vec![raw_event(1, "mod_bad", "nul\0area", 0, "", "1")],
    ];
    for bad in bad_batches {
        let good: Vec<_> = (0..24)
            .map(|t| {
                let e = e.clone();
                tokio::spawn(async move {
                    e.append(vec![
                        new_event("mod_good", "x", t, &t.to_string()),
                        new_event("mod_good", "y", t, "\"two\""),
                    ])
                    .await
                })
            })
            .collect();
        let bad_result = e.append(bad).await;
        let mut acknowledged = Vec::new();
        for g in good {
            let stored = g
                .await
                .expect("task")
                .expect("a good batch is never failed by a bad one");
            acknowledged.extend(stored.iter().map(|s| s.id));
        }
        let all = e
            .read(EventId(0), None, 100_000)
            .await
            .expect("reads keep working");
        for id in &acknowledged {
            assert!(
                all.iter().any(|ev| ev.id == *id),
                "acknowledged {id:?} is readable"
            );
        }
        match bad_result {
            Ok(stored) => {
                let id = stored[0].id;
                assert!(
                    all.iter().any(|ev| ev.id == id),
                    "an accepted bad event is readable"
                );
            }
            Err(err) => assert_eq!(
                err.status(),
                axum::http::StatusCode::BAD_REQUEST,
                "bad data is refused as bad input, not as an engine failure: {err}"
            ),
        }
    }
}

/// A purge racing with resumes: a read followed by a position check never shows a gap that
/// the floor does not own (the trim and the floor move together), and once purge returns the
/// floor covers every removed id. The race is caught by chance, so it runs many times.
async fn purge_raises_the_floor_with_the_trim(e: Arc<dyn Engine>) {
    let hash = new_event("mod_floor", "x", 0, "0").hash;
    let mut mine = Vec::new();
    // A race is caught by chance: three rounds of it.
    for round in 0..3 {
        for chunk in 0..6 {
            let stored = e
                .append(
                    (0..400)
                        .map(|i| {
                            let c = if i % 2 == 0 { "mod_floor" } else { "mod_else" };
                            new_event(c, "x", 0, &(chunk * 400 + i).to_string())
                        })
                        .collect(),
                )
                .await
                .expect("append");
            mine.extend(stored.iter().filter(|s| s.hash == hash).map(|s| s.id));
        }
        let purger = {
            let e = e.clone();
            tokio::spawn(async move { e.purge(now_secs() + 10).await })
        };
        let mut checks = 0;
        loop {
            let finished = purger.is_finished();
            // What a resume does: read after a cursor, then check the floor. Kept small so that
            // many resumes fall inside one purge.
            let cursor = e.position().await.expect("position").floor;
            let events = e
                .read(cursor, Some(std::slice::from_ref(&hash)), 4)
                .await
                .expect("read");
            let pos = e.position().await.expect("position");
            if let Some(&due) = mine.iter().find(|id| **id > cursor) {
                assert!(
                    events.first().map(|ev| ev.id) == Some(due) || due <= pos.floor,
                    "a resume after {cursor:?} got {:?} instead of {due:?}, and the floor is \
                     only {:?}: a silent gap",
                    events.first().map(|ev| ev.id),
                    pos.floor
                );
            }
            checks += 1;
            if finished {
                break;
            }
            // On a single-threaded runtime an engine that never waits would starve the purge.
            tokio::task::yield_now().await;
        }
        let removed = purger.await.expect("task").expect("purge");
        assert_eq!(
            removed, 2_400,
            "round {round}: every event was old enough ({checks} checks)"
        );
        let pos = e.position().await.expect("position");
        let last = *mine.last().expect("some");
        assert!(pos.floor >= last, "the floor covers every removed id");
    }
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

/// A cursor ahead of the engine's head in its epoch — what a client holds when the store went
/// back to a backup, whose ids above the head will be handed out again — is answered
/// `recovered: false` with the head, by `fetch` and at once by a long-poll's `wait`; the events
/// that then take those ids are delivered after it. A cursor ahead only of a hub that lags the
/// engine (a client coming from a faster node) resumes as usual.
async fn a_cursor_ahead_of_the_head_is_told_through_a_hub(e: Arc<dyn Engine>) {
    // Made before the appends, with no tail: a node that has not read them yet.
    let lagging = crate::hub::Hub::new(e.clone(), 10_000).await.expect("hub");
    let (hub, cancel) = hub_over(e.clone(), 10_000).await;
    let stored = e
        .append(
            (0..3)
                .map(|i| new_event("mod_ahead", "x", 0, &i.to_string()))
                .collect(),
        )
        .await
        .expect("append");
    let head = stored[2].id;
    hub_reaches(&hub, head).await;
    let hash = stored[0].hash.clone();
    let hashes = std::slice::from_ref(&hash);
    let epoch = hub.head().epoch;
    let at_head = crate::Cursor {
        epoch: epoch.clone(),
        id: head,
    };
    let ahead = crate::Cursor {
        epoch,
        id: EventId(head.0 + 3),
    };

    let batch = hub.fetch(hashes, &ahead, 100).await.expect("fetch");
    assert!(
        !batch.recovered,
        "a cursor ahead of the head is told, not answered as caught up: {batch:?}"
    );
    assert!(batch.events.is_empty());
    assert_eq!(batch.cursor, at_head, "it continues from the head");
    let cancel_wait = tokio_util::sync::CancellationToken::new();
    // A long-poll answers at once (its timeout would answer `recovered: true`).
    let waited = hub
        .wait(
            hashes,
            ahead.clone(),
            100,
            Duration::from_secs(30),
            &cancel_wait,
        )
        .await
        .expect("wait");
    assert!(!waited.recovered, "a long-poll is told too: {waited:?}");
    assert_eq!(waited.cursor, at_head);
    let behind = lagging.fetch(hashes, &at_head, 100).await.expect("fetch");
    assert!(
        behind.recovered,
        "a cursor ahead of a lagging node but not of the engine resumes: {behind:?}"
    );
    assert_eq!(behind.cursor, at_head);

    // A long-poll from the cursor given waits for the events that take the ids again.
    let waiter = {
        let hub = hub.clone();
        let (hash, cursor) = (hash.clone(), batch.cursor.clone());
        tokio::spawn(async move {
            let cancel = tokio_util::sync::CancellationToken::new();
            hub.wait(
                std::slice::from_ref(&hash),
                cursor,
                100,
                Duration::from_secs(30),
                &cancel,
            )
            .await
        })
    };
    let reused = e
        .append(
            (0..2)
                .map(|i| new_event("mod_ahead", "x", 0, &format!("\"again {i}\"")))
                .collect(),
        )
        .await
        .expect("append");
    let ids: Vec<EventId> = reused.iter().map(|s| s.id).collect();
    assert_eq!(
        ids,
        vec![EventId(head.0 + 1), EventId(head.0 + 2)],
        "the ids the cursor had passed are handed out"
    );
    let woken = waiter.await.expect("task").expect("wait");
    assert!(woken.recovered);
    assert_eq!(
        woken.events.first().map(|ev| ev.id),
        Some(ids[0]),
        "the long-poll gets the first event that took an id again"
    );
    hub_reaches(&hub, ids[1]).await;
    let resumed = hub.fetch(hashes, &batch.cursor, 100).await.expect("fetch");
    assert!(resumed.recovered);
    assert_eq!(
        resumed.events.iter().map(|ev| ev.id).collect::<Vec<_>>(),
        ids,
        "every event after the head given, once"
    );
    // The old cursor is still ahead (of the new head): told again, from the new head.
    let again = hub.fetch(hashes, &ahead, 100).await.expect("fetch");
    assert!(!again.recovered);
    assert_eq!(again.cursor.id, ids[1]);
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

/// How many channels a model-checked run uses ([`ModelOp`] names them `0..MODEL_CHANNELS`).
pub const MODEL_CHANNELS: usize = 4;

/// Random [`ModelOp`]s for a property test of an engine: appends of up to 7 events, reads after
/// any id with or without a channel filter, and now and then a purge.
pub fn model_op() -> impl proptest::strategy::Strategy<Value = ModelOp> {
    use proptest::prelude::*;
    prop_oneof![
        4 => prop::collection::vec((0..MODEL_CHANNELS, any::<u32>()), 0..8).prop_map(ModelOp::Append),
        4 => (
            any::<u64>(),
            prop::option::of(prop::collection::vec(0..MODEL_CHANNELS, 0..3)),
            1usize..12,
        )
            .prop_map(|(after, channels, limit)| ModelOp::Read { after, channels, limit }),
        1 => any::<bool>().prop_map(ModelOp::Purge),
    ]
}

/// The settings of the engines' property tests: 32 cases unless `PROPTEST_CASES` says
/// otherwise, and no failure files written into the source tree.
pub fn model_config() -> proptest::test_runner::Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(32);
    proptest::test_runner::Config {
        cases,
        failure_persistence: None,
        ..proptest::test_runner::Config::default()
    }
}

/// One step of a run checked against a model of the engine contract ([`check_against_model`]);
/// property tests generate sequences of them.
#[derive(Debug, Clone)]
pub enum ModelOp {
    /// Append one batch: per event, its channel (`0..MODEL_CHANNELS`) and a number that picks
    /// its payload.
    Append(Vec<(usize, u32)>),
    /// Read after an id (`after` modulo head + 3, so that ids past the head are tried too),
    /// of some channels only or of all, at most `limit` events.
    Read {
        /// Picks the id to read after.
        after: u64,
        /// The channels to read; `None` reads all.
        channels: Option<Vec<usize>>,
        /// At most this many events.
        limit: usize,
    },
    /// Purge every event (`true`: all are older than a time in the future) or none (`false`).
    Purge(bool),
}

/// The model's channels: hostile but valid text, so that the property run also checks
/// byte-exact storage.
fn model_channel(n: usize) -> (&'static str, &'static str) {
    match n % MODEL_CHANNELS {
        0 => ("plain", ""),
        1 => ("C:\\temp", "quote\"d \\ back"),
        2 => ("😀", "שלום e\u{301}"),
        _ => ("{\"a\":[1]}", "%s $1 ?"),
    }
}

/// The payload a [`ModelOp::Append`] number stands for.
fn model_payload(n: u32) -> String {
    match n % 4 {
        0 => n.to_string(),
        1 => format!(r#"{{"n":{n},"s":"\u0000\"\\\ud83d\ude00"}}"#),
        2 => format!(r#"[ {n} , "C:\\temp" ]"#),
        _ => format!(r#""{}""#, "é".repeat((n % 50) as usize)),
    }
}

/// Runs `ops` on `e` (a fresh, empty engine) and on a model of the contract, and panics at the
/// first difference: ids ascend and are never reused, reads answer exactly the model's events
/// after an id (filtered, limited, byte-exact), purge removes everything old and raises the
/// floor to the last removed id, the position's head and floor match after every step.
///
/// # Panics
/// On the first difference from the model.
pub async fn check_against_model(e: Arc<dyn Engine>, ops: &[ModelOp]) {
    let secret = Secret::from_bytes(b"conformance".to_vec());
    let channels: Vec<Channel> = (0..MODEL_CHANNELS)
        .map(|n| {
            let (area, details) = model_channel(n);
            Channel::new(5, "mod_model", area, n as i64, details).expect("a valid model channel")
        })
        .collect();
    let hashes: Vec<_> = channels.iter().map(|c| c.hash(&secret)).collect();
    // The model: retained events (id, channel, payload), the head and the floor.
    let mut retained: Vec<(EventId, usize, String)> = Vec::new();
    let (mut head, mut floor) = (EventId(0), EventId(0));
    for (step, op) in ops.iter().enumerate() {
        match op {
            ModelOp::Append(batch) => {
                let events = batch
                    .iter()
                    .map(|&(c, n)| NewEvent {
                        channel: channels[c].clone(),
                        hash: hashes[c].clone(),
                        payload: RawValue::from_string(model_payload(n)).expect("model JSON"),
                    })
                    .collect();
                let stored = e.append(events).await.expect("append");
                assert_eq!(
                    stored.len(),
                    batch.len(),
                    "step {step}: one event per input"
                );
                for (s, &(c, n)) in stored.iter().zip(batch) {
                    assert!(s.id > head, "step {step}: id {:?} not above {head:?}", s.id);
                    head = s.id;
                    retained.push((s.id, c, model_payload(n)));
                }
            }
            ModelOp::Read {
                after,
                channels: only,
                limit,
            } => {
                let after = EventId(i64::try_from(*after % (head.0 as u64 + 3)).unwrap_or(0));
                let filter: Option<Vec<_>> = only
                    .as_ref()
                    .map(|o| o.iter().map(|&c| hashes[c].clone()).collect());
                let got = e
                    .read(after, filter.as_deref(), *limit)
                    .await
                    .expect("read");
                let expect: Vec<&(EventId, usize, String)> = retained
                    .iter()
                    .filter(|(id, c, _)| *id > after && only.as_ref().is_none_or(|o| o.contains(c)))
                    .take(*limit)
                    .collect();
                let got_ids: Vec<EventId> = got.iter().map(|g| g.id).collect();
                let expect_ids: Vec<EventId> = expect.iter().map(|x| x.0).collect();
                assert_eq!(
                    got_ids, expect_ids,
                    "step {step}: read after {after:?} {only:?}"
                );
                for (g, (_, c, payload)) in got.iter().zip(expect) {
                    let (area, details) = model_channel(*c);
                    assert_eq!(g.hash, hashes[*c], "step {step}: channel of {:?}", g.id);
                    assert_eq!(
                        (g.area.as_str(), g.channeldetails.as_str(), g.itemid),
                        (area, details, *c as i64),
                        "step {step}: channel fields byte-exact"
                    );
                    assert_eq!(g.payload.get(), payload, "step {step}: payload byte-exact");
                }
            }
            ModelOp::Purge(all) => {
                let before = if *all {
                    now_secs() + 10
                } else {
                    now_secs() - 3_600
                };
                let removed = e.purge(before).await.expect("purge");
                if *all {
                    assert_eq!(removed, retained.len() as u64, "step {step}: purge all");
                    if let Some(last) = retained.last() {
                        floor = last.0;
                    }
                    retained.clear();
                } else {
                    assert_eq!(removed, 0, "step {step}: young events stay");
                }
            }
        }
        let pos = e.position().await.expect("position");
        assert_eq!(
            (pos.head, pos.floor),
            (head, floor),
            "step {step}: head and floor"
        );
    }
}

/// Internals the crate's own tests and benches reach into. Not API: it changes with them.
pub mod internal {
    pub use crate::hub::Hub;
    pub use crate::token::{now_secs, sign, verify, TokenKind};
    pub use crate::transport::write_timeout::{PeerAddr, WriteTimeoutListener};

    use std::sync::Arc;

    use crate::engine::Engine;
    use crate::{Realtime, Secret};

    /// The node's hub.
    pub fn hub(rt: &Realtime) -> &Arc<Hub> {
        rt.hub()
    }

    /// The node's engine.
    pub fn engine(rt: &Realtime) -> &Arc<dyn Engine> {
        rt.engine()
    }

    /// The node's secret.
    pub fn secret(rt: &Realtime) -> &Secret {
        rt.secret()
    }
}
