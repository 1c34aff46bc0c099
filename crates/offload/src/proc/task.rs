//! [`Task`]: a typed, named unit of work; [`Registry`]: the tasks a worker
//! serves, and the dispatch from a name and input bytes to output bytes.
//!
//! Dispatch knows nothing of processes or sockets: the same registry can
//! serve calls that arrive over any transport.

use std::collections::BTreeMap;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::protocol::Failure;

/// A unit of work that runs in a worker process, found by [`NAME`](Task::NAME).
///
/// Input and output cross the process boundary with serde (postcard on the
/// wire), so a wrong input or output type is a compile error at the call
/// site: `pool.call::<Sum>(vec![1, 2])` only accepts `Sum::Input`.
///
/// # Examples
///
/// ```
/// struct Sum;
///
/// impl offload::proc::Task for Sum {
///     const NAME: &'static str = "sum";
///     type Input = Vec<u64>;
///     type Output = u64;
///     fn run(v: Vec<u64>) -> u64 {
///         v.iter().sum()
///     }
/// }
/// ```
pub trait Task: 'static {
    /// The name the worker finds the task by. Unique within a registry;
    /// keep it stable across versions that must interoperate.
    const NAME: &'static str;
    /// What the caller sends.
    type Input: Serialize + DeserializeOwned + Send + 'static;
    /// What the worker sends back.
    type Output: Serialize + DeserializeOwned + Send + 'static;
    /// Does the work, in the worker process. A panic here fails only this
    /// call ([`Error::is_remote_panic`](crate::Error::is_remote_panic)).
    fn run(input: Self::Input) -> Self::Output;
}

/// Runs a registered task on encoded input. Type-erased so a registry can
/// hold many tasks.
type Handler = fn(&[u8]) -> Result<Vec<u8>, Failure>;

fn handle<T: Task>(input: &[u8]) -> Result<Vec<u8>, Failure> {
    let input: T::Input =
        postcard::from_bytes(input).map_err(|e| Failure::BadInput(e.to_string()))?;
    let output = catch_unwind(AssertUnwindSafe(|| T::run(input))).map_err(|payload| {
        let (message, location) = super::worker::take_panic(payload);
        Failure::Panic { message, location }
    })?;
    postcard::to_stdvec(&output).map_err(|e| Failure::BadOutput(e.to_string()))
}

/// The tasks a worker serves, and a hook run once in each worker process
/// before it serves any.
///
/// Build the same registry in the parent and in the worker: the parent
/// uses it to check, at the handshake, that the worker knows every task;
/// the worker uses it to run them. Usually one function returns it:
///
/// ```
/// # struct Sum;
/// # impl offload::proc::Task for Sum {
/// #     const NAME: &'static str = "sum";
/// #     type Input = Vec<u64>;
/// #     type Output = u64;
/// #     fn run(v: Vec<u64>) -> u64 { v.iter().sum() }
/// # }
/// fn registry() -> offload::proc::Registry {
///     offload::proc::Registry::new().with::<Sum>()
/// }
/// ```
#[derive(Clone, Default)]
pub struct Registry {
    tasks: BTreeMap<&'static str, Handler>,
    init: Option<fn()>,
    duplicates: Vec<&'static str>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds task `T`. A second task with the same name is recorded as an
    /// error that [`ProcessPoolBuilder::build`](super::ProcessPoolBuilder::build)
    /// reports.
    pub fn with<T: Task>(mut self) -> Self {
        if self.tasks.insert(T::NAME, handle::<T>).is_some() {
            self.duplicates.push(T::NAME);
        }
        self
    }

    /// Runs `init` once in each worker process, before its handshake (open a
    /// connection, load a model, warm a cache; keep what it makes in a
    /// `static` such as a `OnceLock`). If it panics, the worker fails to
    /// start and the pool reports [`Error::is_worker_start`](crate::Error::is_worker_start).
    pub fn init(mut self, init: fn()) -> Self {
        self.init = Some(init);
        self
    }

    /// The registered task names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.tasks.keys().copied()
    }

    /// Whether a task of this name is registered.
    pub fn contains(&self, name: &str) -> bool {
        self.tasks.contains_key(name)
    }

    pub(crate) fn duplicates(&self) -> &[&'static str] {
        &self.duplicates
    }

    pub(crate) fn run_init(&self) {
        if let Some(init) = self.init {
            init();
        }
    }

    /// Runs task `name` on encoded `input` and returns the encoded output.
    pub(crate) fn dispatch(&self, name: &str, input: &[u8]) -> Result<Vec<u8>, Failure> {
        match self.tasks.get(name) {
            Some(handler) => handler(input),
            None => Err(Failure::UnknownTask(name.to_owned())),
        }
    }
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("tasks", &self.tasks.keys().collect::<Vec<_>>())
            .field("init", &self.init.is_some())
            .finish()
    }
}
