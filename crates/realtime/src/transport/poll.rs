//! Long-polling, `POST /poll`: subscriptions and cursor in, `{events, cursor, recovered}` out.
//!
//! The request waits on the hub (never on the database) for up to `poll.request_timeout_secs`
//! and answers as soon as an event for one of its channels exists; a timeout of 0 is short
//! polling. On shutdown open polls answer at once, empty, with their cursor.

use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::{authorize, batch_json, SubscriptionRef};
use crate::error::Result;
use crate::event::Cursor;
use crate::extract::{JsonBody, User};
use crate::Realtime;

/// The body of `POST /poll`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PollRequest {
    /// The page's subscriptions.
    pub subscriptions: Vec<SubscriptionRef>,
    /// Where the client is; absent means "from now".
    #[serde(default)]
    pub cursor: Option<Cursor>,
}

/// `POST /poll`, with `Authorization: Bearer <usertoken>`.
pub async fn poll(
    User(user): User,
    State(rt): State<Realtime>,
    JsonBody(req): JsonBody<PollRequest>,
) -> Result<Response> {
    let hashes = authorize(&rt, user, &req.subscriptions)?;
    let hub = rt.hub();
    let cursor = req.cursor.unwrap_or_else(|| hub.head());
    let timeout = Duration::from_secs(rt.config().poll.request_timeout_secs);
    let batch = hub
        .wait(
            &hashes,
            cursor,
            rt.config().limits.poll_events,
            timeout,
            rt.shutdown_token(),
        )
        .await?;
    metrics::counter!(crate::telemetry::POLLS).increment(1);
    crate::telemetry::delivered("poll", batch.events.len());
    Ok((
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        batch_json(&batch),
    )
        .into_response())
}
