//! `offload-lab cpu`: a countdown inline blocks the loop; offloaded or
//! yielding, it does not. Each row runs 0.6 s; a blocked loop misses all
//! of it, so the verdict threshold is raised to 250 ms: a 2× margin on both
//! sides on a loaded machine (offloaded rows show gaps of 10–50 ms there).

mod common;
use common::*;

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
    assert_eq!(rows(&lines).len(), 4);
    assert_eq!(verdict(&lines, "cpu", "blocking"), BLOCKED);
    assert_eq!(verdict(&lines, "cpu", "default"), RESPONSIVE);
    assert_eq!(verdict(&lines, "cpu", "thread"), RESPONSIVE);
    assert_eq!(verdict(&lines, "cpu", "coop"), RESPONSIVE);
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
