//! The problem list the validation steps share: every error found so far,
//! in the order found, and the keys that failed on their own, so that a key
//! referring to a broken one is not reported again (no cascades).

use std::collections::HashSet;

use crate::error::TopologyError as E;

/// Errors found so far and the keys they broke.
#[derive(Debug, Default)]
pub(super) struct Problems {
    errs: Vec<E>,
    /// Keys that failed on their own: references to them are not reported again.
    broken: HashSet<String>,
}

impl Problems {
    /// Record `e`.
    pub(super) fn push(&mut self, e: E) {
        self.errs.push(e);
    }

    /// Record an [`E::InvalidValue`] of `field` in `key`.
    pub(super) fn invalid(&mut self, key: &str, field: &str, message: impl Into<String>) {
        self.push(E::InvalidValue {
            key: key.to_owned(),
            field: field.to_owned(),
            message: message.into(),
        });
    }

    /// Record `e` unless it only repeats that `referenced` is itself broken.
    pub(super) fn push_ref(&mut self, referenced: &str, e: E) {
        if !self.broken.contains(referenced) {
            self.push(e);
        }
    }

    /// Mark `key` as failed on its own.
    pub(super) fn mark_broken(&mut self, key: String) {
        self.broken.insert(key);
    }

    /// Whether `key` failed on its own.
    pub(super) fn is_broken(&self, key: &str) -> bool {
        self.broken.contains(key)
    }

    /// Whether some key starting with `prefix` (`units/`) failed on its own.
    pub(super) fn any_broken_under(&self, prefix: &str) -> bool {
        self.broken.iter().any(|k| k.starts_with(prefix))
    }

    /// How many errors were recorded (to tell whether a step added some).
    pub(super) fn count(&self) -> usize {
        self.errs.len()
    }

    /// No error so far.
    pub(super) fn is_empty(&self) -> bool {
        self.errs.is_empty()
    }

    /// The errors, in the order found.
    pub(super) fn into_errors(self) -> Vec<E> {
        self.errs
    }
}
