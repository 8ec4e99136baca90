//! The Redis engine against the shared conformance suite, each engine under a key prefix of its
//! own (deleted afterwards), and the epoch change a Redis restart without persistence causes.

use std::sync::Arc;

use realtime::engine::Engine;
use realtime::testing::{engine_conformance, new_event};
use realtime::EventId;
use realtime_redis::{delete_prefix, RedisEngine};

fn base_url() -> String {
    std::env::var("REALTIME_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

fn prefix() -> String {
    format!("rt_test_{}", realtime::random_hex(6))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_engine_conforms() {
    let prefixes = std::sync::Mutex::new(Vec::new());
    engine_conformance(|| async {
        let p = prefix();
        prefixes.lock().expect("lock").push(p.clone());
        let url = format!("{}?prefix={p}", base_url());
        Arc::new(
            RedisEngine::connect(&url)
                .await
                .expect("Redis on 127.0.0.1:6379"),
        ) as Arc<dyn Engine>
    })
    .await;
    for p in prefixes.into_inner().expect("lock") {
        delete_prefix(&base_url(), &p).await.expect("cleanup");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_store_gets_a_new_epoch_and_reads_of_it_fail_until_noticed() {
    let p = prefix();
    let url = format!("{}?prefix={p}", base_url());
    let engine = RedisEngine::connect(&url).await.expect("connect");
    engine
        .append(vec![new_event("mod_e", "x", 0, "1")])
        .await
        .expect("append");
    let before = engine.position().await.expect("position");
    // What a restart without persistence does to the keys.
    delete_prefix(&base_url(), &p).await.expect("delete");
    let other = RedisEngine::connect(&url).await.expect("another node");
    other
        .append(vec![new_event("mod_e", "x", 0, "2")])
        .await
        .expect("append after the loss");
    // The first engine must not take the new store's event for one of the old epoch.
    assert!(
        engine.read(EventId::ZERO, None, 10).await.is_err(),
        "a read across an epoch change fails"
    );
    let after = engine.position().await.expect("position");
    assert_ne!(after.epoch, before.epoch, "a lost store has a new epoch");
    assert_eq!(
        engine
            .read(EventId::ZERO, None, 10)
            .await
            .expect("read in the new epoch")
            .len(),
        1
    );
    delete_prefix(&base_url(), &p).await.expect("cleanup");
}

/// Issue 9: one unreadable entry (written by hand, or by an older version) stopped every read
/// after it, on every node. Entries are written here with raw `XADD`, as `redis-cli` would:
/// one an older version wrote (readable, but not in the channel index) and one that is not
/// JSON at all. The unreadable one is skipped; everything else is read, by the hub's tail and
/// by a resume filtered by channel, and the purge removes it with its run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_entry_is_skipped_and_never_wedges_the_tail() {
    let p = prefix();
    let client = redis::Client::open(base_url()).expect("redis url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("Redis on 127.0.0.1:6379");
    let channel = new_event("mod_legacy", "C:\\temp", 0, "1");
    let hash = channel.hash.clone();
    let legacy = serde_json::json!({
        "hash": hash.as_str(), "contextid": 1, "component": "mod_legacy", "area": "C:\\temp",
        "itemid": 0, "channeldetails": "", "payload": {"old": "\"quoted\""}, "timecreated": 0
    })
    .to_string();
    let _: () = redis::pipe()
        .cmd("SET")
        .arg(format!("{p}:epoch"))
        .arg("legacyepoch")
        .ignore()
        .cmd("SET")
        .arg(format!("{p}:head"))
        .arg(2)
        .ignore()
        .cmd("XADD")
        .arg(format!("{p}:events"))
        .arg("0-1")
        .arg("e")
        .arg(&legacy)
        .ignore()
        .cmd("XADD")
        .arg(format!("{p}:events"))
        .arg("0-2")
        .arg("e")
        .arg("{\"hash\": not json")
        .ignore()
        .query_async(&mut conn)
        .await
        .expect("raw XADD");

    let url = format!("{}?prefix={p}", base_url());
    let engine: Arc<dyn Engine> = Arc::new(RedisEngine::connect(&url).await.expect("connect"));
    let hub = realtime::testing::internal::Hub::new(engine.clone(), 10_000)
        .await
        .expect("hub");
    // The hub starts at the head; a client holding a cursor from before both entries resumes.
    let old = realtime::Cursor {
        epoch: realtime::Epoch::new("legacyepoch").expect("an epoch"),
        id: EventId::ZERO,
    };
    let cancel = tokio_util::sync::CancellationToken::new();
    tokio::spawn(
        hub.clone()
            .run_tail(std::time::Duration::from_millis(50), cancel.clone()),
    );
    let stored = engine
        .append(vec![
            new_event("mod_legacy", "C:\\temp", 0, "\"after\""),
            new_event("mod_other", "x", 0, "2"),
        ])
        .await
        .expect("append after the unreadable entry");
    assert_eq!(stored[0].id, EventId::new(3).expect("an event id"));

    let all = engine
        .read(EventId::ZERO, None, 100)
        .await
        .expect("read all");
    assert_eq!(
        all.iter().map(|e| e.id.get()).collect::<Vec<_>>(),
        vec![1, 3, 4],
        "the unreadable entry 2 is skipped, the rest is read"
    );
    assert_eq!(all[0].payload.get(), r#"{"old":"\"quoted\""}"#);
    assert_eq!(all[0].area, "C:\\temp");
    let mine = engine
        .read(EventId::ZERO, Some(std::slice::from_ref(&hash)), 100)
        .await
        .expect("read by channel");
    assert_eq!(
        mine.iter().map(|e| e.id.get()).collect::<Vec<_>>(),
        vec![1, 3],
        "a resume by channel finds the unindexed older entry and the indexed new one"
    );

    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while hub.head().id < EventId::new(4).expect("an event id") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the tail is wedged at {:?}",
            hub.head()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(hub.is_healthy(), "the node stays healthy");
    let batch = hub
        .fetch(std::slice::from_ref(&hash), &old, 100)
        .await
        .expect("a resume from before the unreadable entry");
    assert!(batch.recovered);
    assert_eq!(
        batch.events.iter().map(|e| e.id.get()).collect::<Vec<_>>(),
        vec![1, 3]
    );
    cancel.cancel();

    // An unreadable entry that is in the channel index too: a read by channel of one event
    // still finds the next readable one instead of answering short (a short answer would tell
    // the hub that nothing more is there).
    let _: () = redis::pipe()
        .cmd("INCR")
        .arg(format!("{p}:head"))
        .ignore()
        .cmd("XADD")
        .arg(format!("{p}:events"))
        .arg("0-5")
        .arg("e")
        .arg("[]")
        .ignore()
        .cmd("ZADD")
        .arg(format!("{p}:ch:{}", hash.as_str()))
        .arg(5)
        .arg(5)
        .ignore()
        .query_async(&mut conn)
        .await
        .expect("raw XADD");
    let next = engine
        .append(vec![new_event("mod_legacy", "C:\\temp", 0, "6")])
        .await
        .expect("append");
    assert_eq!(next[0].id, EventId::new(6).expect("an event id"));
    let one = engine
        .read(
            EventId::new(3).expect("an event id"),
            Some(std::slice::from_ref(&hash)),
            1,
        )
        .await
        .expect("read by channel past an unreadable indexed entry");
    assert_eq!(one.iter().map(|e| e.id.get()).collect::<Vec<_>>(), vec![6]);

    assert_eq!(
        engine
            .purge(realtime::engine::now_secs() + 10)
            .await
            .expect("purge"),
        6,
        "the unreadable entry goes with its run"
    );
    assert_eq!(
        engine.position().await.expect("position").floor,
        EventId::new(6).expect("an event id")
    );
    delete_prefix(&base_url(), &p).await.expect("cleanup");
}
