//! The request-head deadline on the public listeners: a client that opens a
//! connection and sends nothing, or half a request head, is cut off after
//! `request_head_timeout` instead of holding a socket and a task.
//!
//! Pingora 0.9 has no such deadline of its own: with h2c enabled it first
//! waits for 24 bytes (the HTTP/2 preface check) with no timeout at all,
//! then reads the head with a 60 s timeout per read, so a client dripping
//! a byte a minute is never cut off. [`HeadDeadline`] wraps the proxy's
//! [`ServerApp`] and hands it each accepted connection inside a
//! [`DeadlineStream`]: reads fail with `TimedOut` once the deadline passes
//! while a head is incomplete, which pingora treats as a broken connection
//! and closes.
//!
//! When a head starts and ends is read off the bytes by [`HeadScanner`]
//! (a head ends at the first empty line). A connection's first head is
//! timed from the accept; on a kept-alive connection, the next head is timed
//! from its first byte after the previous response (pingora's 60 s
//! keep-alive timeout still bounds the idle time in between). HTTP/2
//! connections (TLS ALPN `h2`, or the h2c preface) are exempt once their
//! preface is read: their frames are not HTTP/1 heads.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::tls::TlsRef;
use pingora::protocols::{
    ALPN, GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl,
    Stream, TimingDigest, UniqueID, UniqueIDType,
};
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::metrics::EdgeMetrics;

/// The HTTP/2 connection preface's first line (RFC 9113 §3.4).
const H2_PREFACE_START: &[u8] = b"PRI * HTTP/2.0\r\n";

/// Where a byte stream is relative to the end of an HTTP/1 request head: a
/// head ends at the first empty line (`\n\n` or `\n\r\n`; httparse accepts
/// both line endings). Pure, fed in chunks of any size.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeadScanner {
    /// 0: mid-line; 1: just after `\n`; 2: just after `\n\r`.
    state: u8,
}

impl HeadScanner {
    /// Feeds `bytes`; returns the offset just past the end of the head if
    /// it ends within them.
    pub fn feed(&mut self, bytes: &[u8]) -> Option<usize> {
        for (i, &byte) in bytes.iter().enumerate() {
            self.state = match (self.state, byte) {
                (1 | 2, b'\n') => {
                    self.state = 0;
                    return Some(i + 1);
                }
                (_, b'\n') => 1,
                (1, b'\r') => 2,
                _ => 0,
            };
        }
        None
    }
}

/// What the stream is waiting for.
#[derive(Debug)]
enum Phase {
    /// Reading a head, which must end before the deadline.
    Head { scanner: HeadScanner, first: bool },
    /// Past a head (its body, the handler, the response being written).
    Message,
    /// A response has been written: the next byte read starts a new head.
    BetweenRequests,
    /// An HTTP/2 connection: not timed here.
    Exempt,
}

/// A connection whose request heads must arrive within a deadline.
pub struct DeadlineStream {
    inner: Stream,
    timeout: Duration,
    phase: Phase,
    /// The first bytes of the connection, to recognise the h2c preface.
    start: Vec<u8>,
    /// When the head being read is due.
    deadline: Instant,
    /// The timer for `deadline`, made only when a read would wait while a
    /// head is incomplete: a head that arrives in one read (the common
    /// case) costs a clock read, not a timer.
    sleep: Option<Pin<Box<Sleep>>>,
    metrics: Arc<EdgeMetrics>,
}

impl fmt::Debug for DeadlineStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeadlineStream")
            .field("inner", &self.inner)
            .field("timeout", &self.timeout)
            .field("phase", &self.phase)
            .finish()
    }
}

impl DeadlineStream {
    /// Wraps a just-accepted connection; its first head is due within
    /// `timeout` from now.
    pub fn new(inner: Stream, timeout: Duration, metrics: Arc<EdgeMetrics>) -> Self {
        let phase = if matches!(inner.selected_alpn_proto(), Some(ALPN::H2)) {
            Phase::Exempt
        } else {
            Phase::Head {
                scanner: HeadScanner::default(),
                first: true,
            }
        };
        DeadlineStream {
            inner,
            timeout,
            phase,
            start: Vec::new(),
            deadline: Instant::now() + timeout,
            sleep: None,
            metrics,
        }
    }

    fn timed_out(&self) -> io::Error {
        self.metrics.request_heads_timed_out.inc();
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!("request head not complete within {:?}", self.timeout),
        )
    }

    /// Looks at bytes just read; moves the phase on.
    fn observe(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        if let Phase::BetweenRequests = self.phase {
            self.deadline = Instant::now() + self.timeout;
            self.phase = Phase::Head {
                scanner: HeadScanner::default(),
                first: false,
            };
        }
        let Phase::Head { scanner, first } = &mut self.phase else {
            return;
        };
        if *first && self.start.len() < H2_PREFACE_START.len() {
            let take = (H2_PREFACE_START.len() - self.start.len()).min(bytes.len());
            self.start.extend_from_slice(&bytes[..take]);
        }
        if scanner.feed(bytes).is_some() {
            self.phase = if *first && self.start == H2_PREFACE_START {
                Phase::Exempt
            } else {
                Phase::Message
            };
            self.start = Vec::new();
        }
    }

    /// Looks at a write's outcome: bytes of a response written end the
    /// message, so the next byte read starts a new head.
    fn wrote(&mut self, written: &Poll<io::Result<usize>>) {
        if matches!(written, Poll::Ready(Ok(n)) if *n > 0) && matches!(self.phase, Phase::Message) {
            self.phase = Phase::BetweenRequests;
        }
    }

    fn head_pending(&self) -> bool {
        matches!(self.phase, Phase::Head { .. })
    }

    /// Whether the deadline has passed; if not, the task is woken when it
    /// does.
    fn poll_deadline(&mut self, cx: &mut Context<'_>) -> bool {
        let deadline = self.deadline;
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(deadline - Instant::now())));
        if sleep.deadline() != deadline {
            sleep.as_mut().reset(deadline);
        }
        sleep.as_mut().poll(cx).is_ready()
    }
}

impl AsyncRead for DeadlineStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                this.observe(&buf.filled()[before..]);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending => {
                if this.head_pending() && this.poll_deadline(cx) {
                    return Poll::Ready(Err(this.timed_out()));
                }
                Poll::Pending
            }
        }
    }
}

impl AsyncWrite for DeadlineStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.wrote(&written);
        written
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
        let this = self.get_mut();
        let written = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.wrote(&written);
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[async_trait]
impl Shutdown for DeadlineStream {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await;
    }
}

impl UniqueID for DeadlineStream {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for DeadlineStream {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<pingora::protocols::tls::SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for DeadlineStream {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for DeadlineStream {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest);
    }
}

impl GetSocketDigest for DeadlineStream {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest);
    }
}

#[async_trait]
impl Peek for DeadlineStream {
    /// Pingora's h2c check (`read_exact` of 24 bytes, then rewound) under
    /// the first head's deadline.
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        if !self.head_pending() {
            return self.inner.try_peek(buf).await;
        }
        match tokio::time::timeout_at(self.deadline, self.inner.try_peek(buf)).await {
            Ok(peeked) => peeked,
            Err(_) => Err(self.timed_out()),
        }
    }
}

/// A [`ServerApp`] (the HTTP proxy) whose connections are
/// [`DeadlineStream`]s.
pub struct HeadDeadline<A> {
    inner: Arc<A>,
    timeout: Duration,
    metrics: Arc<EdgeMetrics>,
}

impl<A> HeadDeadline<A> {
    pub fn new(inner: A, timeout: Duration, metrics: Arc<EdgeMetrics>) -> Self {
        HeadDeadline {
            inner: Arc::new(inner),
            timeout,
            metrics,
        }
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for HeadDeadline<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let stream = DeadlineStream::new(stream, self.timeout, self.metrics.clone());
        self.inner.process_new(Box::new(stream), shutdown).await
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Where the head ends, by a plain search of the whole input.
    fn head_end(bytes: &[u8]) -> Option<usize> {
        (0..bytes.len()).find_map(|i| {
            if bytes[i] != b'\n' {
                return None;
            }
            if bytes.get(i + 1) == Some(&b'\n') {
                return Some(i + 2);
            }
            if bytes.get(i + 1) == Some(&b'\r') && bytes.get(i + 2) == Some(&b'\n') {
                return Some(i + 3);
            }
            None
        })
    }

    #[test]
    fn a_head_ends_at_the_first_empty_line() {
        let mut scanner = HeadScanner::default();
        assert_eq!(scanner.feed(b"GET / HTTP/1.1\r\nHost: a\r\n"), None);
        assert_eq!(scanner.feed(b"\r"), None);
        assert_eq!(scanner.feed(b"\nbody"), Some(1));
        let mut bare = HeadScanner::default();
        assert_eq!(bare.feed(b"GET / HTTP/1.0\n\n"), Some(16));
        let mut preface = HeadScanner::default();
        assert_eq!(preface.feed(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), Some(18));
    }

    proptest! {
        /// Fed in any chunks, the scanner finds the end a search of the
        /// whole input finds.
        #[test]
        fn chunking_never_changes_where_the_head_ends(
            bytes in proptest::collection::vec(
                prop_oneof![Just(b'\r'), Just(b'\n'), Just(b'a'), any::<u8>()],
                0..64,
            ),
            cuts in proptest::collection::vec(0usize..64, 0..8),
        ) {
            let mut cuts: Vec<usize> = cuts.into_iter().filter(|c| *c <= bytes.len()).collect();
            cuts.push(0);
            cuts.push(bytes.len());
            cuts.sort_unstable();
            cuts.dedup();
            let mut scanner = HeadScanner::default();
            let mut found = None;
            for pair in cuts.windows(2) {
                if let Some(at) = scanner.feed(&bytes[pair[0]..pair[1]]) {
                    found = Some(pair[0] + at);
                    break;
                }
            }
            prop_assert_eq!(found, head_end(&bytes));
        }
    }
}
