//! Reaching PostgreSQL: TLS (`sslmode=require`), the connection pool, and the migrations
//! (one replica at a time).

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use tokio_postgres::NoTls;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::super::schema::{self, Dialect};
use super::super::StoreError;
use super::{col, pg_err};

/// Connections per replica (plus one for LISTEN). Three replicas stay far below PostgreSQL's
/// default `max_connections` of 100.
const POOL_SIZE: usize = 8;

/// A `pg_advisory_xact_lock` key, so that replicas starting together migrate one at a time.
const MIGRATION_LOCK: i64 = 0x6167_656e_7467_6174; // "agentgat"

pub(crate) async fn migrate(client: &mut Object) -> Result<(), StoreError> {
    let tx = client.transaction().await.map_err(pg_err)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(pg_err)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_version (
             version    BIGINT PRIMARY KEY,
             applied_at BIGINT NOT NULL
         )",
    )
    .await
    .map_err(pg_err)?;
    let row = tx
        .query_one(
            "SELECT COALESCE(MAX(version), 0)::BIGINT FROM schema_version",
            &[],
        )
        .await
        .map_err(pg_err)?;
    let current: i64 = col(&row, 0)?;
    if current > schema::latest() {
        return Err(StoreError::SchemaTooNew {
            found: current,
            supported: schema::latest(),
        });
    }
    for m in schema::after(current) {
        tx.batch_execute(&m.sql(Dialect::Postgres))
            .await
            .map_err(pg_err)?;
        tx.execute(
            "INSERT INTO schema_version (version, applied_at) VALUES ($1, $2)",
            &[&m.version, &super::super::now_ms()],
        )
        .await
        .map_err(pg_err)?;
    }
    tx.commit().await.map_err(pg_err)
}

/// TLS for `sslmode=require`: rustls with the system's roots (add a private CA with
/// `SSL_CERT_FILE`), the server's certificate and name verified. Without `sslmode=require` the
/// connection is plain (`prefer` does not try TLS: an unverifiable certificate would otherwise
/// fail where plain text was acceptable).
pub(crate) fn tls_for(
    config: &tokio_postgres::Config,
) -> Result<Option<MakeRustlsConnect>, StoreError> {
    if config.get_ssl_mode() != tokio_postgres::config::SslMode::Require {
        return Ok(None);
    }
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        return Err(StoreError::Url(
            "sslmode=require, but no trusted root certificates were found (SSL_CERT_FILE)".into(),
        ));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StoreError::Url(format!("TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Some(MakeRustlsConnect::new(tls)))
}

/// The connection pool: at most [`POOL_SIZE`] connections, plain or TLS as `tls` says.
pub(crate) fn pool(
    config: &tokio_postgres::Config,
    tls: Option<&MakeRustlsConnect>,
) -> Result<Pool, StoreError> {
    let manager_config = ManagerConfig {
        recycling_method: RecyclingMethod::Fast,
    };
    let manager = match tls {
        Some(tls) => Manager::from_config(config.clone(), tls.clone(), manager_config),
        None => Manager::from_config(config.clone(), NoTls, manager_config),
    };
    Pool::builder(manager)
        .max_size(POOL_SIZE)
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .wait_timeout(Some(Duration::from_secs(10)))
        .create_timeout(Some(Duration::from_secs(5)))
        .build()
        .map_err(|e| StoreError::Unavailable(e.to_string()))
}
