//! SQLite backend: one writer thread doing group commit, a small pool of read connections.
//!
//! Durability: WAL with `synchronous=FULL` by default, so a commit is on disk (WAL fsynced)
//! before any caller hears of it; that survives both `kill -9` and power loss. With
//! `Synchronous::Normal` a commit survives `kill -9` but the last batches before a power loss
//! may roll back (the file stays consistent). Group commit amortises the fsync over a batch.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::{params, Connection, ErrorCode, OptionalExtension, Row};

use super::schema;
use super::{
    AccountSums, FilterValue, IdemClaim, IdemCompletion, IdemOutcome, KeyRecord, Msg, NewGrant,
    NewReservation, ReservationRecord, ReserveOutcome, RevokeOutcome, SettleOutcome, SettleRequest,
    StoreError, StoredResponse, UsageBucket, UsageFilter, UsageRow, WriteOp, WriteQueue,
};

/// `PRAGMA synchronous` in WAL mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Synchronous {
    /// Commits survive `kill -9`; a power loss may roll back the last commits.
    Normal,
    /// Commits survive `kill -9` and power loss (the WAL is fsynced at each commit).
    Full,
}

/// Tuning of the SQLite backend.
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    pub synchronous: Synchronous,
    /// How long a connection waits for another process's lock (e.g. the CLI) before failing.
    pub busy_timeout: Duration,
    /// Most ops committed in one transaction. 1 turns group commit off (for comparison).
    pub max_batch: usize,
    /// Read connections kept open.
    pub read_connections: usize,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            synchronous: Synchronous::Full,
            busy_timeout: Duration::from_secs(5),
            max_batch: 1024,
            read_connections: 4,
        }
    }
}

fn configure(conn: &Connection, opts: &SqliteOptions) -> Result<(), StoreError> {
    conn.busy_timeout(opts.busy_timeout)?;
    let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Corrupt(format!(
            "journal_mode is {mode}, not wal"
        )));
    }
    let sync = match opts.synchronous {
        Synchronous::Normal => "NORMAL",
        Synchronous::Full => "FULL",
    };
    conn.execute_batch(&format!(
        "PRAGMA synchronous={sync}; PRAGMA foreign_keys=ON;"
    ))?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(())
}

fn migrate(conn: &Connection) -> Result<(), StoreError> {
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let result = (|| {
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS schema_version (
                 version    INTEGER PRIMARY KEY,
                 applied_at INTEGER NOT NULL
             )",
        )?;
        let current: i64 = conn.query_row(
            "SELECT COALESCE(MAX(version), 0) FROM schema_version",
            [],
            |r| r.get(0),
        )?;
        if current > schema::latest() {
            return Err(StoreError::SchemaTooNew {
                found: current,
                supported: schema::latest(),
            });
        }
        for (version, sql) in schema::MIGRATIONS.iter().filter(|m| m.0 > current) {
            conn.execute_batch(sql)?;
            conn.execute(
                "INSERT INTO schema_version (version, applied_at) VALUES (?1, ?2)",
                params![version, super::now_ms()],
            )?;
        }
        Ok(())
    })();
    match result {
        Ok(()) => Ok(conn.execute_batch("COMMIT")?),
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

pub(crate) struct SqliteStore {
    tx: Option<mpsc::Sender<Msg>>,
    writer: Option<JoinHandle<()>>,
    reads: Arc<ReadPool>,
}

impl SqliteStore {
    pub(crate) fn open(path: &Path, opts: SqliteOptions) -> Result<SqliteStore, StoreError> {
        create_private(path)?;
        let conn = Connection::open(path)?;
        configure(&conn, &opts)?;
        migrate(&conn)?;
        let file = StoreFile::opened(path)?;
        let reads = Arc::new(ReadPool {
            path: path.to_path_buf(),
            opts: opts.clone(),
            idle: Mutex::new(Vec::new()),
        });
        // Open one reader now so that a bad path fails here, not on first use.
        let first = reads.connect()?;
        reads.put(first);
        let (tx, rx) = mpsc::channel();
        let max_batch = opts.max_batch.max(1);
        let writer = std::thread::Builder::new()
            .name("agentgate-store-writer".into())
            .spawn(move || writer_loop(conn, rx, max_batch, file))
            .map_err(|e| StoreError::Task(e.to_string()))?;
        Ok(SqliteStore {
            tx: Some(tx),
            writer: Some(writer),
            reads,
        })
    }

    pub(crate) fn queue(&self) -> WriteQueue {
        match &self.tx {
            Some(tx) => WriteQueue(tx.clone()),
            // Only during drop; a queue whose receiver is gone reports Closed.
            None => WriteQueue(mpsc::channel().0),
        }
    }

    pub(crate) async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let pool = Arc::clone(&self.reads);
        super::blocking(move || {
            let conn = pool.take()?;
            let out = f(&conn);
            pool.put(conn);
            out
        })
        .await
    }
}

/// Creates the store file readable by its owner only (0600) when it does not exist yet; SQLite
/// gives its `-wal` and `-shm` files the same mode. An existing file is left as it is.
fn create_private(path: &Path) -> Result<(), StoreError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(StoreError::Create {
            path: path.to_path_buf(),
            source,
        }),
    }
}

impl Drop for SqliteStore {
    /// Drains the queue: every write enqueued before the last handle went away is committed.
    fn drop(&mut self) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(Msg::Shutdown);
        }
        if let Some(writer) = self.writer.take() {
            if writer.thread().id() != std::thread::current().id() {
                let _ = writer.join();
            }
        }
    }
}

struct ReadPool {
    path: PathBuf,
    opts: SqliteOptions,
    idle: Mutex<Vec<Connection>>,
}

impl ReadPool {
    fn connect(&self) -> Result<Connection, StoreError> {
        let conn = Connection::open(&self.path)?;
        conn.busy_timeout(self.opts.busy_timeout)?;
        conn.execute_batch("PRAGMA query_only=ON")?;
        conn.set_prepared_statement_cache_capacity(32);
        Ok(conn)
    }

    fn take(&self) -> Result<Connection, StoreError> {
        let idle = self.idle.lock().ok().and_then(|mut v| v.pop());
        match idle {
            Some(c) => Ok(c),
            None => self.connect(),
        }
    }

    fn put(&self, conn: Connection) {
        if let Ok(mut idle) = self.idle.lock() {
            if idle.len() < self.opts.read_connections.max(1) {
                idle.push(conn);
            }
        }
    }
}

// ---- the writer ---------------------------------------------------------------------------

/// The file a store opened, so that a path that no longer names it (the file or its directory
/// deleted, another file moved there) is noticed instead of writing into an unlinked file.
struct StoreFile {
    path: PathBuf,
    /// Device and inode of the file opened (Unix; elsewhere not checked).
    id: Option<(u64, u64)>,
}

impl StoreFile {
    fn opened(path: &Path) -> Result<StoreFile, StoreError> {
        Ok(StoreFile {
            path: path.to_path_buf(),
            id: file_id(path).map_err(|e| StoreError::Task(format!("{}: {e}", path.display())))?,
        })
    }

    /// Fails when the path no longer names the file opened.
    fn check(&self) -> Result<(), StoreError> {
        let Some(opened) = self.id else {
            return Ok(());
        };
        match file_id(&self.path) {
            Ok(Some(now)) if now == opened => Ok(()),
            _ => Err(StoreError::Replaced(self.path.display().to_string())),
        }
    }
}

#[cfg(unix)]
fn file_id(path: &Path) -> std::io::Result<Option<(u64, u64)>> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path)?;
    Ok(Some((m.dev(), m.ino())))
}

#[cfg(not(unix))]
fn file_id(_: &Path) -> std::io::Result<Option<(u64, u64)>> {
    Ok(None)
}

/// Pause before a batch that failed every attempt is tried again: doubled each round, at most
/// [`RETRY_MAX`], back to [`RETRY_MIN`] after a commit.
const RETRY_MIN: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// Group commit: block for the first op, take whatever else is queued (up to `max_batch`),
/// commit it as one transaction, answer every op, repeat. After `Shutdown` (or when every
/// sender is gone) it drains what is left and stops.
fn writer_loop(conn: Connection, rx: Receiver<Msg>, max_batch: usize, file: StoreFile) {
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
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(Msg::Op(op)) => batch.push(op),
                Ok(Msg::Shutdown) => stopping = true,
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    stopping = true;
                    break;
                }
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

/// What an op produced, before its callback is called.
enum Outcome {
    Reserve(ReserveOutcome),
    Settle(SettleOutcome),
    Bool(bool),
    Balance(i64),
    Unit,
    Revoke(RevokeOutcome),
    Idem(IdemOutcome),
    Conversation(super::ConversationOutcome),
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

/// Applies every op inside one transaction, each in its own savepoint so that one op's
/// constraint violation fails that op only. Any other error aborts the whole batch.
fn try_batch(
    conn: &Connection,
    ops: &[WriteOp],
) -> Result<Vec<Result<Outcome, StoreError>>, StoreError> {
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let mut outcomes = Vec::with_capacity(ops.len());
    for op in ops {
        conn.execute_batch("SAVEPOINT op")?;
        match apply(conn, op) {
            Ok(out) => {
                conn.execute_batch("RELEASE op")?;
                outcomes.push(Ok(out));
            }
            Err(e) if is_constraint(&e) => {
                conn.execute_batch("ROLLBACK TO op; RELEASE op")?;
                outcomes.push(Err(e));
            }
            Err(e) => return Err(e),
        }
    }
    conn.execute_batch("COMMIT")?;
    Ok(outcomes)
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

fn apply(conn: &Connection, op: &WriteOp) -> Result<Outcome, StoreError> {
    match op {
        WriteOp::Reserve(r, _) => reserve(conn, r).map(Outcome::Reserve),
        WriteOp::Settle(s, _) => settle(conn, s).map(Outcome::Settle),
        WriteOp::Extend { id, expires_at, .. } => {
            let n = conn
                .prepare_cached(
                    "UPDATE reservations SET expires_at = ?1 WHERE id = ?2 AND state = 'pending'",
                )?
                .execute(params![expires_at, id])?;
            Ok(Outcome::Bool(n == 1))
        }
        WriteOp::Grant(g, _) => grant(conn, g).map(Outcome::Balance),
        WriteOp::InsertKey(k, _) => insert_key(conn, k).map(|()| Outcome::Unit),
        WriteOp::RevokeKey { public_id, now, .. } => {
            revoke_key(conn, public_id, *now).map(Outcome::Revoke)
        }
        WriteOp::IdemBegin(c, _) => idem_begin(conn, c).map(Outcome::Idem),
        WriteOp::IdemComplete(c, _) => idem_complete(conn, c).map(Outcome::Bool),
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
        WriteOp::Conversation(w, _) => {
            super::conversations::apply(conn, w).map(Outcome::Conversation)
        }
        WriteOp::Flush(_) => Ok(Outcome::Unit),
        WriteOp::Probe(_) => {
            conn.prepare_cached(
                "INSERT INTO counters (name, value) VALUES ('ready_probe', ?1)
                 ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            )?
            .execute(params![super::now_ms()])?;
            Ok(Outcome::Unit)
        }
    }
}

fn reserve(conn: &Connection, r: &NewReservation) -> Result<ReserveOutcome, StoreError> {
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

fn settle(conn: &Connection, s: &SettleRequest) -> Result<SettleOutcome, StoreError> {
    let row: Option<(String, i64, i64, i64)> = conn
        .prepare_cached(
            "SELECT account, reserved, fallback, expires_at FROM reservations
             WHERE id = ?1 AND state = 'pending'",
        )?
        .query_row(params![s.id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })
        .optional()?;
    let Some((account, reserved, fallback, expires_at)) = row else {
        return Ok(SettleOutcome::NotPending);
    };
    if s.expired_before.is_some_and(|t| expires_at > t) {
        return Ok(SettleOutcome::NotPending);
    }
    let charged = s.charge.unwrap_or(fallback).clamp(0, reserved);
    let state = if charged > 0 { "posted" } else { "voided" };
    conn.prepare_cached(
        "UPDATE reservations SET state = ?1, charged = ?2, settled_at = ?3
         WHERE id = ?4 AND state = 'pending'",
    )?
    .execute(params![state, charged, s.now, s.id])?;
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

fn grant(conn: &Connection, g: &NewGrant) -> Result<i64, StoreError> {
    ensure_account(conn, &g.account, g.now)?;
    // Checked before the update: past i64, SQLite would turn the balance into a REAL.
    let before = account_balance(conn, &g.account)?.unwrap_or(0);
    if before.saturating_add(g.amount) > crate::credits::MAX_BALANCE_MILLI {
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

/// Why a grant past [`crate::credits::MAX_BALANCE_CREDITS`] is refused.
pub(crate) const BALANCE_LIMIT: &str =
    "the balance would exceed 1e15 credits (MAX_BALANCE_CREDITS)";

fn insert_key(conn: &Connection, k: &KeyRecord) -> Result<(), StoreError> {
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

fn revoke_key(conn: &Connection, public_id: &str, now: i64) -> Result<RevokeOutcome, StoreError> {
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

fn idem_begin(conn: &Connection, c: &IdemClaim) -> Result<IdemOutcome, StoreError> {
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

fn idem_complete(conn: &Connection, c: &IdemCompletion) -> Result<bool, StoreError> {
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

const KEY_COLUMNS: &str = "public_id, hash, account, kind, scopes, agents, created_at, \
                           expires_at, revoked_at, rate_per_second, rate_burst, max_streams, \
                           rate_per_second_exact";

fn key_row(r: &Row<'_>) -> rusqlite::Result<KeyRecord> {
    Ok(KeyRecord {
        public_id: r.get(0)?,
        hash: r.get(1)?,
        account: r.get(2)?,
        kind: r.get(3)?,
        scopes: r.get(4)?,
        agents: r.get(5)?,
        created_at: r.get(6)?,
        expires_at: r.get(7)?,
        revoked_at: r.get(8)?,
        rate_per_second: super::stored_rate(r.get(12)?, r.get(9)?),
        rate_burst: r.get(10)?,
        max_streams: r.get(11)?,
    })
}

pub(crate) fn get_key(c: &Connection, public_id: &str) -> Result<Option<KeyRecord>, StoreError> {
    Ok(c.prepare_cached(&format!(
        "SELECT {KEY_COLUMNS} FROM api_keys WHERE public_id = ?1"
    ))?
    .query_row(params![public_id], key_row)
    .optional()?)
}

pub(crate) fn list_keys(
    c: &Connection,
    account: Option<&str>,
) -> Result<Vec<KeyRecord>, StoreError> {
    let rows = match account {
        Some(a) => c
            .prepare_cached(&format!(
                "SELECT {KEY_COLUMNS} FROM api_keys WHERE account = ?1 ORDER BY created_at, public_id"
            ))?
            .query_map(params![a], key_row)?
            .collect::<Result<Vec<_>, _>>()?,
        None => c
            .prepare_cached(&format!(
                "SELECT {KEY_COLUMNS} FROM api_keys ORDER BY account, created_at, public_id"
            ))?
            .query_map([], key_row)?
            .collect::<Result<Vec<_>, _>>()?,
    };
    Ok(rows)
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
    Ok(c.prepare_cached(
        "SELECT id, account, key_id, agent_id, reserved, fallback, charged, state,
                    created_at, expires_at, settled_at
             FROM reservations WHERE id = ?1",
    )?
    .query_row(params![id], |r| {
        Ok(ReservationRecord {
            id: r.get(0)?,
            account: r.get(1)?,
            key_id: r.get(2)?,
            agent_id: r.get(3)?,
            reserved: r.get(4)?,
            fallback: r.get(5)?,
            charged: r.get(6)?,
            state: r.get(7)?,
            created_at: r.get(8)?,
            expires_at: r.get(9)?,
            settled_at: r.get(10)?,
        })
    })
    .optional()?)
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
