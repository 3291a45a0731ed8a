//! Schema migrations, embedded in the binary (one set per backend) and applied through sqlx's
//! migrator, which records them in `_sqlx_migrations` and takes a lock while it works.

use std::borrow::Cow;

use anyhow::{Context, Result};
use futures_core::future::BoxFuture;
use sqlx::error::BoxDynError;
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};
use sqlx::{AssertSqlSafe, SqlSafeStr};

use super::{Backend, Store};

/// (version, description, SQL) of each migration, in order.
type Embedded = &'static [(i64, &'static str, &'static str)];

const SQLITE: Embedded = &[
    (
        1,
        "init",
        include_str!("../../migrations/sqlite/0001_init.sql"),
    ),
    (
        2,
        "locks and applies",
        include_str!("../../migrations/sqlite/0002_locks_and_applies.sql"),
    ),
    (
        3,
        "state backend",
        include_str!("../../migrations/sqlite/0003_state_backend.sql"),
    ),
    (
        4,
        "apply gate",
        include_str!("../../migrations/sqlite/0004_apply_gate.sql"),
    ),
    (
        5,
        "drift",
        include_str!("../../migrations/sqlite/0005_drift.sql"),
    ),
];
const POSTGRES: Embedded = &[
    (
        1,
        "init",
        include_str!("../../migrations/postgres/0001_init.sql"),
    ),
    (
        2,
        "locks and applies",
        include_str!("../../migrations/postgres/0002_locks_and_applies.sql"),
    ),
    (
        3,
        "state backend",
        include_str!("../../migrations/postgres/0003_state_backend.sql"),
    ),
    (
        4,
        "apply gate",
        include_str!("../../migrations/postgres/0004_apply_gate.sql"),
    ),
    (
        5,
        "drift",
        include_str!("../../migrations/postgres/0005_drift.sql"),
    ),
];

#[derive(Debug)]
struct Source(Embedded);

impl MigrationSource<'static> for Source {
    fn resolve(self) -> BoxFuture<'static, Result<Vec<Migration>, BoxDynError>> {
        Box::pin(async move {
            Ok(self
                .0
                .iter()
                .map(|(version, description, sql)| {
                    Migration::new(
                        *version,
                        Cow::Borrowed(*description),
                        MigrationType::Simple,
                        AssertSqlSafe(*sql).into_sql_str(),
                        false,
                    )
                })
                .collect())
        })
    }
}

impl Store {
    /// Applies every migration not yet applied; returns how many ran.
    pub async fn migrate(&self) -> Result<usize> {
        let (source, name) = match self.backend {
            Backend::Sqlite(_) => (Source(SQLITE), "sqlite"),
            Backend::Postgres(_) => (Source(POSTGRES), "postgres"),
        };
        let migrator = Migrator::new(source).await.context("loading migrations")?;
        let before = self.applied_migrations().await.unwrap_or(0);
        match &self.backend {
            Backend::Sqlite(pool) => {
                // sqlx takes no lock on SQLite: two processes starting on a new database at
                // once (the service and a CLI command) would both run migration 1 and one would
                // fail with "table repos already exists". A lock file beside the database
                // makes them take turns; the second finds everything applied.
                let _lock = sqlite_migration_lock(pool).await?;
                migrator.run(pool).await
            }
            Backend::Postgres(pool) => migrator.run(pool).await,
        }
        .with_context(|| format!("applying {name} migrations"))?;
        let after = self.applied_migrations().await?;
        Ok(after.saturating_sub(before))
    }

    async fn applied_migrations(&self) -> Result<usize> {
        let sql = "SELECT COUNT(*) FROM _sqlx_migrations WHERE success";
        let count: i64 =
            super::on_pool!(self, pool => sqlx::query_scalar(sql).fetch_one(pool).await)?;
        Ok(count as usize)
    }
}

/// An exclusive lock on `DATABASE.migrate-lock`, held until the returned file is dropped;
/// `None` for an in-memory database.
async fn sqlite_migration_lock(pool: &sqlx::SqlitePool) -> Result<Option<std::fs::File>> {
    let db = pool.connect_options().get_filename().to_path_buf();
    if db.as_os_str().is_empty() || db.as_os_str() == ":memory:" {
        return Ok(None);
    }
    let path = std::path::PathBuf::from(format!("{}.migrate-lock", db.display()));
    let file = tokio::task::spawn_blocking(move || -> Result<std::fs::File> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        file.lock()
            .with_context(|| format!("locking {}", path.display()))?;
        Ok(file)
    })
    .await
    .context("the migration lock task panicked")??;
    Ok(Some(file))
}
