use super::*;

fn rule(
    name: &str,
    record_types: &[&str],
    operations: &[&str],
    users: &[&str],
    days: i64,
) -> RetentionRule {
    let own = |l: &[&str]| l.iter().map(|s| s.to_string()).collect();
    RetentionRule {
        name: name.into(),
        record_types: own(record_types),
        operations: own(operations),
        users: own(users),
        days,
    }
}

#[test]
fn the_longest_matching_policy_wins() {
    let policy = RetentionPolicy {
        default_days: 90,
        instance_days: HashMap::from([("sales".to_string(), 30)]),
        rules: vec![
            rule("admin a year", &["CustosAdmin"], &[], &[], 365),
            rule("exports 2 years", &[], &["ExportToExcel"], &[], 730),
            rule("ceo forever", &[], &[], &["ceo@x"], KEEP_FOREVER),
            rule("sign-ins short", &["CustosAccess"], &["SignIn"], &[], 7),
        ],
    };
    let check = |rt: &str, op: &str, user: &str, instance: &str, expect: i64| {
        assert_eq!(
            policy.days_for(rt, op, user, instance),
            expect,
            "{rt} {op} {user} {instance}"
        );
    };
    check("CustosEntity", "Retrieve", "a@x", "main", 90);
    check("CustosEntity", "Retrieve", "a@x", "Sales", 30);
    check("custosadmin", "UpdateAuditSettings", "a@x", "main", 365);
    check("CustosEntity", "ExportToExcel", "a@x", "sales", 730);
    check(
        "CustosEntity",
        "ExportToExcel",
        "CEO@x",
        "main",
        KEEP_FOREVER,
    );
    check("CustosAccess", "SignIn", "a@x", "main", 7);
}

const DAY: i64 = crate::log::DAY_US;

/// A purge event, at seq 100, of records 10..20 whose newest event is from day 0, made on
/// day `made_on`, under a policy of `days` by default, stating `kept_until_day`.
fn purge(made_on: i64, days: i64, kept_until_day: i64) -> crate::AuditEvent {
    let mut event = crate::event::sample_event(0);
    event.operation = "PurgeAuditLog".into();
    event.record_type = "CustosAdmin".into();
    event.creation_time_us = made_on * DAY;
    event.details = serde_json::json!({
        "FirstSeq": 10, "Events": 10,
        "NewestEventUs": 0, "KeptUntilUs": kept_until_day * DAY,
        "Policy": {"DefaultDays": days, "InstanceDays": {"sales": 30}, "Rules": []},
        "PrunedBefore": {"Ranges": 1, "Sha256": pruned_digest(&RANGES[..1])},
    })
    .to_string();
    event
}

const RANGES: [PrunedRange; 2] = [
    PrunedRange {
        first: 0,
        count: 10,
        event: Some(9),
    },
    PrunedRange {
        first: 10,
        count: 10,
        event: Some(100),
    },
];

#[test]
fn a_purge_accounts_for_its_range_only_when_its_policy_let_it_go() {
    let accounts = |event: &crate::AuditEvent, seq| PurgeClaim::accounts(event, seq, &RANGES, 1);
    assert!(accounts(&purge(91, 90, 90), 100).is_ok());
    let refused = |event: &crate::AuditEvent, seq, says: &str| {
        let why = accounts(event, seq).unwrap_err();
        assert!(why.contains(says), "{why}");
    };
    refused(&purge(89, 90, 90), 100, "that its policy kept until");
    // The instance kept 30 days is the policy's shortest: a claim sooner than that is refused.
    refused(
        &purge(91, 90, 20),
        100,
        "that its policy kept at least 30 days",
    );
    refused(
        &purge(91, KEEP_FOREVER, 0),
        100,
        "its policy kept at least 30 days",
    );
    let mut forever = purge(91, KEEP_FOREVER, 90);
    forever.details = forever.details.replace("\"sales\":30", "\"sales\":-1");
    refused(&forever, 100, "keeps every event forever");
    refused(
        &purge(91, 90, 90),
        15,
        "inside the range it claims to purge",
    );
    let mut ingested = purge(91, 90, 90);
    ingested.origin = crate::Origin::Ingest;
    refused(&ingested, 100, "is not a purge by Custos");
    let other = PurgeClaim::accounts(&purge(91, 90, 90), 100, &RANGES, 0).unwrap_err();
    assert!(
        other.contains("purged records 10..20, not 0..10"),
        "{other}"
    );
    let mut unstated = purge(91, 90, 90);
    unstated.details = unstated.details.replace("NewestEventUs", "Newest");
    refused(&unstated, 100, "does not state what it purged");
    let mut before = purge(91, 90, 90);
    before.details = before.details.replace("\"Ranges\":1", "\"Ranges\":0");
    refused(&before, 100, "other ranges purged before it");
}
