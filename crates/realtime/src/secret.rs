//! The server secret: the key of every channel hash, token and webhook signature.
//!
//! The secret is text (the generated one is 64 hex digits); its UTF-8 bytes are the HMAC key,
//! so an application in another language uses the very string it was given.

use std::fmt;

/// Shortest secret accepted: shorter keys make hashes and tokens guessable.
pub(crate) const MIN_SECRET_LEN: usize = 16;

/// The signing secret. Its `Debug` form never shows the value.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// Wraps raw key bytes (no length check: for tests and embedding apps that know better).
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        Secret(bytes)
    }

    /// Accepts a secret given as text (config, environment, file).
    ///
    /// # Errors
    /// [`crate::Error::Config`] when shorter than 16 bytes once trimmed.
    pub fn from_text(text: &str) -> crate::Result<Self> {
        let text = text.trim();
        if text.len() < MIN_SECRET_LEN {
            return Err(crate::Error::Config(format!(
                "the secret must be at least {MIN_SECRET_LEN} characters"
            )));
        }
        Ok(Secret(text.as_bytes().to_vec()))
    }

    /// A new random secret: 32 random bytes written as 64 hex digits.
    pub fn generate() -> (Self, String) {
        let text = random_hex(32);
        (Secret(text.as_bytes().to_vec()), text)
    }

    /// The key bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Another secret for another purpose, derived from this one: the lowercase hex of
    /// HMAC-SHA-256(this secret, `purpose`), as text. Nothing signed with it verifies with this
    /// secret, and the other way round (the demo node signs with `derive("realtime-demo-v1")`).
    pub fn derive(&self, purpose: &str) -> Secret {
        use hmac::{Hmac, Mac};
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&self.0)
            .expect("invariant: HMAC accepts keys of any length");
        mac.update(purpose.as_bytes());
        Secret(hex::encode(mac.finalize().into_bytes()).into_bytes())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// `n` random bytes from the OS generator, as lowercase hex.
pub fn random_hex(n: usize) -> String {
    use rand::RngCore;
    let mut bytes = vec![0u8; n];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}
