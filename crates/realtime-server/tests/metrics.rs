//! `/metrics` in Prometheus format, and what it proves: polls answered from the hub's cache
//! make no engine read (only the tail reads the engine, once per batch of new events).

mod common;

use common::{page, poll, Server};
use serde_json::json;

fn value(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn metrics_count_and_polls_make_no_engine_reads() {
    let (_dir, server) = Server::fresh(&[
        ("REALTIME_API_KEY", "k"),
        ("REALTIME_POLL_REQUEST_TIMEOUT_SECS", "0"),
    ]);
    let http = reqwest::Client::new();
    let channel = json!({"contextid": 1, "component": "mod_m", "area": "x"});
    let p = page(&http, &server.url, "k", 1, channel.clone()).await;
    let scrape = || async {
        http.get(format!("{}/metrics", server.url))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text")
    };

    let mut cursor = p["cursor"].clone();
    let mut received = 0;
    for i in 0..20 {
        let res = http
            .post(format!("{}/api/notify", server.url))
            .bearer_auth("k")
            .json(&json!({"channel": channel, "payload": i}))
            .send()
            .await
            .expect("notify");
        assert_eq!(res.status(), 200);
        // Poll until it is there (short polling: each poll answers at once).
        loop {
            let body = poll(&http, &server.url, &p, &cursor).await;
            cursor = body["cursor"].clone();
            let n = body["events"].as_array().expect("events").len();
            received += n;
            if n > 0 {
                break;
            }
        }
    }
    // 100 more polls with nothing new.
    for _ in 0..100 {
        let body = poll(&http, &server.url, &p, &cursor).await;
        assert_eq!(body["events"], json!([]));
    }
    let m = scrape().await;
    assert_eq!(received, 20);
    assert_eq!(value(&m, "realtime_events_notified_total"), 20.0, "{m}");
    assert!(value(&m, "realtime_polls_total") >= 120.0);
    assert_eq!(
        value(&m, "realtime_events_delivered_total{transport=\"poll\"}"),
        20.0
    );
    assert_eq!(
        value(&m, "realtime_engine_reads_total{path=\"resume\"}"),
        0.0,
        "polls read the cache, never the engine:\n{m}"
    );
    assert!(m.contains("# HELP realtime_engine_reads_total"));
}
