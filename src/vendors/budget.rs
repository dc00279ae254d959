//! A request budget per vendor: calls that are not part of a user's intent (status polls, result queries) wait for
//! a slot so that together they never exceed the configured rate.
//!
//! Two classes share the slots. A call made for someone who waits now (GetResult, the browser coming back, the
//! sweeper's last check, a poll the status scheduler marked urgent) reserves the earliest free slot. A background
//! poll (one the status scheduler dispatched in its ordinary turn, run inside [`crate::domain::calls::in_background`]) takes a slot only
//! when no urgent call has reserved it; while urgent calls keep coming, every [`BACKGROUND_SHARE`]th slot is still
//! left to a waiting background poll, so polling never starves.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// While urgent calls wait, one slot in this many goes to a waiting background call.
pub const BACKGROUND_SHARE: u32 = 4;

use crate::domain::calls::is_background;

#[derive(Debug, Default)]
struct State {
    /// The earliest slot nobody has reserved (`None`: now).
    next: Option<Instant>,
    /// A slot kept for a background call.
    kept: Option<Instant>,
    /// Background calls waiting.
    background_waiting: usize,
    /// Urgent slots handed out in a row while background calls waited.
    urgent_streak: u32,
}

/// Spaces calls at least `1 / qps` apart, across every task that shares it.
#[derive(Debug)]
pub struct Budget {
    spacing: Duration,
    state: Mutex<State>,
}

/// Counts a waiting background call while it lives.
struct Waiting<'a>(&'a Budget);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let mut s = self.0.lock();
        s.background_waiting = s.background_waiting.saturating_sub(1);
        if s.background_waiting == 0 {
            // A kept slot nobody is left to take is not kept for later.
            s.kept = None;
        }
    }
}

impl Budget {
    /// A budget of `qps` calls per second (at least 0.01).
    pub fn new(qps: f64) -> Self {
        let qps = if qps.is_finite() { qps.max(0.01) } else { 1.0 };
        Self {
            spacing: Duration::from_secs_f64(1.0 / qps),
            state: Mutex::new(State::default()),
        }
    }

    /// The spacing between two calls.
    pub fn spacing(&self) -> Duration {
        self.spacing
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for a slot and takes it: a background one inside [`crate::domain::calls::in_background`], else an urgent one.
    pub async fn acquire(&self) {
        if is_background() {
            self.acquire_background().await
        } else {
            self.acquire_urgent().await
        }
    }

    async fn acquire_urgent(&self) {
        let slot = {
            let mut s = self.lock();
            let now = Instant::now();
            let mut slot = s.next.filter(|t| *t > now).unwrap_or(now);
            if s.background_waiting > 0 && s.kept.is_none() {
                s.urgent_streak += 1;
                if s.urgent_streak >= BACKGROUND_SHARE {
                    // Leave this slot to the background call that has waited longest.
                    s.kept = Some(slot);
                    s.urgent_streak = 0;
                    slot += self.spacing;
                }
            }
            s.next = Some(slot + self.spacing);
            slot
        };
        tokio::time::sleep_until(slot).await;
    }

    async fn acquire_background(&self) {
        self.lock().background_waiting += 1;
        let _waiting = Waiting(self);
        loop {
            let wait = {
                let mut s = self.lock();
                let now = Instant::now();
                match (s.kept, s.next) {
                    (Some(kept), _) if kept <= now => {
                        s.kept = None;
                        return;
                    }
                    (Some(kept), _) => kept,
                    (None, next) if next.is_none_or(|t| t <= now) => {
                        s.next = Some(now + self.spacing);
                        s.urgent_streak = 0;
                        return;
                    }
                    (None, next) => next.unwrap_or(now),
                }
            };
            // Urgent calls may reserve the slot meanwhile; then look again.
            tokio::time::sleep_until(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::domain::calls::in_background;

    async fn times_of(budget: &Arc<Budget>, n: usize, background: bool) -> Vec<Duration> {
        let start = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..n {
            let b = Arc::clone(budget);
            tasks.push(tokio::spawn(async move {
                if background {
                    in_background(b.acquire()).await
                } else {
                    b.acquire().await
                }
                Instant::now() - start
            }));
        }
        let mut times = Vec::new();
        for t in tasks {
            times.push(t.await.unwrap());
        }
        times.sort();
        times
    }

    fn spaced(times: &[Duration], at_least: Duration) {
        for pair in times.windows(2) {
            assert!(pair[1] - pair[0] >= at_least, "{times:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn calls_never_exceed_the_rate() {
        let budget = Arc::new(Budget::new(5.0));
        let times = times_of(&budget, 10, false).await;
        spaced(&times, Duration::from_millis(200));
        assert!(times[9] >= Duration::from_millis(1800));
        let budget = Arc::new(Budget::new(5.0));
        let times = times_of(&budget, 10, true).await;
        spaced(&times, Duration::from_millis(200));
    }

    #[tokio::test(start_paused = true)]
    async fn urgent_calls_go_first_but_background_ones_keep_a_share() {
        let budget = Arc::new(Budget::new(10.0));
        let start = Instant::now();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        // An urgent call takes the first slot, a background call waits, then urgent calls keep arriving faster
        // than the budget.
        let b = Arc::clone(&budget);
        let t = tx.clone();
        tokio::spawn(async move {
            b.acquire().await;
            let _ = t.send(("urgent", Instant::now() - start));
        });
        tokio::task::yield_now().await;
        let b = Arc::clone(&budget);
        let t = tx.clone();
        tokio::spawn(async move {
            in_background(b.acquire()).await;
            let _ = t.send(("background", Instant::now() - start));
        });
        tokio::task::yield_now().await;
        for _ in 0..12 {
            let b = Arc::clone(&budget);
            let t = tx.clone();
            tokio::spawn(async move {
                b.acquire().await;
                let _ = t.send(("urgent", Instant::now() - start));
            });
        }
        drop(tx);
        let mut order = Vec::new();
        while let Some(x) = rx.recv().await {
            order.push(x);
        }
        let times: Vec<Duration> = order.iter().map(|x| x.1).collect();
        spaced(&times, Duration::from_millis(100));
        let at = order.iter().position(|x| x.0 == "background").unwrap();
        // Three urgent slots jump ahead of the waiting background call; the fourth is left to it.
        assert_eq!(at, BACKGROUND_SHARE as usize, "{order:?}");
    }
}
