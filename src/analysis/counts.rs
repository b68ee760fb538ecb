//! Attempt counts by outcome: the unit every summary, timeline bucket and
//! report column adds up.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::outcome::{Column, Outcome};

/// Attempt counts by outcome.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct OutcomeCounts {
    pub attempts: u64,
    /// Only outcomes that occurred.
    #[serde(flatten)]
    by_outcome: BTreeMap<Outcome, u64>,
}

impl OutcomeCounts {
    pub(crate) fn add(&mut self, outcome: Outcome) {
        self.attempts += 1;
        *self.by_outcome.entry(outcome).or_default() += 1;
    }

    pub(crate) fn merge(&mut self, other: &OutcomeCounts) {
        self.attempts += other.attempts;
        for (o, n) in &other.by_outcome {
            *self.by_outcome.entry(*o).or_default() += n;
        }
    }

    pub fn get(&self, outcome: Outcome) -> u64 {
        self.by_outcome.get(&outcome).copied().unwrap_or(0)
    }

    /// The attempts counted in one column of the per-client table.
    pub fn column(&self, column: Column) -> u64 {
        self.by_outcome.iter().filter(|(o, _)| o.column() == column).map(|(_, n)| n).sum()
    }

    pub fn failures(&self) -> u64 {
        self.by_outcome.iter().filter(|(o, _)| o.is_failure()).map(|(_, n)| n).sum()
    }

    /// The outcomes that occurred.
    pub fn outcomes(&self) -> impl Iterator<Item = Outcome> + '_ {
        self.by_outcome.keys().copied()
    }
}
