//! Session change fan-out and expiry.
//!
//! [`Hub`] delivers every stored change of a session to all of its watchers through one broadcast channel per
//! watched session, so watchers never poll anything themselves.

pub mod expiry;
pub mod poller;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

use crate::domain::Session;

/// Buffered changes per session before a slow watcher is told it lagged (it then reloads the latest snapshot).
const CHANNEL_CAPACITY: usize = 64;

/// Fan-out of session changes to watchers.
#[derive(Default)]
pub struct Hub {
    channels: Mutex<HashMap<String, broadcast::Sender<Arc<Session>>>>,
}

impl Hub {
    /// A new, empty hub.
    pub fn new() -> Self {
        Self::default()
    }

    /// Subscribes to changes of session `id` (subscribe before reading the snapshot, so no change is missed).
    pub fn subscribe(&self, id: &str) -> broadcast::Receiver<Arc<Session>> {
        let mut map = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(id.to_owned())
            .or_insert_with(|| broadcast::channel(CHANNEL_CAPACITY).0)
            .subscribe()
    }

    /// Publishes a stored change to the session's watchers, if it has any.
    pub fn publish(&self, session: &Session) {
        let mut map = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = map.get(&session.id) {
            if tx.send(Arc::new(session.clone())).is_err() || session.state.is_final() {
                // Nobody listens any more, or nothing will follow a final state.
                map.remove(&session.id);
            }
        }
    }

    /// Drops the channel of a session nobody watches any more.
    pub fn release(&self, id: &str) {
        let mut map = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if map.get(id).is_some_and(|tx| tx.receiver_count() == 0) {
            map.remove(id);
        }
    }

    /// Number of sessions with at least one channel (for metrics and tests).
    pub fn watched_sessions(&self) -> usize {
        self.channels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }
}
