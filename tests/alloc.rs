//! The hot path allocates nothing per text delta in steady state.
//!
//! A counting `#[global_allocator]` wraps the system allocator. It needs `unsafe impl
//! GlobalAlloc` (an allocator is unsafe by contract); the crate forbids unsafe code in
//! `src/lib.rs` only, and this test binary is the one place that needs it. Counting is per
//! thread (a thread-local switch), so the other tests running in parallel do not disturb it.
//!
//! Each check feeds a long upstream stream of text deltas, cut into 61-byte chunks (so
//! events and lines straddle chunk ends), into one `Transcoder` with one reused output buffer
//! cleared after every chunk: a warm-up part first, then the measured part.
//!
//! - Between ui-message and text-done (all four pairs) the measured part allocates nothing:
//!   deltas are borrowed from the parser's buffers through serde, and every buffer has
//!   reached its size during warm-up.
//! - Where session-delta is the input or the output, each `delta` event carries the whole
//!   answer so far, so some buffer must grow with the answer (the decoder's text seen so far,
//!   the parser's event buffer; the encoder's accumulated text and the output buffer). Growth
//!   is amortised doubling: the count is bounded by a few allocations per buffer per doubling
//!   of the answer (`log2` of its length), not by the number of events.
//!
//! Deltas here have no JSON escapes: a delta with an escape (`\n`, `\"`) must be unescaped
//! into an owned string, one allocation for that delta.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use agentgate::formats::{EncodeOptions, Format};
use agentgate::transcode::Transcoder;
use bytes::BytesMut;

struct Counting;

thread_local! {
    static ON: Cell<bool> = const { Cell::new(false) };
    static COUNT: Cell<usize> = const { Cell::new(0) };
}

fn note() {
    // `try_with`: thread-locals may be gone while a thread shuts down.
    let _ = ON.try_with(|on| {
        if on.get() {
            let _ = COUNT.try_with(|c| c.set(c.get() + 1));
        }
    });
}

// SAFETY: every call is passed unchanged to `System`, which upholds the `GlobalAlloc`
// contract; the counting touches only const-initialised thread-locals, which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note();
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Allocations made by `f` on this thread.
fn count<R>(f: impl FnOnce() -> R) -> (usize, R) {
    COUNT.with(|c| c.set(0));
    ON.with(|on| on.set(true));
    let r = f();
    ON.with(|on| on.set(false));
    (COUNT.with(Cell::get), r)
}

/// A 16-byte delta with multi-byte characters and no JSON escapes.
const DELTA: &str = "hé wörld 👋!";

/// An upstream stream in `format`: `n` text deltas, without its terminal event (the measured
/// part is the middle of a stream).
fn upstream(format: Format, n: usize) -> Vec<u8> {
    assert_eq!(DELTA.len(), 16);
    let mut s = String::new();
    match format {
        Format::UiMessage => {
            s.push_str("data: {\"type\":\"start\",\"messageId\":\"msg_1\"}\n\n");
            s.push_str("data: {\"type\":\"text-start\",\"id\":\"t1\"}\n\n");
            for _ in 0..n {
                s.push_str("data: {\"type\":\"text-delta\",\"id\":\"t1\",\"delta\":\"");
                s.push_str(DELTA);
                s.push_str("\"}\n\n");
            }
        }
        Format::SessionDelta => {
            s.push_str("event: session\ndata: {\"type\":\"session\",\"sessionKey\":\"api:k\"}\n\n");
            let mut text = String::new();
            for _ in 0..n {
                text.push_str(DELTA);
                s.push_str("event: delta\ndata: {\"type\":\"delta\",\"text\":\"");
                s.push_str(&text);
                s.push_str("\"}\n\n");
            }
        }
        Format::TextDone => {
            for _ in 0..n {
                s.push_str("data: {\"type\":\"text\",\"content\":\"");
                s.push_str(DELTA);
                s.push_str("\"}\n\n");
            }
        }
        Format::AgUi => {
            s.push_str("data: {\"type\":\"RUN_STARTED\",\"threadId\":\"t\",\"runId\":\"r\"}\n\n");
            s.push_str("data: {\"type\":\"TEXT_MESSAGE_START\",\"messageId\":\"m1\"}\n\n");
            for _ in 0..n {
                s.push_str(
                    "data: {\"type\":\"TEXT_MESSAGE_CONTENT\",\"messageId\":\"m1\",\"delta\":\"",
                );
                s.push_str(DELTA);
                s.push_str("\"}\n\n");
            }
        }
        Format::OpenAiChat => {
            for _ in 0..n {
                s.push_str("data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"");
                s.push_str(DELTA);
                s.push_str("\"},\"finish_reason\":null}]}\n\n");
            }
        }
        Format::OpenAiResponses => {
            s.push_str("event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"id\":\"resp_1\"},\"sequence_number\":0}\n\n");
            for i in 0..n {
                s.push_str("event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"item_id\":\"msg_1\",\"output_index\":0,\"content_index\":0,\"delta\":\"");
                s.push_str(DELTA);
                s.push_str(&format!("\",\"sequence_number\":{}}}\n\n", i + 1));
            }
        }
    }
    s.into_bytes()
}

/// Allocations while transcoding the last `measured` of `warm + measured` deltas.
fn steady_state(from: Format, to: Format, warm: usize, measured: usize) -> usize {
    let input = upstream(from, warm + measured);
    let warm_bytes = upstream(from, warm).len();
    let chunks: Vec<&[u8]> = input.chunks(61).collect();
    let split = warm_bytes.div_ceil(61);
    let mut t = Transcoder::new(from, to, EncodeOptions::default(), ());
    let mut out = BytesMut::new();
    let mut written = 0;
    for chunk in &chunks[..split] {
        t.feed(chunk, &mut out);
        written += out.len();
        out.clear();
    }
    let (allocs, more) = count(|| {
        let mut written = 0;
        for chunk in &chunks[split..] {
            t.feed(chunk, &mut out);
            written += out.len();
            out.clear();
        }
        written
    });
    assert!(!t.is_done(), "{from} → {to} ended early: {:?}", t.error());
    assert!(written > 0 && more > 0, "{from} → {to} wrote nothing");
    allocs
}

#[test]
fn ui_message_text_done_and_ag_ui_pairs_allocate_nothing_per_delta() {
    let formats = [Format::UiMessage, Format::TextDone, Format::AgUi];
    for from in formats {
        for to in formats {
            let allocs = steady_state(from, to, 200, 20_000);
            assert_eq!(
                allocs, 0,
                "{from} → {to}: {allocs} allocations for 20000 deltas"
            );
        }
    }
}

#[test]
fn session_delta_pairs_allocate_only_to_grow_the_accumulated_text() {
    let (warm, measured): (usize, usize) = (100, 1_400);
    // The answer grows 15-fold during the measured part: buffers holding it double ~4 times.
    let doublings = ((warm + measured) / warm).ilog2() as usize + 2;
    // Up to 3 growing buffers on the input side (parser line and data, text seen) and 2 on
    // the output side (accumulated text, output buffer), each allocating once per doubling:
    // 5 per doubling, with a factor 2 of slack for the allocators' own growth policies.
    let bound = 10 * doublings;
    for from in Format::ALL {
        for to in Format::ALL {
            if from != Format::SessionDelta && to != Format::SessionDelta {
                continue;
            }
            let allocs = steady_state(from, to, warm, measured);
            assert!(
                allocs <= bound,
                "{from} → {to}: {allocs} allocations for {measured} deltas (bound {bound})"
            );
            eprintln!("{from} → {to}: {allocs} allocations for {measured} deltas");
        }
    }
}

/// The OpenAI formats, in and out (with the ui-message and text-done ones): the Responses
/// encoder keeps each item's text for its `.done` events, so it allocates only to grow it.
#[test]
fn openai_pairs_allocate_only_to_grow_the_kept_text() {
    let (warm, measured): (usize, usize) = (100, 1_400);
    let doublings = ((warm + measured) / warm).ilog2() as usize + 2;
    let bound = 10 * doublings;
    let openai = [Format::OpenAiChat, Format::OpenAiResponses];
    for from in Format::ALL {
        for to in Format::ALL {
            if !openai.contains(&from) && !openai.contains(&to) {
                continue;
            }
            let allocs = steady_state(from, to, warm, measured);
            assert!(
                allocs <= bound,
                "{from} → {to}: {allocs} allocations for {measured} deltas (bound {bound})"
            );
            eprintln!("{from} → {to}: {allocs} allocations for {measured} deltas");
        }
    }
}

/// The counter works: an allocation in the measured closure is seen.
#[test]
fn the_counter_counts() {
    let (n, v) = count(|| vec![1u8; 100]);
    assert_eq!(n, 1);
    assert_eq!(v.len(), 100);
}
