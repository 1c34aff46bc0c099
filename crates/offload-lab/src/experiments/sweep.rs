//! `offload-lab sweep`: the yield trade-off of the seed's
//! `cpu_workaround.py`. Yield too often and the countdown slows down; too
//! rarely and the loop lags. One countdown task yields every N steps
//! (N = 10 … 1,000,000) or every time slice (100 µs, 1 ms, 10 ms); each
//! setting runs for `--duration` beside the ticker. Writes `sweep.csv` and
//! `sweep.svg` (throughput against loop lag p99, one point per setting).
//!
//! The reference line is the countdown with no check at all. The countdown
//! runs under `budget.for_each`, whose steps between two budget checks run
//! in a plain loop: what separates a point from the line is the cost of
//! the yields themselves (large for small N: a trip through tokio's
//! scheduler costs far more than a thousand 0.3 ns steps).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use plotters::prelude::*;

use super::cpu::{Policy, countdown_coop, steps_per_sec};
use super::{Label, Probe, Row, loop_until, measure};
use crate::options::Common;

/// Arguments of `offload-lab sweep`.
#[derive(Debug, Args)]
pub(crate) struct SweepArgs {
    #[command(flatten)]
    pub(crate) common: Common,
    /// Directory for `sweep.csv` and `sweep.svg`.
    #[arg(long, default_value = "target/offload-lab")]
    pub(crate) out: PathBuf,
}

/// The settings swept, in order: count-based, then time slices.
pub(crate) fn settings() -> Vec<Policy> {
    let mut v: Vec<Policy> = [10, 100, 1_000, 10_000, 100_000, 1_000_000]
        .into_iter()
        .map(Policy::Every)
        .collect();
    v.extend(
        [100, 1_000, 10_000]
            .into_iter()
            .map(|us| Policy::Slice(Duration::from_micros(us))),
    );
    v
}

/// The sweep's rows and where it wrote them.
#[derive(Debug)]
pub(crate) struct Sweep {
    /// One row per setting (`work_per_s` in million steps per second).
    pub(crate) rows: Vec<Row>,
    /// Countdown speed without any yield check, M steps/s (the reference).
    pub(crate) inline_msteps_per_s: f64,
    /// The CSV file.
    pub(crate) csv: PathBuf,
    /// The SVG plot.
    pub(crate) svg: PathBuf,
}

/// Runs every setting for `duration` and writes `out/sweep.{csv,svg}`.
/// `progress` is called before each setting with its index and label.
pub(crate) fn sweep(
    probe: &Probe,
    duration: Duration,
    out: &Path,
    mut progress: impl FnMut(usize, usize, &str),
) -> anyhow::Result<Sweep> {
    let all = settings();
    let mut rows = Vec::new();
    for (i, policy) in all.iter().copied().enumerate() {
        progress(i, all.len(), &policy.to_string());
        let label = Label {
            experiment: "sweep",
            mode: "coop",
            setting: policy.to_string(),
            unit: "Msteps",
        };
        rows.push(measure(probe, label, duration, move |deadline| {
            loop_until(1, deadline, move || async move {
                Ok(countdown_coop(u64::MAX, policy, deadline).await as f64 / 1e6)
            })
        })?);
    }
    let inline = steps_per_sec() / 1e6;
    std::fs::create_dir_all(out)?;
    let csv = out.join("sweep.csv");
    let svg = out.join("sweep.svg");
    std::fs::write(&csv, to_csv(&all, &rows, inline))?;
    plot(&all, &rows, inline, &svg)?;
    Ok(Sweep {
        rows,
        inline_msteps_per_s: inline,
        csv,
        svg,
    })
}

fn to_csv(settings: &[Policy], rows: &[Row], inline: f64) -> String {
    let mut s =
        String::from("kind,setting,msteps_per_s,p50_lag_ms,p99_lag_ms,max_gap_ms,ticks,verdict\n");
    for (p, r) in settings.iter().zip(rows) {
        let kind = match p {
            Policy::Every(_) => "every",
            Policy::Slice(_) => "slice",
        };
        // Writing to a String cannot fail.
        let _ = writeln!(
            s,
            "{kind},{},{:.3},{:.3},{:.3},{:.3},{},{}",
            r.setting,
            r.work_per_s,
            r.p50_lag_ms,
            r.p99_lag_ms,
            r.max_gap_ms,
            r.ticks,
            r.verdict.text()
        );
    }
    let _ = writeln!(s, "inline,no yield,{inline:.3},,,,,");
    s
}

/// Throughput (y) against loop lag p99 (x, log scale), one point per
/// setting, plus the no-yield countdown speed as a reference line.
fn plot(settings: &[Policy], rows: &[Row], inline: f64, path: &Path) -> anyhow::Result<()> {
    // A log axis cannot show 0: an idle-looking lag is drawn at 0.01 ms.
    let point = |r: &Row| (r.p99_lag_ms.max(0.01), r.work_per_s);
    let (mut every, mut slice) = (Vec::new(), Vec::new());
    for (p, r) in settings.iter().zip(rows) {
        let series = match p {
            Policy::Every(_) => &mut every,
            Policy::Slice(_) => &mut slice,
        };
        series.push((point(r), r.setting.clone()));
    }
    let xs = rows.iter().map(|r| point(r).0);
    let x_min = xs.clone().fold(f64::INFINITY, f64::min).min(0.5) / 2.0;
    let x_max = xs.fold(0.0, f64::max).max(1.0) * 3.0;
    // Throughput spans decades (N = 10 is slow, the no-check reference is
    // fast): a log axis too, with headroom above the reference for the legend.
    let ys = rows.iter().map(|r| r.work_per_s).filter(|y| *y > 0.0);
    let y_min = ys.clone().fold(inline, f64::min).max(1e-3) / 2.0;
    let y_max = ys.fold(inline, f64::max).max(1e-3) * 4.0;

    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Cooperative yielding: countdown throughput vs loop lag p99",
            ("sans-serif", 20),
        )
        .margin(20)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d((x_min..x_max).log_scale(), (y_min..y_max).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("loop lag p99, ms (log scale; the ticker's timer has 1 ms resolution)")
        .y_desc("throughput, million countdown steps / s (log scale)")
        .draw()?;
    chart
        .draw_series(LineSeries::new(
            [(x_min, inline), (x_max, inline)],
            BLACK.mix(0.35).stroke_width(1),
        ))?
        .label(format!("no yield check: {inline:.0} M steps/s"))
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLACK.mix(0.35)));
    for (points, color, name) in [
        (&every, BLUE, "yield every N steps"),
        (&slice, RED, "yield every time slice"),
    ] {
        chart
            .draw_series(LineSeries::new(points.iter().map(|(p, _)| *p), color))?
            .label(name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color));
        chart.draw_series(
            points
                .iter()
                .map(|(p, _)| Circle::new(*p, 4, color.filled())),
        )?;
        chart.draw_series(points.iter().map(|(p, label)| {
            Text::new(
                label.clone(),
                *p,
                ("sans-serif", 12).into_font().color(&color),
            )
        }))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// `offload-lab sweep`: runs the sweep and prints its rows and files.
pub(crate) fn run(args: &SweepArgs) -> anyhow::Result<()> {
    let probe = Probe::from(&args.common);
    let duration = args.common.duration_or(Duration::from_secs(1));
    let quiet = args.common.json;
    let s = sweep(&probe, duration, &args.out, |i, n, label| {
        if !quiet {
            eprintln!("[{}/{n}] {label}", i + 1);
        }
    })?;
    report(&s, args.common.json);
    Ok(())
}

/// Prints a sweep: its rows, the reference speed, and the files.
pub(crate) fn report(s: &Sweep, json: bool) {
    crate::summary::print_rows(&s.rows, json);
    if json {
        crate::summary::print_json(&serde_json::json!({
            "kind": "files",
            "inline_msteps_per_s": s.inline_msteps_per_s,
            "csv": s.csv,
            "svg": s.svg,
        }));
    } else {
        println!(
            "reference: {:.0} M steps/s with no yield check at all; wrote {} and {}",
            s.inline_msteps_per_s,
            s.csv.display(),
            s.svg.display()
        );
    }
}
