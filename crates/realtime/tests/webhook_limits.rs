//! Webhooks under hostile or broken answers (issue 9): a huge answer is cut off at
//! `webhooks.max_response_bytes` and not relayed; a redirect is not followed (the signed body
//! goes nowhere but the configured URL); the page never sees the webhook's URL or the cause.
//! The webhook is a real HTTP server on a loopback port.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use common::{channel, config, TestServer};
use serde_json::{json, Value};

/// The webhook application: `/huge` answers 8 MiB of valid JSON (streamed, no length),
/// `/huge-known` the same with a `Content-Length`, `/redirect` a 307 to `/target`, which
/// counts what reaches it; `/small` answers normally.
async fn webhook_app(reached: Arc<AtomicUsize>) -> (String, tokio::task::JoinHandle<()>) {
    fn huge_json() -> Vec<u8> {
        let mut body = b"[\"".to_vec();
        body.extend(std::iter::repeat_n(b'x', 8 * 1024 * 1024));
        body.extend_from_slice(b"\"]");
        body
    }
    let app = Router::new()
        .route(
            "/huge",
            post(|| async {
                let chunks = huge_json()
                    .chunks(64 * 1024)
                    .map(|c| Ok::<_, std::io::Error>(axum::body::Bytes::copy_from_slice(c)))
                    .collect::<Vec<_>>();
                Response::new(Body::from_stream(futures_util::stream::iter(chunks)))
            }),
        )
        .route(
            "/huge-known",
            post(|| async { ([(header::CONTENT_TYPE, "application/json")], huge_json()) }),
        )
        .route(
            "/redirect",
            post(|| async {
                (
                    StatusCode::TEMPORARY_REDIRECT,
                    [(header::LOCATION, "/target")],
                )
                    .into_response()
            }),
        )
        .route(
            "/target",
            post(move || {
                let reached = reached.clone();
                async move {
                    reached.fetch_add(1, Ordering::SeqCst);
                    axum::Json(json!({"redirected": true}))
                }
            }),
        )
        .route("/small", post(|| async { axum::Json(json!({"ok": true})) }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, task)
}

async fn send(s: &TestServer, usertoken: &str, component: &str) -> (u16, Value) {
    s.post(
        "/send",
        Some(usertoken),
        json!({"component": component, "payload": {"n": 1}}).to_string(),
    )
    .await
}

/// The page is told that the webhook failed, and nothing about where or why.
fn assert_opaque(body: &Value, app: &str) {
    assert_eq!(body["error"]["code"], "webhook_failed", "{body}");
    assert_eq!(body["error"]["message"], "webhook failed", "{body}");
    let host = app.trim_start_matches("http://");
    assert!(!body.to_string().contains(host), "{body}");
}

#[tokio::test]
async fn webhook_answers_are_capped_redirects_refused_and_details_kept_from_the_page() {
    let reached = Arc::new(AtomicUsize::new(0));
    let (app, task) = webhook_app(reached.clone()).await;
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        format!("http://{}/hook", l.local_addr().expect("addr"))
    };
    let s = TestServer::start(config(|c| {
        c.webhooks.max_response_bytes = 64 * 1024;
        let w = &mut c.webhooks.components;
        w.insert("mod_huge".into(), format!("{app}/huge"));
        w.insert("mod_hugeknown".into(), format!("{app}/huge-known"));
        w.insert("mod_redirect".into(), format!("{app}/redirect"));
        w.insert("mod_small".into(), format!("{app}/small"));
        w.insert("mod_down".into(), closed.clone());
    }))
    .await;
    let page = s.page(42, json!([channel("mod_small", "x", 0)])).await;
    let ut = page["usertoken"].as_str().expect("usertoken");

    let (st, body) = send(&s, ut, "mod_small").await;
    assert_eq!((st, &body["response"]), (200, &json!({"ok": true})));

    for component in ["mod_huge", "mod_hugeknown"] {
        let (st, body) = send(&s, ut, component).await;
        assert_eq!(st, 502, "{component}: {body}");
        assert_opaque(&body, &app);
    }

    let (st, body) = send(&s, ut, "mod_redirect").await;
    assert_eq!(st, 502, "{body}");
    assert_opaque(&body, &app);
    assert_eq!(
        reached.load(Ordering::SeqCst),
        0,
        "the redirect target got the signed body"
    );

    let (st, body) = send(&s, ut, "mod_down").await;
    assert_eq!(st, 502, "{body}");
    assert_opaque(&body, &closed);
    assert!(!body.to_string().contains("/hook"), "{body}");

    s.stop().await;
    task.abort();
}
