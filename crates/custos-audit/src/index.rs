//! The search index over the log: derived state, rebuilt from the log on every start.
//!
//! For each event it keeps a compact entry (time, location and interned filter fields) and
//! posting lists from each filter term (user, operation, entity, record id…) to the events
//! carrying it. A search drives from the shortest posting list among the filters given and
//! checks the others on the entries, newest first, so it reads the log only for the events it
//! returns (and for free text, which is matched on the decoded events).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use uuid::Uuid;

use crate::event::{AuditEvent, Origin, ResultStatus};
use crate::log::{Location, Seq};

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

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Field {
    Operation,
    User,
    Instance,
    Entity,
    Ip,
    RecordType,
    Workload,
    Category,
}

#[derive(Clone, Copy)]
struct Entry {
    time_us: i64,
    location: Location,
    operation: u32,
    user_id: u32,
    user_upn: u32,
    instance: u32,
    entity: u32,
    ip: u32,
    record_type: u32,
    workload: u32,
    category: u32,
    origin: Origin,
    status: ResultStatus,
    /// Deleted by retention: never matches again.
    purged: bool,
}

/// The in-memory index; seq `n` is `entries[n]`.
#[derive(Default)]
pub(crate) struct MemIndex {
    entries: Vec<Entry>,
    terms: HashMap<String, u32>,
    /// Term text by id (lowercase), for retention decisions.
    term_names: Vec<String>,
    postings: HashMap<(Field, u32), Vec<Seq>>,
    by_record: HashMap<Uuid, Vec<Seq>>,
    /// Free-text words, sorted so a prefix is a range.
    by_word: BTreeMap<String, Vec<Seq>>,
    by_id: HashMap<Uuid, Seq>,
}

impl MemIndex {
    pub(crate) fn len(&self) -> u64 {
        self.entries.len() as u64
    }

    pub(crate) fn seq_of(&self, id: Uuid) -> Option<(Seq, Location)> {
        let seq = *self.by_id.get(&id)?;
        let entry = &self.entries[seq as usize];
        (!entry.purged).then_some((seq, entry.location))
    }

    fn term(&mut self, text: &str) -> u32 {
        let key = text.to_lowercase();
        if let Some(id) = self.terms.get(&key) {
            return *id;
        }
        let id = self.term_names.len() as u32;
        self.term_names.push(key.clone());
        self.terms.insert(key, id);
        id
    }

    /// Placeholders for events purged by retention before this start.
    pub(crate) fn insert_gap(&mut self, seq: Seq, count: u64) {
        assert_eq!(seq, self.len(), "index entries must arrive in log order");
        let placeholder = Entry {
            time_us: 0,
            location: Location {
                segment: u32::MAX,
                offset: 0,
                len: 0,
            },
            operation: 0,
            user_id: 0,
            user_upn: 0,
            instance: 0,
            entity: 0,
            ip: 0,
            record_type: 0,
            workload: 0,
            category: 0,
            origin: Origin::Api,
            status: ResultStatus::Succeeded,
            purged: true,
        };
        self.entries
            .extend(std::iter::repeat_n(placeholder, count as usize));
    }

    /// Marks `first .. end` purged.
    pub(crate) fn purge_range(&mut self, first: Seq, end: Seq) {
        for entry in &mut self.entries[first as usize..end as usize] {
            entry.purged = true;
        }
    }

    /// Whether every live event of `first .. end` has expired under `days_for(record type,
    /// operation, user, instance)` at `now_us`; also (oldest, newest) creation times.
    pub(crate) fn expired(
        &self,
        first: Seq,
        end: Seq,
        now_us: i64,
        days_for: impl Fn(&str, &str, &str, &str) -> i64,
    ) -> (bool, i64, i64) {
        let (mut oldest, mut newest) = (i64::MAX, i64::MIN);
        for entry in self.entries[first as usize..end as usize]
            .iter()
            .filter(|e| !e.purged)
        {
            oldest = oldest.min(entry.time_us);
            newest = newest.max(entry.time_us);
            let name = |id: u32| self.term_names[id as usize].as_str();
            let days = days_for(
                name(entry.record_type),
                name(entry.operation),
                name(entry.user_upn),
                name(entry.instance),
            );
            if days < 0
                || entry
                    .time_us
                    .saturating_add(days.saturating_mul(86_400_000_000))
                    > now_us
            {
                return (false, oldest, newest);
            }
        }
        (true, oldest, newest)
    }

    fn lookup(&self, text: &str) -> Option<u32> {
        self.terms.get(&text.to_lowercase()).copied()
    }

    pub(crate) fn insert(&mut self, seq: Seq, location: Location, event: &AuditEvent) {
        assert_eq!(seq, self.len(), "index entries must arrive in log order");
        let entry = Entry {
            time_us: event.creation_time_us,
            location,
            operation: self.term(&event.operation),
            user_id: self.term(&event.user_id),
            user_upn: self.term(&event.user_upn),
            instance: self.term(&event.instance),
            entity: self.term(&event.entity_name),
            ip: self.term(&event.client_ip),
            record_type: self.term(&event.record_type),
            workload: self.term(&event.workload),
            category: self.term(&event.category),
            origin: event.origin,
            status: event.result_status,
            purged: false,
        };
        for (field, term) in [
            (Field::Operation, entry.operation),
            (Field::User, entry.user_id),
            (Field::Instance, entry.instance),
            (Field::Entity, entry.entity),
            (Field::Ip, entry.ip),
            (Field::RecordType, entry.record_type),
            (Field::Workload, entry.workload),
            (Field::Category, entry.category),
        ] {
            self.postings.entry((field, term)).or_default().push(seq);
        }
        if entry.user_upn != entry.user_id {
            self.postings
                .entry((Field::User, entry.user_upn))
                .or_default()
                .push(seq);
        }
        for record_id in &event.record_ids {
            let list = self.by_record.entry(*record_id).or_default();
            // A record listed twice in one event is posted once.
            if list.last() != Some(&seq) {
                list.push(seq);
            }
        }
        for word in words(event) {
            self.by_word.entry(word).or_default().push(seq);
        }
        self.by_id.insert(event.id, seq);
        self.entries.push(entry);
    }

    /// Candidate seqs newest first, before the free-text check, as (seq, location); stops after
    /// `limit` matches when the caller needs no more.
    pub(crate) fn candidates(&self, query: &SearchQuery, limit: usize) -> Vec<(Seq, Location)> {
        let mut out = Vec::new();
        self.scan(query, |seq, entry| {
            out.push((seq, entry.location));
            out.len() < limit
        });
        out
    }

    /// Matching events (text aside) counted by `bucket_us`-wide time buckets; one bucket when
    /// `bucket_us` is `None`.
    pub(crate) fn histogram(
        &self,
        query: &SearchQuery,
        bucket_us: Option<i64>,
    ) -> std::collections::BTreeMap<i64, u64> {
        let mut out = std::collections::BTreeMap::new();
        self.scan(query, |_, entry| {
            let bucket = bucket_us.map_or(0, |b| entry.time_us.div_euclid(b) * b);
            *out.entry(bucket).or_insert(0) += 1;
            true
        });
        out
    }

    /// The events whose words begin with every word of the free text, sorted; `None` without
    /// free text (or a text without words).
    fn text_matches(&self, query: &SearchQuery) -> Option<Vec<Seq>> {
        let words = query_words(query.text.as_deref()?);
        // A text without words ("", "@") filters nothing.
        let mut result: Option<Vec<Seq>> = None;
        for word in words {
            let mut seqs: Vec<Seq> = self
                .by_word
                .range(word.clone()..)
                .take_while(|(key, _)| key.starts_with(&word))
                .flat_map(|(_, list)| list.iter().copied())
                .collect();
            seqs.sort_unstable();
            seqs.dedup();
            result = Some(match result {
                None => seqs,
                Some(previous) => previous
                    .into_iter()
                    .filter(|s| seqs.binary_search(s).is_ok())
                    .collect(),
            });
        }
        result
    }

    /// Visits matching entries newest first until `visit` returns false.
    fn scan(&self, query: &SearchQuery, mut visit: impl FnMut(Seq, &Entry) -> bool) {
        let mut term_filters: Vec<(Field, Vec<u32>)> = Vec::new();
        for (field, values) in [
            (Field::Operation, &query.operations),
            (Field::User, &query.users),
            (Field::Instance, &query.instances),
            (Field::Entity, &query.entities),
            (Field::Ip, &query.ips),
            (Field::RecordType, &query.record_types),
            (Field::Workload, &query.workloads),
            (Field::Category, &query.categories),
        ] {
            if values.is_empty() {
                continue;
            }
            let terms: Vec<u32> = values.iter().filter_map(|v| self.lookup(v)).collect();
            if terms.is_empty() {
                return;
            }
            term_filters.push((field, terms));
        }

        // Drive from the shortest list among the filters that have posting lists.
        let mut driver: Option<Vec<Seq>> = None;
        let mut consider = |lists: Vec<&Vec<Seq>>| {
            let n: usize = lists.iter().map(|l| l.len()).sum();
            if driver.as_ref().is_none_or(|d| n < d.len()) {
                let mut merged: Vec<Seq> = lists.into_iter().flatten().copied().collect();
                merged.sort_unstable();
                merged.dedup();
                driver = Some(merged);
            }
        };
        if !query.record_ids.is_empty() {
            consider(
                query
                    .record_ids
                    .iter()
                    .filter_map(|id| self.by_record.get(id))
                    .collect(),
            );
        }
        let text = self.text_matches(query);
        if let Some(text) = &text {
            consider(vec![text]);
        }
        for (field, terms) in &term_filters {
            consider(
                terms
                    .iter()
                    .filter_map(|t| self.postings.get(&(*field, *t)))
                    .collect(),
            );
        }

        let upper = query.before_seq.unwrap_or(u64::MAX).min(self.len());
        let mut check = |seq: Seq| -> bool {
            let entry = &self.entries[seq as usize];
            let text_ok = text.as_ref().is_none_or(|t| t.binary_search(&seq).is_ok());
            !(text_ok && self.matches(entry, seq, query, &term_filters)) || visit(seq, entry)
        };
        match driver {
            Some(list) => {
                let end = list.partition_point(|s| *s < upper);
                for seq in list[..end].iter().rev() {
                    if !check(*seq) {
                        break;
                    }
                }
            }
            None => {
                for seq in (0..upper).rev() {
                    if !check(seq) {
                        break;
                    }
                }
            }
        }
    }

    fn matches(
        &self,
        entry: &Entry,
        seq: Seq,
        query: &SearchQuery,
        term_filters: &[(Field, Vec<u32>)],
    ) -> bool {
        if entry.purged {
            return false;
        }
        if entry.time_us < query.start_us || entry.time_us >= query.end_us {
            return false;
        }
        if !query.origins.is_empty() && !query.origins.contains(&entry.origin) {
            return false;
        }
        if !query.statuses.is_empty() && !query.statuses.contains(&entry.status) {
            return false;
        }
        for (field, terms) in term_filters {
            let ok = match field {
                Field::Operation => terms.contains(&entry.operation),
                Field::User => terms.contains(&entry.user_id) || terms.contains(&entry.user_upn),
                Field::Instance => terms.contains(&entry.instance),
                Field::Entity => terms.contains(&entry.entity),
                Field::Ip => terms.contains(&entry.ip),
                Field::RecordType => terms.contains(&entry.record_type),
                Field::Workload => terms.contains(&entry.workload),
                Field::Category => terms.contains(&entry.category),
            };
            if !ok {
                return false;
            }
        }
        if !query.record_ids.is_empty() {
            let touched = query.record_ids.iter().any(|id| {
                self.by_record
                    .get(id)
                    .is_some_and(|list| list.binary_search(&seq).is_ok())
            });
            if !touched {
                return false;
            }
        }
        true
    }
}

/// The words of the event's free-text fields: lowercase runs of letters and digits.
fn words(event: &AuditEvent) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut add = |text: &str| {
        for word in text
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
        {
            out.insert(word.to_lowercase());
        }
    };
    for text in [
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
    ] {
        add(text);
    }
    for change in &event.changes {
        add(&change.attribute);
        for value in [&change.old, &change.new].into_iter().flatten() {
            add(value);
        }
    }
    out
}

/// The words of a free-text query; each must begin a word of a matching event.
pub(crate) fn query_words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}
