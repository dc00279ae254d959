//! A request budget per vendor: calls that are not part of a user's intent (status polls, result queries) wait for
//! a slot so that together they never exceed the configured rate.

use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

/// Spaces calls at least `1 / qps` apart, across every task that shares it.
#[derive(Debug)]
pub struct Budget {
    spacing: Duration,
    next: Mutex<Option<Instant>>,
}

impl Budget {
    /// A budget of `qps` calls per second (at least 0.01).
    pub fn new(qps: f64) -> Self {
        let qps = if qps.is_finite() { qps.max(0.01) } else { 1.0 };
        Self {
            spacing: Duration::from_secs_f64(1.0 / qps),
            next: Mutex::new(None),
        }
    }

    /// The spacing between two calls.
    pub fn spacing(&self) -> Duration {
        self.spacing
    }

    /// Waits for the next free slot and takes it.
    pub async fn acquire(&self) {
        let slot = {
            let mut next = self.next.lock().await;
            let now = Instant::now();
            let slot = match *next {
                Some(t) if t > now => t,
                _ => now,
            };
            *next = Some(slot + self.spacing);
            slot
        };
        tokio::time::sleep_until(slot).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn calls_never_exceed_the_rate() {
        let budget = Arc::new(Budget::new(5.0));
        let start = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..10 {
            let b = Arc::clone(&budget);
            tasks.push(tokio::spawn(async move {
                b.acquire().await;
                Instant::now()
            }));
        }
        let mut times = Vec::new();
        for t in tasks {
            times.push(t.await.unwrap() - start);
        }
        times.sort();
        for pair in times.windows(2) {
            assert!(pair[1] - pair[0] >= Duration::from_millis(200), "{times:?}");
        }
        assert!(times[9] >= Duration::from_millis(1800));
    }
}
