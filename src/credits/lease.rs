//! Credit lease mode (`[store] lease_credits`): a replica takes a block of credits from an
//! account's balance in one conditional statement, serves requests from it in memory, and
//! writes what they cost back in batches.
//!
//! Why it never overdraws: a lease is taken from the committed balance (`balance >= taken`,
//! in the same statement as the lease row), so what all replicas can spend is at most what the
//! account held. Exactly once: a request's reservation and settlement happen under this
//! process's lock on its lease; the batch that posts charges also lowers the lease's amount,
//! in one transaction.
//!
//! Lifetime. Every sync (each quarter of `lease_timeout_s`) posts the charges so far and
//! pushes the lease's expiry to now + timeout. A replica serves from a lease only within half
//! a timeout of its last successful sync, so it stops on its own well before any other
//! replica may take the lease back. On shutdown the rest returns to the balance; a crashed
//! replica's lease returns when it expires (recovery, on any replica). Charges a crashed
//! replica had not yet synced are lost in the customer's favour: at most one sync interval.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use dashmap::DashMap;

use crate::store::{now_ms, LeaseTake, LeaseTaken, LeaseUsage, Store, StoreError, UnixMs};

/// Lease settings.
#[derive(Debug, Clone, Copy)]
pub struct LeaseConfig {
    /// Millicredits taken at once (more when one request needs more).
    pub block: i64,
    pub timeout: Duration,
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[derive(Default)]
struct LeaseState {
    /// The lease row; `None` until one is taken (or after it was lost).
    id: Option<String>,
    /// Held and not reserved by a request.
    available: i64,
    /// Charges settled since the last sync, per (key, agent): (requests, millicredits).
    unsynced: HashMap<(String, String), (i64, i64)>,
    /// Serve from the lease only before this instant (renewed by each sync).
    valid_until: UnixMs,
}

/// One account's lease in this process.
pub struct LeaseAccount {
    account: String,
    state: Mutex<LeaseState>,
    /// One top-up or sync at a time per account.
    io: tokio::sync::Mutex<()>,
}

impl LeaseAccount {
    fn lock(&self) -> std::sync::MutexGuard<'_, LeaseState> {
        // A panic while holding the lock leaves plain numbers behind; keep going.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes `amount` from the lease if it holds it and is still valid.
    fn try_take(&self, amount: i64, now: UnixMs) -> bool {
        let mut s = self.lock();
        if s.id.is_some() && now < s.valid_until && s.available >= amount {
            s.available -= amount;
            true
        } else {
            false
        }
    }

    /// A request's end: `charge` of its `reserved` is spent, the rest returns to the lease.
    pub(crate) fn settle(&self, reserved: i64, charge: i64, key_id: &str, agent_id: &str) {
        let charge = charge.clamp(0, reserved);
        let mut s = self.lock();
        s.available += reserved - charge;
        let e = s
            .unsynced
            .entry((key_id.to_owned(), agent_id.to_owned()))
            .or_insert((0, 0));
        e.0 += 1;
        e.1 += charge;
    }

    /// What is held but not reserved (millicredits).
    pub fn available(&self) -> i64 {
        self.lock().available
    }
}

/// The leases of this process, one per account.
pub struct LeaseBook {
    store: Store,
    cfg: LeaseConfig,
    holder: String,
    accounts: DashMap<String, Arc<LeaseAccount>>,
}

/// What a lease reservation found.
pub enum LeaseAdmit {
    Reserved(Arc<LeaseAccount>),
    /// Neither the lease nor the balance hold `amount`; `balance` is what is left in all.
    Insufficient {
        balance: i64,
    },
}

impl LeaseBook {
    pub fn new(store: Store, cfg: LeaseConfig) -> Arc<LeaseBook> {
        let book = Arc::new(LeaseBook {
            store,
            cfg,
            holder: uuid::Uuid::new_v4().to_string(),
            accounts: DashMap::new(),
        });
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(sync_loop(Arc::downgrade(&book), cfg.timeout / 4));
        }
        book
    }

    fn account(&self, account: &str) -> Arc<LeaseAccount> {
        if let Some(a) = self.accounts.get(account) {
            return Arc::clone(a.value());
        }
        Arc::clone(
            self.accounts
                .entry(account.to_owned())
                .or_insert_with(|| {
                    Arc::new(LeaseAccount {
                        account: account.to_owned(),
                        state: Mutex::new(LeaseState::default()),
                        io: tokio::sync::Mutex::new(()),
                    })
                })
                .value(),
        )
    }

    /// Reserves `amount` millicredits from the account's lease, topping the lease up from the
    /// balance when it runs short.
    pub async fn reserve(&self, account: &str, amount: i64) -> Result<LeaseAdmit, StoreError> {
        let acct = self.account(account);
        if acct.try_take(amount, now_ms()) {
            return Ok(LeaseAdmit::Reserved(acct));
        }
        let _io = acct.io.lock().await;
        // Another request may have topped up (or renewed) while this one waited.
        if acct.try_take(amount, now_ms()) {
            return Ok(LeaseAdmit::Reserved(Arc::clone(&acct)));
        }
        // Renew first if the lease is past its validity (a stalled sync), so that what it
        // holds is still ours.
        let expired = {
            let s = acct.lock();
            s.id.is_some() && now_ms() >= s.valid_until
        };
        if expired {
            self.sync_locked(&acct).await?;
        }
        // Twice at most: a lease found lost is replaced by a new one.
        for _ in 0..2 {
            let (id, create) = {
                let s = acct.lock();
                match &s.id {
                    Some(id) => (id.clone(), false),
                    None => (uuid::Uuid::new_v4().to_string(), true),
                }
            };
            let started = now_ms();
            let want = self.cfg.block.max(amount);
            let taken = self
                .store
                .lease_take(LeaseTake {
                    lease_id: id.clone(),
                    account: account.to_owned(),
                    holder: self.holder.clone(),
                    amount: want,
                    create,
                    now: started,
                    expires_at: started.saturating_add(ms(self.cfg.timeout)),
                })
                .await?;
            let mut s = acct.lock();
            let LeaseTaken::Taken {
                taken,
                balance_after,
            } = taken
            else {
                // Taken back by recovery (this replica stalled past the timeout): what it
                // held is no longer ours.
                tracing::warn!(%account, lease = %id, "credit lease lost; starting a new one");
                *s = LeaseState::default();
                continue;
            };
            if create {
                if taken == 0 {
                    return Ok(LeaseAdmit::Insufficient {
                        balance: balance_after,
                    });
                }
                s.id = Some(id);
            }
            if taken > 0 {
                s.valid_until = started.saturating_add(ms(self.cfg.timeout) / 2);
            }
            s.available += taken;
            if s.available >= amount && started < s.valid_until {
                s.available -= amount;
                drop(s);
                return Ok(LeaseAdmit::Reserved(Arc::clone(&acct)));
            }
            return Ok(LeaseAdmit::Insufficient {
                balance: s.available + balance_after,
            });
        }
        Ok(LeaseAdmit::Insufficient { balance: 0 })
    }

    /// Posts the charges settled so far and renews the lease (caller holds `io`).
    async fn sync_locked(&self, acct: &LeaseAccount) -> Result<(), StoreError> {
        let (id, usage) = {
            let mut s = acct.lock();
            let Some(id) = s.id.clone() else {
                return Ok(());
            };
            let usage: Vec<LeaseUsage> = s
                .unsynced
                .drain()
                .map(|((key_id, agent_id), (requests, charged))| LeaseUsage {
                    key_id,
                    agent_id,
                    requests,
                    charged,
                })
                .collect();
            (id, usage)
        };
        let started = now_ms();
        let expires_at = started.saturating_add(ms(self.cfg.timeout));
        match self
            .store
            .lease_sync(&id, &acct.account, &usage, started, expires_at)
            .await
        {
            Ok(true) => {
                let mut s = acct.lock();
                s.valid_until = started.saturating_add(ms(self.cfg.timeout) / 2);
                Ok(())
            }
            Ok(false) => {
                tracing::warn!(account = %acct.account, lease = %id, "credit lease lost at sync");
                *acct.lock() = LeaseState::default();
                Ok(())
            }
            Err(e) => {
                // Put the usage back: the next sync posts it.
                let mut s = acct.lock();
                for u in usage {
                    let e = s.unsynced.entry((u.key_id, u.agent_id)).or_insert((0, 0));
                    e.0 += u.requests;
                    e.1 += u.charged;
                }
                Err(e)
            }
        }
    }

    /// Syncs every lease of this process.
    pub async fn sync_all(&self) {
        let accounts: Vec<Arc<LeaseAccount>> = self
            .accounts
            .iter()
            .map(|e| Arc::clone(e.value()))
            .collect();
        for acct in accounts {
            let _io = acct.io.lock().await;
            if let Err(e) = self.sync_locked(&acct).await {
                tracing::warn!(account = %acct.account, error = %e, "credit lease sync failed");
            }
        }
    }

    /// Posts what was used and returns the rest of every lease to its account (shutdown).
    pub async fn release_all(&self) -> Result<i64, StoreError> {
        let mut returned = 0;
        let accounts: Vec<Arc<LeaseAccount>> = self
            .accounts
            .iter()
            .map(|e| Arc::clone(e.value()))
            .collect();
        for acct in accounts {
            let _io = acct.io.lock().await;
            self.sync_locked(&acct).await?;
            let id = acct.lock().id.take();
            if let Some(id) = id {
                returned += self.store.lease_release(&id).await?;
                let mut s = acct.lock();
                s.available = 0;
                s.valid_until = 0;
            }
        }
        Ok(returned)
    }
}

async fn sync_loop(book: Weak<LeaseBook>, every: Duration) {
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(50)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(book) = book.upgrade() else { return };
        book.sync_all().await;
    }
}
