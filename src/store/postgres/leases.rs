//! Credit leases (`[store] lease_credits`): blocks of credits taken from a balance into a
//! replica's memory, synced back in batches, returned on release or expiry.

use deadpool_postgres::Object;

use super::super::{LeaseTake, LeaseTaken, LeaseUsage, StoreError};
use super::{col, pg_err};

/// A new lease: takes `LEAST(balance, amount)` from the account (locked) and records it.
const LEASE_CREATE_SQL: &str = "
WITH cur AS (
    SELECT id, balance FROM accounts WHERE id = $2::TEXT FOR NO KEY UPDATE
), take AS (
    UPDATE accounts SET balance = accounts.balance - LEAST(cur.balance, $4::BIGINT)
    FROM cur WHERE accounts.id = cur.id AND cur.balance > 0
    RETURNING LEAST(cur.balance, $4::BIGINT) AS taken, accounts.balance AS after
), ins AS (
    INSERT INTO leases (id, account, holder, amount, created_at, expires_at)
    SELECT $1::TEXT, $2::TEXT, $3::TEXT, taken, $5::BIGINT, $6::BIGINT FROM take
    RETURNING id
)
SELECT 1::BIGINT, (SELECT taken FROM take), (SELECT after FROM take), (SELECT count(*) FROM ins)";

/// A top-up: the same, only while the lease still exists (locked first), and renewed.
/// Parameters: lease id, account, amount, new expiry.
const LEASE_TOPUP_SQL: &str = "
WITH l AS (
    SELECT id FROM leases WHERE id = $1::TEXT FOR UPDATE
), cur AS (
    SELECT a.id, a.balance FROM accounts a
    WHERE a.id = $2::TEXT AND EXISTS (SELECT 1 FROM l) FOR NO KEY UPDATE
), take AS (
    UPDATE accounts SET balance = accounts.balance - LEAST(cur.balance, $3::BIGINT)
    FROM cur WHERE accounts.id = cur.id AND cur.balance > 0
    RETURNING LEAST(cur.balance, $3::BIGINT) AS taken, accounts.balance AS after
), upd AS (
    UPDATE leases SET amount = leases.amount + take.taken, expires_at = $4::BIGINT
    FROM take WHERE leases.id = $1::TEXT
    RETURNING leases.id
)
SELECT (SELECT count(*) FROM l), (SELECT taken FROM take), (SELECT after FROM take),
       (SELECT count(*) FROM upd)";

pub(crate) async fn lease_take(c: &Object, t: &LeaseTake) -> Result<LeaseTaken, StoreError> {
    let row = if t.create {
        let st = c.prepare_cached(LEASE_CREATE_SQL).await.map_err(pg_err)?;
        c.query_one(
            &st,
            &[
                &t.lease_id,
                &t.account,
                &t.holder,
                &t.amount,
                &t.now,
                &t.expires_at,
            ],
        )
        .await
    } else {
        let st = c.prepare_cached(LEASE_TOPUP_SQL).await.map_err(pg_err)?;
        c.query_one(&st, &[&t.lease_id, &t.account, &t.amount, &t.expires_at])
            .await
    }
    .map_err(pg_err)?;
    if col::<i64>(&row, 0)? == 0 {
        return Ok(LeaseTaken::Lost);
    }
    let taken: Option<i64> = col(&row, 1)?;
    let after: Option<i64> = col(&row, 2)?;
    Ok(LeaseTaken::Taken {
        taken: taken.unwrap_or(0),
        balance_after: after.unwrap_or(0),
    })
}

/// Posts a lease's settled charges and renews it, in one transaction; `false` if it is gone.
pub(crate) async fn lease_sync(
    mut c: Object,
    lease_id: &str,
    account: &str,
    usage: &[LeaseUsage],
    now: i64,
    expires_at: i64,
) -> Result<bool, StoreError> {
    let charged: i64 = usage.iter().map(|u| u.charged).sum();
    let tx = c.transaction().await.map_err(pg_err)?;
    let n = tx
        .execute(
            "UPDATE leases SET amount = amount - $2, expires_at = $3 WHERE id = $1",
            &[&lease_id, &charged, &expires_at],
        )
        .await
        .map_err(pg_err)?;
    if n == 0 {
        return Ok(false);
    }
    for u in usage.iter().filter(|u| u.requests > 0) {
        tx.execute(
            "INSERT INTO lease_usage
                 (id, lease_id, account, key_id, agent_id, requests, charged, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            &[
                &uuid::Uuid::new_v4().to_string(),
                &lease_id,
                &account,
                &u.key_id,
                &u.agent_id,
                &u.requests,
                &u.charged,
                &now,
            ],
        )
        .await
        .map_err(pg_err)?;
    }
    tx.commit().await.map_err(pg_err)?;
    Ok(true)
}

/// Deletes one lease (`id`) or every lease expired at `now`, and returns what they held to
/// their accounts, in one statement. Returns the millicredits returned.
pub(crate) async fn return_leases(
    c: &Object,
    id: Option<&str>,
    now: i64,
) -> Result<i64, StoreError> {
    let st = c
        .prepare_cached(
            "WITH gone AS (
                 DELETE FROM leases
                 WHERE ($1::TEXT IS NOT NULL AND id = $1::TEXT)
                    OR ($1::TEXT IS NULL AND expires_at <= $2::BIGINT)
                 RETURNING account, amount
             ), sums AS (
                 SELECT account, SUM(amount)::BIGINT AS amount FROM gone GROUP BY account
             ), refund AS (
                 UPDATE accounts SET balance = accounts.balance + sums.amount
                 FROM sums WHERE accounts.id = sums.account
                 RETURNING sums.amount
             )
             SELECT COALESCE(SUM(amount), 0)::BIGINT FROM refund",
        )
        .await
        .map_err(pg_err)?;
    let row = c.query_one(&st, &[&id, &now]).await.map_err(pg_err)?;
    col(&row, 0)
}
