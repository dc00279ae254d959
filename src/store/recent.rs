//! What this process last wrote of each session, bounded: the first read of a compare-and-set update
//! ([`super::SessionStore::cached`]). An entry can be stale when another process or replica changed the session
//! since; the update's version check then fails and the caller reads the store. Nothing else reads it. Only
//! sessions still in progress are kept: a final one is forgotten.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use crate::domain::Session;

/// Most sessions kept.
const MAX_ENTRIES: usize = 4096;
/// Most bytes of sealed records kept (an estimate of what the entries hold).
const MAX_BYTES: usize = 32 << 20;
/// Records larger than this (sessions holding large images) are not kept.
const MAX_ENTRY_BYTES: usize = 1 << 20;

/// The cache: entries by id, and ids oldest first (an id written again moves to the back lazily: its old
/// position is skipped on eviction).
#[derive(Default)]
pub(super) struct Recent {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Session, its size estimate, and the write number that stored it.
    entries: HashMap<String, (Session, usize, u64)>,
    /// Ids with the write number that queued them, oldest first.
    order: VecDeque<(String, u64)>,
    bytes: usize,
    writes: u64,
}

impl Recent {
    /// Keeps `session` as written (`size`: its sealed record's length).
    pub(super) fn put(&self, session: &Session, size: usize) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        // A final session is seldom written again; one that large is not worth its memory.
        if size > MAX_ENTRY_BYTES || session.state.is_final() {
            inner.remove(&session.id);
            return;
        }
        inner.writes += 1;
        let n = inner.writes;
        if let Some((_, old, _)) = inner
            .entries
            .insert(session.id.clone(), (session.clone(), size, n))
        {
            inner.bytes -= old;
        }
        inner.bytes += size;
        inner.order.push_back((session.id.clone(), n));
        while inner.entries.len() > MAX_ENTRIES
            || inner.bytes > MAX_BYTES
            || inner.order.len() > 2 * MAX_ENTRIES
        {
            let Some((id, queued)) = inner.order.pop_front() else {
                break;
            };
            if inner
                .entries
                .get(&id)
                .is_some_and(|(_, _, at)| *at == queued)
            {
                inner.remove(&id);
            }
        }
    }

    /// The session as this process last wrote it, if kept.
    pub(super) fn get(&self, id: &str) -> Option<Session> {
        let inner = self.inner.lock().ok()?;
        inner.entries.get(id).map(|(s, _, _)| s.clone())
    }

    /// Forgets a session (its stored version is not the one kept, or it is gone).
    pub(super) fn forget(&self, id: &str) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.remove(id);
        }
    }
}

impl Inner {
    fn remove(&mut self, id: &str) {
        if let Some((_, size, _)) = self.entries.remove(id) {
            self.bytes -= size;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(id: &str, version: i64) -> Session {
        let mut s = crate::domain::state::tests_support::blank_session(id);
        s.version = version;
        s
    }

    #[test]
    fn keeps_the_latest_write_and_stays_bounded() {
        let recent = Recent::default();
        recent.put(&session("a", 1), 10);
        recent.put(&session("a", 2), 10);
        assert_eq!(recent.get("a").map(|s| s.version), Some(2));
        recent.forget("a");
        assert!(recent.get("a").is_none());
        // Too large: not kept, and an older entry of the same id is dropped.
        recent.put(&session("b", 1), 10);
        recent.put(&session("b", 2), MAX_ENTRY_BYTES + 1);
        assert!(recent.get("b").is_none());
        for i in 0..(MAX_ENTRIES + 10) {
            recent.put(&session(&format!("s{i}"), 1), 1);
        }
        let inner = recent.inner.lock().unwrap();
        assert_eq!(inner.entries.len(), MAX_ENTRIES);
        assert!(inner.order.len() <= 2 * MAX_ENTRIES);
        assert!(!inner.entries.contains_key("s0"));
        assert!(inner.entries.contains_key(&format!("s{}", MAX_ENTRIES + 9)));
        drop(inner);
        for i in 0..40 {
            recent.put(&session(&format!("big{i}"), 1), MAX_ENTRY_BYTES);
        }
        assert!(recent.inner.lock().unwrap().bytes <= MAX_BYTES);
    }
}
