//! The response body that runs the transcoder between an upstream body and the client.
//!
//! It polls the upstream only when the client polls it (backpressure end to end), gathers what
//! the upstream has already delivered into one output frame (bounded; it never waits for more),
//! and on upstream error, idle timeout, shutdown or EOF lets the encoder write a terminal event
//! and then ends cleanly: a client never sees a cut.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::Sleep;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

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
    shutdown: CancellationToken,
    shutdown_wait: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
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
        shutdown: CancellationToken,
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

impl TranscodeBody {
    fn poll_inner(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::convert::Infallible>>> {
        let this = self;
        loop {
            if this.ended {
                return Poll::Ready(None);
            }
            if this.transcoder.holds_finish() {
                // The answer is complete: its finish waits for the exchange to be durable.
                if let Some(hook) = this.commit.take() {
                    let meter = this.transcoder.meter();
                    this.committing = match hook(meter) {
                        Some(wait) => Some((wait, Box::pin(tokio::time::sleep(COMMIT_TIMEOUT)))),
                        None => {
                            this.not_durable("the answer could not be recorded".into());
                            continue;
                        }
                    };
                }
                let Some((wait, timer)) = this.committing.as_mut() else {
                    this.not_durable("the answer could not be recorded".into());
                    continue;
                };
                let outcome = match Pin::new(wait).poll(cx) {
                    Poll::Ready(Ok(r)) => r,
                    Poll::Ready(Err(_)) => Err("the store stopped".into()),
                    Poll::Pending if timer.as_mut().poll(cx).is_ready() => {
                        Err("the store did not confirm it in time".into())
                    }
                    // What came before the finish need not wait.
                    Poll::Pending if !this.out.is_empty() => return this.frame(),
                    Poll::Pending => return Poll::Pending,
                };
                this.committing = None;
                match outcome {
                    Ok(()) => this.transcoder.release_finish(&mut this.out),
                    Err(e) => this.not_durable(format!("the answer could not be recorded: {e}")),
                }
                continue;
            }
            if this.transcoder.is_done() {
                if !this.out.is_empty() {
                    return this.frame();
                }
                this.release_upstream();
                this.ended = true;
                return Poll::Ready(None);
            }
            if this.shutdown.is_cancelled() {
                this.fail("the gateway is shutting down".into());
                continue;
            }
            let Some(upstream) = this.upstream.as_mut() else {
                // No upstream and not done cannot happen (every exit ends the transcoder),
                // but end properly rather than hang if it ever does.
                this.fail("upstream closed".into());
                continue;
            };
            match Pin::new(upstream).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Some(data) = frame.data_ref() {
                        this.last_activity = Instant::now();
                        this.yields = 0;
                        this.transcoder.feed(data, &mut this.out);
                        if let Some(e) = this.transcoder.error() {
                            this.failure.get_or_insert_with(|| e.to_string());
                        }
                    }
                    // Keep gathering what the upstream already has (the `Pending` arm writes
                    // it as soon as there is nothing more); the bound keeps frames small.
                    if this.out.len() >= MAX_FRAME_BYTES && !this.transcoder.is_done() {
                        return this.frame();
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    this.fail(format!("upstream connection failed: {e}"));
                }
                Poll::Ready(None) => {
                    this.transcoder.finish(&mut this.out);
                    if let Some(e) = this.transcoder.error() {
                        this.failure.get_or_insert_with(|| e.to_string());
                    }
                    this.upstream = None;
                }
                Poll::Pending => {
                    if !this.out.is_empty() {
                        // hyper's client hands a body over one chunk at a time from the
                        // connection's own task, and backends write each event as its own
                        // chunk, so `Pending` here often only means that task has not run since
                        // we took the last chunk, though the rest of the answer sits in its
                        // buffer. Writing now costs a write (and a syscall, and a read on the
                        // client) per event; yielding a few turns lets it hand over what it
                        // has, so events that arrived together leave together, as nginx sends
                        // them. One turn is not always enough: the other worker may steal this
                        // task before the connection task runs.
                        if this.yields < GATHER_YIELDS {
                            this.yields += 1;
                            cx.waker().wake_by_ref();
                            return Poll::Pending;
                        }
                        return this.frame();
                    }
                    // The idle timer is re-armed only when it fires, not on every event.
                    let mut idle_expired = false;
                    while this.idle.as_mut().poll(cx).is_ready() {
                        let deadline = this.last_activity + this.idle_timeout;
                        if Instant::now() >= deadline {
                            idle_expired = true;
                            break;
                        }
                        this.idle.as_mut().reset(deadline.into());
                    }
                    if idle_expired {
                        let secs = this.idle_timeout.as_secs_f64();
                        this.fail(format!("upstream sent nothing for {secs} s"));
                        continue;
                    }
                    let shutdown = this.shutdown.clone();
                    let wait = this
                        .shutdown_wait
                        .get_or_insert_with(|| Box::pin(shutdown.cancelled_owned()));
                    if wait.as_mut().poll(cx).is_ready() {
                        continue;
                    }
                    return Poll::Pending;
                }
            }
        }
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
