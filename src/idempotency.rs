//! `Idempotency-Key` claims as the store keeps them: claim a key for a request's body hash,
//! store its answer, release it, expire old records. Independent of credits: a replayed answer
//! charges nothing because the pipeline never reaches the ledger, not because the ledger knows.
//!
//! Depends only on `store`; `credits::Ledger` holds one for the pipeline
//! ([`crate::credits::Ledger::idempotency`]), and `proxy/idempotency.rs` turns its answers into
//! HTTP.

use std::time::Duration;

use bytes::Bytes;

use crate::store::{
    now_ms, IdemClaim, IdemCompletion, IdemOutcome, Store, StoreError, StoredResponse, UnixMs,
};

/// Answer to [`Idempotency::begin`].
#[derive(Debug)]
pub enum Begin {
    /// First use (or an abandoned attempt taken over): run the request, then `complete`.
    New(IdemToken),
    /// The same request is running: 409.
    InFlight,
    /// The same key was used with another body: 422.
    Conflict,
    /// Already answered: send this again, charge nothing.
    Replay {
        status: u16,
        content_type: String,
        body: Bytes,
    },
}

/// A claim on an idempotency key, to be completed (or aborted) once.
#[derive(Debug)]
pub struct IdemToken {
    account: String,
    idem_key: String,
    owner: String,
}

/// Idempotency records in a store, with their timeouts. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Idempotency {
    store: Store,
    /// An in-flight claim older than this is considered abandoned (its process crashed).
    timeout: Duration,
    /// A stored answer older than this is deleted (`[store] idempotency_ttl_s`).
    ttl: Duration,
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Idempotency {
    pub fn new(store: Store, timeout: Duration, ttl: Duration) -> Idempotency {
        Idempotency {
            store,
            timeout,
            ttl,
        }
    }

    /// Claims an idempotency key for a request with this body hash (hex SHA-256).
    pub async fn begin(
        &self,
        account: &str,
        idem_key: &str,
        body_sha256: &str,
    ) -> Result<Begin, StoreError> {
        let now = now_ms();
        let owner = uuid::Uuid::new_v4().to_string();
        let claim = IdemClaim {
            account: account.to_owned(),
            idem_key: idem_key.to_owned(),
            body_hash: body_sha256.to_owned(),
            owner: owner.clone(),
            now,
            locked_until: now.saturating_add(ms(self.timeout)),
        };
        Ok(match self.store.idem_begin(claim).await? {
            IdemOutcome::Claimed => Begin::New(IdemToken {
                account: account.to_owned(),
                idem_key: idem_key.to_owned(),
                owner,
            }),
            IdemOutcome::InFlight => Begin::InFlight,
            IdemOutcome::Conflict => Begin::Conflict,
            IdemOutcome::Replay(r) => Begin::Replay {
                status: r.status,
                content_type: r.content_type,
                body: Bytes::from(r.body),
            },
        })
    }

    /// Stores the answer under the claim; later retries replay it. Returns false if the claim
    /// was lost (taken over after the timeout).
    pub async fn complete(
        &self,
        token: IdemToken,
        status: u16,
        content_type: &str,
        body: &[u8],
    ) -> Result<bool, StoreError> {
        self.store
            .idem_complete(IdemCompletion {
                account: token.account,
                idem_key: token.idem_key,
                owner: token.owner,
                response: StoredResponse {
                    status,
                    content_type: content_type.to_owned(),
                    body: body.to_vec(),
                },
            })
            .await
    }

    /// Releases the claim without an answer (the request failed before doing anything that
    /// must not be repeated), so a retry runs again.
    pub async fn abort(&self, token: IdemToken) -> Result<bool, StoreError> {
        self.store
            .idem_abort(&token.account, &token.idem_key, &token.owner)
            .await
    }

    /// Deletes the records older than the TTL at `now` (their keys can then be used again); a
    /// request still running under its claim keeps it. Returns how many it deleted.
    pub async fn expire(&self, now: UnixMs) -> Result<u64, StoreError> {
        let before = now.saturating_sub(ms(self.ttl));
        self.store.expire_idempotency(before, now).await
    }
}
