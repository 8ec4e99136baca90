//! A hardened HTTP/1.1 server loop for the router: what `axum::serve` leaves out, so that an
//! embedding application gets the same protection as `realtime serve`.
//!
//! ```no_run
//! # async fn demo(rt: realtime::Realtime) -> std::io::Result<()> {
//! use realtime::{bind, serve, ServeOptions};
//! let listener = bind("0.0.0.0:8787").await?;
//! let options = ServeOptions::from_config(rt.config());
//! let cancel = rt.shutdown_token().clone();
//! let shutdown = async move {
//!     let _ = tokio::signal::ctrl_c().await;
//!     cancel.cancel(); // ends long-polls, SSE streams and WebSockets (close 1012)
//! };
//! serve(listener, rt.router(), options, shutdown).await?;
//! rt.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! What it adds, per connection (settings in `[server]`, see `docs/protocol.md`, "Timeouts and
//! connection limits"):
//! - **header timeout** (`header_timeout_ms`): a request's headers must arrive within it,
//!   counted from the accept (first request) or from the first byte (later requests), so a
//!   client dribbling headers (slowloris) is disconnected;
//! - **idle timeout** (`idle_timeout_ms`): a keep-alive connection with no request in flight
//!   is closed after it. A response still being written (an SSE stream, a long-poll) is a
//!   request in flight, and an upgraded WebSocket has left this loop, so neither is cut;
//! - **body timeout** (`body_timeout_ms`): a request body must arrive in full within it,
//!   counted from the end of the headers; a stalled body is answered 408 (`body_timeout`, the
//!   JSON error shape) and the connection is closed;
//! - **connection cap** (`max_connections`, lowered to fit the open-file limit): past it,
//!   `reserve_connections` more are admitted for the application's paths only
//!   ([`ServeOptions::reserve_paths`]) with short timeouts, and past those a new connection is
//!   answered 503 with `Retry-After` and closed at once, so the kernel's backlog does not fill
//!   silently; upgraded WebSockets count until they close;
//! - **accept errors** at the file-descriptor limit (`EMFILE`/`ENFILE`) back off 100 ms, are
//!   logged at most once per 10 s and counted in [`ACCEPT_ERRORS`];
//! - **bounded shutdown**: when `shutdown` completes the listener closes, idle connections
//!   close, requests in flight may finish until `drain_timeout_ms`; what is still open then is
//!   dropped and `serve` returns;
//! - every request carries axum's [`ConnectInfo<SocketAddr>`](axum::extract::ConnectInfo), the
//!   peer's address, as with `into_make_service_with_connect_info`.
//!
//! Only HTTP/1.1 is served (browsers reach the server over HTTP/1.1 or through a proxy that
//! terminates HTTP/2), which keeps every one of these limits in one place.
//!
//! # Shutdown of streams
//!
//! SSE streams, long-polls and upgraded WebSockets do not end because the HTTP server stops:
//! they end when the node's cancellation token fires ([`Realtime::shutdown_token`]
//! `.cancel()`, or [`Realtime::shutdown`]): long-polls answer with their cursor, SSE streams
//! end, WebSockets close with 1012 (reconnect elsewhere). Cancel it first, as above. An
//! embedder that uses `axum::serve(..).with_graceful_shutdown(signal)` instead of this loop
//! must do the same inside `signal` — otherwise axum waits for those streams for ever — and
//! should bound the wait itself (`tokio::time::timeout` around the server future), because
//! axum's graceful shutdown has no deadline.
//!
//! [`Realtime::shutdown_token`]: crate::Realtime::shutdown_token
//! [`Realtime::shutdown`]: crate::Realtime::shutdown

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::ConnectInfo;
use axum::http::{header, HeaderValue, Request, Response, StatusCode};
use axum::Router;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use metrics::{counter, describe_counter, describe_gauge, gauge, Unit};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{Notify, Semaphore};
use tokio::time::{sleep_until, Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::config::Config;
use crate::transport::WriteTimeoutIo;

/// Open HTTP connections (upgraded WebSockets included), over every listener.
pub(crate) const HTTP_CONNECTIONS: &str = "realtime_http_connections";
/// Connections answered 503 and closed at once because the cap and the reserve were full, and
/// requests for other than the reserve paths on a reserve connection.
pub(crate) const HTTP_REFUSED: &str = "realtime_http_refused_total";
/// Connections closed, or requests answered 408, by a timeout: `kind` = `header`, `idle`, `body`.
pub(crate) const HTTP_TIMEOUTS: &str = "realtime_http_timeouts_total";
/// Failed accepts, by `kind`: `fd_limit` (`EMFILE`/`ENFILE`) or `other`.
pub(crate) const ACCEPT_ERRORS: &str = "realtime_accept_errors_total";

/// The listen backlog [`bind`] asks for (the kernel may cap it: `net.core.somaxconn`).
pub(crate) const LISTEN_BACKLOG: u32 = 1024;
/// Descriptors kept out of the connection cap for the engine, files, webhooks and logs.
pub(crate) const FD_RESERVE: usize = 128;
/// The header and idle timeouts of a reserve connection (at most; shorter settings win).
pub(crate) const RESERVE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a failing `accept` waits before it tries again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// At most one log line per this long about failing accepts.
const ACCEPT_LOG_EVERY: Duration = Duration::from_secs(10);
/// Refused connections kept open at most this long to read what the client sent, so that the
/// 503 reaches it instead of a reset.
const REFUSE_LINGER: Duration = Duration::from_secs(1);
/// Refused connections lingering at once; more are closed without waiting.
const REFUSE_LINGER_MAX: usize = 32;
/// What `Retry-After` says on a 503, in seconds.
const RETRY_AFTER_SECS: u32 = 5;

/// The limits one listener enforces. [`ServeOptions::from_config`] reads them from `[server]`.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// How long a request's headers may take (slowloris protection).
    pub header_timeout: Duration,
    /// How long a connection may wait for its next request with nothing in flight.
    pub idle_timeout: Duration,
    /// How long a request body may take to arrive in full, from the end of its headers.
    pub body_timeout: Duration,
    /// Most connections served at once (lowered at start to fit the open-file limit).
    pub max_connections: usize,
    /// Connections admitted past `max_connections` for `reserve_paths` only.
    pub reserve_connections: usize,
    /// What a reserve connection may ask for: a path ending in `/` is a prefix, any other must
    /// match exactly. Default `/healthz`, `/api/`, `/metrics`: the application's side.
    pub reserve_paths: Vec<String>,
    /// How long shutdown waits for requests in flight before it drops their connections.
    pub drain_timeout: Duration,
    /// How long a write may wait for a client that takes no bytes before the connection is
    /// dropped (`limits.write_timeout_ms`).
    pub write_timeout: Duration,
}

impl ServeOptions {
    /// The limits set in `[server]`, and the write timeout of `[limits]`.
    pub fn from_config(config: &Config) -> Self {
        let server = &config.server;
        ServeOptions {
            write_timeout: Duration::from_millis(config.limits.write_timeout_ms),
            header_timeout: Duration::from_millis(server.header_timeout_ms),
            idle_timeout: Duration::from_millis(server.idle_timeout_ms),
            body_timeout: Duration::from_millis(server.body_timeout_ms),
            max_connections: server.max_connections,
            reserve_connections: server.reserve_connections,
            reserve_paths: vec!["/healthz".into(), "/api/".into(), "/metrics".into()],
            drain_timeout: Duration::from_millis(server.drain_timeout_ms),
        }
    }

    fn reserved(&self, path: &str) -> bool {
        self.reserve_paths.iter().any(|p| {
            if p.ends_with('/') {
                path.starts_with(p.as_str())
            } else {
                path == p
            }
        })
    }

    /// Lowers the cap (and if need be the reserve) so that connections cannot use up the
    /// `soft` open-file limit: [`FD_RESERVE`] descriptors stay free for everything else.
    fn fit_to_fd_limit(&mut self, soft: usize) {
        let available = soft.saturating_sub(FD_RESERVE).max(2);
        if self
            .max_connections
            .saturating_add(self.reserve_connections)
            <= available
        {
            return;
        }
        let reserve = self.reserve_connections.min(available / 2);
        let max = (available - reserve).min(self.max_connections).max(1);
        tracing::warn!(
            open_file_limit = soft,
            max_connections = max,
            reserve_connections = reserve,
            configured = self.max_connections,
            "the open-file limit is lower than the connection cap needs: lowered the cap (raise `ulimit -n` / LimitNOFILE)"
        );
        self.max_connections = max;
        self.reserve_connections = reserve;
    }
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions::from_config(&Config::default())
    }
}

/// Binds `addr` (`host:port`; port 0 picks a free port) with a listen backlog of
/// 1,024 rather than the usual 128, so bursts of connections wait in the kernel
/// instead of being refused.
///
/// # Errors
/// The address does not resolve, or none of its addresses can be bound.
pub async fn bind(addr: &str) -> io::Result<TcpListener> {
    let mut last = None;
    for a in tokio::net::lookup_host(addr).await? {
        let socket = if a.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        #[cfg(unix)]
        socket.set_reuseaddr(true)?;
        match socket.bind(a) {
            Ok(()) => return socket.listen(LISTEN_BACKLOG),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{addr} resolves to no address"),
        )
    }))
}

/// The soft open-file limit of this process, where the system tells it (Linux).
pub(crate) fn open_file_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Serves `app` on `listener` with `options` until `shutdown` completes, then drains: the
/// listener closes, idle connections close, requests in flight may finish until
/// `options.drain_timeout`, and whatever is still open then is dropped. Cancel the node's
/// token in `shutdown` so that streams end (see the module's documentation).
///
/// # Errors
/// None today: accept errors are retried (and logged, throttled); the `Result` leaves room
/// for failures that should stop the server.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    mut options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> io::Result<()> {
    describe();
    if let Some(soft) = open_file_limit() {
        options.fit_to_fd_limit(soft);
    }
    let shared = Arc::new(Shared {
        app,
        options,
        open: AtomicUsize::new(0),
    });
    let graceful = CancellationToken::new();
    let hard = CancellationToken::new();
    let tracker = TaskTracker::new();
    let lingering = Arc::new(Semaphore::new(REFUSE_LINGER_MAX));
    let mut errors = Throttle::default();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            biased;
            () = &mut shutdown => break,
            r = listener.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                let kind = if is_fd_limit(&e) { "fd_limit" } else { "other" };
                counter!(ACCEPT_ERRORS, "kind" => kind).increment(1);
                errors.log(&e, Instant::now());
                tokio::select! {
                    () = &mut shutdown => break,
                    () = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                }
            }
        };
        let open = shared.open.load(Ordering::Relaxed);
        let o = &shared.options;
        let reserve = if open < o.max_connections {
            false
        } else if open < o.max_connections.saturating_add(o.reserve_connections) {
            true
        } else {
            refuse(stream, &lingering);
            continue;
        };
        let slot = Slot::take(&shared);
        let conn = Connection {
            shared: shared.clone(),
            peer,
            reserve,
            state: Arc::new(ConnState::new()),
        };
        let (graceful, hard) = (graceful.clone(), hard.clone());
        tracker.spawn(conn.run(stream, slot, graceful, hard));
    }
    drop(listener);
    graceful.cancel();
    tracker.close();
    let drain = shared.options.drain_timeout;
    if tokio::time::timeout(drain, tracker.wait()).await.is_err() {
        tracing::warn!(
            connections = tracker.len(),
            "connections still open after the drain timeout: dropping them"
        );
        hard.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(1), tracker.wait()).await;
    }
    Ok(())
}

fn describe() {
    describe_gauge!(
        HTTP_CONNECTIONS,
        Unit::Count,
        "Open HTTP connections, upgraded WebSockets included."
    );
    describe_counter!(
        HTTP_REFUSED,
        Unit::Count,
        "Connections and requests answered 503 at the connection cap."
    );
    describe_counter!(
        HTTP_TIMEOUTS,
        Unit::Count,
        "Connections closed or requests answered 408 by a header, idle or body timeout."
    );
    describe_counter!(
        ACCEPT_ERRORS,
        Unit::Count,
        "Failed accepts: fd_limit (EMFILE/ENFILE) or other."
    );
}

/// What every connection of one listener shares.
struct Shared {
    app: Router,
    options: ServeOptions,
    /// Connections open now (upgraded WebSockets included).
    open: AtomicUsize,
}

/// One place in the connection count, given back when the socket closes (it lives in the
/// socket's wrapper, so an upgraded WebSocket keeps it until it closes).
struct Slot(Arc<Shared>);

impl Slot {
    fn take(shared: &Arc<Shared>) -> Slot {
        shared.open.fetch_add(1, Ordering::Relaxed);
        gauge!(HTTP_CONNECTIONS).increment(1.0);
        Slot(shared.clone())
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
        gauge!(HTTP_CONNECTIONS).decrement(1.0);
    }
}

fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// `EMFILE` (24) or `ENFILE` (23): the same numbers on Linux, the BSDs and macOS.
fn is_fd_limit(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(23 | 24))
}

/// Logs accept errors at most once per [`ACCEPT_LOG_EVERY`], with how many were not logged.
#[derive(Default)]
struct Throttle {
    last: Option<Instant>,
    unlogged: u64,
}

impl Throttle {
    fn log(&mut self, e: &io::Error, now: Instant) {
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < ACCEPT_LOG_EVERY)
        {
            self.unlogged += 1;
            return;
        }
        let hint = if is_fd_limit(e) {
            " (the open-file limit: lower server.max_connections or raise `ulimit -n`)"
        } else {
            ""
        };
        tracing::error!(
            error = %e,
            "accept failed{hint}; retrying every 100 ms, {} more since the last report",
            self.unlogged
        );
        self.last = Some(now);
        self.unlogged = 0;
    }
}

/// A small JSON error answer that closes the connection.
fn error_response(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    let body = serde_json::json!({"error": {"code": code, "message": message}}).to_string();
    let mut res = Response::new(Body::from(body));
    *res.status_mut() = status;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    if status == StatusCode::SERVICE_UNAVAILABLE {
        h.insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
    }
    res
}

const BUSY_CODE: &str = "too_many_connections";
const BUSY_MESSAGE: &str = "the server is at its connection limit; retry later";

/// Answers 503 on a connection past the cap and the reserve, without reading the request.
fn refuse(stream: TcpStream, lingering: &Arc<Semaphore>) {
    counter!(HTTP_REFUSED, "why" => "connections").increment(1);
    let body =
        serde_json::json!({"error": {"code": BUSY_CODE, "message": BUSY_MESSAGE}}).to_string();
    let head = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: {RETRY_AFTER_SECS}\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    // A new socket's send buffer is empty: this does not block, and a short write only costs
    // the client its answer.
    let _ = stream.try_write(head.as_bytes());
    // Closing with the request unread would reset the connection and could discard the answer
    // before the client reads it: read and discard for a moment, a few connections at a time.
    let Ok(permit) = lingering.clone().try_acquire_owned() else {
        return;
    };
    tokio::spawn(async move {
        let _permit = permit;
        let mut stream = stream;
        let _ = stream.shutdown().await;
        let mut sink = [0u8; 1024];
        let _ = tokio::time::timeout(REFUSE_LINGER, async {
            while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
        })
        .await;
    });
}

/// Milliseconds since the connection's start; `NONE` = not set.
const NONE: u64 = u64::MAX;

/// What the watchdog of one connection needs to know about it.
struct ConnState {
    start: Instant,
    /// Requests whose handler runs or whose response body is still being written.
    in_flight: AtomicUsize,
    /// When the last request finished (`NONE`: none yet).
    last_done_ms: AtomicU64,
    /// When the first byte of the next request arrived while none was in flight.
    head_started_ms: AtomicU64,
    /// Wakes the watchdog when its deadline may have changed.
    changed: Notify,
}

/// Which timeout closed a connection.
#[derive(Clone, Copy, Debug)]
enum Timeout {
    Header,
    Idle,
}

impl Timeout {
    fn label(self) -> &'static str {
        match self {
            Timeout::Header => "header",
            Timeout::Idle => "idle",
        }
    }
}

impl ConnState {
    fn new() -> Self {
        ConnState {
            start: Instant::now(),
            in_flight: AtomicUsize::new(0),
            last_done_ms: AtomicU64::new(NONE),
            head_started_ms: AtomicU64::new(NONE),
            changed: Notify::new(),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(NONE - 1)
    }

    fn at(&self, ms: u64) -> Instant {
        self.start + Duration::from_millis(ms)
    }

    /// Bytes arrived: with nothing in flight they start the next request's headers.
    fn on_read(&self) {
        if self.in_flight.load(Ordering::Acquire) == 0
            && self.head_started_ms.load(Ordering::Acquire) == NONE
        {
            self.head_started_ms.store(self.now_ms(), Ordering::Release);
            self.changed.notify_one();
        }
    }

    fn request_started(&self) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.head_started_ms.store(NONE, Ordering::Release);
    }

    fn request_done(&self) {
        self.last_done_ms.store(self.now_ms(), Ordering::Release);
        self.head_started_ms.store(NONE, Ordering::Release);
        if self.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.changed.notify_one();
        }
    }

    /// When the connection is to be closed unless something happens first; `None` while a
    /// request is in flight.
    fn deadline(&self, header: Duration, idle: Duration) -> Option<(Instant, Timeout)> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let last = self.last_done_ms.load(Ordering::Acquire);
        if last == NONE {
            // The first request's headers count from the accept.
            return Some((self.start + header, Timeout::Header));
        }
        let head = self.head_started_ms.load(Ordering::Acquire);
        if head != NONE {
            return Some((self.at(head) + header, Timeout::Header));
        }
        Some((self.at(last) + idle, Timeout::Idle))
    }
}

/// Ends one request in the watchdog's eyes when dropped (with the response body, or with the
/// handler's future if the client goes away first).
struct InFlight(Arc<ConnState>);

impl InFlight {
    fn start(state: &Arc<ConnState>) -> Self {
        state.request_started();
        InFlight(state.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.request_done();
    }
}

/// The socket, noting reads for the watchdog and holding the connection's place in the count.
struct Tracked {
    inner: WriteTimeoutIo<TcpStream>,
    state: Arc<ConnState>,
    _slot: Slot,
}

impl AsyncRead for Tracked {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.state.on_read();
        }
        r
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The request body must be complete by `deadline`; after it, reading fails and the request is
/// answered 408.
struct TimedBody {
    inner: Incoming,
    deadline: Instant,
    sleep: Option<Pin<Box<Sleep>>>,
    timed_out: Arc<AtomicBool>,
}

#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within the body timeout")]
struct BodyTimeout;

impl hyper::body::Body for TimedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(other) => Poll::Ready(other.map(|f| f.map_err(Into::into))),
            Poll::Pending => {
                let deadline = this.deadline;
                let sleep = this
                    .sleep
                    .get_or_insert_with(|| Box::pin(sleep_until(deadline)));
                if sleep.as_mut().poll(cx).is_ready() {
                    this.timed_out.store(true, Ordering::Release);
                    return Poll::Ready(Some(Err(BodyTimeout.into())));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that ends the request (for the watchdog) when it is dropped.
struct Guarded {
    inner: Body,
    _in_flight: InFlight,
}

impl hyper::body::Body for Guarded {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// One accepted connection.
struct Connection {
    shared: Arc<Shared>,
    peer: SocketAddr,
    /// Admitted past the cap: reserve paths only, short timeouts.
    reserve: bool,
    state: Arc<ConnState>,
}

impl Connection {
    async fn run(
        self,
        stream: TcpStream,
        slot: Slot,
        graceful: CancellationToken,
        hard: CancellationToken,
    ) {
        let _ = stream.set_nodelay(true);
        let o = &self.shared.options;
        let (header, idle) = if self.reserve {
            (
                o.header_timeout.min(RESERVE_TIMEOUT),
                o.idle_timeout.min(RESERVE_TIMEOUT),
            )
        } else {
            (o.header_timeout, o.idle_timeout)
        };
        let io = TokioIo::new(Tracked {
            inner: WriteTimeoutIo::new(stream, o.write_timeout),
            state: self.state.clone(),
            _slot: slot,
        });
        let state = self.state.clone();
        let peer = self.peer;
        let this = Arc::new(self);
        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
            let this = this.clone();
            async move { Ok::<_, Infallible>(this.handle(req).await) }
        });
        let mut builder = hyper::server::conn::http1::Builder::new();
        // Our watchdog keeps time (hyper's header timeout would also cut idle keep-alives).
        builder.header_read_timeout(None);
        let conn = builder.serve_connection(io, service).with_upgrades();
        tokio::pin!(conn);
        let mut draining = false;
        loop {
            let changed = state.changed.notified();
            let deadline = state.deadline(header, idle);
            let expiry = async {
                match deadline {
                    Some((at, _)) => sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                    return;
                }
                () = changed => {}
                () = expiry => {
                    if let Some((at, kind)) = state.deadline(header, idle) {
                        if at <= Instant::now() {
                            counter!(HTTP_TIMEOUTS, "kind" => kind.label()).increment(1);
                            tracing::debug!(%peer, timeout = kind.label(), "closing the connection");
                            return;
                        }
                    }
                }
                () = graceful.cancelled(), if !draining => {
                    draining = true;
                    conn.as_mut().graceful_shutdown();
                }
                () = hard.cancelled() => return,
            }
        }
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        let in_flight = InFlight::start(&self.state);
        let o = &self.shared.options;
        if self.reserve && !o.reserved(req.uri().path()) {
            counter!(HTTP_REFUSED, "why" => "reserve").increment(1);
            let res = error_response(StatusCode::SERVICE_UNAVAILABLE, BUSY_CODE, BUSY_MESSAGE);
            return guard(res, in_flight);
        }
        let timed_out = Arc::new(AtomicBool::new(false));
        let (parts, body) = req.into_parts();
        let body = TimedBody {
            inner: body,
            deadline: Instant::now() + o.body_timeout,
            sleep: None,
            timed_out: timed_out.clone(),
        };
        let mut req = Request::from_parts(parts, Body::new(body));
        req.extensions_mut().insert(ConnectInfo(self.peer));
        let res = match self.shared.app.clone().oneshot(req).await {
            Ok(res) => res,
            Err(never) => match never {},
        };
        if timed_out.load(Ordering::Acquire) {
            counter!(HTTP_TIMEOUTS, "kind" => "body").increment(1);
            tracing::debug!(peer = %self.peer, "request body timed out");
            let res = error_response(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                "the request body did not arrive in time",
            );
            return guard(res, in_flight);
        }
        guard(res, in_flight)
    }
}

fn guard(res: Response<Body>, in_flight: InFlight) -> Response<Body> {
    res.map(|inner| {
        Body::new(Guarded {
            inner,
            _in_flight: in_flight,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;

    #[test]
    fn the_cap_fits_the_open_file_limit() {
        let mut o = ServeOptions::default();
        o.fit_to_fd_limit(1_000_000);
        assert_eq!((o.max_connections, o.reserve_connections), (10_000, 64));
        o.fit_to_fd_limit(1024);
        assert_eq!(o.max_connections + o.reserve_connections, 1024 - FD_RESERVE);
        assert_eq!(o.reserve_connections, 64);
        o.fit_to_fd_limit(100);
        assert!(o.max_connections >= 1 && o.max_connections + o.reserve_connections <= 2);
    }

    /// At the file-descriptor limit `accept` fails on every try (every 100 ms): one line per
    /// 10 s, not one per try.
    #[test]
    fn accept_errors_are_logged_once_per_interval() {
        let emfile = io::Error::from_raw_os_error(24);
        assert!(is_fd_limit(&emfile) && !is_connection_error(&emfile));
        let mut t = Throttle::default();
        let mut now = Instant::now();
        t.log(&emfile, now);
        let first = t.last;
        for _ in 0..50 {
            now += ACCEPT_BACKOFF;
            t.log(&emfile, now);
        }
        assert_eq!(t.last, first, "5 s of failures: still the first report");
        assert_eq!(t.unlogged, 50);
        now += ACCEPT_LOG_EVERY;
        t.log(&emfile, now);
        assert_ne!(t.last, first);
        assert_eq!(t.unlogged, 0);
    }

    #[test]
    fn reserve_paths_are_prefixes_or_exact() {
        let o = ServeOptions::default();
        assert!(o.reserved("/healthz") && o.reserved("/api/notify") && o.reserved("/metrics"));
        assert!(!o.reserved("/healthzz") && !o.reserved("/poll") && !o.reserved("/api"));
    }

    /// Every request carries the peer's address, as `into_make_service_with_connect_info`
    /// gives it, so handlers can extract `ConnectInfo<SocketAddr>`.
    #[tokio::test]
    async fn requests_carry_the_peer_address() {
        let app = Router::new().route(
            "/peer",
            get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.to_string() }),
        );
        let listener = bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let stop = CancellationToken::new();
        let server = tokio::spawn(serve(
            listener,
            app,
            ServeOptions::default(),
            stop.clone().cancelled_owned(),
        ));
        let mut client = TcpStream::connect(addr).await.expect("connect");
        let local = client.local_addr().expect("local addr");
        client
            .write_all(b"GET /peer HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .expect("write");
        let mut answer = String::new();
        client.read_to_string(&mut answer).await.expect("read");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with(&local.to_string()), "{answer}");
        stop.cancel();
        server.await.expect("joins").expect("serves");
    }
}
