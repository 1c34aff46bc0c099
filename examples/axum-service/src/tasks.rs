//! The tasks the service's worker processes run. The same registry serves
//! both sides: `main` hands it to `run_worker_if_child` (first thing, so a
//! worker never parses arguments or starts a runtime) and to the pool.

use offload::proc::{Registry, Task};
use serde::{Deserialize, Serialize};

use crate::app::{Counts, generate_document};

/// Generates a `kb` KiB JSON document, parses and walks it: `/walk`'s
/// work, in a worker process.
pub(crate) struct WalkDocument;

/// What [`WalkDocument`] answers.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Walked {
    pub(crate) nodes: u64,
    /// The worker that did it (not the service's own pid).
    pub(crate) pid: u32,
}

impl Task for WalkDocument {
    const NAME: &'static str = "walk_document";
    type Input = usize;
    type Output = Walked;
    fn run(kb: usize) -> Walked {
        let doc = generate_document(kb * 1024);
        let parsed: serde_json::Value =
            serde_json::from_str(&doc).expect("the generator writes valid JSON");
        let mut counts = Counts::default();
        counts.visit(&parsed, 1);
        Walked {
            nodes: counts.nodes,
            pid: std::process::id(),
        }
    }
}

/// Every task the workers serve.
pub(crate) fn registry() -> Registry {
    Registry::new().with::<WalkDocument>()
}
