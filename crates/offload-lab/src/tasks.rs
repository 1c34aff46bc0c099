//! The lab's task registry: what its worker processes (this executable,
//! re-executed) serve. The benchmark and experiment tasks live beside their
//! benchmark or experiment; the chaos scenarios' tasks live here.

use std::time::Duration;

use offload::proc::{Registry, Task};

use crate::bench::procs::{Burn, Noop};

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

/// The tasks the lab's worker processes serve.
pub(crate) fn registry() -> Registry {
    Registry::new()
        .with::<Noop>()
        .with::<Burn>()
        .with::<Spin>()
        .with::<SleepMs>()
        .with::<crate::experiments::io::HttpGet>()
        .with::<crate::experiments::cpu::Countdown>()
        .with::<crate::experiments::json::JsonWalk>()
}
