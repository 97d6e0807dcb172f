//! The record-id postings of the partition being written: which events carry each record id.
//!
//! An event carries tens to thousands of record ids, so a hash-map insert per id (a cache miss
//! on a table of millions) was the largest cost of indexing an event, on the writer and in
//! `verify`. Here an event's ids are appended to a tail as packed (number, ordinal) pairs; a
//! full tail is sorted into a run, and runs of similar size are merged, as a binary counter
//! carries, so a lookup searches a handful of sorted runs and one short tail. Runs hold
//! ascending ordinals (the later run the later events), so a record's postings come out sorted
//! by concatenating what each run holds of it.
//!
//! Postings rebuilt only to be written out or compared with an index file (`verify`, a
//! partition indexed again) are never looked up while they grow: they cut no runs, and the one
//! sort of the walk does all the ordering (merging runs as they grow cost more than half of
//! building them).

/// Pairs in the tail before it is sorted into a run: a lookup scans at most this many.
const TAIL_MAX: usize = 1 << 14;

/// A (record number, ordinal) pair, ordered by number, then ordinal.
fn pack(number: u32, ordinal: u32) -> u64 {
    (u64::from(number) << 32) | u64::from(ordinal)
}

fn number_of(pair: u64) -> u32 {
    (pair >> 32) as u32
}

/// Merges two sorted runs into one.
fn merge(a: &[u64], b: &[u64]) -> Vec<u64> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        if a[i] <= b[j] {
            out.push(a[i]);
            i += 1;
        } else {
            out.push(b[j]);
            j += 1;
        }
    }
    out.extend_from_slice(&a[i..]);
    out.extend_from_slice(&b[j..]);
    out
}

#[derive(Debug, Default)]
pub(crate) struct RecordPostings {
    /// Sorted runs without repeats; each later run holds later ordinals, and is smaller.
    runs: Vec<Vec<u64>>,
    /// Pairs since the last run was cut, in ordinal order.
    tail: Vec<u64>,
    /// Only walked once complete: the tail is never cut into runs.
    walk_only: bool,
}

impl RecordPostings {
    /// Postings that will be walked (`for_each`) once complete but not looked up while they
    /// grow. A lookup still answers rightly, scanning every pair.
    pub(crate) fn walk_only() -> Self {
        Self {
            walk_only: true,
            ..Self::default()
        }
    }

    /// Posts event `ordinal` (later than any posted before) under each of `numbers`.
    pub(crate) fn add(&mut self, ordinal: u32, numbers: &[u32]) {
        self.tail
            .extend(numbers.iter().map(|number| pack(*number, ordinal)));
        if self.tail.len() >= TAIL_MAX && !self.walk_only {
            self.cut();
        }
    }

    /// Sorts the tail into a run and merges runs while the last is at least half the one before.
    fn cut(&mut self) {
        let mut run = std::mem::take(&mut self.tail);
        run.sort_unstable();
        // An event may carry a record id twice.
        run.dedup();
        self.runs.push(run);
        while let [.., before, last] = self.runs.as_slice() {
            if before.len() > 2 * last.len() {
                break;
            }
            let merged = merge(before, last);
            self.runs.truncate(self.runs.len() - 2);
            self.runs.push(merged);
        }
    }

    /// The ordinals of the events that carry record `number`, ascending.
    pub(crate) fn get(&self, number: u32) -> Vec<u32> {
        let mut out = Vec::new();
        for run in &self.runs {
            let from = run.partition_point(|pair| *pair < pack(number, 0));
            out.extend(
                run[from..]
                    .iter()
                    .take_while(|pair| number_of(**pair) == number)
                    .map(|pair| *pair as u32),
            );
        }
        for pair in &self.tail {
            if number_of(*pair) == number && out.last() != Some(&(*pair as u32)) {
                out.push(*pair as u32);
            }
        }
        out
    }

    /// Every pair, sorted, without repeats.
    fn all_pairs(&self) -> Vec<u64> {
        let mut all: Vec<u64> = self.runs.iter().flatten().copied().collect();
        all.extend_from_slice(&self.tail);
        if self.runs.is_empty() {
            all.sort_unstable();
        } else {
            // The runs are sorted stretches of it: a stable sort merges them rather than
            // starting over.
            all.sort();
        }
        all.dedup();
        all
    }

    /// Sorts every pair into one run, so that a walk neither copies nor sorts (on the thread
    /// that built the postings rather than the one that walks them).
    pub(crate) fn settle(&mut self) {
        if self.tail.is_empty() && self.runs.len() <= 1 {
            return;
        }
        let mut all = if self.runs.is_empty() {
            let mut tail = std::mem::take(&mut self.tail);
            tail.sort_unstable();
            tail.dedup();
            tail
        } else {
            let all = self.all_pairs();
            self.tail = Vec::new();
            all
        };
        all.shrink_to_fit();
        self.runs = vec![all];
    }

    /// Visits every record number posted, ascending, with its ordinals, ascending.
    pub(crate) fn for_each(&self, mut visit: impl FnMut(u32, &[u32])) {
        let sorted;
        let all = match self.runs.as_slice() {
            // A run is sorted and has no repeats.
            [run] if self.tail.is_empty() => run.as_slice(),
            _ => {
                sorted = self.all_pairs();
                sorted.as_slice()
            }
        };
        let mut ordinals = Vec::new();
        let mut rest = all;
        while let Some(first) = rest.first() {
            let number = number_of(*first);
            let end = rest.partition_point(|pair| number_of(*pair) == number);
            ordinals.clear();
            ordinals.extend(rest[..end].iter().map(|pair| *pair as u32));
            visit(number, &ordinals);
            rest = &rest[end..];
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// Postings as a map of lists would hold them: the model the runs must agree with.
    fn model(events: &[Vec<u32>]) -> BTreeMap<u32, Vec<u32>> {
        let mut model: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
        for (ordinal, numbers) in events.iter().enumerate() {
            for number in numbers {
                let list = model.entry(*number).or_default();
                if list.last() != Some(&(ordinal as u32)) {
                    list.push(ordinal as u32);
                }
            }
        }
        model
    }

    #[test]
    fn lookups_and_the_sorted_walk_agree_with_a_map_of_lists_across_many_runs() {
        // Enough pairs for dozens of runs and merges, a tail left over, ids repeated within an
        // event and across events, and numbers at both ends of u32.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let events: Vec<Vec<u32>> = (0..6_000)
            .map(|i| {
                let n = (next() % 40) as usize;
                let mut numbers: Vec<u32> = (0..n).map(|_| (next() % 5_000) as u32).collect();
                if i % 7 == 0 {
                    numbers.push(numbers.first().copied().unwrap_or(3));
                }
                if i % 101 == 0 {
                    numbers.extend([0, u32::MAX]);
                }
                numbers
            })
            .collect();
        let model = model(&events);
        for walk_only in [false, true] {
            let mut postings = if walk_only {
                RecordPostings::walk_only()
            } else {
                RecordPostings::default()
            };
            for (ordinal, numbers) in events.iter().enumerate() {
                postings.add(ordinal as u32, numbers);
            }
            if walk_only {
                assert!(postings.runs.is_empty());
            } else {
                assert!(postings.runs.len() >= 2 && !postings.tail.is_empty());
            }
            for settled in [false, true] {
                if settled {
                    postings.settle();
                    assert!(postings.runs.len() == 1 && postings.tail.is_empty());
                }
                for number in (0..5_000).chain([u32::MAX, 5_001]) {
                    assert_eq!(
                        postings.get(number),
                        model.get(&number).cloned().unwrap_or_default(),
                        "record {number}, walk only {walk_only}, settled {settled}"
                    );
                }
                let mut walked = BTreeMap::new();
                postings.for_each(|number, ordinals| {
                    assert!(walked.insert(number, ordinals.to_vec()).is_none());
                });
                assert_eq!(walked, model, "walk only {walk_only}, settled {settled}");
            }
        }
    }

    #[test]
    fn runs_stay_few_and_shrink_towards_the_tail() {
        let mut postings = RecordPostings::default();
        for ordinal in 0..20_000u32 {
            postings.add(ordinal, &[ordinal % 977, ordinal % 13, 7]);
        }
        let sizes: Vec<usize> = postings.runs.iter().map(Vec::len).collect();
        assert!(sizes.len() <= 6, "{sizes:?}");
        assert!(sizes.windows(2).all(|w| w[0] > w[1]), "{sizes:?}");
    }
}
