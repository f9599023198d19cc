//! `LISTEN`/`NOTIFY`: what replicas tell each other (revocations, credit changes, applied
//! configs), heard on one dedicated connection and turned into [`StoreEvent`]s.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::{AsyncMessage, NoTls};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::super::{StoreError, StoreEvent};
use super::{pg_err, Shared};

/// The NOTIFY channel every replica listens on.
pub(crate) const CHANNEL: &str = "agentgate_events";

pub(crate) fn notify_payload(kind: &str, id: &str) -> String {
    format!("{kind}:{id}")
}

fn parse_event(payload: &str) -> Option<StoreEvent> {
    let (kind, id) = payload.split_once(':')?;
    match kind {
        "revoke" => Some(StoreEvent::KeyRevoked(id.to_owned())),
        "credits" => Some(StoreEvent::CreditsChanged(id.to_owned())),
        "config" => {
            let (instance, sha256) = id.split_once(':')?;
            Some(StoreEvent::ConfigApplied {
                instance: instance.to_owned(),
                sha256: sha256.to_owned(),
            })
        }
        _ => None,
    }
}

/// Keeps one connection `LISTEN`ing and turns notifications into [`StoreEvent`]s. After every
/// (re)connection it sends `Resync`: whatever happened while it was away was not heard, so
/// subscribers drop their caches.
pub(crate) async fn listen_loop(
    config: tokio_postgres::Config,
    tls: Option<MakeRustlsConnect>,
    sh: Arc<Shared>,
    ready: tokio::sync::oneshot::Sender<()>,
) {
    let mut delay = Duration::from_millis(100);
    let mut ready = Some(ready);
    loop {
        if sh.stopping.load(Ordering::Acquire) {
            return;
        }
        match listen_once(&config, tls.as_ref(), &sh, &mut ready).await {
            Ok(()) => delay = Duration::from_millis(100),
            Err(e) => {
                tracing::warn!(error = %e, "postgres LISTEN connection failed; reconnecting");
                delay = (delay * 2).min(Duration::from_secs(2));
            }
        }
        tokio::time::sleep(delay).await;
    }
}

async fn listen_once(
    config: &tokio_postgres::Config,
    tls: Option<&MakeRustlsConnect>,
    sh: &Shared,
    ready: &mut Option<tokio::sync::oneshot::Sender<()>>,
) -> Result<(), StoreError> {
    match tls {
        Some(tls) => {
            let (client, conn) = config.connect(tls.clone()).await.map_err(pg_err)?;
            listen_on(client, conn, sh, ready).await
        }
        None => {
            let (client, conn) = config.connect(NoTls).await.map_err(pg_err)?;
            listen_on(client, conn, sh, ready).await
        }
    }
}

async fn listen_on<S, T>(
    client: tokio_postgres::Client,
    mut conn: tokio_postgres::Connection<S, T>,
    sh: &Shared,
    ready: &mut Option<tokio::sync::oneshot::Sender<()>>,
) -> Result<(), StoreError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (ntx, mut nrx) = tokio::sync::mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| conn.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(n))) => {
                    if ntx.send(n.payload().to_owned()).is_err() {
                        return Ok(());
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e),
                None => return Ok(()),
            }
        }
    });
    client
        .batch_execute(&format!("LISTEN {CHANNEL}"))
        .await
        .map_err(pg_err)?;
    let _ = sh.events.send(StoreEvent::Resync);
    if let Some(ready) = ready.take() {
        let _ = ready.send(());
    }
    while let Some(payload) = nrx.recv().await {
        match parse_event(&payload) {
            Some(StoreEvent::ConfigApplied { instance, .. }) if instance == sh.instance => {}
            Some(ev) => {
                let _ = sh.events.send(ev);
            }
            None => tracing::debug!(%payload, "unknown store notification"),
        }
    }
    drop(client);
    match driver.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(pg_err(e)),
        Err(e) => Err(StoreError::Task(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notification_payloads() {
        assert_eq!(
            parse_event("revoke:agk_1"),
            Some(StoreEvent::KeyRevoked("agk_1".into()))
        );
        assert_eq!(
            parse_event(&notify_payload("credits", "acme:eu")),
            Some(StoreEvent::CreditsChanged("acme:eu".into()))
        );
        assert_eq!(
            parse_event(&notify_payload("config", "abc:0123ef")),
            Some(StoreEvent::ConfigApplied {
                instance: "abc".into(),
                sha256: "0123ef".into()
            })
        );
        assert_eq!(parse_event("config:no-hash"), None);
        assert_eq!(parse_event("nonsense"), None);
    }
}
