//! Channels: the five fields that name one communication path, their validation, and the
//! keyed hash that is the channel's public name.
//!
//! The hash is HMAC-SHA-256, keyed with the server secret, over this encoding of the fields:
//! the ASCII tag `realtime-channel-v1`, then for each of contextid, component, area, itemid,
//! details (in that order) a 4-byte big-endian length followed by the field's UTF-8 bytes;
//! ids are written in decimal. Length prefixes make the encoding unambiguous (`("a_b", "c")`
//! and `("a", "b_c")` hash differently). The hash is written as 64 lowercase hex digits.
//! `docs/protocol.md` has a test vector so that other languages can check their code.

use std::fmt;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::error::{Error, Result};
use crate::secret::Secret;

/// Longest accepted component name.
pub(crate) const MAX_COMPONENT_LEN: usize = 100;
/// Longest accepted area.
pub(crate) const MAX_AREA_LEN: usize = 100;
/// Longest accepted channel details.
pub(crate) const MAX_DETAILS_LEN: usize = 255;

/// One communication path: `(contextid, component, area, itemid, details)`.
///
/// Built with [`Channel::new`], which validates; deserialised channels are validated too.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields, try_from = "ChannelFields")]
pub struct Channel {
    /// The context the channel belongs to (a course, a module, the system: the app decides).
    pub(crate) contextid: i64,
    /// Frankenstyle-like owner, such as `mod_quiz`: lowercase `[a-z0-9_]`, 1..=100 characters.
    pub(crate) component: String,
    /// What the channel is about inside the component, such as `submissions`.
    pub(crate) area: String,
    /// An id inside the area (0 when unused).
    pub(crate) itemid: i64,
    /// Free text that narrows the channel further (empty when unused).
    #[serde(rename = "channeldetails")]
    pub(crate) details: String,
}

/// The wire form of a channel before validation. `details` and `channeldetails` are both
/// accepted: the API names it `details`, the event shape `channeldetails`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChannelFields {
    contextid: i64,
    component: String,
    area: String,
    #[serde(default)]
    itemid: i64,
    #[serde(default, alias = "channeldetails")]
    details: String,
}

impl TryFrom<ChannelFields> for Channel {
    type Error = Error;
    fn try_from(f: ChannelFields) -> Result<Self> {
        Channel::new(f.contextid, f.component, f.area, f.itemid, f.details)
    }
}

impl Channel {
    /// The context the channel belongs to.
    pub fn contextid(&self) -> i64 {
        self.contextid
    }

    /// The owning component, such as `mod_quiz`.
    pub fn component(&self) -> &str {
        &self.component
    }

    /// What the channel is about inside the component.
    pub fn area(&self) -> &str {
        &self.area
    }

    /// An id inside the area (0 when unused).
    pub fn itemid(&self) -> i64 {
        self.itemid
    }

    /// Free text that narrows the channel further (`channeldetails` on the wire).
    pub fn details(&self) -> &str {
        &self.details
    }

    /// Builds a channel, checking every field.
    ///
    /// Area and details are any Unicode text without control characters (Unicode `Cc`: NUL,
    /// tab, newline, DEL, the C1 range), so that every engine stores them byte-exact; quotes,
    /// backslashes, emoji, right-to-left text and combining marks are accepted. This is the one
    /// rule for every engine (`docs/protocol.md`, "What an event may contain").
    ///
    /// # Errors
    /// `invalid_channel` when the component is not lowercase `[a-z0-9_]` of 1..=100
    /// characters starting with a letter, the area is empty or too long, details are too long,
    /// or area or details contain a control character.
    pub fn new(
        contextid: i64,
        component: impl Into<String>,
        area: impl Into<String>,
        itemid: i64,
        details: impl Into<String>,
    ) -> Result<Self> {
        let channel = Channel {
            contextid,
            component: component.into(),
            area: area.into(),
            itemid,
            details: details.into(),
        };
        validate_component(&channel.component)?;
        if channel.area.is_empty() || channel.area.len() > MAX_AREA_LEN {
            return Err(Error::bad_request(
                "invalid_channel",
                format!("area must be 1..={MAX_AREA_LEN} bytes"),
            ));
        }
        if channel.area.chars().any(char::is_control) {
            return Err(Error::bad_request(
                "invalid_channel",
                "area must not contain control characters",
            ));
        }
        if channel.details.len() > MAX_DETAILS_LEN {
            return Err(Error::bad_request(
                "invalid_channel",
                format!("details must be at most {MAX_DETAILS_LEN} bytes"),
            ));
        }
        if channel.details.chars().any(char::is_control) {
            return Err(Error::bad_request(
                "invalid_channel",
                "details must not contain control characters",
            ));
        }
        Ok(channel)
    }

    /// The channel's public name: HMAC-SHA-256 over the canonical encoding (see the module doc).
    pub fn hash(&self, secret: &Secret) -> ChannelHash {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
            .expect("invariant: HMAC accepts keys of any length");
        mac.update(b"realtime-channel-v1");
        for field in [
            self.contextid.to_string().as_bytes(),
            self.component.as_bytes(),
            self.area.as_bytes(),
            self.itemid.to_string().as_bytes(),
            self.details.as_bytes(),
        ] {
            let len = u32::try_from(field.len()).expect("invariant: fields are length-checked");
            mac.update(&len.to_be_bytes());
            mac.update(field);
        }
        ChannelHash(hex::encode(mac.finalize().into_bytes()))
    }
}

/// Checks a component name: lowercase `[a-z0-9_]`, 1..=100 characters, starting with a letter.
///
/// # Errors
/// `invalid_channel` (400) with what is wrong.
pub(crate) fn validate_component(component: &str) -> Result<()> {
    let ok = !component.is_empty()
        && component.len() <= MAX_COMPONENT_LEN
        && component.starts_with(|c: char| c.is_ascii_lowercase())
        && component
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(Error::bad_request(
            "invalid_channel",
            format!(
                "component {component:?} must be 1..={MAX_COMPONENT_LEN} characters of [a-z0-9_], starting with a letter"
            ),
        ))
    }
}

/// A channel's public name: 64 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct ChannelHash(String);

impl ChannelHash {
    /// Parses a hash received from a client.
    ///
    /// # Errors
    /// `invalid_channel` when it is not 64 lowercase hex digits.
    pub fn parse(s: &str) -> Result<Self> {
        if s.len() == 64
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            Ok(ChannelHash(s.to_string()))
        } else {
            Err(Error::bad_request(
                "invalid_channel",
                "a channel hash is 64 lowercase hex digits",
            ))
        }
    }

    /// The hash as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for ChannelHash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ChannelHash::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for ChannelHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> Secret {
        Secret::from_bytes(b"test-secret".to_vec())
    }

    #[test]
    fn same_fields_same_hash_and_fields_do_not_run_together() {
        let a = Channel::new(1, "mod_quiz", "ab", 0, "c").expect("valid");
        let b = Channel::new(1, "mod_quiz", "a", 0, "bc").expect("valid");
        assert_eq!(a.hash(&secret()), a.clone().hash(&secret()));
        assert_ne!(a.hash(&secret()), b.hash(&secret()));
        assert_ne!(
            a.hash(&secret()),
            a.hash(&Secret::from_bytes(b"other".to_vec()))
        );
    }

    #[test]
    fn documented_test_vector() {
        // The same vector is in docs/protocol.md.
        let c = Channel::new(1, "tool_realtime", "test", 0, "").expect("valid");
        assert_eq!(
            c.hash(&Secret::from_bytes(b"secret".to_vec())).as_str(),
            include_str!("../tests/vector.txt").trim()
        );
    }

    #[test]
    fn validation() {
        assert!(Channel::new(1, "Mod_quiz", "a", 0, "").is_err());
        assert!(Channel::new(1, "", "a", 0, "").is_err());
        assert!(Channel::new(1, "mod-quiz", "a", 0, "").is_err());
        assert!(Channel::new(1, "1mod", "a", 0, "").is_err());
        assert!(Channel::new(1, "m".repeat(101), "a", 0, "").is_err());
        assert!(Channel::new(1, "mod_quiz", "", 0, "").is_err());
        assert!(Channel::new(1, "mod_quiz", "a", 0, "d".repeat(256)).is_err());
        assert!(Channel::new(-5, "mod_quiz2", "a", -1, "x").is_ok());
        for control in ["\0", "\n", "\t", "\r", "\u{7f}", "\u{85}", "\u{9f}"] {
            let bad = format!("a{control}b");
            assert!(
                Channel::new(1, "mod_quiz", &bad, 0, "").is_err(),
                "{bad:?} area"
            );
            assert!(
                Channel::new(1, "mod_quiz", "a", 0, &bad).is_err(),
                "{bad:?} details"
            );
        }
        for hostile in [
            "\"q\"",
            "C:\\temp",
            "back\\slash",
            "😀",
            "\u{202e}rtl",
            "e\u{301}",
            "{\"a\":1}",
        ] {
            let c = Channel::new(1, "mod_quiz", hostile, 0, hostile).expect("valid hostile text");
            assert_eq!((c.area.as_str(), c.details.as_str()), (hostile, hostile));
        }
        assert!(ChannelHash::parse(&"a".repeat(64)).is_ok());
        assert!(ChannelHash::parse(&"A".repeat(64)).is_err());
        assert!(ChannelHash::parse("abc").is_err());
    }
}
