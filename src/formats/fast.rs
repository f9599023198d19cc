//! Fast paths for the one event shape that dominates every stream, a text delta: reading
//! `{"type":"…","id":"…","delta":"…"}` whose values need no unescaping, and writing such an
//! object whose values need no escaping. Anything else takes the general serde path, and
//! both paths give the same result (tests below and the property tests check it).

use bytes::BytesMut;

/// True when `s` can sit inside a JSON string as is: no `"`, `\` or control character.
/// (Written as a fold, without early exit, so that it vectorises.)
pub(crate) fn is_plain(s: &[u8]) -> bool {
    !s.iter().fold(false, |bad, &b| {
        bad | (b < 0x20) | (b == b'"') | (b == b'\\')
    })
}

/// Reads exactly `{"k0":"v0","k1":"v1",…}` — these keys in this order, no whitespace, every
/// value a string with no escape and no control character — and returns the values,
/// borrowed. `None` for anything else, which the caller then parses in full.
pub(crate) fn plain_fields<'a, const N: usize>(
    json: &'a str,
    keys: [&str; N],
) -> Option<[&'a str; N]> {
    let mut values = [""; N];
    let mut rest = json.strip_prefix('{')?;
    for (i, key) in keys.iter().enumerate() {
        if i > 0 {
            rest = rest.strip_prefix(',')?;
        }
        rest = rest
            .strip_prefix('"')?
            .strip_prefix(key)?
            .strip_prefix("\":\"")?;
        let end = memchr::memchr2(b'"', b'\\', rest.as_bytes())?;
        let value = &rest[..end];
        if rest.as_bytes()[end] != b'"' || !is_plain(value.as_bytes()) {
            return None;
        }
        values[i] = value;
        rest = &rest[end + 1..];
    }
    (rest == "}").then_some(values)
}

/// Writes `{"type":"<ty>","k1":"v1",…}` as serde would (same bytes): keys and `ty` are
/// plain by construction; values are copied as is when plain, else escaped by serde_json.
pub(crate) fn write_fields(out: &mut BytesMut, ty: &str, fields: &[(&str, &str)]) {
    out.extend_from_slice(b"{\"type\":\"");
    out.extend_from_slice(ty.as_bytes());
    out.extend_from_slice(b"\"");
    for (key, value) in fields {
        out.extend_from_slice(b",\"");
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(b"\":");
        write_str(out, value);
    }
    out.extend_from_slice(b"}");
}

/// A JSON string.
pub(crate) fn write_str(out: &mut BytesMut, s: &str) {
    if is_plain(s.as_bytes()) {
        out.reserve(s.len() + 2);
        out.extend_from_slice(b"\"");
        out.extend_from_slice(s.as_bytes());
        out.extend_from_slice(b"\"");
    } else {
        use bytes::BufMut;
        // Serialising a string into a growable buffer cannot fail.
        let _ = serde_json::to_writer(out.writer(), s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_fields_reads_only_the_exact_shape() {
        let f = |s| plain_fields(s, ["type", "id", "delta"]);
        assert_eq!(
            f(r#"{"type":"text-delta","id":"t1","delta":"héllo 👋"}"#),
            Some(["text-delta", "t1", "héllo 👋"])
        );
        assert_eq!(
            f(r#"{"type":"text-delta","id":"","delta":""}"#),
            Some(["text-delta", "", ""])
        );
        for other in [
            r#"{"type":"text-delta","id":"t1","delta":"a\"b"}"#, // escape
            r#"{"type":"text-delta","id":"t1","delta":"a\nb"}"#,
            "{\"type\":\"text-delta\",\"id\":\"t1\",\"delta\":\"a\tb\"}", // raw control
            r#"{"type":"text-delta","delta":"x","id":"t1"}"#,             // order
            r#"{"type": "text-delta","id":"t1","delta":"x"}"#,            // whitespace
            r#"{"type":"text-delta","id":"t1","delta":"x","p":1}"#,       // more fields
            r#"{"type":"text-delta","idx":"t1","delta":"x"}"#,            // other key
            r#"{"type":"text-delta","id":"t1","delta":"x"} "#,
            r#"{"type":"text-delta","id":"t1","delta":"x"#,
            r#"{"type":"text-delta","id":1,"delta":"x"}"#,
            "",
        ] {
            assert_eq!(f(other), None, "{other}");
        }
    }

    #[test]
    fn write_fields_writes_what_serde_writes() {
        #[derive(serde::Serialize)]
        #[serde(tag = "type", rename = "text-delta")]
        struct D<'a> {
            id: &'a str,
            delta: &'a str,
        }
        for (id, delta) in [
            ("t1", "plain"),
            ("t-ü", "héllo 👋 日本"),
            (
                "x",
                "quote \" backslash \\ nl \n cr \r tab \t nul \0 del \x7f \u{2028}",
            ),
            ("", ""),
        ] {
            let mut ours = BytesMut::new();
            write_fields(&mut ours, "text-delta", &[("id", id), ("delta", delta)]);
            let theirs = serde_json::to_vec(&D { id, delta }).unwrap();
            assert_eq!(ours.as_ref(), theirs.as_slice());
            let parsed = plain_fields(std::str::from_utf8(&ours).unwrap(), ["type", "id", "delta"]);
            if is_plain(delta.as_bytes()) {
                assert_eq!(parsed, Some(["text-delta", id, delta]));
            } else {
                assert_eq!(parsed, None);
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn the_fast_paths_agree_with_serde(id in "(?s).{0,6}", delta in "(?s).{0,24}") {
            #[derive(serde::Serialize)]
            #[serde(tag = "type", rename = "text-delta")]
            struct D<'a> {
                id: &'a str,
                delta: &'a str,
            }
            let theirs = serde_json::to_string(&D { id: &id, delta: &delta }).unwrap();
            let mut ours = BytesMut::new();
            write_fields(&mut ours, "text-delta", &[("id", &id), ("delta", &delta)]);
            proptest::prop_assert_eq!(ours.as_ref(), theirs.as_bytes());
            match plain_fields(&theirs, ["type", "id", "delta"]) {
                Some(values) => proptest::prop_assert_eq!(values, ["text-delta", id.as_str(), delta.as_str()]),
                None => proptest::prop_assert!(!is_plain(id.as_bytes()) || !is_plain(delta.as_bytes())),
            }
        }
    }
}
