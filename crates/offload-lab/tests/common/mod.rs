//! Running the `offload-lab` binary from tests: every wait bounded, every
//! child reaped.

#![allow(dead_code)] // each test file uses a different part

use std::io::Read;
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// Generous bound for one short command on a loaded 2-core machine
/// (debug build).
pub(crate) const TIMEOUT: Duration = Duration::from_secs(120);

/// The binary under test.
pub(crate) fn lab() -> Command {
    Command::new(env!("CARGO_BIN_EXE_offload-lab"))
}

/// Runs `offload-lab args…` to completion, killing it after [`TIMEOUT`].
/// Panics (with its stderr) unless it exits successfully.
pub(crate) fn run(args: &[&str]) -> Output {
    run_with_env(args, &[])
}

/// [`run`] with extra environment variables (worker processes inherit them).
pub(crate) fn run_with_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut child = lab()
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn offload-lab");
    // Drain both pipes on their own threads so a full pipe never stalls the child.
    let out = drain(child.stdout.take().expect("stdout"));
    let err = drain(child.stderr.take().expect("stderr"));
    let status = wait_bounded(&mut child, TIMEOUT);
    let output = Output {
        status,
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
    };
    assert!(
        output.status.success(),
        "offload-lab {args:?} failed: {}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn drain(mut r: impl Read + Send + 'static) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        buf
    })
}

/// Waits for `child` at most `timeout`; then kills and reaps it, and panics.
pub(crate) fn wait_bounded(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            panic!("offload-lab did not finish within {timeout:?}");
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Pids of the live processes whose environment holds `var=value`
/// (Linux: read from `/proc`; processes we may not read are skipped).
/// Tag a run with a unique variable and its worker processes, which
/// inherit it, can be found after it exits.
pub(crate) fn processes_with_env(var: &str, value: &str) -> Vec<u32> {
    let needle = format!("{var}={value}");
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let e = e.ok()?;
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let env = std::fs::read(e.path().join("environ")).ok()?;
        env.split(|b| *b == 0)
            .any(|kv| kv == needle.as_bytes())
            .then_some(pid)
    })
    .collect()
}

/// Waits (at most `timeout`) until no live process carries `var=value`;
/// panics with their pids otherwise.
pub(crate) fn assert_no_process_with_env(var: &str, value: &str, timeout: Duration) {
    let start = Instant::now();
    loop {
        let left = processes_with_env(var, value);
        if left.is_empty() {
            return;
        }
        assert!(
            start.elapsed() < timeout,
            "worker processes left behind: {left:?}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// Every stdout line parsed as JSON (panics on a line that is not).
pub(crate) fn json_lines(output: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// The `"kind": "row"` objects.
pub(crate) fn rows(lines: &[serde_json::Value]) -> Vec<&serde_json::Value> {
    lines.iter().filter(|v| v["kind"] == "row").collect()
}

/// The verdict of the row with this experiment and mode.
pub(crate) fn verdict<'a>(lines: &'a [serde_json::Value], experiment: &str, mode: &str) -> &'a str {
    lines
        .iter()
        .find(|v| v["kind"] == "row" && v["experiment"] == experiment && v["mode"] == mode)
        .unwrap_or_else(|| panic!("no row {experiment}/{mode} in {lines:?}"))["verdict"]
        .as_str()
        .expect("verdict is a string")
}

pub(crate) const BLOCKED: &str = "loop blocked";
pub(crate) const RESPONSIVE: &str = "loop responsive";
