//! # realtime
//!
//! Real-time events for web applications: server code pushes events to the browser pages that
//! are open right now, and pages send data back, without reloads. A re-implementation of
//! Moodle's `tool_realtime`, keeping its words: *channel*, *subscribe*, *notify*, *event*,
//! *payload*, *sendToServer*, `EVENT`, `CONNECTION_LOST`, `is_enabled`, *transport*, *engine*.
//!
//! ```no_run
//! use std::sync::Arc;
//! use realtime::{Channel, Config, Realtime, Secret, UserId, engine::MemoryEngine};
//!
//! # async fn demo() -> realtime::Result<()> {
//! // `engine::SqliteEngine` (feature `sqlite`), `realtime_postgres`, or any `engine::Engine`.
//! let engine = Arc::new(MemoryEngine::new());
//! let rt = Realtime::start(Config::default(), Secret::generate().0, engine).await?;
//! // Pages send to `mod_chat`; the handler runs as the sender.
//! rt.handle("mod_chat", |ctx, payload| async move {
//!     Ok(serde_json::json!({"from": ctx.user, "echo": payload}))
//! });
//! // While rendering a page: what the page embeds and hands to `init`.
//! let channel = Channel::new(1, "mod_chat", "messages", 0, "")?;
//! let page = rt.page(UserId::new(42)?, &[channel.clone()], "http://localhost:3000/rt".into()).await?;
//! // From anywhere, later: every page subscribed to the channel gets the event.
//! rt.notify(&channel, &serde_json::json!({"text": "hello"})).await?;
//! // Mount the client endpoints under the app's own router; the API (`rt.api_router()`)
//! // goes on an internal listener, or nowhere when the app calls the node in-process.
//! let app: axum::Router = axum::Router::new().nest("/rt", rt.client_router());
//! # let _ = (page, app); Ok(()) }
//! ```
//!
//! # Cargo features
//!
//! - `sqlite` (default): [`engine::SqliteEngine`], the single-file engine (rusqlite, SQLite
//!   compiled in).
//! - `webhooks` (default): send to server by webhook (`[webhooks.components]`, an HTTP
//!   client). Without it only Rust handlers ([`Realtime::handle`]) answer, and a configured
//!   webhook is an [`Error::Config`] at [`Realtime::start`].
//!
//! An embedder that brings its own engine (`realtime-postgres`, `realtime-redis`, a custom
//! one) and Rust handlers needs neither: `realtime = { version = "...",
//! default-features = false }`.
//!
//! # Examples
//!
//! In `crates/realtime/examples/`, each run with `cargo run -p realtime --example NAME`:
//! - `embed`: an axum app with its own page, the client endpoints under `/rt`, the API on a
//!   loopback listener, a Rust handler that notifies the channel;
//! - `background_notify`: notify from a background task while serving;
//! - `counting_engine`: a custom engine wrapping another one;
//! - `graceful_shutdown`: [`serve`] with [`ServeOptions`], and a right shutdown on ctrl-c or
//!   SIGTERM (cancel the node, streams end, drain).
//!
//! See `ARCHITECTURE.md` for the parts and the path of an event, and `docs/protocol.md` for
//! the wire contract.

// The public surface: the node, its settings, the engine seam, the ids and types of the
// protocol, the handlers, the error type, the serve loop and the extractors. Everything else
// (the hub, the transports, limits, telemetry, tokens) is internal and may change freely.
mod api;
mod channel;
pub mod config;
pub mod engine;
mod error;
mod event;
pub mod extract;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod handlers;
mod hub;
mod limit;
mod node;
mod router;
mod secret;
mod serve;
mod telemetry;
#[cfg(feature = "test-util")]
#[doc(hidden)]
pub mod testing;
mod token;
mod transport;

pub use channel::{Channel, ChannelHash};
pub use config::Config;
pub use error::{Error, Result};
pub use event::{Cursor, Epoch, Event, EventId, NewEvent};
pub use handlers::{sign_webhook, HandlerError, SendContext};
pub use node::{PageConfig, PageSubscription, Realtime, Subscription};
pub use router::REALTIME_JS;
pub use secret::{random_hex, Secret};
pub use serve::{bind, serve, ServeOptions};
pub use token::UserId;

/// The README's Rust example compiles (it needs the `sqlite` feature).
#[cfg(all(doctest, feature = "sqlite"))]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;
