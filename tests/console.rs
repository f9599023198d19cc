//! The console (issue 18, SPEC §12): its files on the admin listener, the admin API endpoints
//! it needs (agents, fronts, accounts, usage per hour), and the whole console driven in
//! headless Chromium against the quick start config (`tests/js/console.mjs`).

mod harness;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use agentgate::fronts::Api;
use harness::*;
use serde_json::Value;

const ADMIN_LISTEN: &str = "127.0.0.2:0";
const ADMIN_TOKEN: &str = "console-test-admin-token-0123456789";

async fn gateway_with_admin(agents: &[String]) -> (Gateway, SocketAddr) {
    let server = format!("admin_listen = \"{ADMIN_LISTEN}\"\nadmin_token = \"{ADMIN_TOKEN}\"");
    let gw = spawn_gateway(&config(&server, agents)).await;
    let admin = gw.running.addrs[&ADMIN_LISTEN.parse::<SocketAddr>().expect("addr")];
    (gw, admin)
}

async fn admin_get(admin: SocketAddr, path: &str) -> (u16, Value) {
    let r = client()
        .get(format!("http://{admin}{path}"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("the admin listener answers");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn the_console_files_are_served_on_the_admin_listener() {
    let (_gw, admin) = gateway_with_admin(&[]).await;
    let get = |path: &str| {
        let url = format!("http://{admin}{path}");
        async move {
            reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client")
                .get(url)
                .send()
                .await
                .expect("answer")
        }
    };
    let r = get("/console").await;
    assert_eq!(r.status(), 308);
    assert_eq!(r.headers()["location"], "/console/");
    let r = get("/console/").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/html; charset=utf-8");
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .expect("csp")
        .to_owned();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    let html = r.text().await.expect("html");
    assert!(html.contains("<script src=\"app.js\""));
    // Nothing from elsewhere: no absolute URL in the page.
    assert!(!html.contains("https://") && !html.contains("http://"));
    for (path, ty) in [
        ("/console/app.js", "text/javascript; charset=utf-8"),
        ("/console/app.css", "text/css; charset=utf-8"),
    ] {
        let r = get(path).await;
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(r.headers()["content-type"], ty);
    }
    assert_eq!(get("/console/nothing.js").await.status(), 404);
    // The page needs no token; the API behind it does.
    let r = client()
        .get(format!("http://{admin}/admin/v1/agents"))
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
}

#[tokio::test]
async fn agents_fronts_accounts_and_usage_per_hour() {
    let slow = demo_agent_with_delay(Api::Agents, Duration::from_millis(300)).await;
    let fast = demo_agent(Api::Chatbase).await;
    let (slow_id, fast_id) = (agent_id(1), agent_id(2));
    let (gw, admin) = gateway_with_admin(&[
        agent(
            &slow_id,
            &format!("http://{slow}"),
            Api::Agents,
            "name = \"Slow\"\ncredits_per_message = 2\nmax_usage_credits = 0",
        ),
        agent(
            &fast_id,
            &format!("http://{fast}"),
            Api::Chatbase,
            "credits_per_message = 1.5\nmax_usage_credits = 0",
        ),
    ])
    .await;

    // Fronts: where the playground sends chats (the bound address).
    let (status, fronts) = admin_get(admin, "/admin/v1/fronts").await;
    assert_eq!(status, 200);
    let fronts = fronts["fronts"].as_array().expect("fronts");
    assert_eq!(fronts.len(), 4);
    assert!(fronts.iter().all(|f| f["listen"] == gw.addr.to_string()));
    let chatbase = fronts
        .iter()
        .find(|f| f["api"] == "chatbase")
        .expect("chatbase");
    assert_eq!(chatbase["prefix"], "/chatbase");
    assert_eq!(chatbase["format"], "ui-message");
    assert_eq!(chatbase["require_key"], true);

    // Two chats with the fast agent, then a stream of the slow one held open.
    let c = client_with(test_key());
    for _ in 0..2 {
        let r = send_chat(&c, &gw, Api::Agents, &fast_id, "Hi", None, false).await;
        assert_eq!(r.status(), 200);
    }
    let open = send_chat(
        &c,
        &gw,
        Api::Agents,
        &slow_id,
        "one two three four five six seven eight",
        None,
        true,
    )
    .await;
    assert_eq!(open.status(), 200);
    // The sync chats' settlements are durable.
    balance(&gw.running, TEST_ACCOUNT).await;
    let (_, agents) = admin_get(admin, "/admin/v1/agents").await;
    let find = |id: &str| {
        agents["agents"]
            .as_array()
            .expect("agents")
            .iter()
            .find(|a| a["id"] == id)
            .cloned()
            .expect("agent listed")
    };
    let (s, f) = (find(&slow_id), find(&fast_id));
    assert_eq!(s["name"], "Slow");
    assert_eq!(s["upstream_api"], "agents");
    assert_eq!(s["credits_per_message"], 2.0);
    assert_eq!(s["up"], true);
    assert_eq!(s["open_streams"], 1, "{s}");
    assert_eq!(f["open_streams"], 0);
    assert_eq!(f["requests_last_hour"], 2, "{f}");
    assert_eq!(f["credits_last_hour"], 3.0, "{f}");
    // The stream ends: no stream open any more.
    let body = open.text().await.expect("stream");
    assert!(read_stream("text-done", &body).ended_properly);
    let mut closed = false;
    for _ in 0..100 {
        let (_, agents) = admin_get(admin, "/admin/v1/agents").await;
        let s = agents["agents"]
            .as_array()
            .and_then(|a| a.iter().find(|a| a["id"] == slow_id.as_str()).cloned())
            .expect("agent");
        if s["open_streams"] == 0 {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(closed, "the open stream count falls back to 0");

    // Accounts: the test account with what it was granted and charged.
    balance(&gw.running, TEST_ACCOUNT).await;
    let (status, accounts) = admin_get(admin, "/admin/v1/accounts").await;
    assert_eq!(status, 200);
    let test = accounts["accounts"]
        .as_array()
        .and_then(|a| a.iter().find(|a| a["account"] == TEST_ACCOUNT).cloned())
        .expect("test account listed");
    assert_eq!(test["granted"], 1e9);
    assert_eq!(test["charged"], 5.0, "{test}");
    assert_eq!(test["balance"], 1e9 - 5.0);

    // Usage per hour and agent: this hour holds all three requests.
    let (status, hourly) = admin_get(
        admin,
        &format!("/admin/v1/usage/hourly?account={TEST_ACCOUNT}&hours=24"),
    )
    .await;
    assert_eq!(status, 200, "{hourly}");
    assert_eq!(hourly["hours"], 24);
    let buckets = hourly["buckets"].as_array().expect("buckets");
    let of = |id: &str| {
        buckets
            .iter()
            .find(|b| b["agent"] == id)
            .cloned()
            .expect("bucket")
    };
    assert_eq!(buckets.len(), 2, "{hourly}");
    assert_eq!(of(&fast_id)["requests"], 2);
    assert_eq!(of(&fast_id)["credits"], 3.0);
    assert_eq!(of(&slow_id)["requests"], 1);
    assert_eq!(of(&slow_id)["credits"], 2.0);
    let hour = of(&fast_id)["hour"].as_str().expect("hour").to_owned();
    assert!(
        hour.ends_with(":00:00Z") || hour.ends_with(":00:00.000Z"),
        "{hour}"
    );
    assert!(hourly["since"].as_str().expect("since") <= hour.as_str());
    // Another account has none; a window out of range is refused.
    let (_, none) = admin_get(admin, "/admin/v1/usage/hourly?account=nobody").await;
    assert_eq!(none["buckets"].as_array().map(Vec::len), Some(0));
    for bad in ["0", "745", "x"] {
        let (status, body) = admin_get(admin, &format!("/admin/v1/usage/hourly?hours={bad}")).await;
        assert_eq!(status, 400, "hours={bad}: {body}");
    }
}

/// Chromium, or the reason the browser test cannot run here.
fn chromium() -> Result<&'static str, String> {
    const PATH: &str = "/usr/bin/chromium";
    if !Path::new(PATH).exists() {
        return Err(format!(
            "{PATH} is missing (apt-get install chromium; .ci/run installs it)"
        ));
    }
    node_harness()?;
    let js = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/js/node_modules/puppeteer-core");
    if !js.is_dir() {
        return Err(format!(
            "{} is missing; run `npm ci --prefix tests/js`",
            js.display()
        ));
    }
    Ok(PATH)
}

/// The quick start config (`config/agentgate.toml`) on free ports and a temporary store.
fn quick_start(dir: &Path) -> String {
    let shipped = include_str!("../config/agentgate.toml");
    let text = shipped
        .replace(
            "listen = \"127.0.0.1:8080\"",
            &format!("listen = \"{LOOPBACK}\""),
        )
        .replace(
            "admin_listen = \"127.0.0.1:9090\"",
            &format!("admin_listen = \"{ADMIN_LISTEN}\""),
        )
        .replace(
            "admin_token_file = \"data/admin-token.txt\"",
            &format!(
                "admin_token_file = \"{}\"",
                dir.join("admin-token.txt").display()
            ),
        )
        .replace(
            "url = \"sqlite://data/agentgate.db\"",
            &format!("url = \"sqlite://{}\"", dir.join("agentgate.db").display()),
        );
    assert_ne!(text, shipped, "the quick start config changed shape");
    text
}

#[tokio::test]
async fn the_console_in_a_real_browser_on_the_quick_start() {
    let chromium = match chromium() {
        Ok(path) => path,
        Err(reason) => {
            eprintln!("SKIPPED: {reason}");
            return;
        }
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let gw = spawn_gateway(&quick_start(dir.path())).await;
    let admin = gw.running.addrs[&ADMIN_LISTEN.parse::<SocketAddr>().expect("addr")];
    let token = std::fs::read_to_string(dir.path().join("admin-token.txt"))
        .expect("the quick start wrote its admin token");
    let screenshots = std::env::var("CONSOLE_SCREENSHOTS").unwrap_or_default();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/js/console.mjs");
    let child = tokio::process::Command::new("node")
        .arg(&script)
        .env("CONSOLE_URL", format!("http://{admin}/console/"))
        .env("ADMIN_TOKEN", token.trim())
        .env("CHROMIUM", chromium)
        .env("SCREENSHOTS", &screenshots)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node starts");
    let out = tokio::time::timeout(Duration::from_secs(180), child.wait_with_output())
        .await
        .expect("the browser test ends within 3 minutes")
        .expect("node ran");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let result: Value = serde_json::from_str(stdout.trim().lines().last().unwrap_or(""))
        .unwrap_or_else(|e| {
            panic!(
                "no result from the browser ({e}):\n{stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    assert_eq!(result["ok"], true, "{result:#}");
    assert_eq!(
        result["console_errors"],
        serde_json::json!([]),
        "{result:#}"
    );
    println!(
        "console: {} bytes embedded; first paint {} ms, first contentful paint {} ms; steps {}",
        agentgate::admin::console::EMBEDDED_BYTES,
        result["first_paint_ms"],
        result["first_contentful_paint_ms"],
        result["steps"]
    );
    // What the playground charged was taken from the account the console shows.
    let demo = balance(&gw.running, "demo").await;
    assert!(demo > 1000.0 && demo < 1250.0, "demo balance {demo}");
}
