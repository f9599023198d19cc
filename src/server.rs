//! Listeners: the accept loop, hyper-util's auto builder (HTTP/1.1 and h2c, or TLS with ALPN
//! `h2`/`http/1.1`), and graceful shutdown with a drain timeout.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, TlsConfig, Upstream};
use crate::demo::DemoAgent;
use crate::proxy::Gateway;

/// How long a demo backend pauses between words in the quick start.
const DEMO_DELAY: Duration = Duration::from_millis(25);

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
    /// Configured listen address → the address actually bound (they differ for port 0).
    pub addrs: HashMap<SocketAddr, SocketAddr>,
    stop_accepting: CancellationToken,
    streams_end: CancellationToken,
    tasks: JoinSet<()>,
    drain: Arc<GracefulShutdown>,
    drain_timeout: Duration,
}

impl Running {
    /// The bound address of the main listener.
    pub fn main_addr(&self, config: &Config) -> SocketAddr {
        self.addrs[&config.server().listen]
    }

    /// Graceful shutdown: stop accepting, let open streams finish within the drain timeout,
    /// then end the rest with a terminal event in their format.
    pub async fn shutdown(mut self) {
        self.stop_accepting.cancel();
        while self.tasks.join_next().await.is_some() {}
        // The accept loops have ended, so this is the last handle.
        let Ok(drain) = Arc::try_unwrap(self.drain) else {
            self.streams_end.cancel();
            return;
        };
        let drained = tokio::time::timeout(self.drain_timeout, drain.shutdown()).await;
        if drained.is_err() {
            tracing::warn!("drain timeout passed; ending the open streams");
            self.streams_end.cancel();
            // The streams now write their terminal events; give them a moment to flush.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Starts demo backends, the gateway and every listener of `config`.
pub async fn start(config: Config) -> Result<Running, ServerError> {
    let config = Arc::new(config);
    let mut demo = HashMap::new();
    for agent in config.agents() {
        if agent.upstream == Upstream::Demo {
            let loopback: SocketAddr = ([127, 0, 0, 1], 0).into();
            let addr = DemoAgent::new(agent.upstream_api, DEMO_DELAY)
                .spawn(loopback)
                .await
                .map_err(|source| ServerError::Bind {
                    addr: loopback,
                    source,
                })?;
            demo.insert(agent.id.clone(), addr);
        }
    }
    let streams_end = CancellationToken::new();
    let gateway = Arc::new(
        Gateway::new(config.clone(), &demo, streams_end.clone()).map_err(ServerError::Setup)?,
    );
    let tls = match &config.server().tls {
        Some(tls) => Some(tls_acceptor(tls)?),
        None => None,
    };
    let stop_accepting = CancellationToken::new();
    let drain = Arc::new(GracefulShutdown::new());
    let mut tasks = JoinSet::new();
    let mut addrs = HashMap::new();
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
            listen,
            gateway.clone(),
            tls.clone(),
            drain.clone(),
            stop_accepting.clone(),
        ));
    }
    Ok(Running {
        addrs,
        stop_accepting,
        streams_end,
        tasks,
        drain,
        drain_timeout: config.server().drain_timeout,
    })
}

async fn accept_loop(
    listener: TcpListener,
    listen: SocketAddr,
    gateway: Arc<Gateway>,
    tls: Option<TlsAcceptor>,
    drain: Arc<GracefulShutdown>,
    stop: CancellationToken,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(hyper_util::rt::TokioTimer::new());
    builder
        .http2()
        .timer(hyper_util::rt::TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(30)));
    let builder = Arc::new(builder);
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: back off rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let gateway = gateway.clone();
        let builder = builder.clone();
        let watcher = drain.watcher();
        let tls = tls.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let gateway = gateway.clone();
                async move { Ok::<_, Infallible>(gateway.handle(listen, req).await) }
            });
            let result = match tls {
                None => {
                    let conn = builder.serve_connection(TokioIo::new(stream), svc);
                    watcher.watch(conn.into_owned()).await
                }
                Some(acceptor) => match acceptor.accept(stream).await {
                    Ok(tls_stream) => {
                        let conn = builder.serve_connection(TokioIo::new(tls_stream), svc);
                        watcher.watch(conn.into_owned()).await
                    }
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                },
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
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
