//! Long-polling, `POST /poll`: subscriptions and cursor in, `{events, cursor, recovered}` out.
//!
//! The request waits on the hub (never on the database) for up to `poll.request_timeout_secs`
//! and answers as soon as an event for one of its channels exists; a timeout of 0 is short
//! polling, and so is a request with `"wait": false` (a client's first poll: it learns at once
//! that the transport works). On shutdown open polls answer at once, empty, with their cursor.
//!
//! An answer holds at most `limits.poll_events` events and about `limits.batch_bytes` bytes of
//! them; its cursor points at the last event included, so the next poll gets the rest. A poll
//! counts as an open connection of its user and address while it waits (429 beyond the limit).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Extension, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::{authorize, batch_json, cut_to_bytes, SubscriptionRef};
use crate::error::Result;
use crate::event::Cursor;
use crate::extract::{JsonBody, User};
use crate::limit::{ClientIp, Limits};
use crate::Realtime;

/// The body of `POST /poll`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PollRequest {
    /// The page's subscriptions.
    pub subscriptions: Vec<SubscriptionRef>,
    /// Where the client is; absent means "from now".
    #[serde(default)]
    pub cursor: Option<Cursor>,
    /// `false`: answer at once, even with no events (a client's first poll, which shows that the
    /// transport works without waiting for an event). Default `true`: wait up to
    /// `poll.request_timeout_secs`.
    #[serde(default = "wait_by_default")]
    pub wait: bool,
}

fn wait_by_default() -> bool {
    true
}

/// `POST /poll`, with `Authorization: Bearer <usertoken>`.
pub(crate) async fn poll(
    User(user): User,
    State(rt): State<Realtime>,
    Extension(limits): Extension<Arc<Limits>>,
    ClientIp(ip): ClientIp,
    JsonBody(req): JsonBody<PollRequest>,
) -> Result<Response> {
    let hashes = authorize(&rt, user, &req.subscriptions)?;
    let _permits = limits.connect(user, ip)?;
    let hub = rt.hub();
    let cursor = req.cursor.unwrap_or_else(|| hub.head());
    let timeout = if req.wait {
        Duration::from_secs(rt.config().poll.request_timeout_secs)
    } else {
        Duration::ZERO
    };
    let mut batch = hub
        .wait(
            &hashes,
            cursor,
            rt.config().limits.poll_events,
            timeout,
            rt.shutdown_token(),
        )
        .await?;
    cut_to_bytes(&mut batch, rt.config().limits.batch_bytes);
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
