//! Reading a whole upstream stream into one answer, for sync requests (and team members).

use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::meter::{self, ChatMeter};
use crate::formats::{Aggregate, DecodeError, Decoder, Format};
use crate::sse;
use crate::transcode::EventTap;

/// Why a sync answer was not given.
pub(super) enum SyncFailure {
    /// The backend failed (error, timeout, a stream that is not one): nothing is charged.
    Backend(String),
    /// The answer passed `[server] max_answer_bytes`; reading stopped there.
    TooLarge(Box<ChatMeter>),
}

impl std::fmt::Display for SyncFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SyncFailure::Backend(e) => f.write_str(e),
            SyncFailure::TooLarge(_) => f.write_str("the answer is larger than max_answer_bytes"),
        }
    }
}

/// Reads a whole upstream stream into an answer, for sync requests.
pub(super) async fn aggregate(
    body: Incoming,
    format: Format,
    meter: ChatMeter,
    idle: Duration,
    limit: usize,
    waited: &mut Duration,
) -> Result<(Aggregate, ChatMeter), SyncFailure> {
    aggregate_with(body, format, meter, idle, limit, waited, &mut |_| {}).await
}

/// [`aggregate`], showing each event (after metering) to `on_event` as it arrives. At most
/// `limit` answer bytes are gathered: past them reading stops ([`SyncFailure::TooLarge`]).
pub(super) async fn aggregate_with(
    mut body: Incoming,
    format: Format,
    mut meter: ChatMeter,
    idle: Duration,
    limit: usize,
    waited: &mut Duration,
    on_event: &mut (dyn FnMut(&crate::formats::Event<'_>) + Send),
) -> Result<(Aggregate, ChatMeter), SyncFailure> {
    let mut parser = sse::Parser::default();
    let mut decoder = Decoder::new(format);
    let mut aggregate = Aggregate::default();
    let mut bytes = 0usize;
    let mut too_large = false;
    loop {
        let reading = Instant::now();
        let frame = tokio::time::timeout(idle, body.frame()).await;
        *waited += reading.elapsed();
        let frame = match frame {
            Err(_) => {
                return Err(SyncFailure::Backend(format!(
                    "upstream sent nothing for {} s",
                    idle.as_secs_f64()
                )))
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                return Err(SyncFailure::Backend(format!(
                    "upstream connection failed: {e}"
                )))
            }
            Ok(Some(Ok(frame))) => frame,
        };
        let Some(data) = frame.data_ref() else {
            continue;
        };
        parser
            .feed::<DecodeError, _>(data, |e| {
                decoder.decode_chunks(&e, &mut |mut ev, chunk| {
                    if too_large {
                        return;
                    }
                    bytes += meter::answer_bytes(&ev);
                    if bytes > limit {
                        too_large = true;
                        return;
                    }
                    let _ = meter.on_event(&mut ev, chunk);
                    on_event(&ev);
                    aggregate.push(&ev);
                })
            })
            .map_err(|e| SyncFailure::Backend(e.to_string()))?;
        if too_large {
            return Err(SyncFailure::TooLarge(Box::new(meter)));
        }
        if aggregate.finished || aggregate.error.is_some() {
            break;
        }
    }
    if !aggregate.finished && aggregate.error.is_none() {
        decoder
            .end()
            .map_err(|e| SyncFailure::Backend(e.to_string()))?;
    }
    if let Some(e) = &aggregate.error {
        return Err(SyncFailure::Backend(format!(
            "the agent's backend failed: {e}"
        )));
    }
    Ok((aggregate, meter))
}
