//! Listeners: the accept loop, hyper-util's auto builder (HTTP/1.1 and h2c, or TLS with ALPN
//! `h2`/`http/1.1`), and graceful shutdown with a drain timeout.

mod conn;
mod parse_errors;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use conn::{Activity, ConnLimits, Throttled, Tracked};
use parse_errors::ErrorBodies;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};

use crate::admin::{self, console, http::AdminCtx};
use crate::app::App;
use crate::auth::{self, KeyKind, KeyLimits, NewKeySpec, Scopes};
use crate::config::{Config, StoreUrl, TlsConfig};
use crate::metrics::Metrics;
use crate::proxy::{Gateway, Policy};
use crate::reload::Reloader;

/// After the drain timeout, how long the ended streams and requests get to write their last
/// bytes before the process may exit.
const END_FLUSH: Duration = Duration::from_secs(1);

/// Largest admin API request body.
const ADMIN_BODY_LIMIT: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("TLS: {0}")]
    Tls(String),
    #[error("{0}")]
    Setup(String),
}

/// A started gateway: its bound addresses and the handle that stops it.
pub struct Running {
    /// Keys, ledger and limits: shared with the admin surface (and tests).
    pub policy: Arc<Policy>,
    /// Configured listen address → the address actually bound (they differ for port 0).
    pub addrs: HashMap<SocketAddr, SocketAddr>,
    /// Applies new configs (SIGHUP, file changes, tests).
    pub reloader: Reloader,
    stop_accepting: CancellationToken,
    streams_end: crate::proxy::Cutoff,
    tasks: JoinSet<()>,
    /// The connections of the main and front listeners.
    conns: TaskTracker,
    /// Asks every connection to close once its request in flight is answered.
    drain: CancellationToken,
    /// The admin listener serves on through the drain (metrics, `/readyz` saying "draining").
    /// (A `JoinSet`, so that dropping `Running` without a shutdown stops it too.)
    admin: Option<(JoinSet<()>, CancellationToken)>,
}

impl Running {
    /// The bound address of the main listener.
    pub fn main_addr(&self, config: &Config) -> SocketAddr {
        self.addrs[&config.server().listen]
    }

    /// Graceful shutdown: stop accepting, let open streams finish within the drain timeout,
    /// then end the rest with a terminal event in their format.
    pub async fn shutdown(mut self) -> Stopped {
        let metrics = self.reloader.gateway().metrics().clone();
        metrics.drains.inc();
        // The drain timeout of the config in force now (it may have been reloaded).
        let drain_timeout = self
            .reloader
            .gateway()
            .snapshot()
            .config()
            .server()
            .drain_timeout;
        self.reloader.stop_health_checks();
        self.reloader.gateway().set_draining();
        self.stop_accepting.cancel();
        while self.tasks.join_next().await.is_some() {}
        self.conns.close();
        self.drain.cancel();
        let drained = tokio::time::timeout(drain_timeout, self.conns.wait()).await;
        if drained.is_err() {
            metrics.drain_cut_streams.inc();
            tracing::warn!("drain timeout passed; ending the open streams and requests");
            // Streams write their terminal events, sync requests answer 503: give them a
            // moment to be written.
            self.streams_end.cancel();
            let _ = tokio::time::timeout(END_FLUSH, self.conns.wait()).await;
        }
        let connections_left = self.conns.len();
        if connections_left > 0 {
            tracing::warn!(
                connections_left,
                "connections still open; exiting cuts them"
            );
        }
        release_leases(&self.policy).await;
        stop_admin(self.admin).await;
        Stopped { connections_left }
    }
}

/// How a shutdown ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped {
    /// Connections still open once the ended streams had had their moment to write their last
    /// bytes: a process that exits then cuts them.
    pub connections_left: usize,
}

/// Lease mode: post what was used and give the rest back to the accounts.
async fn release_leases(policy: &Policy) {
    match policy.ledger.release_leases().await {
        Ok(0.0) => {}
        Ok(credits) => tracing::info!(credits, "returned credit leases"),
        Err(e) => tracing::warn!(error = %e, "credit leases not returned; they expire"),
    }
}

async fn stop_admin(admin: Option<(JoinSet<()>, CancellationToken)>) {
    if let Some((mut task, stop)) = admin {
        stop.cancel();
        while task.join_next().await.is_some() {}
    }
}

/// Starts demo backends, the gateway and every listener of `config`.
pub async fn start(config: Config) -> Result<Running, ServerError> {
    let App {
        config,
        policy,
        streams_end,
        reloader,
        gateway,
        ..
    } = App::build(config).await.map_err(ServerError::Setup)?;
    if reloader.has_demo_agents().await {
        bootstrap_demo_key(&policy, &config).await;
    }
    let tls = match &config.server().tls {
        Some(tls) => Some(tls_acceptor(tls)?),
        None => None,
    };
    let stop_accepting = CancellationToken::new();
    let drain = CancellationToken::new();
    let conns = TaskTracker::new();
    // One cap over the main and front listeners; the admin listener stays reachable.
    let open = Arc::new(Semaphore::new(config.server().max_connections));
    let limits = ConnLimits::of(config.server());
    let mut tasks = JoinSet::new();
    let mut addrs = HashMap::new();
    let mut admin_task = None;
    for listen in config.listeners() {
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|source| ServerError::Bind {
                addr: listen,
                source,
            })?;
        let bound = listener.local_addr().map_err(|source| ServerError::Bind {
            addr: listen,
            source,
        })?;
        addrs.insert(listen, bound);
        tracing::info!(%bound, tls = tls.is_some(), "listening");
        tasks.spawn(accept_loop(
            listener,
            Listener {
                listen,
                gateway: gateway.clone(),
                tls: tls.clone(),
                limits,
                open: open.clone(),
                conns: conns.clone(),
                drain: drain.clone(),
                streams_end: streams_end.clone(),
            },
            stop_accepting.clone(),
        ));
    }
    if let Some(admin) = &config.server().admin {
        let listener =
            TcpListener::bind(admin.listen)
                .await
                .map_err(|source| ServerError::Bind {
                    addr: admin.listen,
                    source,
                })?;
        let bound = listener.local_addr().map_err(|source| ServerError::Bind {
            addr: admin.listen,
            source,
        })?;
        addrs.insert(admin.listen, bound);
        gateway.allow_console(bound);
        tracing::info!(%bound, console = %format!("http://{bound}/console/"), "admin listener");
        let ctx = Arc::new(AdminCtx::new(
            policy.ledger.clone(),
            admin.token.expose().to_owned(),
        ));
        let stop = CancellationToken::new();
        let mut task = JoinSet::new();
        let listeners = Arc::new(addrs.clone());
        task.spawn(admin_loop(
            listener,
            ctx,
            reloader.clone(),
            listeners,
            limits,
            stop.clone(),
        ));
        admin_task = Some((task, stop));
    }
    Ok(Running {
        policy,
        addrs,
        reloader,
        stop_accepting,
        streams_end,
        tasks,
        conns,
        drain,
        admin: admin_task,
    })
}

/// What the connections of one listener share.
struct Listener {
    listen: SocketAddr,
    gateway: Arc<Gateway>,
    tls: Option<TlsAcceptor>,
    limits: ConnLimits,
    /// Permits for open connections (`[server] max_connections`).
    open: Arc<Semaphore>,
    conns: TaskTracker,
    drain: CancellationToken,
    /// Fires when the drain timeout has passed.
    streams_end: crate::proxy::Cutoff,
}

/// The connection builders of a listener: HTTP/1.1 and h2c, told apart by [`conn::sniff`],
/// and hyper-util's `auto` for TLS and for what a peek cannot decide; the same settings in each.
struct Builders {
    auto: auto::Builder<TokioExecutor>,
    http1: hyper::server::conn::http1::Builder,
    http2: hyper::server::conn::http2::Builder<TokioExecutor>,
}

impl Builders {
    fn new(limits: ConnLimits) -> Builders {
        let timer = hyper_util::rt::TokioTimer::new;
        let keep_alive = Some(Duration::from_secs(30));
        let mut auto = auto::Builder::new(TokioExecutor::new());
        // Runs while a kept-alive connection waits for its next request's headers.
        auto.http1().timer(timer()).header_read_timeout(limits.idle);
        auto.http2().timer(timer()).keep_alive_interval(keep_alive);
        let mut http1 = hyper::server::conn::http1::Builder::new();
        http1.timer(timer()).header_read_timeout(limits.idle);
        let mut http2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        http2.timer(timer()).keep_alive_interval(keep_alive);
        Builders { auto, http1, http2 }
    }
}

async fn accept_loop(listener: TcpListener, ctx: Listener, stop: CancellationToken) {
    let builder = Arc::new(Builders::new(ctx.limits));
    let ctx = Arc::new(ctx);
    let mut errors = Throttled::default();
    let mut refused = Throttled::default();
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: back off rather than spin.
                    errors.log(|suppressed| {
                        tracing::warn!(listen = %ctx.listen, error = %e, suppressed, "accept failed");
                    });
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let accepted = tokio::time::Instant::now();
        // Over the cap: closed at once, before any byte is read.
        let Ok(permit) = ctx.open.clone().try_acquire_owned() else {
            refused.log(|suppressed| {
                tracing::warn!(listen = %ctx.listen, %peer, suppressed, "max_connections reached; connection closed");
            });
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let builder = builder.clone();
        let ctx = ctx.clone();
        let conns = ctx.conns.clone();
        conns.spawn(async move {
            let _permit = permit;
            let activity = Activity::new();
            let svc = {
                let activity = activity.clone();
                let gateway = ctx.gateway.clone();
                let listen = ctx.listen;
                let streams_end = ctx.streams_end.clone();
                service_fn(move |req| {
                    let in_flight = activity.request();
                    let gateway = gateway.clone();
                    let streams_end = streams_end.clone();
                    // Boxed: hyper keeps a request's future in the connection's (HTTP/1.1) or
                    // the stream's (h2) state, sized for it, for as long as that lives. Boxed,
                    // the handler's state is freed once the response head is out, and an open
                    // stream holds only its body.
                    let handled = Box::pin(gateway.handle(listen, req));
                    async move {
                        // A request still unanswered when the drain timeout passes (a sync chat,
                        // a stream whose backend has not answered) gets a 503 rather than a cut
                        // connection. Answers already started end in their own format.
                        let response = tokio::select! {
                            response = handled => response,
                            _ = streams_end.cancelled() => shutting_down(),
                        };
                        Ok::<_, Infallible>(response.map(|body| Tracked::new(body, in_flight)))
                    }
                })
            };
            let (limits, drain) = (ctx.limits, &ctx.drain);
            let result = match &ctx.tls {
                None => {
                    // A silent socket is closed at the header read deadline, as `supervise`
                    // would close it.
                    let deadline = accepted + limits.header_read;
                    let sniffed = tokio::time::timeout_at(deadline, conn::sniff(&stream)).await;
                    let protocol = match sniffed {
                        Ok(Ok(protocol)) => protocol,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "connection failed unread");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "no request within the header read timeout");
                            return;
                        }
                    };
                    let io = TokioIo::new(ErrorBodies::new(stream));
                    match protocol {
                        conn::Protocol::Http1 => {
                            let conn = builder.http1.serve_connection(io, svc);
                            let done = conn::supervise(conn, &activity, limits, accepted, drain);
                            done.await.map_err(Into::into)
                        }
                        conn::Protocol::Http2 => {
                            // Boxed: an h2 connection's state is twice an HTTP/1.1 one's, and
                            // serves many streams; an HTTP/1.1 connection's task need not be
                            // sized for it.
                            let conn = builder.http2.serve_connection(io, svc);
                            let done = conn::supervise(conn, &activity, limits, accepted, drain);
                            Box::pin(done).await.map_err(Into::into)
                        }
                        conn::Protocol::Undecided => {
                            // Rare: boxed, so that it does not size every connection's task.
                            let conn = builder.auto.serve_connection(io, svc);
                            Box::pin(conn::supervise(conn, &activity, limits, accepted, drain))
                                .await
                        }
                    }
                }
                Some(acceptor) => {
                    // Boxed: a TLS connection's state is large, and a plain one's task need
                    // not be sized for it.
                    let served = Box::pin(async {
                        let handshake = tokio::time::timeout_at(
                            accepted + limits.header_read,
                            acceptor.accept(stream),
                        );
                        match handshake.await {
                            Ok(Ok(tls_stream)) => {
                                let io = TokioIo::new(ErrorBodies::new(tls_stream));
                                let conn = builder.auto.serve_connection(io, svc);
                                Some(
                                    conn::supervise(conn, &activity, limits, accepted, drain).await,
                                )
                            }
                            Ok(Err(e)) => {
                                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                None
                            }
                            Err(_) => {
                                tracing::debug!(%peer, "TLS handshake timed out");
                                None
                            }
                        }
                    });
                    match served.await {
                        Some(result) => result,
                        None => return,
                    }
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
}

/// 503 to a request the drain timeout cut short, in the fronts' error shape.
fn shutting_down() -> http::Response<crate::proxy::GatewayBody> {
    let error = crate::fronts::ApiError::new(
        http::StatusCode::SERVICE_UNAVAILABLE,
        "shutting_down",
        "the gateway is shutting down; retry the request",
    )
    .with_header(
        http::header::RETRY_AFTER,
        http::HeaderValue::from_static("1"),
    );
    crate::proxy::error_response(&error)
}

/// The admin listener: `/metrics` and `/healthz`, `/readyz` (no token), the config status
/// and the admin API (behind the admin token).
async fn admin_loop(
    listener: TcpListener,
    ctx: Arc<AdminCtx>,
    reloader: Reloader,
    listeners: Arc<HashMap<SocketAddr, SocketAddr>>,
    limits: ConnLimits,
    stop: CancellationToken,
) {
    // Its own drain: admin connections must not hold up (or be cut by) the main drain.
    let drain = CancellationToken::new();
    let conns = TaskTracker::new();
    let mut errors = Throttled::default();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.idle);
    builder.http2().timer(hyper_util::rt::TokioTimer::new());
    let builder = Arc::new(builder);
    loop {
        let stream = tokio::select! {
            _ = stop.cancelled() => {
                conns.close();
                drain.cancel();
                let _ = tokio::time::timeout(Duration::from_secs(1), conns.wait()).await;
                return;
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    errors.log(|suppressed| {
                        tracing::warn!(error = %e, suppressed, "admin listener: accept failed");
                    });
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let accepted = tokio::time::Instant::now();
        let ctx = ctx.clone();
        let reloader = reloader.clone();
        let listeners = listeners.clone();
        let drain = drain.clone();
        let builder = builder.clone();
        conns.spawn(async move {
            let activity = Activity::new();
            let tracker = activity.clone();
            let body_timeout = reloader
                .gateway()
                .snapshot()
                .config()
                .server()
                .body_read_timeout;
            let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let ctx = ctx.clone();
                let reloader = reloader.clone();
                let listeners = listeners.clone();
                let in_flight = tracker.request();
                async move {
                    let (parts, body) = req.into_parts();
                    let response = match parts.uri.path() {
                        "/healthz" => {
                            http::Response::new(Bytes::from_static(b"{\"status\":\"ok\"}"))
                        }
                        "/readyz" => {
                            let (status, body) = reloader.gateway().readiness().await;
                            let mut r = http::Response::new(body);
                            *r.status_mut() = status;
                            r
                        }
                        "/metrics" => metrics_response(reloader.gateway().metrics()),
                        path if console::is_console_path(path) => {
                            console::asset(&parts.method, path)
                        }
                        _ => match read_admin_body(body, body_timeout).await {
                            Ok(body) => {
                                let req = http::Request::from_parts(parts, body);
                                match req.uri().path() {
                                    "/admin/v1/config" | "/admin/v1/config/reload" => {
                                        config_endpoint(req, &ctx, &reloader).await
                                    }
                                    path if console::is_gateway_endpoint(path) => {
                                        console::endpoint(
                                            &req,
                                            &ctx,
                                            reloader.gateway(),
                                            &listeners,
                                        )
                                        .await
                                    }
                                    _ => admin::http::handle(req, &ctx).await,
                                }
                            }
                            Err(refused) => refused.response(),
                        },
                    };
                    Ok::<_, Infallible>(
                        response.map(|body| Tracked::new(Full::new(body), in_flight)),
                    )
                }
            });
            let conn = builder.serve_connection(TokioIo::new(ErrorBodies::new(stream)), svc);
            let _ = conn::supervise(conn, &activity, limits, accepted, &drain).await;
        });
    }
}

/// Why an admin request body was not read.
#[derive(Debug, thiserror::Error)]
enum AdminBodyError {
    #[error("request body larger than {ADMIN_BODY_LIMIT} bytes")]
    TooLarge,
    #[error("the request body did not arrive within {} s", .0.as_secs())]
    Timeout(Duration),
    #[error("cannot read the request body: {0}")]
    Unreadable(String),
}

impl AdminBodyError {
    fn response(&self) -> http::Response<Bytes> {
        let (status, code) = match self {
            AdminBodyError::TooLarge => (http::StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            AdminBodyError::Timeout(_) => (http::StatusCode::REQUEST_TIMEOUT, "request_timeout"),
            AdminBodyError::Unreadable(_) => (http::StatusCode::BAD_REQUEST, "bad_request"),
        };
        let body = crate::fronts::ApiError::new(status, code, self.to_string()).body();
        let mut r = http::Response::new(body);
        *r.status_mut() = status;
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        r
    }
}

/// An admin request body: at most [`ADMIN_BODY_LIMIT`] bytes, within `timeout`.
async fn read_admin_body(
    body: hyper::body::Incoming,
    timeout: Duration,
) -> Result<Bytes, AdminBodyError> {
    let collected = tokio::time::timeout(timeout, Limited::new(body, ADMIN_BODY_LIMIT).collect())
        .await
        .map_err(|_| AdminBodyError::Timeout(timeout))?;
    match collected {
        Ok(body) => Ok(body.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(AdminBodyError::TooLarge),
        Err(e) => Err(AdminBodyError::Unreadable(e.to_string())),
    }
}

fn metrics_response(metrics: &Metrics) -> http::Response<Bytes> {
    let mut r = http::Response::new(Bytes::from(metrics.encode()));
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
    );
    r
}

/// `GET /admin/v1/config`: the config in force and the last reload's result;
/// `POST /admin/v1/config/reload`: reload the file now (200, or 422 with the reason).
async fn config_endpoint(
    req: http::Request<Bytes>,
    ctx: &AdminCtx,
    reloader: &Reloader,
) -> http::Response<Bytes> {
    let json = |status: http::StatusCode, body: serde_json::Value| {
        let mut r = http::Response::new(Bytes::from(body.to_string()));
        *r.status_mut() = status;
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        r
    };
    let error = |status, code: &'static str, message: &str| {
        let mut r = http::Response::new(crate::fronts::ApiError::new(status, code, message).body());
        *r.status_mut() = status;
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        r
    };
    if !ctx.authorized(&req) {
        let mut refused = error(
            http::StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid admin token is required",
        );
        refused.headers_mut().insert(
            http::header::WWW_AUTHENTICATE,
            http::HeaderValue::from_static("Bearer"),
        );
        return refused;
    }
    match (req.method(), req.uri().path()) {
        (&http::Method::GET, "/admin/v1/config") => {
            json(http::StatusCode::OK, reloader.status_json())
        }
        (&http::Method::POST, "/admin/v1/config/reload") => {
            match reloader.reload_file("admin").await {
                Ok(()) => json(http::StatusCode::OK, reloader.status_json()),
                Err(e) => error(
                    http::StatusCode::UNPROCESSABLE_ENTITY,
                    "config_refused",
                    &e.to_string(),
                ),
            }
        }
        _ => error(
            http::StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "GET /admin/v1/config or POST /admin/v1/config/reload",
        ),
    }
}

/// The quick start needs a key: with demo agents configured and no key file yet, create a
/// master key for account `demo` with 1,000 credits and write it beside the store.
async fn bootstrap_demo_key(policy: &Policy, config: &Config) {
    let StoreUrl::Sqlite(db) = &config.store().url else {
        return;
    };
    let path = db.with_file_name("demo-key.txt");
    if path.exists() {
        tracing::info!(path = %path.display(), "demo key (account `demo`) is in this file");
        return;
    }
    let spec = NewKeySpec {
        account: "demo".into(),
        kind: KeyKind::Master,
        scopes: Scopes::ALL,
        agents: None,
        expires_at: None,
        limits: KeyLimits::default(),
    };
    let created = match auth::create_key(&policy.store, spec).await {
        Ok((secret, _)) => secret,
        Err(e) => {
            tracing::warn!(error = %e, "could not create the demo key");
            return;
        }
    };
    if let Err(e) = policy
        .ledger
        .grant("demo", 1000.0, Some("quick start"))
        .await
    {
        tracing::warn!(error = %e, "could not grant the demo credits");
    }
    match write_private(&path, &format!("{}\n", created.expose())) {
        Ok(()) => tracing::info!(
            path = %path.display(),
            "created a demo master key (account `demo`, 1000 credits): export KEY=$(cat {})",
            path.display()
        ),
        Err(e) => tracing::warn!(error = %e, "could not write the demo key file"),
    }
}

/// Writes a new file readable by its owner only (0600): it holds a secret.
fn write_private(path: &std::path::Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(contents.as_bytes())
}

fn tls_acceptor(tls: &TlsConfig) -> Result<TlsAcceptor, ServerError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(&tls.cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| ServerError::Tls(format!("{}: {e}", tls.cert.display())))?;
    let key = PrivateKeyDer::from_pem_file(&tls.key)
        .map_err(|e| ServerError::Tls(format!("{}: {e}", tls.key.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ServerError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| ServerError::Tls(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
