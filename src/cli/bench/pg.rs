//! `hark bench --store postgres://…`: the PostgreSQL rows' database, and the check on what
//! PostgreSQL adds to a channel call's p99.

use anyhow::{bail, Context};

use super::{ms, Check, Table};
use crate::store::postgres::describe;

/// A database made on the given server for one run, and dropped after it, so that no
/// earlier run's functions, calls or secrets key are found in it.
pub(super) struct BenchDatabase {
    /// The server as given, to create and drop the database through.
    server: String,
    name: String,
    /// The given URL, naming the run's database.
    pub url: String,
}

impl BenchDatabase {
    /// `hark_bench_PID_SUFFIX` on `server`.
    pub async fn create(server: &str, suffix: &str) -> anyhow::Result<BenchDatabase> {
        let mut url = reqwest::Url::parse(server).context("--store: not a URL")?;
        if !matches!(url.scheme(), "postgres" | "postgresql") {
            bail!("--store: expected postgres://USER@HOST:PORT/DB");
        }
        let name = format!("hark_bench_{}_{suffix}", std::process::id());
        url.set_path(&name);
        let database = BenchDatabase {
            server: server.to_owned(),
            name,
            url: url.into(),
        };
        database
            .execute(&format!("CREATE DATABASE {}", database.name))
            .await
            .context("--store: creating the bench's database")?;
        Ok(database)
    }

    pub async fn drop(self) {
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        if let Err(e) = self.execute(&sql).await {
            eprintln!("hark bench: dropping the database {}: {e:#}", self.name);
        }
    }

    async fn execute(&self, sql: &str) -> anyhow::Result<()> {
        let (client, connection) = tokio_postgres::connect(&self.server, tokio_postgres::NoTls)
            .await
            .map_err(|e| anyhow::anyhow!(describe(&e)))?;
        let connection = tokio::spawn(connection);
        let done = client
            .batch_execute(sql)
            .await
            .map_err(|e| anyhow::anyhow!(describe(&e)));
        drop(client);
        let _ = connection.await;
        done
    }
}

/// The goal: what PostgreSQL adds to a signed channel call's p99 (the PostgreSQL
/// row's p99 less the unsigned function call's) is at most twice what SQLite adds, both
/// committing with `durability`.
pub(super) fn added_p99(
    table: &Table,
    durability: &str,
    unsigned: usize,
    sqlite: usize,
    pg: usize,
) -> Check {
    let p99 = |row: usize| table.rows[row].figures.p99;
    let added = |row: usize| ms(p99(row).saturating_sub(p99(unsigned)));
    let ratio = added(pg) / added(sqlite).max(1e-3);
    Check {
        what: format!(
            "slack: added p99, PostgreSQL / SQLite, {} ((row {} − row {}) / (row {} − row {}))",
            durability,
            pg + 1,
            unsigned + 1,
            sqlite + 1,
            unsigned + 1
        ),
        value: format!("{ratio:.2}× ({:.2} / {:.2} ms)", added(pg), added(sqlite)),
        target: "≤ 2×".into(),
        met: ratio <= 2.0,
    }
}
