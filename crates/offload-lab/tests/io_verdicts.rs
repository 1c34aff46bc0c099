//! `offload-lab io`: a blocking GET inline blocks the loop; offloaded (to
//! a thread or a worker process), it does not. Each row blocks (or not) for its whole 0.6 s run, judged with
//! a 250 ms threshold: a 2× margin on both sides, no speed asserted.

mod common;
use common::*;

#[test]
fn smoke() {
    let out = run(&[
        "io",
        "--mode",
        "thread",
        "--duration",
        "0.2s",
        "--tasks",
        "2",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("io    thread"), "{text}");
}

#[test]
fn blocking_is_blocked_offloaded_is_responsive() {
    let out = run(&[
        "io",
        "--duration",
        "0.6s",
        "--threshold",
        "250ms",
        "--latency",
        "20ms",
        "--json",
    ]);
    let lines = json_lines(&out);
    assert_eq!(rows(&lines).len(), 4);
    assert_eq!(verdict(&lines, "io", "blocking"), BLOCKED);
    assert_eq!(verdict(&lines, "io", "default"), RESPONSIVE);
    assert_eq!(verdict(&lines, "io", "thread"), RESPONSIVE);
    assert_eq!(verdict(&lines, "io", "process"), RESPONSIVE);
    for row in rows(&lines) {
        assert!(
            row["work"].as_f64().unwrap() >= 1.0,
            "no request done: {row}"
        );
    }
}
