//! Calls of already encoded bytes written by their caller, without a
//! driver thread: the supervisor's side. [`ProcessPool::call_bytes`]
//! (what a transport such as the NATS worker uses) tries this first; a
//! call that cannot go this way at once takes the driver path, with all
//! its bounds.
//!
//! Why: with a driver per call, every tiny call woke a driver twice (to
//! send, and when its reply came), and waking threads was most of the
//! parent's CPU (`README.md`, "Where a tiny call's CPU goes"). Here the
//! caller writes (one non-blocking `sendmsg`) and the reader of the reply
//! completes the call: a reader wake-up serves every reply it finds.
//!
//! [`ProcessPool::call_bytes`]: super::ProcessPool::call_bytes

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use super::call::{CancelSwitch, ReplyCell};
use super::child::{CallError, Completion, Outgoing};
use super::codec::Encoded;
use super::protocol::Body;
use super::supervisor::Supervisor;
use crate::sync::lock;

/// A bytes call that its caller tries to write itself; kept (shared with
/// its completion) until its outcome is known, to be sent again if its
/// worker ends before starting it.
#[derive(Debug)]
pub(crate) struct BytesCall {
    pub(crate) task: String,
    /// The caller's idea of the task's version.
    pub(crate) fingerprint: Option<u64>,
    pub(crate) input: Encoded,
    pub(crate) timeout: Option<Duration>,
    /// The caller's tracing span, carried to the worker.
    pub(crate) span: Option<u64>,
}

impl BytesCall {
    fn outgoing(&self) -> Outgoing<'_> {
        Outgoing {
            task: &self.task,
            input: &self.input,
            timeout: self.timeout,
            span: self.span,
        }
    }
}

impl Supervisor {
    /// Writes `call` to some lane's worker from the caller's thread, never
    /// blocking: only to a live worker that serves the task as the caller
    /// knows it, has fewer than `pipeline_depth` calls in flight and a
    /// socket that takes the frame now. Its outcome goes to `reply`;
    /// `switch` is armed, so dropping the call cancels it. Hands `call`
    /// back (unshared) if no lane can take it now.
    pub(crate) fn call_from_caller(
        self: &Arc<Self>,
        call: Arc<BytesCall>,
        reply: &Arc<ReplyCell<Vec<u8>>>,
        switch: &Arc<CancelSwitch>,
    ) -> Result<(), Arc<BytesCall>> {
        let mut completion = self.completion(&call, reply, switch);
        for lane in self.lanes_to_try() {
            // A lane starting its worker has none yet: skipped.
            let Some(worker) = self.lane_worker_now(lane) else {
                continue;
            };
            match (worker.hello.fingerprint(&call.task), call.fingerprint) {
                // The driver path reports these.
                (None, _) => break,
                (Some(theirs), Some(ours)) if theirs != ours => break,
                _ => {}
            }
            let sent = worker.send_from_caller(call.outgoing(), self.depth, completion, |id| {
                switch.arm(&worker, id)
            });
            match sent {
                Ok(()) => return Ok(()),
                Err(back) => {
                    switch.disarm();
                    completion = back;
                }
            }
        }
        drop(completion);
        Err(call)
    }

    /// What happens to a call written by its caller once its outcome is
    /// known (on the thread of whoever read it): the reply goes to the
    /// caller; a call whose worker ended before starting it is sent again
    /// as a driver would send it ([`resend`]).
    fn completion(
        self: &Arc<Self>,
        call: &Arc<BytesCall>,
        reply: &Arc<ReplyCell<Vec<u8>>>,
        switch: &Arc<CancelSwitch>,
    ) -> Completion {
        let supervisor = self.clone();
        let call = call.clone();
        let (reply, switch) = (reply.clone(), switch.clone());
        Completion::new(move |outcome: Result<Body, CallError>| {
            switch.disarm();
            let result = match outcome {
                Ok(body) => Ok(body.into_vec()),
                Err(CallError::Failed(e)) => {
                    supervisor.count_failure(&e);
                    Err(e)
                }
                Err(CallError::Retry) => return resend(supervisor, call, reply, switch),
            };
            reply.send(result);
        })
    }

    /// The lanes in the order a caller tries them: of two (taken in turn,
    /// half the pool apart), the one with fewer calls in flight first,
    /// then the others. Calls sent to a worker wait for it, so a worker
    /// busy with a long call should not be given more while another has
    /// room; looking at two keeps the look cheap in a large pool.
    fn lanes_to_try(&self) -> impl Iterator<Item = usize> + use<> {
        let n = self.lane_count();
        let a = self.next_lane.fetch_add(1, Relaxed) % n;
        let b = (a + n.div_ceil(2)) % n;
        let load = |lane| {
            self.lane_worker_now(lane)
                .map_or(usize::MAX, |w| w.in_flight())
        };
        let first = if a != b && load(b) < load(a) { b } else { a };
        std::iter::once(first).chain(
            (0..n)
                .map(move |k| (first + 1 + k) % n)
                .filter(move |&l| l != first),
        )
    }

    /// Calls written to workers and not answered yet, over all lanes.
    pub(crate) fn in_flight(&self) -> usize {
        (0..self.lane_count())
            .filter_map(|lane| self.lane_worker_now(lane))
            .map(|w| w.in_flight())
            .sum()
    }
}

/// Sends `call` again, as a driver would, after its worker ended before
/// starting it; its outcome goes to `reply`. On a thread of its own (the
/// call may run long, and the other calls the dead worker never started
/// must not wait for it), or on this one if no thread can be started.
fn resend(
    supervisor: Arc<Supervisor>,
    call: Arc<BytesCall>,
    reply: Arc<ReplyCell<Vec<u8>>>,
    switch: Arc<CancelSwitch>,
) {
    let send = move || {
        let result = supervisor
            .call(
                &call.task,
                call.fingerprint,
                &call.input,
                call.timeout,
                call.span,
                &switch,
            )
            .map(Body::into_vec);
        reply.send(result);
    };
    // Kept here too, so that a failed spawn (which drops its closure)
    // does not lose the call.
    let job = Arc::new(std::sync::Mutex::new(Some(send)));
    let theirs = job.clone();
    let spawned = std::thread::Builder::new()
        .name("offload-proc-resend".into())
        .spawn(move || {
            let send = lock(&theirs).take();
            if let Some(send) = send {
                send();
            }
        });
    if spawned.is_err() {
        let send = lock(&job).take();
        if let Some(send) = send {
            send();
        }
    }
}
