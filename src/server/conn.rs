//! One accepted connection's life: a deadline for its first request (silent sockets, half an
//! HTTP/2 preface, a stalled TLS handshake), an idle timeout once no request is in flight, and
//! a graceful close when the server drains. hyper's own timers cover only part of this: the
//! auto builder's protocol sniffing has none.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http_body::{Body, Frame, SizeHint};
use hyper_util::server::graceful::GracefulConnection;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The connection preface of a client speaking h2c with prior knowledge.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What a plain-TCP connection speaks, told from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Protocol {
    Http1,
    Http2,
    /// Only the start of the HTTP/2 preface so far (a client sending a byte at a time).
    Undecided,
}

/// Tells HTTP/1.1 from h2c by peeking at the first bytes, which stay in the socket.
///
/// hyper-util's `auto` builder tells them apart by reading the first 24 bytes itself and
/// handing them back through a rewinding wrapper. HTTP/1.1 then parses those 24 bytes alone
/// and reads again, and that second read grows the connection's read buffer from 8 to 16 KiB
/// for the connection's whole life: 8 KiB more per open HTTP/1.1 stream. After a peek, hyper
/// reads the request whole at its first read. What a peek cannot decide yet is left to `auto`.
pub(super) async fn sniff(stream: &tokio::net::TcpStream) -> std::io::Result<Protocol> {
    let mut first = [0u8; H2_PREFACE.len()];
    let n = stream.peek(&mut first).await?;
    Ok(protocol_of(&first[..n]))
}

fn protocol_of(first: &[u8]) -> Protocol {
    if first.is_empty() || !H2_PREFACE.starts_with(first) {
        Protocol::Http1 // an empty peek is the end of the stream: HTTP/1.1 closes it
    } else if first.len() == H2_PREFACE.len() {
        Protocol::Http2
    } else {
        Protocol::Undecided
    }
}

/// The timeouts every listener applies to its connections (`[server]`).
#[derive(Debug, Clone, Copy)]
pub(super) struct ConnLimits {
    /// From accept to the first request's headers.
    pub header_read: Duration,
    /// With no request in flight.
    pub idle: Duration,
}

impl ConnLimits {
    pub(super) fn of(server: &crate::config::ServerConfig) -> ConnLimits {
        ConnLimits {
            header_read: server.header_read_timeout,
            idle: server.idle_timeout,
        }
    }
}

/// What one connection is doing: whether a request has arrived, how many are in flight and
/// since when none is.
pub(super) struct Activity {
    seen_request: AtomicBool,
    in_flight: AtomicUsize,
    idle_since: Mutex<Instant>,
}

impl Activity {
    pub(super) fn new() -> Arc<Activity> {
        Arc::new(Activity {
            seen_request: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            idle_since: Mutex::new(Instant::now()),
        })
    }

    /// A request's headers are in: held until its response body is done or dropped.
    pub(super) fn request(self: &Arc<Self>) -> InFlight {
        self.seen_request.store(true, Ordering::Release);
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone())
    }

    /// When the connection became idle, or `None` while a request is in flight.
    fn idle_since(&self) -> Option<Instant> {
        let since = *self.idle_since.lock().unwrap_or_else(|e| e.into_inner());
        (self.in_flight.load(Ordering::Acquire) == 0).then_some(since)
    }
}

/// One request in flight on a connection (see [`Activity::request`]).
pub(super) struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            *self.0.idle_since.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        }
    }
}

/// A response body that keeps its request counted as in flight until it ends.
pub(super) struct Tracked<B> {
    inner: B,
    _in_flight: InFlight,
}

impl<B> Tracked<B> {
    pub(super) fn new(inner: B, in_flight: InFlight) -> Tracked<B> {
        Tracked {
            inner,
            _in_flight: in_flight,
        }
    }
}

impl<B: Body + Unpin> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Drives `conn` to its end. It is dropped (closed) when no request has arrived within
/// `limits.header_read` of `accepted`; shut down gracefully (the request in flight finishes,
/// HTTP/2 gets `GOAWAY`) when it has been idle for `limits.idle` or when `drain` fires.
pub(super) async fn supervise<C: GracefulConnection>(
    conn: C,
    activity: &Activity,
    limits: ConnLimits,
    accepted: Instant,
    drain: &CancellationToken,
) -> Result<(), C::Error> {
    let mut conn = std::pin::pin!(conn);
    let mut closing = false;
    loop {
        let first_request = activity.seen_request.load(Ordering::Acquire);
        // While busy, look again after one idle period.
        let wake = match activity.idle_since() {
            _ if !first_request => accepted + limits.header_read,
            Some(since) => since + limits.idle,
            None => Instant::now() + limits.idle,
        };
        tokio::select! {
            done = conn.as_mut() => return done,
            _ = drain.cancelled(), if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
            _ = tokio::time::sleep_until(wake), if !closing => {
                if !activity.seen_request.load(Ordering::Acquire) {
                    tracing::debug!("no request within the header read timeout; closing");
                    return Ok(());
                }
                if activity
                    .idle_since()
                    .is_some_and(|since| since + limits.idle <= Instant::now())
                {
                    tracing::debug!("idle timeout; closing the connection");
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
        }
    }
}

/// A warning logged at most once a second, with the number of occurrences suppressed in
/// between (accept errors such as running out of file descriptors, refused connections).
#[derive(Default)]
pub(super) struct Throttled {
    last_logged: Option<Instant>,
    suppressed: u64,
}

impl Throttled {
    /// Calls `log` with the number suppressed since the last call it made, or counts this one.
    pub(super) fn log(&mut self, log: impl FnOnce(u64)) {
        let now = Instant::now();
        if self
            .last_logged
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
        {
            self.suppressed += 1;
            return;
        }
        log(self.suppressed);
        self.last_logged = Some(now);
        self.suppressed = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::{protocol_of, Protocol, H2_PREFACE};

    #[test]
    fn the_first_bytes_tell_http1_from_h2c() {
        assert_eq!(protocol_of(b"GET / HTTP/1.1\r\n"), Protocol::Http1);
        // "P" could still be the preface; "PO" cannot.
        assert_eq!(protocol_of(b"P"), Protocol::Undecided);
        assert_eq!(protocol_of(b"POST /chat HTTP/1.1"), Protocol::Http1);
        assert_eq!(protocol_of(b"PRI * HTTP/2.0\r\n"), Protocol::Undecided);
        assert_eq!(protocol_of(H2_PREFACE), Protocol::Http2);
        assert_eq!(
            protocol_of(b"PRI * HTTP/2.0\r\n\r\nSX\r\n\r\n"),
            Protocol::Http1
        );
        assert_eq!(protocol_of(b""), Protocol::Http1);
    }
}
