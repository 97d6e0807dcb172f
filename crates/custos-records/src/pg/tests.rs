//! The store contract on a real PostgreSQL (Debian's `postgresql`; `scripts/test` installs it),
//! started on loopback in a folder of its own (`scripts/throwaway-postgres`) and stopped at the
//! end; each case runs in a schema of its own, as each instance does.

use std::process::Command;

use super::*;
use crate::contract::CASES;
use crate::seed::seed_entities;
use crate::store::{RecordStore, WriteContext};

/// A throwaway PostgreSQL server (`scripts/throwaway-postgres`); stopped on drop.
pub(crate) struct Server {
    dir: tempfile::TempDir,
    pub(crate) url: String,
}

fn script() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/throwaway-postgres")
}

impl Server {
    pub(crate) fn start() -> Server {
        Server::start_with(false)
    }

    /// A server that takes TLS too (its CA in `ca.pem` of its folder).
    fn start_with(tls: bool) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let started = Command::new(script())
            .arg("start")
            .arg(dir.path())
            .env("THROWAWAY_PG_TLS", if tls { "1" } else { "" })
            .output()
            .unwrap();
        assert!(
            started.status.success(),
            "these tests need Debian's postgresql (scripts/test installs it): {}",
            String::from_utf8_lossy(&started.stderr)
        );
        let url = String::from_utf8(started.stdout)
            .unwrap()
            .trim()
            .to_string();
        Server { dir, url }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new(script())
            .arg("stop")
            .arg(self.dir.path())
            .status();
    }
}

#[test]
fn the_store_contract_holds_on_postgresql() {
    let server = Server::start();
    for (n, (name, case)) in CASES.iter().enumerate() {
        let store = PgStore::open(&server.url, &format!("case_{n}")).unwrap();
        store.install(&seed_entities()).unwrap();
        eprintln!("case {name}");
        case(&store);
    }
    // A schema is one instance: another store of the same database sees none of it.
    let other = PgStore::open(&server.url, "case_0").unwrap();
    assert!(other.catalog().entities().next().is_some());
    let fresh = PgStore::open(&server.url, "untouched").unwrap();
    assert!(fresh.catalog().entities().next().is_none());
    assert!(PgStore::open(&server.url, "Bad\"Name").is_err());

    let lists = PgStore::open(&server.url, "lists").unwrap();
    lists.install(&seed_entities()).unwrap();
    crate::contract::the_lists_users_run_most_are_served_by_indexes(
        &|entity, query| lists.plan(entity, query),
        &|plan| {
            plan.lines()
                .any(|line| line.trim_start().starts_with("Sort"))
        },
    );
}

#[test]
fn a_backup_restores_on_either_engine() {
    let server = Server::start();
    let context = WriteContext {
        actor: Uuid::from_u128(1),
        now: time::OffsetDateTime::UNIX_EPOCH,
        platform: false,
        delegate: None,
    };
    let pg = PgStore::open(&server.url, "source").unwrap();
    pg.install(&seed_entities()).unwrap();
    let made = pg
        .create(
            "account",
            None,
            vec![
                ("name".into(), Value::String("Zoë's \"firm\"".into())),
                ("revenue".into(), Value::Decimal(12.5)),
                ("numberofemployees".into(), Value::Integer(-3)),
            ],
            context,
            &mut |_| Ok(()),
        )
        .unwrap();
    let files = tempfile::tempdir().unwrap();
    let file = files.path().join("backup.db");
    pg.backup(&file).unwrap();

    // The file is the embedded format: SQLite restores it.
    let sqlite = crate::SqliteStore::open(&files.path().join("records.db")).unwrap();
    sqlite.install(&seed_entities()).unwrap();
    sqlite.restore(&file).unwrap();
    assert_eq!(
        sqlite.retrieve("account", made.id).unwrap(),
        made.after.clone().unwrap()
    );

    // And PostgreSQL restores it over changes made since, whole.
    pg.delete("account", made.id, None, context, &mut |_| Ok(()))
        .unwrap();
    pg.restore(&file).unwrap();
    assert_eq!(
        pg.retrieve("account", made.id).unwrap(),
        made.after.unwrap()
    );
    assert!(pg.restore(&files.path().join("records.db-wal")).is_err());
}

#[test]
fn a_database_is_shown_without_its_password() {
    assert_eq!(
        crate::database_address("postgres://custos:s3cret@db-2.internal:5433/records").as_deref(),
        Some("postgres://custos@db-2.internal:5433/records")
    );
    let shown =
        crate::database_address("host=db-3 user=custos password=s3cret dbname=sales").unwrap();
    assert_eq!(shown, "postgres://custos@db-3:5432/sales");
    assert_eq!(crate::database_address("not a connection string"), None);
}

#[test]
fn sslmode_require_is_verified_tls_or_no_connection() {
    let server = Server::start_with(true);
    assert!(server.url.ends_with("?sslmode=require"), "{}", server.url);
    // Not signed by a trusted root (the Mozilla roots): no connection at all.
    let refused = PgStore::open(&server.url, "tls_case")
        .err()
        .map(|e| e.to_string());
    assert!(
        refused
            .as_deref()
            .is_some_and(|e| e.contains("certificate")),
        "{refused:?}"
    );
    assert!(crate::trust_postgres_ca(&server.dir.path().join("server.key")).is_err());
    assert_eq!(
        crate::trust_postgres_ca(&server.dir.path().join("ca.pem")).unwrap(),
        1
    );
    let store = PgStore::open(&server.url, "tls_case").unwrap();
    store.install(&seed_entities()).unwrap();
    let mut client = tls::connect(&server.url).unwrap();
    let encrypted: bool = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(encrypted, "the connection is TLS");
    // The name is checked too: the certificate is for 127.0.0.1, not for localhost, though
    // both reach the same server.
    let renamed = server.url.replace("127.0.0.1", "localhost");
    let refused = tls::connect(&renamed).err().map(|e| format!("{e:?}"));
    assert!(
        refused
            .as_deref()
            .is_some_and(|e| e.contains("NotValidForName")),
        "{refused:?}"
    );
}
