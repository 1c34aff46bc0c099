//! `offload-lab json`: the seed's CPU example, "walk every key of a big
//! JSON document received from an external service". Each unit of work
//! parses a generated multi-megabyte document into a `serde_json::Value`
//! and counts its keys, inline or offloaded, beside the ticker.
//!
//! There is no `coop` mode: `serde_json::from_slice` is one call that
//! cannot yield halfway, which is exactly when offloading is the answer.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use clap::{Args, ValueEnum};
use offload::proc::Task;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Label, Offloader, Probe, Row, loop_until, measure, process_pool};

/// The seed of the generator's LCG: the same document on every run.
pub(crate) const SEED: u64 = 0x2545_f491_4f6c_dd1d;
use crate::options::Common;

/// How the parse-and-walk runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum JsonMode {
    /// Inline in the async task, which never awaits.
    Blocking,
    /// `offload::run(walk)`: the default pool.
    Default,
    /// `pool.run(walk)` on an `offload::ThreadPool` of `--threads` threads.
    Thread,
    /// `pool.call::<JsonWalk>(..)` on an `offload::proc::ProcessPool` of
    /// `--threads` worker processes: each worker generates the document
    /// once from its seed and parses it on every call (only the size and
    /// the seed cross the socket, not the megabytes).
    Process,
}

impl JsonMode {
    /// Every mode, in table order.
    pub(crate) const ALL: [JsonMode; 4] = [
        JsonMode::Blocking,
        JsonMode::Default,
        JsonMode::Thread,
        JsonMode::Process,
    ];

    fn name(self) -> &'static str {
        match self {
            JsonMode::Blocking => "blocking",
            JsonMode::Default => "default",
            JsonMode::Thread => "thread",
            JsonMode::Process => "process",
        }
    }
}

/// Arguments of `offload-lab json`.
#[derive(Debug, Args)]
pub(crate) struct JsonArgs {
    #[command(flatten)]
    pub(crate) common: Common,
    /// Modes to run, comma-separated (default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub(crate) mode: Vec<JsonMode>,
    /// Size of the generated document, in MB.
    #[arg(long, default_value_t = 8.0)]
    pub(crate) size_mb: f64,
    /// Concurrent tasks, each parsing in a loop.
    #[arg(long, default_value_t = 2)]
    pub(crate) tasks: usize,
    /// Threads of the `thread` mode's pool, and worker processes of the
    /// `process` mode's pool.
    #[arg(long, default_value_t = 2)]
    pub(crate) threads: usize,
}

/// A generated document, shared by the rows of a run.
#[derive(Debug, Clone)]
pub(crate) struct Doc {
    bytes: Arc<Vec<u8>>,
    /// Keys in the document (what every walk must find).
    keys: u64,
    /// Asked-for size, MB: with the seed, what a worker regenerates it from.
    size_mb: f64,
}

impl Doc {
    /// Generates a document of about `size_mb` MB and counts its keys once.
    pub(crate) fn new(size_mb: f64) -> anyhow::Result<Doc> {
        let bytes = generate(doc_bytes(size_mb), SEED);
        let keys = walk(&bytes)?;
        Ok(Doc {
            bytes: Arc::new(bytes),
            keys,
            size_mb,
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
        let setting = match mode {
            JsonMode::Thread => format!("{:.0}MB tasks={tasks} threads={threads}", self.mb()),
            JsonMode::Process => format!("{:.0}MB tasks={tasks} workers={threads}", self.mb()),
            _ => format!("{:.0}MB tasks={tasks}", self.mb()),
        };
        let label = Label {
            experiment: "json",
            mode: mode.name(),
            setting,
            unit: "documents",
        };
        let keys = self.keys;
        if mode == JsonMode::Process {
            let pool = process_pool("json", threads)?;
            let input = JsonWalk {
                size_mb: self.size_mb,
                seed: SEED,
            };
            // One call per worker at once (each holds its driver thread, so
            // every worker gets one): each generates and caches its copy of
            // the document before the measurement starts.
            let warm = (0..threads.max(1)).map(|_| pool.call::<JsonWalk>(input));
            for found in futures::executor::block_on(futures::future::join_all(warm)) {
                let found = found?.map_err(anyhow::Error::msg)?;
                anyhow::ensure!(
                    found == keys,
                    "a worker walked {found} keys, expected {keys}"
                );
            }
            let shared = pool.clone();
            let row = measure(probe, label, duration, move |deadline| {
                loop_until(tasks, deadline, move || {
                    let pool = shared.clone();
                    async move {
                        let found = pool.call::<JsonWalk>(input).await?;
                        let found = found.map_err(anyhow::Error::msg)?;
                        anyhow::ensure!(found == keys, "walked {found} keys, expected {keys}");
                        Ok(1.0)
                    }
                })
            })?;
            // The last handle: dropping it reaps the workers, off the loop.
            drop(pool);
            return Ok(row);
        }
        let offloader = Arc::new(match mode {
            JsonMode::Blocking => Offloader::Inline,
            JsonMode::Default => Offloader::Default,
            _ => Offloader::pool("json", threads)?,
        });
        let bytes = self.bytes.clone();
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

/// The parse-and-walk as a process-pool task. The worker generates the
/// document from `size_mb` and `seed` on its first call and keeps it (a
/// cache of one), so a call ships a few bytes, not megabytes, and the
/// walk is what gets measured. Returns the keys found, or the error as
/// text.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) struct JsonWalk {
    /// Size of the document, MB.
    pub(crate) size_mb: f64,
    /// Seed of its generator.
    pub(crate) seed: u64,
}

impl Task for JsonWalk {
    const NAME: &'static str = "lab-json-walk";
    type Input = JsonWalk;
    type Output = Result<u64, String>;
    fn run(input: JsonWalk) -> Result<u64, String> {
        type Cached = Option<((usize, u64), Arc<Vec<u8>>)>;
        static DOC: Mutex<Cached> = Mutex::new(None);
        let key = (doc_bytes(input.size_mb), input.seed);
        let bytes = {
            let mut doc = DOC.lock().unwrap_or_else(PoisonError::into_inner);
            match &*doc {
                Some((k, bytes)) if *k == key => bytes.clone(),
                _ => {
                    let bytes = Arc::new(generate(key.0, key.1));
                    *doc = Some((key, bytes.clone()));
                    bytes
                }
            }
        };
        walk(&bytes).map_err(|e| e.to_string())
    }
}

/// The document's size in bytes for `size_mb` MB.
fn doc_bytes(size_mb: f64) -> usize {
    (size_mb.max(0.001) * 1e6) as usize
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

/// A deterministic document of at least `size` bytes, the same for the
/// same `seed`: an external service's answer, a list of nested records.
pub(crate) fn generate(size: usize, seed: u64) -> Vec<u8> {
    let mut s = String::with_capacity(size + 1024);
    s.push_str("{\"service\":\"inventory\",\"version\":3,\"records\":[");
    // A small LCG: the same document on every run and every machine.
    let mut x: u64 = seed;
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
        let a = generate(10_000, SEED);
        assert_eq!(a, generate(10_000, SEED));
        assert_ne!(a, generate(10_000, SEED + 1));
        assert!(a.len() >= 10_000);
        // 3 top-level keys, then 8 per record + 3 in `stock` + 3 in `attrs`.
        let keys = walk(&a).unwrap();
        assert!(keys > 3 && (keys - 3) % 14 == 0, "{keys}");
    }
}
