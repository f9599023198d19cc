//! How ops run: the dispatcher thread that takes writes off the queue and runs each as a task
//! on the backend's runtime, and the retry policy of every op.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use deadpool_postgres::Object;

use super::super::transcripts::{ConversationOutcome, ConversationWrite};
use super::super::{Msg, NewReservation, ReserveOutcome, StoreError, WriteOp};
use super::{batch, ledger, pg_err, transcripts, Shared};

/// How long the dispatcher waits for in-flight writes when the store is dropped.
const DRAIN_LIMIT: Duration = Duration::from_secs(10);

/// When a failed op may be tried again.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Retry {
    /// The op is safe to repeat (conditional on state): retry transient failures a few times.
    Idempotent,
    /// Fire-and-forget: retry transient failures for as long as the process lives.
    Forever,
    /// Repeating could apply it twice (a grant): retry only when no connection was obtained.
    ConnectOnly,
}

fn transient(e: &StoreError) -> bool {
    matches!(e, StoreError::Unavailable(_))
}

/// Gets a connection and runs `f` on it, retrying transient failures as `mode` allows.
pub(crate) async fn attempt<T, F, Fut>(sh: &Shared, mode: Retry, f: F) -> Result<T, StoreError>
where
    F: Fn(Object) -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
{
    let mut delay = Duration::from_millis(10);
    let mut tries = 0u32;
    loop {
        let (result, connected) = match sh.pool.get().await {
            Ok(c) => (f(c).await, true),
            Err(e) => (Err(StoreError::Unavailable(e.to_string())), false),
        };
        let again = match &result {
            Err(e) if transient(e) => match mode {
                Retry::Idempotent => tries < 5,
                Retry::Forever => tries < 5 || !sh.stopping.load(Ordering::Acquire),
                Retry::ConnectOnly => !connected && tries < 5,
            },
            _ => false,
        };
        if !again {
            return result;
        }
        if let Err(e) = &result {
            tracing::warn!(error = %e, tries, "postgres store op failed; retrying");
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(1));
        tries += 1;
    }
}

// ---- the dispatcher -----------------------------------------------------------------------

/// Counts the writes in flight so that `Flush` and shutdown can wait for them.
struct InFlight {
    count: Mutex<usize>,
    idle: Condvar,
}

pub(crate) struct InFlightGuard(Arc<InFlight>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        if let Ok(mut n) = self.0.count.lock() {
            *n -= 1;
            if *n == 0 {
                self.0.idle.notify_all();
            }
        }
    }
}

impl InFlight {
    fn start(self: &Arc<Self>) -> InFlightGuard {
        if let Ok(mut n) = self.count.lock() {
            *n += 1;
        }
        InFlightGuard(Arc::clone(self))
    }

    /// Waits until nothing is in flight (or `limit` passed). Returns whether it is idle.
    fn wait_idle(&self, limit: Duration) -> bool {
        let Ok(n) = self.count.lock() else {
            return false;
        };
        match self.idle.wait_timeout_while(n, limit, |n| *n > 0) {
            Ok((n, _)) => *n == 0,
            Err(_) => false,
        }
    }
}

/// Takes ops off the queue and runs each as its own task; `Flush` waits for every op queued
/// before it. Ops for one reservation never race: the ledger only settles a reservation after
/// its reserve has answered, and settling is conditional anyway.
pub(crate) fn dispatch_loop(rx: Receiver<Msg>, rt: tokio::runtime::Handle, sh: Arc<Shared>) {
    let inflight = Arc::new(InFlight {
        count: Mutex::new(0),
        idle: Condvar::new(),
    });
    // An answer's reserve, settle and exchange are group-committed by the batcher
    // (`batch.rs`); every other op runs as its own task.
    let (batch_tx, batch_rx) = tokio::sync::mpsc::unbounded_channel();
    rt.spawn(batch::batch_loop(batch_rx, Arc::clone(&sh)));
    let spawn = |op: WriteOp| {
        let guard = inflight.start();
        if batch::batchable(&op) {
            if let Err(tokio::sync::mpsc::error::SendError((op, guard))) =
                batch_tx.send((op, guard))
            {
                let sh = Arc::clone(&sh);
                rt.spawn(async move {
                    exec(&sh, op).await;
                    drop(guard);
                });
            }
            return;
        }
        let sh = Arc::clone(&sh);
        rt.spawn(async move {
            exec(&sh, op).await;
            drop(guard);
        });
    };
    loop {
        match rx.recv() {
            Ok(Msg::Op(WriteOp::Flush(done))) => {
                // Callbacks of the ops waited for may queue more ops (a void); those come
                // after this flush in the queue, as they would with SQLite.
                inflight.wait_idle(Duration::MAX);
                done(Ok(()));
            }
            Ok(Msg::Op(op)) => spawn(op),
            Ok(Msg::Shutdown) | Err(_) => {
                while let Ok(msg) = rx.try_recv() {
                    match msg {
                        Msg::Op(WriteOp::Flush(done)) => done(Ok(())),
                        Msg::Op(op) => spawn(op),
                        Msg::Shutdown => {}
                    }
                }
                sh.stopping.store(true, Ordering::Release);
                if !inflight.wait_idle(DRAIN_LIMIT) {
                    tracing::error!(
                        "postgres store closing with writes in flight; recovery will settle them"
                    );
                }
                return;
            }
        }
    }
}

pub(crate) async fn exec(sh: &Shared, op: WriteOp) {
    match op {
        WriteOp::Reserve(r, done) => done(reserve_retrying(sh, &r).await),
        WriteOp::Settle(s, done) => {
            // Money is never dropped: retried until it lands, whoever waits for it.
            let s = &s;
            let r = attempt(sh, Retry::Forever, |c| async move {
                ledger::settle(&c, s).await
            })
            .await;
            match done {
                Some(done) => done(r),
                None => {
                    if let Err(e) = r {
                        tracing::error!(request_id = %s.id, error = %e, "settlement failed");
                    }
                }
            }
        }
        WriteOp::Extend {
            id,
            expires_at,
            done,
        } => {
            let mode = if done.is_none() {
                Retry::Forever
            } else {
                Retry::Idempotent
            };
            let id = &id;
            let r = attempt(sh, mode, |c| async move {
                let st = c
                    .prepare_cached(
                        "UPDATE reservations SET expires_at = $1 WHERE id = $2 AND state = 'pending'",
                    )
                    .await
                    .map_err(pg_err)?;
                Ok(c.execute(&st, &[&expires_at, id]).await.map_err(pg_err)? == 1)
            })
            .await;
            if let Some(done) = done {
                done(r);
            }
        }
        WriteOp::Grant(g, done) => {
            let g = &g;
            done(
                attempt(sh, Retry::ConnectOnly, |c| async move {
                    ledger::grant(c, g).await
                })
                .await,
            )
        }
        WriteOp::InsertKey(k, done) => {
            let k = &k;
            done(
                attempt(sh, Retry::ConnectOnly, |c| async move {
                    ledger::insert_key(c, k).await
                })
                .await,
            )
        }
        WriteOp::RevokeKey {
            public_id,
            now,
            done,
        } => {
            let id = &public_id;
            done(
                attempt(sh, Retry::Idempotent, |c| async move {
                    ledger::revoke_key(c, id, now).await
                })
                .await,
            )
        }
        WriteOp::IdemBegin(claim, done) => {
            let claim = &claim;
            done(
                attempt(sh, Retry::ConnectOnly, |c| async move {
                    ledger::idem_begin(c, claim).await
                })
                .await,
            )
        }
        WriteOp::IdemComplete(comp, done) => {
            let comp = &comp;
            done(
                attempt(sh, Retry::Idempotent, |c| async move {
                    ledger::idem_complete(&c, comp).await
                })
                .await,
            )
        }
        WriteOp::IdemAbort {
            account,
            idem_key,
            owner,
            done,
        } => {
            let mode = if done.is_none() {
                Retry::Forever
            } else {
                Retry::Idempotent
            };
            let (a, k, o) = (&account, &idem_key, &owner);
            let r = attempt(sh, mode, |c| async move {
                let st = c
                    .prepare_cached(
                        "DELETE FROM idempotency
                         WHERE account = $1 AND idem_key = $2 AND owner = $3 AND state = 'in_flight'",
                    )
                    .await
                    .map_err(pg_err)?;
                Ok(c.execute(&st, &[a, k, o]).await.map_err(pg_err)? == 1)
            })
            .await;
            if let Some(done) = done {
                done(r);
            }
        }
        WriteOp::IdemExpire {
            created_before,
            now,
            limit,
            done,
        } => {
            let (before, now, limit) = (&created_before, &now, &limit);
            done(
                attempt(sh, Retry::Idempotent, |c| async move {
                    let st = c
                        .prepare_cached(
                            "DELETE FROM idempotency WHERE ctid IN (
                                 SELECT ctid FROM idempotency
                                 WHERE created_at < $1 AND (state = 'complete' OR locked_until < $2)
                                 LIMIT $3)",
                        )
                        .await
                        .map_err(pg_err)?;
                    c.execute(&st, &[before, now, limit]).await.map_err(pg_err)
                })
                .await,
            )
        }
        WriteOp::Conversation(w @ ConversationWrite::Record(_), done) => {
            done(record_retrying(sh, &w, false).await)
        }
        WriteOp::Conversation(w, done) => {
            let w = &w;
            done(
                attempt(sh, Retry::ConnectOnly, |c| async move {
                    transcripts::apply(c, w).await
                })
                .await,
            )
        }
        WriteOp::Flush(done) => done(Ok(())),
        WriteOp::Probe(done) => done(
            attempt(sh, Retry::Idempotent, |c| async move {
                c.execute(PROBE_SQL, &[&super::super::now_ms()])
                    .await
                    .map_err(pg_err)
                    .map(drop)
            })
            .await,
        ),
    }
}

/// Runs an op of a batch whose `COMMIT` went unanswered: it may have committed. A reserve
/// that finds its own row reports it reserved; a settle is conditional on `pending` anyway; an
/// exchange whose message ids already exist was recorded.
pub(crate) async fn exec_maybe_committed(sh: &Shared, op: WriteOp) {
    match op {
        WriteOp::Reserve(r, done) => done(reserve_retrying_from(sh, &r, true).await),
        WriteOp::Conversation(w @ ConversationWrite::Record(_), done) => {
            done(record_retrying(sh, &w, true).await)
        }
        op => exec(sh, op).await,
    }
}

/// An exchange, retried like a reserve: a transient failure (a deadlock, a serialization
/// failure, a lost connection) rolled it back or may have committed it; its message ids are
/// new, so a retry that finds them taken (`tried`: an earlier attempt may have committed) finds
/// its own commit.
async fn record_retrying(
    sh: &Shared,
    w: &ConversationWrite,
    tried: bool,
) -> Result<ConversationOutcome, StoreError> {
    let tried = AtomicBool::new(tried);
    let tried = &tried;
    attempt(sh, Retry::Idempotent, |c| async move {
        let again = tried.swap(true, Ordering::AcqRel);
        match transcripts::apply(c, w).await {
            Err(StoreError::Duplicate(_)) if again => Ok(ConversationOutcome::Recorded),
            other => other,
        }
    })
    .await
}

/// `/readyz`'s write: one counter row, overwritten.
const PROBE_SQL: &str = "INSERT INTO counters (name, value) VALUES ('ready_probe', $1)
     ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value";

/// A reserve whose answer was lost (the connection broke after the commit) is retried; if the
/// retry finds its own row, it did commit.
async fn reserve_retrying(sh: &Shared, r: &NewReservation) -> Result<ReserveOutcome, StoreError> {
    reserve_retrying_from(sh, r, false).await
}

/// [`reserve_retrying`], `tried`: an earlier attempt may have committed.
async fn reserve_retrying_from(
    sh: &Shared,
    r: &NewReservation,
    tried: bool,
) -> Result<ReserveOutcome, StoreError> {
    let tried = AtomicBool::new(tried);
    let tried = &tried;
    let out = attempt(sh, Retry::Idempotent, |c| async move {
        let again = tried.swap(true, Ordering::AcqRel);
        match ledger::reserve(&c, r).await {
            Err(StoreError::Duplicate(_)) if again => {
                let mine = ledger::reservation(&c, &r.id).await?.is_some_and(|x| {
                    x.account == r.account && x.reserved == r.reserved && x.state == "pending"
                });
                if !mine {
                    return Err(StoreError::Duplicate("reservation id"));
                }
                let balance = ledger::balance(&c, &r.account).await?.unwrap_or(0);
                Ok(ReserveOutcome::Reserved {
                    balance_after: balance,
                })
            }
            other => other,
        }
    })
    .await;
    out
}
