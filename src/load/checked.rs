//! The connection check, made before the first request a run needs rather than before its
//! input is read: [`CheckFirst`] wraps the vendor's writer and runs [`Sink::check`] once, just
//! before the first write, flush or read reaches it. Refused credentials or an unreachable
//! vendor still stop the run before anything is written (the error is fatal, as it was up
//! front), and a run with nothing to send (a second run over unchanged records, all skipped by
//! the ledger) sends no request at all.

use std::sync::Arc;

use tokio::sync::OnceCell;

use crate::sink::{
    Acks, Holding, Item, Kind, NestedRule, Op, Plan, Refusal, SendError, SendFailure, Sink,
    SinkError, WireStats,
};

/// A writer whose connection is checked before the first request it makes.
pub struct CheckFirst {
    inner: Arc<dyn Sink>,
    /// The check's outcome: `Ok`, or the failure's one line (a second caller gets the same).
    checked: OnceCell<Result<(), String>>,
}

impl std::fmt::Debug for CheckFirst {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckFirst")
            .field("vendor", &self.inner.vendor())
            .finish_non_exhaustive()
    }
}

impl CheckFirst {
    /// `inner`, checked before its first request.
    pub fn wrap(inner: Arc<dyn Sink>) -> Arc<dyn Sink> {
        Arc::new(CheckFirst {
            inner,
            checked: OnceCell::new(),
        })
    }

    /// Runs the check the first time; the first failure is returned as it came, and later
    /// callers (concurrent writes) get it as a vendor error with the same words.
    async fn ensure(&self) -> Result<(), SinkError> {
        let mut first = None;
        let outcome = self
            .checked
            .get_or_init(|| async {
                match self.inner.check().await {
                    Ok(()) => Ok(()),
                    Err(err) => {
                        let line = err.to_string();
                        first = Some(err);
                        Err(line)
                    }
                }
            })
            .await;
        match (first, outcome) {
            (Some(err), _) => Err(err),
            (None, Ok(())) => Ok(()),
            (None, Err(line)) => Err(SinkError::Vendor {
                vendor: self.inner.vendor(),
                detail: line.clone(),
            }),
        }
    }
}

#[async_trait::async_trait]
impl Sink for CheckFirst {
    fn vendor(&self) -> &'static str {
        self.inner.vendor()
    }

    fn plan(&self, op: &Op) -> Result<Plan, Refusal> {
        self.inner.plan(op)
    }

    async fn write(&self, batch: Vec<Op>, acks: &Acks) -> Result<(), SinkError> {
        self.ensure().await?;
        self.inner.write(batch, acks).await
    }

    async fn flush(&self, acks: &Acks) -> Result<(), SinkError> {
        // A flush sends only what writes handed over (spooled files, held groups), and the
        // first write checked; a run that wrote nothing flushes nothing.
        self.inner.flush(acks).await
    }

    async fn check(&self) -> Result<(), SinkError> {
        self.ensure().await
    }

    fn stats(&self) -> WireStats {
        self.inner.stats()
    }

    fn holds_memberships(&self) -> bool {
        self.inner.holds_memberships()
    }

    fn nested_rule(&self) -> NestedRule {
        self.inner.nested_rule()
    }

    fn reads(&self, kind: Kind) -> bool {
        self.inner.reads(kind)
    }

    async fn read(&self, item: &Item) -> Result<Holding, SendError> {
        if let Err(err) = self.ensure().await {
            return Err(SendError {
                failure: SendFailure::Unreachable,
                status: None,
                body_excerpt: None,
                message: err.to_string(),
                maybe_processed: false,
            });
        }
        self.inner.read(item).await
    }
}
