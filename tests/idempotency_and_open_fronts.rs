//! Through the gateway: `Idempotency-Key` (a retry is answered with the first answer and not
//! charged again, 409 while the first runs, 422 for the same key with another body), and a
//! front with `require_key = false`.

mod harness;

use std::time::Duration;

use agentgate::fronts::Api;
use harness::*;

async fn gateway_with_demo(delay: Duration) -> (Gateway, String) {
    let backend = demo_agent_with_delay(Api::Chatbase, delay).await;
    let id = agent_id(1);
    let agents = [agent(&id, &format!("http://{backend}"), Api::Chatbase, "")];
    (spawn_gateway(&config("", &agents)).await, id)
}

async fn balance(gw: &Gateway) -> f64 {
    // Settlements are queued without waiting: let them land before reading.
    gw.running.policy.ledger.flush().await.unwrap();
    gw.running
        .policy
        .ledger
        .balance(TEST_ACCOUNT)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_replays_the_first_answer_and_is_charged_once() {
    let (gw, id) = gateway_with_demo(Duration::ZERO).await;
    let c = client();
    for (front, stream) in [
        (Api::Chatbase, true),
        (Api::Guayaba, false),
        (Api::Agents, true),
    ] {
        let before = balance(&gw).await;
        let send = |key: &'static str, message: &str| {
            c.post(gw.url(&chat_path(front, &id, stream)))
                .header("idempotency-key", key)
                .json(&chat_body(front, message, None, stream))
                .send()
        };
        let key: &'static str = match front {
            Api::Chatbase => "retry-chatbase",
            Api::Guayaba => "retry-guayaba",
            _ => "retry-agents",
        };
        let first = send(key, "héllo once").await.unwrap();
        assert_eq!(first.status(), 200);
        assert!(first.headers().get("idempotent-replayed").is_none());
        let first_body = first.bytes().await.unwrap();
        let charged = before - balance(&gw).await;
        assert!(charged > 0.0, "{front}: the first answer is charged");

        // The key is completed in the background once the answer is out; wait for it.
        let mut replayed = None;
        for _ in 0..50 {
            let r = send(key, "héllo once").await.unwrap();
            if r.status() == 200 && r.headers().get("idempotent-replayed").is_some() {
                replayed = Some(r.bytes().await.unwrap());
                break;
            }
            assert_eq!(
                r.status(),
                409,
                "{front}: only 409 while the first is completing"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let replayed = replayed.unwrap_or_else(|| panic!("{front}: no replay"));
        assert_eq!(
            replayed, first_body,
            "{front}: the replay is the first answer"
        );
        assert_eq!(
            before - balance(&gw).await,
            charged,
            "{front}: a replay is not charged"
        );

        let other = send(key, "another body").await.unwrap();
        assert_eq!(other.status(), 422, "{front}: same key, other body");
        assert_eq!(
            before - balance(&gw).await,
            charged,
            "{front}: a refused retry is not charged"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_while_the_first_runs_is_409_and_a_failed_first_can_be_retried() {
    let (gw, id) = gateway_with_demo(Duration::from_millis(40)).await;
    let c = client();
    let url = gw.url(&chat_path(Api::Chatbase, &id, true));
    let body = chat_body(Api::Chatbase, "one two three four five six", None, true);
    let first = c
        .post(&url)
        .header("idempotency-key", "slow")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 200);
    let second = c
        .post(&url)
        .header("idempotency-key", "slow")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(second.status(), 409, "the first is still streaming");
    let text = second.text().await.unwrap();
    assert!(text.contains("\"error\""), "{text}");

    // The client of the first leaves mid-stream: the key is released, and a retry runs.
    drop(first);
    let mut status = 0;
    for _ in 0..100 {
        let r = c
            .post(&url)
            .header("idempotency-key", "slow")
            .json(&body)
            .send()
            .await
            .unwrap();
        status = r.status().as_u16();
        if status == 200 {
            assert!(r.headers().get("idempotent-replayed").is_none());
            let sse = r.text().await.unwrap();
            assert!(sse.contains("[DONE]"), "{sse}");
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        status, 200,
        "an abandoned first attempt does not block its retry"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_front_needs_no_key_and_charges_nothing() {
    let backend = demo_agent(Api::Chatbase).await;
    let id = agent_id(1);
    let agents = [agent(&id, &format!("http://{backend}"), Api::Chatbase, "")];
    let toml = config("", &agents).replace(
        "api = \"guayaba\"\nprefix = \"/guayaba\"",
        "api = \"guayaba\"\nprefix = \"/guayaba\"\nrequire_key = false",
    );
    let gw = spawn_gateway(&toml).await;
    let before = balance(&gw).await;
    let anonymous = reqwest::Client::new();
    let r = anonymous
        .post(gw.url(&chat_path(Api::Guayaba, &id, false)))
        .json(&chat_body(Api::Guayaba, "no key", None, false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["usage"]["credits"], 0, "{body}");
    assert!(body["response"].as_str().unwrap().contains("no key"));
    // The other fronts still require a key.
    let r = anonymous
        .post(gw.url(&chat_path(Api::Chatbase, &id, false)))
        .json(&chat_body(Api::Chatbase, "no key", None, false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(balance(&gw).await, before, "nothing charged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_gone_before_the_backend_answers_is_charged_nothing() {
    let mock = MockUpstream::silent().spawn().await;
    let id = agent_id(1);
    let agents = [agent(
        &id,
        &mock.url(),
        Api::Chatbase,
        "first_byte_timeout_ms = 60000",
    )];
    let gw = spawn_gateway(&config("", &agents)).await;
    let before = balance(&gw).await;
    let impatient = reqwest::Client::builder()
        .default_headers(auth_headers())
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let r = impatient
        .post(gw.url(&chat_path(Api::Chatbase, &id, true)))
        .json(&chat_body(Api::Chatbase, "hello?", None, true))
        .send()
        .await;
    assert!(
        r.is_err(),
        "the backend never answers, so the client gives up"
    );
    // The gateway notices the client is gone, drops the request and settles it.
    let ledger = &gw.running.policy.ledger;
    let mut pending = i64::MAX;
    for _ in 0..100 {
        ledger.flush().await.unwrap();
        pending = gw.running.policy.store.pending_count().await.unwrap();
        if pending == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    assert_eq!(pending, 0, "the abandoned request was settled");
    assert_eq!(balance(&gw).await, before, "and charged nothing");
    assert_eq!(mock.requests().len(), 1, "the backend was called once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_past_the_idempotency_ttl_is_deleted_and_its_key_reused() {
    let backend = demo_agent(Api::Chatbase).await;
    let id = agent_id(1);
    let agents = [agent(&id, &format!("http://{backend}"), Api::Chatbase, "")];
    let dir = tempfile::tempdir().expect("temp dir");
    // Answers are kept for 1 s; the clean-up runs every 250 ms (a quarter of the 1 s
    // reservation timeout).
    let cfg = format!(
        "{}\n[store]\nurl = \"sqlite://{}\"\nreservation_timeout_s = 1\nidempotency_ttl_s = 1\n",
        config("", &agents),
        dir.path().join("agentgate.db").display()
    );
    let gw = spawn_gateway(&cfg).await;
    let c = client();
    let url = gw.url(&chat_path(Api::Guayaba, &id, false));
    let send = |message: &str| {
        c.post(&url)
            .header("idempotency-key", "daily-report")
            .json(&chat_body(Api::Guayaba, message, None, false))
            .send()
    };
    let first = send("first body").await.unwrap();
    assert_eq!(first.status(), 200);
    first.bytes().await.unwrap();

    // Another body under the same key is 409 (the first is being completed) or 422 while the
    // answer is kept, and runs as a new request once it has expired and been deleted.
    let deadline = std::time::Instant::now() + PATIENCE;
    let status = loop {
        let r = send("another body").await.unwrap();
        let status = r.status().as_u16();
        if !matches!(status, 409 | 422) || std::time::Instant::now() > deadline {
            assert!(r.headers().get("idempotent-replayed").is_none());
            break status;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(status, 200, "the expired key is free again");
}
