//! Writing server-sent events into a reused output buffer.

use bytes::{BufMut, BytesMut};
use serde::Serialize;

/// Writes one event whose data may hold line breaks (each line becomes its own `data:` line).
pub fn write_event(out: &mut BytesMut, event: Option<&str>, data: &str) {
    write_event_name(out, event);
    let mut rest = data.as_bytes();
    loop {
        let end = memchr::memchr2(b'\n', b'\r', rest).unwrap_or(rest.len());
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(&rest[..end]);
        out.extend_from_slice(b"\n");
        if end == rest.len() {
            break;
        }
        let skip = if rest[end..].starts_with(b"\r\n") {
            2
        } else {
            1
        };
        rest = &rest[end + skip..];
    }
    out.extend_from_slice(b"\n");
}

/// Writes one event whose data is a JSON value on one line (JSON escapes every line break).
pub fn write_json_event<T: Serialize + ?Sized>(out: &mut BytesMut, event: Option<&str>, value: &T) {
    write_event_name(out, event);
    out.extend_from_slice(b"data: ");
    // Serialising plain data into a growable buffer cannot fail.
    let _ = serde_json::to_writer(out.writer(), value);
    out.extend_from_slice(b"\n\n");
}

/// Writes one event whose data `body` writes straight into `out`; it must write no line break
/// (e.g. JSON written by hand on the hot path).
pub fn write_event_with(out: &mut BytesMut, event: Option<&str>, body: impl FnOnce(&mut BytesMut)) {
    write_event_name(out, event);
    out.extend_from_slice(b"data: ");
    body(out);
    out.extend_from_slice(b"\n\n");
}

/// Writes `data: <raw>` where `raw` is known to hold no line break (e.g. `[DONE]`).
pub fn write_raw_data_event(out: &mut BytesMut, raw: &str) {
    debug_assert!(!raw.contains(['\n', '\r']));
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(raw.as_bytes());
    out.extend_from_slice(b"\n\n");
}

/// Writes a comment line (ignored by clients; used as a keep-alive).
pub fn write_comment(out: &mut BytesMut, text: &str) {
    for line in text.split(['\n', '\r']) {
        out.extend_from_slice(b": ");
        out.extend_from_slice(line.as_bytes());
        out.extend_from_slice(b"\n");
    }
}

fn write_event_name(out: &mut BytesMut, event: Option<&str>) {
    if let Some(name) = event {
        debug_assert!(!name.contains(['\n', '\r']));
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sse::{Parser, SseError};

    fn roundtrip(data: &str) -> String {
        let mut out = BytesMut::new();
        write_event(&mut out, Some("x"), data);
        let mut got = None;
        Parser::default()
            .feed::<SseError, _>(&out, |e| {
                got = Some(e.data.to_owned());
                Ok(())
            })
            .unwrap();
        got.unwrap()
    }

    #[test]
    fn multi_line_data_round_trips_with_lf_line_ends() {
        assert_eq!(roundtrip("a\nb"), "a\nb");
        assert_eq!(roundtrip("a\r\nb\rc"), "a\nb\nc");
        assert_eq!(roundtrip(""), "");
        assert_eq!(roundtrip("\n"), "\n");
    }
}
