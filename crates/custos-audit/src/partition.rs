//! The index of one partition (one segment of the log): what a search asks of it, and the
//! in-memory form the active partition has while it is written.
//!
//! Events of a partition are numbered by ordinal (0, 1, … in log order; seq = the segment's
//! first seq + ordinal). Every filter of a search is a posting list of ordinals: the terms of
//! each field (operation, user, instance…), each record id (by its number in the log's id
//! dictionary) and each word of the free text. A sealed partition keeps the same lists in its
//! index file (`sealed`), so one search runs the same way over both.

use std::collections::{BTreeMap, HashMap};

use uuid::Uuid;

use crate::Result;
use crate::event::AuditEvent;
use crate::runs::RecordPostings;

/// A field a search filters on by exact (case-insensitive) value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Field {
    Operation = 0,
    /// The user's id and principal name both.
    User = 1,
    Instance = 2,
    Entity = 3,
    Ip = 4,
    RecordType = 5,
    Workload = 6,
    Category = 7,
    Origin = 8,
    Status = 9,
}

impl Field {
    pub(crate) const ALL: [Field; 10] = [
        Field::Operation,
        Field::User,
        Field::Instance,
        Field::Entity,
        Field::Ip,
        Field::RecordType,
        Field::Workload,
        Field::Category,
        Field::Origin,
        Field::Status,
    ];

    /// The values of this field in `event`, as they are indexed (a second one only for the
    /// user, who is found by id and by principal name).
    fn values(self, event: &AuditEvent) -> (&str, Option<&str>) {
        match self {
            Field::Operation => (&event.operation, None),
            Field::User => (&event.user_id, Some(&event.user_upn)),
            Field::Instance => (&event.instance, None),
            Field::Entity => (&event.entity_name, None),
            Field::Ip => (&event.client_ip, None),
            Field::RecordType => (&event.record_type, None),
            Field::Workload => (&event.workload, None),
            Field::Category => (&event.category, None),
            Field::Origin => (event.origin.as_str(), None),
            Field::Status => (event.result_status.as_str(), None),
        }
    }
}

/// A field reports group events by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GroupField {
    /// The principal name (the user id when there is none).
    User = 0,
    Operation = 1,
    Entity = 2,
}

impl GroupField {
    pub(crate) const ALL: [GroupField; 3] =
        [GroupField::User, GroupField::Operation, GroupField::Entity];

    fn value(self, event: &AuditEvent) -> &str {
        match self {
            GroupField::User if event.user_upn.is_empty() => &event.user_id,
            GroupField::User => &event.user_upn,
            GroupField::Operation => &event.operation,
            GroupField::Entity => &event.entity_name,
        }
    }
}

/// One group field of a partition: its distinct values (as first seen; compared without case)
/// and each event's value by number.
#[derive(Debug, Default, Clone)]
pub(crate) struct GroupColumn {
    pub(crate) values: Vec<String>,
    numbers: FastMap<String, u32>,
    pub(crate) column: Vec<u32>,
}

impl GroupColumn {
    fn push(&mut self, value: &str, scratch: &mut String) {
        let key = to_lowercase_into(value, scratch);
        let number = match self.numbers.get(key) {
            Some(number) => *number,
            None => {
                let number = self.values.len() as u32;
                self.values.push(value.to_string());
                self.numbers.insert(key.to_string(), number);
                number
            }
        };
        self.column.push(number);
    }
}

/// What retention needs to know of a partition's events: for each distinct (record type,
/// operation, user principal name, instance), lowercase, the newest `CreationTime`.
pub(crate) type RetentionGroups = BTreeMap<[String; 4], i64>;

/// Where an event's record is in its segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Place {
    pub(crate) offset: u32,
    pub(crate) len: u32,
}

/// What a search asks of one partition's index. Values are lowercase; lists sorted.
pub(crate) trait PartitionIndex: Send + Sync {
    /// Events in the partition.
    fn n_events(&self) -> u32;
    /// Oldest and newest `CreationTime`, when it has events.
    fn time_range(&self) -> Option<(i64, i64)>;
    /// Ordinals of the events whose `field` is `value`.
    fn term(&self, field: Field, value: &str) -> Result<Vec<u32>>;
    /// How many events' `field` is `value`.
    fn term_count(&self, field: Field, value: &str) -> Result<u64> {
        Ok(self.term(field, value)?.len() as u64)
    }
    /// Ordinals of the events that list the record id numbered `number`.
    fn record(&self, number: u32) -> Result<Vec<u32>>;
    /// How many events list the record id numbered `number`.
    fn record_count(&self, number: u32) -> Result<u64> {
        Ok(self.record(number)?.len() as u64)
    }
    /// Ordinals of the events with a word starting with `prefix`.
    fn word_prefix(&self, prefix: &str) -> Result<Vec<u32>>;
    /// Every value of `field` some event holds, lowercase.
    fn term_values(&self, field: Field) -> Result<Vec<String>>;
    /// `CreationTime` of every event, by ordinal.
    fn times(&self) -> Result<Vec<i64>>;
    /// Where event `ordinal` is in the segment.
    fn place(&self, ordinal: u32) -> Result<Place>;
    /// The ordinal of the event with id `id`.
    fn ordinal_of(&self, id: &Uuid) -> Result<Option<u32>>;
    /// What retention needs to decide.
    fn retention_groups(&self) -> Result<RetentionGroups>;
    /// The distinct values of `field` and each event's value by number.
    fn group(&self, field: GroupField) -> Result<(Vec<String>, Vec<u32>)>;
}

/// A hash map with a fast, per-process randomly seeded hash: the index's maps are keyed by
/// values callers choose (record ids, words), so the hash must resist crafted collisions, but
/// SipHash costs more than the rest of an insert.
pub(crate) type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// The ordinals of the events that hold a term or word, as the index being written keeps them:
/// most words are in one or a few events (a correlation id's are in one), so up to four are
/// kept in place rather than in an allocation of their own.
pub(crate) type Ordinals = smallvec::SmallVec<[u32; 4]>;

/// Lowercase value → ordinals. hashbrown's map, for a lookup by `&str` that makes the key only
/// when the value is new (one probe, where `get_mut` and then `insert` took two). Keys of up to
/// 24 bytes (nearly every word and term) are held in the map's own slot rather than behind a
/// pointer, so a probe compares them without another cache miss and a new one allocates nothing.
pub(crate) type PostingMap =
    hashbrown::HashMap<compact_str::CompactString, Ordinals, foldhash::fast::RandomState>;

/// The index of the partition being written, in memory. Built on the writer thread for every
/// event, so it avoids allocating for values it has seen.
#[derive(Debug, Default)]
pub(crate) struct MemIndex {
    pub(crate) times: Vec<i64>,
    pub(crate) places: Vec<Place>,
    /// By field (`Field as usize`): lowercase value → ordinals.
    pub(crate) terms: [PostingMap; Field::ALL.len()],
    /// Record id number → ordinals.
    pub(crate) records: RecordPostings,
    /// Free-text words → ordinals (a prefix search scans the keys; the index file sorts them).
    pub(crate) words: PostingMap,
    pub(crate) event_ids: FastMap<Uuid, u32>,
    /// Retention groups by the hash of their key.
    retention: FastMap<u64, Vec<([String; 4], i64)>>,
    /// The retention key of the event being inserted (kept to reuse its buffers).
    lowered: [String; 4],
    /// By group field (`GroupField as usize`).
    pub(crate) groups: [GroupColumn; GroupField::ALL.len()],
    pub(crate) time_range: Option<(i64, i64)>,
    /// What [`index_cost`] says the events inserted so far hold in memory.
    pub(crate) cost: u64,
}

/// About the bytes of memory the index of the partition being written holds for `event`: its
/// time, place, group values and id, its postings, and the new keys its words and record ids
/// add (a request's correlation id alone is five words no other event has). An estimate from
/// the event alone — never from what the index already holds — so that every log the same
/// events are appended to cuts its partitions at the same events (the memory budget,
/// `LogConfig::index_bytes_max`). Measured against the index's real growth, it is a little
/// above it: 664 against 654 bytes for an event without record ids, 1,064 against 870 with 50,
/// 4,664 against 3,716 with 500 (BENCHMARKS.md).
pub(crate) fn index_cost(event: &AuditEvent) -> u64 {
    let text: usize = text_fields(event)
        .iter()
        .map(|field| field.len())
        .sum::<usize>()
        + event
            .changes
            .iter()
            .map(|change| {
                change.attribute.len()
                    + change.old.as_ref().map_or(0, String::len)
                    + change.new.as_ref().map_or(0, String::len)
            })
            .sum::<usize>();
    256 + 8 * event.record_ids.len() as u64 + 2 * text as u64
}

/// `text` lowercase exactly as `str::to_lowercase` makes it (a final sigma too), as the index
/// files written so far hold group values and retention groups; in `out`, without an
/// allocation when it is ASCII (the usual case).
fn to_lowercase_into<'a>(text: &str, out: &'a mut String) -> &'a str {
    out.clear();
    if text.is_ascii() {
        out.push_str(text);
        out.make_ascii_lowercase();
    } else {
        out.push_str(&text.to_lowercase());
    }
    out.as_str()
}

/// `text` lowercase char by char (as the index files written so far hold it): itself when no
/// char is uppercase, else lowercased into `scratch`.
fn lowercase<'a>(text: &'a str, scratch: &'a mut String) -> &'a str {
    if text.is_ascii() {
        if !text.bytes().any(|b| b.is_ascii_uppercase()) {
            return text;
        }
        scratch.clear();
        scratch.push_str(text);
        scratch.make_ascii_lowercase();
    } else {
        if !text.chars().any(char::is_uppercase) {
            return text;
        }
        scratch.clear();
        scratch.extend(text.chars().flat_map(char::to_lowercase));
    }
    scratch.as_str()
}

/// The first eight bytes of `text` as a big-endian number, zeros after a shorter text. Ordered
/// as the texts are where they differ: `a < b` implies `leading_bytes(a) <= leading_bytes(b)`.
fn leading_bytes(text: &str) -> u64 {
    let mut bytes = [0u8; 8];
    let n = text.len().min(8);
    bytes[..n].copy_from_slice(&text.as_bytes()[..n]);
    u64::from_be_bytes(bytes)
}

/// Posts `ordinal` under `key` (lowercased into `scratch`) once (an event may carry a value
/// twice), allocating only for a new key.
fn post_lowercase(map: &mut PostingMap, key: &str, scratch: &mut String, ordinal: u32) {
    let list = map.entry_ref(lowercase(key, scratch)).or_default();
    if list.last() != Some(&ordinal) {
        list.push(ordinal);
    }
}

impl MemIndex {
    /// An index rebuilt only to be compared with an index file: nothing is looked up in it
    /// while it grows.
    pub(crate) fn for_comparison() -> Self {
        Self {
            records: RecordPostings::walk_only(),
            ..Self::default()
        }
    }

    /// Readies a complete index to be walked: its record postings sorted in one run.
    pub(crate) fn settle(&mut self) {
        self.records.settle();
    }

    /// Indexes the next event; `record_numbers` are its record ids' numbers.
    pub(crate) fn insert(&mut self, place: Place, event: &AuditEvent, record_numbers: &[u32]) {
        let ordinal = self.times.len() as u32;
        let time = event.creation_time_us;
        self.times.push(time);
        self.places.push(place);
        self.time_range = Some(match self.time_range {
            None => (time, time),
            Some((oldest, newest)) => (oldest.min(time), newest.max(time)),
        });
        let mut scratch = String::new();
        for field in Field::ALL {
            let (value, second) = field.values(event);
            let terms = &mut self.terms[field as usize];
            post_lowercase(terms, value, &mut scratch, ordinal);
            if let Some(second) = second {
                post_lowercase(terms, second, &mut scratch, ordinal);
            }
        }
        for field in GroupField::ALL {
            self.groups[field as usize].push(field.value(event), &mut scratch);
        }
        self.records.add(ordinal, record_numbers);
        for_each_word(event, &mut |word| {
            post_lowercase(&mut self.words, word, &mut scratch, ordinal)
        });
        self.event_ids.insert(event.id, ordinal);
        self.note_retention(event);
        self.cost += index_cost(event);
    }

    /// Keeps the newest time of the event's retention group. The group's key is compared as it
    /// is stored, lowercased by `str::to_lowercase` (comparing char by char once let a value
    /// ending in a capital sigma match no stored group: a new entry for every such event, each
    /// found by a scan of the ones before).
    fn note_retention(&mut self, event: &AuditEvent) {
        use std::hash::BuildHasher;
        let parts = [
            &event.record_type,
            &event.operation,
            &event.user_upn,
            &event.instance,
        ];
        for (lowered, part) in self.lowered.iter_mut().zip(parts) {
            to_lowercase_into(part, lowered);
        }
        let key = &self.lowered;
        let time = event.creation_time_us;
        let hash = self.retention.hasher().hash_one(key);
        let groups = self.retention.entry(hash).or_default();
        match groups.iter_mut().find(|(stored, _)| stored == key) {
            Some((_, newest)) => *newest = (*newest).max(time),
            None => groups.push((key.clone(), time)),
        }
    }

    /// Every field term with its postings, sorted by (field, value).
    pub(crate) fn sorted_terms(&self) -> Vec<(Field, &str, &[u32])> {
        let mut terms: Vec<(Field, &str, &[u32])> = Field::ALL
            .iter()
            .flat_map(|field| {
                self.terms[*field as usize]
                    .iter()
                    .map(move |(value, list)| (*field, value.as_str(), list.as_slice()))
            })
            .collect();
        terms.sort_unstable_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        terms
    }

    /// Every word with its postings, sorted. Sorted by each word's first eight bytes as a number
    /// first and by the whole word only where those are equal: most comparisons of a sort of
    /// hundreds of thousands of words are then one of integers, without a call to `memcmp` and
    /// its loads of both words.
    pub(crate) fn sorted_words(&self) -> Vec<(&str, &[u32])> {
        let mut words: Vec<(u64, &str, &[u32])> = self
            .words
            .iter()
            .map(|(w, l)| (leading_bytes(w), w.as_str(), l.as_slice()))
            .collect();
        words.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(b.1)));
        words.into_iter().map(|(_, w, l)| (w, l)).collect()
    }
}

impl PartitionIndex for MemIndex {
    fn n_events(&self) -> u32 {
        self.times.len() as u32
    }

    fn time_range(&self) -> Option<(i64, i64)> {
        self.time_range
    }

    fn term(&self, field: Field, value: &str) -> Result<Vec<u32>> {
        Ok(self.terms[field as usize]
            .get(value)
            .map(|list| list.to_vec())
            .unwrap_or_default())
    }

    fn term_count(&self, field: Field, value: &str) -> Result<u64> {
        Ok(self.terms[field as usize]
            .get(value)
            .map_or(0, |list| list.len() as u64))
    }

    fn record(&self, number: u32) -> Result<Vec<u32>> {
        Ok(self.records.get(number))
    }

    fn term_values(&self, field: Field) -> Result<Vec<String>> {
        Ok(self.terms[field as usize]
            .keys()
            .map(|value| value.to_string())
            .collect())
    }

    fn word_prefix(&self, prefix: &str) -> Result<Vec<u32>> {
        Ok(crate::postings::union(
            self.words
                .iter()
                .filter(|(word, _)| word.starts_with(prefix))
                .map(|(_, list)| list.to_vec())
                .collect(),
        ))
    }

    fn times(&self) -> Result<Vec<i64>> {
        Ok(self.times.clone())
    }

    fn place(&self, ordinal: u32) -> Result<Place> {
        Ok(self.places[ordinal as usize])
    }

    fn ordinal_of(&self, id: &Uuid) -> Result<Option<u32>> {
        Ok(self.event_ids.get(id).copied())
    }

    fn retention_groups(&self) -> Result<RetentionGroups> {
        Ok(self.retention.values().flatten().cloned().collect())
    }

    fn group(&self, field: GroupField) -> Result<(Vec<String>, Vec<u32>)> {
        let group = &self.groups[field as usize];
        Ok((group.values.clone(), group.column.clone()))
    }
}

/// The event's free-text fields but its changes.
fn text_fields(event: &AuditEvent) -> [&String; 11] {
    [
        &event.operation,
        &event.user_upn,
        &event.user_id,
        &event.user_agent,
        &event.client_ip,
        &event.entity_name,
        &event.query,
        &event.details,
        &event.error_code,
        &event.instance,
        &event.correlation_id,
    ]
}

/// Visits each word of the event's free-text fields (runs of letters and digits, as they
/// are: the caller lowercases them); a word may come more than once.
pub(crate) fn for_each_word(event: &AuditEvent, visit: &mut dyn FnMut(&str)) {
    let mut add = |text: &str| {
        for word in text
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
        {
            visit(word);
        }
    };
    for text in text_fields(event) {
        add(text);
    }
    for change in &event.changes {
        add(&change.attribute);
        for value in [&change.old, &change.new].into_iter().flatten() {
            add(value);
        }
    }
}

/// The words of a text: lowercase runs of letters and digits.
pub(crate) fn query_words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

#[cfg(test)]
mod tests;
