//! AG-UI's own packages as test parties: `@ag-ui/client`'s `HttpAgent` reading a stream (handed
//! to it, or fetched from the gateway itself), and an agent backend written with
//! `@ag-ui/encoder` (`tests/js/ag-ui-backend.mjs`). Each returns `None` (after saying why)
//! where node cannot run, so the tests skip as the AI SDK ones do.

use std::process::Stdio;
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

use super::{node_harness, PATIENCE};

/// The four seed fronts plus the ag-ui front under `/ag-ui`.
pub fn config_with_ag_ui(server_extra: &str, agents: &[String]) -> String {
    format!(
        "{}\n[[front]]\napi = \"ag-ui\"\nprefix = \"/ag-ui\"\n",
        super::config(server_extra, agents)
    )
}

/// Runs `check-ag-ui-stream.mjs` with `args` (and `stdin` piped in) and returns its verdict.
async fn ag_ui_check(args: &[&str], stdin: Option<&str>) -> Option<Value> {
    let dir = match node_harness() {
        Ok(dir) => dir,
        Err(why) => {
            eprintln!("skip @ag-ui/client check: {why}");
            return None;
        }
    };
    let mut child = Command::new("node")
        .arg(dir.join("check-ag-ui-stream.mjs"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node starts");
    let mut input = child.stdin.take().expect("stdin");
    if let Some(body) = stdin {
        input.write_all(body.as_bytes()).await.expect("write body");
    }
    drop(input);
    let out = tokio::time::timeout(PATIENCE, child.wait_with_output())
        .await
        .expect("node answers in time")
        .expect("node runs");
    let line = String::from_utf8_lossy(&out.stdout);
    Some(serde_json::from_str(line.trim()).unwrap_or_else(|e| {
        panic!(
            "check-ag-ui-stream.mjs printed no JSON ({e}): {line}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    }))
}

/// `@ag-ui/client` (verification on) reading `body`; with `thread`, RUN_STARTED must carry it.
pub async fn check_ag_ui_stream(body: &str, thread: Option<&str>) -> Option<Value> {
    let mut args = vec!["-"];
    if let Some(t) = thread {
        args.extend(["--thread-id", t]);
    }
    ag_ui_check(&args, Some(body)).await
}

/// `@ag-ui/client`'s `HttpAgent` POSTing its own `RunAgentInput` (one user message) to `url`
/// with `authorization: Bearer key`, and reading the answer (verification on).
pub async fn ag_ui_client_run(
    url: &str,
    key: &str,
    message: &str,
    thread: Option<&str>,
) -> Option<Value> {
    let mut args = vec!["--url", url, "--key", key, "--message", message];
    if let Some(t) = thread {
        args.extend(["--thread-id", t]);
    }
    ag_ui_check(&args, None).await
}

/// The texts of the assistant messages `@ag-ui/client` assembled, joined.
pub fn client_text(verdict: &Value) -> String {
    verdict["texts"]
        .as_array()
        .map(|t| t.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// `tests/js/ag-ui-backend.mjs`: an AG-UI agent written with `@ag-ui/encoder`, on loopback.
/// It is killed when dropped.
pub struct EncoderBackend {
    _child: Child,
    pub port: u16,
    received: Arc<Mutex<Vec<Value>>>,
}

impl EncoderBackend {
    pub async fn spawn() -> Option<EncoderBackend> {
        let dir = match node_harness() {
            Ok(dir) => dir,
            Err(why) => {
                eprintln!("skip @ag-ui/encoder backend: {why}");
                return None;
            }
        };
        let mut child = Command::new("node")
            .arg(dir.join("ag-ui-backend.mjs"))
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("node starts");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let first = tokio::time::timeout(PATIENCE, lines.next_line())
            .await
            .expect("the backend says its port in time")
            .expect("stdout")
            .expect("a first line");
        let port: Value = serde_json::from_str(&first).expect("{\"port\":N}");
        let port = port["port"].as_u64().expect("port") as u16;
        let received = Arc::new(Mutex::new(Vec::new()));
        let sink = received.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    sink.lock().unwrap().push(v);
                }
            }
        });
        Some(EncoderBackend {
            _child: child,
            port,
            received,
        })
    }

    /// The URL agentgate's `upstream` points at (any path: the agent's URL as it stands).
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/agent/run", self.port)
    }

    /// Every `{input, headers, path}` the backend was sent, in order, once it has printed `n`
    /// (it prints each before answering; the line may still be on its way here).
    pub async fn received(&self, n: usize) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let seen = self.received.lock().unwrap().clone();
            if seen.len() >= n || tokio::time::Instant::now() > deadline {
                return seen;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
}
