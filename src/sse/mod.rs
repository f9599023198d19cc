//! Server-sent events: an incremental parser (WHATWG rules) and a writer. No I/O.

mod parser;
mod writer;

pub use parser::{Parser, SseError, SseEvent, DEFAULT_MAX_EVENT_BYTES};
pub use writer::{
    write_comment, write_event, write_event_with, write_json_event, write_raw_data_event,
};
