//! The writing side of the outbox, shared by the runs of this process and its poster.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use deploy_core::Clock;

use crate::notify::ChatNotifier;
use crate::store::{LaneKey, Store};

/// Lanes written in this process, for its poster to send at once.
#[derive(Debug, Default)]
pub(super) struct Waker {
    pub(super) notify: tokio::sync::Notify,
    hinted: Mutex<BTreeSet<LaneKey>>,
}

impl Waker {
    pub(super) fn take(&self) -> BTreeSet<LaneKey> {
        std::mem::take(&mut *self.hinted.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// The writing side of the outbox: the store, the clock entries are stamped with, the chat
/// notifier (to know which chat targets it handles) and the wake-up of this process's poster.
#[derive(Clone)]
pub struct Outbox {
    /// Where entries are written.
    pub store: Arc<dyn Store>,
    /// The chat service (entries are written only for chat targets it handles).
    pub notifier: Arc<dyn ChatNotifier>,
    /// Where `written_at` comes from.
    pub clock: Arc<dyn Clock>,
    pub(super) waker: Arc<Waker>,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox").finish_non_exhaustive()
    }
}

impl Outbox {
    /// An outbox over `store`; a [`Poster`](super::Poster) built from it is woken by its writes.
    pub fn new(
        store: Arc<dyn Store>,
        notifier: Arc<dyn ChatNotifier>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            store,
            notifier,
            clock,
            waker: Arc::default(),
        }
    }

    /// The same outbox with another notifier (the wake-up stays shared).
    #[must_use]
    pub fn with_notifier(&self, notifier: Arc<dyn ChatNotifier>) -> Self {
        Self {
            notifier,
            ..self.clone()
        }
    }

    /// Tells this process's poster that `lanes` have new entries.
    pub fn wake(&self, lanes: impl IntoIterator<Item = LaneKey>) {
        self.waker
            .hinted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(lanes);
        self.waker.notify.notify_one();
    }
}
