//! How a process knows it was started as a worker: an environment
//! variable naming it and its parent.
//!
//! Environment variables are inherited by every descendant, so a task that
//! runs the same executable again (or any program that links offload)
//! would see the marker too. The marker therefore names the pool's
//! process id, and only a process whose parent is that process takes it:
//! a grandchild ignores it and runs as the program it is.

/// Set in a worker's environment: `{parent pid}:{worker name}`. The only
/// variable offload sets; its settings arrive on the call channel.
pub(crate) const WORKER_ENV: &str = "OFFLOAD_PROC_WORKER";

/// A worker's identity, read from its environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Marker {
    pub(crate) name: String,
}

/// The value of [`WORKER_ENV`] for worker `name` of this process.
pub(crate) fn value_for(name: &str) -> String {
    format!("{}:{name}", std::process::id())
}

/// This process's marker, if it is a worker of its parent.
pub(crate) fn current() -> Option<Marker> {
    let value = std::env::var_os(WORKER_ENV)?;
    let value = value.to_str()?;
    let (parent, name) = value.split_once(':')?;
    if parent.parse::<u32>().ok()? != std::os::unix::process::parent_id() {
        // A descendant of a worker, not a worker: the marker was inherited.
        return None;
    }
    Some(Marker {
        name: name.to_owned(),
    })
}

/// Whether this process is a worker (for the pool builder's refusal to
/// start a pool inside a worker).
pub(crate) fn is_worker() -> bool {
    current().is_some()
}
