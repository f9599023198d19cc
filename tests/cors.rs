//! CORS on the fronts (SPEC §11, issue 12 item 12), over real sockets: a preflight from an
//! allowed origin is answered before any key check; answers to it (streams and errors) carry
//! the CORS headers; another origin gets none; the console's origin (the admin listener's)
//! is allowed on every front.

mod harness;

use std::net::SocketAddr;

use agentgate::fronts::Api;
use harness::*;

const ALLOWED: &str = "https://app.example.com";
const REFUSED: &str = "https://evil.example.com";
const ADMIN_LISTEN: &str = "127.0.0.2:0";
const ADMIN_TOKEN: &str = "cors-test-admin-token-0123456789";

/// The four fronts; the chatbase one allows [`ALLOWED`], the others nobody but the console.
async fn gateway() -> (Gateway, SocketAddr, String) {
    let backend = demo_agent(Api::Guayaba).await;
    let agent_id = agent_id(4);
    let fronts = FRONTS.replace(
        "api = \"chatbase\"\nprefix = \"/chatbase\"\n",
        &format!("api = \"chatbase\"\nprefix = \"/chatbase\"\ncors_origins = [\"{ALLOWED}\"]\n"),
    );
    let text = format!(
        "[server]\nlisten = \"{LOOPBACK}\"\nadmin_listen = \"{ADMIN_LISTEN}\"\n\
         admin_token = \"{ADMIN_TOKEN}\"\n{fronts}\n{}",
        agent(&agent_id, &format!("http://{backend}"), Api::Guayaba, "")
    );
    let gw = spawn_gateway(&text).await;
    let admin = gw.running.addrs[&ADMIN_LISTEN.parse::<SocketAddr>().expect("addr")];
    (gw, admin, agent_id)
}

/// A client without a key (a browser's preflight never carries one).
fn bare() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(PATIENCE)
        .build()
        .expect("client")
}

fn header<'r>(r: &'r reqwest::Response, name: &str) -> Option<&'r str> {
    r.headers().get(name).and_then(|v| v.to_str().ok())
}

async fn preflight(gw: &Gateway, path: &str, origin: &str) -> reqwest::Response {
    bare()
        .request(reqwest::Method::OPTIONS, gw.url(path))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization, content-type, x-made-up",
        )
        .send()
        .await
        .expect("the gateway answers")
}

#[tokio::test]
async fn a_preflight_from_an_allowed_origin_is_answered_before_any_key_check() {
    let (gw, _, agent) = gateway().await;
    let path = chat_path(Api::Chatbase, &agent, true);
    // No key at all: a preflight never carries one.
    let r = preflight(&gw, &path, ALLOWED).await;
    assert_eq!(r.status(), 204);
    assert_eq!(header(&r, "access-control-allow-origin"), Some(ALLOWED));
    assert_eq!(header(&r, "access-control-max-age"), Some("600"));
    assert_eq!(header(&r, "vary"), Some("Origin"));
    // What was asked for, within the listed headers.
    assert_eq!(
        header(&r, "access-control-allow-headers"),
        Some("authorization, content-type")
    );
    let methods = header(&r, "access-control-allow-methods").expect("methods");
    assert!(
        methods.contains("POST") && methods.contains("GET"),
        "{methods}"
    );

    // Another origin, and a front that lists no origin: no CORS headers.
    for (path, origin) in [
        (path.clone(), REFUSED),
        (chat_path(Api::Guayaba, &agent, true), ALLOWED),
    ] {
        let r = preflight(&gw, &path, origin).await;
        assert_ne!(r.status(), 204, "{path} {origin}");
        assert!(
            r.headers()
                .keys()
                .all(|k| !k.as_str().starts_with("access-control-")),
            "{path} from {origin}: {:?}",
            r.headers()
        );
    }
}

#[tokio::test]
async fn answers_to_an_allowed_origin_carry_cors_headers_streams_and_errors_alike() {
    let (gw, _, agent) = gateway().await;
    let path = chat_path(Api::Chatbase, &agent, true);
    let body = chat_body(Api::Chatbase, "Hello from a browser", None, true);

    // A streamed answer, read to its end.
    let r = client_with(test_key())
        .post(gw.url(&path))
        .header("origin", ALLOWED)
        .json(&body)
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "access-control-allow-origin"), Some(ALLOWED));
    let exposed = header(&r, "access-control-expose-headers")
        .expect("exposed headers")
        .to_owned();
    for name in [
        "x-request-id",
        "x-vercel-ai-ui-message-stream",
        "ratelimit",
        "ratelimit-policy",
        "retry-after",
        "idempotent-replayed",
        "x-conversation-id",
    ] {
        assert!(exposed.contains(name), "{name} in {exposed}");
    }
    assert!(header(&r, "x-request-id").is_some());
    let answer = read_stream("ui-message", &r.text().await.expect("body"));
    assert!(
        answer.ended_properly && !answer.text.is_empty(),
        "{answer:?}"
    );

    // An error (no key): the same headers, so the page can read why.
    let r = bare()
        .post(gw.url(&path))
        .header("origin", ALLOWED)
        .json(&body)
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 401);
    assert_eq!(header(&r, "access-control-allow-origin"), Some(ALLOWED));
    assert!(header(&r, "access-control-expose-headers").is_some());

    // The refused origin gets its answer (CORS is the browser's check) but no CORS headers.
    let r = client_with(test_key())
        .post(gw.url(&path))
        .header("origin", REFUSED)
        .json(&body)
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 200);
    assert!(header(&r, "access-control-allow-origin").is_none());
    assert!(header(&r, "access-control-expose-headers").is_none());
    let answer = read_stream("ui-message", &r.text().await.expect("body"));
    assert!(answer.ended_properly);
}

#[tokio::test]
async fn the_console_origin_may_call_every_front() {
    let (gw, admin, agent) = gateway().await;
    let console = format!("http://{admin}");
    for front in SEED_FRONTS {
        let path = chat_path(front, &agent, true);
        let r = preflight(&gw, &path, &console).await;
        assert_eq!(r.status(), 204, "{front}");
        assert_eq!(
            header(&r, "access-control-allow-origin"),
            Some(console.as_str())
        );
    }
    // The same port on another host is not the console.
    let other = format!("http://127.0.0.3:{}", admin.port());
    let r = preflight(&gw, &chat_path(Api::Agents, &agent, true), &other).await;
    assert!(header(&r, "access-control-allow-origin").is_none());
    // A streamed answer to the console.
    let r = send_chat_from(&gw, Api::Guayaba, &agent, &console).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        header(&r, "access-control-allow-origin"),
        Some(console.as_str())
    );
    let answer = read_stream("session-delta", &r.text().await.expect("body"));
    assert!(answer.ended_properly);
}

async fn send_chat_from(gw: &Gateway, front: Api, agent: &str, origin: &str) -> reqwest::Response {
    client_with(test_key())
        .post(gw.url(&chat_path(front, agent, true)))
        .header("origin", origin)
        .header("accept", "text/event-stream")
        .json(&chat_body(front, "Hi", None, true))
        .send()
        .await
        .expect("answer")
}
