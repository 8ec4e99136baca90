//! Send to server: a Rust handler in library mode, a webhook in server mode.

mod common;

use common::{channel, config, TestServer};
use realtime::HandlerError;
use serde_json::{json, Value};

async fn send(s: &TestServer, usertoken: &str, component: &str, payload: Value) -> (u16, Value) {
    s.post(
        "/send",
        Some(usertoken),
        json!({"component": component, "payload": payload}).to_string(),
    )
    .await
}

#[tokio::test]
async fn a_rust_handler_runs_as_the_sending_user() {
    let s = TestServer::start(config(|_| {})).await;
    s.rt.handle("mod_echo", |ctx, payload| async move {
        if payload == json!("refuse me") {
            return Err(HandlerError::bad_request("no thanks"));
        }
        Ok(json!({"user": ctx.user, "component": ctx.component, "echo": payload}))
    });
    let page = s.page(42, json!([channel("mod_echo", "x", 0)])).await;
    let ut = page["usertoken"].as_str().expect("usertoken");
    let (st, body) = send(&s, ut, "mod_echo", json!({"n": 1})).await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(
        body,
        json!({"response": {"user": 42, "component": "mod_echo", "echo": {"n": 1}}})
    );

    let other = s.page(7, json!([channel("mod_echo", "x", 0)])).await;
    let (_, body) = send(
        &s,
        other["usertoken"].as_str().expect("usertoken"),
        "mod_echo",
        json!(null),
    )
    .await;
    assert_eq!(body["response"]["user"], 7);

    let (st, body) = send(&s, ut, "mod_echo", json!("refuse me")).await;
    assert_eq!(
        (st, body["error"]["code"].as_str()),
        (400, Some("handler_refused"))
    );
    let (st, body) = send(&s, ut, "mod_nobody", json!(1)).await;
    assert_eq!(
        (st, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    let (st, _) = send(&s, "v1.42.99999999999.forged", "mod_echo", json!(1)).await;
    assert_eq!(st, 403);
    let (st, _) = s
        .post(
            "/send",
            None,
            json!({"component": "mod_echo", "payload": 1}).to_string(),
        )
        .await;
    assert_eq!(st, 401);
    let (st, _) = s
        .post(
            "/send",
            Some(ut),
            json!({"component": "mod_echo", "payload": 1, "x": 2}).to_string(),
        )
        .await;
    assert_eq!(st, 400);
    let (st, _) = send(&s, ut, "mod_echo", json!("z".repeat(70_000))).await;
    assert_eq!(st, 413);
    s.stop().await;
}

/// Webhooks need the `webhooks` feature (on by default).
#[cfg(feature = "webhooks")]
mod webhook {
    use std::time::Duration;

    use axum::body::Bytes;
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::post;
    use axum::{Json, Router};
    use hmac::{Hmac, Mac};
    use serde_json::{json, Value};
    use sha2::Sha256;

    use super::common::{channel, config, secret, TestServer};
    use super::send;

    /// A little application: verifies the signature as an app in any language would, and answers.
    async fn webhook_app() -> (String, tokio::task::JoinHandle<()>) {
        async fn hook(headers: HeaderMap, body: Bytes) -> Result<Json<Value>, StatusCode> {
            let ts = headers
                .get("x-realtime-timestamp")
                .and_then(|v| v.to_str().ok())
                .ok_or(StatusCode::UNAUTHORIZED)?;
            let sig = headers
                .get("x-realtime-signature")
                .and_then(|v| v.to_str().ok())
                .ok_or(StatusCode::UNAUTHORIZED)?;
            let mut mac = Hmac::<Sha256>::new_from_slice(secret().as_bytes())
                .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
            mac.update(format!("{ts}.").as_bytes());
            mac.update(&body);
            let want = hex::decode(sig.strip_prefix("v1=").ok_or(StatusCode::UNAUTHORIZED)?)
                .map_err(|_| StatusCode::UNAUTHORIZED)?;
            mac.verify_slice(&want)
                .map_err(|_| StatusCode::UNAUTHORIZED)?;
            let age = realtime::engine::now_secs()
                - ts.parse::<i64>().map_err(|_| StatusCode::UNAUTHORIZED)?;
            if !(-60..=300).contains(&age) {
                return Err(StatusCode::UNAUTHORIZED);
            }
            let msg: Value = serde_json::from_slice(&body).map_err(|_| StatusCode::BAD_REQUEST)?;
            Ok(Json(
                json!({"receivedtime": 1, "user": msg["user"], "component": msg["component"], "echo": msg["payload"], "verified": true}),
            ))
        }
        let app = Router::new()
            .route("/hook", post(hook))
            .route(
                "/slow",
                post(|| async {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    Json(json!("too late"))
                }),
            )
            .route(
                "/broken",
                post(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "boom") }),
            )
            .route("/notjson", post(|| async { "hello" }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (url, task)
    }

    #[tokio::test]
    async fn a_webhook_answers_signed_requests_and_its_failures_are_clear() {
        let (app, task) = webhook_app().await;
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            format!("http://{}/hook", l.local_addr().expect("addr"))
        };
        let s = TestServer::start(config(|c| {
            c.webhooks.timeout_ms = 500;
            let w = &mut c.webhooks.components;
            w.insert("mod_hook".into(), format!("{app}/hook"));
            w.insert("mod_slow".into(), format!("{app}/slow"));
            w.insert("mod_broken".into(), format!("{app}/broken"));
            w.insert("mod_notjson".into(), format!("{app}/notjson"));
            w.insert("mod_down".into(), closed);
        }))
        .await;
        let page = s.page(42, json!([channel("mod_hook", "x", 0)])).await;
        let ut = page["usertoken"].as_str().expect("usertoken");

        let (st, body) = send(&s, ut, "mod_hook", json!({"senttime": 123})).await;
        assert_eq!(st, 200, "{body}");
        assert_eq!(body["response"]["verified"], true);
        assert_eq!(body["response"]["user"], 42);
        assert_eq!(body["response"]["component"], "mod_hook");
        assert_eq!(body["response"]["echo"], json!({"senttime": 123}));

        let (st, body) = send(&s, ut, "mod_down", json!(1)).await;
        assert_eq!(
            (st, body["error"]["code"].as_str()),
            (502, Some("webhook_failed")),
            "{body}"
        );
        let (st, body) = send(&s, ut, "mod_slow", json!(1)).await;
        assert_eq!(
            (st, body["error"]["code"].as_str()),
            (504, Some("webhook_timeout")),
            "{body}"
        );
        let (st, body) = send(&s, ut, "mod_broken", json!(1)).await;
        assert_eq!(
            (st, body["error"]["code"].as_str()),
            (502, Some("webhook_failed"))
        );
        let (st, body) = send(&s, ut, "mod_notjson", json!(1)).await;
        assert_eq!(
            (st, body["error"]["code"].as_str()),
            (502, Some("webhook_failed"))
        );
        s.stop().await;
        task.abort();
    }
}
