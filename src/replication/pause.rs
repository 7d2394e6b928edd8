//! Notices that this process was stopped for a while (SIGSTOP, a frozen VM or
//! container, a host so starved that nothing ran), so that the node re-checks
//! the copies it held before it acts on them as an owner again.
//!
//! While a node is stopped the others may declare it dead, move its sessions to
//! the next holders and accept writes there. When it resumes, its memory still
//! holds the older copies and its ring still names it the owner: serving them
//! as they are would answer stale reads and, worse, acknowledge writes made on
//! top of stale data. A dedicated thread stamps a monotonic clock every
//! [`TICK`]; a gap much longer than that means the whole process stood still.
//! The callback then marks every held copy as doubtful (see
//! [`crate::session::Store::doubt_all`]); the owner asks the other holders
//! before it serves a doubted copy. Requests that run in the short moment after
//! the resume, before the thread has looked at the clock, wait for it
//! ([`PauseDetector::caught_up`]).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often the clock is stamped.
pub const TICK: Duration = Duration::from_millis(10);

struct Shared {
    base: Instant,
    /// Milliseconds since `base` of the last stamp (after any pause was handled).
    stamped_ms: AtomicU64,
    stop: AtomicBool,
    threshold: Duration,
}

impl Shared {
    fn overdue(&self) -> bool {
        let now = self.base.elapsed().as_millis() as u64;
        let stamped = self.stamped_ms.load(Ordering::Acquire);
        Duration::from_millis(now.saturating_sub(stamped)) > self.threshold
    }
}

/// The pause watch of one node; stopped by [`PauseDetector::stop`] or on drop.
pub struct PauseDetector {
    shared: Arc<Shared>,
    thread: parking_lot::Mutex<Option<JoinHandle<()>>>,
}

impl PauseDetector {
    /// Starts the watch thread. `on_pause` runs on it with the length of each
    /// pause longer than `threshold`, before the new stamp is published.
    pub fn start(
        threshold: Duration,
        on_pause: impl Fn(Duration) + Send + 'static,
    ) -> std::io::Result<PauseDetector> {
        let shared = Arc::new(Shared {
            base: Instant::now(),
            stamped_ms: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            threshold,
        });
        let thread = std::thread::Builder::new()
            .name("pause-watch".into())
            .spawn({
                let shared = shared.clone();
                move || {
                    let mut last = shared.base.elapsed();
                    while !shared.stop.load(Ordering::Relaxed) {
                        std::thread::sleep(TICK);
                        let now = shared.base.elapsed();
                        let gap = now.saturating_sub(last);
                        if gap > threshold + TICK {
                            on_pause(gap);
                        }
                        last = now;
                        shared
                            .stamped_ms
                            .store(now.as_millis() as u64, Ordering::Release);
                    }
                }
            })?;
        Ok(PauseDetector {
            shared,
            thread: parking_lot::Mutex::new(Some(thread)),
        })
    }

    /// Returns at once unless the watch thread is overdue (the process may just
    /// have resumed); then waits until it has stamped again, so that a pause is
    /// handled before the caller touches the store. Bounded: a thread starved
    /// for longer than a second is not waited for.
    pub async fn caught_up(&self) {
        for _ in 0..100 {
            if !self.shared.overdue() {
                return;
            }
            tokio::time::sleep(TICK).await;
        }
    }

    /// Stops the watch thread and waits for it.
    pub fn stop(&self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.lock().take() {
            let _ = thread.join();
        }
    }
}

impl Drop for PauseDetector {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The pause itself is tested on a real process (SIGSTOP, SIGCONT) in
    // tests/replication.rs.

    #[test]
    fn stop_joins_the_thread() {
        let detector = PauseDetector::start(Duration::from_millis(50), |_| {}).unwrap();
        detector.stop();
        assert!(detector.thread.lock().is_none());
        assert!(detector.shared.stop.load(Ordering::Relaxed));
    }
}
