//! `offload-lab chaos --quick --json` runs clean: every scenario resolves
//! every call, leaves nothing behind, and the command exits successfully.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The scenarios the command must report (the shutdown one reports a line
/// per mode and pool).
const SCENARIOS: &[&str] = &[
    "kill-storm",
    "thread-panics",
    "runaway",
    "flood",
    "parent-death",
    "shutdown-drain/threads",
    "shutdown-now/threads",
    "shutdown-deadline/threads",
    "shutdown-drain/procs",
    "shutdown-now/procs",
    "shutdown-deadline/procs",
    "cancel-storm",
    "timeout-race",
    "subprocess-kill-storm",
    "cancel-storm/threads",
    "leak",
    "runaway-memory",
    "no-block/drop-threads",
    "no-block/build-dedicated",
    "no-block/drop-procs",
    "remote-kill-storm",
    "remote-server-restart/direct",
    "remote-server-restart/durable",
];

#[test]
fn quick_chaos_is_clean() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_offload-lab"))
        .args(["chaos", "--quick", "--json"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("offload-lab starts");
    let mut stdout = child.stdout.take().expect("piped stdout");
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        let _ = stdout.read_to_string(&mut out);
        out
    });
    // Every wait bounded: a hung run is killed (and reaped) after 5 minutes.
    let deadline = Instant::now() + Duration::from_secs(300);
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = reader.join().expect("reader");
    let status = status.unwrap_or_else(|| panic!("chaos did not finish within 300 s:\n{out}"));

    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let names: Vec<&str> = lines
        .iter()
        .map(|l| l["scenario"].as_str().expect("scenario"))
        .collect();
    assert_eq!(names, SCENARIOS, "{out}");
    for line in &lines {
        for key in ["submitted", "ok", "failed", "pool_size"] {
            assert!(line[key].is_u64(), "{key} missing: {line}");
        }
        for key in ["hung", "lost", "left_behind", "ran_twice", "unexpected"] {
            assert_eq!(line[key].as_u64(), Some(0), "{key}: {line}");
        }
        assert!(line["submitted"].as_u64() > Some(0), "{line}");
    }
    assert!(status.success(), "exit status {status}:\n{out}");
}
