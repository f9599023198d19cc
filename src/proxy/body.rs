//! The response body that runs the transcoder between an upstream body and the client.
//!
//! It polls the upstream only when the client polls it (backpressure end to end), gathers what
//! the upstream has already delivered into one output frame (bounded; it never waits for more),
//! and on upstream error, idle timeout, shutdown or EOF lets the encoder write a terminal event
//! and then ends cleanly: a client never sees a cut.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::Sleep;
use tokio_util::sync::WaitForCancellationFutureOwned;

use super::cutoff::Cutoff;
use super::meter::ChatMeter;
use super::settlement::StreamSettlement;
use crate::transcode::Transcoder;

/// How much of an upstream's tail (after its terminal event) is read so its connection can
/// go back to the pool.
const DRAIN_BUDGET: usize = 64 * 1024;
const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);

/// Output gathered into one frame before it is handed to the client connection.
const MAX_FRAME_BYTES: usize = 32 * 1024;
/// Turns given to the upstream's connection task, when it has nothing ready, before what is
/// gathered is written (see the `Pending` arm of `poll_frame`).
const GATHER_YIELDS: u8 = 3;

/// How a stream ended, handed to its [`StreamSettlement`] when the body is dropped.
pub struct StreamEnd<'a> {
    pub meter: &'a ChatMeter,
    /// The client read the stream to its end.
    pub delivered: bool,
    pub bytes_out: u64,
    /// Why the stream failed, if it did (decode error, upstream error, timeout, shutdown).
    pub failure: Option<&'a str>,
    /// Everything sent to the client, when capture was asked for and it fit.
    pub captured: Option<Bytes>,
    /// When the first body frame was handed to the client connection.
    pub first_byte: Option<Instant>,
    /// Time spent inside `poll_frame`: reading what the upstream had ready, transcoding,
    /// metering (not the waits on the upstream or the client).
    pub busy: Duration,
}

/// Runs once when an answer has completed (its finish is held back, not yet encoded). The
/// finish is sent once the receiver it returns resolves `Ok`, e.g. once the exchange is durable
/// in the store: a client is never told an answer is complete before that. `Err` (or a dropped
/// sender) ends the stream with an error event and the format's end instead.
pub type CommitHook = Box<dyn FnOnce(&ChatMeter) -> Option<CommitWait> + Send>;

/// Resolves when a completed answer's exchange is durable (`Ok`) or cannot be made so (`Err`).
pub type CommitWait = tokio::sync::oneshot::Receiver<Result<(), String>>;

/// How long a completed answer waits for its exchange to become durable before it is ended
/// with an error instead (the store retries for longer; the client is not kept waiting).
const COMMIT_TIMEOUT: Duration = Duration::from_secs(30);

pub struct TranscodeBody {
    upstream: Option<Incoming>,
    transcoder: Transcoder<ChatMeter>,
    out: BytesMut,
    idle_timeout: Duration,
    last_activity: Instant,
    idle: Pin<Box<Sleep>>,
    shutdown: Cutoff,
    shutdown_wait: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
    /// The waker `shutdown_wait` was last polled with (see [`TranscodeBody::upstream_pending`]).
    shutdown_waker: Option<Waker>,
    ended: bool,
    bytes_out: u64,
    failure: Option<String>,
    /// Turns yielded since the upstream last delivered data.
    yields: u8,
    /// What the stream's end settles, run once when the body is dropped.
    settlement: Option<StreamSettlement>,
    /// A copy of the output, kept for an idempotent replay (bounded).
    capture: Option<BytesMut>,
    commit: Option<CommitHook>,
    committing: Option<(CommitWait, Pin<Box<Sleep>>)>,
    first_byte: Option<Instant>,
    busy: Duration,
}

impl TranscodeBody {
    pub fn new(
        upstream: Incoming,
        transcoder: Transcoder<ChatMeter>,
        idle_timeout: Duration,
        shutdown: Cutoff,
        settlement: StreamSettlement,
    ) -> Self {
        let now = Instant::now();
        TranscodeBody {
            upstream: Some(upstream),
            transcoder,
            // Grown on demand: an open stream that sends little holds little (a pre-sized
            // buffer was a quarter of the memory of an idle stream).
            out: BytesMut::new(),
            idle_timeout,
            last_activity: now,
            idle: Box::pin(tokio::time::sleep(idle_timeout)),
            shutdown,
            shutdown_wait: None,
            shutdown_waker: None,
            ended: false,
            bytes_out: 0,
            failure: None,
            yields: 0,
            capture: settlement.wants_capture().then(BytesMut::new),
            settlement: Some(settlement),
            commit: None,
            committing: None,
            first_byte: None,
            busy: Duration::ZERO,
        }
    }

    /// Holds the finish of a completed answer until `hook`'s receiver resolves.
    pub fn commit_before_end(mut self, hook: CommitHook) -> Self {
        self.transcoder.hold_finish();
        self.commit = Some(hook);
        self
    }

    /// A completed answer whose exchange is not durable: the client gets an error event and
    /// the format's end instead of the finish, and is charged nothing for it.
    fn not_durable(&mut self, message: String) {
        tracing::error!(error = %message, "answer ended with an error: not durable");
        self.transcoder.meter_mut().withdraw_finish();
        self.fail(message);
    }

    fn fail(&mut self, message: String) {
        self.transcoder.fail(&message, &mut self.out);
        if self.failure.is_none() {
            self.failure = Some(message);
        }
        self.upstream = None;
    }

    fn frame(&mut self) -> Poll<Option<Result<Frame<Bytes>, std::convert::Infallible>>> {
        let bytes = self.out.split().freeze();
        if self.first_byte.is_none() {
            self.first_byte = Some(Instant::now());
        }
        self.bytes_out += bytes.len() as u64;
        if let Some(copy) = self.capture.as_mut() {
            if copy.len() + bytes.len() <= super::idempotency::MAX_REPLAY_BYTES {
                copy.extend_from_slice(&bytes);
            } else {
                self.capture = None;
            }
        }
        Poll::Ready(Some(Ok(Frame::data(bytes))))
    }

    /// Hands a finished upstream to a task that reads its tail, so the connection is reused.
    fn release_upstream(&mut self) {
        let Some(mut upstream) = self.upstream.take() else {
            return;
        };
        if upstream.is_end_stream() || self.transcoder.meter().cut_off() {
            return;
        }
        if tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        tokio::spawn(async move {
            let drain = async {
                let mut budget = DRAIN_BUDGET;
                while let Some(Ok(frame)) =
                    std::future::poll_fn(|cx| Pin::new(&mut upstream).poll_frame(cx)).await
                {
                    let n = frame.data_ref().map_or(0, Bytes::len);
                    budget = budget.saturating_sub(n);
                    if budget == 0 {
                        break;
                    }
                }
            };
            let _ = tokio::time::timeout(DRAIN_TIMEOUT, drain).await;
        });
    }
}

impl Body for TranscodeBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        // Two clock reads per poll (not per event): the stream's share of the gateway
        // overhead metric.
        let entered = Instant::now();
        let poll = this.poll_inner(cx);
        this.busy += entered.elapsed();
        poll
    }

    fn is_end_stream(&self) -> bool {
        self.ended
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// What the body's poll loop hands the client, or `None` to go round again.
type Step = Option<Poll<Option<Result<Frame<Bytes>, std::convert::Infallible>>>>;

impl TranscodeBody {
    /// The poll loop: the answer's finish waiting to be durable, the end, shutdown, or the
    /// upstream's next frame; each state either answers the client or goes round again.
    fn poll_inner(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::convert::Infallible>>> {
        loop {
            if self.ended {
                return Poll::Ready(None);
            }
            let step = if self.transcoder.holds_finish() {
                self.poll_commit(cx)
            } else if self.transcoder.is_done() {
                Some(self.end())
            } else if self.shutdown.is_cancelled() {
                self.fail("the gateway is shutting down".into());
                None
            } else {
                self.poll_upstream(cx)
            };
            if let Some(poll) = step {
                return poll;
            }
        }
    }

    /// The answer is complete: its finish waits for the exchange to be durable.
    fn poll_commit(&mut self, cx: &mut Context<'_>) -> Step {
        if let Some(hook) = self.commit.take() {
            let meter = self.transcoder.meter();
            self.committing = match hook(meter) {
                Some(wait) => Some((wait, Box::pin(tokio::time::sleep(COMMIT_TIMEOUT)))),
                None => {
                    self.not_durable("the answer could not be recorded".into());
                    return None;
                }
            };
        }
        let Some((wait, timer)) = self.committing.as_mut() else {
            self.not_durable("the answer could not be recorded".into());
            return None;
        };
        let outcome = match Pin::new(wait).poll(cx) {
            Poll::Ready(Ok(r)) => r,
            Poll::Ready(Err(_)) => Err("the store stopped".into()),
            Poll::Pending if timer.as_mut().poll(cx).is_ready() => {
                Err("the store did not confirm it in time".into())
            }
            // What came before the finish need not wait.
            Poll::Pending if !self.out.is_empty() => return Some(self.frame()),
            Poll::Pending => return Some(Poll::Pending),
        };
        self.committing = None;
        match outcome {
            Ok(()) => self.transcoder.release_finish(&mut self.out),
            Err(e) => self.not_durable(format!("the answer could not be recorded: {e}")),
        }
        None
    }

    /// The transcoder is done: what is left, then the end.
    fn end(&mut self) -> Poll<Option<Result<Frame<Bytes>, std::convert::Infallible>>> {
        if !self.out.is_empty() {
            return self.frame();
        }
        self.release_upstream();
        self.ended = true;
        Poll::Ready(None)
    }

    /// The upstream's next frame fed to the transcoder, its error, its end, or its silence.
    fn poll_upstream(&mut self, cx: &mut Context<'_>) -> Step {
        let Some(upstream) = self.upstream.as_mut() else {
            // No upstream and not done cannot happen (every exit ends the transcoder),
            // but end properly rather than hang if it ever does.
            self.fail("upstream closed".into());
            return None;
        };
        match Pin::new(upstream).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.last_activity = Instant::now();
                    self.yields = 0;
                    self.transcoder.feed(data, &mut self.out);
                    if let Some(e) = self.transcoder.error() {
                        self.failure.get_or_insert_with(|| e.to_string());
                    }
                }
                // Keep gathering what the upstream already has (the `Pending` arm writes
                // it as soon as there is nothing more); the bound keeps frames small.
                if self.out.len() >= MAX_FRAME_BYTES && !self.transcoder.is_done() {
                    return Some(self.frame());
                }
                None
            }
            Poll::Ready(Some(Err(e))) => {
                self.fail(format!("upstream connection failed: {e}"));
                None
            }
            Poll::Ready(None) => {
                self.transcoder.finish(&mut self.out);
                if let Some(e) = self.transcoder.error() {
                    self.failure.get_or_insert_with(|| e.to_string());
                }
                self.upstream = None;
                None
            }
            Poll::Pending => self.upstream_pending(cx),
        }
    }

    /// The upstream has nothing ready: write what is gathered, or wait for it, the idle
    /// timeout or shutdown.
    fn upstream_pending(&mut self, cx: &mut Context<'_>) -> Step {
        if !self.out.is_empty() {
            // hyper's client hands a body over one chunk at a time from the
            // connection's own task, and backends write each event as its own
            // chunk, so `Pending` here often only means that task has not run since
            // we took the last chunk, though the rest of the answer sits in its
            // buffer. Writing now costs a write (and a syscall, and a read on the
            // client) per event; yielding a few turns lets it hand over what it
            // has, so events that arrived together leave together, as nginx sends
            // them. One turn is not always enough: the other worker may steal this
            // task before the connection task runs.
            if self.yields < GATHER_YIELDS {
                self.yields += 1;
                cx.waker().wake_by_ref();
                return Some(Poll::Pending);
            }
            return Some(self.frame());
        }
        if self.idle_expired(cx) {
            let secs = self.idle_timeout.as_secs_f64();
            self.fail(format!("upstream sent nothing for {secs} s"));
            return None;
        }
        // Polling the wait takes a lock every stream shares, so it is polled again only for
        // a new waker: the one it holds wakes this task at the cutoff, and the loop's check
        // of the flag sees it.
        if !self
            .shutdown_waker
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            let shutdown = self.shutdown.clone();
            let wait = self
                .shutdown_wait
                .get_or_insert_with(|| Box::pin(shutdown.cancelled_owned()));
            if wait.as_mut().poll(cx).is_ready() {
                return None;
            }
            self.shutdown_waker = Some(cx.waker().clone());
        }
        Some(Poll::Pending)
    }

    /// Whether the upstream has been silent for the idle timeout. The idle timer is re-armed
    /// only when it fires, not on every event.
    fn idle_expired(&mut self, cx: &mut Context<'_>) -> bool {
        while self.idle.as_mut().poll(cx).is_ready() {
            let deadline = self.last_activity + self.idle_timeout;
            if Instant::now() >= deadline {
                return true;
            }
            self.idle.as_mut().reset(deadline.into());
        }
        false
    }
}

impl Drop for TranscodeBody {
    fn drop(&mut self) {
        if self.transcoder.holds_finish() {
            // The client left before it was told the answer finished: it is charged as a
            // client that left mid-stream, for what it was sent.
            self.transcoder.meter_mut().withdraw_finish();
        }
        if let Some(settlement) = self.settlement.take() {
            let failure = self
                .failure
                .as_deref()
                .or(self.transcoder.meter().failure());
            settlement.finish(StreamEnd {
                meter: self.transcoder.meter(),
                delivered: self.ended,
                bytes_out: self.bytes_out,
                failure,
                captured: self.capture.take().map(BytesMut::freeze),
                first_byte: self.first_byte,
                busy: self.busy,
            });
        }
    }
}
