//! Conversations and transcripts on PostgreSQL: the statements of `sqlite/transcripts.rs` with `$n`
//! placeholders, each write one transaction on a pooled connection.
//!
//! Replicas may record exchanges of one conversation at once. The upsert of the conversation
//! row comes first and locks that row until commit, so the `MAX(seq)` read after it sees every
//! exchange committed before, and message numbers never collide.

use deadpool_postgres::Object;
use tokio_postgres::types::ToSql;

use super::super::rows::{self, CONVERSATION_COLUMNS, MESSAGE_COLUMNS};
use super::super::transcripts::{
    After, ConversationOutcome, ConversationRecord, ConversationWrite, Exchange, MessageRecord,
};
use super::super::StoreError;
use super::{col, pg_err};

/// One [`ConversationWrite`], in one transaction.
pub(crate) async fn apply(
    mut c: Object,
    w: &ConversationWrite,
) -> Result<ConversationOutcome, StoreError> {
    let tx = c.transaction().await.map_err(pg_err)?;
    let outcome = match w {
        ConversationWrite::Record(x) => {
            record(&tx, x).await?;
            ConversationOutcome::Recorded
        }
        ConversationWrite::Create {
            account,
            agent_id,
            id,
            front,
            title,
            now,
        } => {
            let row = tx
                .query_opt(
                    &format!(
                        "INSERT INTO conversations
                             (account, agent_id, id, front, backend_id, title, archived,
                              created_at, updated_at)
                         VALUES ($1, $2, $3, $4, NULL, $5, FALSE, $6, $6)
                         ON CONFLICT (account, agent_id, id) DO NOTHING
                         RETURNING {CONVERSATION_COLUMNS}"
                    ),
                    &[account, agent_id, id, front, title, now],
                )
                .await
                .map_err(pg_err)?;
            match row {
                Some(r) => ConversationOutcome::Conversation(Some(rows::conversation(&r)?)),
                None => return Err(StoreError::Duplicate("conversation id")),
            }
        }
        ConversationWrite::Update {
            account,
            agent_id,
            id,
            title,
            archived,
            now,
        } => {
            let row = tx
                .query_opt(
                    &format!(
                        "UPDATE conversations
                         SET title = COALESCE($1, title), archived = COALESCE($2, archived),
                             updated_at = $3
                         WHERE account = $4 AND agent_id = $5 AND id = $6
                         RETURNING {CONVERSATION_COLUMNS}"
                    ),
                    &[title, archived, now, account, agent_id, id],
                )
                .await
                .map_err(pg_err)?;
            ConversationOutcome::Conversation(row.as_ref().map(rows::conversation).transpose()?)
        }
        ConversationWrite::Delete {
            account,
            agent_id,
            id,
        } => {
            tx.execute(
                "DELETE FROM messages WHERE account = $1 AND agent_id = $2 AND conversation_id = $3",
                &[account, agent_id, id],
            )
            .await
            .map_err(pg_err)?;
            let n = tx
                .execute(
                    "DELETE FROM conversations WHERE account = $1 AND agent_id = $2 AND id = $3",
                    &[account, agent_id, id],
                )
                .await
                .map_err(pg_err)?;
            ConversationOutcome::Deleted(n == 1)
        }
        ConversationWrite::MarkRead {
            account,
            agent_id,
            message_ids,
            now,
        } => {
            let n = match message_ids {
                None => {
                    tx.execute(
                        "UPDATE messages SET read_at = $1
                         WHERE account = $2 AND agent_id = $3 AND role = 'assistant'
                           AND read_at IS NULL",
                        &[now, account, agent_id],
                    )
                    .await
                }
                Some(ids) => {
                    tx.execute(
                        "UPDATE messages SET read_at = $1
                         WHERE account = $2 AND agent_id = $3 AND role = 'assistant'
                           AND read_at IS NULL AND id = ANY($4)",
                        &[now, account, agent_id, ids],
                    )
                    .await
                }
            }
            .map_err(pg_err)?;
            ConversationOutcome::Marked(n)
        }
    };
    tx.commit().await.map_err(pg_err)?;
    Ok(outcome)
}

/// An exchange's conversation row: opened, or its backend id, title and time updated.
pub(crate) const CONVERSATION_SQL: &str = "INSERT INTO conversations
         (account, agent_id, id, front, backend_id, title, archived, created_at, updated_at,
          user_id)
     VALUES ($1, $2, $3, $4, $5, $6, FALSE, $7, $7, $8)
     ON CONFLICT (account, agent_id, id) DO UPDATE SET
         backend_id = COALESCE(EXCLUDED.backend_id, conversations.backend_id),
         title = COALESCE(conversations.title, EXCLUDED.title),
         updated_at = EXCLUDED.updated_at";

/// [`CONVERSATION_SQL`]'s parameters.
pub(crate) fn conversation_params(x: &Exchange) -> [&(dyn ToSql + Sync); 8] {
    [
        &x.account,
        &x.agent_id,
        &x.conversation_id,
        &x.front,
        &x.backend_id,
        &x.title,
        &x.now,
        &x.user_id,
    ]
}

async fn record(tx: &tokio_postgres::Transaction<'_>, x: &Exchange) -> Result<(), StoreError> {
    tx.execute(CONVERSATION_SQL, &conversation_params(x))
        .await
        .map_err(pg_err)?;
    let messages = [(&x.user, "user"), (&x.assistant, "assistant")];
    if messages.iter().all(|(m, _)| m.is_none()) {
        return Ok(());
    }
    let row = tx
        .query_one(
            "SELECT COALESCE(MAX(seq), 0)::BIGINT FROM messages
             WHERE account = $1 AND agent_id = $2 AND conversation_id = $3",
            &[&x.account, &x.agent_id, &x.conversation_id],
        )
        .await
        .map_err(pg_err)?;
    let mut seq: i64 = col(&row, 0)?;
    let insert = tx
        .prepare(
            "INSERT INTO messages
                 (id, account, agent_id, conversation_id, seq, role, content, tool_calls, credits,
                  created_at, read_at, truncated, parts)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, NULL, $11, $12)",
        )
        .await
        .map_err(pg_err)?;
    for (message, role) in messages {
        let Some(m) = message else { continue };
        seq += 1;
        tx.execute(
            &insert,
            &[
                &m.id,
                &x.account,
                &x.agent_id,
                &x.conversation_id,
                &seq,
                &role,
                &m.content,
                &m.tool_calls,
                &m.credits,
                &m.created_at,
                &m.truncated,
                &m.parts,
            ],
        )
        .await
        .map_err(pg_err)?;
    }
    Ok(())
}

pub(crate) async fn get_conversation(
    c: &Object,
    account: &str,
    agent_id: &str,
    id: &str,
) -> Result<Option<ConversationRecord>, StoreError> {
    let st = c
        .prepare_cached(&format!(
            "SELECT {CONVERSATION_COLUMNS} FROM conversations
             WHERE account = $1 AND agent_id = $2 AND id = $3"
        ))
        .await
        .map_err(pg_err)?;
    c.query_opt(&st, &[&account, &agent_id, &id])
        .await
        .map_err(pg_err)?
        .as_ref()
        .map(rows::conversation)
        .transpose()
}

/// Newest first; `archived` `None` lists both kinds.
pub(crate) async fn list_conversations(
    c: &Object,
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
    let st = c
        .prepare_cached(&format!(
            "SELECT {CONVERSATION_COLUMNS} FROM conversations
             WHERE account = $1 AND agent_id = $2
               AND ($3::BOOLEAN IS NULL OR archived = $3)
               AND ($4::BIGINT IS NULL OR (created_at, id) < ($4, $5::TEXT))
             ORDER BY created_at DESC, id DESC LIMIT $6"
        ))
        .await
        .map_err(pg_err)?;
    c.query(
        &st,
        &[
            &account,
            &agent_id,
            &archived,
            &before_at,
            &before_id,
            &i64::from(limit),
        ],
    )
    .await
    .map_err(pg_err)?
    .iter()
    .map(rows::conversation)
    .collect()
}

/// The newest `limit` messages of a conversation before `before_seq`, newest first.
pub(crate) async fn history(
    c: &Object,
    account: &str,
    agent_id: &str,
    conversation_id: &str,
    before_seq: Option<i64>,
    limit: u32,
) -> Result<Vec<MessageRecord>, StoreError> {
    let st = c
        .prepare_cached(&format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages
             WHERE account = $1 AND agent_id = $2 AND conversation_id = $3
               AND ($4::BIGINT IS NULL OR seq < $4)
             ORDER BY seq DESC LIMIT $5"
        ))
        .await
        .map_err(pg_err)?;
    c.query(
        &st,
        &[
            &account,
            &agent_id,
            &conversation_id,
            &before_seq,
            &i64::from(limit),
        ],
    )
    .await
    .map_err(pg_err)?
    .iter()
    .map(rows::message)
    .collect()
}

/// Unread assistant messages of an account with an agent, oldest first.
pub(crate) async fn inbox(
    c: &Object,
    account: &str,
    agent_id: &str,
    after: Option<&After>,
    limit: u32,
) -> Result<Vec<MessageRecord>, StoreError> {
    let (after_at, after_id) = match after {
        Some((at, id)) => (Some(*at), Some(id.as_str())),
        None => (None, None),
    };
    let st = c
        .prepare_cached(&format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages
             WHERE account = $1 AND agent_id = $2 AND role = 'assistant' AND read_at IS NULL
               AND ($3::BIGINT IS NULL OR (created_at, id) > ($3, $4::TEXT))
             ORDER BY created_at, id LIMIT $5"
        ))
        .await
        .map_err(pg_err)?;
    c.query(
        &st,
        &[&account, &agent_id, &after_at, &after_id, &i64::from(limit)],
    )
    .await
    .map_err(pg_err)?
    .iter()
    .map(rows::message)
    .collect()
}
