//! Connection and rate limits (issue 9): 429 `too_many_connections` / `rate_limited` with
//! `Retry-After`, WebSocket close 1013 and `reply` errors, and forwarding headers believed only
//! from `server.trusted_proxies`.

mod served;

use std::time::Duration;

use realtime::testing::{sse, ws};
use serde_json::{json, Value};
use served::{channel, config, poll_body, Served, API_KEY};

fn error_code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("")
}

/// Opens an SSE stream with extra headers; answers (status, Retry-After, the response kept open).
async fn open_sse(
    s: &Served,
    page: &Value,
    headers: &[(&str, &str)],
) -> (u16, Option<String>, reqwest::Response) {
    let q = sse::query(page, None);
    let mut req = s.http.get(format!("{}/sse?{q}", s.url));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = req.send().await.expect("sse request");
    let retry = res
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    (res.status().as_u16(), retry, res)
}

#[tokio::test]
async fn a_user_over_its_connections_gets_429_on_sse_and_poll_and_1013_on_websocket() {
    let s = Served::start(config(|c| {
        c.limits.connections_per_user = 2;
        c.poll.request_timeout_secs = 5;
    }))
    .await;
    let page = s.page(5, json!([channel("mod_a", "conns")])).await;
    let (a, _, first) = open_sse(&s, &page, &[]).await;
    let (b, _, _second) = open_sse(&s, &page, &[]).await;
    assert_eq!((a, b), (200, 200));

    let (status, retry, res) = open_sse(&s, &page, &[]).await;
    assert_eq!(status, 429);
    assert!(retry.is_some_and(|r| r.parse::<u64>().is_ok_and(|n| n >= 1)));
    let body: Value = res.json().await.expect("json error");
    assert_eq!(error_code(&body), "too_many_connections", "{body}");

    let ut = page["usertoken"].as_str().expect("ut");
    let (status, retry, body) = s
        .post("/poll", ut, &poll_body(&page, &page["cursor"]), &[])
        .await;
    assert_eq!((status, error_code(&body)), (429, "too_many_connections"));
    assert!(retry.is_some());

    let mut sock = ws::connect(&s.url).await;
    ws::send(&mut sock, ws::subscribe_frame(&page, &page["cursor"])).await;
    let f = ws::frame(&mut sock).await;
    assert_eq!(
        (f["type"].as_str(), error_code(&f)),
        (Some("error"), "too_many_connections"),
        "{f}"
    );
    match ws::next(&mut sock, Duration::from_secs(5)).await {
        ws::Next::Closed(Some(code)) => assert_eq!(code, 1013),
        other => panic!("expected close 1013, got {other:?}"),
    }

    // Another user is not affected; a closed stream frees its place.
    let other = s.page(6, json!([channel("mod_a", "conns")])).await;
    assert_eq!(open_sse(&s, &other, &[]).await.0, 200);
    drop(first);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, _, _res) = open_sse(&s, &page, &[]).await;
        if status == 200 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the closed stream's place never came back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    s.stop().await;
}

#[tokio::test]
async fn a_waiting_long_poll_counts_as_a_connection() {
    let s = Served::start(config(|c| {
        c.limits.connections_per_user = 1;
        c.poll.request_timeout_secs = 3;
    }))
    .await;
    let page = s.page(5, json!([channel("mod_a", "longpoll")])).await;
    let ut = page["usertoken"].as_str().expect("ut").to_string();
    let body = poll_body(&page, &page["cursor"]);
    let waiting = {
        let (http, url, ut, body) = (s.http.clone(), s.url.clone(), ut.clone(), body.clone());
        tokio::spawn(async move {
            http.post(format!("{url}/poll"))
                .bearer_auth(ut)
                .json(&body)
                .send()
                .await
                .map(|r| r.status().as_u16())
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, _, answer) = s.post("/poll", &ut, &body, &[]).await;
    assert_eq!((status, error_code(&answer)), (429, "too_many_connections"));
    assert_eq!(waiting.await.expect("joined").expect("answered"), 200);
    let (status, _, _) = s.post("/poll", &ut, &body, &[]).await;
    assert_eq!(status, 200, "the finished poll released its place");
    s.stop().await;
}

#[tokio::test]
async fn per_address_limits_refuse_the_upgrade_and_believe_x_forwarded_for_only_from_a_trusted_proxy(
) {
    // Nobody trusted: every request comes from 127.0.0.1, whatever it claims.
    let s = Served::start(config(|c| c.limits.connections_per_ip = 2)).await;
    let ch = channel("mod_a", "ip");
    let (p1, p2, p3) = (
        s.page(1, json!([ch])).await,
        s.page(2, json!([ch])).await,
        s.page(3, json!([ch])).await,
    );
    let (a, _, _k1) = open_sse(&s, &p1, &[("x-forwarded-for", "203.0.113.1")]).await;
    let (b, _, _k2) = open_sse(&s, &p2, &[("x-forwarded-for", "203.0.113.2")]).await;
    assert_eq!((a, b), (200, 200));
    let (c, retry, _) = open_sse(&s, &p3, &[("x-forwarded-for", "203.0.113.3")]).await;
    assert_eq!(
        c, 429,
        "a forged X-Forwarded-For escaped the per-address limit"
    );
    assert!(retry.is_some());
    // The WebSocket upgrade is refused before it happens.
    let url = format!("{}/ws", s.url.replacen("http://", "ws://", 1));
    match tokio_tungstenite::connect_async(url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => {
            assert_eq!(res.status().as_u16(), 429);
            assert!(res.headers().contains_key("retry-after"));
        }
        Err(e) => panic!("expected 429, got {e}"),
        Ok(_) => panic!("the upgrade over the per-address limit was accepted"),
    }
    s.stop().await;

    // Behind a trusted proxy the client's own address counts.
    let s = Served::start(config(|c| {
        c.limits.connections_per_ip = 1;
        c.server.trusted_proxies = vec!["127.0.0.0/8".into()];
    }))
    .await;
    let (p1, p2, p3) = (
        s.page(1, json!([ch])).await,
        s.page(2, json!([ch])).await,
        s.page(3, json!([ch])).await,
    );
    let (a, _, _k1) = open_sse(&s, &p1, &[("x-forwarded-for", "203.0.113.1")]).await;
    let (b, _, _k2) = open_sse(&s, &p2, &[("x-forwarded-for", "203.0.113.2")]).await;
    assert_eq!((a, b), (200, 200));
    let (c, _, _) = open_sse(&s, &p3, &[("x-forwarded-for", "198.51.100.7, 203.0.113.1")]).await;
    assert_eq!(
        c, 429,
        "the same client behind the proxy was not counted as one"
    );
    s.stop().await;
}

#[tokio::test]
async fn x_forwarded_proto_and_host_shape_the_page_url_only_from_a_trusted_proxy() {
    let forwarded = [
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "evil.example"),
    ];
    let body = json!({"user": 1, "channels": [channel("mod_a", "url")]});
    let s = Served::start(config(|_| {})).await;
    let (status, _, page) = s.post("/api/page", API_KEY, &body, &forwarded).await;
    assert_eq!(status, 200);
    assert_eq!(
        page["url"], s.url,
        "forwarding headers from anyone were believed"
    );
    s.stop().await;

    let s = Served::start(config(|c| {
        c.server.trusted_proxies = vec!["127.0.0.1".into()]
    }))
    .await;
    let (status, _, page) = s.post("/api/page", API_KEY, &body, &forwarded).await;
    assert_eq!(status, 200);
    assert_eq!(page["url"], "https://evil.example");
    s.stop().await;
}

#[tokio::test]
async fn sends_over_the_rate_get_429_over_http_and_a_rate_limited_reply_over_websocket() {
    let s = Served::start(config(|c| {
        c.rate.send_per_sec = 1;
        c.rate.send_burst = 3;
    }))
    .await;
    s.rt.handle("mod_echo", |_ctx, payload| async move {
        Ok(json!({"echo": payload}))
    });
    let page = s.page(5, json!([channel("mod_echo", "rate")])).await;
    let ut = page["usertoken"].as_str().expect("ut");
    let send = json!({"component": "mod_echo", "payload": 1});
    for _ in 0..3 {
        let (status, _, body) = s.post("/send", ut, &send, &[]).await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, retry, body) = s.post("/send", ut, &send, &[]).await;
    assert_eq!((status, error_code(&body)), (429, "rate_limited"), "{body}");
    assert_eq!(retry.as_deref(), Some("1"));

    // The WebSocket shares the user's bucket: a send gets a reply with the error, and the
    // connection stays.
    let mut sock = ws::connect(&s.url).await;
    ws::send(&mut sock, ws::subscribe_frame(&page, &page["cursor"])).await;
    assert_eq!(ws::frame(&mut sock).await["type"], "recovered");
    ws::send(
        &mut sock,
        json!({"type": "send", "id": 1, "component": "mod_echo", "payload": 2}),
    )
    .await;
    let reply = ws::frame(&mut sock).await;
    assert_eq!(
        (reply["type"].as_str(), reply["id"].as_i64()),
        (Some("reply"), Some(1))
    );
    assert_eq!(error_code(&reply), "rate_limited", "{reply}");
    ws::send(&mut sock, json!({"type": "ping"})).await;
    assert_eq!(ws::frame(&mut sock).await["type"], "pong");
    // After the refill a send goes through again.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    ws::send(
        &mut sock,
        json!({"type": "send", "id": 2, "component": "mod_echo", "payload": 3}),
    )
    .await;
    let reply = ws::frame(&mut sock).await;
    assert_eq!(reply["response"], json!({"echo": 3}), "{reply}");
    s.stop().await;
}

#[tokio::test]
async fn notify_over_the_rate_of_its_api_key_gets_429_and_appends_nothing() {
    let s = Served::start(config(|c| {
        c.rate.notify_per_sec = 1;
        c.rate.notify_burst = 2;
    }))
    .await;
    let ch = channel("mod_a", "notify");
    let one = json!({"channel": ch, "payload": 1});
    for _ in 0..2 {
        assert_eq!(s.post("/api/notify", API_KEY, &one, &[]).await.0, 200);
    }
    let (status, retry, body) = s.post("/api/notify", API_KEY, &one, &[]).await;
    assert_eq!((status, error_code(&body)), (429, "rate_limited"), "{body}");
    assert!(retry.is_some());
    let (status, _, st) = {
        let res = s
            .http
            .get(format!("{}/api/status", s.url))
            .bearer_auth(API_KEY)
            .send()
            .await
            .expect("status");
        (
            res.status().as_u16(),
            (),
            res.json::<Value>().await.expect("json"),
        )
    };
    assert_eq!(status, 200);
    assert_eq!(st["head"], 2, "a refused notify appended: {st}");
    // A wrong key is refused as such, not counted.
    let (status, _, body) = s.post("/api/notify", "not-a-key", &one, &[]).await;
    assert_eq!((status, error_code(&body)), (401, "invalid_api_key"));
    s.stop().await;
}
