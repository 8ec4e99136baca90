//! What one resume filtered by channel costs over a long retained stream (issue 9): a figure,
//! not a timed assertion. Run with
//! `cargo test -p realtime-redis --release --test resume_cost -- --ignored --nocapture`.

use std::time::Instant;

use realtime::engine::Engine;
use realtime::testing::new_event;
use realtime::EventId;
use realtime_redis::{delete_prefix, RedisEngine};

fn base_url() -> String {
    std::env::var("REALTIME_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: 100k events; run by hand with --ignored --nocapture"]
async fn one_filtered_resume_over_100k_retained_events() {
    let p = format!("rt_test_{}", realtime::random_hex(6));
    let engine = RedisEngine::connect(&format!("{}?prefix={p}", base_url()))
        .await
        .expect("Redis on 127.0.0.1:6379");
    let quiet = new_event("mod_quiet", "x", 0, "1");
    let quiet_hash = quiet.hash.clone();
    engine.append(vec![quiet]).await.expect("append");
    for chunk in 0..100 {
        let batch = (0..1_000)
            .map(|i| {
                new_event(
                    "mod_busy",
                    "x",
                    i,
                    &format!("{{\"n\":{}}}", chunk * 1_000 + i),
                )
            })
            .collect();
        engine.append(batch).await.expect("append");
    }
    let last = new_event("mod_quiet", "x", 0, "2");
    engine.append(vec![last]).await.expect("append");
    let mut times = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let got = engine
            .read(
                EventId::new(1).expect("an event id"),
                Some(std::slice::from_ref(&quiet_hash)),
                100,
            )
            .await
            .expect("read");
        times.push(t.elapsed());
        assert_eq!(got.len(), 1, "the quiet channel's one later event");
        assert_eq!(got[0].id, EventId::new(100_002).expect("an event id"));
    }
    times.sort();
    println!(
        "filtered resume over 100,001 retained events: median {:?}, min {:?}, max {:?}",
        times[2], times[0], times[4]
    );
    delete_prefix(&base_url(), &p).await.expect("cleanup");
}
