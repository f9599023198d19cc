//! Credits, keys and idempotency on SQLite: the writer's statements (inside its transaction)
//! and the reads.

use rusqlite::{params, Connection, ErrorCode, OptionalExtension};

use super::super::rows;
use super::super::{
    AccountSums, FilterValue, IdemClaim, IdemCompletion, IdemOutcome, KeyRecord, NewGrant,
    NewReservation, ReservationRecord, ReserveOutcome, RevokeOutcome, SettleOutcome, SettleRequest,
    StoreError, StoredResponse, UsageBucket, UsageFilter, UsageRow, BALANCE_LIMIT,
    MAX_BALANCE_MILLI,
};
use super::{query_opt, query_vec};

fn ensure_account(conn: &Connection, account: &str, now: i64) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO accounts (id, balance, created_at) VALUES (?1, 0, ?2)
         ON CONFLICT (id) DO NOTHING",
    )?
    .execute(params![account, now])?;
    Ok(())
}

fn account_balance(conn: &Connection, account: &str) -> Result<Option<i64>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT balance FROM accounts WHERE id = ?1")?
        .query_row(params![account], |r| r.get(0))
        .optional()?)
}

pub(crate) fn reserve(conn: &Connection, r: &NewReservation) -> Result<ReserveOutcome, StoreError> {
    let after: Option<i64> = conn
        .prepare_cached(
            "UPDATE accounts SET balance = balance - ?1
             WHERE id = ?2 AND balance >= ?1 RETURNING balance",
        )?
        .query_row(params![r.reserved, r.account], |row| row.get(0))
        .optional()?;
    let Some(balance_after) = after else {
        let balance = account_balance(conn, &r.account)?.unwrap_or(0);
        return Ok(ReserveOutcome::Insufficient { balance });
    };
    let inserted = conn
        .prepare_cached(
            "INSERT INTO reservations
                 (id, account, key_id, agent_id, reserved, fallback, charged, state,
                  created_at, expires_at, settled_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, NULL, 'pending', ?7, ?8, NULL)",
        )?
        .execute(params![
            r.id,
            r.account,
            r.key_id,
            r.agent_id,
            r.reserved,
            r.fallback,
            r.created_at,
            r.expires_at
        ]);
    match inserted {
        Ok(_) => Ok(ReserveOutcome::Reserved { balance_after }),
        Err(rusqlite::Error::SqliteFailure(f, _)) if f.code == ErrorCode::ConstraintViolation => {
            Err(StoreError::Duplicate("reservation id"))
        }
        Err(e) => Err(e.into()),
    }
}

/// Settles a pending reservation (posted if it charges anything, voided if not) and refunds the
/// rest: one `UPDATE … RETURNING` finds and closes the reservation (nothing happens if it is
/// no longer pending or, for recovery, not expired yet), one more refunds the account.
pub(crate) fn settle(conn: &Connection, s: &SettleRequest) -> Result<SettleOutcome, StoreError> {
    let row: Option<(String, i64, i64)> = conn
        .prepare_cached(
            "UPDATE reservations
             SET charged = MIN(MAX(COALESCE(?1, fallback), 0), reserved),
                 state = CASE WHEN MIN(MAX(COALESCE(?1, fallback), 0), reserved) > 0
                              THEN 'posted' ELSE 'voided' END,
                 settled_at = ?2
             WHERE id = ?3 AND state = 'pending' AND (?4 IS NULL OR expires_at <= ?4)
             RETURNING account, reserved, charged",
        )?
        .query_row(params![s.charge, s.now, s.id, s.expired_before], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .optional()?;
    let Some((account, reserved, charged)) = row else {
        return Ok(SettleOutcome::NotPending);
    };
    let balance_after: i64 = conn
        .prepare_cached(
            "UPDATE accounts SET balance = balance + ?1 WHERE id = ?2 RETURNING balance",
        )?
        .query_row(params![reserved - charged, account], |r| r.get(0))?;
    Ok(SettleOutcome::Settled {
        account,
        reserved,
        charged,
        balance_after,
    })
}

pub(crate) fn grant(conn: &Connection, g: &NewGrant) -> Result<i64, StoreError> {
    ensure_account(conn, &g.account, g.now)?;
    // Checked before the update: past i64, SQLite would turn the balance into a REAL.
    let before = account_balance(conn, &g.account)?.unwrap_or(0);
    if before.saturating_add(g.amount) > MAX_BALANCE_MILLI {
        return Err(StoreError::Limit(BALANCE_LIMIT));
    }
    let balance: i64 = conn
        .prepare_cached(
            "UPDATE accounts SET balance = balance + ?1 WHERE id = ?2 RETURNING balance",
        )?
        .query_row(params![g.amount, g.account], |r| r.get(0))?;
    conn.prepare_cached(
        "INSERT INTO grants (id, account, amount, memo, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        uuid::Uuid::new_v4().to_string(),
        g.account,
        g.amount,
        g.memo,
        g.now
    ])?;
    Ok(balance)
}

pub(crate) fn insert_key(conn: &Connection, k: &KeyRecord) -> Result<(), StoreError> {
    ensure_account(conn, &k.account, k.created_at)?;
    let r = conn
        .prepare_cached(
            "INSERT INTO api_keys
                 (public_id, hash, account, kind, scopes, agents, created_at, expires_at,
                  revoked_at, rate_per_second, rate_burst, max_streams, rate_per_second_exact)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
        )?
        .execute(params![
            k.public_id,
            k.hash,
            k.account,
            k.kind,
            k.scopes,
            k.agents,
            k.created_at,
            k.expires_at,
            k.revoked_at,
            k.whole_rate(),
            k.rate_burst,
            k.max_streams,
            k.rate_per_second
        ]);
    match r {
        Ok(_) => Ok(()),
        Err(rusqlite::Error::SqliteFailure(f, _)) if f.code == ErrorCode::ConstraintViolation => {
            Err(StoreError::Duplicate("key id"))
        }
        Err(e) => Err(e.into()),
    }
}

pub(crate) fn revoke_key(
    conn: &Connection,
    public_id: &str,
    now: i64,
) -> Result<RevokeOutcome, StoreError> {
    let revoked: Option<Option<i64>> = conn
        .prepare_cached("SELECT revoked_at FROM api_keys WHERE public_id = ?1")?
        .query_row(params![public_id], |r| r.get(0))
        .optional()?;
    match revoked {
        None => Ok(RevokeOutcome::NotFound),
        Some(Some(_)) => Ok(RevokeOutcome::AlreadyRevoked),
        Some(None) => {
            conn.prepare_cached("UPDATE api_keys SET revoked_at = ?1 WHERE public_id = ?2")?
                .execute(params![now, public_id])?;
            conn.prepare_cached(
                "UPDATE counters SET value = value + 1 WHERE name = 'revocations'",
            )?
            .execute([])?;
            Ok(RevokeOutcome::Revoked)
        }
    }
}

pub(crate) fn idem_begin(conn: &Connection, c: &IdemClaim) -> Result<IdemOutcome, StoreError> {
    type Existing = (
        String,
        String,
        Option<i64>,
        Option<String>,
        Option<Vec<u8>>,
        i64,
    );
    let existing: Option<Existing> = conn
        .prepare_cached(
            "SELECT body_hash, state, status, content_type, response, locked_until
             FROM idempotency WHERE account = ?1 AND idem_key = ?2",
        )?
        .query_row(params![c.account, c.idem_key], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        })
        .optional()?;
    let Some((hash, state, status, content_type, response, locked_until)) = existing else {
        conn.prepare_cached(
            "INSERT INTO idempotency
                 (account, idem_key, body_hash, state, owner, status, content_type, response,
                  created_at, locked_until)
             VALUES (?1, ?2, ?3, 'in_flight', ?4, NULL, NULL, NULL, ?5, ?6)",
        )?
        .execute(params![
            c.account,
            c.idem_key,
            c.body_hash,
            c.owner,
            c.now,
            c.locked_until
        ])?;
        return Ok(IdemOutcome::Claimed);
    };
    if hash != c.body_hash {
        return Ok(IdemOutcome::Conflict);
    }
    if state == "complete" {
        let status = status
            .and_then(|s| u16::try_from(s).ok())
            .ok_or_else(|| StoreError::Corrupt("idempotency status".into()))?;
        return Ok(IdemOutcome::Replay(StoredResponse {
            status,
            content_type: content_type.unwrap_or_default(),
            body: response.unwrap_or_default(),
        }));
    }
    if locked_until > c.now {
        return Ok(IdemOutcome::InFlight);
    }
    // The previous claim was abandoned (its process died): take it over.
    conn.prepare_cached(
        "UPDATE idempotency SET owner = ?1, created_at = ?2, locked_until = ?3
         WHERE account = ?4 AND idem_key = ?5 AND state = 'in_flight'",
    )?
    .execute(params![
        c.owner,
        c.now,
        c.locked_until,
        c.account,
        c.idem_key
    ])?;
    Ok(IdemOutcome::Claimed)
}

pub(crate) fn idem_complete(conn: &Connection, c: &IdemCompletion) -> Result<bool, StoreError> {
    let n = conn
        .prepare_cached(
            "UPDATE idempotency
             SET state = 'complete', status = ?1, content_type = ?2, response = ?3
             WHERE account = ?4 AND idem_key = ?5 AND owner = ?6 AND state = 'in_flight'",
        )?
        .execute(params![
            i64::from(c.response.status),
            c.response.content_type,
            c.response.body,
            c.account,
            c.idem_key,
            c.owner
        ])?;
    Ok(n == 1)
}

// ---- reads ----------------------------------------------------------------------------------

pub(crate) fn get_key(c: &Connection, public_id: &str) -> Result<Option<KeyRecord>, StoreError> {
    let mut stmt = c.prepare_cached(&format!(
        "SELECT {} FROM api_keys WHERE public_id = ?1",
        rows::KEY_COLUMNS
    ))?;
    query_opt(&mut stmt, params![public_id], |r| rows::key(r))
}

pub(crate) fn list_keys(
    c: &Connection,
    account: Option<&str>,
) -> Result<Vec<KeyRecord>, StoreError> {
    let columns = rows::KEY_COLUMNS;
    match account {
        Some(a) => {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {columns} FROM api_keys WHERE account = ?1 ORDER BY created_at, public_id"
            ))?;
            query_vec(&mut stmt, params![a], |r| rows::key(r))
        }
        None => {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {columns} FROM api_keys ORDER BY account, created_at, public_id"
            ))?;
            query_vec(&mut stmt, [], |r| rows::key(r))
        }
    }
}

pub(crate) fn revocation_counter(c: &Connection) -> Result<u64, StoreError> {
    let v: i64 = c
        .prepare_cached("SELECT value FROM counters WHERE name = 'revocations'")?
        .query_row([], |r| r.get(0))?;
    Ok(u64::try_from(v).unwrap_or(0))
}

pub(crate) fn balance(c: &Connection, account: &str) -> Result<Option<i64>, StoreError> {
    account_balance(c, account)
}

pub(crate) fn expired_pending(
    c: &Connection,
    now: i64,
    limit: u32,
) -> Result<Vec<String>, StoreError> {
    Ok(c.prepare_cached(
        "SELECT id FROM reservations WHERE state = 'pending' AND expires_at <= ?1
             ORDER BY expires_at LIMIT ?2",
    )?
    .query_map(params![now, limit], |r| r.get(0))?
    .collect::<Result<Vec<String>, _>>()?)
}

pub(crate) fn reservation(
    c: &Connection,
    id: &str,
) -> Result<Option<ReservationRecord>, StoreError> {
    let mut stmt = c.prepare_cached(&format!(
        "SELECT {} FROM reservations WHERE id = ?1",
        rows::RESERVATION_COLUMNS
    ))?;
    query_opt(&mut stmt, params![id], |r| rows::reservation(r))
}

pub(crate) fn pending_count(c: &Connection) -> Result<i64, StoreError> {
    Ok(c.query_row(
        "SELECT COUNT(*) FROM reservations WHERE state = 'pending'",
        [],
        |r| r.get(0),
    )?)
}

/// Appends `f`'s conditions to `sql`, their placeholders numbered after the `args` bound so far.
fn filter_usage(sql: &mut String, args: &mut Vec<rusqlite::types::Value>, f: &UsageFilter) {
    for (clause, value) in f.conditions() {
        args.push(match value {
            FilterValue::Text(t) => t.to_owned().into(),
            FilterValue::Time(t) => t.into(),
        });
        sql.push_str(&format!(" AND {clause} ?{}", args.len()));
    }
}

pub(crate) fn usage(c: &Connection, f: &UsageFilter) -> Result<Vec<UsageRow>, StoreError> {
    let mut sql = String::from(
        "SELECT account, key_id, agent_id, COUNT(*),
                COALESCE(SUM(CASE WHEN state = 'posted' THEN charged ELSE 0 END), 0),
                COALESCE(SUM(CASE WHEN state = 'pending' THEN 1 ELSE 0 END), 0)
         FROM reservations WHERE 1 = 1",
    );
    let mut args: Vec<rusqlite::types::Value> = Vec::new();
    filter_usage(&mut sql, &mut args, f);
    sql.push_str(" GROUP BY account, key_id, agent_id ORDER BY account, key_id, agent_id");
    let mut stmt = c.prepare(&sql)?;
    let rows = stmt
        .query_map(rusqlite::params_from_iter(args.iter()), |r| {
            Ok(UsageRow {
                account: r.get(0)?,
                key_id: r.get(1)?,
                agent_id: r.get(2)?,
                requests: r.get(3)?,
                charged: r.get(4)?,
                pending: r.get(5)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

pub(crate) fn usage_buckets(
    c: &Connection,
    f: &UsageFilter,
    bucket_ms: i64,
) -> Result<Vec<UsageBucket>, StoreError> {
    let mut sql = String::from(
        "SELECT (created_at / ?1) * ?1 AS bucket, agent_id, COUNT(*),
                COALESCE(SUM(CASE WHEN state = 'posted' THEN charged ELSE 0 END), 0)
         FROM reservations WHERE 1 = 1",
    );
    let mut args: Vec<rusqlite::types::Value> = vec![bucket_ms.into()];
    filter_usage(&mut sql, &mut args, f);
    sql.push_str(" GROUP BY bucket, agent_id ORDER BY bucket, agent_id");
    let mut stmt = c.prepare(&sql)?;
    let rows = stmt
        .query_map(rusqlite::params_from_iter(args.iter()), |r| {
            Ok(UsageBucket {
                start: r.get(0)?,
                agent_id: r.get(1)?,
                requests: r.get(2)?,
                charged: r.get(3)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

pub(crate) fn account_sums(c: &Connection) -> Result<Vec<AccountSums>, StoreError> {
    // One read transaction, so that the sums are taken from one snapshot.
    c.execute_batch("BEGIN")?;
    let rows = c
        .prepare_cached(
            "SELECT a.id, a.balance,
                 COALESCE((SELECT SUM(g.amount) FROM grants g WHERE g.account = a.id), 0),
                 COALESCE((SELECT SUM(r.charged) FROM reservations r
                           WHERE r.account = a.id AND r.state = 'posted'), 0),
                 COALESCE((SELECT SUM(r.reserved) FROM reservations r
                           WHERE r.account = a.id AND r.state = 'pending'), 0)
             FROM accounts a ORDER BY a.id",
        )?
        .query_map([], |r| {
            Ok(AccountSums {
                account: r.get(0)?,
                balance: r.get(1)?,
                granted: r.get(2)?,
                posted: r.get(3)?,
                pending: r.get(4)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>();
    c.execute_batch("COMMIT")?;
    Ok(rows?)
}
