//! `offload-lab bench <suite> --quick --json`: every suite prints lines in
//! the shared format, ratios agree with their values, and the cases each
//! issue asks for are there. Figures in quick debug runs are noise: no
//! value is judged, only the shape.

mod common;
use common::*;

/// Runs one suite and checks every line's fields; returns the lines.
fn suite(name: &str) -> Vec<serde_json::Value> {
    let out = run(&["bench", name, "--quick", "--json"]);
    let lines = json_lines(&out);
    assert!(!lines.is_empty(), "bench {name} printed nothing");
    for l in &lines {
        assert_eq!(l["suite"], name, "{l}");
        for field in ["case", "ours", "peer", "unit"] {
            assert!(
                l[field].as_str().is_some_and(|s| !s.is_empty()),
                "{field} in {l}"
            );
        }
        let (ours, peer) = (l["ours_value"].as_f64(), l["peer_value"].as_f64());
        let (ours, peer) = (ours.expect("ours_value"), peer.expect("peer_value"));
        if peer != 0.0 {
            let ratio = l["ratio"].as_f64().expect("ratio");
            assert!(
                (ratio - ours / peer).abs() <= 1e-9 * ratio.abs().max(1.0),
                "{l}"
            );
        }
        assert!(l["better"] == "lower" || l["better"] == "higher", "{l}");
    }
    lines
}

fn cases(lines: &[serde_json::Value]) -> Vec<&str> {
    lines.iter().filter_map(|l| l["case"].as_str()).collect()
}

#[test]
fn smoke_threads() {
    let lines = suite("threads");
    let cases = cases(&lines);
    for case in [
        "round_trip_median",
        "round_trip_p99",
        "throughput",
        "throughput_steady",
        "foreign_load_round_trip_p99",
        "foreign_load_throughput",
    ] {
        assert!(cases.contains(&case), "{case} missing: {cases:?}");
    }
    for peer in [
        "tokio_spawn_blocking",
        "blocking_unblock",
        "rayon_spawn_oneshot",
        "floor_spin_pool_2",
        // The diagnostic: the floor's queue carrying offload's job cell.
        "injector_spin_2_offload_cell",
    ] {
        assert!(lines.iter().any(|l| l["peer"] == peer), "{peer} missing");
    }
    // Both throughput shapes are measured against every peer, the floor
    // included, and more is better for both.
    for l in lines
        .iter()
        .filter(|l| l["case"].as_str().unwrap().starts_with("throughput"))
    {
        assert_eq!(l["better"], "higher", "{l}");
    }
    assert!(
        lines
            .iter()
            .any(|l| l["case"] == "throughput_steady" && l["peer"] == "floor_spin_pool_2")
    );
    // The idle-class pool is compared with the background one under
    // foreign load, with finite, positive figures.
    for l in lines
        .iter()
        .filter(|l| l["case"].as_str().unwrap().starts_with("foreign_load"))
    {
        assert_eq!(l["ours"], "offload_threadpool_2_idle", "{l}");
        assert_eq!(l["peer"], "offload_threadpool_2_background", "{l}");
        for v in ["ours_value", "peer_value"] {
            let x = l[v].as_f64().unwrap();
            assert!(x.is_finite() && x > 0.0, "{l}");
        }
    }
}

#[test]
fn procs() {
    let lines = suite("procs");
    let cases = cases(&lines);
    for case in ["round_trip_median", "round_trip_p99", "scaling"] {
        assert!(cases.contains(&case), "{case} missing: {cases:?}");
    }
    assert!(
        lines
            .iter()
            .any(|l| l["peer"].as_str().unwrap().contains("socketpair"))
    );
    // The Python peer is skipped with a message where python3 is missing.
    if lines
        .iter()
        .any(|l| l["peer"].as_str().unwrap().contains("python"))
    {
        assert!(cases.contains(&"throughput"), "{cases:?}");
    }
}

#[test]
fn monitor() {
    let lines = suite("monitor");
    let cases = cases(&lines);
    for case in [
        "overhead",
        "detection_latency",
        "long_polls_false_blame",
        "contention_false_blame",
        "contention_detection_latency",
    ] {
        assert!(cases.contains(&case), "{case} missing: {cases:?}");
    }
    // Issue 19: under contention, no episode blames well-behaved tasks.
    let blame = lines
        .iter()
        .find(|l| l["case"] == "contention_false_blame")
        .expect("the line");
    assert_eq!(blame["ours_value"].as_f64(), Some(0.0), "{blame}");
}

#[test]
fn coop() {
    let lines = suite("coop");
    let cases = cases(&lines);
    for case in [
        "slice_1ms_throughput",
        "every_1000_throughput",
        "slice_1ms_lag_p99",
        "every_1000000_lag_p99",
    ] {
        assert!(cases.contains(&case), "{case} missing: {cases:?}");
    }
    assert!(
        lines
            .iter()
            .filter(|l| l["case"].as_str().unwrap().ends_with("_throughput"))
            .all(|l| l["better"] == "higher")
    );
    // The shifting loop: the ticker's worst gap in each phase, for each
    // setting, against the idle timer's floor.
    for phase in ["trivial", "20us", "2ms", "trivial_again"] {
        let case = format!("shift_max_gap_{phase}");
        for ours in ["slice_1ms", "every_1000", "every_1000000", "bare_loop"] {
            assert!(
                lines.iter().any(|l| l["case"] == case.as_str()
                    && l["ours"] == ours
                    && l["peer"] == "idle_timer_floor"
                    && l["unit"] == "ms"
                    && l["better"] == "lower"),
                "{case} for {ours} missing"
            );
        }
    }
}

#[test]
fn service() {
    let lines = suite("service");
    const MODES: [&str; 10] = [
        "inline",
        "spawn_blocking",
        "offload_run",
        "cpu_pool",
        "threadpool_normal",
        "threadpool_background",
        "threadpool_idle",
        "processpool",
        "processpool_idle",
        "processpool_normal",
    ];
    let line = |case: &str, mode: &str| {
        lines
            .iter()
            .find(|l| l["case"] == case && l["ours"] == mode)
            .unwrap_or_else(|| panic!("no {case} line for {mode}"))
    };
    let positive = |l: &serde_json::Value| {
        for field in ["ours_value", "peer_value"] {
            let v = l[field].as_f64().expect(field);
            assert!(v.is_finite() && v > 0.0, "{field} in {l}");
        }
    };
    // The health check under load, for every mode, against the idle floor.
    for mode in MODES {
        let l = line("health_p99", mode);
        assert_eq!(l["peer"], "idle", "{l}");
        assert_eq!(l["unit"], "ms", "{l}");
        assert_eq!(l["better"], "lower", "{l}");
        positive(l);
    }
    // The walk rate of every offloaded mode (inline has none: it is what
    // offloading avoids), against spawn_blocking.
    for mode in &MODES[1..] {
        let l = line("walk_throughput", mode);
        assert_eq!(l["peer"], "spawn_blocking", "{l}");
        assert_eq!(l["unit"], "req/s", "{l}");
        assert_eq!(l["better"], "higher", "{l}");
        positive(l);
    }
    assert!(
        !lines
            .iter()
            .any(|l| l["case"] == "walk_throughput" && l["ours"] == "inline")
    );
}
