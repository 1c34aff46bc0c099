//! Rendering rows (a table, or JSON lines) and answering the seed's four
//! questions from the measured rows.
//!
//! # The verdict
//!
//! A row is `loop blocked` when some tick of the ticker woke up more than
//! the threshold late (`--threshold`, 100 ms by default), that is when the
//! longest gap between two ticks exceeded `--tick + --threshold` (110 ms
//! with the default 10 ms tick): ten missed ticks, far above an idle loop's
//! lag of ~1 ms and far below a blocking run of the whole measurement.
//! Otherwise `loop responsive`.

use serde::Serialize;

use crate::experiments::{Row, Verdict};

/// Prints rows: one JSON object per line, or an aligned table.
pub(crate) fn print_rows(rows: &[Row], json: bool) {
    if json {
        for row in rows {
            print_json(row);
        }
        return;
    }
    println!(
        "{:<5} {:<9} {:<22} {:>11} {:>11} {:>10}  {:<11} verdict",
        "exp", "mode", "setting", "max gap ms", "p99 lag ms", "work/s", "unit"
    );
    for r in rows {
        println!(
            "{:<5} {:<9} {:<22} {:>11} {:>11} {:>10}  {:<11} {}",
            r.experiment,
            r.mode,
            r.setting,
            num(r.max_gap_ms),
            num(r.p99_lag_ms),
            num(r.work_per_s),
            r.unit,
            r.verdict.text()
        );
    }
}

/// Prints one serialisable value as a JSON line.
pub(crate) fn print_json<T: Serialize>(value: &T) {
    // Rows and answers hold strings and numbers only: this cannot fail.
    println!("{}", serde_json::to_string(value).unwrap_or_default());
}

/// A figure for a table: `-` when not measured, fewer decimals when large.
pub(crate) fn num(x: f64) -> String {
    if !x.is_finite() {
        "-".to_owned()
    } else if x.abs() >= 100.0 {
        format!("{x:.0}")
    } else if x.abs() >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

/// One of the seed's four questions, with the seed's answer (for Python)
/// and ours (for Rust, from the measured rows).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Answer {
    /// Always `"answer"`.
    pub(crate) kind: &'static str,
    /// The question, as the seed asks it.
    pub(crate) question: &'static str,
    /// The seed's answer, for Python.
    pub(crate) seed: &'static str,
    /// Ours, for Rust, citing the rows.
    pub(crate) rust: String,
}

/// Answers the seed's four questions from `rows` (missing rows are said
/// to be missing).
pub(crate) fn answers(rows: &[Row]) -> Vec<Answer> {
    let find = |exp: &str, mode: &str| rows.iter().find(|r| r.experiment == exp && r.mode == mode);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let cpu_inline = find("cpu", "blocking");
    let cpu_thread = find("cpu", "thread");
    let cpu_coop: Vec<&Row> = rows
        .iter()
        .filter(|r| r.experiment == "cpu" && r.mode == "coop")
        .collect();
    let io_inline = find("io", "blocking");
    let io_thread = find("io", "thread");
    let cpu_process = find("cpu", "process");
    let io_process = find("io", "process");
    let json_thread = find("json", "thread");
    let json_process = find("json", "process");

    let cpu_parallel = match (cpu_thread, cpu_inline) {
        (Some(t), Some(b)) => {
            let ratio = t.work_per_s / b.work_per_s;
            format!(
                "cpu/thread ({}) did {} countdowns/s vs {} inline: {:.2}× on {cores} cores{}, with the {} (max gap {} ms; inline: {} ms, {})",
                t.setting,
                num(t.work_per_s),
                num(b.work_per_s),
                ratio,
                if ratio > 1.3 {
                    ", so the threads ran in parallel"
                } else {
                    " (no speed-up measured: a busy machine?)"
                },
                t.verdict.text(),
                num(t.max_gap_ms),
                num(b.max_gap_ms),
                b.verdict.text(),
            )
        }
        _ => "(run `cpu --mode blocking,thread` to measure it)".to_owned(),
    };

    let q1 = match cpu_process {
        Some(p) => format!(
            "{}: cpu/process ({}) did {} countdowns/s vs {} on threads and {} inline, with the {} (max gap {} ms){}. But not needed for speed: Rust has no GIL and {cpu_parallel}. A process adds a socket hop and serialisation to every call (small here: a step count or a size and a seed go in, a number comes out; shipping the JSON document itself would copy it each way); it buys isolation instead (a crash or a hard timeout kills only a worker).",
            if p.verdict == Verdict::Responsive {
                "It works"
            } else {
                "Not in this run (a loaded machine? run it again)"
            },
            p.setting,
            num(p.work_per_s),
            cpu_thread.map_or_else(|| "-".to_owned(), |t| num(t.work_per_s)),
            cpu_inline.map_or_else(|| "-".to_owned(), |b| num(b.work_per_s)),
            p.verdict.text(),
            num(p.max_gap_ms),
            match (json_process, json_thread) {
                (Some(jp), Some(jt)) => format!(
                    "; json/process: {} documents/s vs {} on threads ({})",
                    num(jp.work_per_s),
                    num(jt.work_per_s),
                    jp.verdict.text()
                ),
                _ => String::new(),
            },
        ),
        None => format!(
            "Not needed for speed: Rust has no GIL and {cpu_parallel}. A process pool buys isolation instead (a crash or a hard timeout kills only a worker). (run `cpu --mode process` to measure it)"
        ),
    };
    let q2 = match (io_process, io_thread) {
        (Some(p), Some(t)) => format!(
            "No: it works (io/process, {}: {} requests/s, {}, max gap {} ms), but threads already wait on I/O in parallel (io/thread: {} requests/s, {}; process/thread {:.2}×); a process adds serialisation and a hop to every request, and a whole process per request in flight.",
            p.setting,
            num(p.work_per_s),
            p.verdict.text(),
            num(p.max_gap_ms),
            num(t.work_per_s),
            t.verdict.text(),
            p.work_per_s / t.work_per_s,
        ),
        (None, Some(t)) => format!(
            "No: threads already wait on I/O in parallel (io/thread: {} requests/s, {}); a process only adds serialisation and a hop.",
            num(t.work_per_s),
            t.verdict.text()
        ),
        _ => "No: a thread pool does the same job without serialisation. (run `io --mode thread,process` to measure it)".to_owned(),
    };
    let q3 = match (io_thread, io_inline) {
        (Some(t), Some(b)) => format!(
            "{}: io/thread ({}) did {} requests/s vs {} inline ({:.1}×) with the {} (max gap {} ms); inline, the loop was {} (max gap {} ms).",
            if t.verdict == Verdict::Responsive {
                "Yes"
            } else {
                "Not in this run (a loaded machine? run it again)"
            },
            t.setting,
            num(t.work_per_s),
            num(b.work_per_s),
            t.work_per_s / b.work_per_s,
            t.verdict.text(),
            num(t.max_gap_ms),
            b.verdict.text().trim_start_matches("loop "),
            num(b.max_gap_ms),
        ),
        _ => "(run `io --mode blocking,thread` to measure it)".to_owned(),
    };
    let q4 = format!(
        "{}: {cpu_parallel}.{}",
        if cpu_thread.is_some_and(|t| t.verdict == Verdict::Responsive) {
            "Yes, unlike Python"
        } else {
            "Not in this run (a loaded machine? run it again)"
        },
        if cpu_coop.is_empty() {
            String::new()
        } else {
            let each = cpu_coop
                .iter()
                .map(|c| {
                    format!(
                        "{}: {} countdowns/s{}, {} (max gap {} ms)",
                        c.setting,
                        num(c.work_per_s),
                        cpu_inline
                            .map(|b| format!(
                                " ({:.0} % of inline)",
                                100.0 * c.work_per_s / b.work_per_s
                            ))
                            .unwrap_or_default(),
                        c.verdict.text(),
                        num(c.max_gap_ms),
                    )
                })
                .collect::<Vec<_>>()
                .join("; ");
            format!(
                " Yielding (cpu/coop, offload::coop::Budget) also keeps the loop free, on its one thread: {each}. What it costs is the trips through the scheduler, not the checks: every=1000 steps of well under a nanosecond pays one per microsecond, a 1 ms slice one per millisecond. Yield when a pool is not an option; offload long work."
            )
        }
    );
    vec![
        Answer {
            kind: "answer",
            question: "Process pool for CPU-bound work?",
            seed: "Yes: it runs in another process and does not block the loop.",
            rust: q1,
        },
        Answer {
            kind: "answer",
            question: "Process pool for blocking I/O?",
            seed: "No: it works, but a thread pool is better and cheaper.",
            rust: q2,
        },
        Answer {
            kind: "answer",
            question: "Thread pool for blocking I/O?",
            seed: "Yes: blocking I/O releases the GIL, so the loop keeps running.",
            rust: q3,
        },
        Answer {
            kind: "answer",
            question: "Thread pool for CPU-bound work?",
            seed: "No (the GIL): yield with `await asyncio.sleep(0)` every N steps instead.",
            rust: q4,
        },
    ]
}

/// Prints the answers: JSON lines, or numbered paragraphs.
pub(crate) fn print_answers(answers: &[Answer], json: bool) {
    for (i, a) in answers.iter().enumerate() {
        if json {
            print_json(a);
        } else {
            println!("{}. {}", i + 1, a.question);
            println!("   seed (Python): {}", a.seed);
            println!("   Rust, measured: {}", a.rust);
        }
    }
}
