//! Events, their ids, and the cursor that says where a client is in the stream.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::channel::{Channel, ChannelHash};
use crate::error::{Error, Result};

/// An event's id: global to the engine, ascending, never reused.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default,
)]
#[serde(transparent)]
pub struct EventId(pub(crate) i64);

impl EventId {
    /// Before the first event: a cursor at it gets everything the store holds.
    pub const ZERO: EventId = EventId(0);

    /// An id as an engine hands it out (ids start at 1; 0 is "before the first").
    ///
    /// # Errors
    /// [`Error::Internal`] for a negative id: a store that holds one is broken.
    pub fn new(id: i64) -> Result<Self> {
        if id < 0 {
            return Err(Error::Internal(format!("event ids are not negative: {id}")));
        }
        Ok(EventId(id))
    }

    /// The id as a number.
    pub const fn get(self) -> i64 {
        self.0
    }
}

/// Names one incarnation of an engine's store. A cursor from another epoch (another store, or a
/// store that was lost and recreated) cannot be resumed: the client is told `recovered: false`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Epoch(pub(crate) String);

impl Epoch {
    /// An epoch's name: 1 to 64 ASCII letters, digits, `-` or `_` (it is half of a cursor, which
    /// must fit an SSE `id` field). Engines make one when they create their store.
    ///
    /// # Errors
    /// [`Error::Internal`] for another shape: the engine's store is broken.
    pub fn new(name: impl Into<String>) -> Result<Self> {
        let name = name.into();
        if !is_epoch_name(&name) {
            return Err(Error::Internal(format!(
                "an epoch is 1 to 64 of [A-Za-z0-9_-], not {name:?}"
            )));
        }
        Ok(Epoch(name))
    }

    /// The epoch's name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// 1 to 64 ASCII letters, digits, `-` or `_`.
fn is_epoch_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Where a client is: the engine's epoch and the last event id it has seen.
///
/// On the wire it is one opaque string `EPOCH:ID` (it must fit an SSE `id` field).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// The store the id belongs to.
    pub epoch: Epoch,
    /// The last event id seen; events after it are due.
    pub id: EventId,
}

impl Cursor {
    /// Parses the wire form `EPOCH:ID`.
    ///
    /// # Errors
    /// `invalid_cursor` (400) when it has another shape.
    pub fn parse(s: &str) -> Result<Self> {
        let bad = || {
            Error::bad_request(
                "invalid_cursor",
                "a cursor is the opaque string the server gave",
            )
        };
        let (epoch, id) = s.rsplit_once(':').ok_or_else(bad)?;
        if !is_epoch_name(epoch) {
            return Err(bad());
        }
        let id = parse_canonical_i64(id).ok_or_else(bad)?;
        if id < 0 {
            return Err(bad());
        }
        Ok(Cursor {
            epoch: Epoch(epoch.to_string()),
            id: EventId(id),
        })
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.epoch.0, self.id.0)
    }
}

impl Serialize for Cursor {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cursor {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Cursor::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Parses a decimal integer written only in its canonical form (as the server writes it): no
/// sign but a leading `-`, no leading zeros, no `-0`. So one value has one spelling, and a token
/// or cursor cannot be varied (`042`, `+42`) and still verify.
pub(crate) fn parse_canonical_i64(s: &str) -> Option<i64> {
    let n = s.parse::<i64>().ok()?;
    // i64's Display is the canonical form; anything else that parsed is a variant.
    (n.to_string() == s).then_some(n)
}

/// An event to append: the channel, its hash (computed once by the caller) and the payload.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// The channel's fields; they travel with the event.
    pub channel: Channel,
    /// The channel's public name, used for routing.
    pub hash: ChannelHash,
    /// The JSON payload as text, already validated and size-checked.
    pub payload: Box<RawValue>,
}

/// A stored event, in the one shape every transport delivers.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// Ascending, engine-wide id.
    pub id: EventId,
    /// The channel's context.
    pub contextid: i64,
    /// The channel's component.
    pub component: String,
    /// The channel's area.
    pub area: String,
    /// The channel's item id.
    pub itemid: i64,
    /// The channel's details.
    pub channeldetails: String,
    /// Whatever JSON the notifier sent.
    pub payload: Box<RawValue>,
    /// Unix seconds when the event was appended.
    pub timecreated: i64,
    /// The channel hash, for routing; not part of the wire shape.
    #[serde(skip)]
    pub hash: ChannelHash,
}

impl Event {
    /// Builds the stored form of `new` with its id and time.
    pub fn from_new(new: NewEvent, id: EventId, timecreated: i64) -> Self {
        Event {
            id,
            contextid: new.channel.contextid,
            component: new.channel.component,
            area: new.channel.area,
            itemid: new.channel.itemid,
            channeldetails: new.channel.details,
            payload: new.payload,
            timecreated,
            hash: new.hash,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trip_and_refusals() {
        let c = Cursor::parse("ab12:42").expect("valid");
        assert_eq!(c.id, EventId(42));
        assert_eq!(c.to_string(), "ab12:42");
        assert_eq!(Cursor::parse("ab:0").expect("zero").id, EventId(0));
        for bad in [
            "", "42", ":1", "ab:-1", "ab:x", "a b:1", "ab:042", "ab:+42", "ab:00", "ab:-0",
            "ab: 42", "ab:42 ",
        ] {
            assert!(Cursor::parse(bad).is_err(), "{bad}");
        }
    }
}
