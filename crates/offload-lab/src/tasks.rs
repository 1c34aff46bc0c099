//! The lab's task registry: what its worker processes (this executable,
//! re-executed) serve. The benchmark and experiment tasks live beside their
//! benchmark or experiment; the chaos scenarios' tasks live here.

use std::time::Duration;

use offload::proc::{Registry, Task};

/// The tiny task: the pool's own overhead is what gets measured.
#[derive(Debug)]
pub(crate) struct Noop;
impl Task for Noop {
    const NAME: &'static str = "noop";
    type Input = u64;
    type Output = u64;
    fn run(x: u64) -> u64 {
        x
    }
}

/// Burns the CPU for a given number of loop steps (calibrated to ~10 ms).
#[derive(Debug)]
pub(crate) struct Burn;
impl Task for Burn {
    const NAME: &'static str = "burn";
    type Input = u64;
    type Output = u64;
    fn run(steps: u64) -> u64 {
        burn(steps)
    }
}

pub(crate) fn burn(steps: u64) -> u64 {
    let mut x = 0u64;
    for i in 0..steps {
        x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(i));
    }
    x
}

/// A runaway task: spins until it is killed.
#[derive(Debug)]
pub(crate) struct Spin;
impl Task for Spin {
    const NAME: &'static str = "spin";
    type Input = ();
    type Output = ();
    fn run(_: ()) {
        let mut x = 0u64;
        loop {
            x = std::hint::black_box(x.wrapping_add(1));
        }
    }
}

/// Sleeps for the given milliseconds, then returns them.
#[derive(Debug)]
pub(crate) struct SleepMs;
impl Task for SleepMs {
    const NAME: &'static str = "sleep_ms";
    type Input = u64;
    type Output = u64;
    fn run(ms: u64) -> u64 {
        std::thread::sleep(Duration::from_millis(ms));
        ms
    }
}

/// Appends call `id` to the file `path` (one short `O_APPEND` write, so
/// concurrent workers never interleave), then spins `work_us`
/// microseconds; returns `id`. The chaos scenarios count the marks to
/// prove that no call ran twice.
#[derive(Debug)]
pub(crate) struct Mark;
impl Task for Mark {
    const NAME: &'static str = "mark";
    type Input = (String, u64, u64);
    type Output = u64;
    fn run((path, id, work_us): (String, u64, u64)) -> u64 {
        mark(&path, id);
        let until = std::time::Instant::now() + Duration::from_micros(work_us);
        while std::time::Instant::now() < until {
            std::hint::spin_loop();
        }
        id
    }
}

fn mark(path: &str, id: u64) {
    use std::io::Write;
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = f.write_all(format!("{id}\n").as_bytes());
    }
}

/// Marks call `id` like [`Mark`], then starts a daemon-like subprocess
/// (`sh -c 'sleep 0.2 &'`: the sleep outlives the task, holding the
/// worker's stdout and stderr) and returns `id`.
#[derive(Debug)]
pub(crate) struct SpawnDaemon;
impl Task for SpawnDaemon {
    const NAME: &'static str = "spawn_daemon";
    type Input = (String, u64);
    type Output = u64;
    fn run((path, id): (String, u64)) -> u64 {
        mark(&path, id);
        let _ = std::process::Command::new("sh")
            .args(["-c", "sleep 0.2 &"])
            .status();
        id
    }
}

/// Echoes its bytes (the payload benchmarks: `Vec<u8>`).
#[derive(Debug)]
pub(crate) struct EchoBytes;
impl Task for EchoBytes {
    const NAME: &'static str = "echo_bytes";
    type Input = Vec<u8>;
    type Output = Vec<u8>;
    fn run(v: Vec<u8>) -> Vec<u8> {
        v
    }
}

/// Echoes its text (the payload benchmarks: `String`).
#[derive(Debug)]
pub(crate) struct EchoString;
impl Task for EchoString {
    const NAME: &'static str = "echo_string";
    type Input = String;
    type Output = String;
    fn run(s: String) -> String {
        s
    }
}

/// Leaks `mib` MiB (touched, so resident): a native library that never
/// frees. Returns the worker's pid.
#[derive(Debug)]
pub(crate) struct Leak;
impl Task for Leak {
    const NAME: &'static str = "leak";
    type Input = u32;
    type Output = u32;
    fn run(mib: u32) -> u32 {
        std::mem::forget(vec![1u8; (mib as usize) << 20]);
        std::process::id()
    }
}

/// Allocates and touches `mib` MiB, then frees it: a runaway allocation
/// when `mib` is large. Returns the worker's pid.
#[derive(Debug)]
pub(crate) struct Allocate;
impl Task for Allocate {
    const NAME: &'static str = "allocate";
    type Input = u32;
    type Output = u32;
    fn run(mib: u32) -> u32 {
        std::hint::black_box(vec![1u8; (mib as usize) << 20]);
        std::process::id()
    }
}

/// The tasks the lab's worker processes serve.
pub(crate) fn registry() -> Registry {
    Registry::new()
        .with::<Noop>()
        .with::<Burn>()
        .with::<Spin>()
        .with::<SleepMs>()
        .with::<Mark>()
        .with::<EchoBytes>()
        .with::<Leak>()
        .with::<Allocate>()
        .with::<EchoString>()
        .with::<SpawnDaemon>()
        .with::<crate::experiments::io::HttpGet>()
        .with::<crate::experiments::cpu::Countdown>()
        .with::<crate::experiments::json::JsonWalk>()
        .with::<crate::bench::service::ServiceWalk>()
}
