//! `offload-lab cpu`: a countdown inline blocks the loop; offloaded (to a
//! thread or a worker process) or yielding, it does not. Each row runs 0.6 s; a blocked loop misses all
//! of it, so the verdict threshold is raised to 250 ms: a 2× margin on both
//! sides on a loaded machine (offloaded rows show gaps of 10–50 ms there).

mod common;
use common::*;

use std::time::Duration;

#[test]
fn smoke() {
    let out = run(&["cpu", "--mode", "thread", "--duration", "0.2s"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("× the seed's 50,000,000"), "{text}");
}

#[test]
fn blocking_is_blocked_offloaded_and_coop_are_responsive() {
    let out = run(&[
        "cpu",
        "--duration",
        "0.6s",
        "--threshold",
        "250ms",
        "--json",
    ]);
    let lines = json_lines(&out);
    assert_eq!(rows(&lines).len(), 5);
    assert_eq!(verdict(&lines, "cpu", "blocking"), BLOCKED);
    assert_eq!(verdict(&lines, "cpu", "default"), RESPONSIVE);
    assert_eq!(verdict(&lines, "cpu", "thread"), RESPONSIVE);
    assert_eq!(verdict(&lines, "cpu", "coop"), RESPONSIVE);
    assert_eq!(verdict(&lines, "cpu", "process"), RESPONSIVE);
    for row in rows(&lines) {
        assert!(row["countdown_steps"].as_u64().unwrap() > 0, "{row}");
    }
}

#[test]
fn coop_with_a_time_slice_is_responsive() {
    let out = run(&[
        "cpu",
        "--mode",
        "coop",
        "--slice",
        "1ms",
        "--duration",
        "0.4s",
        "--json",
    ]);
    let lines = json_lines(&out);
    assert_eq!(verdict(&lines, "cpu", "coop"), RESPONSIVE);
    assert!(
        rows(&lines)[0]["setting"]
            .as_str()
            .unwrap()
            .contains("slice=1ms")
    );
}

#[test]
fn process_mode_is_responsive_and_leaves_no_worker_behind() {
    // The workers inherit this tag: none may be alive once the lab exits.
    let tag = format!("cpu-process-{}", std::process::id());
    let out = run_with_env(
        &[
            "cpu",
            "--mode",
            "process",
            "--duration",
            "0.6s",
            "--threshold",
            "250ms",
            "--json",
        ],
        &[("OFFLOAD_LAB_TEST_TAG", &tag)],
    );
    let lines = json_lines(&out);
    assert_eq!(verdict(&lines, "cpu", "process"), RESPONSIVE);
    let row = rows(&lines)[0];
    assert!(
        row["work"].as_f64().unwrap() > 0.0,
        "no countdown done: {row}"
    );
    assert!(
        row["setting"].as_str().unwrap().contains("workers=2"),
        "{row}"
    );
    assert_no_process_with_env("OFFLOAD_LAB_TEST_TAG", &tag, Duration::from_secs(10));
}
