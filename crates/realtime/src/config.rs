//! Settings: one serde struct, sections as in `realtime.toml`, documented defaults, and
//! [`Config::validate`] to run once at start. Nothing here reads files or the environment:
//! the `realtime` binary does that and hands the result over.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// All settings. `Config::default()` is what `realtime serve` runs with when given nothing.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where and how the server listens (used by the binary; a library user mounts the router
    /// wherever it likes).
    pub server: ServerConfig,
    /// Where events live, how long they are kept, how often other processes are checked.
    pub engine: EngineConfig,
    /// Long-polling.
    pub poll: PollConfig,
    /// Which transports pages may use, in their order of preference.
    pub transports: TransportsConfig,
    /// Credentials.
    pub auth: AuthConfig,
    /// Which components may use real-time at all.
    pub components: ComponentsConfig,
    /// Sizes and counts that bound what one request can cost.
    pub limits: LimitsConfig,
    /// Send to server in server mode: a webhook per component.
    pub webhooks: WebhooksConfig,
    /// This node's hub.
    pub hub: HubConfig,
    /// The WebSocket transport.
    pub websocket: WebSocketConfig,
    /// The Server-Sent Events transport.
    pub sse: SseConfig,
}

/// `[server]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Listen address; port 0 picks a free port. Default `127.0.0.1:8787`.
    pub listen: String,
    /// Where the SQLite file, the generated secret and API key live. Default `./realtime-data`.
    pub data_dir: String,
    /// Base URL written into page configs (`url`); empty means "from the request's Host".
    pub public_url: String,
    /// Origins allowed to call the client endpoints from a browser (CORS); `*` allows any.
    /// Client endpoints authenticate with bearer tokens, not cookies, so `*` is safe.
    pub allowed_origins: Vec<String>,
    /// How long shutdown waits for open requests and tasks, in milliseconds.
    pub drain_timeout_ms: u64,
    /// The demo page at `/demo` (the original's test page): `auto` serves it when listening on
    /// a loopback address only, `on` always, `off` never.
    pub demo: String,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:8787".into(),
            data_dir: "./realtime-data".into(),
            public_url: String::new(),
            allowed_origins: vec!["*".into()],
            drain_timeout_ms: 5_000,
            demo: "auto".into(),
        }
    }
}

/// `[engine]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineConfig {
    /// `sqlite://PATH`, `memory://`; empty means `sqlite://<data_dir>/realtime.db`.
    pub url: String,
    /// How long events are kept, in seconds (default one hour). A client away longer gets
    /// `recovered: false`, never a silent gap.
    pub retention_secs: u64,
    /// How often the hub looks for events appended by other processes, in milliseconds
    /// (default 1000, at least 200, as the original's `checkinterval`).
    pub check_interval_ms: u64,
    /// How often the retention purge runs, in seconds.
    pub purge_interval_secs: u64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            url: String::new(),
            retention_secs: 3_600,
            check_interval_ms: 1_000,
            purge_interval_secs: 60,
        }
    }
}

/// `[poll]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PollConfig {
    /// How long a poll waits for an event before answering empty, in seconds (default 30,
    /// the original's `requesttimeout`); 0 means short polling.
    pub request_timeout_secs: u64,
}

impl Default for PollConfig {
    fn default() -> Self {
        PollConfig {
            request_timeout_secs: 30,
        }
    }
}

/// `[transports]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TransportsConfig {
    /// Enabled transports in order of preference: `websocket`, `sse`, `poll`. Transports this
    /// build does not serve yet are left out of page configs.
    pub enabled: Vec<String>,
}

impl Default for TransportsConfig {
    fn default() -> Self {
        TransportsConfig {
            enabled: vec!["websocket".into(), "sse".into(), "poll".into()],
        }
    }
}

/// `[auth]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// How long subscription and user tokens last, in seconds (default 4 hours).
    pub token_ttl_secs: u64,
    /// Whether the guest (user 0) may subscribe and send. Off by default, as in the original.
    pub allow_guests: bool,
    /// API keys accepted by `/api/*`, besides `REALTIME_API_KEY`.
    pub api_keys: Vec<String>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            token_ttl_secs: 4 * 3_600,
            allow_guests: false,
            api_keys: Vec::new(),
        }
    }
}

/// `[components]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ComponentsConfig {
    /// Components allowed to subscribe, notify and send; `*` means all (the default).
    pub enabled: Vec<String>,
}

impl Default for ComponentsConfig {
    fn default() -> Self {
        ComponentsConfig {
            enabled: vec!["*".into()],
        }
    }
}

/// `[limits]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest payload of one event or one send, in bytes of JSON (default 64 KiB).
    pub payload_bytes: usize,
    /// Deepest nesting of arrays and objects in one event's payload (default 64, at most
    /// 1000): `1` is depth 0, `[1]` depth 1, `{"a":[1]}` depth 2. Deeper payloads are refused
    /// with 400 `invalid_payload` before the engine is touched, so that no engine's parser (or
    /// a client's) meets a value it cannot take.
    pub payload_depth: usize,
    /// Largest request body, in bytes (default 4 MiB; a notify batch is one body).
    pub request_bytes: usize,
    /// Most events in one notify batch (default 1000).
    pub batch_events: usize,
    /// Most subscriptions in one poll (default 100).
    pub subscriptions: usize,
    /// Most events in one poll answer (default 1000; the client polls again for the rest).
    pub poll_events: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            payload_bytes: 64 * 1024,
            payload_depth: 64,
            request_bytes: 4 * 1024 * 1024,
            batch_events: 1_000,
            subscriptions: 100,
            poll_events: 1_000,
        }
    }
}

/// Highest accepted `limits.payload_depth`: deeper values risk the recursion limits of
/// engines' JSON parsers (PostgreSQL's) and of clients' (`serde_json` stops at 128).
pub const MAX_PAYLOAD_DEPTH: usize = 1_000;

/// `[webhooks]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhooksConfig {
    /// How long a webhook may take before the page gets a 504, in milliseconds (default 10 s).
    pub timeout_ms: u64,
    /// `component = "http://app/realtime-hook"`: where sends for that component go.
    pub components: BTreeMap<String, String>,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        WebhooksConfig {
            timeout_ms: 10_000,
            components: BTreeMap::new(),
        }
    }
}

/// `[hub]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HubConfig {
    /// How many recent events this node keeps in memory, so that polls and resumes are answered
    /// without reading the engine (default 10,000).
    pub cache_events: usize,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            cache_events: 10_000,
        }
    }
}

/// `[websocket]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebSocketConfig {
    /// How often the server pings an idle connection, in milliseconds (default 25 s).
    pub ping_interval_ms: u64,
    /// A connection from which nothing (not even a pong) arrives for this long is closed with
    /// code 4009, in milliseconds (default 60 s).
    pub dead_peer_timeout_ms: u64,
    /// How long one write may wait for a client that does not read before it is cut off as a
    /// slow consumer (close code 4008), in milliseconds (default 10 s).
    pub write_timeout_ms: u64,
    /// How long a new connection may take to send its `subscribe` frame, in milliseconds.
    pub subscribe_timeout_ms: u64,
    /// Largest frame a client may send, in bytes (default 128 KiB); larger ones close the
    /// connection with code 1009.
    pub max_frame_bytes: usize,
    /// Most `send` frames one connection may have waiting for their handlers (default 16);
    /// more are answered with a `too_many_sends` error.
    pub sends_in_flight: usize,
}

impl Default for WebSocketConfig {
    fn default() -> Self {
        WebSocketConfig {
            ping_interval_ms: 25_000,
            dead_peer_timeout_ms: 60_000,
            write_timeout_ms: 10_000,
            subscribe_timeout_ms: 10_000,
            max_frame_bytes: 128 * 1024,
            sends_in_flight: 16,
        }
    }
}

/// `[sse]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SseConfig {
    /// How often an idle stream gets a comment line, so that proxies keep it open, in
    /// milliseconds (default 15 s).
    pub heartbeat_ms: u64,
    /// The reconnection delay the server suggests to `EventSource` (`retry:`), in milliseconds.
    pub retry_ms: u64,
}

impl Default for SseConfig {
    fn default() -> Self {
        SseConfig {
            heartbeat_ms: 15_000,
            retry_ms: 2_000,
        }
    }
}

/// The transports this build serves.
pub const IMPLEMENTED_TRANSPORTS: &[&str] = &["websocket", "sse", "poll"];

impl Config {
    /// Checks every setting; call once at start.
    ///
    /// # Errors
    /// A message naming the setting and what is wrong with it.
    pub fn validate(&self) -> Result<(), String> {
        if !["auto", "on", "off"].contains(&self.server.demo.as_str()) {
            return Err(format!(
                "server.demo must be auto, on or off, not {:?}",
                self.server.demo
            ));
        }
        let e = &self.engine;
        if e.check_interval_ms < 200 {
            return Err("engine.check_interval_ms must be at least 200".into());
        }
        if e.retention_secs == 0 {
            return Err("engine.retention_secs must be at least 1".into());
        }
        if e.purge_interval_secs == 0 {
            return Err("engine.purge_interval_secs must be at least 1".into());
        }
        if self.poll.request_timeout_secs > 300 {
            return Err("poll.request_timeout_secs must be at most 300".into());
        }
        if self.auth.token_ttl_secs < 60 {
            return Err("auth.token_ttl_secs must be at least 60".into());
        }
        for t in &self.transports.enabled {
            if !["websocket", "sse", "poll"].contains(&t.as_str()) {
                return Err(format!(
                    "transports.enabled: unknown transport {t:?} (websocket, sse, poll)"
                ));
            }
        }
        if !self
            .transports
            .enabled
            .iter()
            .any(|t| IMPLEMENTED_TRANSPORTS.contains(&t.as_str()))
        {
            return Err(format!(
                "transports.enabled must include one of {IMPLEMENTED_TRANSPORTS:?}"
            ));
        }
        for c in &self.components.enabled {
            if c != "*" {
                crate::channel::validate_component(c)
                    .map_err(|e| format!("components.enabled: {e}"))?;
            }
        }
        for (c, url) in &self.webhooks.components {
            crate::channel::validate_component(c)
                .map_err(|e| format!("webhooks.components: {e}"))?;
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(format!(
                    "webhooks.components.{c}: {url:?} is not an http(s) URL"
                ));
            }
        }
        let l = &self.limits;
        if !(1..=MAX_PAYLOAD_DEPTH).contains(&l.payload_depth) {
            return Err(format!(
                "limits.payload_depth must be 1..={MAX_PAYLOAD_DEPTH}"
            ));
        }
        if l.payload_bytes == 0 || l.request_bytes < l.payload_bytes {
            return Err(
                "limits: payload_bytes must be at least 1 and request_bytes at least payload_bytes"
                    .into(),
            );
        }
        if l.batch_events == 0 || l.subscriptions == 0 || l.poll_events == 0 {
            return Err(
                "limits: batch_events, subscriptions and poll_events must be at least 1".into(),
            );
        }
        let w = &self.websocket;
        if w.ping_interval_ms < 100 || w.dead_peer_timeout_ms <= w.ping_interval_ms {
            return Err("websocket: ping_interval_ms must be at least 100 and dead_peer_timeout_ms above it".into());
        }
        if w.write_timeout_ms == 0 || w.subscribe_timeout_ms == 0 || w.sends_in_flight == 0 {
            return Err("websocket: write_timeout_ms, subscribe_timeout_ms and sends_in_flight must be at least 1".into());
        }
        if w.max_frame_bytes < 1024 {
            return Err("websocket.max_frame_bytes must be at least 1024".into());
        }
        if self.sse.heartbeat_ms < 100 {
            return Err("sse.heartbeat_ms must be at least 100".into());
        }
        if self.hub.cache_events == 0 {
            return Err("hub.cache_events must be at least 1".into());
        }
        Ok(())
    }

    /// The transports page configs list: enabled, implemented, in the configured order.
    pub fn page_transports(&self) -> Vec<String> {
        self.transports
            .enabled
            .iter()
            .filter(|t| IMPLEMENTED_TRANSPORTS.contains(&t.as_str()))
            .cloned()
            .collect()
    }

    /// Whether the configuration enables `component` (`*` enables all).
    pub fn component_enabled(&self, component: &str) -> bool {
        self.components
            .enabled
            .iter()
            .any(|c| c == "*" || c == component)
    }
}
