//! The way back from a record id to its number: an open-addressing table (linear probing) of
//! numbers, whose keys are the id table itself, so no id is held twice.
//!
//! The log numbers every record id it sees, millions of them, and opening the log rebuilt a
//! hash map of them from `ids.dat` one random insert at a time: half of an open at 1,000,000
//! events, each insert a cache miss into a table of hundreds of megabytes. Here a slot is 8
//! bytes (the number, and 31 bits of the id's hash so that a probe rarely reads an id to
//! compare), and a table is built from the id table in the order of the slots it fills — ids
//! grouped by the region of the table their hash points into — so that its writes stay within
//! a cache-sized window instead of landing all over the table. An id's home slot is taken from
//! the same hash bits as its tag, so a slot's value alone says where its probe starts: a build
//! groups slot values (8 bytes an id) rather than hashes and numbers (16), and a removal moves
//! slots back without reading their ids.
//!
//! The hash is seeded at random per process (record ids can come from outside: an ingesting
//! application chooses its own), and the table is never stored.

use std::hash::BuildHasher;

use uuid::Uuid;

use crate::ids::IdTable;

/// An empty slot. An occupied one has its top bit set (see [`slot`]).
const EMPTY: u64 = 0;
/// The fewest slots a table has.
const MIN_SLOTS: usize = 16;
/// Slots of the region that a build fills at a time (8 bytes each: 64 KiB).
const REGION_SLOTS: usize = 1 << 13;

/// The slot value of `number` for an id of hash `hash`: the number in the low half, the
/// hash's high bits (with the top bit set, so it is never [`EMPTY`]) in the high half.
fn slot(hash: u64, number: u32) -> u64 {
    (hash | (1 << 63)) & !u64::from(u32::MAX) | u64::from(number)
}

fn number_of(slot: u64) -> u32 {
    slot as u32
}

/// Whether `slot` may hold an id of hash `hash` (its high half matches).
fn tag_matches(slot: u64, hash: u64) -> bool {
    (slot ^ (hash | (1 << 63))) >> 32 == 0
}

/// The home slot, in a table of `mask + 1` slots, of an id of hash `hash` or of a slot value
/// (the same for both: it is taken from the tag's bits).
fn home(hash_or_slot: u64, mask: usize) -> usize {
    ((hash_or_slot | (1 << 63)) >> 32) as usize & mask
}

/// Record id → number, for the ids of an [`IdTable`].
#[derive(Debug, Default)]
pub(crate) struct Numbers {
    /// A power of two of slots (or none yet), at most three quarters full.
    slots: Vec<u64>,
    len: usize,
    state: foldhash::fast::RandomState,
}

impl Numbers {
    /// The table of every id of `table`, each to its number (its position).
    pub(crate) fn build(table: &IdTable) -> Numbers {
        let mut numbers = Numbers::default();
        numbers.rebuild(table, table.len());
        numbers
    }

    fn hash(&self, id: &Uuid) -> u64 {
        self.state.hash_one(id)
    }

    fn mask(&self) -> usize {
        self.slots.len() - 1
    }

    /// Probes from `hash`'s home slot: `Ok` with the first slot of a matching tag that `matches`,
    /// else `Err` with the free slot that ends the probe (the table is never full).
    fn probe(&self, hash: u64, matches: impl Fn(u64) -> bool) -> Result<usize, usize> {
        let mask = self.mask();
        let mut at = home(hash, mask);
        loop {
            let slot = self.slots[at];
            if slot == EMPTY {
                return Err(at);
            }
            if tag_matches(slot, hash) && matches(slot) {
                return Ok(at);
            }
            at = (at + 1) & mask;
        }
    }

    /// The number of `id`, whose key is found in `table`.
    pub(crate) fn get(&self, id: &Uuid, table: &IdTable) -> Option<u32> {
        if self.slots.is_empty() {
            return None;
        }
        let at = self
            .probe(self.hash(id), |slot| {
                table.get(number_of(slot) as usize) == Some(*id)
            })
            .ok()?;
        Some(number_of(self.slots[at]))
    }

    /// The numbers of `ids`, in order, into `out` (`None` for an id without one): as [`get`]
    /// for each, but a group of ids at a time, loading their home slots and then the ids those
    /// slots name one after the other, so that the cache misses of a group overlap instead of
    /// following each other. An event's record ids are looked up this way on the writer, where
    /// a lookup at a time was a fifth of its time: two dependent misses an id, on tables of
    /// hundreds of megabytes.
    ///
    /// [`get`]: Numbers::get
    pub(crate) fn get_many(&self, ids: &[Uuid], table: &IdTable, out: &mut Vec<Option<u32>>) {
        const GROUP: usize = 8;
        out.clear();
        if self.slots.is_empty() {
            out.resize(ids.len(), None);
            return;
        }
        let mask = self.mask();
        for group in ids.chunks(GROUP) {
            let mut hashes = [0u64; GROUP];
            for (hash, id) in hashes.iter_mut().zip(group) {
                *hash = self.hash(id);
            }
            let mut homes = [EMPTY; GROUP];
            for (home, hash) in homes.iter_mut().zip(&hashes).take(group.len()) {
                *home = self.slots[self::home(*hash, mask)];
            }
            let mut held = [None; GROUP];
            for ((held, home), hash) in held.iter_mut().zip(&homes).zip(&hashes) {
                if tag_matches(*home, *hash) {
                    *held = table.get(number_of(*home) as usize);
                }
            }
            for (k, id) in group.iter().enumerate() {
                out.push(if homes[k] == EMPTY {
                    None
                } else if held[k] == Some(*id) {
                    Some(number_of(homes[k]))
                } else {
                    // Not in its home slot: probe on, as `get` does.
                    self.probe(hashes[k], |slot| {
                        table.get(number_of(slot) as usize) == Some(*id)
                    })
                    .ok()
                    .map(|at| number_of(self.slots[at]))
                });
            }
        }
    }

    /// Gives `id` the number `number`, which `table` has just given it (an id defined twice
    /// keeps its later number, as a front-to-back read of the log meets them).
    pub(crate) fn insert(&mut self, id: &Uuid, number: u32, table: &IdTable) {
        if (self.len + 1) * 4 > self.slots.len() * 3 {
            // `table` already holds the new id: the rebuild takes it in.
            self.rebuild(table, (self.len + 1) * 2);
            return;
        }
        if self.place(slot(self.hash(id), number), table) {
            self.len += 1;
        }
    }

    /// Puts slot value `value` in the slot of its id, or else in the first free slot from its
    /// home; says whether it took a free one.
    fn place(&mut self, value: u64, table: &IdTable) -> bool {
        // The ids are loaded only for a slot whose tag matches: a build places ids out of
        // number order, and loading each one's id would be a cache miss the build avoids.
        // (A slot value probes as its hash would: `home` and `tag_matches` read only its tag.)
        let found = self.probe(value, |held| {
            table.get(number_of(held) as usize) == table.get(number_of(value) as usize)
        });
        let (Ok(at) | Err(at)) = found;
        self.slots[at] = value;
        found.is_err()
    }

    /// Removes the number of `id` (numbered `number`), moving back the slots after it that
    /// probed past it, so that no later id is cut off from its home slot by the gap.
    pub(crate) fn remove(&mut self, id: &Uuid, number: u32) {
        if self.slots.is_empty() {
            return;
        }
        let Ok(mut hole) = self.probe(self.hash(id), |slot| number_of(slot) == number) else {
            return;
        };
        let mask = self.mask();
        let mut at = hole;
        loop {
            at = (at + 1) & mask;
            let slot = self.slots[at];
            if slot == EMPTY {
                break;
            }
            let home = home(slot, mask);
            // The slot may fill the hole when the hole lies on its probe from its home.
            if (at.wrapping_sub(home) & mask) >= (at.wrapping_sub(hole) & mask) {
                self.slots[hole] = slot;
                hole = at;
            }
        }
        self.slots[hole] = EMPTY;
        self.len -= 1;
    }

    /// Builds the table again of every id of `table`, with room for `room` ids.
    ///
    /// The ids' slot values are first grouped by the region of slots their home is in (one
    /// counting pass and one scatter over the ids, in number order), then placed region by
    /// region. The slots are written before they are probed, so that each page of them is
    /// faulted in once, by a write, rather than first mapped for reading and then copied.
    fn rebuild(&mut self, table: &IdTable, room: usize) {
        let len = table.len();
        let n_slots = (room.max(len) * 4)
            .div_ceil(3)
            .next_power_of_two()
            .max(MIN_SLOTS);
        self.slots = Vec::new();
        self.slots.resize(n_slots, EMPTY);
        self.len = 0;
        let mask = n_slots - 1;
        let regions = (n_slots / REGION_SLOTS).max(1);
        let shift = n_slots.trailing_zeros() - regions.trailing_zeros();
        let region_of = |hash_or_slot: u64| home(hash_or_slot, mask) >> shift;
        // The hashes are taken twice rather than kept: hashing an id costs less than writing
        // and reading back 8 bytes of it.
        let hash_of = |n: usize| self.hash(&table.get(n).expect("in range"));
        let mut next = vec![0usize; regions + 1];
        for n in 0..len {
            next[region_of(hash_of(n)) + 1] += 1;
        }
        for r in 0..regions {
            next[r + 1] += next[r];
        }
        let mut grouped = vec![EMPTY; len];
        for n in 0..len {
            let value = slot(hash_of(n), n as u32);
            let at = &mut next[region_of(value)];
            grouped[*at] = value;
            *at += 1;
        }
        for value in grouped {
            if self.place(value, table) {
                self.len += 1;
            }
        }
    }

    /// Ids it holds.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests;
