use super::*;

fn policy(audit: bool, read: bool, entity: EntityAuditFlags) -> AuditPolicy {
    AuditPolicy {
        settings: InstanceAuditSettings {
            audit,
            read,
            user_access: false,
        },
        entities: HashMap::from([("account".to_string(), entity)]),
    }
}

fn flags(audit: bool, retrieve: bool, retrieve_multiple: bool) -> EntityAuditFlags {
    EntityAuditFlags {
        audit,
        retrieve,
        retrieve_multiple,
        unaudited_attributes: HashSet::new(),
    }
}

/// Each row: (instance audit, read audit, entity audit, retrieve, retrieve multiple) →
/// (change, retrieve, retrieve multiple), as in the table of SPEC §4.
#[test]
fn decisions_follow_the_spec_table() {
    let rows = [
        ((true, true, true, true, true), (true, true, true)),
        ((false, true, true, true, true), (false, false, false)),
        ((true, false, true, true, true), (true, false, false)),
        ((true, true, false, true, true), (false, false, false)),
        ((true, true, true, false, true), (true, false, true)),
        ((true, true, true, true, false), (true, true, false)),
    ];
    for ((audit, read, entity, retrieve, multiple), expect) in rows {
        let p = policy(audit, read, flags(entity, retrieve, multiple));
        let got = (
            p.audits_change("account"),
            p.audits_retrieve("account"),
            p.audits_retrieve_multiple("account"),
        );
        assert_eq!(
            got,
            expect,
            "row {:?}",
            (audit, read, entity, retrieve, multiple)
        );
        assert!(
            !p.audits_change("contact"),
            "an unknown entity is never audited"
        );
    }
}

#[test]
fn unaudited_attributes_are_left_out() {
    let mut entity = flags(true, false, false);
    entity.unaudited_attributes.insert("telephone1".into());
    let p = policy(true, false, entity);
    assert!(p.audits_attribute("account", "name"));
    assert!(!p.audits_attribute("account", "telephone1"));
}

#[test]
fn everything_records_every_action_on_every_known_entity() {
    let mut off = flags(false, false, false);
    off.unaudited_attributes.insert("name".into());
    let policy = policy(false, false, off).everything();
    assert!(policy.audits_change("account"));
    assert!(policy.audits_retrieve("account"));
    assert!(policy.audits_retrieve_multiple("account"));
    assert!(policy.audits_bulk());
    assert!(policy.audits_user_access());
    assert!(policy.audits_attribute("account", "name"));
}
