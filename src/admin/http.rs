//! The admin HTTP API (`/admin/v1/…`), a plain function from request to response.
//!
//! Routes: `POST|GET /admin/v1/keys`, `POST /admin/v1/keys/{id}/revoke`,
//! `GET /admin/v1/accounts`, `POST|GET /admin/v1/accounts/{id}/credits`,
//! `GET /admin/v1/usage?account=&key=&agent=&since=&until=`, `GET /admin/v1/usage/hourly?account=&hours=`.
//! Every route needs `Authorization: Bearer <admin_token>` (compared in constant time).
//! Revoking through a context built on the gateway's own [`Store`] invalidates its key cache at once.

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};
use subtle::ConstantTimeEq;

use super::{key_json, usage_json, AdminError};
use crate::auth::{self, KeyKind, KeyLimits, KeySpecError, NewKeySpec, Scopes};
use crate::credits::{from_milli, CreditError, Ledger};
use crate::fronts::ApiError;
use crate::store::time::{format_rfc3339, parse_rfc3339};
use crate::store::{now_ms, RevokeOutcome, Store, UsageFilter};

/// What the admin API needs.
#[derive(Clone)]
pub struct AdminCtx {
    ledger: Ledger,
    admin_token: String,
}

impl AdminCtx {
    /// An empty token disables the API (every request gets 401).
    pub fn new(ledger: Ledger, admin_token: impl Into<String>) -> AdminCtx {
        AdminCtx {
            ledger,
            admin_token: admin_token.into(),
        }
    }

    pub(crate) fn store(&self) -> &Store {
        self.ledger.store()
    }

    /// Whether `req` carries the admin token.
    pub fn authorized(&self, req: &Request<Bytes>) -> bool {
        let Some(value) = req.headers().get(header::AUTHORIZATION) else {
            return false;
        };
        let Some(token) = value
            .as_bytes()
            .strip_prefix(b"Bearer ")
            .or_else(|| value.as_bytes().strip_prefix(b"bearer "))
        else {
            return false;
        };
        !self.admin_token.is_empty() && bool::from(token.ct_eq(self.admin_token.as_bytes()))
    }
}

/// A failed admin request: the same error body as the fronts' (`{"error":{code,message,details}}`).
fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", message)
}

impl From<AdminError> for ApiError {
    fn from(e: AdminError) -> ApiError {
        match e {
            AdminError::Input(m) | AdminError::Config(m) => bad_request(m),
            AdminError::KeyNotFound(id) => ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("key {id} not found"),
            ),
            AdminError::Key(KeySpecError::Store(e)) | AdminError::Store(e) => internal(&e),
            AdminError::Key(e) => bad_request(e.to_string()),
            AdminError::Credits(CreditError::InvalidAmount(m)) => bad_request(m),
            AdminError::Credits(e) => internal(&e),
            AdminError::Io(e) => internal(&e),
        }
    }
}

fn internal(e: &dyn std::fmt::Display) -> ApiError {
    tracing::error!(error = %e, "admin API failure");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "internal error",
    )
}

/// The admin API's error body (the fronts' [`ApiError`] body).
pub(crate) fn error_json(code: &'static str, message: &str) -> Value {
    let e = ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, code, message);
    serde_json::from_slice(&e.body()).unwrap_or(Value::Null)
}

/// 401 with `WWW-Authenticate: Bearer`.
pub(crate) fn unauthorized() -> Response<Bytes> {
    error_response(
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong admin token",
        )
        .with_header(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        ),
    )
}

pub(crate) fn respond(status: StatusCode, body: &Value) -> Response<Bytes> {
    let mut resp = Response::new(Bytes::from(body.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    resp
}

fn error_response(e: ApiError) -> Response<Bytes> {
    let mut resp = Response::new(e.body());
    *resp.status_mut() = e.status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    for (name, value) in e.headers {
        resp.headers_mut().append(name, value);
    }
    resp
}

/// Handles one admin request.
pub async fn handle(req: Request<Bytes>, ctx: &AdminCtx) -> Response<Bytes> {
    if !ctx.authorized(&req) {
        return unauthorized();
    }
    match route(&req, ctx).await {
        Ok((status, body)) => respond(status, &body),
        Err(e) => error_response(e),
    }
}

async fn route(req: &Request<Bytes>, ctx: &AdminCtx) -> Result<(StatusCode, Value), ApiError> {
    let path = req.uri().path();
    let rest = path
        .strip_prefix("/admin/v1/")
        .ok_or_else(|| not_found(path))?;
    let segments: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
    let method = req.method();
    match (segments.as_slice(), method) {
        (["keys"], &Method::POST) => create_key(req.body(), ctx).await,
        (["keys"], &Method::GET) => list_keys(req, ctx).await,
        (["keys", id, "revoke"], &Method::POST) => revoke(id, ctx).await,
        (["accounts", id, "credits"], &Method::POST) => grant(id, req.body(), ctx).await,
        (["accounts", id, "credits"], &Method::GET) => balance(id, ctx).await,
        (["usage"], &Method::GET) => usage(req, ctx).await,
        (["usage", "hourly"], &Method::GET) => usage_hourly(req, ctx).await,
        (["accounts"], &Method::GET) => accounts(ctx).await,
        (
            ["keys"]
            | ["keys", _, "revoke"]
            | ["accounts"]
            | ["accounts", _, "credits"]
            | ["usage"]
            | ["usage", "hourly"],
            _,
        ) => Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{method} is not allowed on {path}"),
        )),
        _ => Err(not_found(path)),
    }
}

fn not_found(path: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no route for {path}"),
    )
}

fn parse_json<'a, T: Deserialize<'a>>(body: &'a Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        let mut err = bad_request("malformed JSON body");
        err.details = json!({ "reason": e.to_string() });
        err
    })
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ScopesField {
    List(Vec<String>),
    Text(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateKeyBody {
    account: String,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    scopes: Option<ScopesField>,
    #[serde(default)]
    agents: Option<Vec<String>>,
    #[serde(default)]
    expires_in_days: Option<u32>,
    #[serde(default)]
    rate_per_second: Option<f64>,
    #[serde(default)]
    rate_burst: Option<u32>,
    #[serde(default)]
    max_streams: Option<u32>,
}

async fn create_key(body: &Bytes, ctx: &AdminCtx) -> Result<(StatusCode, Value), ApiError> {
    let b: CreateKeyBody = parse_json(body)?;
    let kind: KeyKind = b
        .kind
        .as_deref()
        .unwrap_or("agent")
        .parse()
        .map_err(|e: auth::UnknownKind| bad_request(e.to_string()))?;
    let scopes: Scopes = match &b.scopes {
        None => Ok(Scopes::AGENTS_RUN),
        Some(ScopesField::Text(t)) => t.parse(),
        Some(ScopesField::List(l)) => l.join(",").parse(),
    }
    .map_err(|e| bad_request(e.to_string()))?;
    let spec = NewKeySpec {
        account: b.account,
        kind,
        scopes,
        agents: b.agents,
        expires_at: b
            .expires_in_days
            .map(|d| now_ms().saturating_add(i64::from(d).saturating_mul(86_400_000))),
        limits: KeyLimits {
            rate_per_second: b.rate_per_second,
            rate_burst: b.rate_burst,
            max_streams: b.max_streams,
        },
    };
    let (secret, info) = auth::create_key(ctx.store(), spec)
        .await
        .map_err(AdminError::from)?;
    let mut v = key_json(&info);
    v["key"] = Value::String(secret.expose().to_owned());
    Ok((StatusCode::CREATED, v))
}

/// Decodes `application/x-www-form-urlencoded` query pairs.
fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    fn decode(s: &str) -> String {
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < bytes.len() => {
                    let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                    match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                        Some(b) => {
                            out.push(b);
                            i += 2;
                        }
                        None => out.push(b'%'),
                    }
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(p), String::new()),
        })
        .collect()
}

fn query_param(req: &Request<Bytes>, name: &str) -> Option<String> {
    query_pairs(req.uri().query())
        .into_iter()
        .find(|(k, v)| k == name && !v.is_empty())
        .map(|(_, v)| v)
}

async fn list_keys(req: &Request<Bytes>, ctx: &AdminCtx) -> Result<(StatusCode, Value), ApiError> {
    let account = query_param(req, "account");
    let keys = auth::list_keys(ctx.store(), account.as_deref())
        .await
        .map_err(AdminError::from)?;
    let v: Vec<Value> = keys.iter().map(key_json).collect();
    Ok((StatusCode::OK, json!({ "keys": v })))
}

async fn revoke(id: &str, ctx: &AdminCtx) -> Result<(StatusCode, Value), ApiError> {
    match ctx
        .store()
        .revoke_key(id, now_ms())
        .await
        .map_err(AdminError::from)?
    {
        RevokeOutcome::Revoked | RevokeOutcome::AlreadyRevoked => {
            Ok((StatusCode::OK, json!({ "public_id": id, "revoked": true })))
        }
        RevokeOutcome::NotFound => Err(AdminError::KeyNotFound(id.to_owned()).into()),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantBody {
    credits: f64,
    #[serde(default)]
    memo: Option<String>,
}

async fn grant(
    account: &str,
    body: &Bytes,
    ctx: &AdminCtx,
) -> Result<(StatusCode, Value), ApiError> {
    if !auth::valid_account(account) {
        return Err(bad_request("invalid account id"));
    }
    let b: GrantBody = parse_json(body)?;
    let balance = ctx
        .ledger
        .grant(account, b.credits, b.memo.as_deref())
        .await
        .map_err(AdminError::from)?;
    Ok((
        StatusCode::OK,
        json!({ "account": account, "granted": b.credits, "balance": balance }),
    ))
}

async fn balance(account: &str, ctx: &AdminCtx) -> Result<(StatusCode, Value), ApiError> {
    let balance = ctx
        .ledger
        .balance(account)
        .await
        .map_err(AdminError::from)?;
    Ok((
        StatusCode::OK,
        json!({ "account": account, "balance": balance }),
    ))
}

async fn usage(req: &Request<Bytes>, ctx: &AdminCtx) -> Result<(StatusCode, Value), ApiError> {
    let time = |name: &str| -> Result<Option<i64>, ApiError> {
        query_param(req, name)
            .map(|v| {
                parse_rfc3339(&v)
                    .ok_or_else(|| bad_request(format!("{name}: not an RFC 3339 time")))
            })
            .transpose()
    };
    let filter = UsageFilter {
        account: query_param(req, "account"),
        key_id: query_param(req, "key"),
        agent_id: query_param(req, "agent"),
        since: time("since")?,
        until: time("until")?,
    };
    let (since, until) = (filter.since, filter.until);
    let rows = ctx.store().usage(filter).await.map_err(AdminError::from)?;
    let v: Vec<Value> = rows.iter().map(usage_json).collect();
    Ok((
        StatusCode::OK,
        json!({
            "usage": v,
            "since": since.map(format_rfc3339),
            "until": until.map(format_rfc3339),
        }),
    ))
}

/// `GET /admin/v1/accounts`: every account with its balance, credits granted, charged and
/// held by open reservations.
async fn accounts(ctx: &AdminCtx) -> Result<(StatusCode, Value), ApiError> {
    let sums = ctx.store().account_sums().await.map_err(AdminError::from)?;
    let v: Vec<Value> = sums
        .iter()
        .map(|a| {
            json!({
                "account": a.account,
                "balance": from_milli(a.balance),
                "granted": from_milli(a.granted),
                "charged": from_milli(a.posted),
                "pending": from_milli(a.pending),
            })
        })
        .collect();
    Ok((StatusCode::OK, json!({ "accounts": v })))
}

/// Longest window of `GET /admin/v1/usage/hourly`, in hours (31 days).
const MAX_HOURLY_WINDOW: u32 = 744;

/// `GET /admin/v1/usage/hourly?account=&key=&agent=&hours=24`: requests and credits charged
/// per agent and per hour over the last `hours` (default 24, at most 744), oldest first, each
/// hour with at least one request one entry per agent.
async fn usage_hourly(
    req: &Request<Bytes>,
    ctx: &AdminCtx,
) -> Result<(StatusCode, Value), ApiError> {
    const HOUR_MS: i64 = 3_600_000;
    let hours = match query_param(req, "hours") {
        None => 24,
        Some(h) => match h.parse::<u32>() {
            Ok(h @ 1..=MAX_HOURLY_WINDOW) => h,
            _ => {
                return Err(bad_request(format!(
                    "hours: a whole number from 1 to {MAX_HOURLY_WINDOW}"
                )))
            }
        },
    };
    let now = now_ms();
    // Whole hours: the current one and the `hours - 1` before it.
    let since = (now / HOUR_MS - i64::from(hours) + 1) * HOUR_MS;
    let filter = UsageFilter {
        account: query_param(req, "account"),
        key_id: query_param(req, "key"),
        agent_id: query_param(req, "agent"),
        since: Some(since),
        until: None,
    };
    let buckets = ctx
        .store()
        .usage_buckets(filter, HOUR_MS)
        .await
        .map_err(AdminError::from)?;
    let v: Vec<Value> = buckets
        .iter()
        .map(|b| {
            json!({
                "hour": format_rfc3339(b.start),
                "agent": b.agent_id,
                "requests": b.requests,
                "credits": from_milli(b.charged),
            })
        })
        .collect();
    Ok((
        StatusCode::OK,
        json!({ "hours": hours, "since": format_rfc3339(since), "buckets": v }),
    ))
}

#[cfg(test)]
mod tests {
    use super::query_pairs;

    #[test]
    fn query_decoding() {
        let p = query_pairs(Some(
            "a=1&since=2024-01-01T00%3A00%3A00Z&x=a+b&bad=%zz&t=%4",
        ));
        assert_eq!(p[0], ("a".into(), "1".into()));
        assert_eq!(p[1].1, "2024-01-01T00:00:00Z");
        assert_eq!(p[2].1, "a b");
        assert_eq!(p[3].1, "%zz");
        assert_eq!(p[4].1, "%4");
    }
}
