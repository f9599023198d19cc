//! Conversations and transcripts on SQLite: the statements behind `transcripts.rs`'s writes
//! (run by the writer, inside its batch's transaction) and reads.

use rusqlite::{params, Connection, ErrorCode};

use super::super::rows;
use super::super::transcripts::{
    After, ConversationOutcome, ConversationRecord, ConversationWrite, Exchange, MessageRecord,
};
use super::super::StoreError;
use super::{query_opt, query_vec};

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
            let mut stmt = c.prepare_cached(&format!(
                "UPDATE conversations
                 SET title = COALESCE(?1, title), archived = COALESCE(?2, archived),
                     updated_at = ?3
                 WHERE account = ?4 AND agent_id = ?5 AND id = ?6
                 RETURNING {}",
                rows::CONVERSATION_COLUMNS
            ))?;
            let row = query_opt(
                &mut stmt,
                params![title, archived.map(i64::from), now, account, agent_id, id],
                |r| rows::conversation(r),
            )?;
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
    let mut stmt = c.prepare_cached(&format!(
        "SELECT {} FROM conversations WHERE account = ?1 AND agent_id = ?2 AND id = ?3",
        rows::CONVERSATION_COLUMNS
    ))?;
    query_opt(&mut stmt, params![account, agent_id, id], |r| {
        rows::conversation(r)
    })
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
    let mut stmt = c.prepare_cached(&format!(
        "SELECT {} FROM conversations
         WHERE account = ?1 AND agent_id = ?2
           AND (?3 IS NULL OR archived = ?3)
           AND (?4 IS NULL OR (created_at, id) < (?4, ?5))
         ORDER BY created_at DESC, id DESC LIMIT ?6",
        rows::CONVERSATION_COLUMNS
    ))?;
    query_vec(
        &mut stmt,
        params![
            account,
            agent_id,
            archived.map(i64::from),
            before_at,
            before_id,
            limit
        ],
        |r| rows::conversation(r),
    )
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
    let mut stmt = c.prepare_cached(&format!(
        "SELECT {} FROM messages
         WHERE account = ?1 AND agent_id = ?2 AND conversation_id = ?3
           AND (?4 IS NULL OR seq < ?4)
         ORDER BY seq DESC LIMIT ?5",
        rows::MESSAGE_COLUMNS
    ))?;
    query_vec(
        &mut stmt,
        params![account, agent_id, conversation_id, before_seq, limit],
        |r| rows::message(r),
    )
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
    let mut stmt = c.prepare_cached(&format!(
        "SELECT {} FROM messages
         WHERE account = ?1 AND agent_id = ?2 AND role = 'assistant' AND read_at IS NULL
           AND (?3 IS NULL OR (created_at, id) > (?3, ?4))
         ORDER BY created_at, id LIMIT ?5",
        rows::MESSAGE_COLUMNS
    ))?;
    query_vec(
        &mut stmt,
        params![account, agent_id, after_at, after_id, limit],
        |r| rows::message(r),
    )
}
