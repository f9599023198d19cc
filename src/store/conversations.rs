//! Conversations and their transcripts (SPEC §1 "The rest of each API", §5, §7): the rows behind
//! history, conversations, sessions and the inbox, whatever API the backend speaks.
//!
//! Two tables (migration 2; `conversations.user_id` from migration 3): `conversations`, keyed by (account, agent, the id the client sees),
//! holding the backend's own id once it is known; and `messages`, one row per user message and
//! per assistant answer. Every write is one [`ConversationWrite`] carried by
//! `WriteOp::Conversation`, so a backend implements one op; a completed exchange (the user
//! message, the answer and the conversation row) is one write, hence one transaction.
//!
//! The SQL below is portable to PostgreSQL (row-value comparisons, `ON CONFLICT … excluded`,
//! `RETURNING`); a PostgreSQL backend can run the same statements with `$n` placeholders.

use rusqlite::{params, Connection, ErrorCode, OptionalExtension, Row};

use super::{StoreError, UnixMs};

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

const CONVERSATION_COLUMNS: &str =
    "account, agent_id, id, front, backend_id, title, archived, created_at, updated_at, user_id";

fn conversation_row(r: &Row<'_>) -> rusqlite::Result<ConversationRecord> {
    Ok(ConversationRecord {
        account: r.get(0)?,
        agent_id: r.get(1)?,
        id: r.get(2)?,
        front: r.get(3)?,
        backend_id: r.get(4)?,
        title: r.get(5)?,
        archived: r.get::<_, i64>(6)? != 0,
        created_at: r.get(7)?,
        updated_at: r.get(8)?,
        user_id: r.get(9)?,
    })
}

const MESSAGE_COLUMNS: &str =
    "id, conversation_id, seq, role, content, tool_calls, credits, created_at, read_at, truncated, parts";

fn message_row(r: &Row<'_>) -> rusqlite::Result<MessageRecord> {
    Ok(MessageRecord {
        id: r.get(0)?,
        conversation_id: r.get(1)?,
        seq: r.get(2)?,
        role: r.get(3)?,
        content: r.get(4)?,
        tool_calls: r.get(5)?,
        credits: r.get(6)?,
        created_at: r.get(7)?,
        read_at: r.get(8)?,
        truncated: r.get::<_, i64>(9)? != 0,
        parts: r.get(10)?,
    })
}

// ---- writes (run by the writer, inside its transaction) ------------------------------------

pub(crate) fn apply(
    c: &Connection,
    w: &ConversationWrite,
) -> Result<ConversationOutcome, StoreError> {
    match w {
        ConversationWrite::Record(x) => record(c, x).map(|()| ConversationOutcome::Recorded),
        ConversationWrite::Create {
            account,
            agent_id,
            id,
            front,
            title,
            now,
        } => {
            let r = c
                .prepare_cached(
                    "INSERT INTO conversations
                         (account, agent_id, id, front, backend_id, title, archived,
                          created_at, updated_at)
                     VALUES (?1, ?2, ?3, ?4, NULL, ?5, 0, ?6, ?6)",
                )?
                .execute(params![account, agent_id, id, front, title, now]);
            match r {
                Ok(_) => {}
                Err(rusqlite::Error::SqliteFailure(f, _))
                    if f.code == ErrorCode::ConstraintViolation =>
                {
                    return Err(StoreError::Duplicate("conversation id"))
                }
                Err(e) => return Err(e.into()),
            }
            get_conversation(c, account, agent_id, id).map(ConversationOutcome::Conversation)
        }
        ConversationWrite::Update {
            account,
            agent_id,
            id,
            title,
            archived,
            now,
        } => {
            let row = c
                .prepare_cached(&format!(
                    "UPDATE conversations
                     SET title = COALESCE(?1, title), archived = COALESCE(?2, archived),
                         updated_at = ?3
                     WHERE account = ?4 AND agent_id = ?5 AND id = ?6
                     RETURNING {CONVERSATION_COLUMNS}"
                ))?
                .query_row(
                    params![title, archived.map(i64::from), now, account, agent_id, id],
                    conversation_row,
                )
                .optional()?;
            Ok(ConversationOutcome::Conversation(row))
        }
        ConversationWrite::Delete {
            account,
            agent_id,
            id,
        } => {
            c.prepare_cached(
                "DELETE FROM messages WHERE account = ?1 AND agent_id = ?2 AND conversation_id = ?3",
            )?
            .execute(params![account, agent_id, id])?;
            let n = c
                .prepare_cached(
                    "DELETE FROM conversations WHERE account = ?1 AND agent_id = ?2 AND id = ?3",
                )?
                .execute(params![account, agent_id, id])?;
            Ok(ConversationOutcome::Deleted(n == 1))
        }
        ConversationWrite::MarkRead {
            account,
            agent_id,
            message_ids,
            now,
        } => {
            let n = match message_ids {
                None => c
                    .prepare_cached(
                        "UPDATE messages SET read_at = ?1
                         WHERE account = ?2 AND agent_id = ?3 AND role = 'assistant'
                           AND read_at IS NULL",
                    )?
                    .execute(params![now, account, agent_id])?,
                Some(ids) => {
                    let mut stmt = c.prepare_cached(
                        "UPDATE messages SET read_at = ?1
                         WHERE account = ?2 AND agent_id = ?3 AND role = 'assistant'
                           AND read_at IS NULL AND id = ?4",
                    )?;
                    let mut n = 0;
                    for id in ids {
                        n += stmt.execute(params![now, account, agent_id, id])?;
                    }
                    n
                }
            };
            Ok(ConversationOutcome::Marked(n as u64))
        }
    }
}

fn record(c: &Connection, x: &Exchange) -> Result<(), StoreError> {
    c.prepare_cached(
        "INSERT INTO conversations
             (account, agent_id, id, front, backend_id, title, archived, created_at, updated_at,
              user_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0, ?7, ?7, ?8)
         ON CONFLICT (account, agent_id, id) DO UPDATE SET
             backend_id = COALESCE(excluded.backend_id, conversations.backend_id),
             title = COALESCE(conversations.title, excluded.title),
             updated_at = excluded.updated_at",
    )?
    .execute(params![
        x.account,
        x.agent_id,
        x.conversation_id,
        x.front,
        x.backend_id,
        x.title,
        x.now,
        x.user_id
    ])?;
    let messages = [(&x.user, "user"), (&x.assistant, "assistant")];
    if messages.iter().all(|(m, _)| m.is_none()) {
        return Ok(());
    }
    let mut seq: i64 = c
        .prepare_cached(
            "SELECT COALESCE(MAX(seq), 0) FROM messages
             WHERE account = ?1 AND agent_id = ?2 AND conversation_id = ?3",
        )?
        .query_row(params![x.account, x.agent_id, x.conversation_id], |r| {
            r.get(0)
        })?;
    let mut insert = c.prepare_cached(
        "INSERT INTO messages
             (id, account, agent_id, conversation_id, seq, role, content, tool_calls, credits,
              created_at, read_at, truncated, parts)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, NULL, ?11, ?12)",
    )?;
    for (message, role) in messages {
        let Some(m) = message else { continue };
        seq += 1;
        insert.execute(params![
            m.id,
            x.account,
            x.agent_id,
            x.conversation_id,
            seq,
            role,
            m.content,
            m.tool_calls,
            m.credits,
            m.created_at,
            i64::from(m.truncated),
            m.parts
        ])?;
    }
    Ok(())
}

// ---- reads --------------------------------------------------------------------------------

pub(crate) fn get_conversation(
    c: &Connection,
    account: &str,
    agent_id: &str,
    id: &str,
) -> Result<Option<ConversationRecord>, StoreError> {
    Ok(c.prepare_cached(&format!(
        "SELECT {CONVERSATION_COLUMNS} FROM conversations
         WHERE account = ?1 AND agent_id = ?2 AND id = ?3"
    ))?
    .query_row(params![account, agent_id, id], conversation_row)
    .optional()?)
}

/// Newest first; `archived` `None` lists both kinds.
pub(crate) fn list_conversations(
    c: &Connection,
    account: &str,
    agent_id: &str,
    archived: Option<bool>,
    before: Option<&After>,
    limit: u32,
) -> Result<Vec<ConversationRecord>, StoreError> {
    let (before_at, before_id) = match before {
        Some((at, id)) => (Some(*at), Some(id.as_str())),
        None => (None, None),
    };
    Ok(c.prepare_cached(&format!(
        "SELECT {CONVERSATION_COLUMNS} FROM conversations
         WHERE account = ?1 AND agent_id = ?2
           AND (?3 IS NULL OR archived = ?3)
           AND (?4 IS NULL OR (created_at, id) < (?4, ?5))
         ORDER BY created_at DESC, id DESC LIMIT ?6"
    ))?
    .query_map(
        params![
            account,
            agent_id,
            archived.map(i64::from),
            before_at,
            before_id,
            limit
        ],
        conversation_row,
    )?
    .collect::<Result<Vec<_>, _>>()?)
}

/// The newest `limit` messages of a conversation before `before_seq`, newest first.
pub(crate) fn history(
    c: &Connection,
    account: &str,
    agent_id: &str,
    conversation_id: &str,
    before_seq: Option<i64>,
    limit: u32,
) -> Result<Vec<MessageRecord>, StoreError> {
    Ok(c.prepare_cached(&format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages
         WHERE account = ?1 AND agent_id = ?2 AND conversation_id = ?3
           AND (?4 IS NULL OR seq < ?4)
         ORDER BY seq DESC LIMIT ?5"
    ))?
    .query_map(
        params![account, agent_id, conversation_id, before_seq, limit],
        message_row,
    )?
    .collect::<Result<Vec<_>, _>>()?)
}

/// Unread assistant messages of an account with an agent, oldest first.
pub(crate) fn inbox(
    c: &Connection,
    account: &str,
    agent_id: &str,
    after: Option<&After>,
    limit: u32,
) -> Result<Vec<MessageRecord>, StoreError> {
    let (after_at, after_id) = match after {
        Some((at, id)) => (Some(*at), Some(id.as_str())),
        None => (None, None),
    };
    Ok(c.prepare_cached(&format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages
         WHERE account = ?1 AND agent_id = ?2 AND role = 'assistant' AND read_at IS NULL
           AND (?3 IS NULL OR (created_at, id) > (?3, ?4))
         ORDER BY created_at, id LIMIT ?5"
    ))?
    .query_map(
        params![account, agent_id, after_at, after_id, limit],
        message_row,
    )?
    .collect::<Result<Vec<_>, _>>()?)
}
