//! Parser + every decoder/encoder pair over arbitrary bytes. The first byte picks the input
//! and output formats, the chunking, ui-message `event:` lines and a small event bound; the
//! rest is the upstream stream. The checks (a well-formed output that ends properly in its
//! format, the same output whatever the chunking) are `agentgate::fuzzing::check_transcode`,
//! which `tests/fuzz_corpus.rs` also runs over this target's corpus.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| agentgate::fuzzing::check_transcode(data));
