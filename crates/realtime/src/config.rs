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
    /// Where `/metrics` is served and what it asks for (used by the binary).
    pub metrics: MetricsConfig,
    /// Rates of what pages and applications may send (token buckets); over them, 429.
    pub rate: RateConfig,
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
    /// How long shutdown waits for open requests and tasks, in milliseconds (default 5 s).
    /// Connections still open after it are dropped and the process exits.
    pub drain_timeout_ms: u64,
    /// How long a client may take to send a request's headers, in milliseconds (default 10 s),
    /// counted from the connection's accept or from the first byte of a later request: a client
    /// that dribbles headers (slowloris) is disconnected.
    pub header_timeout_ms: u64,
    /// How long a keep-alive connection may wait for its next request with nothing in flight,
    /// in milliseconds (default 60 s). Responses still being written (SSE streams, long-polls)
    /// and upgraded WebSockets are never idle.
    pub idle_timeout_ms: u64,
    /// How long a request body may take to arrive in full, in milliseconds (default 30 s),
    /// counted from the end of the headers. A stalled body is answered 408 and the connection
    /// closed.
    pub body_timeout_ms: u64,
    /// Most connections served at once per listener (default 10,000; WebSockets count while
    /// open). Lowered at start to fit the process's open-file limit, keeping descriptors for the
    /// engine, files, webhooks and the reserve. Past it (and the reserve), a new connection is
    /// answered 503 with `Retry-After` and closed.
    pub max_connections: usize,
    /// Connections admitted past `max_connections` for the application's paths only
    /// (`/healthz`, `/api/*`, `/metrics`), with short timeouts (default 64), so the app API
    /// stays reachable while browsers hold every other connection. Other paths on them are
    /// answered 503 with `Retry-After`.
    pub reserve_connections: usize,
    /// A second address serving the same routes with its own connection cap, for the
    /// application only (bind it to an internal interface); empty = none (the default).
    pub api_listen: String,
    /// The demo page at `/demo` (the original's test page), served by a node of its own whose
    /// tokens work nowhere else: `auto` (the default) serves it when listening on a loopback
    /// address, to requests that carry no forwarding header (`Forwarded`, `X-Forwarded-*`,
    /// `X-Real-IP`: a reverse proxy's are refused with 404); `on` always; `off` never.
    pub demo: String,
    /// Proxies whose forwarding headers are believed: IP addresses or CIDR ranges
    /// (`10.0.0.0/8`, `::1`). Only for a request whose peer is one of them are
    /// `X-Forwarded-For` (the client address for per-IP limits) and `X-Forwarded-Proto` /
    /// `X-Forwarded-Host` (the base URL of page configs) honoured. Empty (the default) trusts
    /// no forwarding header: anyone can send one.
    pub trusted_proxies: Vec<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:8787".into(),
            data_dir: "./realtime-data".into(),
            public_url: String::new(),
            allowed_origins: vec!["*".into()],
            drain_timeout_ms: 5_000,
            header_timeout_ms: 10_000,
            idle_timeout_ms: 60_000,
            body_timeout_ms: 30_000,
            max_connections: 10_000,
            reserve_connections: 64,
            api_listen: String::new(),
            demo: "auto".into(),
            trusted_proxies: Vec::new(),
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
    /// Most bytes of event JSON in one poll answer, one SSE batch or one WebSocket batch
    /// (default 1 MiB). A batch is cut after the event that reaches it (always at least one
    /// event) and its cursor points at the last event included, so the client continues with
    /// the rest. This, not `poll_events`, bounds what one connection holds when events are large.
    pub batch_bytes: usize,
    /// An HTTP response or SSE stream whose client takes no bytes for this long is dropped, in
    /// milliseconds (default 10 s, as `websocket.write_timeout_ms`). Enforced on every
    /// connection by [`crate::serve::serve`] (the `realtime` binary uses it); an embedder that
    /// serves with `axum::serve` instead has no such timeout: serve with [`crate::serve`].
    /// An SSE client resumes by `Last-Event-ID`.
    pub write_timeout_ms: u64,
    /// Most open streaming connections (WebSockets, SSE streams, waiting long-polls) of one
    /// user on this node (default 50; 0 = no limit). Over it: 429 `too_many_connections`
    /// (WebSocket: close 1013).
    pub connections_per_user: usize,
    /// Most open streaming connections from one client address on this node (default 500;
    /// 0 = no limit). The address is the peer's, or `X-Forwarded-For` from a trusted proxy;
    /// skipped when the server does not know it.
    pub connections_per_ip: usize,
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
            batch_bytes: 1024 * 1024,
            write_timeout_ms: 10_000,
            connections_per_user: 50,
            connections_per_ip: 500,
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
    /// Longest webhook answer relayed to a page, in bytes (default 1 MiB). A longer one is
    /// cut off as it streams and the page gets 502 `webhook_failed`.
    pub max_response_bytes: usize,
    /// `component = "http://app/realtime-hook"`: where sends for that component go.
    pub components: BTreeMap<String, String>,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        WebhooksConfig {
            timeout_ms: 10_000,
            max_response_bytes: 1024 * 1024,
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
    /// Most bytes the cache may hold (default 64 MiB), counting each event's JSON three times
    /// (its JSON, its WebSocket frame and its SSE record). Whichever of this and `cache_events`
    /// is reached first evicts the oldest events; a cursor older than the cache is answered
    /// from the engine, so large payloads cost engine reads, not memory.
    pub cache_bytes: usize,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            cache_events: 10_000,
            cache_bytes: crate::hub::DEFAULT_CACHE_BYTES,
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

/// `[metrics]`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// A separate address for `/metrics` (such as `10.0.0.11:9187`); when set, `/metrics` is
    /// served there only. Empty (the default) serves it on the main listener, where anyone who
    /// reaches the server can read it unless `token` is set (see docs/deploy.md).
    pub listen: String,
    /// A bearer token that `/metrics` requires (`Authorization: Bearer <token>`), wherever it
    /// is served; empty (the default) requires none.
    pub token: String,
}

/// `[rate]`: token buckets, refilled at `*_per_sec` and holding at most `*_burst`. A request
/// over its rate is answered 429 `rate_limited` with `Retry-After`; nothing is done. A rate of
/// 0 turns that limit off.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateConfig {
    /// Sends to server (`POST /send` and WebSocket `send` frames together) per user per second
    /// (default 20). A WebSocket `send` over it gets a `reply` with error `rate_limited`.
    pub send_per_sec: u32,
    /// How many sends a user may make at once after being quiet (default 40).
    pub send_burst: u32,
    /// `POST /api/notify` requests per API key per second (default 5,000; a batch counts as
    /// one request). The application is trusted; this stops a runaway job, not a user.
    pub notify_per_sec: u32,
    /// How many notify requests one API key may make at once (default 10,000).
    pub notify_burst: u32,
}

impl Default for RateConfig {
    fn default() -> Self {
        RateConfig {
            send_per_sec: 20,
            send_burst: 40,
            notify_per_sec: 5_000,
            notify_burst: 10_000,
        }
    }
}

/// The transports this build serves.
pub const IMPLEMENTED_TRANSPORTS: &[&str] = &["websocket", "sse", "poll"];

impl Config {
    /// Checks every setting; [`crate::Realtime::start`] calls it.
    ///
    /// # Errors
    /// [`crate::Error::Config`] with a message naming the setting and what is wrong with it.
    pub fn validate(&self) -> crate::Result<()> {
        self.check().map_err(crate::Error::Config)
    }

    fn check(&self) -> Result<(), String> {
        if !["auto", "on", "off"].contains(&self.server.demo.as_str()) {
            return Err(format!(
                "server.demo must be auto, on or off, not {:?}",
                self.server.demo
            ));
        }
        let s = &self.server;
        if s.header_timeout_ms == 0 || s.idle_timeout_ms == 0 || s.body_timeout_ms == 0 {
            return Err(
                "server: header_timeout_ms, idle_timeout_ms and body_timeout_ms must be at least 1"
                    .into(),
            );
        }
        if s.max_connections == 0 {
            return Err("server.max_connections must be at least 1".into());
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
        if self.webhooks.max_response_bytes == 0 {
            return Err("webhooks.max_response_bytes must be at least 1".into());
        }
        // Not a silent ignore: pages would get 404 `no handler` for a component the operator
        // meant to serve.
        #[cfg(not(feature = "webhooks"))]
        if let Some(c) = self.webhooks.components.keys().next() {
            return Err(format!(
                "webhooks.components.{c}: this build of realtime has no webhooks (the `webhooks` \
                 cargo feature is off); register a Rust handler with Realtime::handle instead"
            ));
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
        if l.batch_bytes < 1024 || l.write_timeout_ms < 100 {
            return Err(
                "limits: batch_bytes must be at least 1024 and write_timeout_ms at least 100"
                    .into(),
            );
        }
        for p in &self.server.trusted_proxies {
            crate::limit::parse_proxy(p).map_err(|e| format!("server.trusted_proxies: {e}"))?;
        }
        let r = &self.rate;
        if (r.send_per_sec > 0 && r.send_burst == 0)
            || (r.notify_per_sec > 0 && r.notify_burst == 0)
        {
            return Err("rate: a burst must be at least 1 when its rate is on".into());
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
        if self.hub.cache_bytes < 64 * 1024 {
            return Err("hub.cache_bytes must be at least 65536".into());
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
