//! The SQLite baseline: the audit table a team would write by hand (BENCHMARKS.md), tuned
//! honestly — WAL, `synchronous=FULL`, one transaction per batch of the same size as Custos's
//! group commits, prepared statements.

use std::path::Path;

use custos_audit::{AuditEvent, canonical_json};
use rusqlite::{Connection, params};

pub(crate) struct Baseline {
    pub(crate) conn: Connection,
}

impl Baseline {
    pub(crate) fn create(path: &Path) -> anyhow::Result<Baseline> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.execute_batch(
            "CREATE TABLE audit_event (
                id BLOB PRIMARY KEY, time INTEGER NOT NULL, user TEXT NOT NULL, operation TEXT NOT NULL,
                entity TEXT NOT NULL, instance TEXT NOT NULL, ip TEXT NOT NULL, origin TEXT NOT NULL,
                status TEXT NOT NULL, record_type TEXT NOT NULL, category TEXT NOT NULL, data TEXT NOT NULL);
             CREATE TABLE audit_record_access (record_id BLOB NOT NULL, event_id BLOB NOT NULL, time INTEGER NOT NULL);
             CREATE INDEX access_by_record ON audit_record_access (record_id, time);
             CREATE INDEX event_by_user ON audit_event (user, time);
             CREATE INDEX event_by_operation ON audit_event (operation, time);",
        )?;
        Ok(Baseline { conn })
    }

    /// Inserts one batch in one transaction (durable when it returns).
    pub(crate) fn insert_batch(&mut self, events: &[AuditEvent]) -> anyhow::Result<()> {
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

    /// Folds the WAL into the database, so its size is the data's.
    pub(crate) fn checkpoint(&self) -> anyhow::Result<()> {
        self.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        Ok(())
    }
}
