//! What the domain learns about the vendor calls an adapter operation made, without naming a vendor: the domain
//! opens a scope around an adapter call, and the vendor HTTP layer reports into it.
//!
//! Two task-local scopes: [`collect_calls`] gathers each HTTP call made inside it (endpoint, outcome, latency) for
//! the session's event log, and [`in_background`] marks the calls made inside it as background work, which a
//! vendor's request budget serves after calls someone waits for.

use std::future::Future;
use std::sync::Mutex;

use super::events::CallRecord;

tokio::task_local! {
    /// The calls made inside [`collect_calls`].
    static CALLS: Mutex<Vec<CallRecord>>;
    /// Set inside [`in_background`].
    static BACKGROUND: ();
}

/// Calls kept per collection at most (an adapter operation makes a handful).
const MAX_COLLECTED: usize = 64;

/// Records one vendor call in the enclosing [`collect_calls`], if any.
pub fn record_call(call: CallRecord) {
    let _ = CALLS.try_with(|calls| {
        let mut calls = calls.lock().unwrap_or_else(|p| p.into_inner());
        if calls.len() < MAX_COLLECTED {
            calls.push(call);
        }
    });
}

/// Runs `f` and returns, with its output, the vendor calls recorded inside it with [`record_call`].
pub async fn collect_calls<F: Future>(f: F) -> (F::Output, Vec<CallRecord>) {
    CALLS
        .scope(Mutex::new(Vec::new()), async move {
            let out = f.await;
            let calls = CALLS
                .try_with(|c| std::mem::take(&mut *c.lock().unwrap_or_else(|p| p.into_inner())))
                .unwrap_or_default();
            (out, calls)
        })
        .await
}

/// Runs `f` with its budgeted vendor calls in the background class.
pub async fn in_background<F: Future>(f: F) -> F::Output {
    BACKGROUND.scope((), f).await
}

/// Whether the caller runs inside [`in_background`].
pub fn is_background() -> bool {
    BACKGROUND.try_with(|_| ()).is_ok()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn call(endpoint: &'static str) -> CallRecord {
        CallRecord {
            endpoint,
            outcome: "ok",
            latency: Duration::from_millis(1),
            at_ms: 0,
        }
    }

    #[tokio::test]
    async fn calls_are_collected_only_inside_their_scope_and_bounded() {
        record_call(call("outside"));
        let ((), calls) = collect_calls(async {
            for _ in 0..MAX_COLLECTED + 5 {
                record_call(call("inside"));
            }
        })
        .await;
        assert_eq!(calls.len(), MAX_COLLECTED);
        assert!(calls.iter().all(|c| c.endpoint == "inside"));
    }

    #[tokio::test]
    async fn background_is_set_only_inside_its_scope() {
        assert!(!is_background());
        assert!(in_background(async { is_background() }).await);
        assert!(!is_background());
    }
}
