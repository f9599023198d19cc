//! SQLite backend: one writer thread doing group commit, a small pool of read connections.
//!
//! Durability: WAL with `synchronous=FULL` by default, so a commit is on disk (WAL fsynced)
//! before any caller hears of it; that survives both `kill -9` and power loss. With
//! `Synchronous::Normal` a commit survives `kill -9` but the last batches before a power loss
//! may roll back (the file stays consistent). Group commit amortises the fsync over a batch.
//!
//! Split by job: this file opens the file (options, migration, read pool, file identity) and
//! implements [`StoreBackend`]; `writer.rs` is the group-commit writer, `ledger.rs` the credit,
//! key and idempotency statements and reads, `transcripts.rs` the conversation statements.

mod ledger;
mod transcripts;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::{params, Connection, Params, Row, Statement};

use super::backend::{BoxFuture, StoreBackend};
use super::schema::{self, Dialect};
use super::transcripts::{After, ConversationRecord, MessageRecord};
use super::{
    rows, AccountSums, KeyRecord, Msg, ReservationRecord, StoreError, UnixMs, UsageBucket,
    UsageFilter, UsageRow, WriteQueue,
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
    /// How long a batch of ops nobody awaits (a stream's settlement) waits for an op somebody
    /// does, to share its commit (see `WriteOp::may_linger`).
    pub linger: Duration,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            synchronous: Synchronous::Full,
            busy_timeout: Duration::from_secs(5),
            max_batch: 1024,
            read_connections: 4,
            linger: super::LINGER,
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
        "PRAGMA synchronous={sync}; PRAGMA foreign_keys=ON; \
         PRAGMA cache_size=-{WRITER_CACHE_KIB}; PRAGMA mmap_size={MMAP_BYTES}; \
         PRAGMA temp_store=MEMORY;"
    ))?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(())
}

/// The writer's page cache (KiB): the B-tree pages every exchange touches (the hot account,
/// the right edges of the append-only indexes, the inner pages of the random-key ones) stay in
/// memory between batches instead of being read again from the OS (SQLite's default is 2 MiB).
/// It fills only as pages are used. (32 MiB, and 8 MiB per reader, kept SQLite's caches growing
/// past what `tests/bounded_memory.rs` allows a process to keep after 30,000 idle keys; with
/// time-ordered ids the hot pages are few.)
const WRITER_CACHE_KIB: u32 = 8 * 1024;
/// Each read connection's page cache (KiB): SQLite's default.
const READER_CACHE_KIB: u32 = 2 * 1024;
/// How much of the file is read through a memory map rather than `pread` (address space, not
/// memory: the pages are the OS page cache's).
const MMAP_BYTES: u64 = 256 * 1024 * 1024;

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
        for m in schema::after(current) {
            conn.execute_batch(&m.sql(Dialect::Sqlite))?;
            conn.execute(
                "INSERT INTO schema_version (version, applied_at) VALUES (?1, ?2)",
                params![m.version, super::now_ms()],
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
        let (max_batch, linger) = (opts.max_batch.max(1), opts.linger);
        let writer = std::thread::Builder::new()
            .name("agentgate-store-writer".into())
            .spawn(move || writer::writer_loop(conn, rx, max_batch, linger, file))
            .map_err(|e| StoreError::Task(e.to_string()))?;
        Ok(SqliteStore {
            tx: Some(tx),
            writer: Some(writer),
            reads,
        })
    }

    fn writes(&self) -> WriteQueue {
        match &self.tx {
            Some(tx) => WriteQueue(tx.clone()),
            // Only during drop; a queue whose receiver is gone reports Closed.
            None => WriteQueue(mpsc::channel().0),
        }
    }

    async fn read<T: Send + 'static>(
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
        conn.execute_batch(&format!(
            "PRAGMA query_only=ON; PRAGMA cache_size=-{READER_CACHE_KIB}; \
             PRAGMA mmap_size={MMAP_BYTES};"
        ))?;
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

impl rows::Columns for Row<'_> {
    fn text(&self, i: usize) -> Result<String, StoreError> {
        Ok(self.get(i)?)
    }
    fn opt_text(&self, i: usize) -> Result<Option<String>, StoreError> {
        Ok(self.get(i)?)
    }
    fn int(&self, i: usize) -> Result<i64, StoreError> {
        Ok(self.get(i)?)
    }
    fn opt_int(&self, i: usize) -> Result<Option<i64>, StoreError> {
        Ok(self.get(i)?)
    }
    fn opt_real(&self, i: usize) -> Result<Option<f64>, StoreError> {
        Ok(self.get(i)?)
    }
    fn boolean(&self, i: usize) -> Result<bool, StoreError> {
        Ok(self.get::<_, i64>(i)? != 0)
    }
}

/// The first row of `stmt`'s result mapped by `map` (a [`rows`] function), if any.
pub(crate) fn query_opt<T>(
    stmt: &mut Statement<'_>,
    params: impl Params,
    map: impl Fn(&Row<'_>) -> Result<T, StoreError>,
) -> Result<Option<T>, StoreError> {
    let mut rows = stmt.query(params)?;
    rows.next()?.map(map).transpose()
}

/// Every row of `stmt`'s result mapped by `map`.
pub(crate) fn query_vec<T>(
    stmt: &mut Statement<'_>,
    params: impl Params,
    map: impl Fn(&Row<'_>) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    let mut rows = stmt.query(params)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(map(row)?);
    }
    Ok(out)
}

impl StoreBackend for SqliteStore {
    fn queue(&self) -> WriteQueue {
        self.writes()
    }

    fn get_key<'a>(&'a self, public_id: &'a str) -> BoxFuture<'a, Option<KeyRecord>> {
        let id = public_id.to_owned();
        Box::pin(self.read(move |c| ledger::get_key(c, &id)))
    }

    fn list_keys<'a>(&'a self, account: Option<&'a str>) -> BoxFuture<'a, Vec<KeyRecord>> {
        let account = account.map(str::to_owned);
        Box::pin(self.read(move |c| ledger::list_keys(c, account.as_deref())))
    }

    fn revocation_counter(&self) -> BoxFuture<'_, u64> {
        Box::pin(self.read(ledger::revocation_counter))
    }

    fn balance<'a>(&'a self, account: &'a str) -> BoxFuture<'a, Option<i64>> {
        let account = account.to_owned();
        Box::pin(self.read(move |c| ledger::balance(c, &account)))
    }

    fn expired_pending(&self, now: UnixMs, limit: u32) -> BoxFuture<'_, Vec<String>> {
        Box::pin(self.read(move |c| ledger::expired_pending(c, now, limit)))
    }

    fn reservation<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Option<ReservationRecord>> {
        let id = id.to_owned();
        Box::pin(self.read(move |c| ledger::reservation(c, &id)))
    }

    fn pending_count(&self) -> BoxFuture<'_, i64> {
        Box::pin(self.read(ledger::pending_count))
    }

    fn usage(&self, f: UsageFilter) -> BoxFuture<'_, Vec<UsageRow>> {
        Box::pin(self.read(move |c| ledger::usage(c, &f)))
    }

    fn usage_buckets(&self, f: UsageFilter, bucket_ms: i64) -> BoxFuture<'_, Vec<UsageBucket>> {
        Box::pin(self.read(move |c| ledger::usage_buckets(c, &f, bucket_ms)))
    }

    fn account_sums(&self) -> BoxFuture<'_, Vec<AccountSums>> {
        Box::pin(self.read(ledger::account_sums))
    }

    fn conversation<'a>(
        &'a self,
        account: &'a str,
        agent_id: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, Option<ConversationRecord>> {
        let (account, agent_id, id) = (account.to_owned(), agent_id.to_owned(), id.to_owned());
        Box::pin(self.read(move |c| transcripts::get_conversation(c, &account, &agent_id, &id)))
    }

    fn list_conversations<'a>(
        &'a self,
        account: &'a str,
        agent_id: &'a str,
        archived: Option<bool>,
        before: Option<After>,
        limit: u32,
    ) -> BoxFuture<'a, Vec<ConversationRecord>> {
        let (account, agent_id) = (account.to_owned(), agent_id.to_owned());
        Box::pin(self.read(move |c| {
            transcripts::list_conversations(
                c,
                &account,
                &agent_id,
                archived,
                before.as_ref(),
                limit,
            )
        }))
    }

    fn history<'a>(
        &'a self,
        account: &'a str,
        agent_id: &'a str,
        conversation_id: &'a str,
        before_seq: Option<i64>,
        limit: u32,
    ) -> BoxFuture<'a, Vec<MessageRecord>> {
        let (account, agent_id, conversation) = (
            account.to_owned(),
            agent_id.to_owned(),
            conversation_id.to_owned(),
        );
        Box::pin(self.read(move |c| {
            transcripts::history(c, &account, &agent_id, &conversation, before_seq, limit)
        }))
    }

    fn inbox<'a>(
        &'a self,
        account: &'a str,
        agent_id: &'a str,
        after: Option<After>,
        limit: u32,
    ) -> BoxFuture<'a, Vec<MessageRecord>> {
        let (account, agent_id) = (account.to_owned(), agent_id.to_owned());
        Box::pin(
            self.read(move |c| transcripts::inbox(c, &account, &agent_id, after.as_ref(), limit)),
        )
    }
}
