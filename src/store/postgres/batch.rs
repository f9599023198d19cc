//! Group commit for the writes every answer makes: its reservation, its settlement and its
//! exchange (conversation row, question, answer).
//!
//! Run one by one, each of these is its own transaction, and on a hot account every reserve and
//! every settle waits for the row lock held by the commits queued before it: one WAL flush and
//! several round trips per op, serialised on that row. The batcher instead takes whatever of
//! them is queued, sends their statements pipelined on one connection inside one transaction
//! and commits once: the account row is locked once per batch, the batch pays one commit, and
//! an answer's writes cost no round trip of their own.
//!
//! Lock order. A batch holds every lock it takes until its commit, and replicas commit batches
//! side by side, so two batches that took the same rows in opposite orders would deadlock
//! (`deadlock_timeout`, 1 s by default, then one of them is rolled back). Every batch therefore
//! takes its rows in one order: the reserves and settles first (account rows, sorted by
//! account), then the exchanges sorted by conversation (conversation rows; their messages'
//! foreign-key locks on the account are key-share locks, which the ledger's `FOR NO KEY
//! UPDATE` does not block). Exchanges of one conversation keep their queue order (their
//! positions follow it).
//!
//! Any failure inside a batch (a duplicate id, a deadlock all the same, a broken connection)
//! rolls the whole batch back and runs its ops again one by one on the ordinary path
//! (`runtime::exec`), so each op gets exactly the outcome and the retries it would have had
//! alone. The one ambiguity is a `COMMIT` whose answer was lost: then the ops are re-run as
//! possibly committed (a reserve that finds its own row reports it reserved, a settle is
//! conditional on `pending` anyway, an exchange whose message ids exist is recorded).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use deadpool_postgres::Transaction;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_postgres::Statement;

use super::super::transcripts::{ConversationOutcome, ConversationWrite, Exchange};
use super::super::{NewReservation, SettleRequest, StoreError, WriteOp, LINGER};
use super::runtime::{exec, exec_maybe_committed, InFlightGuard};
use super::{ledger, pg_err, transcripts, Shared};

/// Most ops one batch carries.
const MAX_BATCH: usize = 256;

/// Whether an op joins a batch.
pub(crate) fn batchable(op: &WriteOp) -> bool {
    matches!(
        op,
        WriteOp::Reserve(..)
            | WriteOp::Settle(..)
            | WriteOp::Conversation(ConversationWrite::Record(_), _)
    )
}

/// An op waiting for its batch, with the guard that keeps `Flush` and shutdown waiting for it.
pub(crate) type Queued = (WriteOp, InFlightGuard);

/// Takes whatever is queued (up to [`MAX_BATCH`]), commits it as one batch, repeats. One batch
/// at a time: what arrives meanwhile forms the next one. A batch of ops nobody waits for waits
/// up to [`LINGER`] for one that somebody does.
pub(crate) async fn batch_loop(mut rx: UnboundedReceiver<Queued>, sh: Arc<Shared>) {
    let mut ops = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut ops, MAX_BATCH).await > 0 {
        // Only ops nobody waits for (a stream's settlement): give the op somebody awaits that
        // usually follows (the next request's reservation) a moment to share the commit.
        if ops.iter().all(|(op, _)| op.may_linger()) {
            let room = MAX_BATCH - ops.len();
            let _ = tokio::time::timeout(LINGER, rx.recv_many(&mut ops, room)).await;
        }
        let batch = std::mem::replace(&mut ops, Vec::with_capacity(MAX_BATCH));
        run(&sh, batch).await;
    }
}

/// The statements of a batch, prepared (cached per connection) before it begins.
struct Prepared {
    reserve: Statement,
    settle: Statement,
    conversation: Statement,
    message: Statement,
    exchange: Statement,
}

/// Why a batch did not commit.
enum Failed {
    /// Nothing was committed: the ops run again one by one.
    RolledBack(StoreError),
    /// `COMMIT` was sent but its answer was lost: the ops run again as possibly committed.
    Unknown(StoreError),
}

async fn run(sh: &Arc<Shared>, mut batch: Vec<Queued>) {
    if batch.len() == 1 {
        // Nothing to share: the ordinary path (one statement, fewer round trips than a batch),
        // as its own task like any unbatched op.
        for (op, guard) in batch {
            let sh = Arc::clone(sh);
            tokio::spawn(async move {
                exec(&sh, op).await;
                drop(guard);
            });
        }
        return;
    }
    batch.sort_by(|(a, _), (b, _)| lock_order(a).cmp(&lock_order(b))); // stable
    let items: Option<Vec<Item<'_>>> = batch.iter().map(|(op, _)| Item::of(op)).collect();
    let result = match items {
        Some(items) => commit(sh, &items).await,
        None => Err(Failed::RolledBack(StoreError::Corrupt(
            "op not batchable".into(),
        ))),
    };
    match result {
        Ok(outcomes) => {
            for ((op, guard), out) in batch.into_iter().zip(outcomes) {
                answer(op, out);
                drop(guard);
            }
        }
        // Each op then runs as its own task, as unbatched ops do, so that retries while the
        // server is away do not hold up the next batch.
        Err(Failed::RolledBack(e)) => {
            // Rare (a duplicate id; a deadlock, which the lock order should rule out): worth
            // an operator's eye, since every op of the batch pays a second round.
            tracing::warn!(error = %e, ops = batch.len(), "ledger batch rolled back; ops run one by one");
            for (op, guard) in batch {
                let sh = Arc::clone(sh);
                tokio::spawn(async move {
                    exec(&sh, op).await;
                    drop(guard);
                });
            }
        }
        Err(Failed::Unknown(e)) => {
            tracing::warn!(error = %e, ops = batch.len(), "ledger batch commit unconfirmed; ops run again");
            for (op, guard) in batch {
                let sh = Arc::clone(sh);
                tokio::spawn(async move {
                    exec_maybe_committed(&sh, op).await;
                    drop(guard);
                });
            }
        }
    }
}

/// Where an op goes in its batch (see the module's "Lock order"): ledger ops by account, then
/// exchanges by conversation. A settle's account is not known here; a batch's settles are
/// nearly always of the accounts its reserves lock too.
fn lock_order(op: &WriteOp) -> (u8, &str, &str, &str) {
    match op {
        WriteOp::Reserve(r, _) => (0, &r.account, "", ""),
        WriteOp::Conversation(ConversationWrite::Record(x), _) => {
            (1, &x.account, &x.agent_id, &x.conversation_id)
        }
        _ => (0, "", "", ""),
    }
}

/// What one op of a committed batch produced.
enum Outcome {
    Reserve(super::super::ReserveOutcome),
    Settle(super::super::SettleOutcome),
    Recorded,
}

fn answer(op: WriteOp, out: Outcome) {
    let mismatch = || StoreError::Corrupt("batch outcome of another op".into());
    match op {
        WriteOp::Reserve(_, done) => done(match out {
            Outcome::Reserve(r) => Ok(r),
            _ => Err(mismatch()),
        }),
        WriteOp::Settle(_, Some(done)) => done(match out {
            Outcome::Settle(s) => Ok(s),
            _ => Err(mismatch()),
        }),
        WriteOp::Conversation(_, done) => done(match out {
            Outcome::Recorded => Ok(ConversationOutcome::Recorded),
            _ => Err(mismatch()),
        }),
        // A fire-and-forget settle, and nothing else is batched (`batchable`).
        _ => {}
    }
}

/// The data of a batched op (without its callback, which is not `Sync`).
#[derive(Clone, Copy)]
enum Item<'a> {
    Reserve(&'a NewReservation),
    Settle(&'a SettleRequest),
    Record(&'a Exchange),
}

impl<'a> Item<'a> {
    fn of(op: &'a WriteOp) -> Option<Item<'a>> {
        match op {
            WriteOp::Reserve(r, _) => Some(Item::Reserve(r)),
            WriteOp::Settle(s, _) => Some(Item::Settle(s)),
            WriteOp::Conversation(ConversationWrite::Record(x), _) => Some(Item::Record(x)),
            _ => None,
        }
    }
}

async fn commit(sh: &Shared, ops: &[Item<'_>]) -> Result<Vec<Outcome>, Failed> {
    let rolled = Failed::RolledBack;
    let mut c = sh
        .pool
        .get()
        .await
        .map_err(|e| rolled(StoreError::Unavailable(e.to_string())))?;
    let st = Prepared {
        reserve: prepare(&c, ledger::RESERVE_SQL).await?,
        settle: prepare(&c, ledger::SETTLE_SQL).await?,
        conversation: prepare(&c, transcripts::CONVERSATION_SQL).await?,
        message: prepare(&c, MESSAGE_SQL).await?,
        exchange: prepare(&c, EXCHANGE_SQL).await?,
    };
    let tx = c.transaction().await.map_err(|e| rolled(pg_err(e)))?;
    let outcomes = {
        let futures: Vec<Pin<Box<dyn Future<Output = _> + Send + '_>>> = ops
            .iter()
            .map(|op| {
                Box::pin(apply(&tx, &st, *op)) as Pin<Box<dyn Future<Output = _> + Send + '_>>
            })
            .collect();
        join_all(futures).await
    };
    let outcomes = outcomes
        .into_iter()
        .collect::<Result<Vec<_>, _>>()
        .map_err(rolled)?; // dropping `tx` rolls back
    match tx.commit().await {
        Ok(()) => Ok(outcomes),
        Err(e) => match pg_err(e) {
            e @ StoreError::Unavailable(_) => Err(Failed::Unknown(e)),
            e => Err(rolled(e)),
        },
    }
}

async fn prepare(c: &deadpool_postgres::Object, sql: &str) -> Result<Statement, Failed> {
    c.prepare_cached(sql)
        .await
        .map_err(|e| Failed::RolledBack(pg_err(e)))
}

/// One op's statements inside the batch's transaction.
async fn apply(tx: &Transaction<'_>, st: &Prepared, op: Item<'_>) -> Result<Outcome, StoreError> {
    match op {
        Item::Reserve(r) => {
            let row = tx
                .query_one(&st.reserve, &ledger::reserve_params(r))
                .await
                .map_err(pg_err)?;
            ledger::reserve_outcome(&row).map(Outcome::Reserve)
        }
        Item::Settle(s) => {
            let row = tx
                .query_opt(&st.settle, &[&s.id, &s.charge, &s.now, &s.expired_before])
                .await
                .map_err(pg_err)?;
            ledger::settle_outcome(row.as_ref()).map(Outcome::Settle)
        }
        Item::Record(x) => record(tx, st, x).await.map(|()| Outcome::Recorded),
    }
}

/// The conversation row, then its messages at the next positions of their conversation
/// (computed by the insert itself, so that two exchanges of one conversation in a batch follow
/// each other).
async fn record(tx: &Transaction<'_>, st: &Prepared, x: &Exchange) -> Result<(), StoreError> {
    tx.execute(&st.conversation, &transcripts::conversation_params(x))
        .await
        .map_err(pg_err)?;
    match (&x.user, &x.assistant) {
        // Both in one statement, so that no other exchange of the conversation pipelined in
        // the same batch takes a position between them.
        (Some(u), Some(a)) => {
            tx.execute(
                &st.exchange,
                &[
                    &x.account,
                    &x.agent_id,
                    &x.conversation_id,
                    &u.id,
                    &u.content,
                    &u.tool_calls,
                    &u.credits,
                    &u.created_at,
                    &u.truncated,
                    &u.parts,
                    &a.id,
                    &a.content,
                    &a.tool_calls,
                    &a.credits,
                    &a.created_at,
                    &a.truncated,
                    &a.parts,
                ],
            )
            .await
            .map_err(pg_err)?;
        }
        (Some(m), None) | (None, Some(m)) => {
            let role = if x.user.is_some() {
                "user"
            } else {
                "assistant"
            };
            tx.execute(
                &st.message,
                &[
                    &m.id,
                    &x.account,
                    &x.agent_id,
                    &x.conversation_id,
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
        (None, None) => {}
    }
    Ok(())
}

/// A message at the next position of its conversation.
const MESSAGE_SQL: &str = "INSERT INTO messages
         (id, account, agent_id, conversation_id, seq, role, content, tool_calls, credits,
          created_at, read_at, truncated, parts)
     SELECT $1::TEXT, $2::TEXT, $3::TEXT, $4::TEXT, COALESCE(MAX(seq), 0) + 1, $5::TEXT,
            $6::TEXT, $7::TEXT, $8::BIGINT, $9::BIGINT, NULL, $10::BOOLEAN, $11::TEXT
     FROM messages WHERE account = $2::TEXT AND agent_id = $3::TEXT AND conversation_id = $4::TEXT";

/// A question and its answer at the next two positions of their conversation.
const EXCHANGE_SQL: &str = "INSERT INTO messages
         (id, account, agent_id, conversation_id, seq, role, content, tool_calls, credits,
          created_at, read_at, truncated, parts)
     SELECT m.id, $1::TEXT, $2::TEXT, $3::TEXT, b.seq + m.n, m.role, m.content, m.tool_calls,
            m.credits, m.created_at, NULL, m.truncated, m.parts
     FROM (SELECT COALESCE(MAX(seq), 0) AS seq FROM messages
           WHERE account = $1::TEXT AND agent_id = $2::TEXT AND conversation_id = $3::TEXT) b,
          (VALUES (1, $4::TEXT, 'user', $5::TEXT, $6::TEXT, $7::BIGINT, $8::BIGINT, $9::BOOLEAN,
                   $10::TEXT),
                  (2, $11::TEXT, 'assistant', $12::TEXT, $13::TEXT, $14::BIGINT, $15::BIGINT,
                   $16::BOOLEAN, $17::TEXT))
          AS m (n, id, role, content, tool_calls, credits, created_at, truncated, parts)";

/// Polls every future until all are done (their statements go out pipelined on one
/// connection); outputs in order.
async fn join_all<'a, T>(mut futures: Vec<Pin<Box<dyn Future<Output = T> + Send + 'a>>>) -> Vec<T> {
    let mut outputs: Vec<Option<T>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, out) in futures.iter_mut().zip(outputs.iter_mut()) {
            if out.is_none() {
                match f.as_mut().poll(cx) {
                    Poll::Ready(v) => *out = Some(v),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}
