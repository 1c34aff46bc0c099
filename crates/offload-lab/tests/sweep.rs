//! `offload-lab sweep`: writes a CSV with one line per point (nine settings
//! on each of three loops) and an SVG plot, with a panel per loop, that is
//! well-formed XML-ish text.

mod common;
use common::*;

#[test]
fn smoke_sweep_writes_csv_and_svg() {
    let dir = std::env::temp_dir().join(format!("offload-lab-sweep-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = run(&[
        "sweep",
        "--duration",
        "0.05s",
        "--json",
        "--out",
        dir.to_str().unwrap(),
    ]);
    let lines = json_lines(&out);
    let rows = rows(&lines);
    assert_eq!(
        rows.len(),
        27,
        "six counts and three slices, on three loops"
    );
    for workload in ["light", "heavy", "shifting"] {
        for setting in ["every=1000000", "slice=1ms"] {
            let name = format!("{workload} {setting}");
            assert!(
                rows.iter().any(|r| r["setting"] == name.as_str()),
                "no {name} row"
            );
        }
    }
    let files = lines
        .iter()
        .find(|v| v["kind"] == "files")
        .expect("files line");
    assert_eq!(
        files["csv"].as_str().unwrap(),
        dir.join("sweep.csv").to_str().unwrap()
    );

    let csv = std::fs::read_to_string(dir.join("sweep.csv")).unwrap();
    let csv_lines: Vec<&str> = csv.lines().collect();
    assert!(
        csv_lines[0].starts_with("workload,kind,setting,msteps_per_s,percent_of_bare,"),
        "{csv}"
    );
    assert_eq!(
        csv_lines.len(),
        1 + 27 + 3,
        "header, points, a reference per loop: {csv}"
    );
    assert!(
        csv_lines
            .iter()
            .any(|l| l.starts_with("light,every,every=1000,"))
    );
    assert!(
        csv_lines
            .iter()
            .any(|l| l.starts_with("heavy,slice,slice=100µs,"))
    );
    assert!(
        csv_lines
            .iter()
            .any(|l| l.starts_with("shifting,none,no yield,"))
    );

    let svg = std::fs::read_to_string(dir.join("sweep.svg")).unwrap();
    let head = svg.trim_start();
    assert!(
        head.starts_with("<svg") || head.starts_with("<?xml"),
        "{head:.80}"
    );
    assert!(svg.trim_end().ends_with("</svg>"));
    assert_balanced(&svg);
    // A panel per loop, short point labels.
    for text in [
        "light steps",
        "heavy steps",
        "shifting",
        "N=1k",
        "N=1M",
        "1ms",
    ] {
        assert!(svg.contains(text), "{text} missing from the plot");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Checks that every opening tag is closed in order (self-closing and
/// `<?…?>` / `<!…>` tags aside): enough to call it well-formed XML-ish text.
fn assert_balanced(xml: &str) {
    let mut stack: Vec<&str> = Vec::new();
    let mut rest = xml;
    while let Some(open) = rest.find('<') {
        let after = &rest[open + 1..];
        let close = after.find('>').expect("unterminated tag");
        let tag = &after[..close];
        rest = &after[close + 1..];
        if tag.starts_with('?') || tag.starts_with('!') || tag.ends_with('/') {
            continue;
        }
        if let Some(end) = tag.strip_prefix('/') {
            let top = stack.pop().expect("closing tag without an opening one");
            assert_eq!(top, end.trim(), "mismatched tags");
        } else {
            let n = tag.split_whitespace().next().expect("empty tag");
            stack.push(n);
        }
    }
    assert!(stack.is_empty(), "unclosed tags: {stack:?}");
}
