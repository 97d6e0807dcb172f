//! Searches over the partitions of the log: a query is compiled once against the log's
//! record-id dictionary, then every partition (newest first) answers it from its own index —
//! in memory for the partition being written, from its index file once sealed.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use uuid::Uuid;

use crate::event::{AuditEvent, Origin, ResultStatus};
use crate::handles::Handle;
use crate::ids::IdDict;
use crate::log::Seq;
use crate::partition::{Field, GroupField, MemIndex, PartitionIndex, Place, query_words};
use crate::postings;
use crate::sealed::SealedIndex;
use crate::{Error, Result};

/// A search of the audit log; lists are ORed, fields ANDed.
#[derive(Debug, Clone, Default)]
pub struct SearchQuery {
    /// Inclusive lower bound of `CreationTime`, microseconds since the epoch.
    pub start_us: i64,
    /// Exclusive upper bound of `CreationTime`, microseconds since the epoch.
    pub end_us: i64,
    /// Operations (case-insensitive).
    pub operations: Vec<String>,
    /// Users, by id or principal name (case-insensitive).
    pub users: Vec<String>,
    /// Instance names.
    pub instances: Vec<String>,
    /// Entity logical names.
    pub entities: Vec<String>,
    /// Records touched or seen.
    pub record_ids: Vec<Uuid>,
    /// Client IP addresses.
    pub ips: Vec<String>,
    /// Origins.
    pub origins: Vec<Origin>,
    /// Result statuses.
    pub statuses: Vec<ResultStatus>,
    /// Record types.
    pub record_types: Vec<String>,
    /// Workloads.
    pub workloads: Vec<String>,
    /// Report categories (SPEC §7 ids).
    pub categories: Vec<String>,
    /// Free text: every word of it must begin a word of the event's remaining text fields
    /// (user, agent, IP, entity, query, details, changes…), ignoring case.
    pub text: Option<String>,
    /// Only events older (smaller seq) than this: the continuation of a previous page.
    pub before_seq: Option<Seq>,
    /// Page size.
    pub top: usize,
}

/// One page of results, newest first.
#[derive(Debug, Clone)]
pub struct SearchPage {
    /// The events with their log positions.
    pub events: Vec<(Seq, AuditEvent)>,
    /// Where the next page continues, when there is one.
    pub next_before_seq: Option<Seq>,
}

/// A column search results can be ordered by, other than their arrival.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    /// `CreationTime`: when the event happened, whenever it arrived.
    CreationTime,
    /// The principal name (the user id when there is none), ignoring case.
    User,
    /// The operation, ignoring case.
    Operation,
    /// The entity, ignoring case.
    Entity,
}

impl SortKey {
    /// Every key, by the name of the event's field it orders by.
    pub const ALL: [(SortKey, &'static str); 4] = [
        (SortKey::CreationTime, "CreationTime"),
        (SortKey::User, "UserUpn"),
        (SortKey::Operation, "Operation"),
        (SortKey::Entity, "EntityName"),
    ];

    fn group(self) -> Option<GroupField> {
        match self {
            SortKey::CreationTime => None,
            SortKey::User => Some(GroupField::User),
            SortKey::Operation => Some(GroupField::Operation),
            SortKey::Entity => Some(GroupField::Entity),
        }
    }
}

/// An order of search results: by `key`, ties by arrival in the same direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SearchSort {
    /// What to order by.
    pub key: SortKey,
    /// Largest (newest) first.
    pub descending: bool,
}

/// The value an event is ordered by.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum SortValue {
    /// Microseconds since the epoch.
    Time(i64),
    /// Lowercase text.
    Text(String),
}

/// Where a sorted page ended: its last event's value and seq; the next page starts after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SortCursor {
    /// The last event's value.
    pub value: SortValue,
    /// The last event's seq.
    pub seq: Seq,
}

/// One page of sorted results.
#[derive(Debug, Clone)]
pub struct SortedPage {
    /// The events with their log positions, in order.
    pub events: Vec<(Seq, AuditEvent)>,
    /// Where the next page continues, when there is one.
    pub next: Option<SortCursor>,
}

impl SearchSort {
    /// The order of two events, given by value and seq.
    pub(crate) fn compare(self, a: (&SortValue, Seq), b: (&SortValue, Seq)) -> std::cmp::Ordering {
        let ascending = a.0.cmp(b.0).then(a.1.cmp(&b.1));
        if self.descending {
            ascending.reverse()
        } else {
            ascending
        }
    }
}

/// Candidates of a sorted page: every match after the cursor, cut back to the first `limit`
/// in order whenever it holds four times that (so memory stays bounded by the page, not by the
/// matches).
pub(crate) struct SortedCandidates<'c> {
    pub(crate) sort: SearchSort,
    pub(crate) after: Option<&'c SortCursor>,
    pub(crate) limit: usize,
    pub(crate) found: Vec<(SortValue, Seq, Location)>,
    /// `found` is in order and cut to `limit` since the last push.
    pub(crate) sorted: bool,
}

impl SortedCandidates<'_> {
    /// Sorts and keeps the first `limit`.
    pub(crate) fn cut(&mut self) {
        let sort = self.sort;
        self.found
            .sort_unstable_by(|a, b| sort.compare((&a.0, a.1), (&b.0, b.1)));
        self.found.truncate(self.limit);
        self.sorted = true;
    }

    /// Adds the matches of `part` that come after the cursor. A partition none of whose times
    /// can come before the current last candidate is skipped when ordering by time.
    pub(crate) fn collect(
        &mut self,
        part: &dyn PartitionIndex,
        partition: usize,
        first_seq: Seq,
        query: &Compiled,
    ) -> Result<()> {
        if self.sort.key == SortKey::CreationTime && self.found.len() >= self.limit {
            self.cut();
            if let (Some((oldest, newest)), Some(last)) = (part.time_range(), self.found.last()) {
                let best = SortValue::Time(if self.sort.descending { newest } else { oldest });
                let best_seq = if self.sort.descending { Seq::MAX } else { 0 };
                if self
                    .sort
                    .compare((&best, best_seq), (&last.0, last.1))
                    .is_gt()
                {
                    return Ok(());
                }
            }
        }
        let selection = query.select(part, first_seq)?;
        if selection.len() == 0 {
            return Ok(());
        }
        let value_of: Box<dyn Fn(u32) -> SortValue> = match self.sort.key.group() {
            None => {
                let times = part.times()?;
                Box::new(move |o| SortValue::Time(times[o as usize]))
            }
            Some(field) => {
                let (values, column) = part.group(field)?;
                let lower: Vec<String> = values.iter().map(|v| v.to_lowercase()).collect();
                Box::new(move |o| SortValue::Text(lower[column[o as usize] as usize].clone()))
            }
        };
        for ordinal in selection.iter() {
            let seq = first_seq + u64::from(ordinal);
            let value = value_of(ordinal);
            if let Some(after) = self.after
                && self
                    .sort
                    .compare((&value, seq), (&after.value, after.seq))
                    .is_le()
            {
                continue;
            }
            // Once a page is held in order, what comes after its last candidate cannot be on it.
            if self.sorted
                && self.found.len() >= self.limit
                && let Some(last) = self.found.last()
                && self.sort.compare((&value, seq), (&last.0, last.1)).is_gt()
            {
                continue;
            }
            let place = part.place(ordinal)?;
            self.found.push((value, seq, Location { partition, place }));
            self.sorted = false;
            if self.found.len() >= 4 * self.limit {
                self.cut();
            }
        }
        Ok(())
    }
}

/// The state of one partition's index.
pub(crate) enum PartState {
    /// The segment being written; the writer adds to it.
    Live(Box<MemIndex>),
    /// Complete, its index file being written; `ids_end` is the record ids numbered by then.
    Frozen { index: Arc<MemIndex>, ids_end: u32 },
    /// Complete, with its index file.
    Sealed(Arc<SealedIndex>),
    /// Deleted by retention.
    Purged,
}

/// One partition of the log: a segment and its index.
pub(crate) struct Partition {
    pub(crate) first_seq: Seq,
    /// Events it holds (or held, once purged).
    pub(crate) n_events: u64,
    pub(crate) path: PathBuf,
    /// Its segment to read; `None` once purged.
    pub(crate) file: Option<Arc<Handle>>,
    /// The strings its records numbered (while live or frozen; a sealed one keeps them in its
    /// index file).
    pub(crate) strings: Arc<RwLock<Vec<String>>>,
    pub(crate) state: PartState,
}

impl Partition {
    /// Reads and decodes the record at `ordinal` of this partition with the record ids of
    /// `ids`; `None` when it was purged.
    pub(crate) fn read_ordinal(
        &self,
        ordinal: u64,
        ids: &crate::ids::IdTable,
    ) -> Result<Option<AuditEvent>> {
        use std::os::unix::fs::FileExt;
        let Some(file) = &self.file else {
            return Ok(None);
        };
        let ordinal = u32::try_from(ordinal)
            .map_err(|_| Error::Corrupted(format!("ordinal {ordinal} out of range")))?;
        let (place, strings) = match &self.state {
            PartState::Live(index) => (index.place(ordinal)?, None),
            PartState::Frozen { index, .. } => (index.place(ordinal)?, None),
            PartState::Sealed(index) => (index.place(ordinal)?, Some(index.strings()?)),
            PartState::Purged => return Ok(None),
        };
        let mut payload = vec![0u8; place.len as usize];
        file.file()?
            .read_exact_at(&mut payload, u64::from(place.offset))
            .map_err(|e| Error::io(&self.path, e))?;
        let event = match strings {
            Some(strings) => crate::codec::decode_event(&payload, ids, &*strings)?,
            None => crate::codec::decode_event(
                &payload,
                ids,
                self.strings.read().expect("strings lock").as_slice(),
            )?,
        };
        Ok(Some(event))
    }

    /// The index to search, unless purged or live (the live one is searched under the lock).
    pub(crate) fn shared_index(&self) -> Option<Arc<dyn PartitionIndex>> {
        match &self.state {
            PartState::Frozen { index, .. } => Some(index.clone()),
            PartState::Sealed(index) => Some(index.clone()),
            PartState::Live(_) | PartState::Purged => None,
        }
    }
}

/// Where one event is: partition (segment) number and place in the segment.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Location {
    pub(crate) partition: usize,
    pub(crate) place: Place,
}

/// A query ready to run on partitions.
pub(crate) struct Compiled {
    terms: Vec<(Field, Vec<String>)>,
    records: Option<Vec<u32>>,
    words: Vec<String>,
    start_us: i64,
    end_us: i64,
    before_seq: Seq,
}

impl Compiled {
    /// Compiles `query`; `None` when nothing can match (a record id the log never saw).
    pub(crate) fn new(query: &SearchQuery, ids: &IdDict) -> Option<Compiled> {
        let lower = |values: &[String]| values.iter().map(|v| v.to_lowercase()).collect();
        let mut terms: Vec<(Field, Vec<String>)> = [
            (Field::Operation, lower(&query.operations)),
            (Field::User, lower(&query.users)),
            (Field::Instance, lower(&query.instances)),
            (Field::Entity, lower(&query.entities)),
            (Field::Ip, lower(&query.ips)),
            (Field::RecordType, lower(&query.record_types)),
            (Field::Workload, lower(&query.workloads)),
            (Field::Category, lower(&query.categories)),
        ]
        .into_iter()
        .filter(|(_, values): &(Field, Vec<String>)| !values.is_empty())
        .collect();
        if !query.origins.is_empty() {
            let values = query.origins.iter().map(|o| o.as_str().to_lowercase());
            terms.push((Field::Origin, values.collect()));
        }
        if !query.statuses.is_empty() {
            let values = query.statuses.iter().map(|s| s.as_str().to_lowercase());
            terms.push((Field::Status, values.collect()));
        }
        let records = if query.record_ids.is_empty() {
            None
        } else {
            let numbers: Vec<u32> = query
                .record_ids
                .iter()
                .filter_map(|id| ids.number(id))
                .collect();
            if numbers.is_empty() {
                return None;
            }
            Some(numbers)
        };
        Some(Compiled {
            terms,
            records,
            words: query.text.as_deref().map(query_words).unwrap_or_default(),
            start_us: query.start_us,
            end_us: query.end_us,
            before_seq: query.before_seq.unwrap_or(Seq::MAX),
        })
    }

    /// Whether a partition of `first_seq .. first_seq + n` and this time range can hold a match.
    pub(crate) fn may_match(&self, first_seq: Seq, range: Option<(i64, i64)>) -> bool {
        first_seq < self.before_seq
            && range.is_some_and(|(oldest, newest)| oldest < self.end_us && newest >= self.start_us)
    }

    /// How many events of `part` match, counted without listing them, when the query is one
    /// record id or one field's value alone and `part` lies wholly within its time range and
    /// before its `before_seq`; `None` when the matches must be listed to be counted.
    fn count_alone(&self, part: &dyn PartitionIndex, first_seq: Seq) -> Result<Option<u64>> {
        let alone = match (self.records.as_deref(), self.terms.as_slice()) {
            (Some([number]), []) => Alone::Record(*number),
            (None, [(field, values)]) if values.len() == 1 => Alone::Term(*field, &values[0]),
            _ => return Ok(None),
        };
        if !self.words.is_empty() {
            return Ok(None);
        }
        let range = part.time_range();
        if !self.may_match(first_seq, range) {
            return Ok(Some(0));
        }
        let (oldest, newest) = range.expect("may_match checked a range");
        let whole = oldest >= self.start_us
            && newest < self.end_us
            && self.before_seq >= first_seq + u64::from(part.n_events());
        if !whole {
            return Ok(None);
        }
        match alone {
            Alone::Record(number) => part.record_count(number).map(Some),
            Alone::Term(field, value) => part.term_count(field, value).map(Some),
        }
    }

    /// The ordinals of `part` that match, in increasing order.
    pub(crate) fn select(&self, part: &dyn PartitionIndex, first_seq: Seq) -> Result<Selection> {
        let range = part.time_range();
        if !self.may_match(first_seq, range) {
            return Ok(Selection::List(Vec::new()));
        }
        let mut lists: Vec<Vec<u32>> = Vec::new();
        for (field, values) in &self.terms {
            let found = values
                .iter()
                .map(|v| part.term(*field, v))
                .collect::<Result<Vec<_>>>()?;
            lists.push(postings::union(found));
        }
        if let Some(numbers) = &self.records {
            let found = numbers
                .iter()
                .map(|n| part.record(*n))
                .collect::<Result<Vec<_>>>()?;
            lists.push(postings::union(found));
        }
        for word in &self.words {
            lists.push(part.word_prefix(word)?);
        }
        lists.sort_by_key(Vec::len);
        let mut selection = match lists.split_first() {
            None => Selection::All(part.n_events()),
            Some((first, rest)) => {
                let mut list = first.clone();
                for other in rest {
                    if list.is_empty() {
                        break;
                    }
                    list = postings::intersect(&list, other);
                }
                Selection::List(list)
            }
        };
        // Only a partition that straddles the time range needs its events' times.
        let (oldest, newest) = range.expect("may_match checked a range");
        if oldest < self.start_us || newest >= self.end_us {
            let times = part.times()?;
            let within = |o: &u32| {
                let t = times[*o as usize];
                t >= self.start_us && t < self.end_us
            };
            selection = Selection::List(selection.iter().filter(within).collect());
        }
        if self.before_seq < first_seq + u64::from(part.n_events()) {
            let limit = (self.before_seq - first_seq) as u32;
            selection = Selection::List(selection.iter().filter(|o| *o < limit).collect());
        }
        Ok(selection)
    }
}

/// The one filter of a query that a partition's index counts without listing.
enum Alone<'a> {
    Record(u32),
    Term(Field, &'a str),
}

/// The matching ordinals of a partition.
pub(crate) enum Selection {
    /// All of `0 .. n`.
    All(u32),
    List(Vec<u32>),
}

impl Selection {
    pub(crate) fn len(&self) -> usize {
        match self {
            Selection::All(n) => *n as usize,
            Selection::List(list) => list.len(),
        }
    }

    /// In increasing order: one of the two parts is empty. Not boxed — counts and reports call
    /// it once a match.
    pub(crate) fn iter(&self) -> impl DoubleEndedIterator<Item = u32> + '_ {
        let (all, list) = match self {
            Selection::All(n) => (0..*n, &[][..]),
            Selection::List(list) => (0..0, list.as_slice()),
        };
        all.chain(list.iter().copied())
    }
}

/// Adds the newest matches of `part` to `out` until it holds `limit`.
pub(crate) fn collect_newest(
    part: &dyn PartitionIndex,
    partition: usize,
    first_seq: Seq,
    query: &Compiled,
    limit: usize,
    out: &mut Vec<(Seq, Location)>,
) -> Result<()> {
    let selection = query.select(part, first_seq)?;
    for ordinal in selection.iter().rev() {
        if out.len() >= limit {
            break;
        }
        let place = part.place(ordinal)?;
        out.push((
            first_seq + u64::from(ordinal),
            Location { partition, place },
        ));
    }
    Ok(())
}

/// Adds the matches of `part` to `counts` by `bucket_us`-wide buckets (one bucket keyed 0 when
/// `None`).
pub(crate) fn count_into(
    part: &dyn PartitionIndex,
    first_seq: Seq,
    query: &Compiled,
    bucket_us: Option<i64>,
    counts: &mut BTreeMap<i64, u64>,
) -> Result<()> {
    let bucket = |t: i64| bucket_us.map_or(0, |b| t.div_euclid(b) * b);
    if let Some((oldest, newest)) = part.time_range()
        && bucket(oldest) == bucket(newest)
        && let Some(count) = query.count_alone(part, first_seq)?
    {
        if count > 0 {
            *counts.entry(bucket(oldest)).or_insert(0) += count;
        }
        return Ok(());
    }
    let selection = query.select(part, first_seq)?;
    if selection.len() == 0 {
        return Ok(());
    }
    let (oldest, newest) = part.time_range().expect("a selection needs events");
    if bucket(oldest) == bucket(newest) {
        *counts.entry(bucket(oldest)).or_insert(0) += selection.len() as u64;
        return Ok(());
    }
    let times = part.times()?;
    let spanned = bucket_us.and_then(|b| {
        let first = bucket(oldest);
        let n = (bucket(newest).checked_sub(first)? / b).checked_add(1)?;
        (n <= SPANNED_BUCKETS as i64).then_some((first, b, n as usize))
    });
    let Some((first, width, n)) = spanned else {
        for ordinal in selection.iter() {
            *counts.entry(bucket(times[ordinal as usize])).or_insert(0) += 1;
        }
        return Ok(());
    };
    // A partition spans a few buckets (a day's partition straddles a midnight when events
    // arrive out of order): each match is counted in the bucket whose edges hold its time, by
    // comparisons rather than a division and a map's entry a match.
    let edges: Vec<i64> = (1..n as i64).map(|k| first + k * width).collect();
    let mut spans = vec![0u64; n];
    for ordinal in selection.iter() {
        let t = times[ordinal as usize];
        spans[edges.partition_point(|edge| *edge <= t)] += 1;
    }
    for (k, count) in spans.into_iter().enumerate() {
        if count > 0 {
            *counts.entry(first + k as i64 * width).or_insert(0) += count;
        }
    }
    Ok(())
}

/// The most buckets a partition's matches are counted into by [`count_into`]'s comparisons of
/// times with the buckets' edges; a partition over more (short buckets) counts by the map.
const SPANNED_BUCKETS: usize = 64;

/// What a report counts, summed over partitions.
#[derive(Default)]
pub(crate) struct ReportTotals {
    pub(crate) total: u64,
    pub(crate) series: BTreeMap<i64, u64>,
    /// By group field: lowercase value → (value as first seen, count).
    pub(crate) groups: [std::collections::HashMap<String, (String, u64)>; GroupField::ALL.len()],
}

/// Adds the matches of `part` to `totals`: their count, by `bucket_us`-wide buckets, and by
/// each group field's value.
pub(crate) fn report_into(
    part: &dyn PartitionIndex,
    first_seq: Seq,
    query: &Compiled,
    bucket_us: i64,
    totals: &mut ReportTotals,
) -> Result<()> {
    let selection = query.select(part, first_seq)?;
    if selection.len() == 0 {
        return Ok(());
    }
    totals.total += selection.len() as u64;
    count_into(part, first_seq, query, Some(bucket_us), &mut totals.series)?;
    for field in GroupField::ALL {
        let (values, column) = part.group(field)?;
        let mut counts = vec![0u64; values.len()];
        for ordinal in selection.iter() {
            counts[column[ordinal as usize] as usize] += 1;
        }
        let merged = &mut totals.groups[field as usize];
        for (value, count) in values.into_iter().zip(counts) {
            if count > 0 {
                merged
                    .entry(value.to_lowercase())
                    .or_insert_with(|| (value, 0))
                    .1 += count;
            }
        }
    }
    Ok(())
}
