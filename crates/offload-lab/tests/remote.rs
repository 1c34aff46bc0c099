//! The lab's remote commands (they need `nats-server`: `scripts/test.sh`
//! installs it): `bench remote` prints the cases the remote-executor issue
//! asks for, in the shared line format; `cluster` prints one row per
//! worker count. Quick debug runs: only the shape is judged.

mod common;
use common::*;

#[test]
fn bench_remote_prints_every_case_against_raw_request_reply() {
    let lines = json_lines(&run(&["bench", "remote", "--quick", "--json"]));
    let case = |name: &str| {
        lines
            .iter()
            .find(|l| l["case"] == name)
            .unwrap_or_else(|| panic!("{name} missing: {lines:?}"))
    };
    for name in ["round_trip_median", "round_trip_p99", "throughput"] {
        let l = case(name);
        assert_eq!(l["suite"], "remote");
        assert!(l["peer"].as_str().unwrap().contains("nats_request"), "{l}");
        assert!(l["ours_value"].as_f64().unwrap() > 0.0, "{l}");
    }
    assert!(
        case("durable_round_trip_median")["ours"]
            .as_str()
            .unwrap()
            .contains("durable")
    );
    assert_eq!(case("scaling")["better"], "higher");
}

#[test]
fn cluster_prints_a_row_per_worker_count() {
    let lines = json_lines(&run(&["cluster", "--duration", "500ms", "--json"]));
    let rows = rows(&lines);
    assert_eq!(rows.len(), 2, "{lines:?}");
    for (n, row) in rows.iter().enumerate() {
        assert_eq!(row["mode"], "remote");
        let setting = row["setting"].as_str().unwrap();
        assert!(
            setting.ends_with(&format!("workers={}", n + 1)),
            "{setting}"
        );
        assert!(row["work"].as_f64().unwrap() > 0.0, "{row}");
    }
}
