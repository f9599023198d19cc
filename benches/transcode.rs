//! Transcoding throughput for every pair of formats (6 × 6), on a stream of 50 × 16-byte text
//! deltas and one of 50 × 4 KiB deltas, the input given whole: a fresh `Transcoder` per
//! iteration writing into a reused buffer, `finish` included.
//!
//! Two groups measure the same work: `events/…` reports text-delta events per second
//! (`Throughput::Elements`), `bytes/…` upstream megabytes per second (`Throughput::Bytes`).
//!
//! `cargo bench --bench transcode -- --warm-up-time 1 --measurement-time 2`

use std::hint::black_box;

use agentgate::formats::{EncodeOptions, Format};
use agentgate::transcode::Transcoder;
use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const EVENTS: usize = 50;

/// A complete upstream stream in `format` with `EVENTS` deltas of `size` bytes (ASCII with a
/// multi-byte character, no JSON escapes).
fn upstream(format: Format, size: usize) -> Vec<u8> {
    let mut delta = "héllo wörld, ".repeat(size / 15 + 1);
    while delta.len() > size {
        delta.pop();
    }
    assert_eq!(delta.len(), size);
    let mut s = String::new();
    match format {
        Format::UiMessage => {
            s.push_str("data: {\"type\":\"start\",\"messageId\":\"msg_1\"}\n\n");
            s.push_str("data: {\"type\":\"text-start\",\"id\":\"t1\"}\n\n");
            for _ in 0..EVENTS {
                s.push_str("data: {\"type\":\"text-delta\",\"id\":\"t1\",\"delta\":\"");
                s.push_str(&delta);
                s.push_str("\"}\n\n");
            }
            s.push_str("data: {\"type\":\"text-end\",\"id\":\"t1\"}\n\n");
            s.push_str("data: {\"type\":\"finish\",\"finishReason\":\"stop\",\"messageMetadata\":{\"usage\":{\"credits\":1}}}\n\n");
            s.push_str("data: [DONE]\n\n");
        }
        Format::SessionDelta => {
            s.push_str("event: session\ndata: {\"type\":\"session\",\"sessionKey\":\"api:k\"}\n\n");
            let mut text = String::new();
            for _ in 0..EVENTS {
                text.push_str(&delta);
                s.push_str("event: delta\ndata: {\"type\":\"delta\",\"text\":\"");
                s.push_str(&text);
                s.push_str("\"}\n\n");
            }
            s.push_str("event: done\ndata: {\"type\":\"done\",\"usage\":{\"credits\":1}}\n\n");
        }
        Format::TextDone => {
            for _ in 0..EVENTS {
                s.push_str("data: {\"type\":\"text\",\"content\":\"");
                s.push_str(&delta);
                s.push_str("\"}\n\n");
            }
            s.push_str("data: {\"type\":\"done\",\"content\":\"\"}\n\ndata: [DONE]\n\n");
        }
        Format::AgUi => {
            s.push_str("data: {\"type\":\"RUN_STARTED\",\"threadId\":\"thread_1\",\"runId\":\"run_1\"}\n\n");
            s.push_str("data: {\"type\":\"TEXT_MESSAGE_START\",\"messageId\":\"m1\",\"role\":\"assistant\"}\n\n");
            for _ in 0..EVENTS {
                s.push_str(
                    "data: {\"type\":\"TEXT_MESSAGE_CONTENT\",\"messageId\":\"m1\",\"delta\":\"",
                );
                s.push_str(&delta);
                s.push_str("\"}\n\n");
            }
            s.push_str("data: {\"type\":\"TEXT_MESSAGE_END\",\"messageId\":\"m1\"}\n\n");
            s.push_str("data: {\"type\":\"RUN_FINISHED\",\"threadId\":\"thread_1\",\"runId\":\"run_1\",\"result\":{\"usage\":{\"credits\":1}}}\n\n");
        }
        Format::OpenAiChat => {
            let head = "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\
                        \"created\":1700000000,\"model\":\"m\",\"choices\":[";
            s.push_str(head);
            s.push_str("{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"logprobs\":null,\"finish_reason\":null}]}\n\n");
            for _ in 0..EVENTS {
                s.push_str(head);
                s.push_str("{\"index\":0,\"delta\":{\"content\":\"");
                s.push_str(&delta);
                s.push_str("\"},\"logprobs\":null,\"finish_reason\":null}]}\n\n");
            }
            s.push_str(head);
            s.push_str(
                "{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":\"stop\"}]}\n\n",
            );
            s.push_str(head);
            s.push_str("],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":50,\"total_tokens\":55}}\n\n");
            s.push_str("data: [DONE]\n\n");
        }
        Format::OpenAiResponses => {
            let mut seq = 0;
            let mut event = |s: &mut String, ty: &str, body: &str| {
                s.push_str(&format!(
                    "event: {ty}\ndata: {{\"type\":\"{ty}\",{body},\"sequence_number\":{seq}}}\n\n"
                ));
                seq += 1;
            };
            let response = |status: &str| {
                format!(
                    "\"response\":{{\"id\":\"resp_1\",\"object\":\"response\",\"created_at\":1700000000,\
                     \"status\":\"{status}\",\"model\":\"m\",\"output\":[],\"usage\":null}}"
                )
            };
            event(&mut s, "response.created", &response("in_progress"));
            event(
                &mut s,
                "response.output_item.added",
                "\"output_index\":0,\"item\":{\"id\":\"msg_1\",\"type\":\"message\",\"status\":\"in_progress\",\"role\":\"assistant\",\"content\":[]}",
            );
            for _ in 0..EVENTS {
                let body = format!(
                    "\"item_id\":\"msg_1\",\"output_index\":0,\"content_index\":0,\"delta\":\"{delta}\",\"logprobs\":[]"
                );
                event(&mut s, "response.output_text.delta", &body);
            }
            event(
                &mut s,
                "response.output_item.done",
                "\"output_index\":0,\"item\":{\"id\":\"msg_1\",\"type\":\"message\",\"status\":\"completed\",\"role\":\"assistant\",\"content\":[]}",
            );
            event(&mut s, "response.completed", &response("completed"));
        }
    }
    s.into_bytes()
}

fn bench(c: &mut Criterion) {
    for (size_name, size) in [("16B", 16), ("4KiB", 4096)] {
        for unit in ["events", "bytes"] {
            let mut group = c.benchmark_group(format!("{unit}/{size_name}"));
            for from in Format::ALL {
                let input = upstream(from, size);
                group.throughput(match unit {
                    "events" => Throughput::Elements(EVENTS as u64),
                    _ => Throughput::Bytes(input.len() as u64),
                });
                for to in Format::ALL {
                    let mut out = BytesMut::with_capacity(1 << 16);
                    group.bench_function(
                        BenchmarkId::from_parameter(format!("{from}→{to}")),
                        |b| {
                            b.iter(|| {
                                out.clear();
                                let mut t = Transcoder::new(from, to, EncodeOptions::default(), ());
                                t.feed(black_box(&input), &mut out);
                                t.finish(&mut out);
                                assert!(t.error().is_none());
                                black_box(out.len())
                            })
                        },
                    );
                }
            }
            group.finish();
        }
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
