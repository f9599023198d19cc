//! Conversations and their transcripts (SPEC §1 "The rest of each API", §5, §7): the rows behind
//! history, conversations, sessions and the inbox, whatever API the backend speaks.
//!
//! Two tables (migration 2; `conversations.user_id` from migration 4): `conversations`, keyed
//! by (account, agent, the id the client sees), holding the backend's own id once it is known;
//! and `messages`, one row per user message and per assistant answer. Every write is one
//! [`ConversationWrite`] carried by `WriteOp::Conversation`, so a backend implements one op; a
//! completed exchange (the user message, the answer and the conversation row) is one write,
//! hence one transaction.
//!
//! This file holds the records and writes only. The SQL lives with each backend
//! (`sqlite/transcripts.rs`, `postgres/transcripts.rs`: the same statements, `?n` or `$n`
//! placeholders) and the row mapping is shared (`rows.rs`).

use super::UnixMs;

/// A conversation as stored. `id` is the id the client sees (`conv_…`, a UUID, `api:…`,
/// `default`, or a key the client chose).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationRecord {
    pub account: String,
    pub agent_id: String,
    pub id: String,
    /// The API the conversation was opened through.
    pub front: String,
    /// The backend's own id, once it revealed one.
    pub backend_id: Option<String>,
    pub title: Option<String>,
    pub archived: bool,
    pub created_at: UnixMs,
    pub updated_at: UnixMs,
    /// chatbase `userId`: set when the conversation is opened, never changed (seed 001).
    pub user_id: Option<String>,
}

/// One message of a transcript.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRecord {
    pub id: String,
    pub conversation_id: String,
    /// Position in its conversation, from 1.
    pub seq: i64,
    /// `user` or `assistant`.
    pub role: String,
    pub content: String,
    /// The answer's tool calls and results, as a JSON array (assistant messages only).
    pub tool_calls: Option<String>,
    /// Millicredits charged for the answer (assistant messages only).
    pub credits: Option<i64>,
    pub created_at: UnixMs,
    pub read_at: Option<UnixMs>,
    /// The answer was kept only up to `[server] max_answer_bytes`.
    pub truncated: bool,
    /// The message's parts in the AI SDK `UIMessage` form, as a JSON array (migration 6;
    /// rows written before it hold their text as one text part).
    pub parts: Option<String>,
}

/// A message to append.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub id: String,
    pub content: String,
    pub tool_calls: Option<String>,
    pub credits: Option<i64>,
    pub created_at: UnixMs,
    /// The answer was kept only up to `[server] max_answer_bytes`.
    pub truncated: bool,
    /// The AI SDK `UIMessage` parts, as a JSON array.
    pub parts: Option<String>,
}

/// A completed exchange: the conversation (opened if new, its backend id updated if revealed)
/// and, when recording is on, the user message and the answer.
#[derive(Debug, Clone)]
pub struct Exchange {
    pub account: String,
    pub agent_id: String,
    pub conversation_id: String,
    pub front: String,
    pub backend_id: Option<String>,
    /// Title given to a conversation that has none yet.
    pub title: Option<String>,
    /// The `userId` of a conversation this exchange opens; kept as it is on an existing one.
    pub user_id: Option<String>,
    /// `None`: nothing recorded (the chatbase continuation after a tool result has no message).
    pub user: Option<NewMessage>,
    /// `None`: the agent does not record transcripts; only the id mapping is kept.
    pub assistant: Option<NewMessage>,
    pub now: UnixMs,
}

/// Every write on conversations.
#[derive(Debug, Clone)]
pub enum ConversationWrite {
    Record(Box<Exchange>),
    /// Opens an empty conversation; `Duplicate` if the id exists.
    Create {
        account: String,
        agent_id: String,
        id: String,
        front: String,
        title: Option<String>,
        now: UnixMs,
    },
    /// Renames and/or (un)archives; `None` fields are left as they are.
    Update {
        account: String,
        agent_id: String,
        id: String,
        title: Option<String>,
        archived: Option<bool>,
        now: UnixMs,
    },
    /// Deletes a conversation and its messages.
    Delete {
        account: String,
        agent_id: String,
        id: String,
    },
    /// Marks unread assistant messages read: these ids, or (`None`) all of them.
    MarkRead {
        account: String,
        agent_id: String,
        message_ids: Option<Vec<String>>,
        now: UnixMs,
    },
}

/// What a [`ConversationWrite`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConversationOutcome {
    Recorded,
    /// Create/Update: the conversation after the write; `None` if it does not exist.
    Conversation(Option<ConversationRecord>),
    /// Delete: whether it existed.
    Deleted(bool),
    /// MarkRead: how many messages changed.
    Marked(u64),
}

/// A position in a list, after which the next page starts: (created_at, id).
pub type After = (UnixMs, String);
