//! The streaming transform: SSE bytes in one format → canonical events → SSE bytes in another.
//!
//! A [`Transcoder`] never fails and never stops silently: malformed input, a protocol
//! violation or a truncated upstream ends the output with an error event in the output
//! format, then that format's proper end.

use bytes::BytesMut;
use serde_json::value::RawValue;

use crate::formats::{DecodeError, Decoder, EncodeOptions, Encoder, Event, Format};
use crate::sse::{self, SseError};

/// What an [`EventTap`] tells the transcoder after seeing an event.
pub enum Flow {
    Continue,
    /// Write this terminal event after the current one and end the stream (e.g. credits ran out).
    Stop(Event<'static>),
}

/// Sees every canonical event between decoder and encoder, and may rewrite it. This is the
/// one point where usage is metered, whatever the two formats are. `chunk` is the ui-message
/// chunk the event was read from, when the upstream speaks ui-message.
pub trait EventTap {
    fn on_event(&mut self, event: &mut Event<'_>, chunk: Option<&RawValue>) -> Flow;
}

/// No metering.
impl EventTap for () {
    fn on_event(&mut self, _: &mut Event<'_>, _: Option<&RawValue>) -> Flow {
        Flow::Continue
    }
}

pub struct Transcoder<M: EventTap = ()> {
    parser: sse::Parser,
    decoder: Decoder,
    encoder: Encoder,
    meter: M,
    error: Option<DecodeError>,
    /// Set by [`Transcoder::hold_finish`]: a finish (or an abort) is kept here instead of being
    /// written.
    hold: bool,
    held: Option<(Event<'static>, Option<Box<RawValue>>)>,
}

impl<M: EventTap> Transcoder<M> {
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
            hold: false,
            held: None,
        }
    }

    /// Keeps a successful finish (after the meter saw it) instead of writing it, until
    /// [`release_finish`](Self::release_finish) writes it or [`fail`](Self::fail) replaces it
    /// with an error end (e.g. the answer must be durable before the client hears it ended).
    pub fn hold_finish(&mut self) {
        self.hold = true;
    }

    /// True while a finish is held: the input is complete and nothing more is read.
    pub fn holds_finish(&self) -> bool {
        self.held.is_some()
    }

    /// Writes the held finish (and the format's end).
    pub fn release_finish(&mut self, out: &mut BytesMut) {
        if let Some((finish, chunk)) = self.held.take() {
            self.encoder.encode_chunk(&finish, chunk.as_deref(), out);
        }
    }

    /// Transcodes one chunk of upstream bytes, appending client bytes to `out`.
    pub fn feed(&mut self, chunk: &[u8], out: &mut BytesMut) {
        if self.is_done() {
            return;
        }
        let Transcoder {
            parser,
            decoder,
            encoder,
            meter,
            hold,
            held,
            ..
        } = self;
        let result = parser.feed::<DecodeError, _>(chunk, |sse| {
            if encoder.is_done() || held.is_some() {
                return Ok(());
            }
            decoder.decode_chunks(&sse, &mut |mut event, chunk| {
                if encoder.is_done() || held.is_some() {
                    return;
                }
                let flow = meter.on_event(&mut event, chunk);
                if *hold && completes(&event) {
                    *held = Some((event.into_owned(), chunk.map(RawValue::to_owned)));
                    return;
                }
                encoder.encode_chunk(&event, chunk, out);
                if let Flow::Stop(mut last) = flow {
                    let _ = meter.on_event(&mut last, None);
                    if *hold && completes(&last) {
                        *held = Some((last, None));
                    } else {
                        encoder.encode(&last, out);
                    }
                }
            })
        });
        if let Err(e) = result {
            self.fail_with(e, out);
        }
    }

    /// The upstream stream ended. Ends the output properly whatever state it was in.
    pub fn finish(&mut self, out: &mut BytesMut) {
        if self.is_done() {
            return;
        }
        if let Err(e) = self.decoder.end() {
            self.fail_with(e, out);
        }
    }

    /// Ends the output with an error event (e.g. an upstream timeout or reset).
    pub fn fail(&mut self, message: &str, out: &mut BytesMut) {
        self.held = None;
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
        if self.is_done() {
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

    /// True once the output has ended (or its finish is held); the upstream need not be read
    /// any further.
    pub fn is_done(&self) -> bool {
        self.encoder.is_done() || self.held.is_some()
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

/// A terminal event that completes the answer (a finish, or an abort with what was said),
/// which [`Transcoder::hold_finish`] keeps back; an error is never held.
fn completes(event: &Event<'_>) -> bool {
    matches!(event, Event::Finish { .. } | Event::Abort { .. })
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

#[cfg(test)]
mod tests {
    use super::*;

    /// An unknown chunk whose type holds a line break passes on as data only: as an `event:`
    /// line it would end that line and inject SSE fields of the backend's choosing.
    #[test]
    fn a_chunk_type_with_a_line_break_gets_no_event_line() {
        let input = b"data: {\"type\":\"x\\ndata: injected\",\"v\":1}\n\n\
                      data: {\"type\":\"finish\"}\n\ndata: [DONE]\n\n";
        let options = EncodeOptions {
            event_lines: true,
            ..Default::default()
        };
        let mut t = Transcoder::new(Format::UiMessage, Format::UiMessage, options, ());
        let mut out = BytesMut::new();
        t.feed(input, &mut out);
        t.finish(&mut out);
        let text = String::from_utf8(out.to_vec()).expect("utf-8");
        assert!(
            text.contains(r#"data: {"type":"x\ndata: injected","v":1}"#),
            "{text}"
        );
        assert!(!text.contains("\ndata: injected"), "{text}");
        assert!(text.contains("event: finish\n"), "{text}");
    }

    const UI: &[u8] = b"data: {\"type\":\"start\"}\n\n\
        data: {\"type\":\"text-start\",\"id\":\"t\"}\n\n\
        data: {\"type\":\"text-delta\",\"id\":\"t\",\"delta\":\"hi\"}\n\n\
        data: {\"type\":\"text-end\",\"id\":\"t\"}\n\n\
        data: {\"type\":\"finish\"}\n\n\
        data: [DONE]\n\n";

    /// `UI` fed in two pieces cut at `split`, then its end, with the finish held.
    fn held_at(split: usize) -> (Transcoder, BytesMut) {
        let mut t = Transcoder::new(
            Format::UiMessage,
            Format::UiMessage,
            EncodeOptions::default(),
            (),
        );
        t.hold_finish();
        let mut out = BytesMut::new();
        t.feed(&UI[..split], &mut out);
        t.feed(&UI[split..], &mut out);
        t.finish(&mut out);
        (t, out)
    }

    #[test]
    fn a_held_finish_is_written_on_release_or_replaced_by_an_error_end_at_every_split() {
        for split in 0..=UI.len() {
            let (mut t, mut out) = held_at(split);
            assert!(t.holds_finish() && t.is_done(), "split {split}");
            let text = String::from_utf8_lossy(&out).into_owned();
            assert!(text.contains("\"delta\":\"hi\""), "split {split}: {text}");
            assert!(
                !text.contains("finish") && !text.contains("[DONE]"),
                "split {split}: {text}"
            );
            t.release_finish(&mut out);
            let text = String::from_utf8_lossy(&out).into_owned();
            assert!(
                text.contains("\"type\":\"finish\"") && text.ends_with("data: [DONE]\n\n"),
                "split {split}: {text}"
            );
            assert!(!t.holds_finish() && t.is_done());

            let (mut t, mut out) = held_at(split);
            t.fail("not durable", &mut out);
            let text = String::from_utf8_lossy(&out).into_owned();
            assert!(
                text.contains("\"type\":\"error\"")
                    && text.contains("not durable")
                    && !text.contains("finish")
                    && text.ends_with("data: [DONE]\n\n"),
                "split {split}: {text}"
            );
            assert!(!t.holds_finish() && t.is_done());
        }
    }
}
