//! `Idempotency-Key`: a retry with the same key and body is answered with the first answer and
//! not charged again; 409 while the first runs; 422 for the same key with another body.

use bytes::Bytes;
use http::StatusCode;
use sha2::{Digest, Sha256};

use crate::credits::Ledger;
use crate::fronts::ApiError;
use crate::idempotency::{Begin, IdemToken};

/// Largest answer kept for replay; a longer one is not replayable (the retry runs anew).
pub const MAX_REPLAY_BYTES: usize = 8 << 20;

/// What the pipeline does with a request that carries an `Idempotency-Key`.
pub enum Claim {
    /// Run it; the guard completes (or, dropped, releases) the key.
    Run(IdemGuard),
    /// Answer this again.
    Replay {
        status: StatusCode,
        content_type: String,
        body: Bytes,
    },
}

/// Holds a claimed key. Dropped without [`IdemGuard::complete`], it releases the key so a
/// retry may run (the request failed before an answer was given).
pub struct IdemGuard {
    ledger: Ledger,
    token: Option<IdemToken>,
}

/// Claims `key` for this account and request (`path` and body).
pub async fn claim(
    ledger: &Ledger,
    account: &str,
    key: &str,
    path: &str,
    body: &[u8],
) -> Result<Claim, ApiError> {
    if key.is_empty() || key.len() > 255 {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "Idempotency-Key must be 1 to 255 characters",
        ));
    }
    let mut hash = Sha256::new();
    hash.update(path.as_bytes());
    hash.update([0]);
    hash.update(body);
    let digest = hash.finalize();
    let hex = crate::auth::to_hex(&digest);
    let begun = ledger
        .idempotency()
        .begin(account, key, &hex)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "idempotency store unavailable");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the idempotency store is unavailable",
            )
        })?;
    match begun {
        Begin::New(token) => Ok(Claim::Run(IdemGuard {
            ledger: ledger.clone(),
            token: Some(token),
        })),
        Begin::InFlight => Err(ApiError::new(
            StatusCode::CONFLICT,
            "idempotency_in_flight",
            "a request with this Idempotency-Key is still running",
        )),
        Begin::Conflict => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency_key_reused",
            "this Idempotency-Key was used with another request body",
        )),
        Begin::Replay {
            status,
            content_type,
            body,
        } => Ok(Claim::Replay {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
            content_type,
            body,
        }),
    }
}

impl IdemGuard {
    /// Stores the answer for replay (in the background: the client already has it).
    pub fn complete(mut self, status: StatusCode, content_type: &'static str, body: Bytes) {
        let Some(token) = self.token.take() else {
            return;
        };
        let ledger = self.ledger.clone();
        spawn(async move {
            if let Err(e) = ledger
                .idempotency()
                .complete(token, status.as_u16(), content_type, &body)
                .await
            {
                tracing::warn!(error = %e, "idempotent answer not stored");
            }
        });
    }
}

impl Drop for IdemGuard {
    fn drop(&mut self) {
        if let Some(token) = self.token.take() {
            let ledger = self.ledger.clone();
            spawn(async move {
                if let Err(e) = ledger.idempotency().abort(token).await {
                    tracing::warn!(error = %e, "idempotency key not released");
                }
            });
        }
    }
}

fn spawn(f: impl std::future::Future<Output = ()> + Send + 'static) {
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        rt.spawn(f);
    }
}
