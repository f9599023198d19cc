//! Keys: format, authentication through the cache, refusal without lookups, revocation (the
//! store-facing tests run on SQLite and on PostgreSQL, which skips when unreachable).

mod policy_support;

use std::time::{Duration, Instant};

use agentgate::auth::{
    create_key, parse_key, AuthError, Authenticator, KeyFormatError, KeyKind, KeyLimits,
    NewKeySpec, Scopes,
};
use agentgate::credits::LedgerConfig;
use agentgate::store::{now_ms, StoreEvent};
use policy_support::{fixture, fixture_on, Backend};

fn spec(account: &str) -> NewKeySpec {
    NewKeySpec {
        account: account.into(),
        kind: KeyKind::Agent,
        scopes: Scopes::AGENTS_RUN | Scopes::USAGE_READ,
        agents: Some(vec!["a1".into(), "a2".into()]),
        expires_at: None,
        limits: KeyLimits {
            rate_per_second: Some(5.0),
            rate_burst: Some(10),
            max_streams: Some(2),
        },
    }
}

crate::on_both_stores!(
    created_key_authenticates_and_carries_its_policy,
    created_key_authenticates_and_carries_its_policy_on
);
async fn created_key_authenticates_and_carries_its_policy_on(backend: Backend) {
    let Some(fx) = fixture_on(backend, LedgerConfig::default()).await else {
        return;
    };
    let (secret, created) = create_key(&fx.store, spec("acme")).await.expect("created");
    let auth = Authenticator::new(fx.store.clone());
    let header = format!("Bearer {}", secret.expose());
    let info = auth
        .authenticate(Some(&header), false)
        .await
        .expect("valid key");
    assert_eq!(info, created);
    assert_eq!(info.public_id(), secret.public_id());
    assert_eq!(info.account(), "acme");
    assert_eq!(info.kind(), KeyKind::Agent);
    assert!(info.has_scope(Scopes::AGENTS_RUN) && !info.has_scope(Scopes::AGENTS_STREAM));
    assert!(info.may_access("a1") && !info.may_access("a3"));
    assert_eq!(info.limits().max_streams, Some(2));
    // Case-insensitive scheme, surrounding whitespace, and the bare key only where allowed.
    let lower = format!("  bearer   {} ", secret.expose());
    auth.authenticate(Some(&lower), false)
        .await
        .expect("lower-case bearer");
    auth.authenticate(Some(secret.expose()), true)
        .await
        .expect("bare for pharen");
    assert!(matches!(
        auth.authenticate(Some(secret.expose()), false).await,
        Err(AuthError::NotBearer)
    ));
    // Only the first authentication went to the store.
    assert_eq!(auth.store_lookups(), 1);
    // The key never shows up in Debug output of what we hand around.
    let shown = format!("{info:?} {secret:?} {secret}");
    assert!(!shown.contains(secret.expose()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_keys_have_every_scope_and_agent() {
    let fx = fixture().await;
    let mut s = spec("acme");
    s.kind = KeyKind::Master;
    let (secret, _) = create_key(&fx.store, s).await.expect("created");
    let auth = Authenticator::new(fx.store.clone());
    let info = auth
        .authenticate(Some(&format!("Bearer {}", secret.expose())), false)
        .await
        .expect("valid");
    assert_eq!(info.scopes(), Scopes::ALL);
    assert!(info.agents().is_none() && info.may_access("anything"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_checksum_failing_keys_cost_no_lookup() {
    let fx = fixture().await;
    let (secret, _) = create_key(&fx.store, spec("acme")).await.expect("created");
    let auth = Authenticator::new(fx.store.clone());
    let full = secret.expose().to_owned();
    let mut bad: Vec<String> = vec![
        String::new(),
        "Bearer".into(),
        "Bearer ".into(),
        "Basic dXNlcjpwYXNz".into(),
        format!("Bearer {}", &full[..full.len() - 1]),
        format!("Bearer {full}0"),
        format!("Bearer sk_{}", &full[4..]),
    ];
    // Every single-character substitution in the id, secret or checksum.
    for i in 4..full.len() {
        if full.as_bytes()[i] == b'_' {
            continue;
        }
        let mut b = full.clone().into_bytes();
        b[i] = if b[i] == b'Z' { b'Y' } else { b'Z' };
        bad.push(format!("Bearer {}", String::from_utf8(b).expect("ascii")));
    }
    for h in &bad {
        let r = auth.authenticate(Some(h), true).await;
        assert!(
            matches!(r, Err(AuthError::Malformed(_) | AuthError::Missing)),
            "{h:?} gave {r:?}"
        );
        assert_eq!(
            r.map(|_| ()).map_err(|e| e.status()),
            Err(http::StatusCode::UNAUTHORIZED)
        );
    }
    assert!(matches!(
        auth.authenticate(None, true).await,
        Err(AuthError::Missing)
    ));
    assert_eq!(
        auth.store_lookups(),
        0,
        "no malformed key reached the store"
    );
    assert_eq!(
        parse_key(&full.replace('_', "-")).map(|_| ()),
        Err(KeyFormatError::Prefix)
    );
}

crate::on_both_stores!(
    well_formed_unknown_key_is_refused_after_one_lookup,
    well_formed_unknown_key_is_refused_after_one_lookup_on
);
async fn well_formed_unknown_key_is_refused_after_one_lookup_on(backend: Backend) {
    let Some(fx) = fixture_on(backend, LedgerConfig::default()).await else {
        return;
    };
    let auth = Authenticator::new(fx.store.clone());
    let stranger = agentgate::auth::SecretKey::generate();
    let r = auth
        .authenticate(Some(&format!("Bearer {}", stranger.expose())), false)
        .await;
    assert!(matches!(r, Err(AuthError::Unknown)));
    assert_eq!(auth.store_lookups(), 1);
}

crate::on_both_stores!(
    in_process_revocation_is_immediate,
    in_process_revocation_is_immediate_on
);
async fn in_process_revocation_is_immediate_on(backend: Backend) {
    let Some(fx) = fixture_on(backend, LedgerConfig::default()).await else {
        return;
    };
    let (secret, info) = create_key(&fx.store, spec("acme")).await.expect("created");
    let auth = Authenticator::new(fx.store.clone());
    let h = format!("Bearer {}", secret.expose());
    auth.authenticate(Some(&h), false).await.expect("valid");
    fx.store
        .revoke_key(info.public_id(), now_ms())
        .await
        .expect("revoked");
    assert!(matches!(
        auth.authenticate(Some(&h), false).await,
        Err(AuthError::Revoked)
    ));
}

crate::on_both_stores!(
    revocation_by_another_process_is_seen_within_a_second,
    revocation_by_another_process_is_seen_within_a_second_on
);
async fn revocation_by_another_process_is_seen_within_a_second_on(backend: Backend) {
    let Some(fx) = fixture_on(backend, LedgerConfig::default()).await else {
        return;
    };
    let cli = fx.second_handle().await;
    let (secret, info) = create_key(&cli, spec("acme"))
        .await
        .expect("created by the CLI");
    let auth = Authenticator::new(fx.store.clone());
    let h = format!("Bearer {}", secret.expose());
    auth.authenticate(Some(&h), false).await.expect("valid");
    auth.authenticate(Some(&h), false)
        .await
        .expect("valid (cached)");
    assert_eq!(auth.store_lookups(), 1);

    let revoked_at = Instant::now();
    cli.revoke_key(info.public_id(), now_ms())
        .await
        .expect("revoked");
    loop {
        match auth.authenticate(Some(&h), false).await {
            Err(AuthError::Revoked) => break,
            Ok(_) => assert!(
                revoked_at.elapsed() < Duration::from_secs(1),
                "revoked key still accepted after 1 s"
            ),
            Err(e) => panic!("unexpected {e}"),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(revoked_at.elapsed() < Duration::from_secs(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_is_seen_even_without_the_poller() {
    let fx = fixture().await;
    let cli = fx.second_handle().await;
    let (secret, info) = create_key(&cli, spec("acme")).await.expect("created");
    // Built outside any runtime: no background poller, entries revalidate after 500 ms.
    let store = fx.store.clone();
    let auth = std::thread::spawn(move || Authenticator::new(store))
        .join()
        .expect("built");
    let h = format!("Bearer {}", secret.expose());
    auth.authenticate(Some(&h), false).await.expect("valid");
    let t0 = Instant::now();
    cli.revoke_key(info.public_id(), now_ms())
        .await
        .expect("revoked");
    while auth.authenticate(Some(&h), false).await.is_ok() {
        assert!(t0.elapsed() < Duration::from_secs(1));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

crate::on_both_stores!(expired_keys_are_refused, expired_keys_are_refused_on);
async fn expired_keys_are_refused_on(backend: Backend) {
    let Some(fx) = fixture_on(backend, LedgerConfig::default()).await else {
        return;
    };
    let mut s = spec("acme");
    s.expires_at = Some(now_ms() - 1);
    let (secret, _) = create_key(&fx.store, s).await.expect("created");
    let auth = Authenticator::new(fx.store.clone());
    let r = auth
        .authenticate(Some(&format!("Bearer {}", secret.expose())), false)
        .await;
    assert!(matches!(r, Err(AuthError::Expired)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_specs_are_refused() {
    let fx = fixture().await;
    let mut s = spec("bad account");
    assert!(create_key(&fx.store, s.clone()).await.is_err());
    s.account = "acme".into();
    s.agents = Some(vec!["a,b".into()]);
    assert!(create_key(&fx.store, s.clone()).await.is_err());
    s.agents = None;
    s.limits.rate_per_second = Some(0.0);
    assert!(create_key(&fx.store, s).await.is_err());
}

mod properties {
    use agentgate::auth::{parse_key, SecretKey};
    use agentgate::store::time::{format_rfc3339, parse_rfc3339};
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn parse_key_never_panics(s in "\\PC{0,60}") {
            let _ = parse_key(&s);
        }

        #[test]
        fn made_up_keys_of_the_right_shape_fail_the_checksum(
            s in "agk_[0-9A-Za-z]{12}_[0-9A-Za-zé]{28}"
        ) {
            // One in 2^32 would pass by chance; proptest's case count makes that negligible.
            prop_assert!(parse_key(&s).is_err());
        }

        #[test]
        fn generated_keys_always_parse(_i in 0u8..8) {
            let k = SecretKey::generate();
            prop_assert_eq!(parse_key(k.expose()).map(|p| p.public_id()), Ok(k.public_id()));
        }

        #[test]
        fn timestamps_round_trip(ms in -62_000_000_000_000i64..250_000_000_000_000i64) {
            prop_assert_eq!(parse_rfc3339(&format_rfc3339(ms)), Some(ms));
        }
    }
}

/// PostgreSQL announces a revocation and a grant made through one replica to every other
/// replica (LISTEN/NOTIFY) well within a second; the caches act on these events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_announces_revocations_and_grants_to_other_replicas() {
    let Some(fx) = fixture_on(Backend::Postgres, LedgerConfig::default()).await else {
        return;
    };
    let other = fx.second_handle().await;
    let mut events = other.subscribe().expect("a PostgreSQL store has events");
    let (_, info) = create_key(&fx.store, spec("acme")).await.expect("created");
    let t0 = Instant::now();
    fx.store
        .revoke_key(info.public_id(), now_ms())
        .await
        .expect("revoked");
    assert_eq!(
        next_event(&mut events).await,
        StoreEvent::KeyRevoked(info.public_id().to_owned())
    );
    assert!(t0.elapsed() < Duration::from_secs(1));
    fx.ledger.grant("acme", 5.0, None).await.expect("granted");
    assert_eq!(
        next_event(&mut events).await,
        StoreEvent::CreditsChanged("acme".into())
    );
    // A SQLite store has no such channel: its readers poll.
    let sqlite = fixture_on(Backend::Sqlite, LedgerConfig::default())
        .await
        .expect("sqlite");
    assert!(sqlite.store.subscribe().is_none());
}

async fn next_event(rx: &mut tokio::sync::broadcast::Receiver<StoreEvent>) -> StoreEvent {
    loop {
        match tokio::time::timeout(Duration::from_secs(1), rx.recv()).await {
            Ok(Ok(StoreEvent::Resync)) => continue,
            Ok(Ok(ev)) => return ev,
            other => panic!("no event within 1 s: {other:?}"),
        }
    }
}

/// `sslmode=require` means TLS with the server's certificate verified: against a server whose
/// certificate the system does not trust (the test server's self-signed one) or that has no
/// TLS, opening fails; it never falls back to plain text. `sslmode=disable` connects plainly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_sslmode_require_verifies_or_refuses() {
    let Some(db) = policy_support::PgDb::create().await else {
        return;
    };
    let sep = if db.url.contains('?') { '&' } else { '?' };
    let e = agentgate::store::Store::open(&format!("{}{sep}sslmode=require", db.url))
        .await
        .expect_err("an unverifiable server is refused");
    eprintln!("sslmode=require refused: {e}");
    let shown = e.to_string().to_lowercase();
    assert!(
        ["tls", "certificate", "ssl"]
            .iter()
            .any(|w| shown.contains(w)),
        "{e}"
    );
    agentgate::store::Store::open(&format!("{}{sep}sslmode=disable", db.url))
        .await
        .expect("plain connection");
}
