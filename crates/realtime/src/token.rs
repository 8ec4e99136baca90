//! Stateless credentials: a subscription token (channel hash + user + expiry) and a user token
//! (user + expiry, for send to server and to identify the poller).
//!
//! Nothing is stored per subscribe, unlike the original's ever-growing key table: a token is
//! `v1.<user>.<expires>.<mac>` where `mac` is base64url (no padding) of HMAC-SHA-256, keyed with
//! the server secret, over `realtime-token-v1\n<kind>\n<hash or empty>\n<user>\n<expires>`,
//! `kind` being `sub` or `user`. Verification recomputes the MAC and compares in constant time
//! (`Mac::verify_slice`). An application in another language can mint tokens itself.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::channel::ChannelHash;
use crate::error::{Error, Result};
use crate::event::parse_canonical_i64;
use crate::secret::Secret;

/// Who a credential is for. `0` is the guest (not logged in), as in Moodle; negatives are refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UserId(pub(crate) i64);

impl UserId {
    /// The guest user.
    pub const GUEST: UserId = UserId(0);

    /// Whether this is the guest.
    pub fn is_guest(self) -> bool {
        self.0 == 0
    }

    /// A user by its id: 0 is the guest, positive ids are users.
    ///
    /// # Errors
    /// `invalid_user` (400) for a negative id.
    pub fn new(id: i64) -> Result<Self> {
        if id < 0 {
            return Err(Error::bad_request(
                "invalid_user",
                format!("user ids are 0 (the guest) or positive, not {id}"),
            ));
        }
        Ok(UserId(id))
    }

    /// The id as a number.
    pub const fn get(self) -> i64 {
        self.0
    }
}

impl TryFrom<i64> for UserId {
    type Error = Error;

    fn try_from(id: i64) -> Result<Self> {
        UserId::new(id)
    }
}

impl std::fmt::Display for UserId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// What a token grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(feature = "test-util"), allow(unreachable_pub, dead_code))]
pub enum TokenKind {
    /// Receive one channel.
    Subscription,
    /// Act as the user (send to server, identify a connection).
    User,
}

impl TokenKind {
    fn tag(self) -> &'static str {
        match self {
            TokenKind::Subscription => "sub",
            TokenKind::User => "user",
        }
    }
}

/// Seconds since the Unix epoch, now.
pub fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn mac(
    secret: &Secret,
    kind: TokenKind,
    hash: Option<&ChannelHash>,
    user: UserId,
    expires: i64,
) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
        .expect("invariant: HMAC accepts keys of any length");
    let text = format!(
        "realtime-token-v1\n{}\n{}\n{}\n{}",
        kind.tag(),
        hash.map(ChannelHash::as_str).unwrap_or(""),
        user.0,
        expires
    );
    mac.update(text.as_bytes());
    mac
}

/// Signs a token of `kind` for `user`, valid until `expires` (Unix seconds).
#[cfg_attr(not(feature = "test-util"), allow(unreachable_pub, dead_code))]
pub fn sign(
    secret: &Secret,
    kind: TokenKind,
    hash: Option<&ChannelHash>,
    user: UserId,
    expires: i64,
) -> String {
    let tag = mac(secret, kind, hash, user, expires)
        .finalize()
        .into_bytes();
    format!("v1.{}.{}.{}", user.0, expires, URL_SAFE_NO_PAD.encode(tag))
}

/// Verifies a token of `kind` (for `hash` when it is a subscription token) and returns its user.
///
/// # Errors
/// `token_invalid` (403) when it is malformed or its MAC does not match (forged, or for another
/// channel), `token_expired` (401) when its time has passed.
#[cfg_attr(not(feature = "test-util"), allow(unreachable_pub, dead_code))]
pub fn verify(
    secret: &Secret,
    kind: TokenKind,
    hash: Option<&ChannelHash>,
    token: &str,
) -> Result<UserId> {
    verify_expiring(secret, kind, hash, token).map(|(user, _)| user)
}

/// As [`verify`], and also returns when the token expires (Unix seconds): a stream opened with
/// it is ended then (docs/protocol.md, "Token expiry and renewal").
///
/// # Errors
/// As [`verify`].
pub(crate) fn verify_expiring(
    secret: &Secret,
    kind: TokenKind,
    hash: Option<&ChannelHash>,
    token: &str,
) -> Result<(UserId, i64)> {
    let invalid = || Error::forbidden("token_invalid", "the token is not valid for this request");
    let mut parts = token.split('.');
    let (Some("v1"), Some(user), Some(expires), Some(tag), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(invalid());
    };
    // Only the canonical spelling of each number: `v1.042.…` or `v1.+42.…` must not verify
    // as the token of user 42 (the MAC covers the number, not the text).
    let user = UserId(parse_canonical_i64(user).ok_or_else(invalid)?);
    let expires = parse_canonical_i64(expires).ok_or_else(invalid)?;
    let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| invalid())?;
    mac(secret, kind, hash, user, expires)
        .verify_slice(&tag)
        .map_err(|_| invalid())?;
    if expires <= now_secs() {
        return Err(Error::unauthorized(
            "token_expired",
            "the token has expired; renew it (or reload the page) and reconnect",
        ));
    }
    Ok((user, expires))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(c: char) -> ChannelHash {
        ChannelHash::parse(&c.to_string().repeat(64)).expect("valid hash")
    }

    #[test]
    fn round_trip_and_refusals() {
        let s = Secret::from_bytes(b"k".to_vec());
        let exp = now_secs() + 60;
        let t = sign(
            &s,
            TokenKind::Subscription,
            Some(&hash('a')),
            UserId(42),
            exp,
        );
        assert_eq!(
            verify(&s, TokenKind::Subscription, Some(&hash('a')), &t).expect("valid"),
            UserId(42)
        );
        // Another channel, another kind, another secret, a tampered user: all refused.
        assert!(verify(&s, TokenKind::Subscription, Some(&hash('b')), &t).is_err());
        assert!(verify(&s, TokenKind::User, None, &t).is_err());
        assert!(verify(
            &Secret::from_bytes(b"x".to_vec()),
            TokenKind::Subscription,
            Some(&hash('a')),
            &t
        )
        .is_err());
        let tampered = t.replacen("v1.42.", "v1.43.", 1);
        assert!(verify(&s, TokenKind::Subscription, Some(&hash('a')), &tampered).is_err());
        assert!(verify(&s, TokenKind::User, None, "garbage").is_err());
        // Non-canonical spellings of the same numbers: refused, though the MAC matches.
        let user = sign(&s, TokenKind::User, None, UserId(42), exp);
        assert_eq!(
            verify(&s, TokenKind::User, None, &user).expect("valid"),
            UserId(42)
        );
        for variant in [
            user.replacen("v1.42.", "v1.042.", 1),
            user.replacen("v1.42.", "v1.+42.", 1),
            user.replacen(&format!(".{exp}."), &format!(".0{exp}."), 1),
            user.replacen(&format!(".{exp}."), &format!(".+{exp}."), 1),
        ] {
            assert_ne!(variant, user);
            let err = verify(&s, TokenKind::User, None, &variant).expect_err(&variant);
            assert_eq!(err.code(), "token_invalid");
        }
        let old = sign(&s, TokenKind::User, None, UserId(1), now_secs() - 1);
        let err = verify(&s, TokenKind::User, None, &old).expect_err("expired");
        assert_eq!(err.code(), "token_expired");
    }
}
