//! Where a worker's stdout and stderr go.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Where the output of worker processes goes (their stdout and stderr),
/// set with [`ProcessPoolBuilder::output`](crate::proc::ProcessPoolBuilder::output).
///
/// Whatever the choice, a worker can never block on a full pipe, and a
/// parent whose own stderr fails (a closed pipe, a full disk) keeps
/// draining: a task that prints never fails because of where its output
/// goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum WorkerOutput {
    /// Each line to the parent's stderr, prefixed with the worker's name:
    /// `[offload-proc-0] …` (the default). A line longer than 16 KiB is
    /// cut into pieces of 16 KiB, so a worker that prints without a
    /// newline cannot make the parent buffer it whole.
    #[default]
    Prefixed,
    /// The worker writes straight to the parent's stdout and stderr (no
    /// prefix, no thread in the parent).
    Inherit,
    /// One `tracing` event per line, at INFO for stdout and WARN for
    /// stderr, with target `offload::worker` and fields `worker` and
    /// `stream` (same 16 KiB cut as `Prefixed`).
    Tracing,
    /// Thrown away (the worker writes to `/dev/null`).
    Discard,
}

/// The longest piece of a line that is forwarded at once.
pub(crate) const MAX_LINE: usize = 16 << 10;

/// What a worker's stderr said that explains its death: Rust prints
/// "memory allocation of N bytes failed" before it aborts on a failed
/// allocation (a backtrace may follow), which says the worker hit its
/// memory limit.
#[derive(Debug, Default)]
pub(crate) struct Tail {
    alloc_failed: AtomicBool,
}

impl Tail {
    fn see(&self, line: &[u8]) {
        const NEEDLE: &[u8] = b"memory allocation of ";
        if line.windows(NEEDLE.len()).any(|w| w == NEEDLE) && line.ends_with(b"failed") {
            self.alloc_failed.store(true, Ordering::Release);
        }
    }

    /// Whether the worker reported a failed allocation.
    pub(crate) fn saw_failed_allocation(&self) -> bool {
        self.alloc_failed.load(Ordering::Acquire)
    }
}

impl WorkerOutput {
    /// Sets the worker's stdout and stderr on `cmd`. With `watch_stderr`,
    /// stderr passes through the parent whatever the mode (to keep its
    /// [`Tail`]): forwarded as is for `Inherit`, dropped for `Discard`.
    pub(crate) fn configure(self, cmd: &mut Command, watch_stderr: bool) {
        let (out, err) = match self {
            WorkerOutput::Prefixed | WorkerOutput::Tracing => (Stdio::piped(), Stdio::piped()),
            WorkerOutput::Inherit => (Stdio::inherit(), Stdio::inherit()),
            WorkerOutput::Discard => (Stdio::null(), Stdio::null()),
        };
        let err = if watch_stderr { Stdio::piped() } else { err };
        cmd.stdout(out).stderr(err);
    }

    /// Starts forwarding one of a worker's pipes (if it has one), keeping
    /// its last line in `tail` if given.
    pub(crate) fn forward(
        self,
        worker: &str,
        stream: Stream,
        pipe: Option<impl Read + Send + 'static>,
        tail: Option<Arc<Tail>>,
    ) {
        let Some(pipe) = pipe else { return };
        let thread_name = format!("{worker}-{}", stream.short());
        let worker = worker.to_owned();
        let spawned = std::thread::Builder::new()
            .name(thread_name.clone())
            .spawn(move || {
                for_each_line(pipe, |line| {
                    if let Some(t) = &tail {
                        t.see(line);
                    }
                    // A failed write is the sink's problem, not the
                    // worker's: keep draining the pipe.
                    match self {
                        WorkerOutput::Tracing => emit_event(&worker, stream, line),
                        WorkerOutput::Discard => {}
                        WorkerOutput::Inherit => {
                            let mut err = std::io::stderr().lock();
                            let _ = err.write_all(line);
                            let _ = err.write_all(b"\n");
                        }
                        WorkerOutput::Prefixed => {
                            let text = String::from_utf8_lossy(line);
                            let _ = writeln!(std::io::stderr().lock(), "[{worker}] {text}");
                        }
                    }
                });
            });
        if let Err(e) = spawned {
            tracing::warn!(thread = %thread_name, error = %e, "offload: no thread to forward a worker's output; it may block when its pipe fills");
        }
    }
}

/// Which of a worker's output streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn short(self) -> &'static str {
        match self {
            Stream::Stdout => "out",
            Stream::Stderr => "err",
        }
    }
}

fn emit_event(worker: &str, stream: Stream, line: &[u8]) {
    let text = String::from_utf8_lossy(line);
    match stream {
        Stream::Stdout => {
            tracing::info!(target: "offload::worker", worker = %worker, stream = "stdout", "{text}")
        }
        Stream::Stderr => {
            tracing::warn!(target: "offload::worker", worker = %worker, stream = "stderr", "{text}")
        }
    }
}

/// Calls `f` with each line of `pipe` (without its newline), a long line
/// in pieces of at most [`MAX_LINE`] bytes, until the pipe ends or fails.
pub(crate) fn for_each_line(pipe: impl Read, mut f: impl FnMut(&[u8])) {
    let mut reader = BufReader::with_capacity(MAX_LINE, pipe);
    let mut line: Vec<u8> = Vec::with_capacity(256);
    loop {
        let (consumed, ended) = match reader.fill_buf() {
            Ok([]) => {
                if !line.is_empty() {
                    f(&line);
                }
                return;
            }
            Ok(buf) => {
                let room = MAX_LINE - line.len();
                match buf.iter().take(room).position(|&b| b == b'\n') {
                    Some(i) => {
                        line.extend_from_slice(&buf[..i]);
                        (i + 1, true)
                    }
                    None => {
                        let n = buf.len().min(room);
                        line.extend_from_slice(&buf[..n]);
                        (n, line.len() == MAX_LINE)
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        };
        reader.consume(consumed);
        if ended {
            f(&line);
            line.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(input: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for_each_line(input, |l| out.push(l.to_vec()));
        out
    }

    #[test]
    fn lines_without_their_newline() {
        assert_eq!(lines(b"a\nbc\n\nd"), [&b"a"[..], b"bc", b"", b"d"]);
        assert!(lines(b"").is_empty());
    }

    #[test]
    fn a_line_without_end_is_cut_at_the_cap() {
        let input = vec![b'x'; MAX_LINE * 3 + 5];
        let got = lines(&input);
        assert_eq!(got.len(), 4);
        assert!(got.iter().all(|l| l.len() <= MAX_LINE));
        assert_eq!(got.iter().map(Vec::len).sum::<usize>(), input.len());
    }
}
