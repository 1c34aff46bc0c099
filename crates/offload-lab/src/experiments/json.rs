//! `offload-lab json`: the seed's CPU example, "walk every key of a big
//! JSON document received from an external service". Each unit of work
//! parses a generated multi-megabyte document into a `serde_json::Value`
//! and counts its keys, inline or offloaded, beside the ticker.
//!
//! There is no `coop` mode: `serde_json::from_slice` is one call that
//! cannot yield halfway, which is exactly when offloading is the answer.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, ValueEnum};
use serde_json::Value;

use super::{Label, Offloader, Probe, Row, loop_until, measure};
use crate::options::Common;

/// How the parse-and-walk runs. (`process` needs the process pool: not
/// built yet.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum JsonMode {
    /// Inline in the async task, which never awaits.
    Blocking,
    /// `offload::run(walk)`: the default pool.
    Default,
    /// `pool.run(walk)` on an `offload::ThreadPool` of `--threads` threads.
    Thread,
}

impl JsonMode {
    /// Every mode, in table order.
    pub(crate) const ALL: [JsonMode; 3] = [JsonMode::Blocking, JsonMode::Default, JsonMode::Thread];

    fn name(self) -> &'static str {
        match self {
            JsonMode::Blocking => "blocking",
            JsonMode::Default => "default",
            JsonMode::Thread => "thread",
        }
    }
}

/// Arguments of `offload-lab json`.
#[derive(Debug, Args)]
pub(crate) struct JsonArgs {
    #[command(flatten)]
    pub(crate) common: Common,
    /// Modes to run, comma-separated (default: all). `process` (a process
    /// pool) is not built yet.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub(crate) mode: Vec<JsonMode>,
    /// Size of the generated document, in MB.
    #[arg(long, default_value_t = 8.0)]
    pub(crate) size_mb: f64,
    /// Concurrent tasks, each parsing in a loop.
    #[arg(long, default_value_t = 2)]
    pub(crate) tasks: usize,
    /// Threads of the `thread` mode's pool.
    #[arg(long, default_value_t = 2)]
    pub(crate) threads: usize,
}

/// A generated document, shared by the rows of a run.
#[derive(Debug, Clone)]
pub(crate) struct Doc {
    bytes: Arc<Vec<u8>>,
    /// Keys in the document (what every walk must find).
    keys: u64,
}

impl Doc {
    /// Generates a document of about `size_mb` MB and counts its keys once.
    pub(crate) fn new(size_mb: f64) -> anyhow::Result<Doc> {
        let bytes = generate((size_mb.max(0.001) * 1e6) as usize);
        let keys = walk(&bytes)?;
        Ok(Doc {
            bytes: Arc::new(bytes),
            keys,
        })
    }

    /// One line describing it.
    pub(crate) fn describe(&self) -> String {
        format!(
            "json: a {:.1} MB document with {} keys, parsed into serde_json::Value and walked",
            self.bytes.len() as f64 / 1e6,
            self.keys
        )
    }

    /// Measures one mode for `duration`.
    pub(crate) fn row(
        &self,
        mode: JsonMode,
        tasks: usize,
        threads: usize,
        probe: &Probe,
        duration: Duration,
    ) -> anyhow::Result<Row> {
        let offloader = Arc::new(match mode {
            JsonMode::Blocking => Offloader::Inline,
            JsonMode::Default => Offloader::Default,
            JsonMode::Thread => Offloader::pool("json", threads)?,
        });
        let setting = match mode {
            JsonMode::Thread => format!("{:.0}MB tasks={tasks} threads={threads}", self.mb()),
            _ => format!("{:.0}MB tasks={tasks}", self.mb()),
        };
        let label = Label {
            experiment: "json",
            mode: mode.name(),
            setting,
            unit: "documents",
        };
        let (bytes, keys) = (self.bytes.clone(), self.keys);
        measure(probe, label, duration, move |deadline| {
            loop_until(tasks, deadline, move || {
                let (offloader, bytes) = (offloader.clone(), bytes.clone());
                async move {
                    let found = offloader.run(move || walk(&bytes)).await??;
                    anyhow::ensure!(found == keys, "walked {found} keys, expected {keys}");
                    Ok(1.0)
                }
            })
        })
    }

    fn mb(&self) -> f64 {
        self.bytes.len() as f64 / 1e6
    }
}

/// Parses `bytes` and counts every key of every object, at any depth.
pub(crate) fn walk(bytes: &[u8]) -> anyhow::Result<u64> {
    let doc: Value = serde_json::from_slice(bytes)?;
    // An explicit stack: no recursion limit to worry about.
    let mut stack = vec![&doc];
    let mut keys = 0u64;
    while let Some(v) = stack.pop() {
        match v {
            Value::Object(map) => {
                keys += map.len() as u64;
                stack.extend(map.values());
            }
            Value::Array(items) => stack.extend(items),
            _ => {}
        }
    }
    Ok(keys)
}

/// A deterministic document of at least `size` bytes: an external
/// service's answer, a list of nested records.
pub(crate) fn generate(size: usize) -> Vec<u8> {
    let mut s = String::with_capacity(size + 1024);
    s.push_str("{\"service\":\"inventory\",\"version\":3,\"records\":[");
    // A small LCG: the same document on every run and every machine.
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        x >> 33
    };
    let mut i = 0u64;
    while s.len() < size {
        if i > 0 {
            s.push(',');
        }
        let r = next();
        // Writing to a String cannot fail.
        let _ = write!(
            s,
            "{{\"id\":{i},\"sku\":\"SKU-{r:08x}\",\"name\":\"item {i}\",\"price\":{}.{:02},\
             \"active\":{},\"tags\":[\"t{}\",\"t{}\"],\
             \"stock\":{{\"warehouse\":\"w{}\",\"count\":{},\"reserved\":{}}},\
             \"attrs\":{{\"color\":\"c{}\",\"size\":{},\"weight_g\":{}}}}}",
            r % 1000,
            r % 100,
            r % 2 == 0,
            r % 7,
            r % 11,
            r % 5,
            r % 500,
            r % 17,
            r % 13,
            r % 48,
            r % 5000,
        );
        i += 1;
    }
    s.push_str("]}");
    s.into_bytes()
}

/// `offload-lab json`: measures the chosen modes and prints them.
pub(crate) fn run(args: &JsonArgs) -> anyhow::Result<Vec<Row>> {
    let probe = Probe::from(&args.common);
    let duration = args.common.duration_or(Duration::from_secs(3));
    let doc = Doc::new(args.size_mb)?;
    if !args.common.json {
        println!("{}", doc.describe());
    }
    let modes = if args.mode.is_empty() {
        JsonMode::ALL.to_vec()
    } else {
        args.mode.clone()
    };
    modes
        .into_iter()
        .map(|m| doc.row(m, args.tasks, args.threads, &probe, duration))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_document_is_valid_and_deterministic() {
        let a = generate(10_000);
        assert_eq!(a, generate(10_000));
        assert!(a.len() >= 10_000);
        // 3 top-level keys, then 8 per record + 3 in `stock` + 3 in `attrs`.
        let keys = walk(&a).unwrap();
        assert!(keys > 3 && (keys - 3) % 14 == 0, "{keys}");
    }
}
