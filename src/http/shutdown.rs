//! Shutdown: what a signal does to the waits of a run.
//!
//! A run spends most of a long stop waiting, not sending: a `Retry-After` pause (up to
//! [`crate::http::retry::RETRY_AFTER_CAP`]), backoff, the rate pacer, a free concurrency slot, a
//! bulk job's poll. Orchestrators give 10–30 s between SIGTERM and SIGKILL, so on the first
//! signal the binaries call [`Shutdown::begin`] and every one of those waits ends at once with
//! [`Stopped`]: a request that has not gone out is not sent. A request already on the wire gets
//! [`GRACE`] to answer (its answer settles its record), then it is abandoned like a timeout:
//! nothing after the last state printed is counted as sent, so a rerun sends it again.
//!
//! The process has one [`Shutdown`] ([`Shutdown::process`]), because signals are per process;
//! every [`crate::http::HttpClient`] uses it unless its config names another (unit tests, which
//! run side by side in one process, make their own).

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// How long a request already on the wire may take to answer after the signal. With the
/// bookkeeping after it, the run ends well inside 2 s.
pub const GRACE: Duration = Duration::from_millis(1200);

/// The longest a first signal takes to end a run: past it, what is still in flight is
/// abandoned and the run ends (inside the 2 s the contract promises).
pub const STOP_DEADLINE: Duration = Duration::from_millis(1700);

/// A wait ended by the shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("stopped by a signal")]
pub struct Stopped;

/// A shutdown flag that waits can be raced against.
#[derive(Debug, Clone)]
pub struct Shutdown {
    begun: Arc<watch::Sender<Option<Instant>>>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::process()
    }
}

impl Shutdown {
    /// A flag of its own (tests).
    pub fn new() -> Self {
        Shutdown {
            begun: Arc::new(watch::channel(None).0),
        }
    }

    /// The process's flag, which the signal handlers raise.
    pub fn process() -> Self {
        static PROCESS: OnceLock<Shutdown> = OnceLock::new();
        PROCESS.get_or_init(Shutdown::new).clone()
    }

    /// Raises the flag: every wait raced against it ends now. Later calls change nothing.
    pub fn begin(&self) {
        self.begun.send_if_modified(|begun| {
            if begun.is_some() {
                return false;
            }
            *begun = Some(Instant::now());
            true
        });
    }

    /// True once [`Shutdown::begin`] was called.
    pub fn is_begun(&self) -> bool {
        self.begun.borrow().is_some()
    }

    /// Resolves when the flag is raised (at once if it already is).
    pub async fn begun(&self) {
        let mut rx = self.begun.subscribe();
        // The sender lives in `self`, so the channel cannot close while this waits.
        let _ = rx.wait_for(Option::is_some).await;
    }

    /// Resolves [`GRACE`] after the flag is raised: the end of a request already on the wire.
    pub async fn grace_over(&self) {
        self.begun().await;
        let at = *self.begun.borrow();
        if let Some(at) = at {
            tokio::time::sleep_until(at + GRACE).await;
        }
    }

    /// Runs `future` unless the flag is raised first.
    pub async fn unless_begun<F: Future>(&self, future: F) -> Result<F::Output, Stopped> {
        if self.is_begun() {
            return Err(Stopped);
        }
        tokio::select! {
            biased;
            () = self.begun() => Err(Stopped),
            out = future => Ok(out),
        }
    }

    /// Sleeps `duration`, or less if the flag is raised.
    pub async fn sleep(&self, duration: Duration) -> Result<(), Stopped> {
        self.unless_begun(tokio::time::sleep(duration)).await
    }

    /// Sleeps until `deadline`, or less if the flag is raised.
    pub async fn sleep_until(&self, deadline: Instant) -> Result<(), Stopped> {
        self.unless_begun(tokio::time::sleep_until(deadline)).await
    }
}

/// SIGTERM and SIGINT, as a stream of names.
#[derive(Debug)]
pub struct Signals {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    int: Option<tokio::signal::unix::Signal>,
}

impl Default for Signals {
    fn default() -> Self {
        Self::new()
    }
}

impl Signals {
    /// Listens for SIGTERM and SIGINT (a warning if it cannot).
    pub fn new() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let term = signal(SignalKind::terminate())
                .map_err(|err| tracing::warn!("cannot listen for SIGTERM: {err}"))
                .ok();
            let int = signal(SignalKind::interrupt())
                .map_err(|err| tracing::warn!("cannot listen for SIGINT: {err}"))
                .ok();
            Signals { term, int }
        }
        #[cfg(not(unix))]
        {
            Signals {}
        }
    }

    /// The next signal's name.
    pub async fn recv(&mut self) -> Option<&'static str> {
        #[cfg(unix)]
        {
            let Signals { term, int } = self;
            let term = async {
                match term.as_mut() {
                    Some(s) => s.recv().await,
                    None => std::future::pending().await,
                }
            };
            let int = async {
                match int.as_mut() {
                    Some(s) => s.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                Some(()) = term => Some("SIGTERM"),
                Some(()) = int => Some("SIGINT"),
                else => None,
            }
        }
        #[cfg(not(unix))]
        {
            std::future::pending().await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn waits_end_when_the_flag_is_raised() {
        let shutdown = Shutdown::new();
        let other = shutdown.clone();
        let started = Instant::now();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(3)).await;
            other.begin();
        });
        assert_eq!(shutdown.sleep(Duration::from_secs(100)).await, Err(Stopped));
        assert_eq!(started.elapsed(), Duration::from_secs(3));
        assert!(shutdown.is_begun());
        assert_eq!(shutdown.sleep(Duration::from_secs(1)).await, Err(Stopped));
        shutdown.grace_over().await;
        assert_eq!(started.elapsed(), Duration::from_secs(3) + GRACE);
        assert!(
            !Shutdown::new().is_begun(),
            "each new flag is its own; the process's is untouched"
        );
        assert!(!Shutdown::process().is_begun());
        assert_eq!(
            Shutdown::new().sleep(Duration::from_millis(5)).await,
            Ok(())
        );
    }
}
