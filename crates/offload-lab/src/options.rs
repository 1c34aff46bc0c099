//! Options every experiment command shares (`--duration`, `--json`,
//! `--ticks`, `--tick`, `--threshold`), and the duration parser behind them.

use std::time::Duration;

use clap::Args;

/// The options of every experiment command.
#[derive(Debug, Clone, Args)]
pub(crate) struct Common {
    /// How long to measure each row: `2s`, `500ms`, `1m`, or plain seconds
    /// (`1.5`). Defaults: `demo` 2s (its sweep points get a quarter),
    /// `io`/`cpu`/`json` 3s, `sweep` 1s per setting.
    #[arg(long, value_parser = parse_duration)]
    pub(crate) duration: Option<Duration>,
    /// Print one JSON object per line instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
    /// Print the ticker's timestamps as it runs, like the seed's scripts do
    /// (one line per tick: a gap in the timestamps is a blocked loop).
    #[arg(long)]
    pub(crate) ticks: bool,
    /// How often the ticker (the lag probe) wakes up.
    #[arg(long, value_parser = parse_duration, default_value = "10ms")]
    pub(crate) tick: Duration,
    /// Verdict threshold: a tick that wakes up more than this late (a gap
    /// between two ticks longer than `--tick` + this) means "loop blocked".
    #[arg(long, value_parser = parse_duration, default_value = "100ms")]
    pub(crate) threshold: Duration,
}

impl Common {
    /// The measuring time: `--duration`, or the command's default.
    pub(crate) fn duration_or(&self, default: Duration) -> Duration {
        self.duration.unwrap_or(default)
    }
}

/// Parses `2s`, `1.5s`, `500ms`, `100us`, `100µs`, `1m`, plain seconds
/// (`0.25`), or anything `humantime` reads (`1m 30s`).
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let scale = match unit.trim() {
        "" | "s" | "sec" => Some(1.0),
        "ms" => Some(1e-3),
        "us" | "µs" => Some(1e-6),
        "ns" => Some(1e-9),
        "m" | "min" => Some(60.0),
        "h" => Some(3600.0),
        _ => None,
    };
    if let (Ok(x), Some(scale)) = (number.parse::<f64>(), scale) {
        return Duration::try_from_secs_f64(x * scale).map_err(|e| format!("{s:?}: {e}"));
    }
    humantime::parse_duration(s).map_err(|e| {
        format!("{s:?} is not a duration ({e}); try `2s`, `500ms`, `100us` or seconds like `1.5`")
    })
}

/// Formats a duration compactly for labels: `100µs`, `1ms`, `2.5s`.
pub(crate) fn short(d: Duration) -> String {
    let us = d.as_micros();
    if us < 1_000 {
        format!("{us}µs")
    } else if us < 1_000_000 {
        format!("{}ms", trim_float(us as f64 / 1e3))
    } else {
        format!("{}s", trim_float(us as f64 / 1e6))
    }
}

fn trim_float(x: f64) -> String {
    let s = format!("{x:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_forms() {
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("100µs"), Ok(Duration::from_micros(100)));
        assert_eq!(parse_duration("100us"), Ok(Duration::from_micros(100)));
        assert_eq!(parse_duration("0.25"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1m 30s"), Ok(Duration::from_secs(90)));
        assert!(parse_duration("soon").is_err());
        assert_eq!(short(Duration::from_micros(100)), "100µs");
        assert_eq!(short(Duration::from_millis(1)), "1ms");
        assert_eq!(short(Duration::from_millis(2500)), "2.5s");
    }
}
