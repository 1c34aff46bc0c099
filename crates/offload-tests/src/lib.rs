//! Fixture tasks shared by the fixture worker program (`proc_fixture`) and
//! the process tests, so both sides name the same types.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use offload::proc::{Registry, Task};
use serde::{Deserialize, Serialize};

/// Adds numbers.
#[derive(Debug)]
pub struct Sum;
impl Task for Sum {
    const NAME: &'static str = "sum";
    type Input = Vec<u64>;
    type Output = u64;
    fn run(v: Vec<u64>) -> u64 {
        v.iter().sum()
    }
}

/// Returns its input.
#[derive(Debug)]
pub struct Echo;
impl Task for Echo {
    const NAME: &'static str = "echo";
    type Input = String;
    type Output = String;
    fn run(s: String) -> String {
        s
    }
}

/// Panics with the given message.
#[derive(Debug)]
pub struct Panic;
impl Task for Panic {
    const NAME: &'static str = "panic";
    type Input = String;
    type Output = ();
    fn run(msg: String) {
        panic!("{msg}");
    }
}

/// How a worker should die.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub enum Death {
    /// `std::process::exit(code)`.
    Exit(i32),
    /// `std::process::abort()` (SIGABRT), what a panic does under `panic = "abort"`.
    Abort,
    /// Sends itself SIGSEGV through `kill`, as a segfault in native code would.
    Segfault,
}

/// Dies as told.
#[derive(Debug)]
pub struct Die;
impl Task for Die {
    const NAME: &'static str = "die";
    type Input = Death;
    type Output = ();
    fn run(how: Death) {
        match how {
            Death::Exit(code) => std::process::exit(code),
            Death::Abort => std::process::abort(),
            Death::Segfault => {
                // The first SIGSEGV from outside lands in Rust's stack
                // overflow handler, which restores the default action and
                // returns; the second one kills, as a real fault would.
                let pid = std::process::id().to_string();
                for _ in 0..2 {
                    let _ = std::process::Command::new("sh")
                        .args(["-c", "kill -s SEGV \"$1\"", "sh", &pid])
                        .stdin(std::process::Stdio::null())
                        .status();
                    std::thread::sleep(Duration::from_millis(50));
                }
                std::thread::sleep(Duration::from_secs(60));
            }
        }
    }
}

/// Sleeps for the given milliseconds and returns its process id.
#[derive(Debug)]
pub struct SleepMs;
impl Task for SleepMs {
    const NAME: &'static str = "sleep_ms";
    type Input = u64;
    type Output = u32;
    fn run(ms: u64) -> u32 {
        std::thread::sleep(Duration::from_millis(ms));
        std::process::id()
    }
}

/// Spins forever (a runaway task).
#[derive(Debug)]
pub struct Spin;
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

/// The worker's process id.
#[derive(Debug)]
pub struct Pid;
impl Task for Pid {
    const NAME: &'static str = "pid";
    type Input = ();
    type Output = u32;
    fn run(_: ()) -> u32 {
        std::process::id()
    }
}

static INIT_RAN: AtomicBool = AtomicBool::new(false);

/// Whether the registry's init hook ran in this worker.
#[derive(Debug)]
pub struct InitRan;
impl Task for InitRan {
    const NAME: &'static str = "init_ran";
    type Input = ();
    type Output = bool;
    fn run(_: ()) -> bool {
        INIT_RAN.load(Ordering::SeqCst)
    }
}

/// An output whose serialisation always fails.
#[derive(Debug)]
pub struct Unserialisable;
impl Serialize for Unserialisable {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom(
            "this value refuses to be serialised",
        ))
    }
}
impl<'de> Deserialize<'de> for Unserialisable {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <()>::deserialize(d).map(|_| Unserialisable)
    }
}

/// Returns a value that cannot be serialised.
#[derive(Debug)]
pub struct BadOutput;
impl Task for BadOutput {
    const NAME: &'static str = "bad_output";
    type Input = ();
    type Output = Unserialisable;
    fn run(_: ()) -> Unserialisable {
        Unserialisable
    }
}

/// Returns `n` bytes.
#[derive(Debug)]
pub struct Bytes;
impl Task for Bytes {
    const NAME: &'static str = "bytes";
    type Input = usize;
    type Output = Vec<u8>;
    fn run(n: usize) -> Vec<u8> {
        vec![7; n]
    }
}

/// The worker's environment, sorted by name (lossy UTF-8).
#[derive(Debug)]
pub struct EnvVars;
impl Task for EnvVars {
    const NAME: &'static str = "env_vars";
    type Input = ();
    type Output = Vec<(String, String)>;
    fn run(_: ()) -> Vec<(String, String)> {
        let mut vars: Vec<(String, String)> = std::env::vars_os()
            .map(|(k, v)| {
                (
                    k.to_string_lossy().into_owned(),
                    v.to_string_lossy().into_owned(),
                )
            })
            .collect();
        vars.sort();
        vars
    }
}

/// The worker's open file descriptors and what they point to
/// (`/proc/self/fd`), except the one used to list them.
#[derive(Debug)]
pub struct OpenFds;
impl Task for OpenFds {
    const NAME: &'static str = "open_fds";
    type Input = ();
    type Output = Vec<(u32, String)>;
    fn run(_: ()) -> Vec<(u32, String)> {
        let mut fds: Vec<(u32, String)> = std::fs::read_dir("/proc/self/fd")
            .map(|dir| {
                dir.filter_map(|e| {
                    let e = e.ok()?;
                    let fd = e.file_name().to_str()?.parse().ok()?;
                    let target = std::fs::read_link(e.path()).ok()?;
                    Some((fd, target.to_string_lossy().into_owned()))
                })
                .collect()
            })
            .unwrap_or_default();
        fds.sort();
        fds
    }
}

/// The path that the worker's control channel (fd 0) is bound to, from
/// `/proc/net/unix`: `Some("")` for an unnamed socket, `Some(path)` for a
/// named one, `None` if fd 0 is not a Unix socket.
#[derive(Debug)]
pub struct ChannelPath;
impl Task for ChannelPath {
    const NAME: &'static str = "channel_path";
    type Input = ();
    type Output = Option<String>;
    fn run(_: ()) -> Option<String> {
        let link = std::fs::read_link("/proc/self/fd/0").ok()?;
        let inode = link
            .to_str()?
            .strip_prefix("socket:[")?
            .strip_suffix(']')?
            .to_owned();
        // Columns: Num RefCount Protocol Flags Type St Inode [Path]
        let table = std::fs::read_to_string("/proc/net/unix").ok()?;
        table.lines().skip(1).find_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            (cols.get(6) == Some(&inode.as_str()))
                .then(|| cols.get(7).map_or(String::new(), |p| (*p).to_owned()))
        })
    }
}

/// A task the fixture worker does NOT register.
#[derive(Debug)]
pub struct NotRegistered;
impl Task for NotRegistered {
    const NAME: &'static str = "not_registered";
    type Input = ();
    type Output = ();
    fn run(_: ()) {}
}

/// Counts words: a task written as a plain function with `#[task]`.
#[offload::proc::task]
pub fn word_count(text: String) -> usize {
    text.split_whitespace().count()
}

/// Several arguments become a tuple input; the task is renamed.
#[offload::proc::task(name = "weighted_sum.v2", type = WeightedSum)]
pub fn weighted(values: Vec<u64>, weight: u64) -> u64 {
    values.iter().map(|v| v * weight).sum()
}

/// The fixture worker's registry.
pub fn registry() -> Registry {
    Registry::new()
        .with::<Sum>()
        .with::<Echo>()
        .with::<Panic>()
        .with::<Die>()
        .with::<SleepMs>()
        .with::<Spin>()
        .with::<Pid>()
        .with::<InitRan>()
        .with::<BadOutput>()
        .with::<Bytes>()
        .with::<WordCount>()
        .with::<WeightedSum>()
        .with::<EnvVars>()
        .with::<OpenFds>()
        .with::<ChannelPath>()
        .init(|| INIT_RAN.store(true, Ordering::SeqCst))
}

/// Whether process `pid` is still running (a zombie counts as dead).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state is the first field after the parenthesised name.
        Ok(stat) => stat
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.chars().next())
            .is_some_and(|state| state != 'Z' && state != 'X'),
        Err(_) => false,
    }
}

/// SIGKILLs `pid` from outside (the shell's `kill` builtin: no `unsafe`,
/// and no dependency on a `kill` executable being installed).
pub fn sigkill(pid: u32) {
    let _ = std::process::Command::new("sh")
        .args(["-c", "kill -s KILL \"$1\"", "sh", &pid.to_string()])
        .status();
}
