//! The streaming transform: SSE bytes in one format → canonical events → SSE bytes in another.
//!
//! A [`Transcoder`] never fails and never stops silently: malformed input, a protocol
//! violation or a truncated upstream ends the output with an error event in the output
//! format, then that format's proper end.

use bytes::BytesMut;
use serde_json::value::RawValue;

use crate::formats::{DecodeError, Decoder, EncodeOptions, Encoder, Event, Format};
use crate::sse::{self, SseError};

/// What a [`Meter`] tells the transcoder after seeing an event.
pub enum Flow {
    Continue,
    /// Write this terminal event after the current one and end the stream (e.g. credits ran out).
    Stop(Event<'static>),
}

/// Sees every canonical event between decoder and encoder, and may rewrite it. This is the
/// one point where usage is metered, whatever the two formats are. `chunk` is the ui-message
/// chunk the event was read from, when the upstream speaks ui-message.
pub trait Meter {
    fn on_event(&mut self, event: &mut Event<'_>, chunk: Option<&RawValue>) -> Flow;
}

/// No metering.
impl Meter for () {
    fn on_event(&mut self, _: &mut Event<'_>, _: Option<&RawValue>) -> Flow {
        Flow::Continue
    }
}

pub struct Transcoder<M: Meter = ()> {
    parser: sse::Parser,
    decoder: Decoder,
    encoder: Encoder,
    meter: M,
    error: Option<DecodeError>,
}

impl<M: Meter> Transcoder<M> {
    pub fn new(from: Format, to: Format, options: EncodeOptions, meter: M) -> Self {
        Self::with_max_event(from, to, options, meter, sse::DEFAULT_MAX_EVENT_BYTES)
    }

    pub fn with_max_event(
        from: Format,
        to: Format,
        options: EncodeOptions,
        meter: M,
        max_event_bytes: usize,
    ) -> Self {
        Transcoder {
            parser: sse::Parser::new(max_event_bytes),
            decoder: Decoder::new(from),
            encoder: Encoder::new(to, options),
            meter,
            error: None,
        }
    }

    /// Transcodes one chunk of upstream bytes, appending client bytes to `out`.
    pub fn feed(&mut self, chunk: &[u8], out: &mut BytesMut) {
        if self.encoder.is_done() {
            return;
        }
        let Transcoder {
            parser,
            decoder,
            encoder,
            meter,
            ..
        } = self;
        let result = parser.feed::<DecodeError, _>(chunk, |sse| {
            if encoder.is_done() {
                return Ok(());
            }
            decoder.decode_chunks(&sse, &mut |mut event, chunk| {
                if encoder.is_done() {
                    return;
                }
                let flow = meter.on_event(&mut event, chunk);
                encoder.encode_chunk(&event, chunk, out);
                if let Flow::Stop(mut last) = flow {
                    let _ = meter.on_event(&mut last, None);
                    encoder.encode(&last, out);
                }
            })
        });
        if let Err(e) = result {
            self.fail_with(e, out);
        }
    }

    /// The upstream stream ended. Ends the output properly whatever state it was in.
    pub fn finish(&mut self, out: &mut BytesMut) {
        if self.encoder.is_done() {
            return;
        }
        if let Err(e) = self.decoder.end() {
            self.fail_with(e, out);
        }
    }

    /// Ends the output with an error event (e.g. an upstream timeout or reset).
    pub fn fail(&mut self, message: &str, out: &mut BytesMut) {
        if self.encoder.is_done() {
            return;
        }
        let mut event = Event::Error {
            message: message.into(),
        };
        let _ = self.meter.on_event(&mut event, None);
        self.encoder.encode(&event, out);
    }

    /// Ends the output with `event` (a terminal event), after letting the meter see it.
    pub fn end_with(&mut self, mut event: Event<'_>, out: &mut BytesMut) {
        if self.encoder.is_done() {
            return;
        }
        let _ = self.meter.on_event(&mut event, None);
        self.encoder.encode(&event, out);
    }

    fn fail_with(&mut self, error: DecodeError, out: &mut BytesMut) {
        let message = error.to_string();
        self.error = Some(error);
        self.fail(&message, out);
    }

    /// True once the output has ended; the upstream need not be read any further.
    pub fn is_done(&self) -> bool {
        self.encoder.is_done()
    }

    /// The decode error that ended the stream, if one did.
    pub fn error(&self) -> Option<&DecodeError> {
        self.error.as_ref()
    }

    pub fn meter(&self) -> &M {
        &self.meter
    }

    pub fn meter_mut(&mut self) -> &mut M {
        &mut self.meter
    }
}

impl From<SseError> for Box<DecodeError> {
    fn from(e: SseError) -> Self {
        Box::new(DecodeError::Sse(e))
    }
}

/// Decodes a whole stream into canonical events (owned), for sync answers and tests.
pub fn decode_all(from: Format, input: &[u8]) -> Result<Vec<Event<'static>>, DecodeError> {
    let mut parser = sse::Parser::default();
    let mut decoder = Decoder::new(from);
    let mut events = Vec::new();
    parser.feed::<DecodeError, _>(input, |sse| {
        decoder.decode(&sse, &mut |e| events.push(e.into_owned()))
    })?;
    decoder.end()?;
    Ok(events)
}

/// Encodes canonical events into one format's bytes.
pub fn encode_all<'a>(
    to: Format,
    options: EncodeOptions,
    events: impl IntoIterator<Item = &'a Event<'a>>,
) -> BytesMut {
    let mut encoder = Encoder::new(to, options);
    let mut out = BytesMut::new();
    for e in events {
        encoder.encode(e, &mut out);
    }
    out
}
