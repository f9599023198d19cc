//! The admin HTTP handler and the CLI `run` functions, against real SQLite files.

mod policy_support;

use agentgate::admin::{handle, AdminCtx};
use agentgate::auth::{AuthError, Authenticator};
use agentgate::cli::admin::{self as cli, CreditsArgs, KeysArgs, UsageArgs};
use bytes::Bytes;
use clap::Parser;
use http::{Method, Request, StatusCode};
use policy_support::{fixture, req};
use serde_json::{json, Value};

const TOKEN: &str = "s3cret-admin-token";

fn request(method: Method, uri: &str, token: Option<&str>, body: Option<Value>) -> Request<Bytes> {
    let mut b = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    let body = body.map_or_else(Bytes::new, |v| Bytes::from(v.to_string()));
    b.body(body).expect("request")
}

async fn call(
    ctx: &AdminCtx,
    method: Method,
    uri: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let resp = handle(request(method, uri, Some(TOKEN), body), ctx).await;
    let status = resp.status();
    assert_eq!(resp.headers()["content-type"], "application/json");
    let v: Value = serde_json::from_slice(resp.body()).expect("JSON body");
    (status, v)
}

fn assert_error_shape(v: &Value, code: &str) {
    assert_eq!(v["error"]["code"], code, "{v}");
    assert!(v["error"]["message"].is_string());
    assert!(v["error"].get("details").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_requires_the_token() {
    let fx = fixture().await;
    let ctx = AdminCtx::new(fx.ledger.clone(), TOKEN);
    for token in [
        None,
        Some("wrong"),
        Some(""),
        Some("s3cret-admin-token-and-more"),
    ] {
        let resp = handle(request(Method::GET, "/admin/v1/keys", token, None), &ctx).await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        let v: Value = serde_json::from_slice(resp.body()).expect("json");
        assert_error_shape(&v, "unauthorized");
    }
    // An empty configured token disables the API.
    let closed = AdminCtx::new(fx.ledger.clone(), "");
    let resp = handle(
        request(Method::GET, "/admin/v1/keys", Some(""), None),
        &closed,
    )
    .await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_routes() {
    let fx = fixture().await;
    let ctx = AdminCtx::new(fx.ledger.clone(), TOKEN);
    let auth = Authenticator::new(fx.store.clone());

    // Create a key.
    let (s, created) = call(
        &ctx,
        Method::POST,
        "/admin/v1/keys",
        Some(
            json!({"account": "acme", "scopes": ["agents:run", "agents:stream"],
                    "agents": ["a1"], "rate_per_second": 5, "max_streams": 2}),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    let key = created["key"].as_str().expect("full key once").to_owned();
    let id = created["public_id"].as_str().expect("id").to_owned();
    assert_eq!(created["scopes"], json!(["agents:run", "agents:stream"]));
    let header = format!("Bearer {key}");
    let info = auth
        .authenticate(Some(&header), false)
        .await
        .expect("works");
    assert_eq!(info.public_id(), id);

    // List: the key shows, its secret never does.
    let (s, list) = call(&ctx, Method::GET, "/admin/v1/keys?account=acme", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(list["keys"][0]["public_id"], id.as_str());
    assert!(!list.to_string().contains(&key));
    let (_, none) = call(&ctx, Method::GET, "/admin/v1/keys?account=other", None).await;
    assert_eq!(none["keys"], json!([]));

    // Credits.
    let (s, g) = call(
        &ctx,
        Method::POST,
        "/admin/v1/accounts/acme/credits",
        Some(json!({"credits": 12.5, "memo": "invoice 7"})),
    )
    .await;
    assert_eq!((s, g["balance"].as_f64()), (StatusCode::OK, Some(12.5)));
    let (_, b) = call(&ctx, Method::GET, "/admin/v1/accounts/acme/credits", None).await;
    assert_eq!(b["balance"].as_f64(), Some(12.5));
    let (s, bad) = call(
        &ctx,
        Method::POST,
        "/admin/v1/accounts/acme/credits",
        Some(json!({"credits": -1})),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_error_shape(&bad, "invalid_request");

    // Usage after one charged request.
    let r = fx
        .ledger
        .reserve(req("acme", "u1", 3.0, 1.0))
        .await
        .expect("reserved");
    r.settle(2.0).await.expect("settled");
    let (s, u) = call(
        &ctx,
        Method::GET,
        "/admin/v1/usage?account=acme&since=2000-01-01T00%3A00%3A00Z",
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(u["usage"][0]["credits"].as_f64(), Some(2.0));
    assert_eq!(u["usage"][0]["requests"], 1);
    let (_, empty) = call(&ctx, Method::GET, "/admin/v1/usage?agent=nope", None).await;
    assert_eq!(empty["usage"], json!([]));
    let (s, e) = call(&ctx, Method::GET, "/admin/v1/usage?since=yesterday", None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_error_shape(&e, "invalid_request");

    // Revoke: refused at once by the gateway's authenticator sharing the store.
    let (s, _) = call(
        &ctx,
        Method::POST,
        &format!("/admin/v1/keys/{id}/revoke"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert!(matches!(
        auth.authenticate(Some(&header), false).await,
        Err(AuthError::Revoked)
    ));
    let (s, e) = call(&ctx, Method::POST, "/admin/v1/keys/unknown/revoke", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_error_shape(&e, "not_found");

    // Bad input, unknown routes and methods.
    let (s, e) = call(
        &ctx,
        Method::POST,
        "/admin/v1/keys",
        Some(json!({"account": "acme", "oops": 1})),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_error_shape(&e, "invalid_request");
    let (s, _) = call(
        &ctx,
        Method::POST,
        "/admin/v1/keys",
        Some(json!({"account": "acme", "scopes": "agents:fly"})),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, e) = call(&ctx, Method::DELETE, "/admin/v1/keys", None).await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
    assert_error_shape(&e, "method_not_allowed");
    let (s, e) = call(&ctx, Method::GET, "/admin/v2/keys", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_error_shape(&e, "not_found");
}

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    Keys(KeysArgs),
    Credits(CreditsArgs),
    Usage(UsageArgs),
}

async fn run(args: &[&str]) -> Result<String, agentgate::admin::AdminError> {
    let cli = Cli::try_parse_from(std::iter::once("agentgate").chain(args.iter().copied()))
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    let mut out = Vec::new();
    match cli.command {
        Command::Keys(a) => cli::run_keys(a, &mut out).await?,
        Command::Credits(a) => cli::run_credits(a, &mut out).await?,
        Command::Usage(a) => cli::run_usage(a, &mut out).await?,
    }
    Ok(String::from_utf8(out).expect("utf-8"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_commands_work_on_the_servers_file() {
    // The "server": a store, a ledger and an authenticator kept open throughout.
    let fx = fixture().await;
    let auth = Authenticator::new(fx.store.clone());
    let url = fx.url();
    // `--agents` must name agents of the config.
    let config = fx.dir.path().join("agentgate.toml");
    std::fs::write(
        &config,
        "[[front]]\napi = \"agents\"\n\n[[agent]]\nid = \"a1\"\nupstream = \"http://127.0.0.1:9\"\n\
         upstream_api = \"agents\"\n\n[[agent]]\nid = \"a2\"\nupstream = \"http://127.0.0.1:9\"\n\
         upstream_api = \"agents\"\n",
    )
    .expect("config written");
    let config = config.to_str().expect("utf-8 path");

    let out = run(&[
        "keys",
        "create",
        "--store",
        &url,
        "--config",
        config,
        "--account",
        "acme",
        "--scopes",
        "agents:run,agents:stream",
        "--agents",
        "a1,a2",
        "--expires-in-days",
        "30",
        "--rate-per-second",
        "5",
        "--rate-burst",
        "10",
        "--max-streams",
        "3",
    ])
    .await
    .expect("created");
    let key = out
        .lines()
        .find_map(|l| l.strip_prefix("key:"))
        .expect("key line")
        .trim()
        .to_owned();
    let id = out
        .lines()
        .find_map(|l| l.strip_prefix("public id:"))
        .expect("id line")
        .trim()
        .to_owned();
    let info = auth
        .authenticate(Some(&format!("Bearer {key}")), false)
        .await
        .expect("server accepts");
    assert_eq!(info.agents(), Some(&["a1".to_owned(), "a2".to_owned()][..]));
    assert_eq!(info.limits().rate_burst, Some(10));
    assert!(info.expires_at().is_some());

    // --store may also come before the subcommand.
    let master = run(&[
        "keys",
        "--store",
        &url,
        "create",
        "--account",
        "acme",
        "--kind",
        "master",
    ])
    .await
    .expect("master");
    assert!(master.contains("kind:      master"));

    for format in ["table", "json", "csv"] {
        let listed = run(&[
            "keys",
            "list",
            "--store",
            &url,
            "--account",
            "acme",
            "--format",
            format,
        ])
        .await
        .expect("listed");
        assert!(listed.contains(&id), "{format}: {listed}");
        assert!(!listed.contains(&key), "secret leaked in {format}");
    }

    let granted = run(&[
        "credits",
        "grant",
        "--store",
        &url,
        "--account",
        "acme",
        "--credits",
        "10",
        "--memo",
        "hi",
    ])
    .await
    .expect("granted");
    assert!(granted.contains("balance 10"));
    let r = fx
        .ledger
        .reserve(req("acme", "r1", 4.0, 1.0))
        .await
        .expect("server sees the grant");
    r.settle(1.5).await.expect("settled");
    let bal = run(&["credits", "balance", "--store", &url, "--account", "acme"])
        .await
        .expect("balance");
    assert_eq!(bal.trim(), "8.5");

    let csv = run(&[
        "usage",
        "--store",
        &url,
        "--account",
        "acme",
        "--hours",
        "1",
        "--format",
        "csv",
    ])
    .await
    .expect("usage");
    assert_eq!(
        csv,
        "account,key,agent,requests,credits,pending\nacme,key1,agent1,1,1.5,0\n"
    );
    let json_out = run(&[
        "usage",
        "--store",
        &url,
        "--key",
        "key1",
        "--format",
        "json",
        "--since",
        "2000-01-01",
        "--until",
        "2999-01-01T00:00:00Z",
    ])
    .await
    .expect("usage");
    let v: Value = serde_json::from_str(json_out.trim()).expect("json");
    assert_eq!(v["usage"][0]["credits"].as_f64(), Some(1.5));
    let table = run(&["usage", "--store", &url, "--agent", "agent1"])
        .await
        .expect("usage");
    assert!(table.starts_with("account") && table.contains("acme"));
    let future = run(&["usage", "--store", &url, "--since", "2999-01-01"])
        .await
        .expect("usage");
    assert_eq!(future.lines().count(), 1, "header only");
    assert!(run(&["usage", "--store", &url, "--since", "nope"])
        .await
        .is_err());

    // Revocation by the CLI reaches the running server within a second.
    let revoked = run(&["keys", "revoke", "--store", &url, &id])
        .await
        .expect("revoked");
    assert!(revoked.contains("revoked"));
    let t0 = std::time::Instant::now();
    while auth
        .authenticate(Some(&format!("Bearer {key}")), false)
        .await
        .is_ok()
    {
        assert!(t0.elapsed() < std::time::Duration::from_secs(1));
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(run(&["keys", "revoke", "--store", &url, "nosuchkey"])
        .await
        .is_err());
    assert!(run(&[
        "credits",
        "grant",
        "--store",
        &url,
        "--account",
        "bad account",
        "--credits",
        "1"
    ])
    .await
    .is_err());
    assert!(run(&["keys", "list", "--store", "postgres://nope"])
        .await
        .is_err());
}
