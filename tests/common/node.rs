//! The AI SDK harness in `tests/js`: `node`, and `node_modules` as `package-lock.json` pins it,
//! installed with `npm ci` on first use. Test binaries run at once, so one installs (under a
//! lock directory) while the others wait. Without `node`/`npm` the AI SDK tests skip, saying
//! why — except under `CI=true`, where they fail.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Longest wait for another test binary's `npm ci`.
const INSTALL_WAIT: Duration = Duration::from_secs(600);

/// `tests/js`, ready to run, or why it cannot run here (the caller prints it and skips).
/// Panics when it cannot run under `CI=true`, or when `npm ci` fails.
pub fn node_harness() -> Result<PathBuf, String> {
    static READY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let ready = READY.get_or_init(|| prepare(&js_dir())).clone();
    if let Err(why) = &ready {
        if in_ci() {
            panic!("CI=true and the AI SDK client tests cannot run: {why}");
        }
    }
    ready
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

fn js_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/js")
}

pub fn runs(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Makes `dir` (a copy of `tests/js`) ready: `npm ci` unless its `node_modules` already
/// matches its `package-lock.json`, one process or thread at a time.
pub fn prepare(dir: &Path) -> Result<PathBuf, String> {
    let dir = dir.to_path_buf();
    if !runs("node") {
        return Err("`node` is not on PATH".into());
    }
    let lock = dir.join(".npm-install.lock");
    wait_unlocked(&lock);
    if installed(&dir)? {
        return Ok(dir);
    }
    if !runs("npm") {
        return Err(format!(
            "{} is not installed and `npm` is not on PATH (run `npm ci --prefix tests/js`)",
            dir.join("node_modules").display()
        ));
    }
    let _guard = InstallLock::acquire(&lock);
    // Another test binary may have installed it while this one waited.
    if installed(&dir)? {
        return Ok(dir);
    }
    eprintln!("installing the AI SDK harness: npm ci --prefix tests/js");
    let out = Command::new("npm")
        .arg("ci")
        .arg("--prefix")
        .arg(&dir)
        .args(["--no-audit", "--no-fund", "--loglevel=error"])
        .output()
        .unwrap_or_else(|e| panic!("npm ci could not start: {e}"));
    assert!(
        out.status.success(),
        "npm ci --prefix tests/js failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        installed(&dir)?,
        "npm ci succeeded but tests/js/node_modules does not match package-lock.json"
    );
    Ok(dir)
}

/// Every package `package-lock.json` pins is in `node_modules` at its version.
fn installed(dir: &Path) -> Result<bool, String> {
    let read =
        |path: &Path| -> Option<Value> { serde_json::from_slice(&std::fs::read(path).ok()?).ok() };
    let lock = read(&dir.join("package-lock.json"))
        .ok_or_else(|| format!("{} is unreadable", dir.join("package-lock.json").display()))?;
    let packages = lock["packages"]
        .as_object()
        .ok_or("package-lock.json has no `packages`")?;
    let pinned: Vec<_> = packages
        .iter()
        .filter(|(path, _)| path.starts_with("node_modules/"))
        .collect();
    if pinned.is_empty() {
        return Err("package-lock.json pins no packages".into());
    }
    Ok(pinned.into_iter().all(|(path, entry)| {
        read(&dir.join(path).join("package.json"))
            .is_some_and(|manifest| manifest["version"] == entry["version"])
    }))
}

/// Waits while another process holds `lock` (it is installing).
fn wait_unlocked(lock: &Path) {
    let started = Instant::now();
    while lock.exists() && !stale(lock) {
        assert!(
            started.elapsed() < INSTALL_WAIT,
            "{} has been held for {} s; remove it if no test is running",
            lock.display(),
            INSTALL_WAIT.as_secs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A lock whose holder is gone (its process id, written inside, no longer runs).
fn stale(lock: &Path) -> bool {
    let Ok(pid) = std::fs::read_to_string(lock.join("pid")) else {
        // Being created, or removed meanwhile.
        return false;
    };
    cfg!(target_os = "linux") && !Path::new("/proc").join(pid.trim()).exists()
}

/// A directory created atomically; removed when dropped.
struct InstallLock(PathBuf);

impl InstallLock {
    fn acquire(lock: &Path) -> InstallLock {
        let started = Instant::now();
        loop {
            match std::fs::create_dir(lock) {
                Ok(()) => {
                    let _ = std::fs::write(lock.join("pid"), std::process::id().to_string());
                    return InstallLock(lock.to_path_buf());
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    if stale(lock) {
                        let _ = std::fs::remove_dir_all(lock);
                        continue;
                    }
                    assert!(
                        started.elapsed() < INSTALL_WAIT,
                        "{} is held; remove it if no test is running",
                        lock.display()
                    );
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => panic!("cannot create {}: {e}", lock.display()),
            }
        }
    }
}

impl Drop for InstallLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `check` on every case, four at a time (each runs a node process), and fails once with
/// every failure listed: `what` names the judge, `name` a case. `check` gets the case's index.
pub fn check_all<C: Sync>(
    what: &str,
    cases: &[C],
    name: impl Fn(&C) -> String,
    check: impl Fn(usize, &C) -> Result<(), String> + Sync,
) {
    let mut failures = Vec::new();
    for (b, batch) in cases.chunks(4).enumerate() {
        std::thread::scope(|s| {
            let handles: Vec<_> = batch
                .iter()
                .enumerate()
                .map(|(i, case)| {
                    let check = &check;
                    (case, s.spawn(move || check(b * 4 + i, case)))
                })
                .collect();
            for (case, h) in handles {
                if let Err(e) = h.join().unwrap() {
                    failures.push(format!("{}: {e}", name(case)));
                }
            }
        });
    }
    assert!(
        failures.is_empty(),
        "{} of {} bodies failed the {what} check:\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}
