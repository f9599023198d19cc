//! Row mapping shared by both backends: the column lists the `SELECT`s name and the one
//! function per record that reads them, over [`Columns`], which each backend implements for
//! its row type (`sqlite/mod.rs`, `postgres/mod.rs`).

use super::transcripts::{ConversationRecord, MessageRecord};
use super::{KeyRecord, ReservationRecord, StoreError};

/// Reads one column of a result row by position, whatever the backend. Integers are 64-bit;
/// a boolean is SQLite's `INTEGER` (non-zero) or PostgreSQL's `BOOLEAN`.
pub(crate) trait Columns {
    fn text(&self, i: usize) -> Result<String, StoreError>;
    fn opt_text(&self, i: usize) -> Result<Option<String>, StoreError>;
    fn int(&self, i: usize) -> Result<i64, StoreError>;
    fn opt_int(&self, i: usize) -> Result<Option<i64>, StoreError>;
    fn opt_real(&self, i: usize) -> Result<Option<f64>, StoreError>;
    fn boolean(&self, i: usize) -> Result<bool, StoreError>;
}

fn opt_u32(v: Option<i64>, what: &str) -> Result<Option<u32>, StoreError> {
    v.map(|n| u32::try_from(n).map_err(|_| StoreError::Corrupt(format!("{what} {n}"))))
        .transpose()
}

/// A key's rate as read back: the exact one, or for a key written before schema version 3
/// the whole number it had.
pub(crate) fn stored_rate(exact: Option<f64>, whole: Option<u32>) -> Option<f64> {
    exact.or(whole.map(f64::from))
}

pub(crate) const KEY_COLUMNS: &str = "public_id, hash, account, kind, scopes, agents, created_at, \
                                      expires_at, revoked_at, rate_per_second, rate_burst, \
                                      max_streams, rate_per_second_exact";

pub(crate) fn key(r: &impl Columns) -> Result<KeyRecord, StoreError> {
    Ok(KeyRecord {
        public_id: r.text(0)?,
        hash: r.text(1)?,
        account: r.text(2)?,
        kind: r.text(3)?,
        scopes: r.text(4)?,
        agents: r.opt_text(5)?,
        created_at: r.int(6)?,
        expires_at: r.opt_int(7)?,
        revoked_at: r.opt_int(8)?,
        rate_per_second: stored_rate(r.opt_real(12)?, opt_u32(r.opt_int(9)?, "rate_per_second")?),
        rate_burst: opt_u32(r.opt_int(10)?, "rate_burst")?,
        max_streams: opt_u32(r.opt_int(11)?, "max_streams")?,
    })
}

pub(crate) const RESERVATION_COLUMNS: &str = "id, account, key_id, agent_id, reserved, fallback, \
                                              charged, state, created_at, expires_at, settled_at";

pub(crate) fn reservation(r: &impl Columns) -> Result<ReservationRecord, StoreError> {
    Ok(ReservationRecord {
        id: r.text(0)?,
        account: r.text(1)?,
        key_id: r.text(2)?,
        agent_id: r.text(3)?,
        reserved: r.int(4)?,
        fallback: r.int(5)?,
        charged: r.opt_int(6)?,
        state: r.text(7)?,
        created_at: r.int(8)?,
        expires_at: r.int(9)?,
        settled_at: r.opt_int(10)?,
    })
}

pub(crate) const CONVERSATION_COLUMNS: &str =
    "account, agent_id, id, front, backend_id, title, archived, created_at, updated_at, user_id";

pub(crate) fn conversation(r: &impl Columns) -> Result<ConversationRecord, StoreError> {
    Ok(ConversationRecord {
        account: r.text(0)?,
        agent_id: r.text(1)?,
        id: r.text(2)?,
        front: r.text(3)?,
        backend_id: r.opt_text(4)?,
        title: r.opt_text(5)?,
        archived: r.boolean(6)?,
        created_at: r.int(7)?,
        updated_at: r.int(8)?,
        user_id: r.opt_text(9)?,
    })
}

pub(crate) const MESSAGE_COLUMNS: &str = "id, conversation_id, seq, role, content, tool_calls, \
                                          credits, created_at, read_at, truncated, parts";

pub(crate) fn message(r: &impl Columns) -> Result<MessageRecord, StoreError> {
    Ok(MessageRecord {
        id: r.text(0)?,
        conversation_id: r.text(1)?,
        seq: r.int(2)?,
        role: r.text(3)?,
        content: r.text(4)?,
        tool_calls: r.opt_text(5)?,
        credits: r.opt_int(6)?,
        created_at: r.int(7)?,
        read_at: r.opt_int(8)?,
        truncated: r.boolean(9)?,
        parts: r.opt_text(10)?,
    })
}
