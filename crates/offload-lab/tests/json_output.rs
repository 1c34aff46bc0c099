//! `--json` output of every command parses, line by line, with serde_json;
//! `--ticks` prints the ticker's timestamps (as JSON too).

mod common;
use common::*;

#[test]
fn smoke_demo_json_parses_and_answers_four_questions() {
    let dir = std::env::temp_dir().join(format!("offload-lab-demo-{}", std::process::id()));
    let out = run(&[
        "demo",
        "--duration",
        "0.2s",
        "--size-mb",
        "0.2",
        "--json",
        "--out",
        dir.to_str().unwrap(),
    ]);
    let lines = json_lines(&out);
    let rows = rows(&lines);
    for (exp, mode) in [
        ("io", "blocking"),
        ("io", "thread"),
        ("io", "process"),
        ("cpu", "blocking"),
        ("cpu", "thread"),
        ("cpu", "coop"),
        ("cpu", "process"),
        ("json", "blocking"),
        ("json", "thread"),
        ("json", "process"),
        ("sweep", "coop"),
    ] {
        assert!(
            rows.iter()
                .any(|r| r["experiment"] == exp && r["mode"] == mode),
            "no {exp}/{mode} row"
        );
    }
    // The process rows are measured now (no verdict asserted at 0.2 s).
    for exp in ["io", "cpu", "json"] {
        let v = verdict(&lines, exp, "process");
        assert!(v == RESPONSIVE || v == BLOCKED, "{exp}/process: {v}");
    }
    let answers: Vec<_> = lines.iter().filter(|v| v["kind"] == "answer").collect();
    assert_eq!(answers.len(), 4);
    for a in answers {
        assert!(!a["rust"].as_str().unwrap().is_empty(), "{a}");
    }
    assert!(lines.iter().any(|v| v["kind"] == "setup"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn ticks_are_printed_as_json_lines() {
    let out = run(&[
        "cpu",
        "--mode",
        "thread",
        "--duration",
        "0.3s",
        "--ticks",
        "--json",
    ]);
    let lines = json_lines(&out);
    let ticks: Vec<_> = lines.iter().filter(|v| v["kind"] == "tick").collect();
    assert!(!ticks.is_empty(), "no tick lines");
    assert!(ticks[0]["at"].as_str().unwrap().ends_with('Z'));
    // The seed's ticker prints before its first sleep: that line has no gap.
    assert_eq!(ticks[0]["gap_ms"].as_f64().unwrap(), 0.0);
    assert!(ticks.len() >= 2 && ticks[1]["gap_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(rows(&lines).len(), 1);
}

#[test]
fn ticks_print_timestamps_like_the_seed() {
    let out = run(&[
        "io",
        "--mode",
        "thread",
        "--duration",
        "0.2s",
        "--ticks",
        "--tasks",
        "1",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .filter(|l| l.contains("io/thread") && l.contains("gap"))
            .count()
            >= 3,
        "{text}"
    );
}

#[test]
fn serve_json_parses() {
    let out = run(&["serve", "--json", "--duration", "0.1s"]);
    let lines = json_lines(&out);
    assert_eq!(lines[0]["kind"], "serve");
    assert!(lines[0]["port"].as_u64().unwrap() > 0);
}
