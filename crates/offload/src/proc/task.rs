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

use super::codec::{self, Encoded, Input};
use super::protocol::TaskInfo;
use crate::error::{Error, Payload};

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
    /// The version of the task's contract (default 0). Bump it when the
    /// meaning of the input or output changes without their types
    /// changing: a caller and a worker that disagree refuse the call with
    /// [`Error::is_version_mismatch`](crate::Error::is_version_mismatch).
    /// See [`fingerprint`].
    const VERSION: u32 = 0;
    /// What the caller sends.
    type Input: Serialize + DeserializeOwned + Send + 'static;
    /// What the worker sends back.
    type Output: Serialize + DeserializeOwned + Send + 'static;
    /// Does the work, in the worker process. A panic here fails only this
    /// call ([`Error::is_remote_panic`](crate::Error::is_remote_panic)).
    fn run(input: Self::Input) -> Self::Output;
}

/// The fingerprint of task `T`'s contract: its name, its
/// [`VERSION`](Task::VERSION), and the names of its input and output
/// types. Workers announce it for every task they serve, and a call whose
/// fingerprint differs from the worker's is refused with
/// [`Error::is_version_mismatch`](crate::Error::is_version_mismatch)
/// instead of decoding bytes of one type as another.
///
/// Type names come from [`std::any::type_name`], which is not guaranteed
/// to be the same across compiler versions: build callers and workers
/// that must interoperate with the same toolchain, or rely on `VERSION`.
///
/// ```
/// struct Sum;
/// impl offload::proc::Task for Sum {
///     const NAME: &'static str = "sum";
///     type Input = Vec<u64>;
///     type Output = u64;
///     fn run(v: Vec<u64>) -> u64 { v.iter().sum() }
/// }
/// struct SumV2;
/// impl offload::proc::Task for SumV2 {
///     const NAME: &'static str = "sum";
///     const VERSION: u32 = 2;
///     type Input = Vec<u64>;
///     type Output = u64;
///     fn run(v: Vec<u64>) -> u64 { v.iter().sum() }
/// }
/// use offload::proc::fingerprint;
/// assert_ne!(fingerprint::<Sum>(), fingerprint::<SumV2>());
/// ```
pub fn fingerprint<T: Task>() -> u64 {
    // FNV-1a: stable across builds and platforms, unlike std's hasher.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let parts: [&[u8]; 4] = [
        T::NAME.as_bytes(),
        &T::VERSION.to_le_bytes(),
        std::any::type_name::<T::Input>().as_bytes(),
        std::any::type_name::<T::Output>().as_bytes(),
    ];
    for part in parts {
        for &b in part.iter().chain(&[0xff]) {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    hash
}

/// Runs a registered task on encoded input, encoding at most `max_output`
/// bytes of output. Type-erased so a registry can hold many tasks.
type Handler = fn(Input<'_>, usize) -> Result<Encoded, Error>;

/// A registered task: how to run it, and its fingerprint.
#[derive(Clone, Copy)]
struct Entry {
    handler: Handler,
    fingerprint: u64,
}

fn handle<T: Task>(input: Input<'_>, max_output: usize) -> Result<Encoded, Error> {
    let input: T::Input = codec::decode(input, Payload::Input)?;
    let output = catch_unwind(AssertUnwindSafe(|| T::run(input))).map_err(|payload| {
        let (message, location) = super::worker::take_panic(payload);
        Error::remote_panic(message, location)
    })?;
    codec::encode(output, Payload::Output, max_output)
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
    tasks: BTreeMap<&'static str, Entry>,
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
        let entry = Entry {
            handler: handle::<T>,
            fingerprint: fingerprint::<T>(),
        };
        if self.tasks.insert(T::NAME, entry).is_some() {
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

    /// The [`fingerprint`] of the task registered under `name`.
    pub fn fingerprint(&self, name: &str) -> Option<u64> {
        self.tasks.get(name).map(|e| e.fingerprint)
    }

    /// The tasks as a worker announces them.
    pub(crate) fn task_infos(&self) -> Vec<TaskInfo> {
        self.tasks
            .iter()
            .map(|(name, e)| TaskInfo {
                name: (*name).to_owned(),
                fingerprint: e.fingerprint,
            })
            .collect()
    }

    pub(crate) fn duplicates(&self) -> &[&'static str] {
        &self.duplicates
    }

    pub(crate) fn run_init(&self) {
        if let Some(init) = self.init {
            init();
        }
    }

    /// Runs task `name` on its encoded input, on the calling thread, and
    /// returns its encoded output: the whole of a worker's work, with no
    /// process or transport involved. Another transport (a message system
    /// carrying calls between machines) receives a task's name and input
    /// bytes, calls this, and sends the result back; the [`Error`] is
    /// serde-serialisable for that purpose.
    ///
    /// # Errors
    ///
    /// [`Error::is_unknown_task`] for a name that is not registered,
    /// [`Error::is_codec`] for input bytes that are not the task's input
    /// (or an output serde refuses), [`Error::is_remote_panic`] if the
    /// task panicked (the panic is caught here).
    ///
    /// ```
    /// struct Sum;
    /// impl offload::proc::Task for Sum {
    ///     const NAME: &'static str = "sum";
    ///     type Input = Vec<u64>;
    ///     type Output = u64;
    ///     fn run(v: Vec<u64>) -> u64 { v.iter().sum() }
    /// }
    /// let registry = offload::proc::Registry::new().with::<Sum>();
    /// let input = postcard::to_stdvec(&vec![1u64, 2, 3]).unwrap();
    /// let output = registry.dispatch("sum", &input).unwrap();
    /// assert_eq!(postcard::from_bytes::<u64>(&output).unwrap(), 6);
    /// assert!(registry.dispatch("nope", &input).unwrap_err().is_unknown_task());
    /// ```
    pub fn dispatch(&self, name: &str, input: &[u8]) -> Result<Vec<u8>, Error> {
        self.dispatch_limited(name, Input::Borrowed(input), usize::MAX)
            .map(Encoded::into_vec)
    }

    /// [`dispatch`](Self::dispatch), refusing an output over `max_output`
    /// bytes ([`Error::is_too_large`]) as soon as its encoding passes it.
    pub(crate) fn dispatch_limited(
        &self,
        name: &str,
        input: Input<'_>,
        max_output: usize,
    ) -> Result<Encoded, Error> {
        match self.tasks.get(name) {
            Some(entry) => (entry.handler)(input, max_output),
            None => Err(Error::unknown_task(name)),
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
