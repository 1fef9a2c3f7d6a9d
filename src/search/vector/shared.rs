//! The vector index as the service shares it.

use std::sync::RwLock;

use super::{Language, VectorHit, VectorIndex};

/// The vector index as the service shares it. A search holds the read side for one scan, an
/// import the write side for one in-memory update, a reindex for one swap — never across I/O
/// or a model call, and never twice on one thread (every method takes and releases it).
/// `None` inside: no dense leg (no model, or a model conflict).
#[derive(Debug, Default)]
pub struct SharedVectors(RwLock<Option<VectorIndex>>);

impl SharedVectors {
    pub fn new(index: Option<VectorIndex>) -> SharedVectors {
        SharedVectors(RwLock::new(index))
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Option<VectorIndex>> {
        self.0.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn is_present(&self) -> bool {
        self.read().is_some()
    }

    /// [`VectorIndex::search`], or `None` without a vector index.
    pub fn search(
        &self,
        query: &[f32],
        language: Language,
        groups: &[String],
        limit: usize,
    ) -> Option<Vec<VectorHit>> {
        self.read().as_ref().map(|index| index.search(query, language, groups, limit))
    }

    /// Reads the index (if any) under the read side.
    pub fn inspect<R>(&self, f: impl FnOnce(Option<&VectorIndex>) -> R) -> R {
        f(self.read().as_ref())
    }

    /// Changes the index in memory under the write side; nothing happens without one.
    pub fn update(&self, f: impl FnOnce(&mut VectorIndex)) {
        if let Some(index) = self.0.write().unwrap_or_else(std::sync::PoisonError::into_inner).as_mut() {
            f(index);
        }
    }

    /// Swaps in an index built elsewhere (or none).
    pub fn replace(&self, index: Option<VectorIndex>) {
        *self.0.write().unwrap_or_else(std::sync::PoisonError::into_inner) = index;
    }
}
