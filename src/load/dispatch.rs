//! Delivery scheduling: per-key ordering and partitioned batching in front of [`Sink::write`].
//!
//! - **Order.** Each op names [`OrderKey`]s. A write starts only after every earlier write that
//!   shares a key with it has finished, so writes for one key reach the vendor in input order;
//!   writes for different keys run concurrently (the HTTP engine's adaptive concurrency decides
//!   how many are on the wire).
//! - **Batches.** Ops with a [`BatchKey`] gather in an open batch per partition until it is full,
//!   its linger time is up, or the input ends. A later op that shares a key with an open batch
//!   but does not join it closes that batch first, so a batch never waits on an op that waits on
//!   the batch.
//! - **Window.** At most `window` writes are inside [`Sink::write`] at once (the HTTP client's
//!   `max_concurrency`, so the vendor's wire stays as full as the client allows). The rest wait
//!   here rather than in the HTTP client's queue, so that a stop can still hold them back. A
//!   write whose retry sleeps in backoff gives its place to the next one meanwhile, and takes a
//!   place back first when it wakes (`http::concurrency::WriteWindow`: at most twice `window`
//!   inside the sink then).
//! - **Queue.** Writes handed over and not finished (started or waiting for a place in the
//!   window) are at most [`WRITES_PER_SLOT`] per place ([`Dispatcher::has_room`]): enough to keep
//!   the window full, and each waiting write holds its ops, their ledger expectations and a task
//!   in memory. Before this bound, 4096 single-op writes waited behind a window of 16, about 60 MB
//!   at the start of a real Userflow run.
//! - **No task per write.** A write is polled once where it is handed over and gets a task of
//!   its own only if it cannot finish then (it waits for a predecessor, a place or the wire): a
//!   dry run's writes never need one.
//! - **Stop.** After [`Dispatcher::stop`], writes that have not started do not start (their ops
//!   stay unsettled, so no STATE covers them); writes in flight finish.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use futures::FutureExt;
use futures::future::Shared;
use tokio::sync::{mpsc, oneshot};

use crate::http::concurrency::WriteWindow;

use crate::sink::{Acks, BatchKey, Op, OrderKey, Plan, Sink, SinkError};

type Done = Shared<oneshot::Receiver<()>>;

/// Writes (single ops or batches) handed over and not finished, at most, per place in the
/// window (see the module documentation).
pub const WRITES_PER_SLOT: usize = 16;

/// The window of a dry run, whose writes are the recorder's CPU work with no wire to wait on:
/// enough to keep every runtime thread busy. With [`WRITES_PER_SLOT`], at most 1024 writes are
/// queued (a dry run used to queue up to `MAX_IN_FLIGHT`, 4096, in bursts: its peak RSS at
/// 1,000,000 records rose from 53 MB to 80 MB).
pub const DRY_RUN_WINDOW: usize = 64;

/// A finished write, reported back to the engine loop.
#[derive(Debug)]
pub struct Written {
    batch: u64,
    keys: Vec<OrderKey>,
    /// How many ops the batch held.
    pub ops: usize,
    /// The sink's answer (`Ok` also when the write was skipped because the run is stopping).
    pub result: Result<(), SinkError>,
}

struct OpenBatch {
    id: u64,
    ops: Vec<Op>,
    keys: Vec<OrderKey>,
    preds: Vec<Done>,
    deadline: Instant,
    max_items: usize,
    done_tx: oneshot::Sender<()>,
    done: Done,
}

/// Schedules writes.
pub struct Dispatcher {
    sink: Arc<dyn Sink>,
    acks: Acks,
    written: mpsc::UnboundedSender<Written>,
    locks: HashMap<OrderKey, (u64, Done)>,
    open: HashMap<BatchKey, OpenBatch>,
    key_open: HashMap<OrderKey, BatchKey>,
    next_batch: u64,
    stopped: Arc<AtomicBool>,
    window: WriteWindow,
    in_flight: usize,
    /// Writes spawned whose [`Written`] has not been booked.
    writes: usize,
    /// [`WRITES_PER_SLOT`] times the window.
    max_writes: usize,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher")
            .field("in_flight", &self.in_flight)
            .field("open_batches", &self.open.len())
            .finish()
    }
}

impl Dispatcher {
    /// A dispatcher writing to `sink`, settling through `acks`, reporting finished writes on
    /// `written`, with at most `window` writes inside the sink at once.
    pub fn new(
        sink: Arc<dyn Sink>,
        acks: Acks,
        written: mpsc::UnboundedSender<Written>,
        window: usize,
    ) -> Self {
        Dispatcher {
            sink,
            acks,
            written,
            locks: HashMap::new(),
            open: HashMap::new(),
            key_open: HashMap::new(),
            next_batch: 0,
            stopped: Arc::new(AtomicBool::new(false)),
            window: WriteWindow::new(window),
            in_flight: 0,
            writes: 0,
            max_writes: window.max(1).saturating_mul(WRITES_PER_SLOT),
        }
    }

    /// True while another op may be handed over: fewer than `max_ops` ops unwritten, and fewer
    /// than [`WRITES_PER_SLOT`] writes per place in the window started or waiting for one.
    pub fn has_room(&self, max_ops: usize) -> bool {
        self.in_flight < max_ops && self.writes < self.max_writes
    }

    /// Ops handed over whose write has not finished (open batches included).
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// The earliest time an open batch is due.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.open.values().map(|b| b.deadline).min()
    }

    /// Hands one op over.
    pub fn submit(&mut self, op: Op, plan: Plan) {
        self.in_flight += 1;
        let Plan { keys, batch } = plan;
        // A batch this op does not join must not wait on it: close such batches first.
        for key in &keys {
            if let Some(open) = self.key_open.get(key)
                && Some(open) != batch.as_ref()
            {
                let open = open.clone();
                self.dispatch_open(&open);
            }
        }
        match batch {
            None => {
                let id = self.new_id();
                let (done_tx, done_rx) = oneshot::channel();
                let done = done_rx.shared();
                let mut preds = Vec::new();
                for key in &keys {
                    if let Some((_, pred)) = self.locks.insert(*key, (id, done.clone())) {
                        preds.push(pred);
                    }
                }
                self.spawn(id, vec![op], keys, preds, done_tx);
            }
            Some(batch_key) => {
                if !self.open.contains_key(&batch_key) {
                    let id = self.new_id();
                    let (done_tx, done_rx) = oneshot::channel();
                    let limits = batch_key.limits();
                    self.open.insert(
                        batch_key.clone(),
                        OpenBatch {
                            id,
                            ops: Vec::new(),
                            keys: Vec::new(),
                            preds: Vec::new(),
                            deadline: Instant::now() + limits.linger,
                            max_items: limits.max_items,
                            done_tx,
                            done: done_rx.shared(),
                        },
                    );
                }
                let Some(open) = self.open.get_mut(&batch_key) else {
                    return;
                };
                let id = open.id;
                let done = open.done.clone();
                for key in &keys {
                    match self.locks.insert(*key, (id, done.clone())) {
                        Some((other, pred)) if other != id => open.preds.push(pred),
                        _ => {}
                    }
                    self.key_open.insert(*key, batch_key.clone());
                }
                open.keys.extend(keys);
                open.ops.push(op);
                if open.ops.len() >= open.max_items {
                    self.dispatch_open(&batch_key);
                }
            }
        }
    }

    fn new_id(&mut self) -> u64 {
        self.next_batch += 1;
        self.next_batch
    }

    fn dispatch_open(&mut self, batch_key: &BatchKey) {
        let Some(open) = self.open.remove(batch_key) else {
            return;
        };
        for key in &open.keys {
            if self.key_open.get(key) == Some(batch_key) {
                self.key_open.remove(key);
            }
        }
        let mut keys = open.keys;
        keys.sort_unstable_by_key(|k| k.0);
        keys.dedup();
        self.spawn(open.id, open.ops, keys, open.preds, open.done_tx);
    }

    /// Writes every open batch that is due.
    pub fn dispatch_due(&mut self, now: Instant) {
        let due: Vec<BatchKey> = self
            .open
            .iter()
            .filter(|(_, b)| b.deadline <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for key in due {
            self.dispatch_open(&key);
        }
    }

    /// Writes every open batch now (end of input).
    pub fn dispatch_all(&mut self) {
        let all: Vec<BatchKey> = self.open.keys().cloned().collect();
        for key in all {
            self.dispatch_open(&key);
        }
    }

    /// Stops: open batches are dropped unwritten, writes not yet started will not start.
    pub fn stop(&mut self) {
        self.stopped.store(true, Ordering::SeqCst);
        let dropped: usize = self.open.values().map(|b| b.ops.len()).sum();
        self.open.clear();
        self.key_open.clear();
        self.in_flight -= dropped;
    }

    /// Books a finished write.
    pub fn finished(&mut self, written: &Written) {
        self.in_flight = self.in_flight.saturating_sub(written.ops);
        self.writes = self.writes.saturating_sub(1);
        for key in &written.keys {
            if self
                .locks
                .get(key)
                .is_some_and(|(id, _)| *id == written.batch)
            {
                self.locks.remove(key);
            }
        }
    }

    fn spawn(
        &mut self,
        id: u64,
        ops: Vec<Op>,
        keys: Vec<OrderKey>,
        preds: Vec<Done>,
        done_tx: oneshot::Sender<()>,
    ) {
        self.writes += 1;
        let sink = self.sink.clone();
        let acks = self.acks.clone();
        let written = self.written.clone();
        let stopped = self.stopped.clone();
        let window = self.window.clone();
        let write = async move {
            for pred in preds {
                // A dropped predecessor (the run is stopping) counts as finished.
                let _ = pred.await;
            }
            // Predecessors first, then a place in the window: a write holding a place never
            // waits for one that has none. A retry sleeping in backoff gives its place up
            // meanwhile (`http::concurrency::WriteWindow`).
            let count = ops.len();
            let result = window
                .run(async {
                    let result = if stopped.load(Ordering::SeqCst) {
                        Ok(())
                    } else {
                        sink.write(ops, &acks).await
                    };
                    // A fatal error (refused credentials, the vendor unreachable) stops every
                    // write not yet started at once: the next one waiting for this place must
                    // not go out before the engine has read this result.
                    if result.is_err() {
                        stopped.store(true, Ordering::SeqCst);
                    }
                    result
                })
                .await;
            let _ = done_tx.send(());
            let _ = written.send(Written {
                batch: id,
                keys,
                ops: count,
                result,
            });
        };
        run_or_spawn(Box::pin(write));
    }
}

/// Polls a write once here, and spawns a task for it only if it cannot finish at once (it waits
/// for a predecessor, a place in the window or the wire). A dry run's writes and the writes a
/// sink only stages finish in that one poll: a tokio task per op, its scheduling and its
/// cross-thread frees were a fifth of a dry run's instructions (BENCHMARKS.md). A write that is
/// pending goes on in its task exactly as before: a future may be polled again with another
/// waker, and the task's first poll registers the task's.
fn run_or_spawn(mut write: std::pin::Pin<Box<dyn Future<Output = ()> + Send>>) {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    if write.as_mut().poll(&mut cx).is_pending() {
        tokio::spawn(write);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Action, Item, Kind};
    use crate::sink::{BatchLimits, Origin, Refusal, Ticket, WireStats};
    use std::time::Duration;

    /// A vendor that never answers: every write handed to it stays in flight.
    struct Silent;

    #[async_trait::async_trait]
    impl Sink for Silent {
        fn vendor(&self) -> &'static str {
            "silent"
        }

        fn plan(&self, _op: &Op) -> Result<Plan, Refusal> {
            Ok(Plan::default())
        }

        async fn write(&self, _batch: Vec<Op>, _acks: &Acks) -> Result<(), SinkError> {
            std::future::pending().await
        }

        async fn check(&self) -> Result<(), SinkError> {
            Ok(())
        }

        fn stats(&self) -> WireStats {
            WireStats::default()
        }
    }

    fn op(n: u64) -> Op {
        Op {
            ticket: Ticket(n),
            item: Item {
                kind: Kind::Users,
                action: Action::Upsert,
                id: Some(format!("u{n}")),
                user_id: None,
                group_id: None,
                fields: Default::default(),
                attributes: Default::default(),
            },
            origin: Arc::new(Origin {
                stream: "users".into(),
                line: n + 1,
                record: serde_json::Map::new().into(),
            }),
        }
    }

    /// Ops handed over until the dispatcher has no room (or `limit` of them).
    fn fill(d: &mut Dispatcher, batch: Option<BatchKey>, limit: usize) -> usize {
        let mut n = 0;
        while n < limit && d.has_room(crate::load::MAX_IN_FLIGHT) {
            let key = OrderKey::user(&format!("u{n}"));
            d.submit(
                op(n as u64),
                Plan {
                    keys: vec![key],
                    batch: batch.clone(),
                },
            );
            n += 1;
        }
        n
    }

    #[tokio::test]
    async fn single_writes_queue_at_most_a_few_per_place_in_the_window() {
        // The ledger's first run at 1,000,000 Userflow users peaked at 105.7 MB: with a window of
        // 16, the engine read on until 4096 single-op writes (MAX_IN_FLIGHT) were waiting, each
        // holding its op, its ledger expectation and a task. The queue is now bounded per place.
        let (acks, _settled) = Acks::channel();
        let (tx, _written) = mpsc::unbounded_channel();
        let mut d = Dispatcher::new(Arc::new(Silent), acks, tx, 16);
        let handed = fill(&mut d, None, crate::load::MAX_IN_FLIGHT);
        assert_eq!(handed, 16 * WRITES_PER_SLOT);
        assert!(
            handed < crate::load::MAX_IN_FLIGHT / 8,
            "{handed} ops queued"
        );
        assert_eq!(d.in_flight(), handed);
    }

    #[tokio::test]
    async fn a_batch_counts_once_so_batching_vendors_still_fill_their_batches() {
        let (acks, _settled) = Acks::channel();
        let (tx, _written) = mpsc::unbounded_channel();
        let mut d = Dispatcher::new(Arc::new(Silent), acks, tx, 2);
        let batch = BatchKey::new(
            "silent users",
            BatchLimits {
                max_items: 100,
                linger: Duration::from_secs(60),
            },
        );
        // 2 places × WRITES_PER_SLOT writes of 100 ops each: far more ops than writes.
        let handed = fill(&mut d, Some(batch), crate::load::MAX_IN_FLIGHT);
        assert_eq!(handed, 2 * WRITES_PER_SLOT * 100);
        assert!(!d.has_room(crate::load::MAX_IN_FLIGHT));
    }

    #[tokio::test]
    async fn a_finished_write_makes_room_again() {
        // The first write starts at once and waits on the vendor (the gate); the others wait for
        // the one place.
        let sink = Arc::new(Prompt {
            started: Default::default(),
            gated: 0,
            gate: tokio::sync::Notify::new(),
        });
        let (acks, _settled) = Acks::channel();
        let (tx, mut written) = mpsc::unbounded_channel();
        let mut d = Dispatcher::new(sink.clone(), acks, tx, 1);
        fill(&mut d, None, usize::MAX);
        assert!(!d.has_room(crate::load::MAX_IN_FLIGHT));
        d.stop();
        sink.gate.notify_one();
        // Stopped: the write in flight finishes, the writes waiting for the one place finish
        // without writing.
        let done = written.recv().await.expect("a write finished");
        d.finished(&done);
        assert!(d.has_room(crate::load::MAX_IN_FLIGHT));
        for _ in 1..WRITES_PER_SLOT {
            written.recv().await.expect("a write finished");
        }
        assert_eq!(*sink.started.lock(), vec![0]);
    }

    /// A vendor that settles every write at once, except those of `gated` ops, which wait for
    /// `gate`; it notes the tickets it starts writing, in order.
    struct Prompt {
        started: parking_lot::Mutex<Vec<u64>>,
        gated: u64,
        gate: tokio::sync::Notify,
    }

    #[async_trait::async_trait]
    impl Sink for Prompt {
        fn vendor(&self) -> &'static str {
            "instant"
        }

        fn plan(&self, _op: &Op) -> Result<Plan, Refusal> {
            Ok(Plan::default())
        }

        async fn write(&self, batch: Vec<Op>, acks: &Acks) -> Result<(), SinkError> {
            for op in &batch {
                self.started.lock().push(op.ticket.0);
                if op.ticket.0 == self.gated {
                    self.gate.notified().await;
                }
                acks.accepted(op, None);
            }
            Ok(())
        }

        async fn check(&self) -> Result<(), SinkError> {
            Ok(())
        }

        fn stats(&self) -> WireStats {
            WireStats::default()
        }
    }

    fn single(d: &mut Dispatcher, n: u64, user: &str) {
        d.submit(op(n), Plan::single(vec![OrderKey::user(user)]));
    }

    #[tokio::test]
    async fn a_write_that_can_finish_at_once_needs_no_task() {
        // The test runtime has one thread and this test never yields: a write handed to a task
        // would not have run yet.
        let sink = Arc::new(Prompt {
            started: Default::default(),
            gated: u64::MAX,
            gate: tokio::sync::Notify::new(),
        });
        let (acks, mut settled) = Acks::channel();
        let (tx, mut written) = mpsc::unbounded_channel();
        let mut d = Dispatcher::new(sink.clone(), acks, tx, 4);
        single(&mut d, 0, "u1");
        single(&mut d, 1, "u1");
        single(&mut d, 2, "u2");
        for n in 0..3 {
            let done = written.try_recv().expect("written without a task");
            assert!(done.result.is_ok());
            d.finished(&done);
            assert_eq!(settled.try_recv().expect("settled").ticket, Ticket(n));
        }
        assert_eq!(*sink.started.lock(), vec![0, 1, 2]);
        assert_eq!(d.in_flight(), 0);
    }

    #[tokio::test]
    async fn a_write_behind_a_pending_one_for_its_key_waits_for_it() {
        let sink = Arc::new(Prompt {
            started: Default::default(),
            gated: 0,
            gate: tokio::sync::Notify::new(),
        });
        let (acks, _settled) = Acks::channel();
        let (tx, mut written) = mpsc::unbounded_channel();
        let mut d = Dispatcher::new(sink.clone(), acks, tx, 4);
        single(&mut d, 0, "u1");
        single(&mut d, 1, "u1");
        single(&mut d, 2, "u2");
        // u2's write is free and finished at once; u1's second waits for its first.
        let done = written.try_recv().expect("u2 written at once");
        assert_eq!(done.ops, 1);
        assert_eq!(*sink.started.lock(), vec![0, 2]);
        tokio::task::yield_now().await;
        assert_eq!(*sink.started.lock(), vec![0, 2]);
        sink.gate.notify_one();
        for _ in 0..2 {
            let done = written.recv().await.expect("written");
            d.finished(&done);
        }
        assert_eq!(*sink.started.lock(), vec![0, 2, 1]);
    }
}
