//! The poll scheduler of watched sessions.
//!
//! A session whose vendor does not call back (Baidu) is polled only while someone watches it: the first watcher
//! puts it on the schedule, every further watcher shares that place, and it leaves the schedule when the last
//! watcher leaves, the session is final, or its vendor token has run out.
//!
//! Each scheduled session has a next-poll deadline. One dispatcher hands out polls earliest deadline first, with
//! only a few in flight at a time; the vendor's request budget (shared by every session, `baidu.poll_qps`) paces
//! them. So with N sessions and a budget of Q requests per second every session is polled about every
//! `max(interval, N / Q)`, whatever N is, and the queue never grows deeper than the sessions themselves.
//!
//! Intervals start at `min_interval`, grow by half while nothing changes up to `max_interval`, are spread by
//! `jitter`, and back off further when the vendor throttles (the dispatcher then also pauses its ordinary polls for
//! the vendor's wait). Two kinds of session jump ahead of every ordinary one, in a class of their own that the
//! vendor budget serves first: a session whose browser just came back from the vendor page (a wake-up, which also
//! keeps the next few polls at `min_interval`), and a session whose vendor token ends before its next ordinary poll
//! would come (it is polled at the token's end).
//!
//! What one poll does is the domain's business: the poll function returns a [`PollStep`].

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// What a poll found, as far as scheduling goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollStep {
    /// The session is final (or cannot be polled): stop.
    Done,
    /// Nothing decided yet; `changed` when the poll learned something new.
    Again {
        /// Whether the session changed.
        changed: bool,
        /// How long until the session's vendor token ends (its last check is due then), when known.
        ends_in: Option<Duration>,
    },
    /// The vendor throttled or failed: wait at least this long (or the doubled interval).
    Backoff(Option<Duration>),
}

/// The poll of one session; the flag says whether it jumped ahead (its vendor calls are then urgent too).
pub type PollFn =
    Arc<dyn Fn(String, bool) -> Pin<Box<dyn Future<Output = PollStep> + Send>> + Send + Sync>;

/// Scheduling settings.
#[derive(Debug, Clone, Copy)]
pub struct PollConfig {
    /// First interval, and the interval after a change or a wake-up.
    pub min_interval: Duration,
    /// Longest interval.
    pub max_interval: Duration,
    /// Random spread, as a fraction of the interval.
    pub jitter: f64,
    /// Ordinary polls in flight at once (they wait for the vendor budget); urgent ones have as many again. About
    /// one second of the budget keeps the earliest-deadline choice fresh.
    pub in_flight: usize,
}

/// Polls after a wake-up that stay urgent and at `min_interval` (the result is expected any moment).
const HOT_POLLS: u32 = 3;
/// How often the queue-depth gauge is recounted at most.
const DEPTH_EVERY: Duration = Duration::from_millis(500);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    due: Instant,
    seq: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Not on the schedule (nothing to poll until a wake-up).
    Idle,
    /// Waiting for its deadline; `urgent` says which queue.
    Queued { key: Key, urgent: bool },
    /// A poll runs.
    InFlight,
}

struct Entry {
    watchers: usize,
    phase: Phase,
    interval: Duration,
    /// Urgent polls left after a wake-up.
    hot: u32,
    /// A wake-up arrived while a poll was in flight.
    woken: bool,
    /// The check at the vendor token's end, in `Sched::ends`.
    end: Option<Key>,
}

#[derive(Default)]
struct Sched {
    entries: HashMap<String, Entry>,
    ordinary: BTreeMap<Key, String>,
    urgent: BTreeMap<Key, String>,
    /// Checks at the end of each session's vendor token (dispatched as urgent polls).
    ends: BTreeMap<Key, String>,
    seq: u64,
    in_flight: [usize; 2],
    /// Ordinary polls wait until then (the vendor throttled).
    paused_until: Option<Instant>,
    depth_counted_at: Option<Instant>,
}

impl Sched {
    fn enqueue(&mut self, id: &str, due: Instant, urgent: bool) {
        self.seq += 1;
        let key = Key { due, seq: self.seq };
        if let Some(e) = self.entries.get_mut(id) {
            e.phase = Phase::Queued { key, urgent };
        }
        let queue = if urgent {
            &mut self.urgent
        } else {
            &mut self.ordinary
        };
        queue.insert(key, id.to_owned());
    }

    fn set_end(&mut self, id: &str, at: Option<Instant>) {
        self.seq += 1;
        let key = at.map(|due| Key { due, seq: self.seq });
        let Some(e) = self.entries.get_mut(id) else {
            return;
        };
        if let Some(old) = std::mem::replace(&mut e.end, key) {
            self.ends.remove(&old);
        }
        if let Some(key) = key {
            self.ends.insert(key, id.to_owned());
        }
    }

    fn dequeue(&mut self, id: &str) {
        if let Some(e) = self.entries.get_mut(id) {
            if let Phase::Queued { key, urgent } = e.phase {
                e.phase = Phase::Idle;
                if urgent {
                    self.urgent.remove(&key);
                } else {
                    self.ordinary.remove(&key);
                }
            }
        }
    }

    /// Sessions whose deadline has passed and that wait for a poll.
    fn due_count(&self, now: Instant) -> usize {
        let upto = Key {
            due: now,
            seq: u64::MAX,
        };
        self.ordinary.range(..=upto).count() + self.urgent.range(..=upto).count()
    }
}

/// The poll schedule of all watched sessions.
pub struct Pollers {
    cfg: PollConfig,
    poll: OnceLock<PollFn>,
    sched: Mutex<Sched>,
    notify: Arc<Notify>,
    dispatcher: AtomicBool,
    polls: AtomicU64,
    started: AtomicU64,
    depth: AtomicU64,
}

/// Finishes a dispatched poll, also when its task ends early.
struct Running {
    pollers: Weak<Pollers>,
    id: String,
    urgent: bool,
    step: Option<PollStep>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(p) = self.pollers.upgrade() {
            p.finish(
                &self.id,
                self.urgent,
                self.step.unwrap_or(PollStep::Backoff(None)),
            );
        }
    }
}

impl Pollers {
    /// An empty schedule; nothing runs until [`Pollers::set_poll_fn`].
    pub fn new(cfg: PollConfig) -> Self {
        Self {
            cfg: PollConfig {
                in_flight: cfg.in_flight.max(1),
                ..cfg
            },
            poll: OnceLock::new(),
            sched: Mutex::new(Sched::default()),
            notify: Arc::new(Notify::new()),
            dispatcher: AtomicBool::new(false),
            polls: AtomicU64::new(0),
            started: AtomicU64::new(0),
            depth: AtomicU64::new(0),
        }
    }

    /// Sets what one poll does (once).
    pub fn set_poll_fn(&self, f: PollFn) {
        let _ = self.poll.set(f);
        self.notify.notify_one();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Sched> {
        self.sched.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A watcher arrives; the session goes on the schedule (polled at once) unless it is already there.
    pub fn watch(self: &Arc<Self>, id: &str) {
        let mut s = self.lock();
        let entry = s.entries.entry(id.to_owned()).or_insert_with(|| Entry {
            watchers: 0,
            phase: Phase::Idle,
            interval: self.cfg.min_interval,
            hot: 0,
            woken: false,
            end: None,
        });
        entry.watchers += 1;
        if entry.phase == Phase::Idle {
            entry.interval = self.cfg.min_interval;
            self.started.fetch_add(1, Ordering::Relaxed);
            s.enqueue(id, Instant::now(), false);
            drop(s);
            self.kick();
        }
    }

    /// A watcher leaves; the session leaves the schedule after the last one.
    pub fn unwatch(&self, id: &str) {
        let mut s = self.lock();
        let Some(entry) = s.entries.get_mut(id) else {
            return;
        };
        entry.watchers = entry.watchers.saturating_sub(1);
        if entry.watchers > 0 {
            return;
        }
        match entry.phase {
            // The running poll's end removes it.
            Phase::InFlight => {}
            Phase::Queued { .. } | Phase::Idle => {
                s.dequeue(id);
                s.set_end(id, None);
                s.entries.remove(id);
            }
        }
    }

    /// The session became pollable (its vendor page is ready) or the browser came back from the vendor: poll it
    /// ahead of every ordinary session, if anyone watches.
    pub fn wake(self: &Arc<Self>, id: &str) {
        let mut s = self.lock();
        let Some(entry) = s.entries.get_mut(id) else {
            return;
        };
        if entry.watchers == 0 {
            return;
        }
        entry.hot = HOT_POLLS;
        entry.interval = self.cfg.min_interval;
        match entry.phase {
            Phase::InFlight => entry.woken = true,
            Phase::Queued { urgent: true, key } if key.due <= Instant::now() => {}
            Phase::Queued { .. } => {
                s.dequeue(id);
                s.enqueue(id, Instant::now(), true);
            }
            Phase::Idle => {
                self.started.fetch_add(1, Ordering::Relaxed);
                s.enqueue(id, Instant::now(), true);
            }
        }
        drop(s);
        self.kick();
    }

    /// Whether the session is on the schedule (queued or being polled).
    pub fn is_polling(&self, id: &str) -> bool {
        self.lock()
            .entries
            .get(id)
            .is_some_and(|e| e.phase != Phase::Idle)
    }

    /// Number of sessions on the schedule.
    pub fn running(&self) -> usize {
        self.lock()
            .entries
            .values()
            .filter(|e| e.phase != Phase::Idle)
            .count()
    }

    /// Sessions whose poll is due and waits for its turn (as last counted by the dispatcher).
    pub fn queue_depth(&self) -> u64 {
        self.depth.load(Ordering::Relaxed)
    }

    /// Polls dispatched so far.
    pub fn polls(&self) -> u64 {
        self.polls.load(Ordering::Relaxed)
    }

    /// Times a session went on the schedule so far.
    pub fn started(&self) -> u64 {
        self.started.load(Ordering::Relaxed)
    }

    /// Makes sure the dispatcher runs and looks at the schedule.
    fn kick(self: &Arc<Self>) {
        if !self.dispatcher.swap(true, Ordering::AcqRel) {
            let weak = Arc::downgrade(self);
            let notify = Arc::clone(&self.notify);
            tokio::spawn(dispatch(weak, notify));
        }
        self.notify.notify_one();
    }

    /// Starts every poll that is due and may run; returns when to look again (`None`: when notified).
    fn dispatch_due(self: &Arc<Self>) -> Option<Instant> {
        let poll = self.poll.get()?;
        let cap = self.cfg.in_flight;
        let mut s = self.lock();
        let now = Instant::now();
        if s.depth_counted_at.is_none_or(|t| now >= t + DEPTH_EVERY) {
            s.depth_counted_at = Some(now);
            let depth = s.due_count(now) as u64;
            self.depth.store(depth, Ordering::Relaxed);
            crate::metrics::global().set_status_poll_queue_depth(depth);
        }
        loop {
            // A token's end check that is due goes first, in place of the session's place in the queues.
            if s.in_flight[1] < cap {
                if let Some((key, id)) = s.ends.first_key_value().map(|(k, v)| (*k, v.clone())) {
                    if key.due <= now {
                        s.ends.remove(&key);
                        let queued = s.entries.get_mut(&id).is_some_and(|e| {
                            e.end = None;
                            matches!(e.phase, Phase::Queued { .. })
                        });
                        if queued {
                            s.dequeue(&id);
                            self.start(&mut s, poll, id, true);
                        }
                        continue;
                    }
                }
            }
            let urgent_next = (s.in_flight[1] < cap)
                .then(|| {
                    let u = s.urgent.first_key_value().map(|(k, _)| *k);
                    let e = s.ends.first_key_value().map(|(k, _)| *k);
                    u.into_iter().chain(e).min_by_key(|k| k.due)
                })
                .flatten();
            let paused = s.paused_until.filter(|t| *t > now);
            let ordinary_next = (s.in_flight[0] < cap)
                .then(|| s.ordinary.first_key_value().map(|(k, _)| *k))
                .flatten()
                .map(|k| Key {
                    due: paused.map_or(k.due, |p| k.due.max(p)),
                    ..k
                });
            let urgent = match (
                s.urgent.first_key_value().map(|(k, _)| k.due <= now) == Some(true)
                    && s.in_flight[1] < cap,
                ordinary_next,
            ) {
                (true, _) => true,
                (false, Some(o)) if o.due <= now => false,
                _ => {
                    return match (urgent_next, ordinary_next) {
                        (Some(u), Some(o)) => Some(u.due.min(o.due)),
                        (Some(k), None) | (None, Some(k)) => Some(k.due),
                        (None, None) => None,
                    }
                }
            };
            let queue = if urgent {
                &mut s.urgent
            } else {
                &mut s.ordinary
            };
            let Some((_, id)) = queue.pop_first() else {
                continue;
            };
            if let Some(e) = s.entries.get_mut(&id) {
                e.phase = Phase::Idle;
            }
            self.start(&mut s, poll, id, urgent);
        }
    }

    /// Runs the poll of `id` (taken off its queue) in a task of its own.
    fn start(self: &Arc<Self>, s: &mut Sched, poll: &PollFn, id: String, urgent: bool) {
        if let Some(e) = s.entries.get_mut(&id) {
            e.phase = Phase::InFlight;
            if urgent {
                e.hot = e.hot.saturating_sub(1);
            }
        }
        s.in_flight[usize::from(urgent)] += 1;
        self.polls.fetch_add(1, Ordering::Relaxed);
        let running = Running {
            pollers: Arc::downgrade(self),
            id: id.clone(),
            urgent,
            step: None,
        };
        let poll = Arc::clone(poll);
        tokio::spawn(async move {
            let mut running = running;
            running.step = Some(poll(id, urgent).await);
        });
    }

    /// A poll ended with `step`: the session's next deadline, or off the schedule.
    fn finish(&self, id: &str, urgent: bool, step: PollStep) {
        let cfg = self.cfg;
        let mut s = self.lock();
        let slot = &mut s.in_flight[usize::from(urgent)];
        *slot = slot.saturating_sub(1);
        let now = Instant::now();
        let Some(e) = s.entries.get_mut(id) else {
            drop(s);
            self.notify.notify_one();
            return;
        };
        e.phase = Phase::Idle;
        if e.watchers == 0 {
            s.entries.remove(id);
            drop(s);
            self.notify.notify_one();
            return;
        }
        let woken = std::mem::take(&mut e.woken);
        let mut end_at = e.end.map(|k| k.due);
        let next = match step {
            PollStep::Done if woken => Some((now, true)),
            PollStep::Done => None,
            PollStep::Again { changed, ends_in } => {
                e.interval = if changed || woken {
                    cfg.min_interval
                } else {
                    e.interval.mul_f64(1.5).min(cfg.max_interval)
                };
                let (due, jump) = if woken {
                    (now, true)
                } else if e.hot > 0 {
                    (now + jittered(cfg.min_interval, cfg.jitter), true)
                } else {
                    (now + jittered(e.interval, cfg.jitter), false)
                };
                end_at = ends_in.filter(|d| !d.is_zero()).map(|d| now + d);
                Some((due, jump))
            }
            PollStep::Backoff(at_least) => {
                e.interval = e
                    .interval
                    .saturating_mul(2)
                    .max(at_least.unwrap_or_default())
                    .min(cfg.max_interval.saturating_mul(4));
                let interval = e.interval;
                if let Some(wait) = at_least {
                    // The vendor asked everyone to wait: ordinary polls pause too.
                    let until = now + wait.min(cfg.max_interval);
                    s.paused_until = Some(s.paused_until.map_or(until, |p| p.max(until)));
                }
                Some((now + jittered(interval, cfg.jitter), woken))
            }
        };
        match next {
            Some((due, urgent)) => {
                s.enqueue(id, due, urgent);
                s.set_end(id, end_at);
            }
            None => s.set_end(id, None),
        }
        drop(s);
        self.notify.notify_one();
    }
}

/// The dispatcher: runs while the schedule lives.
async fn dispatch(pollers: Weak<Pollers>, notify: Arc<Notify>) {
    loop {
        let notified = notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let next = match pollers.upgrade() {
            Some(p) => p.dispatch_due(),
            None => return,
        };
        match next {
            Some(at) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(at) => {}
                    _ = &mut notified => {}
                }
            }
            None => notified.await,
        }
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
    use crate::domain::calls::in_background;
    use crate::vendors::budget::Budget;

    const AGAIN: PollStep = PollStep::Again {
        changed: false,
        ends_in: None,
    };

    fn counting(steps: Arc<AtomicU64>, step: PollStep) -> PollFn {
        Arc::new(move |_id, _urgent| {
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
            in_flight: 2,
        }
    }

    /// A poll function that takes a slot of `budget` (background unless urgent) and records who was polled when.
    fn budgeted(
        budget: Arc<Budget>,
        log: Arc<Mutex<Vec<(String, Instant, bool)>>>,
        step: PollStep,
    ) -> PollFn {
        Arc::new(move |id, urgent| {
            let budget = Arc::clone(&budget);
            let log = Arc::clone(&log);
            Box::pin(async move {
                if urgent {
                    budget.acquire().await
                } else {
                    in_background(budget.acquire()).await
                }
                log.lock().unwrap().push((id, Instant::now(), urgent));
                step
            })
        })
    }

    #[tokio::test(start_paused = true)]
    async fn many_watchers_share_one_schedule_entry() {
        let p = Arc::new(Pollers::new(cfg(1000)));
        let n = Arc::new(AtomicU64::new(0));
        p.set_poll_fn(counting(Arc::clone(&n), AGAIN));
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
    async fn a_final_session_leaves_the_schedule_and_wake_polls_at_once() {
        let p = Arc::new(Pollers::new(cfg(60_000)));
        let n = Arc::new(AtomicU64::new(0));
        p.set_poll_fn(counting(Arc::clone(&n), AGAIN));
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
            in_flight: 2,
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

    #[tokio::test(start_paused = true)]
    async fn earliest_deadline_first_and_the_budget_is_shared_fairly() {
        // 1000 sessions, 5 polls per second: each is polled about every 200 s, in the order they came.
        let qps = 5.0;
        let sessions = 1000usize;
        let budget = Arc::new(Budget::new(qps));
        let log = Arc::new(Mutex::new(Vec::new()));
        let p = Arc::new(Pollers::new(PollConfig {
            min_interval: Duration::from_secs(1),
            max_interval: Duration::from_secs(10),
            jitter: 0.2,
            in_flight: 5,
        }));
        p.set_poll_fn(budgeted(Arc::clone(&budget), Arc::clone(&log), AGAIN));
        let start = Instant::now();
        for i in 0..sessions {
            p.watch(&format!("s{i:04}"));
        }
        tokio::time::sleep(Duration::from_secs(650)).await;
        let log = log.lock().unwrap().clone();
        // The budget holds: never more than 5 polls in any second.
        for w in log.windows(6) {
            assert!(w[5].1 - w[0].1 >= Duration::from_millis(999), "{:?}", &w);
        }
        let total = log.len() as f64;
        assert!((total - 650.0 * qps).abs() <= 10.0, "{total} polls");
        // The first round goes in arrival order.
        let first: Vec<&str> = log[..sessions].iter().map(|x| x.0.as_str()).collect();
        let mut sorted = first.clone();
        sorted.sort();
        assert_eq!(first, sorted, "earliest deadline first");
        // Every session is polled every N / Q = 200 s, give or take the jitter of its 10 s interval.
        let mut by_id: HashMap<&str, Vec<Instant>> = HashMap::new();
        for (id, at, _) in &log {
            by_id.entry(id.as_str()).or_default().push(*at);
        }
        assert_eq!(by_id.len(), sessions);
        let fair = Duration::from_secs_f64(sessions as f64 / qps);
        let bound = fair + Duration::from_secs(10);
        let mut max_gap = Duration::ZERO;
        for times in by_id.values() {
            assert!(times.len() >= 3, "{times:?}");
            assert!(times[0] - start <= fair + Duration::from_secs(1));
            for pair in times.windows(2) {
                max_gap = max_gap.max(pair[1] - pair[0]);
            }
        }
        assert!(max_gap <= bound, "max gap {max_gap:?} over {bound:?}");
        assert!(p.queue_depth() > 900, "{}", p.queue_depth());
    }

    #[tokio::test(start_paused = true)]
    async fn a_woken_session_jumps_the_queue() {
        let budget = Arc::new(Budget::new(5.0));
        let log = Arc::new(Mutex::new(Vec::new()));
        let p = Arc::new(Pollers::new(PollConfig {
            min_interval: Duration::from_secs(1),
            max_interval: Duration::from_secs(10),
            jitter: 0.2,
            in_flight: 5,
        }));
        p.set_poll_fn(budgeted(Arc::clone(&budget), Arc::clone(&log), AGAIN));
        for i in 0..2000 {
            p.watch(&format!("s{i:04}"));
        }
        tokio::time::sleep(Duration::from_secs(30)).await;
        let woken_at = Instant::now();
        p.wake("s1999");
        tokio::time::sleep(Duration::from_secs(5)).await;
        let log = log.lock().unwrap().clone();
        let polls: Vec<&(String, Instant, bool)> = log.iter().filter(|x| x.0 == "s1999").collect();
        assert!(!polls.is_empty(), "polled after the wake-up");
        let first = polls[0];
        assert!(first.2, "as an urgent poll");
        assert!(
            first.1 - woken_at <= Duration::from_millis(400),
            "within two budget slots: {:?}",
            first.1 - woken_at
        );
        // It stays hot for a few polls at the minimum interval.
        assert!(polls.len() >= 3, "{polls:?}");
        assert!(polls[1].1 - polls[0].1 <= Duration::from_millis(1500));
        assert!(polls.iter().all(|x| x.2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_token_about_to_end_jumps_ahead_at_its_end() {
        let budget = Arc::new(Budget::new(5.0));
        let log = Arc::new(Mutex::new(Vec::new()));
        let p = Arc::new(Pollers::new(PollConfig {
            min_interval: Duration::from_secs(1),
            max_interval: Duration::from_secs(10),
            jitter: 0.0,
            in_flight: 5,
        }));
        let start = Instant::now();
        let token_end = start + Duration::from_secs(60);
        let inner = budgeted(Arc::clone(&budget), Arc::clone(&log), AGAIN);
        let poll: PollFn = Arc::new(move |id: String, urgent| {
            let inner = Arc::clone(&inner);
            Box::pin(async move {
                let step = inner(id.clone(), urgent).await;
                if id != "ending" {
                    return step;
                }
                if Instant::now() >= token_end {
                    // The last check decides (EXPIRED or final).
                    return PollStep::Done;
                }
                PollStep::Again {
                    changed: false,
                    ends_in: Some(token_end - Instant::now()),
                }
            })
        });
        p.set_poll_fn(poll);
        p.watch("ending");
        for i in 0..2000 {
            p.watch(&format!("s{i:04}"));
        }
        tokio::time::sleep(Duration::from_secs(70)).await;
        let seen: Vec<(Instant, bool)> = log
            .lock()
            .unwrap()
            .iter()
            .filter(|x| x.0 == "ending")
            .map(|x| (x.1, x.2))
            .collect();
        // Polled first (it came first), not again in its ordinary turn (the queue is 400 s deep), but at its
        // token's end, urgently; then it leaves the schedule.
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert!(!seen[0].1 && seen[1].1, "{seen:?}");
        let at = seen[1].0 - start;
        assert!(
            at >= Duration::from_secs(60) && at <= Duration::from_millis(60_500),
            "{at:?}"
        );
        assert!(!p.is_polling("ending"));
    }

    #[test]
    fn jitter_stays_in_bounds() {
        for _ in 0..1000 {
            let d = jittered(Duration::from_millis(1000), 0.2);
            assert!(d >= Duration::from_millis(800) && d <= Duration::from_millis(1200));
        }
    }
}
