//! Transports: how events reach a page. Each file serves one; they share the credential check
//! and the answer encoding here, and all read from the same hub with the same cursor, so a
//! page can move between transports (and nodes) without missing or repeating an event.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::http::{header, HeaderMap};
use serde::Deserialize;

use crate::channel::ChannelHash;
use crate::error::{Error, Result};
use crate::hub::Batch;
use crate::token::UserId;
use crate::Realtime;

pub(crate) mod poll;
pub(crate) mod send;
pub(crate) mod sse;
pub(crate) mod write_timeout;
pub(crate) mod ws;

pub(crate) use write_timeout::{PeerAddr, WriteTimeoutIo};

/// One subscription as a client presents it: the hash and its token.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SubscriptionRef {
    /// The channel hash from the page config.
    pub channel: ChannelHash,
    /// The subscription token from the page config.
    pub token: String,
}

/// Checks every subscription token against `user` and returns the distinct hashes.
///
/// # Errors
/// 400 when there are none or too many; the first token's refusal otherwise.
pub(crate) fn authorize(
    rt: &Realtime,
    user: UserId,
    subs: &[SubscriptionRef],
) -> Result<Vec<ChannelHash>> {
    Ok(authorize_expiring(rt, user, subs)?.into_keys().collect())
}

/// As [`authorize`], with when each channel's token expires (Unix seconds; the latest, when a
/// channel is given twice): a stream ends when the first of its tokens does.
///
/// # Errors
/// As [`authorize`].
pub(crate) fn authorize_expiring(
    rt: &Realtime,
    user: UserId,
    subs: &[SubscriptionRef],
) -> Result<BTreeMap<ChannelHash, i64>> {
    let max = rt.config().limits.subscriptions;
    if subs.is_empty() {
        return Err(Error::bad_request(
            "invalid_request",
            "at least one subscription is required",
        ));
    }
    if subs.len() > max {
        return Err(Error::bad_request(
            "too_many_subscriptions",
            format!("at most {max} subscriptions per request"),
        ));
    }
    let mut hashes = BTreeMap::new();
    for s in subs {
        let expires = rt.verify_subscription_expiring(&s.channel, &s.token, user)?;
        let at = hashes.entry(s.channel.clone()).or_insert(expires);
        *at = (*at).max(expires);
    }
    Ok(hashes)
}

/// The instant at which a credential valid until `expires` (Unix seconds) runs out.
pub(crate) fn expiry_instant(expires: i64) -> tokio::time::Instant {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    let left_ms = expires.saturating_mul(1_000).saturating_sub(now_ms).max(0);
    // Far-future expiries are capped at a year: `Instant` arithmetic must not overflow.
    let left_ms = u64::try_from(left_ms)
        .unwrap_or(0)
        .min(365 * 24 * 3_600 * 1_000);
    tokio::time::Instant::now() + std::time::Duration::from_millis(left_ms)
}

/// The JSON of a batch: `{"events": [...], "cursor": "...", "recovered": bool}`, built from the
/// events' bytes serialised once by the hub.
pub(crate) fn batch_json(batch: &Batch) -> Bytes {
    let size: usize = batch.events.iter().map(|e| e.json.len() + 1).sum();
    let mut out = Vec::with_capacity(size + 96);
    out.extend_from_slice(b"{\"events\":[");
    for (i, e) in batch.events.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(&e.json);
    }
    out.extend_from_slice(b"],\"cursor\":\"");
    out.extend_from_slice(batch.cursor.to_string().as_bytes());
    out.extend_from_slice(b"\",\"recovered\":");
    out.extend_from_slice(if batch.recovered { b"true" } else { b"false" });
    out.push(b'}');
    Bytes::from(out)
}

/// Cuts `batch` to at most `budget` bytes of event JSON (always keeping the first event) and
/// moves its cursor to the last event kept, so that the client continues with the rest.
/// Whether anything was cut.
pub(crate) fn cut_to_bytes(batch: &mut Batch, budget: usize) -> bool {
    let mut total = 0usize;
    let mut keep = batch.events.len();
    for (i, e) in batch.events.iter().enumerate() {
        total = total.saturating_add(e.json.len());
        if total > budget && i > 0 {
            keep = i;
            break;
        }
    }
    if keep == batch.events.len() {
        return false;
    }
    batch.events.truncate(keep);
    if let Some(last) = batch.events.last() {
        batch.cursor.id = last.id;
    }
    true
}

/// Refuses a browser request whose `Origin` is outside `server.allowed_origins` (`*` allows
/// any). Requests without an `Origin` (programs, not browsers) pass.
///
/// # Errors
/// 403 `origin_refused`.
pub(crate) fn check_origin(rt: &Realtime, headers: &HeaderMap) -> Result<()> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let allowed = &rt.config().server.allowed_origins;
    let origin = origin.to_str().unwrap_or("");
    if allowed
        .iter()
        .any(|o| o == "*" || o.eq_ignore_ascii_case(origin))
    {
        Ok(())
    } else {
        Err(Error::forbidden(
            "origin_refused",
            format!("origin {origin:?} is not allowed"),
        ))
    }
}
