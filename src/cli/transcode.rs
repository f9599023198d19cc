//! `agentgate transcode`: SSE on stdin → SSE (or a sync JSON body) on stdout, for debugging.

use std::io::{self, Read, Write};
use std::str::FromStr;

use bytes::BytesMut;

use crate::formats::{Aggregate, DecodeError, Decoder, EncodeOptions, Format, SyncContext};
use crate::fronts::Api;
use crate::sse;
use crate::transcode::Transcoder;

/// Where `transcode` writes: a stream format, or `json:<api>` for that API's sync body
/// (`json:openai-chat` the `chat.completion` object, `json:openai-responses` the Response).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Stream(Format),
    Json(Api),
    /// `json:openai-chat` / `json:openai-responses`.
    OpenAiJson(Format),
}

impl FromStr for Target {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.strip_prefix("json:") {
            Some(f @ ("openai-chat" | "openai-responses")) => f.parse().map(Target::OpenAiJson),
            Some(api) => api.parse().map(Target::Json),
            None => s.parse().map(Target::Stream).map_err(|e| {
                format!("{e}, or json:<api> with api one of pharen, chatbase, agents, guayaba, openai-chat, openai-responses")
            }),
        }
    }
}

/// Calls `f` with each chunk read from `input` until EOF (or until `f` says stop).
fn each_chunk(
    mut input: impl Read,
    buf: &mut [u8],
    mut f: impl FnMut(&[u8]) -> io::Result<bool>,
) -> io::Result<()> {
    loop {
        match input.read(buf) {
            Ok(0) => return Ok(()),
            Ok(n) => {
                if !f(&buf[..n])? {
                    return Ok(());
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Runs the transcoder over `input` until EOF, flushing `output` after every read so a
/// live stream is passed on as it arrives. Returns the decode error that ended the input,
/// if any (the output has then been ended with an error event).
pub fn run(
    from: Format,
    to: Target,
    options: EncodeOptions,
    mut input: impl Read,
    mut output: impl Write,
) -> io::Result<Option<DecodeError>> {
    let mut buf = vec![0u8; 64 * 1024];
    match to {
        Target::Stream(to) => {
            let mut transcoder = Transcoder::new(from, to, options, ());
            let mut out = BytesMut::with_capacity(64 * 1024);
            each_chunk(&mut input, &mut buf, |chunk| {
                transcoder.feed(chunk, &mut out);
                output.write_all(&out)?;
                output.flush()?;
                out.clear();
                Ok(true)
            })?;
            transcoder.finish(&mut out);
            output.write_all(&out)?;
            output.flush()?;
            Ok(transcoder.error().cloned())
        }
        Target::Json(_) | Target::OpenAiJson(_) => {
            let mut parser = sse::Parser::default();
            let mut decoder = Decoder::new(from);
            let mut aggregate = Aggregate::default();
            let mut result = Ok(());
            each_chunk(&mut input, &mut buf, |chunk| {
                result = parser.feed::<DecodeError, _>(chunk, |e| {
                    decoder.decode(&e, &mut |ev| aggregate.push(&ev))
                });
                Ok(result.is_ok())
            })?;
            let error = result.and_then(|()| decoder.end()).err();
            let ctx = SyncContext::default();
            let body = match to {
                Target::Json(api) => api.sync_body(&aggregate, &ctx),
                Target::OpenAiJson(Format::OpenAiResponses) => {
                    crate::formats::response_body(&aggregate, &options, &ctx)
                }
                _ => crate::formats::chat_completion_body(&aggregate, &options, &ctx),
            };
            serde_json::to_writer_pretty(&mut output, &body)?;
            output.write_all(b"\n")?;
            output.flush()?;
            Ok(error.or(aggregate.error.map(DecodeError::Protocol)))
        }
    }
}
