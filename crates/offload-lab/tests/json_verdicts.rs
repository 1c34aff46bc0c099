//! `offload-lab json`: parsing a big document inline blocks the loop;
//! offloaded (to a thread or a worker process), it does not. Each row runs 0.6 s, judged with a 250 ms
//! threshold: a 2× margin on both sides, no speed asserted.

mod common;
use common::*;

#[test]
fn smoke() {
    let out = run(&[
        "json",
        "--mode",
        "thread",
        "--size-mb",
        "0.2",
        "--duration",
        "0.2s",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("keys"), "{text}");
}

#[test]
fn blocking_is_blocked_offloaded_is_responsive() {
    let out = run(&[
        "json",
        "--size-mb",
        "0.5",
        "--duration",
        "0.6s",
        "--threshold",
        "250ms",
        "--json",
    ]);
    let lines = json_lines(&out);
    assert_eq!(rows(&lines).len(), 4);
    assert_eq!(verdict(&lines, "json", "blocking"), BLOCKED);
    assert_eq!(verdict(&lines, "json", "default"), RESPONSIVE);
    assert_eq!(verdict(&lines, "json", "thread"), RESPONSIVE);
    assert_eq!(verdict(&lines, "json", "process"), RESPONSIVE);
    for row in rows(&lines) {
        assert!(
            row["work"].as_f64().unwrap() >= 1.0,
            "no document walked: {row}"
        );
    }
}
