//! What this process last wrote of each session, bounded: the first read of a compare-and-set update
//! ([`super::SessionStore::cached`]). An entry can be stale when another process or replica changed the session
//! since; the update's version check then fails and the caller reads the store. Only sessions still in progress are
//! kept: a final one is forgotten.
//!
//! When the store is this process's alone (SQLite, held under its lock file: see
//! [`super::sqlite::SqliteStore::open_exclusive`]) nobody else writes it, so what this process wrote and read is what
//! the store holds: the cache is then *authoritative*. It also keeps final sessions and each session's
//! [`EventsSummary`], and reads are served from it (GetResult without a store round trip). Every write of a session or
//! its events replaces or drops its entries after the write committed, and a read fills the cache only when no write
//! happened since the read began (a generation counter): a read that raced a write never leaves the older copy.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::sync::Mutex;

use crate::domain::events::EventsSummary;
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
    /// Event counts per session (authoritative only; bounded by [`MAX_ENTRIES`]).
    summaries: HashMap<String, EventsSummary>,
    /// Bumped by every change of what the store holds; a read fills the cache only if it is unchanged.
    generation: u64,
    /// The lock file held while the cache is authoritative (`None`: it is not).
    owner: Option<File>,
}

/// Where a read began (see [`Recent::generation`]).
#[derive(Clone, Copy)]
pub(super) struct ReadMark(u64);

impl Recent {
    /// Makes the cache authoritative while `lock` (this process's lock on the store) is held.
    pub(super) fn own(&self, lock: File) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.owner = Some(lock);
        }
    }

    /// Gives the store up (the service stopped): the lock is released and the cache is advisory again.
    pub(super) fn release(&self) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.owner = None;
            inner.generation += 1;
            inner.summaries.clear();
            let finals: Vec<String> = inner
                .entries
                .iter()
                .filter(|(_, (s, _, _))| s.state.is_final())
                .map(|(id, _)| id.clone())
                .collect();
            for id in finals {
                inner.remove(&id);
            }
        }
    }

    /// Keeps `session` as written (`size`: its sealed record's length), after its write committed. Its event summary
    /// is dropped (the write may have appended events).
    pub(super) fn put(&self, session: &Session, size: usize) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        inner.generation += 1;
        inner.summaries.remove(&session.id);
        // A write that committed before another one of the same session may report after it: keep the later.
        if inner
            .entries
            .get(&session.id)
            .is_some_and(|(kept, _, _)| kept.version > session.version)
        {
            return;
        }
        inner.insert(session, size);
    }

    /// The session as this process last wrote it, if kept.
    pub(super) fn get(&self, id: &str) -> Option<Session> {
        let inner = self.inner.lock().ok()?;
        inner.entries.get(id).map(|(s, _, _)| s.clone())
    }

    /// Forgets a session (its stored version is not the one kept, or it is gone) and its event summary.
    pub(super) fn forget(&self, id: &str) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.generation += 1;
            inner.summaries.remove(id);
            inner.remove(id);
        }
    }

    /// Forgets a session's event summary (events were appended).
    pub(super) fn forget_summary(&self, id: &str) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.generation += 1;
            inner.summaries.remove(id);
        }
    }

    /// Where a read of the store begins; `None` when the cache is not authoritative (the read then fills nothing).
    pub(super) fn mark(&self) -> Option<ReadMark> {
        let inner = self.inner.lock().ok()?;
        inner.owner.as_ref().map(|_| ReadMark(inner.generation))
    }

    /// The session as the store holds it, when the cache is authoritative and keeps it.
    pub(super) fn read(&self, id: &str) -> Option<Session> {
        let inner = self.inner.lock().ok()?;
        inner.owner.as_ref()?;
        inner.entries.get(id).map(|(s, _, _)| s.clone())
    }

    /// The session's event summary as the store holds it, when the cache is authoritative and keeps it.
    pub(super) fn read_summary(&self, id: &str) -> Option<EventsSummary> {
        let inner = self.inner.lock().ok()?;
        inner.owner.as_ref()?;
        inner.summaries.get(id).cloned()
    }

    /// Keeps what a read that began at `mark` found, unless the store changed since.
    pub(super) fn fill(&self, mark: ReadMark, session: &Session, size: usize) {
        if let Ok(mut inner) = self.inner.lock() {
            if inner.owner.is_some() && inner.generation == mark.0 {
                inner.insert(session, size);
            }
        }
    }

    /// Keeps the event summary a read that began at `mark` found, unless the store changed since.
    pub(super) fn fill_summary(&self, mark: ReadMark, id: &str, summary: &EventsSummary) {
        if let Ok(mut inner) = self.inner.lock() {
            if inner.owner.is_some() && inner.generation == mark.0 {
                if inner.summaries.len() >= MAX_ENTRIES {
                    // Rarely reached (summaries are dropped with every write); start over rather than track age.
                    inner.summaries.clear();
                }
                inner.summaries.insert(id.to_owned(), summary.clone());
            }
        }
    }
}

impl Inner {
    fn insert(&mut self, session: &Session, size: usize) {
        // A final session is seldom written again; one that large is not worth its memory. When the cache serves
        // reads, final sessions are what GetResult reads most, so they are kept.
        if size > MAX_ENTRY_BYTES || (session.state.is_final() && self.owner.is_none()) {
            self.remove(&session.id);
            return;
        }
        self.writes += 1;
        let n = self.writes;
        if let Some((_, old, _)) = self
            .entries
            .insert(session.id.clone(), (session.clone(), size, n))
        {
            self.bytes -= old;
        }
        self.bytes += size;
        self.order.push_back((session.id.clone(), n));
        while self.entries.len() > MAX_ENTRIES
            || self.bytes > MAX_BYTES
            || self.order.len() > 2 * MAX_ENTRIES
        {
            let Some((id, queued)) = self.order.pop_front() else {
                break;
            };
            if self
                .entries
                .get(&id)
                .is_some_and(|(_, _, at)| *at == queued)
            {
                self.remove(&id);
            }
        }
    }

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

    fn final_session(id: &str, version: i64) -> Session {
        let mut s = session(id, version);
        s.state = crate::domain::State::Verified;
        s
    }

    fn lock_file() -> File {
        tempfile::tempfile().unwrap()
    }

    #[test]
    fn serves_reads_only_while_it_owns_the_store() {
        let recent = Recent::default();
        recent.put(&session("a", 1), 10);
        // Advisory: what was written is there for updates, but reads are not served and final sessions are not kept.
        assert!(recent.get("a").is_some());
        assert!(recent.read("a").is_none());
        assert!(recent.mark().is_none());
        recent.put(&final_session("a", 2), 10);
        assert!(recent.get("a").is_none());

        recent.own(lock_file());
        recent.put(&final_session("a", 3), 10);
        assert_eq!(recent.read("a").map(|s| s.version), Some(3));
        // A late report of an older write does not replace the later one.
        recent.put(&session("a", 2), 10);
        assert_eq!(recent.read("a").map(|s| s.version), Some(3));

        recent.release();
        assert!(recent.read("a").is_none());
        assert!(
            recent.get("a").is_none(),
            "final sessions are dropped on release"
        );
    }

    #[test]
    fn a_read_that_raced_a_write_fills_nothing() {
        let recent = Recent::default();
        recent.own(lock_file());
        let summary = EventsSummary {
            events: 2,
            ..Default::default()
        };
        // No write since the read began: filled.
        let mark = recent.mark().unwrap();
        recent.fill(mark, &final_session("a", 1), 10);
        recent.fill_summary(mark, "a", &summary);
        assert_eq!(recent.read("a").map(|s| s.version), Some(1));
        assert_eq!(recent.read_summary("a"), Some(summary.clone()));

        // A write (of any session) after the read began: what the read found may be older, so it is not kept.
        let mark = recent.mark().unwrap();
        recent.put(&session("b", 1), 10);
        recent.fill(mark, &final_session("c", 1), 10);
        recent.fill_summary(mark, "c", &summary);
        assert!(recent.read("c").is_none());
        assert!(recent.read_summary("c").is_none());

        // Appended events drop the summary; a forgotten session drops both.
        recent.forget_summary("a");
        assert!(recent.read_summary("a").is_none());
        assert!(recent.read("a").is_some());
        let mark = recent.mark().unwrap();
        recent.fill_summary(mark, "a", &summary);
        recent.forget("a");
        assert!(recent.read("a").is_none());
        assert!(recent.read_summary("a").is_none());

        // A write drops the session's summary (the write may have appended events).
        let mark = recent.mark().unwrap();
        recent.fill_summary(mark, "b", &summary);
        recent.put(&session("b", 2), 10);
        assert!(recent.read_summary("b").is_none());
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
