//! Incremental `text/event-stream` parser, by the WHATWG "event stream interpretation" rules.
//!
//! Feed it chunks however they were split; it calls back once per dispatched event with the
//! event borrowed from its own buffers, which it reuses, so steady-state parsing allocates
//! nothing. An event larger than the configured bound is an error, never unbounded growth.

use std::borrow::Cow;

/// Default bound on one event (its data, type and any partial line): 1 MiB.
pub const DEFAULT_MAX_EVENT_BYTES: usize = 1 << 20;

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// A dispatched event. `event` is `"message"` when the stream gave no `event:` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SseEvent<'a> {
    pub event: &'a str,
    pub data: &'a str,
    /// The last event id seen so far in the stream (it persists across events), if any.
    pub id: Option<&'a str>,
    /// The reconnection time given by the most recent valid `retry:` field, if any.
    pub retry: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    #[error("server-sent event larger than {max} bytes")]
    EventTooLarge { max: usize },
}

/// The parser state. One per stream.
#[derive(Debug)]
pub struct Parser {
    max_event_bytes: usize,
    /// The start of a line that has not been terminated yet.
    line: Vec<u8>,
    data: Vec<u8>,
    data_lines: usize,
    event: Vec<u8>,
    last_id: Vec<u8>,
    has_id: bool,
    retry: Option<u64>,
    /// How many bytes of a leading BOM have been matched; `None` once past the stream start.
    bom_matched: Option<usize>,
    /// The previous chunk ended with `\r`: a `\n` at the start of the next one ends no line.
    skip_lf: bool,
}

impl Default for Parser {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_EVENT_BYTES)
    }
}

impl Parser {
    pub fn new(max_event_bytes: usize) -> Self {
        Parser {
            max_event_bytes,
            line: Vec::new(),
            data: Vec::new(),
            data_lines: 0,
            event: Vec::new(),
            last_id: Vec::new(),
            has_id: false,
            retry: None,
            bom_matched: Some(0),
            skip_lf: false,
        }
    }

    /// Parses `chunk`, calling `on_event` for each event it completes. An error from
    /// `on_event` stops parsing and is returned; so is [`SseError::EventTooLarge`].
    pub fn feed<E, F>(&mut self, chunk: &[u8], mut on_event: F) -> Result<(), E>
    where
        E: From<SseError>,
        F: FnMut(SseEvent<'_>) -> Result<(), E>,
    {
        let mut input = chunk;
        if let Some(matched) = self.bom_matched {
            let take = (BOM.len() - matched).min(input.len());
            if input[..take] == BOM[matched..matched + take] {
                input = &input[take..];
                if matched + take < BOM.len() {
                    self.bom_matched = Some(matched + take);
                    return Ok(());
                }
                self.bom_matched = None;
            } else {
                // Not a BOM after all: what looked like one is content.
                self.bom_matched = None;
                self.lines(&BOM[..matched], &mut on_event)?;
            }
        }
        self.lines(input, &mut on_event)
    }

    fn lines<E, F>(&mut self, mut input: &[u8], on_event: &mut F) -> Result<(), E>
    where
        E: From<SseError>,
        F: FnMut(SseEvent<'_>) -> Result<(), E>,
    {
        if self.skip_lf && !input.is_empty() {
            self.skip_lf = false;
            if input[0] == b'\n' {
                input = &input[1..];
            }
        }
        while let Some(end) = memchr::memchr2(b'\n', b'\r', input) {
            let part = &input[..end];
            let terminator = input[end];
            input = &input[end + 1..];
            if terminator == b'\r' {
                match input.first() {
                    Some(b'\n') => input = &input[1..],
                    Some(_) => {}
                    None => self.skip_lf = true,
                }
            }
            if self.line.is_empty() {
                self.check_size(part.len())?;
                self.line_complete(part, on_event)?;
            } else {
                self.check_size(self.line.len() + part.len())?;
                self.line.extend_from_slice(part);
                let line = std::mem::take(&mut self.line);
                let result = self.line_complete(&line, on_event);
                self.line = line;
                self.line.clear();
                result?;
            }
        }
        if !input.is_empty() {
            self.check_size(self.line.len() + input.len())?;
            self.line.extend_from_slice(input);
        }
        Ok(())
    }

    /// The bound: the line being read (whole or in part, field name included) plus the data
    /// and type gathered for the current event. Every line is checked once complete, whether
    /// it arrived in one chunk or several, so the outcome never depends on the chunking; and
    /// as a `data`/`event` line is longer than what it adds, applying a line that passed the
    /// check keeps the event itself within the bound.
    fn check_size(&self, pending_line: usize) -> Result<(), SseError> {
        if pending_line + self.data.len() + self.event.len() > self.max_event_bytes {
            return Err(SseError::EventTooLarge {
                max: self.max_event_bytes,
            });
        }
        Ok(())
    }

    fn line_complete<E, F>(&mut self, line: &[u8], on_event: &mut F) -> Result<(), E>
    where
        E: From<SseError>,
        F: FnMut(SseEvent<'_>) -> Result<(), E>,
    {
        if line.is_empty() {
            return self.dispatch(on_event);
        }
        if line[0] == b':' {
            return Ok(()); // comment
        }
        let (field, value) = match memchr::memchr(b':', line) {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"data" => {
                if self.data_lines > 0 {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(value);
                self.data_lines += 1;
            }
            b"event" => {
                self.event.clear();
                self.event.extend_from_slice(value);
            }
            b"id" if !value.contains(&0) => {
                self.last_id.clear();
                self.last_id.extend_from_slice(value);
                self.has_id = true;
            }
            b"retry" if !value.is_empty() && value.iter().all(u8::is_ascii_digit) => {
                // Digits only, so it is ASCII; an overflowing value is ignored.
                if let Ok(ms) = String::from_utf8_lossy(value).parse() {
                    self.retry = Some(ms);
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn dispatch<E, F>(&mut self, on_event: &mut F) -> Result<(), E>
    where
        E: From<SseError>,
        F: FnMut(SseEvent<'_>) -> Result<(), E>,
    {
        if self.data_lines == 0 {
            self.event.clear();
            return Ok(());
        }
        let result = {
            let data = utf8(&self.data);
            let event: Cow<'_, str> = if self.event.is_empty() {
                Cow::Borrowed("message")
            } else {
                utf8(&self.event)
            };
            let id = if self.has_id {
                Some(utf8(&self.last_id))
            } else {
                None
            };
            on_event(SseEvent {
                event: &event,
                data: &data,
                id: id.as_deref(),
                retry: self.retry,
            })
        };
        self.data.clear();
        self.data_lines = 0;
        self.event.clear();
        result
    }
}

/// The text of `bytes`, invalid UTF-8 replaced by U+FFFD. (`from_utf8` first: it checks valid
/// text faster than `from_utf8_lossy`, which walks it chunk by chunk.)
fn utf8(bytes: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    struct Owned {
        event: String,
        data: String,
        id: Option<String>,
    }

    fn parse_chunks(chunks: &[&[u8]]) -> Vec<Owned> {
        let mut p = Parser::default();
        let mut out = Vec::new();
        for c in chunks {
            p.feed::<SseError, _>(c, |e| {
                out.push(Owned {
                    event: e.event.into(),
                    data: e.data.into(),
                    id: e.id.map(Into::into),
                });
                Ok(())
            })
            .unwrap();
        }
        out
    }

    #[test]
    fn cr_at_chunk_end_then_lf_is_one_line_end() {
        let got = parse_chunks(&[b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n"]);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].data, "a\nb");
    }

    #[test]
    fn bom_split_across_chunks_is_stripped_once() {
        let got = parse_chunks(&[b"\xEF", b"\xBB", b"\xBFdata: x\n\n"]);
        assert_eq!(got[0].data, "x");
        // A second BOM is content: the field name is then not `data`.
        let got = parse_chunks(&[b"\xEF\xBB\xBF\xEF\xBB\xBFdata: x\n\n"]);
        assert!(got.is_empty());
    }

    #[test]
    fn partial_bom_then_other_bytes_is_content() {
        let got = parse_chunks(&[b"\xEF", b"data: x\n\n"]);
        assert!(got.is_empty(), "{got:?}"); // field is "\u{FFFD}data"
    }

    #[test]
    fn event_too_large_is_an_error_not_growth() {
        let mut p = Parser::new(64);
        let big = vec![b'a'; 100];
        let r = p.feed::<SseError, _>(&big, |_| Ok(()));
        assert_eq!(r, Err(SseError::EventTooLarge { max: 64 }));
        let mut p = Parser::new(64);
        let mut r = Ok(());
        for _ in 0..10 {
            r = p.feed::<SseError, _>(b"data: 0123456789\n", |_| Ok(()));
            if r.is_err() {
                break;
            }
        }
        assert_eq!(r, Err(SseError::EventTooLarge { max: 64 }));
    }

    #[test]
    fn the_size_bound_does_not_depend_on_chunking() {
        // A 100-byte comment, then a 60-byte data line: over a 64-byte bound either way.
        let mut input = vec![b':'; 100];
        input.push(b'\n');
        let outcome = |chunks: &[&[u8]]| {
            let mut p = Parser::new(64);
            chunks
                .iter()
                .try_for_each(|c| p.feed::<SseError, _>(c, |_| Ok(())))
        };
        assert!(outcome(&[&input]).is_err());
        assert!(outcome(&[&input[..50], &input[50..]]).is_err());
        let line = format!("data: {}\n\n", "x".repeat(60));
        let line = line.as_bytes();
        assert_eq!(outcome(&[line]), outcome(&[&line[..30], &line[30..]]));
        let line = format!("data: {}\n\n", "x".repeat(57)); // 63 bytes: fits
        let line = line.as_bytes();
        assert_eq!(outcome(&[line]), Ok(()));
        assert_eq!(outcome(&[&line[..30], &line[30..]]), Ok(()));
    }

    #[test]
    fn invalid_utf8_becomes_replacement_character() {
        let got = parse_chunks(&[b"data: \xFF\xFE\n\n"]);
        assert_eq!(got[0].data, "\u{FFFD}\u{FFFD}");
    }
}
