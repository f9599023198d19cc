//! The end of a streamed answer: what happens, exactly once, when its body is dropped —
//! however the stream ended (finished, failed, client gone).

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use prometheus_client::metrics::gauge::Gauge;
use tokio_util::sync::DropGuard;

use super::body::StreamEnd;
use super::idempotency::IdemGuard;
use super::policy::Admission;
use super::request::{log_request, Ctx};
use crate::metrics::{AgentLabel, FrontAgent, FrontLabel, Metrics};

/// Everything a stream must settle at its end: its credit reservation, its idempotency key,
/// its open-stream gauges and metrics, and its log line. [`TranscodeBody`] runs
/// [`StreamSettlement::finish`] when it is dropped.
///
/// [`TranscodeBody`]: super::TranscodeBody
pub struct StreamSettlement {
    /// Taken when the stream is settled.
    admission: Option<Admission>,
    /// Extends the reservation while the stream lives; stopped first at its end.
    keepalive: Option<DropGuard>,
    /// The claimed `Idempotency-Key`, completed with the answer when the client got it whole.
    idempotency: Option<IdemGuard>,
    metrics: Arc<Metrics>,
    labels: FrontAgent,
    open_streams: Gauge,
    agent_streams: Gauge,
    /// The request's facts, for the log line.
    ctx: Ctx,
    /// Gateway time before the stream started: everything but the waits.
    before_stream: Duration,
}

impl StreamSettlement {
    /// Opens the stream's accounts: counts it in the open-stream gauges until it ends.
    pub(super) fn open(
        admission: Admission,
        keepalive: Option<DropGuard>,
        idempotency: Option<IdemGuard>,
        metrics: Arc<Metrics>,
        ctx: &Ctx,
        agent: Arc<str>,
    ) -> StreamSettlement {
        let front = ctx.front.as_str();
        let open_streams = metrics
            .open_streams
            .get_or_create_owned(&FrontLabel { front });
        open_streams.inc();
        let agent_streams = metrics.agent_open_streams.get_or_create_owned(&AgentLabel {
            agent: agent.clone(),
        });
        agent_streams.inc();
        StreamSettlement {
            admission: Some(admission),
            keepalive,
            idempotency,
            metrics,
            labels: FrontAgent { front, agent },
            open_streams,
            agent_streams,
            ctx: ctx.for_stream_end(),
            before_stream: ctx.started.elapsed().saturating_sub(ctx.waited),
        }
    }

    /// Whether the stream's output is to be captured for an idempotent replay.
    pub(super) fn wants_capture(&self) -> bool {
        self.idempotency.is_some()
    }

    /// The one place a streamed answer is settled, exactly once (`settle` consumes the
    /// reservation).
    pub(super) fn finish(mut self, end: StreamEnd<'_>) {
        drop(self.keepalive.take());
        self.complete_idempotency(&end);
        let charged = self.settle(&end);
        self.close_gauges();
        self.observe(&end);
        self.ctx.span.in_scope(|| {
            log_request(&self.ctx, StatusCode::OK, end.bytes_out, end.failure, None);
            tracing::debug!(charged, "settled");
        });
    }

    /// Only an answer the client got whole is kept for replay.
    fn complete_idempotency(&mut self, end: &StreamEnd<'_>) {
        let Some(guard) = self.idempotency.take() else {
            return;
        };
        if let Some(bytes) = &end.captured {
            if end.delivered && end.failure.is_none() && end.meter.finished() {
                guard.complete(StatusCode::OK, "text/event-stream", bytes.clone());
            }
        }
    }

    /// Charges what the meter computed, exactly once: `settle` consumes the reservation.
    fn settle(&mut self, end: &StreamEnd<'_>) -> f64 {
        self.admission
            .take()
            .map_or(0.0, |a| a.settle(end.meter.final_charge()))
    }

    fn close_gauges(&self) {
        self.open_streams.dec();
        self.agent_streams.dec();
    }

    /// Duration, time to first byte and gateway overhead of the stream.
    fn observe(&self, end: &StreamEnd<'_>) {
        let m = &self.metrics;
        let started = self.ctx.started;
        Metrics::observe(
            &m.stream_duration.get_or_create(&self.labels),
            started.elapsed(),
        );
        if let Some(first) = end.first_byte {
            Metrics::observe(
                &m.stream_first_byte.get_or_create(&self.labels),
                first.saturating_duration_since(started),
            );
        }
        Metrics::observe(
            &m.overhead.get_or_create(&FrontLabel {
                front: self.labels.front,
            }),
            self.before_stream + end.busy,
        );
    }
}
