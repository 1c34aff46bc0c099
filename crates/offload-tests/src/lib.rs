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

/// Every Unix socket the worker holds, by descriptor, with the path it is
/// bound to from `/proc/net/unix` (`""` for an unnamed socket), and what
/// its fd 0 is.
#[derive(Debug)]
pub struct Sockets;
impl Task for Sockets {
    const NAME: &'static str = "sockets";
    type Input = ();
    type Output = (String, Vec<(u32, String)>);
    fn run(_: ()) -> (String, Vec<(u32, String)>) {
        // Columns: Num RefCount Protocol Flags Type St Inode [Path]
        let table = std::fs::read_to_string("/proc/net/unix").unwrap_or_default();
        let path_of = |inode: &str| {
            table.lines().skip(1).find_map(|line| {
                let cols: Vec<&str> = line.split_whitespace().collect();
                (cols.get(6) == Some(&inode))
                    .then(|| cols.get(7).map_or(String::new(), |p| (*p).to_owned()))
            })
        };
        let stdin = std::fs::read_link("/proc/self/fd/0")
            .map(|l| l.to_string_lossy().into_owned())
            .unwrap_or_default();
        let sockets = OpenFds::run(())
            .into_iter()
            .filter_map(|(fd, target)| {
                let inode = target
                    .strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .to_owned();
                Some((fd, path_of(&inode).unwrap_or_else(|| "?".into())))
            })
            .collect();
        (stdin, sockets)
    }
}

/// Appends `tag` to the file `path` when it starts, then sleeps
/// `sleep_ms`: counts how often a call really ran, across worker deaths.
#[derive(Debug)]
pub struct Record;
impl Task for Record {
    const NAME: &'static str = "record";
    type Input = (String, String, u64);
    type Output = String;
    fn run((path, tag, sleep_ms): (String, String, u64)) -> String {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .expect("record file");
        // One write of the whole line: with O_APPEND, lines from several
        // workers never interleave.
        f.write_all(format!("{tag}\n").as_bytes()).expect("record");
        drop(f);
        std::thread::sleep(Duration::from_millis(sleep_ms));
        tag
    }
}

/// How many times each tag was recorded in `path`.
pub fn recorded(path: &std::path::Path) -> std::collections::BTreeMap<String, usize> {
    let mut counts = std::collections::BTreeMap::new();
    for line in std::fs::read_to_string(path).unwrap_or_default().lines() {
        *counts.entry(line.to_owned()).or_insert(0) += 1;
    }
    counts
}

/// Echoes its bytes, reversed (so an echo that never reached the task
/// would show).
#[derive(Debug)]
pub struct ReverseBytes;
impl Task for ReverseBytes {
    const NAME: &'static str = "reverse_bytes";
    type Input = Vec<u8>;
    type Output = Vec<u8>;
    fn run(mut v: Vec<u8>) -> Vec<u8> {
        v.reverse();
        v
    }
}

/// Leaks `mib` MiB (touched, so resident) and returns the worker's pid: a
/// native library that never frees.
#[derive(Debug)]
pub struct Leak;
impl Task for Leak {
    const NAME: &'static str = "leak";
    type Input = u32;
    type Output = u32;
    fn run(mib: u32) -> u32 {
        let block = vec![1u8; (mib as usize) << 20];
        std::mem::forget(block);
        std::process::id()
    }
}

/// Allocates `mib` MiB, touches it and frees it; returns the worker's pid.
#[derive(Debug)]
pub struct Allocate;
impl Task for Allocate {
    const NAME: &'static str = "allocate";
    type Input = u32;
    type Output = u32;
    fn run(mib: u32) -> u32 {
        let block = vec![1u8; (mib as usize) << 20];
        std::hint::black_box(&block);
        std::process::id()
    }
}

/// The worker's `oom_score_adj`.
#[derive(Debug)]
pub struct OomScoreAdj;
impl Task for OomScoreAdj {
    const NAME: &'static str = "oom_score_adj";
    type Input = ();
    type Output = i32;
    fn run(_: ()) -> i32 {
        std::fs::read_to_string("/proc/self/oom_score_adj")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(i32::MIN)
    }
}

/// Keeps the CPU busy until the thread running the call (or, with `.2`, a
/// thread the call starts) has scheduling policy `.0` (then: how many
/// milliseconds that took) or `.1` ms have passed (`None`): see
/// `offload_test_support::spin_until_policy`.
#[derive(Debug)]
pub struct SpinUntilPolicy;
impl Task for SpinUntilPolicy {
    const NAME: &'static str = "spin_until_policy";
    type Input = (u32, u64, bool);
    type Output = Option<u64>;
    fn run((policy, limit_ms, in_new_thread): (u32, u64, bool)) -> Option<u64> {
        let spin = move || {
            offload_test_support::spin_until_policy(policy, Duration::from_millis(limit_ms))
                .map(|d| d.as_millis() as u64)
        };
        if in_new_thread {
            std::thread::spawn(spin).join().ok().flatten()
        } else {
            spin()
        }
    }
}

/// The nice level and scheduling policy of the thread that runs the call,
/// and the policy a subprocess it starts runs with.
#[derive(Debug)]
pub struct Niceness;
impl Task for Niceness {
    const NAME: &'static str = "niceness";
    type Input = ();
    type Output = (Option<i32>, Option<u32>, Option<u32>);
    fn run(_: ()) -> (Option<i32>, Option<u32>, Option<u32>) {
        // `cat /proc/self/stat` reads the stat of `cat` itself.
        let child_policy = std::process::Command::new("cat")
            .arg("/proc/self/stat")
            .output()
            .ok()
            .and_then(|o| {
                let stat = String::from_utf8_lossy(&o.stdout).into_owned();
                let rest = &stat[stat.rfind(')')? + 1..];
                rest.split_whitespace().nth(38)?.parse().ok()
            });
        (
            offload_test_support::thread_nice(),
            offload_test_support::thread_policy(),
            child_policy,
        )
    }
}

/// Starts `sleep <secs>` with the worker's stdin, stdout and stderr (the
/// defaults of `Command`), does not wait for it, and returns its pid.
#[derive(Debug)]
pub struct SpawnSleeper;
impl Task for SpawnSleeper {
    const NAME: &'static str = "spawn_sleeper";
    type Input = u32;
    type Output = u32;
    // Left running on purpose: a daemon-like grandchild; the test kills it.
    #[allow(clippy::zombie_processes)]
    fn run(secs: u32) -> u32 {
        let child = std::process::Command::new("sleep")
            .arg(secs.to_string())
            .spawn()
            .expect("sleep");
        child.id()
    }
}

/// Reads the worker's stdin to its end (at most 64 bytes), as a task that
/// forgot where it runs might: returns what it got.
#[derive(Debug)]
pub struct ReadStdin;
impl Task for ReadStdin {
    const NAME: &'static str = "read_stdin";
    type Input = ();
    type Output = Vec<u8>;
    fn run(_: ()) -> Vec<u8> {
        use std::io::Read;
        let mut buf = Vec::new();
        let _ = std::io::stdin().lock().take(64).read_to_end(&mut buf);
        buf
    }
}

/// Runs the worker's own executable with `args` (as a task that shells
/// out to its own program would) and returns its exit code and stdout.
#[derive(Debug)]
pub struct RunSelf;
impl Task for RunSelf {
    const NAME: &'static str = "run_self";
    type Input = Vec<String>;
    type Output = (Option<i32>, String);
    fn run(args: Vec<String>) -> (Option<i32>, String) {
        let exe = std::env::current_exe().expect("current exe");
        let out = std::process::Command::new(exe)
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run self");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }
}

/// Prints `n` lines of `len` bytes to stderr (or one line of `len` bytes
/// with no newline when `n` is 0); returns how many bytes it wrote.
#[derive(Debug)]
pub struct Print;
impl Task for Print {
    const NAME: &'static str = "print";
    type Input = (u32, usize);
    type Output = usize;
    fn run((n, len): (u32, usize)) -> usize {
        use std::io::Write;
        let line = vec![b'x'; len];
        let mut err = std::io::stderr().lock();
        if n == 0 {
            err.write_all(&line).expect("write");
            err.flush().expect("flush");
            return len;
        }
        for _ in 0..n {
            err.write_all(&line).expect("write");
            err.write_all(b"\n").expect("write");
        }
        err.flush().expect("flush");
        n as usize * (len + 1)
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
        .with::<Sockets>()
        .with::<Record>()
        .with::<SpawnSleeper>()
        .with::<ReadStdin>()
        .with::<RunSelf>()
        .with::<Print>()
        .with::<ReverseBytes>()
        .with::<Leak>()
        .with::<Allocate>()
        .with::<OomScoreAdj>()
        .with::<Niceness>()
        .with::<SpinUntilPolicy>()
        .init(init)
}

/// The fixture's init hook: records that it ran; with
/// `FIXTURE_INIT_PID_DIR` set, writes its pid there; with
/// `FIXTURE_INIT_SLEEP_MS`, takes that long (a slow connection or model).
fn init() {
    INIT_RAN.store(true, Ordering::SeqCst);
    if let Some(dir) = std::env::var_os("FIXTURE_INIT_PID_DIR") {
        let pid = std::process::id();
        let _ = std::fs::write(std::path::Path::new(&dir).join(pid.to_string()), b"");
    }
    if let Some(ms) = std::env::var("FIXTURE_INIT_SLEEP_MS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        std::thread::sleep(Duration::from_millis(ms));
    }
}

pub use offload_test_support::{alive, reaped, sigkill, sigstop};
