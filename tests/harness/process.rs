//! The real `agentgate serve` binary as a child process, for the tests that must `kill -9` it,
//! restart it, or run several replicas. Its stdout (JSON logs) is drained by a thread, so
//! logging never blocks it, and the bound addresses are read from its `listening` and
//! `admin listener` lines.

use std::io::BufRead;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use serde_json::Value;

use super::PATIENCE;

/// A gateway process, killed (SIGKILL) when dropped so a failing test leaves none behind.
pub struct ServeProcess {
    /// Shared so that another thread (a kill switch) can `kill -9` it at a chosen moment.
    pub child: Arc<Mutex<Option<Child>>>,
    /// The main listener.
    pub addr: SocketAddr,
    /// The admin listener, when the config has one.
    pub admin: Option<SocketAddr>,
}

impl ServeProcess {
    /// `agentgate serve --config FILE`, waiting until the main listener is bound (and the
    /// admin listener, when `with_admin`).
    pub fn start(config: &Path, with_admin: bool) -> ServeProcess {
        Self::start_with(
            Command::new(env!("CARGO_BIN_EXE_agentgate")),
            config,
            with_admin,
        )
    }

    /// As [`start`](Self::start), from a prepared command (extra environment).
    pub fn start_with(mut command: Command, config: &Path, with_admin: bool) -> ServeProcess {
        let mut child = command
            .arg("serve")
            .arg("--config")
            .arg(config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("agentgate serve starts");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let Ok(v) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                let admin = match v["fields"]["message"].as_str() {
                    Some("listening") => false,
                    Some("admin listener") => true,
                    _ => continue,
                };
                if let Some(Ok(bound)) = v["fields"]["bound"].as_str().map(str::parse) {
                    let _ = tx.send((admin, bound));
                }
            }
        });
        let (mut addr, mut admin) = (None, None);
        while addr.is_none() || (with_admin && admin.is_none()) {
            let (is_admin, bound) = rx
                .recv_timeout(PATIENCE)
                .expect("the gateway logs its bound addresses");
            match is_admin {
                true => admin = Some(bound),
                false => addr = addr.or(Some(bound)),
            }
        }
        ServeProcess {
            child: Arc::new(Mutex::new(Some(child))),
            addr: addr.expect("main listener"),
            admin,
        }
    }

    /// `http://ADDR` of the main listener.
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `kill -9`, once (whoever calls first).
    pub fn kill(&self) {
        kill(&self.child);
    }
}

/// `kill -9` of a shared child, once (whoever calls first).
pub fn kill(child: &Mutex<Option<Child>>) {
    if let Some(mut child) = child.lock().unwrap_or_else(|e| e.into_inner()).take() {
        child.kill().expect("SIGKILL");
        child.wait().expect("reaped");
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        kill(&self.child);
    }
}
