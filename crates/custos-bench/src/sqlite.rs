//! The SQLite baseline: the audit table a team would write by hand (BENCHMARKS.md), tuned
//! honestly — WAL, `synchronous=FULL`, one transaction per batch of the same size as Custos's
//! group commits, prepared statements; for the query scenario loaded in bulk (large
//! transactions without sync, indexes built afterwards, `ANALYZE`).

use std::path::{Path, PathBuf};

use custos_audit::{AuditEvent, canonical_json};
use rusqlite::{Connection, params};
use uuid::Uuid;

use crate::baseline::{Baseline, DAY_US, Loading};

const INDEXES: &str = "CREATE INDEX access_by_record ON audit_record_access (record_id, time);
     CREATE INDEX event_by_user ON audit_event (user, time);
     CREATE INDEX event_by_operation ON audit_event (operation, time);";

pub(crate) struct Sqlite {
    conn: Connection,
    path: PathBuf,
}

impl Sqlite {
    pub(crate) fn create(path: &Path, loading: Loading) -> anyhow::Result<Sqlite> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        let synchronous = match loading {
            Loading::Durable { .. } => "FULL",
            Loading::Bulk => "OFF",
        };
        conn.pragma_update(None, "synchronous", synchronous)?;
        conn.execute_batch(
            "CREATE TABLE audit_event (
                id BLOB PRIMARY KEY, time INTEGER NOT NULL, user TEXT NOT NULL, operation TEXT NOT NULL,
                entity TEXT NOT NULL, instance TEXT NOT NULL, ip TEXT NOT NULL, origin TEXT NOT NULL,
                status TEXT NOT NULL, record_type TEXT NOT NULL, category TEXT NOT NULL, data TEXT NOT NULL);
             CREATE TABLE audit_record_access (record_id BLOB NOT NULL, event_id BLOB NOT NULL, time INTEGER NOT NULL);",
        )?;
        if matches!(loading, Loading::Durable { .. }) {
            conn.execute_batch(INDEXES)?;
        }
        Ok(Sqlite {
            conn,
            path: path.to_path_buf(),
        })
    }

    /// Runs a query and reads every row; returns how many.
    fn rows(&self, sql: &str, params: impl rusqlite::Params) -> anyhow::Result<usize> {
        let mut statement = self.conn.prepare_cached(sql)?;
        let mut rows = statement.query(params)?;
        let mut n = 0;
        while rows.next()?.is_some() {
            n += 1;
        }
        Ok(n)
    }
}

impl Baseline for Sqlite {
    fn insert_batch(&mut self, events: &[AuditEvent]) -> anyhow::Result<()> {
        let tx = self.conn.transaction()?;
        {
            let mut event = tx.prepare_cached("INSERT INTO audit_event VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)")?;
            let mut access =
                tx.prepare_cached("INSERT INTO audit_record_access VALUES (?1, ?2, ?3)")?;
            for e in events {
                let id = e.id.as_bytes().to_vec();
                event.execute(params![
                    id,
                    e.creation_time_us,
                    e.user_upn,
                    e.operation,
                    e.entity_name,
                    e.instance,
                    e.client_ip,
                    e.origin.as_str(),
                    e.result_status.as_str(),
                    e.record_type,
                    e.category,
                    canonical_json(e)
                ])?;
                for record in &e.record_ids {
                    access.execute(params![record.as_bytes().to_vec(), id, e.creation_time_us])?;
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn finish_load(&mut self) -> anyhow::Result<()> {
        self.conn.execute_batch(INDEXES)?;
        self.conn.execute_batch("ANALYZE")?;
        self.conn.pragma_update(None, "synchronous", "FULL")?;
        Ok(())
    }

    fn bytes(&mut self) -> anyhow::Result<u64> {
        // Fold the WAL into the database, so its size is the data's.
        self.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        Ok(crate::disk_bytes(&self.path))
    }

    fn q1(&mut self, record: Uuid, since: i64, first_page: bool) -> anyhow::Result<usize> {
        let bytes = record.as_bytes().to_vec();
        if !first_page {
            return self.rows(
                "SELECT e.data FROM audit_record_access a JOIN audit_event e ON e.id = a.event_id WHERE a.record_id = ?1 AND a.time >= ?2 ORDER BY a.time DESC",
                params![bytes, since],
            );
        }
        let _: i64 = self.conn.query_row(
            "SELECT COUNT(*) FROM audit_record_access WHERE record_id = ?1 AND time >= ?2",
            params![bytes, since],
            |r| r.get(0),
        )?;
        self.rows(
            "SELECT e.data FROM audit_record_access a JOIN audit_event e ON e.id = a.event_id WHERE a.record_id = ?1 AND a.time >= ?2 ORDER BY a.time DESC LIMIT 100",
            params![bytes, since],
        )
    }

    fn q2(&mut self, user: &str, since: i64) -> anyhow::Result<usize> {
        self.rows(
            "SELECT data FROM audit_event WHERE user = ?1 AND time >= ?2 ORDER BY time DESC LIMIT 100",
            params![user, since],
        )
    }

    fn q3(&mut self, since: i64) -> anyhow::Result<usize> {
        let count: i64 = self.conn.query_row(
            "SELECT COUNT(*) FROM audit_event WHERE operation = 'ExportToExcel' AND time >= ?1",
            [since],
            |r| r.get(0),
        )?;
        let page = self.rows(
            "SELECT data FROM audit_event WHERE operation = 'ExportToExcel' AND time >= ?1 ORDER BY time DESC LIMIT 100",
            params![since],
        )?;
        Ok(count as usize + page)
    }

    fn q4(&mut self, since: i64) -> anyhow::Result<usize> {
        self.rows(
            &format!("SELECT time / {DAY_US}, COUNT(*) FROM audit_event WHERE category = 'accessed-out-of-box-entity' AND time >= ?1 GROUP BY 1"),
            params![since],
        )
    }

    fn q5(&mut self, text: &str, since: i64) -> anyhow::Result<usize> {
        self.rows(
            "SELECT data FROM audit_event WHERE data LIKE ?1 AND time >= ?2 ORDER BY time DESC LIMIT 100",
            params![format!("%{text}%"), since],
        )
    }
}
