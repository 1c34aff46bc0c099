//! The benchmark line format shared by every suite, and its two renderings:
//! a human table and JSON lines.

use serde::Serialize;

/// Which direction of a figure is good.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Better {
    /// Smaller is better (latency, lag, cost).
    Lower,
    /// Larger is better (throughput).
    Higher,
}

/// One comparison: our figure against a peer's, measured in the same run.
///
/// Serialised as `{"suite","case","ours","peer","unit","ours_value",
/// "peer_value","ratio","better"}` with `ratio = ours_value / peer_value`.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct BenchLine {
    pub(crate) suite: String,
    pub(crate) case: String,
    pub(crate) ours: String,
    pub(crate) peer: String,
    pub(crate) unit: String,
    pub(crate) ours_value: f64,
    pub(crate) peer_value: f64,
    pub(crate) ratio: f64,
    pub(crate) better: Better,
}

impl BenchLine {
    /// Builds a line; the ratio is computed here so it can never disagree
    /// with the two values.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        suite: &str,
        case: &str,
        ours: &str,
        peer: &str,
        unit: &str,
        ours_value: f64,
        peer_value: f64,
        better: Better,
    ) -> Self {
        let ratio = if peer_value == 0.0 {
            f64::NAN
        } else {
            ours_value / peer_value
        };
        BenchLine {
            suite: suite.to_owned(),
            case: case.to_owned(),
            ours: ours.to_owned(),
            peer: peer.to_owned(),
            unit: unit.to_owned(),
            ours_value,
            peer_value,
            ratio,
            better,
        }
    }

    /// Whether ours beats the peer on this line.
    pub(crate) fn ours_wins(&self) -> bool {
        match self.better {
            Better::Lower => self.ratio < 1.0,
            Better::Higher => self.ratio > 1.0,
        }
    }
}

/// Prints lines as JSON (one object per line) or as an aligned table.
pub(crate) fn print(lines: &[BenchLine], json: bool) {
    if json {
        for line in lines {
            // A `BenchLine` holds only strings and floats: serialising cannot fail.
            println!("{}", serde_json::to_string(line).unwrap_or_default());
        }
        return;
    }
    println!(
        "{:<8} {:<22} {:<26} {:<26} {:>14} {:>14} {:>8}  unit",
        "suite", "case", "ours", "peer", "ours", "peer", "ratio"
    );
    for l in lines {
        println!(
            "{:<8} {:<22} {:<26} {:<26} {:>14.2} {:>14.2} {:>7.3}{} {} ({} is better)",
            l.suite,
            l.case,
            l.ours,
            l.peer,
            l.ours_value,
            l.peer_value,
            l.ratio,
            if l.ours_wins() { "*" } else { " " },
            l.unit,
            match l.better {
                Better::Lower => "lower",
                Better::Higher => "higher",
            }
        );
    }
    println!("(* = ours better than the peer on that line)");
}

/// Median and p99 of a sample, in the sample's unit.
pub(crate) fn percentiles(samples: &mut [f64]) -> (f64, f64) {
    if samples.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.99))
}
