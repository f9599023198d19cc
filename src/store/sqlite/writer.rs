//! The SQLite writer: one thread, group commit. It takes whatever is queued, applies it in one
//! transaction (savepoints only to isolate an op's constraint failure) and answers every op
//! once the batch committed.

use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::time::Duration;

use rusqlite::{params, Connection, ErrorCode};

use super::super::transcripts::ConversationOutcome;
use super::super::{
    IdemOutcome, Msg, ReserveOutcome, RevokeOutcome, SettleOutcome, StoreError, WriteOp,
};
use super::{ledger, transcripts, StoreFile};

/// Pause before a batch that failed every attempt is tried again: doubled each round, at most
/// [`RETRY_MAX`], back to [`RETRY_MIN`] after a commit.
const RETRY_MIN: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// Group commit: block for the first op, take whatever else is queued (up to `max_batch`),
/// commit it as one transaction, answer every op, repeat. A batch of ops nobody waits for
/// waits up to `linger` for one that somebody does. After `Shutdown` (or when every
/// sender is gone) it drains what is left and stops.
pub(crate) fn writer_loop(
    conn: Connection,
    rx: Receiver<Msg>,
    max_batch: usize,
    linger: Duration,
    file: StoreFile,
) {
    let mut retry: Vec<WriteOp> = Vec::new();
    let mut stopping = false;
    let mut backoff = RETRY_MIN;
    loop {
        let mut batch = std::mem::take(&mut retry);
        if batch.is_empty() && !stopping {
            match rx.recv() {
                Ok(Msg::Op(op)) => batch.push(op),
                Ok(Msg::Shutdown) | Err(_) => stopping = true,
            }
        }
        drain(&rx, &mut batch, max_batch, &mut stopping);
        // Only ops nobody waits for (a stream's settlement): hold them for the op someone
        // awaits that usually follows (the next request's reservation) and commit together.
        let room = !batch.is_empty() && batch.len() < max_batch;
        if !stopping && room && batch.iter().all(WriteOp::may_linger) {
            match rx.recv_timeout(linger) {
                Ok(Msg::Op(op)) => {
                    batch.push(op);
                    drain(&rx, &mut batch, max_batch, &mut stopping);
                }
                Ok(Msg::Shutdown) | Err(RecvTimeoutError::Disconnected) => stopping = true,
                Err(RecvTimeoutError::Timeout) => {}
            }
        }
        if batch.is_empty() {
            return; // stopping, and nothing left
        }
        retry = run_batch(&conn, &file, batch);
        if retry.is_empty() {
            backoff = RETRY_MIN;
        } else {
            if stopping {
                tracing::error!(
                    ops = retry.len(),
                    "store closing with uncommitted settlements; recovery will settle them"
                );
                return;
            }
            tracing::error!(
                ops = retry.len(),
                retry_in_ms = backoff.as_millis() as u64,
                "settlements not yet durable; retrying"
            );
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(RETRY_MAX);
        }
    }
}

/// Adds whatever is queued to `batch`, up to `max_batch` ops.
fn drain(rx: &Receiver<Msg>, batch: &mut Vec<WriteOp>, max_batch: usize, stopping: &mut bool) {
    while batch.len() < max_batch {
        match rx.try_recv() {
            Ok(Msg::Op(op)) => batch.push(op),
            Ok(Msg::Shutdown) => *stopping = true,
            Err(TryRecvError::Empty) => break,
            Err(TryRecvError::Disconnected) => {
                *stopping = true;
                break;
            }
        }
    }
}

/// What an op produced, before its callback is called.
enum Outcome {
    Reserve(ReserveOutcome),
    Settle(SettleOutcome),
    Bool(bool),
    Balance(i64),
    Unit,
    Revoke(RevokeOutcome),
    Idem(IdemOutcome),
    Conversation(ConversationOutcome),
    Count(u64),
}

/// Commits one batch, retrying transient failures. Returns the ops that could not be committed
/// and must not be failed (settlements, fire-and-forget ops); the loop retries them (they must
/// never be lost while the process lives).
fn run_batch(conn: &Connection, file: &StoreFile, ops: Vec<WriteOp>) -> Vec<WriteOp> {
    const ATTEMPTS: u32 = 6;
    let mut last_err = String::new();
    for attempt in 0..ATTEMPTS {
        match file.check().and_then(|()| try_batch(conn, &ops)) {
            Ok(outcomes) => {
                for (op, out) in ops.into_iter().zip(outcomes) {
                    finish(op, out);
                }
                return Vec::new();
            }
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                tracing::warn!(error = %e, attempt, ops = ops.len(), "store write batch failed");
                last_err = e.to_string();
                std::thread::sleep(Duration::from_millis(10 << attempt));
            }
        }
    }
    let mut keep = Vec::new();
    for op in ops {
        if op.is_retried_until_committed() {
            keep.push(op);
        } else {
            finish(op, Err(StoreError::Batch(last_err.clone())));
        }
    }
    keep
}

fn is_constraint(e: &StoreError) -> bool {
    matches!(e, StoreError::Duplicate(_) | StoreError::Limit(_))
        || matches!(e, StoreError::Sqlite(rusqlite::Error::SqliteFailure(f, _))
            if f.code == ErrorCode::ConstraintViolation)
}

/// Applies every op inside one transaction. The common case takes no savepoints: the ops run
/// straight in the transaction (no statement sub-journal, two statements fewer per op). When one
/// of them hits a constraint (a duplicate id, a balance limit: rare), the transaction is rolled
/// back and the batch is run again with each op in its own savepoint, so that the violation
/// fails that op only. Any other error aborts the whole batch.
fn try_batch(
    conn: &Connection,
    ops: &[WriteOp],
) -> Result<Vec<Result<Outcome, StoreError>>, StoreError> {
    run_cached(conn, "BEGIN IMMEDIATE")?;
    let mut outcomes = Vec::with_capacity(ops.len());
    let mut conflict = false;
    for op in ops {
        match apply(conn, op) {
            Ok(out) => outcomes.push(Ok(out)),
            Err(e) if is_constraint(&e) => {
                conflict = true;
                break;
            }
            Err(e) => return Err(e),
        }
    }
    if !conflict {
        run_cached(conn, "COMMIT")?;
        return Ok(outcomes);
    }
    run_cached(conn, "ROLLBACK")?;
    try_batch_savepoints(conn, ops)
}

/// [`try_batch`]'s slow path: each op in its own savepoint.
fn try_batch_savepoints(
    conn: &Connection,
    ops: &[WriteOp],
) -> Result<Vec<Result<Outcome, StoreError>>, StoreError> {
    run_cached(conn, "BEGIN IMMEDIATE")?;
    let mut outcomes = Vec::with_capacity(ops.len());
    for op in ops {
        run_cached(conn, "SAVEPOINT op")?;
        match apply(conn, op) {
            Ok(out) => {
                run_cached(conn, "RELEASE op")?;
                outcomes.push(Ok(out));
            }
            Err(e) if is_constraint(&e) => {
                run_cached(conn, "ROLLBACK TO op")?;
                run_cached(conn, "RELEASE op")?;
                outcomes.push(Err(e));
            }
            Err(e) => return Err(e),
        }
    }
    run_cached(conn, "COMMIT")?;
    Ok(outcomes)
}

/// Runs a statement without parameters from the connection's statement cache (the writer runs
/// `BEGIN` and `COMMIT` thousands of times a second; `execute_batch` would parse them each time).
fn run_cached(conn: &Connection, sql: &str) -> Result<(), StoreError> {
    conn.prepare_cached(sql)?.execute([])?;
    Ok(())
}

fn mismatch<T>() -> Result<T, StoreError> {
    Err(StoreError::Corrupt("op/outcome mismatch".into()))
}

/// Hands an op's outcome to its callback.
fn finish(op: WriteOp, out: Result<Outcome, StoreError>) {
    match op {
        WriteOp::Reserve(_, done) => done(out.and_then(|o| match o {
            Outcome::Reserve(r) => Ok(r),
            _ => mismatch(),
        })),
        WriteOp::Settle(req, done) => {
            let r = out.and_then(|o| match o {
                Outcome::Settle(s) => Ok(s),
                _ => mismatch(),
            });
            match done {
                Some(done) => done(r),
                None => {
                    if let Err(e) = r {
                        tracing::error!(request_id = %req.id, error = %e, "settlement failed");
                    }
                }
            }
        }
        WriteOp::Extend { done, .. } | WriteOp::IdemAbort { done, .. } => {
            if let Some(done) = done {
                done(out.and_then(|o| match o {
                    Outcome::Bool(b) => Ok(b),
                    _ => mismatch(),
                }))
            }
        }
        WriteOp::IdemComplete(_, done) => done(out.and_then(|o| match o {
            Outcome::Bool(b) => Ok(b),
            _ => mismatch(),
        })),
        WriteOp::Grant(_, done) => done(out.and_then(|o| match o {
            Outcome::Balance(b) => Ok(b),
            _ => mismatch(),
        })),
        WriteOp::InsertKey(_, done) | WriteOp::Flush(done) | WriteOp::Probe(done) => {
            done(out.and_then(|o| match o {
                Outcome::Unit => Ok(()),
                _ => mismatch(),
            }))
        }
        WriteOp::RevokeKey { done, .. } => done(out.and_then(|o| match o {
            Outcome::Revoke(r) => Ok(r),
            _ => mismatch(),
        })),
        WriteOp::IdemBegin(_, done) => done(out.and_then(|o| match o {
            Outcome::Idem(r) => Ok(r),
            _ => mismatch(),
        })),
        WriteOp::Conversation(_, done) => done(out.and_then(|o| match o {
            Outcome::Conversation(r) => Ok(r),
            _ => mismatch(),
        })),
        WriteOp::IdemExpire { done, .. } => done(out.and_then(|o| match o {
            Outcome::Count(n) => Ok(n),
            _ => mismatch(),
        })),
    }
}

fn apply(conn: &Connection, op: &WriteOp) -> Result<Outcome, StoreError> {
    match op {
        WriteOp::Reserve(r, _) => ledger::reserve(conn, r).map(Outcome::Reserve),
        WriteOp::Settle(s, _) => ledger::settle(conn, s).map(Outcome::Settle),
        WriteOp::Extend { id, expires_at, .. } => {
            let n = conn
                .prepare_cached(
                    "UPDATE reservations SET expires_at = ?1 WHERE id = ?2 AND state = 'pending'",
                )?
                .execute(params![expires_at, id])?;
            Ok(Outcome::Bool(n == 1))
        }
        WriteOp::Grant(g, _) => ledger::grant(conn, g).map(Outcome::Balance),
        WriteOp::InsertKey(k, _) => ledger::insert_key(conn, k).map(|()| Outcome::Unit),
        WriteOp::RevokeKey { public_id, now, .. } => {
            ledger::revoke_key(conn, public_id, *now).map(Outcome::Revoke)
        }
        WriteOp::IdemBegin(c, _) => ledger::idem_begin(conn, c).map(Outcome::Idem),
        WriteOp::IdemComplete(c, _) => ledger::idem_complete(conn, c).map(Outcome::Bool),
        WriteOp::IdemAbort {
            account,
            idem_key,
            owner,
            ..
        } => {
            let n = conn
                .prepare_cached(
                    "DELETE FROM idempotency
                     WHERE account = ?1 AND idem_key = ?2 AND owner = ?3 AND state = 'in_flight'",
                )?
                .execute(params![account, idem_key, owner])?;
            Ok(Outcome::Bool(n == 1))
        }
        WriteOp::IdemExpire {
            created_before,
            now,
            limit,
            ..
        } => {
            let n = conn
                .prepare_cached(
                    "DELETE FROM idempotency WHERE rowid IN (
                         SELECT rowid FROM idempotency
                         WHERE created_at < ?1 AND (state = 'complete' OR locked_until < ?2)
                         LIMIT ?3)",
                )?
                .execute(params![created_before, now, limit])?;
            Ok(Outcome::Count(n as u64))
        }
        WriteOp::Conversation(w, _) => transcripts::apply(conn, w).map(Outcome::Conversation),
        WriteOp::Flush(_) => Ok(Outcome::Unit),
        WriteOp::Probe(_) => {
            conn.prepare_cached(
                "INSERT INTO counters (name, value) VALUES ('ready_probe', ?1)
                 ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            )?
            .execute(params![super::super::now_ms()])?;
            Ok(Outcome::Unit)
        }
    }
}
