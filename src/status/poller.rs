//! One poller per watched session.
//!
//! A session whose vendor does not call back (Baidu) is polled only while someone watches it: the first watcher
//! starts one task, every further watcher shares it, and the task ends when the last watcher leaves, the session is
//! final, or its vendor token has run out. Intervals start at `min_interval`, grow by half while nothing changes up
//! to `max_interval`, are spread by `jitter`, and back off further when the vendor throttles. A wake-up hint (the
//! browser came back from the vendor page) makes the next poll happen at once.
//!
//! What one poll does is the domain's business: the poll function returns a [`PollStep`].

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::Notify;

/// What a poll found, as far as scheduling goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollStep {
    /// The session is final (or cannot be polled): stop.
    Done,
    /// Nothing decided yet; `changed` when the poll learned something new.
    Again {
        /// Whether the session changed.
        changed: bool,
    },
    /// The vendor throttled or failed: wait at least this long (or the doubled interval).
    Backoff(Option<Duration>),
}

/// The poll of one session.
pub type PollFn =
    Arc<dyn Fn(String) -> Pin<Box<dyn Future<Output = PollStep> + Send>> + Send + Sync>;

/// Scheduling settings.
#[derive(Debug, Clone, Copy)]
pub struct PollConfig {
    /// First interval, and the interval after a change or a wake-up.
    pub min_interval: Duration,
    /// Longest interval.
    pub max_interval: Duration,
    /// Random spread, as a fraction of the interval.
    pub jitter: f64,
}

struct Entry {
    watchers: usize,
    running: bool,
    wake: Arc<Notify>,
}

/// The pollers of all watched sessions.
pub struct Pollers {
    cfg: PollConfig,
    poll: OnceLock<PollFn>,
    entries: Mutex<HashMap<String, Entry>>,
    polls: AtomicU64,
    started: AtomicU64,
}

impl Pollers {
    /// No pollers yet; nothing runs until [`Pollers::set_poll_fn`].
    pub fn new(cfg: PollConfig) -> Self {
        Self {
            cfg,
            poll: OnceLock::new(),
            entries: Mutex::new(HashMap::new()),
            polls: AtomicU64::new(0),
            started: AtomicU64::new(0),
        }
    }

    /// Sets what one poll does (once).
    pub fn set_poll_fn(&self, f: PollFn) {
        let _ = self.poll.set(f);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A watcher arrives; polling starts if the session needs it and no poller runs yet.
    pub fn watch(self: &Arc<Self>, id: &str) {
        let mut map = self.lock();
        let entry = map.entry(id.to_owned()).or_insert_with(|| Entry {
            watchers: 0,
            running: false,
            wake: Arc::new(Notify::new()),
        });
        entry.watchers += 1;
        self.spawn_locked(id, entry);
    }

    /// A watcher leaves; the poller stops after the last one.
    pub fn unwatch(&self, id: &str) {
        let mut map = self.lock();
        if let Some(entry) = map.get_mut(id) {
            entry.watchers = entry.watchers.saturating_sub(1);
            if entry.watchers == 0 {
                entry.wake.notify_one();
                if !entry.running {
                    map.remove(id);
                }
            }
        }
    }

    /// The session became pollable (its vendor page is ready) or the browser came back from the vendor: poll now
    /// if anyone watches.
    pub fn wake(self: &Arc<Self>, id: &str) {
        let mut map = self.lock();
        if let Some(entry) = map.get_mut(id) {
            if entry.running {
                entry.wake.notify_one();
            } else {
                self.spawn_locked(id, entry);
            }
        }
    }

    /// Whether a poller runs for the session.
    pub fn is_polling(&self, id: &str) -> bool {
        self.lock().get(id).is_some_and(|e| e.running)
    }

    /// Number of running pollers.
    pub fn running(&self) -> usize {
        self.lock().values().filter(|e| e.running).count()
    }

    /// Polls made by pollers so far.
    pub fn polls(&self) -> u64 {
        self.polls.load(Ordering::Relaxed)
    }

    /// Poller tasks started so far.
    pub fn started(&self) -> u64 {
        self.started.load(Ordering::Relaxed)
    }

    fn spawn_locked(self: &Arc<Self>, id: &str, entry: &mut Entry) {
        if entry.running || entry.watchers == 0 {
            return;
        }
        let Some(poll) = self.poll.get().cloned() else {
            return;
        };
        entry.running = true;
        self.started.fetch_add(1, Ordering::Relaxed);
        let this = Arc::clone(self);
        let wake = Arc::clone(&entry.wake);
        let id = id.to_owned();
        tokio::spawn(async move {
            this.run(id, poll, wake).await;
        });
    }

    async fn run(self: Arc<Self>, id: String, poll: PollFn, wake: Arc<Notify>) {
        let mut interval = self.cfg.min_interval;
        loop {
            let finished = loop {
                if !self.still_watched(&id) {
                    break false;
                }
                self.polls.fetch_add(1, Ordering::Relaxed);
                match poll(id.clone()).await {
                    PollStep::Done => break true,
                    PollStep::Again { changed: true } => interval = self.cfg.min_interval,
                    PollStep::Again { changed: false } => {
                        interval = interval.mul_f64(1.5).min(self.cfg.max_interval)
                    }
                    PollStep::Backoff(at_least) => {
                        interval = interval
                            .saturating_mul(2)
                            .max(at_least.unwrap_or_default())
                            .min(self.cfg.max_interval.saturating_mul(4))
                    }
                }
                if !self.still_watched(&id) {
                    break false;
                }
                tokio::select! {
                    _ = tokio::time::sleep(jittered(interval, self.cfg.jitter)) => {}
                    _ = wake.notified() => interval = self.cfg.min_interval,
                }
            };
            let mut map = self.lock();
            let Some(entry) = map.get_mut(&id) else {
                return;
            };
            if !finished && entry.watchers > 0 {
                // A watcher arrived while this task was stopping: keep going for it.
                continue;
            }
            entry.running = false;
            if entry.watchers == 0 {
                map.remove(&id);
            }
            return;
        }
    }

    fn still_watched(&self, id: &str) -> bool {
        self.lock().get(id).is_some_and(|e| e.watchers > 0)
    }
}

/// `d` spread uniformly by plus or minus `jitter` (a fraction).
fn jittered(d: Duration, jitter: f64) -> Duration {
    if jitter <= 0.0 {
        return d;
    }
    let r = (uuid::Uuid::new_v4().as_u128() % 10_000) as f64 / 10_000.0; // [0, 1)
    d.mul_f64((1.0 - jitter + 2.0 * jitter * r).max(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counting(steps: Arc<AtomicU64>, step: PollStep) -> PollFn {
        Arc::new(move |_id| {
            let steps = Arc::clone(&steps);
            Box::pin(async move {
                steps.fetch_add(1, Ordering::SeqCst);
                step
            })
        })
    }

    fn cfg(ms: u64) -> PollConfig {
        PollConfig {
            min_interval: Duration::from_millis(ms),
            max_interval: Duration::from_millis(ms),
            jitter: 0.0,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn many_watchers_share_one_poller() {
        let p = Arc::new(Pollers::new(cfg(1000)));
        let n = Arc::new(AtomicU64::new(0));
        p.set_poll_fn(counting(Arc::clone(&n), PollStep::Again { changed: false }));
        for _ in 0..100 {
            p.watch("s");
        }
        tokio::time::sleep(Duration::from_millis(3500)).await;
        assert_eq!(p.started(), 1);
        assert_eq!(n.load(Ordering::SeqCst), 4, "polls at 0, 1, 2 and 3 s");
        for _ in 0..100 {
            p.unwatch("s");
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(
            n.load(Ordering::SeqCst),
            4,
            "no polls after the last watcher left"
        );
        assert_eq!(p.running(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_final_session_stops_its_poller_and_wake_polls_at_once() {
        let p = Arc::new(Pollers::new(cfg(60_000)));
        let n = Arc::new(AtomicU64::new(0));
        p.set_poll_fn(counting(Arc::clone(&n), PollStep::Again { changed: false }));
        p.watch("s");
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(n.load(Ordering::SeqCst), 1);
        p.wake("s");
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(
            n.load(Ordering::SeqCst),
            2,
            "the hint polled before the interval was over"
        );

        let done = Arc::new(Pollers::new(cfg(10)));
        let m = Arc::new(AtomicU64::new(0));
        done.set_poll_fn(counting(Arc::clone(&m), PollStep::Done));
        done.watch("t");
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(m.load(Ordering::SeqCst), 1);
        assert!(!done.is_polling("t"));
    }

    #[tokio::test(start_paused = true)]
    async fn throttling_backs_off() {
        let p = Arc::new(Pollers::new(PollConfig {
            min_interval: Duration::from_millis(100),
            max_interval: Duration::from_secs(10),
            jitter: 0.0,
        }));
        let n = Arc::new(AtomicU64::new(0));
        p.set_poll_fn(counting(
            Arc::clone(&n),
            PollStep::Backoff(Some(Duration::from_secs(1))),
        ));
        p.watch("s");
        // Polls at 0, then 1 s (max(200 ms, 1 s)), then 3 s (2 s), then 7 s (4 s).
        tokio::time::sleep(Duration::from_millis(7500)).await;
        assert_eq!(n.load(Ordering::SeqCst), 4);
    }

    #[test]
    fn jitter_stays_in_bounds() {
        for _ in 0..1000 {
            let d = jittered(Duration::from_millis(1000), 0.2);
            assert!(d >= Duration::from_millis(800) && d <= Duration::from_millis(1200));
        }
    }
}
