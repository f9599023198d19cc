//! Credits, keys and idempotency on PostgreSQL: each write one conditional statement (or one
//! short transaction), and the reads.

use deadpool_postgres::Object;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use super::super::rows;
use super::super::{
    AccountSums, FilterValue, IdemClaim, IdemCompletion, IdemOutcome, KeyRecord, NewGrant,
    NewReservation, ReservationRecord, ReserveOutcome, RevokeOutcome, SettleOutcome, SettleRequest,
    StoreError, StoredResponse, UsageBucket, UsageFilter, UsageRow, BALANCE_LIMIT,
    MAX_BALANCE_MILLI,
};
use super::listen::{notify_payload, CHANNEL};
use super::{col, pg_err};

// ---- writes ---------------------------------------------------------------------------------

/// The reservation: one statement that locks the account row, takes the amount only if the
/// balance holds it, and inserts the pending row only if it did. `cur` locks the row, so under
/// concurrency it sees the newest committed balance (not the statement's snapshot): the
/// balance a refusal reports is the one that refused it. The lock is `FOR NO KEY UPDATE`,
/// what the `UPDATE` takes anyway: it does not block the key-share locks that inserting a
/// conversation or a message takes on its account (their foreign key), so an exchange being
/// recorded never waits for a reservation's account lock, and cannot deadlock with it.
pub(crate) const RESERVE_SQL: &str = "
WITH cur AS (
    SELECT id, balance FROM accounts WHERE id = $2::TEXT FOR NO KEY UPDATE
), debit AS (
    UPDATE accounts SET balance = accounts.balance - $5::BIGINT
    FROM cur
    WHERE accounts.id = cur.id AND cur.balance >= $5::BIGINT
    RETURNING accounts.balance
), ins AS (
    INSERT INTO reservations
        (id, account, key_id, agent_id, reserved, fallback, charged, state,
         created_at, expires_at, settled_at)
    SELECT $1::TEXT, $2::TEXT, $3::TEXT, $4::TEXT, $5::BIGINT, $6::BIGINT, NULL, 'pending',
           $7::BIGINT, $8::BIGINT, NULL
    FROM debit
    RETURNING id
)
SELECT (SELECT balance FROM debit), (SELECT balance FROM cur), (SELECT count(*) FROM ins)";

/// [`RESERVE_SQL`]'s parameters.
pub(crate) fn reserve_params(r: &NewReservation) -> [&(dyn ToSql + Sync); 8] {
    [
        &r.id,
        &r.account,
        &r.key_id,
        &r.agent_id,
        &r.reserved,
        &r.fallback,
        &r.created_at,
        &r.expires_at,
    ]
}

pub(crate) async fn reserve(c: &Object, r: &NewReservation) -> Result<ReserveOutcome, StoreError> {
    let st = c.prepare_cached(RESERVE_SQL).await.map_err(pg_err)?;
    let row = c
        .query_one(&st, &reserve_params(r))
        .await
        .map_err(|e| match pg_err(e) {
            StoreError::Duplicate(_) => StoreError::Duplicate("reservation id"),
            other => other,
        })?;
    reserve_outcome(&row)
}

/// What [`RESERVE_SQL`]'s row says.
pub(crate) fn reserve_outcome(row: &Row) -> Result<ReserveOutcome, StoreError> {
    let after: Option<i64> = col(row, 0)?;
    match after {
        Some(balance_after) => Ok(ReserveOutcome::Reserved { balance_after }),
        None => Ok(ReserveOutcome::Insufficient {
            balance: col::<Option<i64>>(row, 1)?.unwrap_or(0),
        }),
    }
}

/// Settles a pending reservation and refunds the rest, in one statement; nothing happens if
/// it is no longer pending (or, for recovery, not yet expired).
pub(crate) const SETTLE_SQL: &str = "
WITH r AS (
    UPDATE reservations
    SET charged = LEAST(GREATEST(COALESCE($2::BIGINT, fallback), 0), reserved),
        state = CASE WHEN LEAST(GREATEST(COALESCE($2::BIGINT, fallback), 0), reserved) > 0
                     THEN 'posted' ELSE 'voided' END,
        settled_at = $3::BIGINT
    WHERE id = $1::TEXT AND state = 'pending'
      AND ($4::BIGINT IS NULL OR expires_at <= $4::BIGINT)
    RETURNING account, reserved, charged
), a AS (
    UPDATE accounts SET balance = accounts.balance + (r.reserved - r.charged)
    FROM r WHERE accounts.id = r.account
    RETURNING accounts.balance
)
SELECT r.account, r.reserved, r.charged, a.balance FROM r CROSS JOIN a";

pub(crate) async fn settle(c: &Object, s: &SettleRequest) -> Result<SettleOutcome, StoreError> {
    let st = c.prepare_cached(SETTLE_SQL).await.map_err(pg_err)?;
    let row = c
        .query_opt(&st, &[&s.id, &s.charge, &s.now, &s.expired_before])
        .await
        .map_err(pg_err)?;
    settle_outcome(row.as_ref())
}

/// What [`SETTLE_SQL`]'s row (none: not pending) says.
pub(crate) fn settle_outcome(row: Option<&Row>) -> Result<SettleOutcome, StoreError> {
    let Some(row) = row else {
        return Ok(SettleOutcome::NotPending);
    };
    Ok(SettleOutcome::Settled {
        account: col(row, 0)?,
        reserved: col(row, 1)?,
        charged: col(row, 2)?,
        balance_after: col(row, 3)?,
    })
}

pub(crate) async fn grant(mut c: Object, g: &NewGrant) -> Result<i64, StoreError> {
    let tx = c.transaction().await.map_err(pg_err)?;
    let row = tx
        .query_one(
            "INSERT INTO accounts (id, balance, created_at) VALUES ($1, $2, $3)
             ON CONFLICT (id) DO UPDATE SET balance = accounts.balance + EXCLUDED.balance
             RETURNING balance",
            &[&g.account, &g.amount, &g.now],
        )
        .await
        .map_err(pg_err)?;
    let balance: i64 = col(&row, 0)?;
    if balance > MAX_BALANCE_MILLI {
        // Dropping the transaction rolls the grant back.
        return Err(StoreError::Limit(BALANCE_LIMIT));
    }
    tx.execute(
        "INSERT INTO grants (id, account, amount, memo, created_at) VALUES ($1, $2, $3, $4, $5)",
        &[
            &uuid::Uuid::new_v4().to_string(),
            &g.account,
            &g.amount,
            &g.memo,
            &g.now,
        ],
    )
    .await
    .map_err(pg_err)?;
    tx.execute(
        "SELECT pg_notify($1, $2)",
        &[&CHANNEL, &notify_payload("credits", &g.account)],
    )
    .await
    .map_err(pg_err)?;
    tx.commit().await.map_err(pg_err)?;
    Ok(balance)
}

pub(crate) async fn insert_key(mut c: Object, k: &KeyRecord) -> Result<(), StoreError> {
    let tx = c.transaction().await.map_err(pg_err)?;
    tx.execute(
        "INSERT INTO accounts (id, balance, created_at) VALUES ($1, 0, $2)
         ON CONFLICT (id) DO NOTHING",
        &[&k.account, &k.created_at],
    )
    .await
    .map_err(pg_err)?;
    let limit = |v: Option<u32>| v.map(i64::from);
    tx.execute(
        "INSERT INTO api_keys
             (public_id, hash, account, kind, scopes, agents, created_at, expires_at,
              revoked_at, rate_per_second, rate_burst, max_streams, rate_per_second_exact)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        &[
            &k.public_id,
            &k.hash,
            &k.account,
            &k.kind,
            &k.scopes,
            &k.agents,
            &k.created_at,
            &k.expires_at,
            &k.revoked_at,
            &limit(k.whole_rate()),
            &limit(k.rate_burst),
            &limit(k.max_streams),
            &k.rate_per_second,
        ],
    )
    .await
    .map_err(|e| match pg_err(e) {
        StoreError::Duplicate(_) => StoreError::Duplicate("key id"),
        other => other,
    })?;
    tx.commit().await.map_err(pg_err)
}

pub(crate) async fn revoke_key(
    mut c: Object,
    public_id: &str,
    now: i64,
) -> Result<RevokeOutcome, StoreError> {
    let tx = c.transaction().await.map_err(pg_err)?;
    let row = tx
        .query_opt(
            "SELECT revoked_at FROM api_keys WHERE public_id = $1 FOR UPDATE",
            &[&public_id],
        )
        .await
        .map_err(pg_err)?;
    let Some(row) = row else {
        return Ok(RevokeOutcome::NotFound);
    };
    if col::<Option<i64>>(&row, 0)?.is_some() {
        return Ok(RevokeOutcome::AlreadyRevoked);
    }
    tx.execute(
        "UPDATE api_keys SET revoked_at = $1 WHERE public_id = $2",
        &[&now, &public_id],
    )
    .await
    .map_err(pg_err)?;
    tx.execute(
        "UPDATE counters SET value = value + 1 WHERE name = 'revocations'",
        &[],
    )
    .await
    .map_err(pg_err)?;
    tx.execute(
        "SELECT pg_notify($1, $2)",
        &[&CHANNEL, &notify_payload("revoke", public_id)],
    )
    .await
    .map_err(pg_err)?;
    tx.commit().await.map_err(pg_err)?;
    Ok(RevokeOutcome::Revoked)
}

pub(crate) async fn idem_begin(mut c: Object, cl: &IdemClaim) -> Result<IdemOutcome, StoreError> {
    let tx = c.transaction().await.map_err(pg_err)?;
    let inserted = tx
        .execute(
            "INSERT INTO idempotency
                 (account, idem_key, body_hash, state, owner, status, content_type, response,
                  created_at, locked_until)
             VALUES ($1, $2, $3, 'in_flight', $4, NULL, NULL, NULL, $5, $6)
             ON CONFLICT (account, idem_key) DO NOTHING",
            &[
                &cl.account,
                &cl.idem_key,
                &cl.body_hash,
                &cl.owner,
                &cl.now,
                &cl.locked_until,
            ],
        )
        .await
        .map_err(pg_err)?;
    if inserted == 1 {
        tx.commit().await.map_err(pg_err)?;
        return Ok(IdemOutcome::Claimed);
    }
    let row = tx
        .query_one(
            "SELECT body_hash, state, status, content_type, response, locked_until
             FROM idempotency WHERE account = $1 AND idem_key = $2 FOR UPDATE",
            &[&cl.account, &cl.idem_key],
        )
        .await
        .map_err(pg_err)?;
    let hash: String = col(&row, 0)?;
    let state: String = col(&row, 1)?;
    let outcome = if hash != cl.body_hash {
        IdemOutcome::Conflict
    } else if state == "complete" {
        let status = col::<Option<i64>>(&row, 2)?
            .and_then(|s| u16::try_from(s).ok())
            .ok_or_else(|| StoreError::Corrupt("idempotency status".into()))?;
        IdemOutcome::Replay(StoredResponse {
            status,
            content_type: col::<Option<String>>(&row, 3)?.unwrap_or_default(),
            body: col::<Option<Vec<u8>>>(&row, 4)?.unwrap_or_default(),
        })
    } else if col::<i64>(&row, 5)? > cl.now {
        IdemOutcome::InFlight
    } else {
        // The previous claim was abandoned (its process died): take it over.
        tx.execute(
            "UPDATE idempotency SET owner = $1, created_at = $2, locked_until = $3
             WHERE account = $4 AND idem_key = $5 AND state = 'in_flight'",
            &[
                &cl.owner,
                &cl.now,
                &cl.locked_until,
                &cl.account,
                &cl.idem_key,
            ],
        )
        .await
        .map_err(pg_err)?;
        IdemOutcome::Claimed
    };
    tx.commit().await.map_err(pg_err)?;
    Ok(outcome)
}

pub(crate) async fn idem_complete(c: &Object, cm: &IdemCompletion) -> Result<bool, StoreError> {
    let st = c
        .prepare_cached(
            "UPDATE idempotency
             SET state = 'complete', status = $1, content_type = $2, response = $3
             WHERE account = $4 AND idem_key = $5 AND owner = $6 AND state = 'in_flight'",
        )
        .await
        .map_err(pg_err)?;
    let n = c
        .execute(
            &st,
            &[
                &i64::from(cm.response.status),
                &cm.response.content_type,
                &cm.response.body,
                &cm.account,
                &cm.idem_key,
                &cm.owner,
            ],
        )
        .await
        .map_err(pg_err)?;
    Ok(n == 1)
}

// ---- reads ----------------------------------------------------------------------------------

pub(crate) async fn get_key(c: &Object, public_id: &str) -> Result<Option<KeyRecord>, StoreError> {
    let st = c
        .prepare_cached(&format!(
            "SELECT {} FROM api_keys WHERE public_id = $1",
            rows::KEY_COLUMNS
        ))
        .await
        .map_err(pg_err)?;
    c.query_opt(&st, &[&public_id])
        .await
        .map_err(pg_err)?
        .map(|r| rows::key(&r))
        .transpose()
}

pub(crate) async fn list_keys(
    c: &Object,
    account: Option<&str>,
) -> Result<Vec<KeyRecord>, StoreError> {
    let columns = rows::KEY_COLUMNS;
    let found = match account {
        Some(a) => c
            .query(
                &format!(
                    "SELECT {columns} FROM api_keys WHERE account = $1
                     ORDER BY created_at, public_id"
                ),
                &[&a],
            )
            .await
            .map_err(pg_err)?,
        None => c
            .query(
                &format!("SELECT {columns} FROM api_keys ORDER BY account, created_at, public_id"),
                &[],
            )
            .await
            .map_err(pg_err)?,
    };
    found.iter().map(rows::key).collect()
}

pub(crate) async fn revocation_counter(c: &Object) -> Result<u64, StoreError> {
    let st = c
        .prepare_cached("SELECT value FROM counters WHERE name = 'revocations'")
        .await
        .map_err(pg_err)?;
    let row = c.query_one(&st, &[]).await.map_err(pg_err)?;
    Ok(u64::try_from(col::<i64>(&row, 0)?).unwrap_or(0))
}

pub(crate) async fn balance(c: &Object, account: &str) -> Result<Option<i64>, StoreError> {
    let st = c
        .prepare_cached("SELECT balance FROM accounts WHERE id = $1")
        .await
        .map_err(pg_err)?;
    c.query_opt(&st, &[&account])
        .await
        .map_err(pg_err)?
        .map(|r| col(&r, 0))
        .transpose()
}

pub(crate) async fn expired_pending(
    c: &Object,
    now: i64,
    limit: u32,
) -> Result<Vec<String>, StoreError> {
    let rows = c
        .query(
            "SELECT id FROM reservations WHERE state = 'pending' AND expires_at <= $1
             ORDER BY expires_at LIMIT $2",
            &[&now, &i64::from(limit)],
        )
        .await
        .map_err(pg_err)?;
    rows.iter().map(|r| col(r, 0)).collect()
}

pub(crate) async fn reservation(
    c: &Object,
    id: &str,
) -> Result<Option<ReservationRecord>, StoreError> {
    let row = c
        .query_opt(
            &format!(
                "SELECT {} FROM reservations WHERE id = $1",
                rows::RESERVATION_COLUMNS
            ),
            &[&id],
        )
        .await
        .map_err(pg_err)?;
    row.map(|r| rows::reservation(&r)).transpose()
}

pub(crate) async fn pending_count(c: &Object) -> Result<i64, StoreError> {
    let row = c
        .query_one(
            "SELECT COUNT(*) FROM reservations WHERE state = 'pending'",
            &[],
        )
        .await
        .map_err(pg_err)?;
    col(&row, 0)
}

pub(crate) async fn usage(c: &Object, f: &UsageFilter) -> Result<Vec<UsageRow>, StoreError> {
    // Requests charged from a lease are posted in batches (`lease_usage`), each batch one row
    // with its count.
    let mut sql = String::from(
        "SELECT account, key_id, agent_id, SUM(requests)::BIGINT, SUM(charged)::BIGINT,
                SUM(pending)::BIGINT
         FROM (
             SELECT account, key_id, agent_id, 1 AS requests,
                    CASE WHEN state = 'posted' THEN charged ELSE 0 END AS charged,
                    CASE WHEN state = 'pending' THEN 1 ELSE 0 END AS pending, created_at
             FROM reservations
             UNION ALL
             SELECT account, key_id, agent_id, requests, charged, 0, created_at
             FROM lease_usage
         ) u WHERE 1 = 1",
    );
    let conditions = f.conditions();
    let mut args: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = Vec::new();
    for (clause, value) in &conditions {
        args.push(match value {
            FilterValue::Text(t) => t,
            FilterValue::Time(t) => t,
        });
        sql.push_str(&format!(" AND {clause} ${}", args.len()));
    }
    sql.push_str(" GROUP BY account, key_id, agent_id ORDER BY account, key_id, agent_id");
    let rows = c.query(&sql, &args).await.map_err(pg_err)?;
    rows.iter()
        .map(|r| {
            Ok(UsageRow {
                account: col(r, 0)?,
                key_id: col(r, 1)?,
                agent_id: col(r, 2)?,
                requests: col(r, 3)?,
                charged: col(r, 4)?,
                pending: col(r, 5)?,
            })
        })
        .collect()
}

pub(crate) async fn usage_buckets(
    c: &Object,
    f: &UsageFilter,
    bucket_ms: i64,
) -> Result<Vec<UsageBucket>, StoreError> {
    // As `usage`: lease batches count with their number of requests.
    let mut sql = String::from(
        "SELECT (created_at / $1) * $1 AS bucket, agent_id, SUM(requests)::BIGINT,
                SUM(charged)::BIGINT
         FROM (
             SELECT account, key_id, agent_id, 1 AS requests,
                    CASE WHEN state = 'posted' THEN charged ELSE 0 END AS charged, created_at
             FROM reservations
             UNION ALL
             SELECT account, key_id, agent_id, requests, charged, created_at
             FROM lease_usage
         ) u WHERE 1 = 1",
    );
    let conditions = f.conditions();
    let mut args: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![&bucket_ms];
    for (clause, value) in &conditions {
        args.push(match value {
            FilterValue::Text(t) => t,
            FilterValue::Time(t) => t,
        });
        sql.push_str(&format!(" AND {clause} ${}", args.len()));
    }
    sql.push_str(" GROUP BY bucket, agent_id ORDER BY bucket, agent_id");
    let rows = c.query(&sql, &args).await.map_err(pg_err)?;
    rows.iter()
        .map(|r| {
            Ok(UsageBucket {
                start: col(r, 0)?,
                agent_id: col(r, 1)?,
                requests: col(r, 2)?,
                charged: col(r, 3)?,
            })
        })
        .collect()
}

pub(crate) async fn account_sums(mut c: Object) -> Result<Vec<AccountSums>, StoreError> {
    // One repeatable-read snapshot, so that the sums agree with each other.
    let tx = c
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(pg_err)?;
    let rows = tx
        .query(
            "SELECT a.id, a.balance,
                 COALESCE((SELECT SUM(g.amount) FROM grants g WHERE g.account = a.id), 0)::BIGINT,
                 COALESCE((SELECT SUM(r.charged) FROM reservations r
                           WHERE r.account = a.id AND r.state = 'posted'), 0)::BIGINT
                 + COALESCE((SELECT SUM(u.charged) FROM lease_usage u
                             WHERE u.account = a.id), 0)::BIGINT,
                 COALESCE((SELECT SUM(r.reserved) FROM reservations r
                           WHERE r.account = a.id AND r.state = 'pending'), 0)::BIGINT
                 + COALESCE((SELECT SUM(l.amount) FROM leases l
                             WHERE l.account = a.id), 0)::BIGINT
             FROM accounts a ORDER BY a.id",
            &[],
        )
        .await
        .map_err(pg_err)?;
    let sums = rows
        .iter()
        .map(|r| {
            Ok(AccountSums {
                account: col(r, 0)?,
                balance: col(r, 1)?,
                granted: col(r, 2)?,
                posted: col(r, 3)?,
                pending: col(r, 4)?,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    tx.commit().await.map_err(pg_err)?;
    Ok(sums)
}
