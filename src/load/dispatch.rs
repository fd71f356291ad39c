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
//! - **Stop.** After [`Dispatcher::stop`], writes that have not started do not start (their ops
//!   stay unsettled, so no STATE covers them); writes in flight finish.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use futures::FutureExt;
use futures::future::Shared;
use tokio::sync::{mpsc, oneshot};

use crate::http::concurrency::WriteWindow;

use crate::sink::{Acks, BatchKey, Op, OrderKey, Plan, Sink, SinkError};

type Done = Shared<oneshot::Receiver<()>>;

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
        }
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
        let sink = self.sink.clone();
        let acks = self.acks.clone();
        let written = self.written.clone();
        let stopped = self.stopped.clone();
        let window = self.window.clone();
        tokio::spawn(async move {
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
        });
    }
}
