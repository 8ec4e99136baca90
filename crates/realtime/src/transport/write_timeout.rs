//! A write timeout for every HTTP response: a connection whose client takes no bytes for
//! `limits.write_timeout_ms` while the server has bytes for it is dropped.
//!
//! A response body (an SSE stream, a long-poll answer) is pulled by the HTTP connection only
//! after it wrote the previous bytes, so a client that does not read stops the pulling, and
//! nothing inside the body can see it: the stall is only visible to the socket. This wraps the
//! socket: a write that stays pending (the kernel's buffer to that client is full) for longer
//! than the timeout fails with `TimedOut`, which ends the connection, frees what its response
//! held, and lets an SSE client resume by `Last-Event-ID`. An idle connection is not affected:
//! only a write that waits counts. WebSockets have their own, earlier, timeout (close 4008).
//!
//! The `realtime` binary serves through it (the module is internal: the crate's own tests
//! reach it through `testing::internal`):
//!
//! ```ignore
//! # async fn serve(app: axum::Router) -> std::io::Result<()> {
//! use realtime::transport::{PeerAddr, WriteTimeoutListener};
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8787").await?;
//! let listener = WriteTimeoutListener::new(listener, std::time::Duration::from_secs(10));
//! // `PeerAddr` hands the client's address to the per-address limits (as
//! // `ConnectInfo<SocketAddr>` does for a bare `TcpListener`).
//! axum::serve(listener, app.into_make_service_with_connect_info::<PeerAddr>()).await
//! # }
//! ```

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use std::net::SocketAddr;

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// A listener whose connections have a write timeout.
#[derive(Debug)]
#[cfg_attr(not(feature = "test-util"), allow(unreachable_pub, dead_code))]
pub struct WriteTimeoutListener<L> {
    inner: L,
    timeout: Duration,
}

impl<L> WriteTimeoutListener<L> {
    /// Wraps `inner`: its connections fail a write pending for longer than `timeout`.
    #[cfg_attr(not(feature = "test-util"), allow(unreachable_pub, dead_code))]
    pub fn new(inner: L, timeout: Duration) -> Self {
        WriteTimeoutListener { inner, timeout }
    }
}

impl<L: Listener> Listener for WriteTimeoutListener<L> {
    type Io = WriteTimeoutIo<L::Io>;
    type Addr = L::Addr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (io, addr) = self.inner.accept().await;
        (WriteTimeoutIo::new(io, self.timeout), addr)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// The peer address of a connection accepted by a [`WriteTimeoutListener`], for
/// `into_make_service_with_connect_info::<PeerAddr>()` (axum's `SocketAddr` connect info only
/// knows its own listeners). The limits read it as they read `ConnectInfo<SocketAddr>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(feature = "test-util"), allow(unreachable_pub, dead_code))]
pub struct PeerAddr(pub SocketAddr);

impl<L> Connected<IncomingStream<'_, WriteTimeoutListener<L>>> for PeerAddr
where
    L: Listener<Addr = SocketAddr>,
{
    fn connect_info(stream: IncomingStream<'_, WriteTimeoutListener<L>>) -> Self {
        PeerAddr(*stream.remote_addr())
    }
}

/// A connection whose writes may wait at most a given time.
#[derive(Debug)]
#[cfg_attr(not(feature = "test-util"), allow(unreachable_pub, dead_code))]
pub struct WriteTimeoutIo<T> {
    inner: T,
    timeout: Duration,
    /// Set while a write waits; cleared when one makes progress.
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<T> WriteTimeoutIo<T> {
    /// Wraps one connection.
    pub(crate) fn new(inner: T, timeout: Duration) -> Self {
        WriteTimeoutIo {
            inner,
            timeout,
            stalled: None,
        }
    }

    /// After the inner write answered `poll`: progress clears the clock, pending starts it (or
    /// fails when it has run out).
    fn watch<R>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        match poll {
            Poll::Ready(r) => {
                self.stalled = None;
                Poll::Ready(r)
            }
            Poll::Pending => {
                let timeout = self.timeout;
                let sleep = self
                    .stalled
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        metrics::counter!(crate::telemetry::SLOW_CONSUMERS).increment(1);
                        tracing::debug!("a client did not read its answer in time; dropping it");
                        Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "the client did not read within the write timeout",
                        )))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for WriteTimeoutIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WriteTimeoutIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.watch(cx, poll)
    }
}
