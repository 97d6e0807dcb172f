//! The PostgreSQL baseline (run when `--postgres URL` names a reachable server): the same
//! schema as the SQLite one, each table partitioned by day, each batch loaded with `COPY` in
//! one transaction with `synchronous_commit=on` — the Teleport / Dataverse-style SQL audit
//! table; for the query scenario loaded in bulk (`synchronous_commit=off`, indexes built
//! afterwards, `ANALYZE`). It works in a schema of its own, dropped first.

use std::fmt::Write;

use custos_audit::{AuditEvent, canonical_json};
use postgres::fallible_iterator::FallibleIterator;
use postgres::{Client, NoTls};
use uuid::Uuid;

use crate::baseline::{Baseline, DAY_US, Loading};

const SCHEMA: &str = "custos_bench";

/// On the partitioned tables, so every day's partition gets them.
const INDEXES: &str = "CREATE INDEX access_by_record ON audit_record_access (record_id, time);
     CREATE INDEX event_by_user ON audit_event (usr, time);
     CREATE INDEX event_by_operation ON audit_event (operation, time);";

pub(crate) struct Postgres {
    client: Client,
}

/// `text` escaped for COPY's text format.
fn copy_text(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
}

impl Postgres {
    /// Connects and creates the tables, with a partition for each day of `first_day ..=
    /// last_day` (days since the epoch).
    pub(crate) fn create(
        url: &str,
        first_day: i64,
        last_day: i64,
        loading: Loading,
    ) -> anyhow::Result<Postgres> {
        let mut client = Client::connect(url, NoTls)?;
        let synchronous = match loading {
            Loading::Durable { .. } => "on",
            Loading::Bulk => "off",
        };
        client.batch_execute(&format!(
            "SET synchronous_commit = {synchronous};
             DROP SCHEMA IF EXISTS {SCHEMA} CASCADE;
             CREATE SCHEMA {SCHEMA};
             SET search_path = {SCHEMA};
             CREATE TABLE audit_event (
                id uuid NOT NULL, time bigint NOT NULL, usr text NOT NULL, operation text NOT NULL,
                entity text NOT NULL, instance text NOT NULL, ip text NOT NULL, origin text NOT NULL,
                status text NOT NULL, record_type text NOT NULL, category text NOT NULL, data text NOT NULL,
                PRIMARY KEY (id, time)) PARTITION BY RANGE (time);
             CREATE TABLE audit_record_access (record_id uuid NOT NULL, event_id uuid NOT NULL, time bigint NOT NULL)
                PARTITION BY RANGE (time);"
        ))?;
        if matches!(loading, Loading::Durable { .. }) {
            client.batch_execute(INDEXES)?;
        }
        for day in first_day..=last_day {
            let (from, to) = (day * DAY_US, (day + 1) * DAY_US);
            client.batch_execute(&format!(
                "CREATE TABLE audit_event_{day} PARTITION OF audit_event FOR VALUES FROM ({from}) TO ({to});
                 CREATE TABLE audit_record_access_{day} PARTITION OF audit_record_access FOR VALUES FROM ({from}) TO ({to});"
            ))?;
        }
        Ok(Postgres { client })
    }

    /// Runs a query and reads every row as it streams in (a hot record's events do not fit
    /// in memory at once); returns how many.
    fn rows(
        &mut self,
        sql: &str,
        params: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> anyhow::Result<usize> {
        let mut rows = self.client.query_raw(sql, params.iter().copied())?;
        let mut n = 0;
        while rows.next()?.is_some() {
            n += 1;
        }
        Ok(n)
    }
}

impl Baseline for Postgres {
    fn insert_batch(&mut self, events: &[AuditEvent]) -> anyhow::Result<()> {
        let mut event_rows = String::new();
        let mut access_rows = String::new();
        for e in events {
            let _ = write!(event_rows, "{}\t{}\t", e.id, e.creation_time_us);
            for text in [
                &e.user_upn,
                &e.operation,
                &e.entity_name,
                &e.instance,
                &e.client_ip,
            ] {
                copy_text(&mut event_rows, text);
                event_rows.push('\t');
            }
            for text in [e.origin.as_str(), e.result_status.as_str()] {
                copy_text(&mut event_rows, text);
                event_rows.push('\t');
            }
            for text in [&e.record_type, &e.category] {
                copy_text(&mut event_rows, text);
                event_rows.push('\t');
            }
            copy_text(&mut event_rows, &canonical_json(e));
            event_rows.push('\n');
            for record in &e.record_ids {
                let _ = writeln!(access_rows, "{record}\t{}\t{}", e.id, e.creation_time_us);
            }
        }
        let mut tx = self.client.transaction()?;
        for (table, rows) in [
            ("audit_event", event_rows),
            ("audit_record_access", access_rows),
        ] {
            let mut writer = tx.copy_in(&format!("COPY {table} FROM STDIN"))?;
            std::io::Write::write_all(&mut writer, rows.as_bytes())?;
            writer.finish()?;
        }
        tx.commit()?;
        Ok(())
    }

    fn finish_load(&mut self) -> anyhow::Result<()> {
        self.client.batch_execute(INDEXES)?;
        self.client.batch_execute(
            "ANALYZE audit_event; ANALYZE audit_record_access; SET synchronous_commit = on",
        )?;
        Ok(())
    }

    fn bytes(&mut self) -> anyhow::Result<u64> {
        let row = self.client.query_one(
            "SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0)::bigint FROM pg_class c
             JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relkind = 'r'",
            &[&SCHEMA],
        )?;
        Ok(row.get::<_, i64>(0) as u64)
    }

    fn q1(&mut self, record: Uuid, since: i64, first_page: bool) -> anyhow::Result<usize> {
        let record = record.to_string();
        if !first_page {
            return self.rows(
                "SELECT e.data FROM audit_record_access a JOIN audit_event e ON e.id = a.event_id AND e.time = a.time WHERE a.record_id = $1::text::uuid AND a.time >= $2 ORDER BY a.time DESC",
                &[&record, &since],
            );
        }
        self.rows(
            "SELECT COUNT(*) FROM audit_record_access WHERE record_id = $1::text::uuid AND time >= $2",
            &[&record, &since],
        )?;
        self.rows(
            "SELECT e.data FROM audit_record_access a JOIN audit_event e ON e.id = a.event_id AND e.time = a.time WHERE a.record_id = $1::text::uuid AND a.time >= $2 ORDER BY a.time DESC LIMIT 100",
            &[&record, &since],
        )
    }

    fn q2(&mut self, user: &str, since: i64) -> anyhow::Result<usize> {
        self.rows(
            "SELECT data FROM audit_event WHERE usr = $1 AND time >= $2 ORDER BY time DESC LIMIT 100",
            &[&user, &since],
        )
    }

    fn q3(&mut self, since: i64) -> anyhow::Result<usize> {
        let count: i64 = self
            .client
            .query_one(
                "SELECT COUNT(*) FROM audit_event WHERE operation = 'ExportToExcel' AND time >= $1",
                &[&since],
            )?
            .get(0);
        let page = self.rows(
            "SELECT data FROM audit_event WHERE operation = 'ExportToExcel' AND time >= $1 ORDER BY time DESC LIMIT 100",
            &[&since],
        )?;
        Ok(count as usize + page)
    }

    fn q4(&mut self, since: i64) -> anyhow::Result<usize> {
        self.rows(
            &format!("SELECT time / {DAY_US}, COUNT(*) FROM audit_event WHERE category = 'accessed-out-of-box-entity' AND time >= $1 GROUP BY 1"),
            &[&since],
        )
    }

    fn q5(&mut self, text: &str, since: i64) -> anyhow::Result<usize> {
        self.rows(
            "SELECT data FROM audit_event WHERE data LIKE $1 AND time >= $2 ORDER BY time DESC LIMIT 100",
            &[&format!("%{text}%"), &since],
        )
    }
}
