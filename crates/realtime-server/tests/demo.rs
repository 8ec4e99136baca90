//! The demo page's server side: the page and its config, a background run of events, the time
//! endpoint, the built-in send handler (all on the demo node, under `/demo`), and the setting
//! that turns it off.

mod common;

use common::Server;
use serde_json::{json, Value};

fn page_config(html: &str) -> Value {
    let start = html
        .find(r#"id="realtime-page-config">"#)
        .expect("the config element")
        + 26;
    let end = start + html[start..].find("</script>").expect("its end");
    serde_json::from_str(&html[start..end].replace("<\\/", "</")).expect("config JSON")
}

#[tokio::test]
async fn the_demo_page_runs_events_and_answers_sends() {
    let (_dir, server) = Server::fresh(&[("REALTIME_API_KEY", "k")]);
    let http = reqwest::Client::new();
    let html = http
        .get(format!("{}/demo", server.url))
        .send()
        .await
        .expect("demo")
        .text()
        .await
        .expect("html");
    let config = page_config(&html);
    assert_eq!(config["url"], format!("{}/demo", server.url));
    assert_eq!(config["subscriptions"][0]["component"], "tool_realtime");
    assert_eq!(config["subscriptions"][0]["area"], "test");
    let ut = config["usertoken"].as_str().expect("usertoken").to_string();

    let time: Value = http
        .get(format!("{}/demo/time", server.url))
        .send()
        .await
        .expect("time")
        .json()
        .await
        .expect("json");
    assert!(time["time"].as_i64().expect("ms") > 1_700_000_000_000);

    let res = http
        .post(format!("{}/demo/events", server.url))
        .bearer_auth(&ut)
        .json(&json!({"count": 5, "delay_ms": 20, "runid": "r1"}))
        .send()
        .await
        .expect("run");
    assert_eq!(res.status(), 202);
    let mut seqs = Vec::new();
    let mut cursor = config["cursor"].clone();
    let sub = &config["subscriptions"][0];
    while seqs.len() < 5 {
        let body: Value = http
            .post(format!("{}/demo/poll", server.url))
            .bearer_auth(&ut)
            .json(&json!({"subscriptions": [{"channel": sub["channel"], "token": sub["token"]}], "cursor": cursor}))
            .send()
            .await
            .expect("poll")
            .json()
            .await
            .expect("json");
        for e in body["events"].as_array().expect("events") {
            assert_eq!(e["payload"]["runid"], "r1");
            seqs.push(e["payload"]["seq"].as_i64().expect("seq"));
        }
        cursor = body["cursor"].clone();
    }
    assert_eq!(seqs, vec![1, 2, 3, 4, 5]);

    let bad = http
        .post(format!("{}/demo/events", server.url))
        .bearer_auth(&ut)
        .json(&json!({"count": 0, "runid": "x"}))
        .send()
        .await
        .expect("run");
    assert_eq!(bad.status(), 400);
    let anon = http
        .post(format!("{}/demo/events", server.url))
        .json(&json!({"count": 1, "runid": "x"}))
        .send()
        .await
        .expect("run");
    assert_eq!(anon.status(), 401);

    let answer: Value = http
        .post(format!("{}/demo/send", server.url))
        .bearer_auth(&ut)
        .json(&json!({"component": "tool_realtime", "payload": {"senttime": 123}}))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(answer["response"]["echo"], json!({"senttime": 123}));
    assert!(answer["response"]["receivedtime"].as_i64().expect("ms") > 0);
}

#[tokio::test]
async fn the_demo_can_be_turned_off() {
    let (_dir, server) =
        Server::fresh(&[("REALTIME_API_KEY", "k"), ("REALTIME_SERVER_DEMO", "off")]);
    let res = reqwest::get(format!("{}/demo", server.url))
        .await
        .expect("get");
    assert_eq!(res.status(), 404);
}
