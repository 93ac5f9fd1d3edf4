//! Async calls: a call accepted by `POST /async-function/NAME` is already committed to
//! the store's queue; this runner claims due calls, runs them with per-function
//! concurrency, retries failures (5xx, 429, time-outs, unreachable functions) with
//! exponential backoff and jitter, dead-letters calls that keep failing, and POSTs each
//! final result to the call's `X-Callback-Url` — or, for calls the channels queue (Slack,
//! GitHub, hooks), hands it to the channel's [`Replies`] along with the call's reply
//! descriptor. Calls that were running when a gateway died are run again (at least once;
//! the function sees the same `X-Call-Id`), and results whose delivery was cut short are
//! delivered again at the next start.
//!
//! A channel that must answer within a platform's deadline [`submit`](AsyncQueue::submit)s
//! its call and waits a while for it: if it finishes in time, the result comes back to the
//! waiting request (and is not delivered again); otherwise it is delivered later.

use std::any::Any;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use chrono::Utc;
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use tokio::sync::{oneshot, watch, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::task::TaskTracker;

use super::Trigger;
use crate::egress::{EgressError, EgressPolicy};
use crate::error::provider_status;
use crate::function::FunctionName;
use crate::provider::Invocation;
use crate::registry::Registry;
use crate::server::HEADER_CALL_ID;
use crate::store::{CallState, CallbackDue, Finish, QueuedCall, StoreError};

/// Forgets a submitted call's watch when dropped: armed while [`AsyncQueue::submit`] commits.
struct Unwatch<'a> {
    queue: &'a AsyncQueue,
    call_id: &'a str,
}

impl Drop for Unwatch<'_> {
    fn drop(&mut self) {
        self.queue.watched().remove(self.call_id);
    }
}

/// A running call's slots (one of the queue's, one of its function's): given back when
/// the function has answered, or when dropped.
struct Slots<'a>(
    Option<(OwnedSemaphorePermit, OwnedSemaphorePermit)>,
    &'a AsyncQueue,
);

impl Slots<'_> {
    fn release(&mut self) {
        if self.0.take().is_some() && self.1.starved.swap(false, Ordering::AcqRel) {
            // The runner left calls queued for want of a slot: one is free now.
            self.1.wake.notify_one();
        }
    }
}

impl Drop for Slots<'_> {
    fn drop(&mut self) {
        self.release();
    }
}

/// Headers of a callback, as the OpenFaaS queue worker sends them.
pub const HEADER_FUNCTION_STATUS: &str = "x-function-status";
pub const HEADER_FUNCTION_NAME: &str = "x-function-name";
pub const HEADER_DURATION: &str = "x-duration-seconds";
/// Request header naming where an async call's result goes.
pub const HEADER_CALLBACK_URL: &str = "x-callback-url";

/// Longest wait between retries.
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// How long a claimed call stays leased to the gateway running it without a heartbeat:
/// another gateway runs it again once its owner has not renewed the lease this long.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(60);
/// Most time between two heartbeats (and two looks for calls left by dead gateways).
const HEARTBEAT_MAX: Duration = Duration::from_secs(10);
/// How often the runner looks for due calls when nothing wakes it.
const POLL: Duration = Duration::from_millis(200);
/// Callback deliveries tried before giving up.
const CALLBACK_ATTEMPTS: u32 = 5;
/// Channel reply deliveries tried before giving up. Each retries on its own; a try cut
/// short by a stopped gateway counts, so a reply that crashes the gateway is not retried
/// forever.
const REPLY_ATTEMPTS: u32 = 3;
/// Largest result kept for a callback.
const MAX_RESULT: usize = 1024 * 1024;
/// Default bytes queued calls may hold over all functions (`hark up --queue-max-bytes`).
pub const DEFAULT_MAX_BYTES: u64 = 1024 * 1024 * 1024;
/// Default free space under which new calls are refused (`hark up --min-free-disk`).
pub const DEFAULT_MIN_FREE_DISK: u64 = 256 * 1024 * 1024;
/// How long a reading of the data directory's free space is used.
const FREE_DISK_CACHE: Duration = Duration::from_secs(1);

/// Settings of the async queue.
#[derive(Debug, Clone)]
pub struct QueueConfig {
    /// Async calls running at once, over all functions.
    pub workers: usize,
    /// Calls pending or running at most; enqueues beyond it are refused.
    pub max_depth: u64,
    /// How long running calls get to finish after a shutdown signal.
    pub drain: Duration,
    /// Which special addresses callback URLs may reach (none by default).
    pub egress: Arc<EgressPolicy>,
    /// Bytes (headers and bodies, [`QueuedCall::stored_bytes`]) that pending, running
    /// and dead-lettered calls may hold over all functions; enqueues beyond it are refused.
    pub max_bytes: u64,
    /// The same for one function's calls, so that one function cannot take all of it.
    pub max_function_bytes: u64,
    /// The directory whose file system must keep `min_free_disk` bytes free for new
    /// calls to be accepted (`None`: not checked).
    pub data_dir: Option<PathBuf>,
    /// Free bytes under which new calls are refused.
    pub min_free_disk: u64,
    /// How long a running call's lease lasts; renewed every quarter of it (at most every
    /// [`HEARTBEAT_MAX`]) while the gateway runs.
    pub lease: Duration,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            workers: 16,
            max_depth: 100_000,
            drain: Duration::from_secs(30),
            egress: Arc::new(EgressPolicy::strict()),
            max_bytes: DEFAULT_MAX_BYTES,
            max_function_bytes: DEFAULT_MAX_BYTES / 4,
            data_dir: None,
            min_free_disk: DEFAULT_MIN_FREE_DISK,
            lease: DEFAULT_LEASE,
        }
    }
}

/// The bytes queued calls hold, over all functions and by function.
#[derive(Debug, Default)]
struct HeldBytes {
    total: u64,
    by_function: HashMap<String, u64>,
}

/// The free space of the file system holding `dir`, in bytes available to the gateway.
#[allow(clippy::unnecessary_cast)] // the field types differ between platforms
pub fn free_disk(dir: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt as _;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: `path` is a NUL-terminated string and `stat` a writable statvfs, as
    // statvfs(3) asks; `stat` is read only when the call succeeded.
    let stat = unsafe {
        if libc::statvfs(path.as_ptr(), stat.as_mut_ptr()) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        stat.assume_init()
    };
    Ok((stat.f_bavail as u64).saturating_mul(stat.f_frsize as u64))
}

/// Why an async call was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum EnqueueError {
    #[error("the async queue is full ({0} calls waiting); try again later")]
    Full(u64),
    /// The function's queued calls would hold more than its share of the byte quota.
    #[error("the queued calls of {function} hold {held} bytes; with this one they would pass its limit of {limit} bytes; try again later")]
    FunctionBytes {
        function: String,
        held: u64,
        limit: u64,
    },
    /// All queued calls would hold more than the byte quota.
    #[error("the queued calls hold {held} bytes; with this one they would pass the gateway's limit of {limit} bytes; try again later")]
    Bytes { held: u64, limit: u64 },
    /// The data directory's free space is under the floor.
    #[error("the gateway's disk has {free} bytes free, under its floor of {floor} bytes; try again later")]
    LowDisk { free: u64, floor: u64 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A finished call's outcome, as a waiting channel and a reply get it.
#[derive(Debug, Clone)]
pub struct CallResult {
    pub call_id: String,
    pub function: String,
    /// The function's HTTP status, or the gateway's for a call that did not answer
    /// (504 time-out, 429 overloaded, 502 unreachable, 404 gone).
    pub status: u16,
    /// Why the call failed, when it did.
    pub error: Option<String>,
    pub body: Bytes,
    pub duration_ms: f64,
}

impl CallResult {
    /// Whether the function answered with a 2xx status.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// Delivers results to the places the channels write in [`QueuedCall::reply`]. The
/// channels implement it; the queue calls it once a call with a reply has finished, and
/// again after a restart when a delivery was cut short (so at least once).
#[async_trait]
pub trait Replies: Send + Sync {
    /// Delivers `result` as `reply` says, retrying on its own as the platform allows.
    async fn deliver(&self, reply: &str, result: &CallResult) -> Result<(), String>;
}

/// How a submitted call was taken.
#[derive(Debug)]
pub enum Submitted {
    /// Committed; it runs (or goes on running) in the background.
    Queued,
    /// Its delivery id or call id was queued before: not queued again.
    Duplicate,
    /// Committed, and it finished while the submitter waited.
    Finished(CallResult),
}

/// What a submitter wants besides queueing its call.
#[derive(Default)]
pub struct Submit {
    /// Kept until the call finishes or is cancelled in this process (a route's in-flight
    /// permit, say).
    pub hold: Option<Box<dyn Any + Send>>,
    /// How long to wait for the call to finish.
    pub wait: Option<Duration>,
    /// When the call finishes while the submitter waits, the submitter answers with the
    /// result itself: its reply is then recorded as `answered`, not delivered.
    pub answers: bool,
    /// A failure is final rather than retried while this process runs the call (a
    /// conversation says the error now instead of later). After a restart the call is
    /// retried as its function says.
    pub no_retries: bool,
}

/// A submitted call this process watches until it finishes.
struct Watched {
    _hold: Option<Box<dyn Any + Send>>,
    /// The waiting submitter, and whether it answers the result itself.
    waiter: Option<(oneshot::Sender<CallResult>, bool)>,
    no_retries: bool,
}

/// The async queue: enqueue calls, and run them in the background.
pub struct AsyncQueue {
    registry: Registry,
    config: QueueConfig,
    owner: String,
    wake: Notify,
    depth: AtomicU64,
    per_function: Mutex<HashMap<String, Arc<Semaphore>>>,
    client: reqwest::Client,
    watched: Mutex<HashMap<String, Watched>>,
    replies: OnceLock<Arc<dyn Replies>>,
    /// One permit per call running in this process (`QueueConfig::workers`).
    slots: Arc<Semaphore>,
    /// Calls their submitters started, until their outcome is recorded.
    started: TaskTracker,
    /// The runner left due calls queued for want of a free slot: the next call to end
    /// wakes it.
    starved: AtomicBool,
    /// What pending, running and dead calls hold (`QueueConfig::max_bytes`).
    held: Mutex<HeldBytes>,
    /// The last reading of the data directory's free space, and when it was taken.
    free_disk: Mutex<Option<(Instant, u64)>>,
}

impl AsyncQueue {
    /// A queue over the registry's store; `depth` starts from what the store holds.
    pub async fn new(
        registry: Registry,
        config: QueueConfig,
    ) -> Result<Arc<AsyncQueue>, StoreError> {
        let depth = registry.store.queue_depth().await?;
        let mut held = HeldBytes::default();
        for (function, bytes) in registry.store.queue_bytes().await? {
            held.total = held.total.saturating_add(bytes);
            held.by_function.insert(function, bytes);
        }
        let client = config.egress.client(Duration::from_secs(30));
        Ok(Arc::new(AsyncQueue {
            registry,
            owner: process_owner().to_owned(),
            wake: Notify::new(),
            depth: AtomicU64::new(depth),
            per_function: Mutex::new(HashMap::new()),
            client,
            watched: Mutex::new(HashMap::new()),
            replies: OnceLock::new(),
            slots: Arc::new(Semaphore::new(config.workers)),
            started: TaskTracker::new(),
            starved: AtomicBool::new(false),
            held: Mutex::new(held),
            free_disk: Mutex::new(None),
            config,
        }))
    }

    /// Refuses new calls while the data directory's free space is under the floor. The
    /// reading is kept for a second; a file system that cannot be read is not a refusal.
    fn check_free_disk(&self) -> Result<(), EnqueueError> {
        let Some(dir) = &self.config.data_dir else {
            return Ok(());
        };
        let floor = self.config.min_free_disk;
        if floor == 0 {
            return Ok(());
        }
        let mut last = self.free_disk.lock().unwrap_or_else(|e| e.into_inner());
        let free = match *last {
            Some((at, free)) if at.elapsed() < FREE_DISK_CACHE => free,
            _ => match free_disk(dir) {
                Ok(free) => {
                    *last = Some((Instant::now(), free));
                    free
                }
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "cannot read the data directory's free space");
                    return Ok(());
                }
            },
        };
        if free < floor {
            tracing::warn!(
                free,
                floor,
                "async call refused: the data directory's free space is under --min-free-disk"
            );
            return Err(EnqueueError::LowDisk { free, floor });
        }
        Ok(())
    }

    fn held(&self) -> MutexGuard<'_, HeldBytes> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts `bytes` of `function` in, unless that passes a byte quota.
    fn reserve_bytes(&self, function: &str, bytes: u64) -> Result<(), EnqueueError> {
        let mut held = self.held();
        let of_function = held.by_function.get(function).copied().unwrap_or(0);
        if of_function.saturating_add(bytes) > self.config.max_function_bytes {
            let limit = self.config.max_function_bytes;
            tracing::warn!(
                function,
                held = of_function,
                bytes,
                limit,
                "async call refused: the function's queued calls are at their byte quota"
            );
            return Err(EnqueueError::FunctionBytes {
                function: function.to_owned(),
                held: of_function,
                limit,
            });
        }
        if held.total.saturating_add(bytes) > self.config.max_bytes {
            let (total, limit) = (held.total, self.config.max_bytes);
            tracing::warn!(
                function,
                held = total,
                bytes,
                limit,
                "async call refused: the queued calls are at the gateway's byte quota"
            );
            return Err(EnqueueError::Bytes { held: total, limit });
        }
        held.total += bytes;
        *held.by_function.entry(function.to_owned()).or_default() += bytes;
        Ok(())
    }

    /// Counts `bytes` of `function` out; never below zero.
    fn release_bytes(&self, function: &str, bytes: u64) {
        let mut held = self.held();
        held.total = held.total.saturating_sub(bytes);
        if let Some(of_function) = held.by_function.get_mut(function) {
            *of_function = of_function.saturating_sub(bytes);
            if *of_function == 0 {
                held.by_function.remove(function);
            }
        }
    }

    /// The bytes queued calls hold: over all functions, and of `function`.
    pub fn held_bytes(&self, function: &str) -> (u64, u64) {
        let held = self.held();
        (
            held.total,
            held.by_function.get(function).copied().unwrap_or(0),
        )
    }

    /// Which special addresses callback URLs may reach.
    pub fn egress(&self) -> &EgressPolicy {
        &self.config.egress
    }

    /// Sets who delivers the replies of channel calls (once, before [`AsyncQueue::run`]).
    pub fn set_replies(&self, replies: Arc<dyn Replies>) {
        if self.replies.set(replies).is_err() {
            tracing::warn!("the queue's replies were set twice; keeping the first");
        }
    }

    /// Commits a call to the queue; once this returns `Ok(true)` the call will run.
    /// `Ok(false)`: its call id or delivery id was queued before; it is not queued again.
    pub async fn enqueue(&self, call: QueuedCall) -> Result<bool, EnqueueError> {
        // Counted in before the commit and out again only when it is known not to have
        // happened: a caller dropped during the commit (a client hanging up) may leave a
        // committed call, which the runner counts out when it ends. Counting it in after
        // the commit made the counter wrap below zero and refuse every call as "full".
        // Bytes the same way: a committed call's are counted out when it ends done or
        // cancelled; a dead-lettered call keeps them (it stays on disk).
        self.check_free_disk()?;
        let (function, bytes) = (call.function.clone(), call.stored_bytes());
        self.reserve_bytes(&function, bytes)?;
        let depth = self.depth.fetch_add(1, Ordering::Relaxed);
        if depth >= self.config.max_depth {
            self.count_out();
            self.release_bytes(&function, bytes);
            return Err(EnqueueError::Full(depth));
        }
        // A call committed already claimed (started at once by its submitter) is not the
        // runner's to find.
        let for_runner = call.lease.is_none();
        match self.registry.store.enqueue(call).await {
            Ok(true) => {
                if for_runner {
                    self.wake.notify_one();
                }
                Ok(true)
            }
            Ok(false) => {
                self.count_out();
                self.release_bytes(&function, bytes);
                Ok(false)
            }
            Err(e) => {
                self.count_out();
                self.release_bytes(&function, bytes);
                Err(e.into())
            }
        }
    }

    /// One call fewer open; never below zero.
    fn count_out(&self) {
        let _ = self
            .depth
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |d| {
                Some(d.saturating_sub(1))
            });
    }

    fn watched(&self) -> MutexGuard<'_, HashMap<String, Watched>> {
        self.watched.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Commits a call like [`AsyncQueue::enqueue`], keeps `submit.hold` until it ends, and
    /// waits at most `submit.wait` for it to finish.
    ///
    /// A call whose submitter waits is committed already claimed by this process, as the
    /// runner would claim it, and runs here without waiting for the runner to find it:
    /// at once when a slot is free (globally and for its function), else when one is, in
    /// turn with the other calls waiting. Anything else the runner claims as usual;
    /// either way it is on disk before it runs.
    pub async fn submit(
        self: &Arc<Self>,
        mut call: QueuedCall,
        submit: Submit,
    ) -> Result<Submitted, EnqueueError> {
        let call_id = call.call_id.clone();
        let (tx, mut rx) = oneshot::channel();
        {
            let mut watched = self.watched();
            if watched.contains_key(&call_id) {
                return Ok(Submitted::Duplicate);
            }
            // Watched before it is committed: a quick call may finish right away.
            let waiter = submit.wait.is_some().then_some((tx, submit.answers));
            watched.insert(
                call_id.clone(),
                Watched {
                    _hold: submit.hold,
                    waiter,
                    no_retries: submit.no_retries,
                },
            );
        }
        // Dropped while committing (the client hung up), the watch must not outlive this
        // call: it holds the route's in-flight permit. If the commit happened the call still
        // runs; its result then has no one to go to.
        let unwatch = Unwatch {
            queue: self,
            call_id: &call_id,
        };
        // A call whose submitter waits is this gateway's to run: committed leased to it,
        // as the runner would claim it, it starts at once when a slot is free and else
        // waits here for one, without a claim's round trips to the store. The copy to
        // run goes without the lease, which only says how to insert the call.
        let run_here = submit.wait.is_some().then(|| {
            let lease =
                Utc::now() + chrono::Duration::from_std(self.config.lease).unwrap_or_default();
            call.lease = Some((self.owner.clone(), lease));
            let mut copy = call.clone();
            copy.lease = None;
            (copy, self.now_slots(&call.function))
        });
        let queued = self.enqueue(call).await?;
        if !queued {
            return Ok(Submitted::Duplicate);
        }
        std::mem::forget(unwatch);
        // A task of its own either way: the call must run even if its submitter is
        // dropped while it waits (it stays leased to this gateway, whose heartbeat
        // renews the lease).
        match run_here {
            Some((call, Some((slot, permit)))) => {
                self.started
                    .spawn(self.clone().run_call(call, slot, permit));
            }
            Some((call, None)) => {
                self.started.spawn(self.clone().run_in_turn(call));
            }
            None => {}
        }
        let Some(budget) = submit.wait else {
            return Ok(Submitted::Queued);
        };
        match tokio::time::timeout(budget, &mut rx).await {
            Ok(Ok(result)) => return Ok(Submitted::Finished(result)),
            Ok(Err(_)) => return Ok(Submitted::Queued),
            Err(_) => {}
        }
        // Time is up. If the runner has not taken the waiter yet, it must not any more;
        // if it has, the result is on its way and is ours to answer with.
        let taken = match self.watched().get_mut(&call_id) {
            Some(watched) => {
                watched.waiter = None;
                false
            }
            None => true,
        };
        if taken {
            if let Ok(result) = rx.await {
                return Ok(Submitted::Finished(result));
            }
        }
        Ok(Submitted::Queued)
    }

    /// A free slot, globally and for `function`, if both are free now.
    fn now_slots(&self, function: &str) -> Option<(OwnedSemaphorePermit, OwnedSemaphorePermit)> {
        let slot = self.slots.clone().try_acquire_owned().ok()?;
        let permit = self.slots_of(function).try_acquire_owned().ok()?;
        Some((slot, permit))
    }

    /// A slot globally and for `function`, waiting in turn for each: the function's first,
    /// then the queue's. Every wait takes them in this order, so no call holds one while
    /// waiting for the other held by a call waiting the other way round; and a call
    /// waiting for its function holds no slot other functions' calls could use.
    async fn slots_in_turn(&self, function: &str) -> (OwnedSemaphorePermit, OwnedSemaphorePermit) {
        let permit = self
            .slots_of(function)
            .acquire_owned()
            .await
            .expect("function slots are never closed");
        let slot = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .expect("queue slots are never closed");
        (slot, permit)
    }

    /// Runs `call` once it has its slots, waiting for them in turn.
    async fn run_in_turn(self: Arc<Self>, call: QueuedCall) {
        let (slot, permit) = self.slots_in_turn(&call.function).await;
        self.run_call(call, slot, permit).await;
    }

    /// Cancels a pending call; the state it was in, if it exists.
    pub async fn cancel(&self, call_id: &str) -> Result<Option<CallState>, StoreError> {
        // Read before: only a pending call is cancelled, and its size does not change.
        let bytes = self.registry.store.call_bytes(call_id).await?;
        let state = self.registry.store.cancel_call(call_id).await?;
        if state == Some(CallState::Pending) {
            self.count_out();
            if let Some((function, bytes)) = bytes {
                self.release_bytes(&function, bytes);
            }
            self.watched().remove(call_id);
        }
        Ok(state)
    }

    /// A call finished for good: hands `result` to a waiting submitter, if any, and lets
    /// go of what the submitter holds. Whether the submitter answers with the result.
    fn finished(&self, result: &CallResult) -> bool {
        let watched = self.watched().remove(&result.call_id);
        match watched.and_then(|w| w.waiter) {
            Some((waiter, answers)) => waiter.send(result.clone()).is_ok() && answers,
            None => false,
        }
    }

    /// Wakes the runner (after a dead call was put back, for instance).
    pub fn wake(&self) {
        self.depth.fetch_add(1, Ordering::Relaxed);
        self.wake.notify_one();
    }

    /// Runs due calls until `stopping` turns true, then lets running calls finish for
    /// the drain period; calls still running after it are run again at the next start.
    pub async fn run(self: Arc<Self>, mut stopping: watch::Receiver<bool>) {
        match self
            .registry
            .store
            .reclaim_calls(owner_is_alive, Utc::now())
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::warn!(
                calls = n,
                "re-queued calls left running by a stopped gateway"
            ),
            Err(e) => tracing::error!(error = %e, "reclaiming calls failed"),
        }
        let mut tasks = JoinSet::new();
        // Read before any call of this run finishes, so each is delivered by one task.
        match self.registry.store.callbacks_due().await {
            Ok(due) if !due.is_empty() => {
                tracing::info!(
                    results = due.len(),
                    "delivering results left undelivered by a stopped gateway"
                );
                let queue = self.clone();
                tasks.spawn(async move {
                    for callback in due {
                        if let Err(e) = queue.deliver(callback).await {
                            tracing::error!(error = %e, "recording a callback failed");
                        }
                    }
                });
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "reading pending callbacks failed"),
        }
        let slots = self.slots.clone();
        let heartbeat = (self.config.lease / 4).min(HEARTBEAT_MAX);
        // A task of its own, so that nothing the runner waits for delays it, and dropped
        // (aborted) with this set when the drain ends.
        let mut beating = JoinSet::new();
        beating.spawn(self.clone().renew_leases(heartbeat));
        let mut last_reclaim = Instant::now();
        while !*stopping.borrow() {
            while tasks.try_join_next().is_some() {}
            // Set before the slots are counted: a call ending after the count wakes us.
            self.starved.store(true, Ordering::Release);
            // The free slots are taken before the claim, not after: a submitter starting
            // its call at once must not take one while the claim is under way (a round
            // trip to PostgreSQL), ahead of the calls queued before it.
            let held: Vec<OwnedSemaphorePermit> =
                std::iter::from_fn(|| slots.clone().try_acquire_owned().ok()).collect();
            let free = held.len();
            let claimed = if free == 0 {
                Vec::new()
            } else {
                let now = Utc::now();
                let lease = now + chrono::Duration::from_std(self.config.lease).unwrap_or_default();
                let queue = self.clone();
                let room = move |function: &str| queue.room(function);
                match self
                    .registry
                    .store
                    .claim_calls(&self.owner, free, now, lease, room)
                    .await
                {
                    Ok((calls, starved)) => {
                        self.starved.store(starved, Ordering::Release);
                        calls
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "claiming queued calls failed");
                        Vec::new()
                    }
                }
            };
            let idle = claimed.is_empty();
            let mut held = held.into_iter();
            for call in claimed {
                let Some(slot) = held.next() else {
                    break;
                };
                // The claim saw room for it, but a submitter's call waiting for the
                // function may have taken the slot since: then this one waits too, in
                // turn, not holding the queue's slot nor the runner.
                match self.slots_of(&call.function).try_acquire_owned() {
                    Ok(permit) => {
                        tasks.spawn(self.clone().run_call(call, slot, permit));
                    }
                    Err(_) => {
                        drop(slot);
                        tasks.spawn(self.clone().run_in_turn(call));
                    }
                }
            }
            // The slots the claim did not fill go back now, not when the loop comes round:
            // held while the runner sleeps, they kept calls waiting here for up to a poll.
            drop(held);
            if last_reclaim.elapsed() > heartbeat {
                last_reclaim = Instant::now();
                match self
                    .registry
                    .store
                    .reclaim_calls(owner_is_alive, Utc::now())
                    .await
                {
                    Ok(0) => {}
                    Ok(n) => tracing::warn!(
                        calls = n,
                        "re-queued calls left running by a gateway that stopped or stopped renewing their lease"
                    ),
                    Err(e) => tracing::error!(error = %e, "reclaiming calls failed"),
                }
            }
            if idle {
                tokio::select! {
                    () = self.wake.notified() => {}
                    () = tokio::time::sleep(POLL) => {}
                    _ = stopping.changed() => {}
                }
            }
        }
        let running = tasks.len() + self.started.len();
        if running > 0 {
            tracing::info!(calls = running, "waiting for running async calls");
        }
        self.started.close();
        let drained = tokio::time::timeout(self.config.drain, async {
            while tasks.join_next().await.is_some() {}
            self.started.wait().await;
        })
        .await;
        if drained.is_err() {
            tracing::warn!(calls = tasks.len(), "async calls still running after the drain period; they run again at the next start");
            tasks.abort_all();
        }
    }

    /// The heartbeat: renews the leases of the calls this gateway runs every `beat`, until
    /// the task is aborted (once the runner's drain is over).
    async fn renew_leases(self: Arc<Self>, beat: Duration) {
        let mut every = tokio::time::interval(beat);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            let until =
                Utc::now() + chrono::Duration::from_std(self.config.lease).unwrap_or_default();
            if let Err(e) = self.registry.store.renew_leases(&self.owner, until).await {
                tracing::error!(error = %e, "renewing the leases of running calls failed");
            }
        }
    }

    /// The semaphore bounding how many async calls of `function` run at once
    /// (`hark.async.concurrency`, read when the function is first seen).
    fn slots_of(&self, function: &str) -> Arc<Semaphore> {
        let mut map = self.per_function.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(function.to_owned())
            .or_insert_with(|| {
                let limit = function
                    .parse::<FunctionName>()
                    .ok()
                    .and_then(|name| self.registry.deployed(&name))
                    .and_then(|spec| spec.async_concurrency().ok())
                    .unwrap_or(1);
                Arc::new(Semaphore::new(limit as usize))
            })
            .clone()
    }

    /// How many more calls of `function` may start now.
    fn room(&self, function: &str) -> usize {
        self.slots_of(function).available_permits()
    }

    async fn run_call(
        self: Arc<Self>,
        call: QueuedCall,
        slot: OwnedSemaphorePermit,
        permit: OwnedSemaphorePermit,
    ) {
        let due = match self
            .attempt(&call, Slots(Some((slot, permit)), &self))
            .await
        {
            Ok(due) => due,
            Err(e) => {
                tracing::error!(call_id = call.call_id, error = %e, "recording an async call's outcome failed; the call runs again once the store can be written");
                self.put_back(&call).await;
                return;
            }
        };
        if let Some(due) = due {
            if let Err(e) = self.deliver(due).await {
                tracing::error!(call_id = call.call_id, error = %e, "recording a callback failed");
            }
        }
    }

    /// Puts a call whose outcome could not be recorded (the disk is full, say) back in the
    /// queue, trying again with backoff while the store cannot be written; it then runs
    /// again, as a call of a gateway that died would (at least once). Without this it
    /// would stay `running` until its lease ran out.
    async fn put_back(&self, call: &QueuedCall) {
        let mut delay = Duration::from_millis(250);
        loop {
            let put = self
                .registry
                .store
                .retry_call_later(
                    &call.call_id,
                    call.attempts,
                    503,
                    Some("the outcome could not be recorded; run again".into()),
                    Utc::now(),
                )
                .await;
            match put {
                Ok(()) => {
                    self.wake.notify_one();
                    return;
                }
                Err(e) => {
                    tracing::warn!(call_id = call.call_id, error = %e, retry_in_ms = delay.as_millis() as u64, "cannot put the call back in the queue yet");
                }
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(30));
        }
    }

    /// Runs a claimed call once and records the outcome; the result to deliver, if the
    /// call finished for good with a callback or reply nobody answered yet. Its `slots`
    /// are given back as soon as the function has answered: recording the outcome and
    /// delivering the result do not hold up other calls.
    async fn attempt(
        &self,
        call: &QueuedCall,
        mut slots: Slots<'_>,
    ) -> Result<Option<CallbackDue>, StoreError> {
        let store = &self.registry.store;
        let spec = call
            .function
            .parse::<FunctionName>()
            .ok()
            .and_then(|name| self.registry.deployed(&name).map(|spec| (name, spec)));
        let Some((name, spec)) = spec else {
            if store.is_shared() {
                if let Ok(name) = call.function.parse::<FunctionName>() {
                    if store.function(&name).await?.is_some() {
                        // Deployed through another gateway, not started here yet (each
                        // follows the store every 500 ms): later, without an attempt.
                        let at = Utc::now() + chrono::Duration::seconds(1);
                        let waiting = Some(format!(
                            "function {name} is not started on this gateway yet"
                        ));
                        store
                            .retry_call_later(&call.call_id, call.attempts, 503, waiting, at)
                            .await?;
                        return Ok(None);
                    }
                }
            }
            let error = format!("function {} is not deployed", call.function);
            tracing::warn!(
                call_id = call.call_id,
                function = call.function,
                "async call dead-lettered: function gone"
            );
            let result = CallResult {
                call_id: call.call_id.clone(),
                function: call.function.clone(),
                status: 404,
                error: Some(error),
                body: Bytes::new(),
                duration_ms: 0.0,
            };
            return self
                .finish(call, CallState::Dead, call.attempts + 1, result)
                .await;
        };
        let no_retries = self
            .watched()
            .get(&call.call_id)
            .is_some_and(|w| w.no_retries);
        let retries = if no_retries {
            0
        } else {
            spec.retries().unwrap_or(3)
        };
        let backoff = spec.retry_backoff().unwrap_or(Duration::from_secs(1));

        let started = Instant::now();
        // Calls queued before triggers were recorded, or by a newer gateway, count as async.
        let trigger = call
            .trigger
            .as_deref()
            .and_then(|t| t.parse().ok())
            .unwrap_or(Trigger::Async);
        let result = self
            .registry
            .dispatcher
            .invoke(&name, trigger, invocation(call))
            .await;
        slots.release();
        let duration_ms = started.elapsed().as_secs_f64() * 1000.0;
        let (status, error, body) = match result {
            Ok(output) => (output.status.as_u16(), output.error, output.body),
            Err(e) => (
                provider_status(&e).as_u16(),
                Some(e.to_string()),
                Bytes::from(e.to_string()),
            ),
        };
        let attempts = call.attempts + 1;
        let retryable = status >= 500 || status == 429;
        if retryable && attempts <= retries {
            let delay = backoff_delay(backoff, attempts);
            tracing::info!(call_id = call.call_id, function = %name, status, attempts, delay_ms = delay.as_millis() as u64, "async call failed; retrying");
            let at = Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default();
            store
                .retry_call_later(&call.call_id, attempts, status, error, at)
                .await?;
            return Ok(None);
        }
        let state = if retryable {
            CallState::Dead
        } else {
            CallState::Done
        };
        if state == CallState::Dead {
            tracing::warn!(call_id = call.call_id, function = %name, status, attempts, "async call dead-lettered");
        }
        let result = CallResult {
            call_id: call.call_id.clone(),
            function: call.function.clone(),
            status,
            error,
            body,
            duration_ms,
        };
        self.finish(call, state, attempts, result).await
    }

    /// Records a call that finished for good (done or dead), after handing its result
    /// to a waiting submitter; the result to deliver, if anything is left to deliver.
    async fn finish(
        &self,
        call: &QueuedCall,
        state: CallState,
        attempts: u32,
        result: CallResult,
    ) -> Result<Option<CallbackDue>, StoreError> {
        let answered = self.finished(&result);
        let wanted = !answered && (call.callback_url.is_some() || call.reply.is_some());
        let body = result.body.slice(..result.body.len().min(MAX_RESULT));
        self.registry
            .store
            .finish_call(Finish {
                call_id: call.call_id.clone(),
                state,
                attempts,
                status: result.status,
                error: result.error.clone(),
                duration_ms: result.duration_ms,
                result: wanted.then(|| body.to_vec()),
                answered,
                at: Utc::now(),
            })
            .await?;
        // Counted out only once recorded: an outcome that could not be written is put
        // back in the queue (see `put_back`). A dead letter keeps its bytes on disk.
        self.count_out();
        if state == CallState::Done {
            self.release_bytes(&call.function, call.stored_bytes());
        }
        Ok(wanted.then(|| CallbackDue {
            call_id: result.call_id,
            function: result.function,
            url: call.callback_url.clone(),
            reply: call.reply.clone(),
            status: result.status,
            error: result.error,
            duration_ms: result.duration_ms,
            body: body.to_vec(),
            attempts: 0,
        }))
    }

    /// Delivers a finished call's result: to the channel's reply, or to its callback URL.
    async fn deliver(&self, due: CallbackDue) -> Result<(), StoreError> {
        match due.reply.clone() {
            Some(reply) => self.deliver_reply(&reply, due).await,
            None => self.post_callback(due).await,
        }
    }

    /// Hands a result to the channel that queued the call.
    async fn deliver_reply(&self, reply: &str, due: CallbackDue) -> Result<(), StoreError> {
        let store = &self.registry.store;
        let Some(replies) = self.replies.get() else {
            tracing::error!(
                call_id = due.call_id,
                "no channel delivers replies in this gateway; reply dropped"
            );
            return store
                .record_callback(&due.call_id, "failed", due.attempts)
                .await;
        };
        if due.attempts >= REPLY_ATTEMPTS {
            tracing::error!(
                call_id = due.call_id,
                attempts = due.attempts,
                "reply given up"
            );
            return store
                .record_callback(&due.call_id, "failed", due.attempts)
                .await;
        }
        let attempts = due.attempts + 1;
        // Counted before it is made: a gateway stopped during it makes it again at the
        // next start, up to REPLY_ATTEMPTS times.
        store
            .record_callback(&due.call_id, "pending", attempts)
            .await?;
        let result = CallResult {
            call_id: due.call_id.clone(),
            function: due.function,
            status: due.status,
            error: due.error,
            body: Bytes::from(due.body),
            duration_ms: due.duration_ms,
        };
        match replies.deliver(reply, &result).await {
            Ok(()) => {
                tracing::info!(call_id = due.call_id, attempts, "reply delivered");
                store
                    .record_callback(&due.call_id, "delivered", attempts)
                    .await
            }
            Err(e) => {
                tracing::warn!(call_id = due.call_id, attempts, error = %e, "reply failed");
                store
                    .record_callback(&due.call_id, "failed", attempts)
                    .await
            }
        }
    }

    /// POSTs a result to its callback URL, retrying with backoff.
    async fn post_callback(&self, callback: CallbackDue) -> Result<(), StoreError> {
        let Some(url) = callback.url.clone() else {
            return Ok(());
        };
        let mut attempts = callback.attempts;
        while attempts < CALLBACK_ATTEMPTS {
            attempts += 1;
            // Checked again at every attempt: the URL was checked when the call was queued,
            // but the gateway's allow-list or the host's DNS answer may have changed since.
            // The client's resolver checks the address it connects to once more.
            match self.config.egress.check_url(&url).await {
                Ok(_) => {}
                Err(e @ EgressError::Unresolved { .. }) => {
                    tracing::warn!(call_id = callback.call_id, error = %e, attempts, "callback failed");
                    self.registry
                        .store
                        .record_callback(&callback.call_id, "pending", attempts)
                        .await?;
                    if attempts < CALLBACK_ATTEMPTS {
                        tokio::time::sleep(backoff_delay(Duration::from_millis(500), attempts))
                            .await;
                    }
                    continue;
                }
                Err(e) => {
                    tracing::error!(call_id = callback.call_id, error = %e, "callback refused: its URL is not allowed");
                    return self
                        .registry
                        .store
                        .record_callback(&callback.call_id, "failed", attempts)
                        .await;
                }
            }
            let response = self
                .client
                .post(&url)
                .header(HEADER_CALL_ID, &callback.call_id)
                .header(HEADER_FUNCTION_STATUS, callback.status.to_string())
                .header(HEADER_FUNCTION_NAME, &callback.function)
                .header(
                    HEADER_DURATION,
                    format!("{:.6}", callback.duration_ms / 1000.0),
                )
                .body(callback.body.clone())
                .send()
                .await;
            match response {
                Ok(r) if r.status().is_success() => {
                    tracing::info!(call_id = callback.call_id, attempts, "callback delivered");
                    return self
                        .registry
                        .store
                        .record_callback(&callback.call_id, "delivered", attempts)
                        .await;
                }
                Ok(r) => tracing::warn!(
                    call_id = callback.call_id,
                    status = r.status().as_u16(),
                    attempts,
                    "callback refused"
                ),
                Err(e) => {
                    tracing::warn!(call_id = callback.call_id, error = %e, attempts, "callback failed")
                }
            }
            self.registry
                .store
                .record_callback(&callback.call_id, "pending", attempts)
                .await?;
            if attempts < CALLBACK_ATTEMPTS {
                tokio::time::sleep(backoff_delay(Duration::from_millis(500), attempts)).await;
            }
        }
        tracing::error!(call_id = callback.call_id, "callback given up");
        self.registry
            .store
            .record_callback(&callback.call_id, "failed", attempts)
            .await
    }
}

/// The request of a queued call, as the function receives it.
fn invocation(call: &QueuedCall) -> Invocation {
    let mut headers = HeaderMap::new();
    for (name, value) in &call.headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::try_from(name.as_str()),
            HeaderValue::from_str(value),
        ) {
            headers.append(name, value);
        }
    }
    if let Ok(id) = HeaderValue::from_str(&call.call_id) {
        headers.insert(HEADER_CALL_ID, id);
    }
    Invocation {
        call_id: call.call_id.clone(),
        method: Method::from_bytes(call.method.as_bytes()).unwrap_or(Method::POST),
        path: call.path.clone(),
        query: call.query.clone(),
        headers,
        body: Bytes::from(call.body.clone()),
    }
}

/// `base × 2^(attempt-1)`, capped, with ±20 % jitter so retries of many calls spread out.
pub fn backoff_delay(base: Duration, attempt: u32) -> Duration {
    let exponential = base.saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
    let capped = exponential.min(MAX_BACKOFF);
    let jitter: f64 = 0.8 + rand::random::<f64>() * 0.4;
    capped.mul_f64(jitter)
}

/// The name this gateway process claims calls under: `pid:N@HOST#RUN`. HOST names the
/// machine and process-id space (see [`host_id`]), so that gateways sharing one database
/// never take each other's process ids for their own; RUN is drawn at each start, so that
/// a restarted container, whose gateway gets the same process id again, does not take
/// its previous run's calls for its own.
pub fn process_owner() -> &'static str {
    static OWNER: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    OWNER.get_or_init(|| {
        let run = uuid::Uuid::new_v4().simple().to_string();
        format!("pid:{}@{}#{}", std::process::id(), host_id(), &run[..12])
    })
}

/// The host name, the kernel's boot id and the process-id namespace: two machines differ
/// by the boot id, two containers of one machine by their namespace (and host name).
fn host_id() -> &'static str {
    static HOST: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HOST.get_or_init(|| {
        let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
        let name = read("/proc/sys/kernel/hostname");
        let boot = read("/proc/sys/kernel/random/boot_id");
        // "pid:[4026531836]"
        let pids = std::fs::read_link("/proc/self/ns/pid")
            .map(|l| l.to_string_lossy().into_owned())
            .unwrap_or_default();
        let pids = pids.trim_start_matches("pid:").trim_matches(['[', ']']);
        format!(
            "{}/{}/{pids}",
            name.trim(),
            boot.trim().get(..8).unwrap_or("unknown")
        )
    })
}

/// Whether the gateway process named by a queue owner (`pid:N@HOST#RUN`, or `pid:N` as
/// earlier versions wrote it on this machine) still runs. A process of another host
/// cannot be checked from here: its calls are taken back when their lease runs out.
fn owner_is_alive(owner: &str) -> bool {
    if owner == process_owner() {
        // Our own calls are only "running" in the store while we run them.
        return true;
    }
    let Some(rest) = owner.strip_prefix("pid:") else {
        return false;
    };
    let pid = match rest.split_once('@') {
        Some((pid, host)) => {
            let host = host.split_once('#').map_or(host, |(host, _)| host);
            if host != host_id() {
                return true;
            }
            pid
        }
        None => rest,
    };
    let Ok(pid) = pid.parse::<libc::pid_t>() else {
        return false;
    };
    if pid == std::process::id() as libc::pid_t {
        // Our process id, but not our run: a previous run of a restarted container.
        return false;
    }
    // SAFETY: kill(2) with signal 0 only checks that the process exists.
    let alive = unsafe { libc::kill(pid, 0) } == 0;
    alive || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        let base = Duration::from_millis(100);
        for (attempt, nominal) in [(1, 100.0), (2, 200.0), (3, 400.0), (5, 1600.0)] {
            let d = backoff_delay(base, attempt).as_secs_f64() * 1000.0;
            assert!(
                d >= nominal * 0.8 - 0.001 && d <= nominal * 1.2 + 0.001,
                "attempt {attempt}: {d}"
            );
        }
        assert!(backoff_delay(Duration::from_secs(10), 30) <= MAX_BACKOFF.mul_f64(1.2));
        let spread: std::collections::HashSet<u128> = (0..20)
            .map(|_| backoff_delay(base, 3).as_micros())
            .collect();
        assert!(spread.len() > 1, "no jitter");
    }

    #[test]
    fn owners_are_alive_only_while_their_process_runs() {
        assert!(owner_is_alive(process_owner()));
        let dead = format!("pid:999999999@{}#0123456789ab", host_id());
        assert!(!owner_is_alive(&dead));
        assert!(!owner_is_alive("pid:999999999"));
        assert!(!owner_is_alive("garbage"));
        assert!(!owner_is_alive(&format!(
            "pid:x@{}#0123456789ab",
            host_id()
        )));
        // Another live process of this machine.
        let parent = std::os::unix::process::parent_id();
        assert!(owner_is_alive(&format!(
            "pid:{parent}@{}#0123456789ab",
            host_id()
        )));
    }

    #[test]
    fn a_previous_run_with_our_process_id_is_not_us() {
        // A restarted container's gateway gets the same process id (1) on the same host:
        // the calls its previous run left running are taken back, not kept as ours.
        let pid = std::process::id();
        let previous = format!("pid:{pid}@{}#0123456789ab", host_id());
        assert_ne!(previous, process_owner());
        assert!(!owner_is_alive(&previous));
        // As earlier versions wrote it (no host, no run).
        assert!(!owner_is_alive(&format!("pid:{pid}")));
    }

    #[test]
    fn an_owner_on_another_host_is_left_to_its_lease() {
        // The same process id as ours, on another machine: not ours, and not known dead.
        let pid = std::process::id();
        assert!(owner_is_alive(&format!(
            "pid:{pid}@other-host/12345678/1#0123456789ab"
        )));
        assert!(owner_is_alive(
            "pid:999999999@other-host/12345678/1#0123456789ab"
        ));
    }
}
