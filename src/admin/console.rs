//! The console (SPEC §12): its page, script and style sheet, embedded in the binary and served
//! at `/console/` on the admin listener, and the admin API endpoints that need the running
//! gateway rather than the store: `GET /admin/v1/agents` (price, health, open streams,
//! requests in the last hour) and `GET /admin/v1/fronts` (where the playground sends chats).

use std::collections::HashMap;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use serde_json::{json, Value};

use super::http::{error_json, respond, AdminCtx};
use crate::credits::from_milli;
use crate::metrics::AgentLabel;
use crate::proxy::Gateway;
use crate::store::{now_ms, UsageFilter};

const INDEX_HTML: &str = include_str!("console/index.html");
const APP_JS: &str = include_str!("console/app.js");
const APP_CSS: &str = include_str!("console/app.css");

/// Bytes of the console embedded in the binary (page, script, style sheet).
pub const EMBEDDED_BYTES: usize = INDEX_HTML.len() + APP_JS.len() + APP_CSS.len();

/// Nothing but the page itself: its own script and style, and `fetch` to the gateway's
/// listeners (another port, hence `http:`/`https:` in `connect-src`).
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self' http: https:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Whether `path` belongs to the console (`/console` or below).
pub fn is_console_path(path: &str) -> bool {
    path == "/console" || path.starts_with("/console/")
}

/// The console's files; `/console` redirects to `/console/`. No token needed: the page holds
/// no data, everything it shows comes from the admin API with the token the user signs in with.
pub fn asset(method: &Method, path: &str) -> Response<Bytes> {
    if method != Method::GET && method != Method::HEAD {
        let mut r = respond(
            StatusCode::METHOD_NOT_ALLOWED,
            &error_json("method_not_allowed", "use GET"),
        );
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let (body, content_type) = match path {
        "/console" => {
            let mut r = Response::new(Bytes::new());
            *r.status_mut() = StatusCode::PERMANENT_REDIRECT;
            r.headers_mut()
                .insert(header::LOCATION, HeaderValue::from_static("/console/"));
            return r;
        }
        "/console/" | "/console/index.html" => (INDEX_HTML, "text/html; charset=utf-8"),
        "/console/app.js" => (APP_JS, "text/javascript; charset=utf-8"),
        "/console/app.css" => (APP_CSS, "text/css; charset=utf-8"),
        _ => {
            return respond(
                StatusCode::NOT_FOUND,
                &error_json("not_found", &format!("no console file at {path}")),
            )
        }
    };
    let mut r = Response::new(Bytes::from_static(body.as_bytes()));
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    r
}

/// Whether `path` is one of the endpoints [`endpoint`] answers.
pub fn is_gateway_endpoint(path: &str) -> bool {
    matches!(
        path.trim_end_matches('/'),
        "/admin/v1/agents" | "/admin/v1/fronts"
    )
}

/// `GET /admin/v1/agents` and `GET /admin/v1/fronts` (admin token required).
/// `listeners` maps each configured listen address to the bound one.
pub async fn endpoint(
    req: &Request<Bytes>,
    ctx: &AdminCtx,
    gateway: &Gateway,
    listeners: &HashMap<SocketAddr, SocketAddr>,
) -> Response<Bytes> {
    if !ctx.authorized(req) {
        return super::http::unauthorized();
    }
    if req.method() != Method::GET {
        return respond(
            StatusCode::METHOD_NOT_ALLOWED,
            &error_json(
                "method_not_allowed",
                &format!("{} is not allowed on {}", req.method(), req.uri().path()),
            ),
        );
    }
    match req.uri().path().trim_end_matches('/') {
        "/admin/v1/agents" => match agents(ctx, gateway).await {
            Ok(v) => respond(StatusCode::OK, &v),
            Err(e) => {
                tracing::error!(error = %e, "admin API failure");
                respond(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &error_json("internal", "internal error"),
                )
            }
        },
        _ => respond(StatusCode::OK, &fronts(gateway, listeners)),
    }
}

/// Every agent of the config in force, with its price, health, open streams and the requests
/// it got in the last hour (from the ledger, so every replica's count).
async fn agents(ctx: &AdminCtx, gateway: &Gateway) -> Result<Value, crate::store::StoreError> {
    let snap = gateway.snapshot();
    let since = now_ms().saturating_sub(3_600_000);
    let rows = ctx
        .store()
        .usage(UsageFilter {
            since: Some(since),
            ..UsageFilter::default()
        })
        .await?;
    let mut last_hour: HashMap<&str, (i64, i64)> = HashMap::new();
    for r in &rows {
        let e = last_hour.entry(r.agent_id.as_str()).or_default();
        e.0 += r.requests;
        e.1 += r.charged;
    }
    let metrics = gateway.metrics();
    let list: Vec<Value> = snap
        .config()
        .agents()
        .iter()
        .map(|a| {
            let label = AgentLabel {
                agent: a.id.as_str().into(),
            };
            let open = metrics
                .agent_open_streams
                .get(&label)
                .map_or(0, |gauge| gauge.get());
            let (requests, charged) = last_hour.get(a.id.as_str()).copied().unwrap_or_default();
            json!({
                "id": a.id,
                "name": a.name,
                "upstream_api": a.upstream_api.as_str(),
                "enabled": a.enabled,
                "up": a.enabled && snap.agent_up(&a.id),
                "credits_per_message": a.credits.per_message,
                "max_usage_credits": a.credits.max_usage,
                "credits_per_1k_output_chars": a.credits.per_1k_output_chars,
                "credits_per_1k_input_tokens": a.credits.per_1k_input_tokens,
                "credits_per_1k_output_tokens": a.credits.per_1k_output_tokens,
                "open_streams": open,
                "requests_last_hour": requests,
                "credits_last_hour": from_milli(charged),
            })
        })
        .collect();
    Ok(json!({ "agents": list }))
}

/// The fronts of the config in force: API, prefix, stream format, whether a key is needed and
/// the address it listens on (as bound).
fn fronts(gateway: &Gateway, listeners: &HashMap<SocketAddr, SocketAddr>) -> Value {
    let snap = gateway.snapshot();
    let list: Vec<Value> = snap
        .config()
        .fronts()
        .iter()
        .map(|f| {
            let bound = listeners.get(&f.listen).copied().unwrap_or(f.listen);
            json!({
                "api": f.api.as_str(),
                "prefix": f.prefix,
                "format": f.format.as_str(),
                "require_key": f.require_key,
                "listen": bound.to_string(),
                "tls": snap.config().server().tls.is_some(),
            })
        })
        .collect();
    json!({ "fronts": list })
}
