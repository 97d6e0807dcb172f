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
