//! Search against a brute-force scan of the same events: every filter alone and combined.

use std::sync::OnceLock;

use proptest::prelude::*;
use uuid::Uuid;

use super::*;
use crate::event::sample_event;
use crate::event::{Origin, ResultStatus};
use crate::index::{SortKey, SortValue};

const OPERATIONS: [&str; 4] = ["Create", "Retrieve", "RetrieveMultiple", "SignIn"];
const USERS: [&str; 3] = ["ana@x", "Bo@X", "cy@x"];
const INSTANCES: [&str; 2] = ["main", "sales"];
const ENTITIES: [&str; 3] = ["account", "contact", ""];
const IPS: [&str; 2] = ["10.0.0.1", "10.0.0.2"];
const RECORD_TYPES: [&str; 2] = ["CustosEntity", "CustosAccess"];
const WORKLOADS: [&str; 2] = ["Custos", "Payroll"];
const CATEGORIES: [&str; 2] = ["accessed-out-of-box-entity", "signed-in-or-out"];
const AGENTS: [&str; 2] = ["Firefox/128", "curl/8.1"];
const N_EVENTS: u64 = 120;

struct Fixture {
    _dir: tempfile::TempDir,
    log: AuditLog,
    events: Vec<AuditEvent>,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        // Small segments: the events spread over many partitions, all sealed to index files
        // but the live one, whose time ranges overlap the queries' edges.
        let mut config = LogConfig::new(dir.path(), [5; 32], "test.example/props");
        config.segment_bytes_max = 400;
        let log = AuditLog::open(config).unwrap();
        let mut events = Vec::new();
        for i in 0..N_EVENTS {
            let pick =
                |n: usize, salt: u64| ((i * 7 + salt * 13 + i * i * salt) % n as u64) as usize;
            let mut event = sample_event(0);
            // Times out of arrival order (a permutation of 0..N seconds), as ingested events
            // with their own times arrive.
            event.creation_time_us = 1_000_000 * ((i * 37) % N_EVENTS) as i64;
            event.operation = OPERATIONS[pick(4, 1)].into();
            event.user_upn = USERS[pick(3, 2)].into();
            event.user_id = format!("id-{}", pick(3, 2));
            event.instance = INSTANCES[pick(2, 3)].into();
            event.entity_name = ENTITIES[pick(3, 4)].into();
            event.client_ip = IPS[pick(2, 5)].into();
            event.record_type = RECORD_TYPES[pick(2, 6)].into();
            event.workload = WORKLOADS[pick(2, 7)].into();
            event.category = CATEGORIES[pick(2, 8)].into();
            event.user_agent = AGENTS[pick(2, 9)].into();
            event.origin = [Origin::Api, Origin::WebUI, Origin::Export][pick(3, 10)];
            event.result_status = [ResultStatus::Succeeded, ResultStatus::Denied][pick(2, 11)];
            event.record_ids = (0..pick(4, 12))
                .map(|k| Uuid::from_u128((i as u128 * 3 + k as u128) % 17))
                .collect();
            event.changes.clear();
            log.append(event.clone()).unwrap();
            events.push(event);
        }
        log.wait_sealed().unwrap();
        let sealed = log
            .stats()
            .partitions_sealed
            .load(std::sync::atomic::Ordering::Relaxed);
        // Enough that a count gives every reader thread partitions of its own, twice over.
        assert!(
            sealed >= 2 * crate::readers::FEWEST_READERS as u64,
            "the fixture spans sealed partitions: {sealed}"
        );
        Fixture {
            _dir: dir,
            log,
            events,
        }
    })
}

fn eq(list: &[String], value: &str) -> bool {
    list.is_empty() || list.iter().any(|v| v.eq_ignore_ascii_case(value))
}

/// What a search should return, by looking at every event.
fn brute_force(events: &[AuditEvent], q: &SearchQuery) -> Vec<Uuid> {
    let mut out: Vec<Uuid> = events
        .iter()
        .filter(|e| e.creation_time_us >= q.start_us && e.creation_time_us < q.end_us)
        .filter(|e| {
            eq(&q.operations, &e.operation)
                && eq(&q.instances, &e.instance)
                && eq(&q.entities, &e.entity_name)
        })
        .filter(|e| {
            eq(&q.ips, &e.client_ip)
                && eq(&q.record_types, &e.record_type)
                && eq(&q.workloads, &e.workload)
        })
        .filter(|e| eq(&q.categories, &e.category))
        .filter(|e| {
            q.users.is_empty()
                || q.users.iter().any(|u| {
                    u.eq_ignore_ascii_case(&e.user_upn) || u.eq_ignore_ascii_case(&e.user_id)
                })
        })
        .filter(|e| {
            q.record_ids.is_empty() || e.record_ids.iter().any(|r| q.record_ids.contains(r))
        })
        .filter(|e| q.origins.is_empty() || q.origins.contains(&e.origin))
        .filter(|e| q.statuses.is_empty() || q.statuses.contains(&e.result_status))
        .filter(|e| {
            // Every word of the text begins some word of the event's text fields.
            q.text.as_ref().is_none_or(|t| {
                let split = |s: &str| -> Vec<String> {
                    s.split(|c: char| !c.is_alphanumeric())
                        .filter(|w| !w.is_empty())
                        .map(str::to_lowercase)
                        .collect()
                };
                let fields = [
                    &e.operation,
                    &e.user_upn,
                    &e.user_id,
                    &e.user_agent,
                    &e.client_ip,
                    &e.entity_name,
                    &e.query,
                    &e.instance,
                    &e.correlation_id,
                ];
                let event_words: Vec<String> = fields.iter().flat_map(|f| split(f)).collect();
                split(t)
                    .iter()
                    .all(|w| event_words.iter().any(|ew| ew.starts_with(w.as_str())))
            })
        })
        .map(|e| e.id)
        .collect();
    out.reverse();
    out
}

fn some_of(pool: &'static [&'static str]) -> impl Strategy<Value = Vec<String>> {
    prop_oneof![
        3 => Just(Vec::new()),
        2 => proptest::sample::subsequence(pool, 1..=pool.len().min(2)).prop_map(|v| v.iter().map(|s| s.to_string()).collect()),
    ]
}

fn query() -> impl Strategy<Value = SearchQuery> {
    let text = prop_oneof![4 => Just(None), 1 => proptest::sample::select(vec!["fire", "CURL", "ana@", "10.0.0.2", "retrieve", "efox", "multiple", "bo x", "", "@"]).prop_map(|s| Some(s.to_string()))];
    (
        (
            0i64..130,
            0i64..130,
            some_of(&OPERATIONS),
            some_of(&USERS),
            some_of(&INSTANCES),
            some_of(&ENTITIES),
        ),
        (
            some_of(&IPS),
            some_of(&RECORD_TYPES),
            some_of(&WORKLOADS),
            some_of(&CATEGORIES),
            text,
        ),
        (
            proptest::collection::vec(0u128..20, 0..3),
            proptest::sample::subsequence(vec![Origin::Api, Origin::WebUI, Origin::Export], 0..=2),
        ),
        (
            proptest::sample::subsequence(
                vec![ResultStatus::Succeeded, ResultStatus::Denied],
                0..=1,
            ),
            1usize..50,
        ),
    )
        .prop_map(
            |(
                (a, b, operations, users, instances, entities),
                (ips, record_types, workloads, categories, text),
                (records, origins),
                (statuses, top),
            )| SearchQuery {
                start_us: a.min(b) * 1_000_000,
                end_us: a.max(b) * 1_000_000 + 1,
                operations,
                users,
                instances,
                entities,
                record_ids: records.into_iter().map(Uuid::from_u128).collect(),
                ips,
                origins,
                statuses,
                record_types,
                workloads,
                categories,
                text,
                before_seq: None,
                top,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn search_pages_agree_with_a_brute_force_scan(q in query()) {
        let fixture = fixture();
        let expect = brute_force(&fixture.events, &q);
        let mut got = Vec::new();
        let mut page_query = q.clone();
        loop {
            let page = fixture.log.search(&page_query).unwrap();
            prop_assert!(page.events.len() <= q.top);
            got.extend(page.events.iter().map(|(_, e)| e.id));
            match page.next_before_seq {
                Some(next) => page_query.before_seq = Some(next),
                None => break,
            }
        }
        prop_assert_eq!(&got, &expect);
        let counted: u64 = fixture.log.histogram(&q, None).unwrap().values().sum();
        prop_assert_eq!(counted, expect.len() as u64, "index-only counts agree too");
        let by_ten_seconds = fixture.log.histogram(&q, Some(10_000_000)).unwrap();
        prop_assert_eq!(by_ten_seconds.values().sum::<u64>(), expect.len() as u64);
        for (bucket, n) in by_ten_seconds {
            let in_bucket = fixture.events.iter().filter(|e| expect.contains(&e.id) && e.creation_time_us.div_euclid(10_000_000) * 10_000_000 == bucket).count();
            prop_assert_eq!(n, in_bucket as u64, "bucket {}", bucket);
        }
    }
}

/// Counts of `values` (compared without case), most first, ties by name.
fn ranked(values: impl Iterator<Item = String>) -> Vec<(String, u64)> {
    let mut counts: std::collections::HashMap<String, (String, u64)> = Default::default();
    for value in values {
        counts
            .entry(value.to_lowercase())
            .or_insert_with(|| (value, 0))
            .1 += 1;
    }
    let mut out: Vec<(String, u64)> = counts.into_values().collect();
    out.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn report_totals_agree_with_a_brute_force_count(q in query(), bucket_seconds in 1i64..40) {
        let fixture = fixture();
        let expect = brute_force(&fixture.events, &q);
        let matching: Vec<&AuditEvent> = fixture.events.iter().filter(|e| expect.contains(&e.id)).collect();
        let bucket = bucket_seconds * 1_000_000;
        let report = fixture.log.report(&q, bucket, 1000).unwrap();
        prop_assert_eq!(report.total, matching.len() as u64);
        let mut series = std::collections::BTreeMap::new();
        for event in &matching {
            *series.entry(event.creation_time_us.div_euclid(bucket) * bucket).or_insert(0u64) += 1;
        }
        prop_assert_eq!(&report.series, &series);
        // Same counts per value; the shown spelling of a value is whichever the index met first.
        let lower = |list: &[(String, u64)]| list.iter().map(|(v, n)| (v.to_lowercase(), *n)).collect::<std::collections::BTreeSet<_>>();
        let users = ranked(matching.iter().map(|e| e.user_upn.clone()));
        prop_assert_eq!(lower(&report.top_users), lower(&users));
        let operations = ranked(matching.iter().map(|e| e.operation.clone()));
        prop_assert_eq!(lower(&report.top_operations), lower(&operations));
        let entities = ranked(matching.iter().map(|e| e.entity_name.clone()));
        prop_assert_eq!(lower(&report.top_entities), lower(&entities));
        let truncated = fixture.log.report(&q, bucket, 2).unwrap();
        prop_assert!(truncated.top_users.len() <= 2);
        prop_assert_eq!(
            truncated.distinct,
            [users.len() as u64, operations.len() as u64, entities.len() as u64],
            "how many there are beyond the top"
        );
        prop_assert_eq!(truncated.top_users.iter().map(|(_, n)| *n).collect::<Vec<_>>(), users.iter().take(2).map(|(_, n)| *n).collect::<Vec<_>>());
    }
}

fn sort() -> impl Strategy<Value = SearchSort> {
    (
        proptest::sample::select(SortKey::ALL.map(|(key, _)| key).to_vec()),
        any::<bool>(),
    )
        .prop_map(|(key, descending)| SearchSort { key, descending })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// Sorted pages, joined, are every match in that order — by time whatever the arrival,
    /// ties by arrival in the same direction.
    #[test]
    fn sorted_pages_agree_with_a_brute_force_sort(q in query(), sort in sort()) {
        let fixture = fixture();
        let matching = brute_force(&fixture.events, &q);
        let value = |e: &AuditEvent| match sort.key {
            SortKey::CreationTime => SortValue::Time(e.creation_time_us),
            SortKey::User if e.user_upn.is_empty() => SortValue::Text(e.user_id.to_lowercase()),
            SortKey::User => SortValue::Text(e.user_upn.to_lowercase()),
            SortKey::Operation => SortValue::Text(e.operation.to_lowercase()),
            SortKey::Entity => SortValue::Text(e.entity_name.to_lowercase()),
        };
        let mut expect: Vec<(SortValue, Seq, Uuid)> = fixture
            .events
            .iter()
            .enumerate()
            .filter(|(_, e)| matching.contains(&e.id))
            .map(|(seq, e)| (value(e), seq as Seq, e.id))
            .collect();
        expect.sort_by(|a, b| sort.compare((&a.0, a.1), (&b.0, b.1)));
        let expect: Vec<Uuid> = expect.into_iter().map(|(_, _, id)| id).collect();
        let mut got = Vec::new();
        let mut after = None;
        loop {
            let page = fixture.log.search_sorted(&q, sort, after.as_ref()).unwrap();
            prop_assert!(page.events.len() <= q.top);
            got.extend(page.events.iter().map(|(_, e)| e.id));
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        prop_assert_eq!(got, expect);
    }
}

/// The workloads the log holds, from every partition's index (sealed and live alike).
#[test]
fn the_indexes_list_the_workloads_they_hold() {
    let fixture = fixture();
    let held: std::collections::BTreeSet<String> = fixture
        .events
        .iter()
        .map(|e| e.workload.to_lowercase())
        .collect();
    assert!(!held.is_empty());
    assert_eq!(
        fixture.log.workloads(0).unwrap(),
        held.into_iter().collect::<Vec<_>>()
    );
    assert!(
        fixture.log.workloads(1_000_000_000).unwrap().is_empty(),
        "nothing that recent"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    /// A count by one record id or one field's value alone is read from the posting lists'
    /// counts where a partition lies wholly inside the query, and from the listed matches where
    /// it does not: both agree with a scan, at every time range and `before_seq`.
    #[test]
    fn counts_by_one_filter_agree_with_a_brute_force_scan(
        which in 0usize..5,
        pick in 0usize..4,
        record in prop_oneof![0u128..17, Just(99)],
        a in 0i64..=N_EVENTS as i64,
        b in 0i64..=N_EVENTS as i64,
        wide in any::<bool>(),
        before in proptest::option::of(0u64..=N_EVENTS),
    ) {
        let fixture = fixture();
        let (start_us, end_us) = if wide {
            (i64::MIN, i64::MAX)
        } else {
            (a.min(b) * 1_000_000, a.max(b) * 1_000_000 + 1)
        };
        let mut q = SearchQuery {
            start_us,
            end_us,
            before_seq: before,
            ..SearchQuery::default()
        };
        let value = |values: &[&str]| vec![values[pick % values.len()].to_uppercase()];
        match which {
            0 => q.operations = value(&OPERATIONS),
            1 => q.users = value(&USERS),
            2 => q.categories = value(&CATEGORIES),
            3 => q.entities = value(&ENTITIES),
            _ => q.record_ids = vec![Uuid::from_u128(record)],
        }
        // The scan leaves `before_seq` out: an event's sequence is its place in the fixture.
        let matching = brute_force(&fixture.events, &q);
        let expect: Vec<&AuditEvent> = fixture
            .events
            .iter()
            .enumerate()
            .filter(|(seq, e)| before.is_none_or(|b| (*seq as u64) < b) && matching.contains(&e.id))
            .map(|(_, e)| e)
            .collect();
        let counted: u64 = fixture.log.histogram(&q, None).unwrap().values().sum();
        prop_assert_eq!(counted, expect.len() as u64);
        for (bucket, n) in fixture.log.histogram(&q, Some(10_000_000)).unwrap() {
            let in_bucket = expect
                .iter()
                .filter(|e| e.creation_time_us.div_euclid(10_000_000) * 10_000_000 == bucket)
                .count();
            prop_assert_eq!(n, in_bucket as u64, "bucket {}", bucket);
        }
    }
}
