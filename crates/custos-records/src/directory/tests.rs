use super::*;

#[test]
fn settings_are_kept_replaced_and_removed_across_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("control.db");
    {
        let (directory, _) = Directory::open(&path, "default").unwrap();
        directory.set_setting("a", "1").unwrap();
        directory.set_setting("a", "2").unwrap();
        directory.set_setting("b", "3").unwrap();
        directory.remove_setting("b").unwrap();
        directory.remove_setting("never-set").unwrap();
    }
    let (directory, _) = Directory::open(&path, "default").unwrap();
    assert_eq!(directory.setting("a").unwrap().as_deref(), Some("2"));
    assert_eq!(directory.setting("b").unwrap(), None);
}

/// Waits up to ten seconds for `done`.
fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "{what} within 10 s");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn user(upn: &str) -> NewPrincipal {
    NewPrincipal {
        id: Uuid::new_v4(),
        upn: upn.into(),
        display_name: upn.into(),
        user_type: 0,
        password_hash: Some("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into()),
        client_id: None,
        secret_hash: None,
        global_admin: false,
        created_by: None,
    }
}

#[test]
fn two_nodes_on_one_postgresql_are_one_tenant_and_see_each_others_changes() {
    let server = crate::pg::tests::Server::start();
    let (a, created_a) = Directory::open_postgres(&server.url, "default").unwrap();
    let (b, created_b) = Directory::open_postgres(&server.url, "default").unwrap();
    assert!(created_a && !created_b, "one first run");
    assert_eq!(a.tenant_id(), b.tenant_id());

    let zoe = a.add_principal(user("zoe@contoso.test")).unwrap();
    eventually("node b to know a user node a added", || {
        b.principal(zoe.id).is_some()
    });
    assert_eq!(b.by_upn("ZOE@contoso.test").unwrap().id, zoe.id);
    // Sign-in names are unique ignoring case on every node.
    assert!(matches!(
        b.add_principal(user("Zoe@Contoso.test")),
        Err(Error::Conflict(_))
    ));

    // A user disabled on one node is disabled everywhere, her sessions ended.
    assert!(b.set_disabled(zoe.id, true).unwrap());
    eventually("node a to see the user disabled", || {
        a.principal(zoe.id)
            .is_some_and(|p| p.disabled && p.token_generation == 1)
    });

    let role = Uuid::new_v4();
    let team = Uuid::new_v4();
    assert!(a.assign_role(team, "main", role).unwrap());
    assert!(!a.assign_role(team, "main", role).unwrap(), "held already");
    assert!(a.add_team_member("main", team, zoe.id).unwrap());
    eventually("node b to see the role through the team", || {
        b.effective_roles(zoe.id, "main") == vec![role]
    });
    assert!(b.unassign_role(team, "main", role).unwrap());
    eventually("node a to see the role taken away", || {
        a.effective_roles(zoe.id, "main").is_empty()
    });

    a.set_setting("audit.search", "off").unwrap();
    assert_eq!(b.setting("audit.search").unwrap().as_deref(), Some("off"));
    a.add_instance(&InstanceInfo {
        name: "main".into(),
        state: "trial".into(),
        organization_id: Uuid::new_v4(),
        database: Some("postgres://custos@db-2.internal/sales".into()),
    })
    .unwrap();
    assert_eq!(
        b.instances().unwrap()[0].database.as_deref(),
        Some("postgres://custos@db-2.internal/sales"),
        "an instance's own database is part of the directory"
    );

    assert!(b.remove_principal(zoe.id).unwrap());
    eventually("node a to forget the deleted user", || {
        a.principal(zoe.id).is_none()
    });

    // A node opened later (or restarted) reads everything back.
    drop(a);
    let (c, created_c) = Directory::open_postgres(&server.url, "default").unwrap();
    assert!(!created_c);
    assert_eq!(c.tenant_id(), b.tenant_id());
    assert!(c.by_upn("zoe@contoso.test").is_none());
    assert_eq!(c.setting("audit.search").unwrap().as_deref(), Some("off"));
}
