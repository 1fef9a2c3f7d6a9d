//! The full-text index as the app holds it: swapped whole by a rebuild, and the store revision
//! it reflects exactly, which is what a commit records and what a replica follows the store from.

use std::sync::atomic::{AtomicU64, Ordering};

use super::lexical::{IndexState, LexicalIndex};
use crate::store::Store;

/// The full-text index as the service shares it: a reader takes the current index (one `Arc`
/// clone under a lock held for no longer), a rebuild swaps in a new one; searches already
/// running finish on the old one.
#[derive(Debug)]
pub struct SharedLexical {
    current: std::sync::RwLock<std::sync::Arc<LexicalIndex>>,
    /// The store revision the indexes reflect exactly: every change up to it is in them. Local
    /// writes advance it when they follow on from it; changes other processes made are applied
    /// in order by [`crate::App::follow`].
    applied: AtomicU64,
}

impl SharedLexical {
    pub fn new(index: LexicalIndex) -> SharedLexical {
        let applied = AtomicU64::new(recorded_revision(&index));
        SharedLexical { current: std::sync::RwLock::new(std::sync::Arc::new(index)), applied }
    }

    pub fn current(&self) -> std::sync::Arc<LexicalIndex> {
        self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Swaps in a rebuilt index, which reflects the revision its commit recorded.
    pub fn replace(&self, index: LexicalIndex) {
        self.applied.store(recorded_revision(&index), Ordering::SeqCst);
        *self.current.write().unwrap_or_else(std::sync::PoisonError::into_inner) = std::sync::Arc::new(index);
    }

    /// The store revision the indexes reflect exactly.
    pub fn applied(&self) -> u64 {
        self.applied.load(Ordering::SeqCst)
    }

    /// Records that the store change made at `revision` is in the indexes: the indexes now
    /// reflect it exactly if it follows on from what they reflected (no other process wrote in
    /// between); otherwise what came between is still to be applied, and the mark stays.
    pub fn wrote(&self, revision: u64) {
        let _ = self.applied.compare_exchange(
            revision.saturating_sub(1),
            revision,
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
    }

    /// Records that every change up to `revision` is in the indexes.
    pub fn caught_up(&self, revision: u64) {
        self.applied.fetch_max(revision, Ordering::SeqCst);
    }

    /// What a commit records: the store's identity and the revision the indexes reflect.
    pub fn state(&self, store: &Store) -> Result<IndexState, crate::Error> {
        Ok(IndexState { store_revision: self.applied(), ..IndexState::of(store)? })
    }
}

fn recorded_revision(index: &LexicalIndex) -> u64 {
    index.state().ok().flatten().map_or(0, |state| state.store_revision)
}
