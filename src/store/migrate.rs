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
    (
        6,
        "pull requests",
        include_str!("../../migrations/sqlite/0006_pull_requests.sql"),
    ),
    (
        8,
        "claim order",
        include_str!("../../migrations/sqlite/0008_claim_order.sql"),
    ),
    (
        9,
        "audit",
        include_str!("../../migrations/sqlite/0009_audit.sql"),
    ),
    (
        10,
        "environments",
        include_str!("../../migrations/sqlite/0010_environments.sql"),
    ),
    (
        11,
        "deployments",
        include_str!("../../migrations/sqlite/0011_deployments.sql"),
    ),
    (
        12,
        "controls",
        include_str!("../../migrations/sqlite/0012_controls.sql"),
    ),
    (
        13,
        "sweep indexes",
        include_str!("../../migrations/sqlite/0013_sweep_indexes.sql"),
    ),
    (
        14,
        "stack states",
        include_str!("../../migrations/sqlite/0014_stack_states.sql"),
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
    (
        6,
        "pull requests",
        include_str!("../../migrations/postgres/0006_pull_requests.sql"),
    ),
    (
        8,
        "claim order",
        include_str!("../../migrations/postgres/0008_claim_order.sql"),
    ),
    (
        9,
        "audit",
        include_str!("../../migrations/postgres/0009_audit.sql"),
    ),
    (
        10,
        "environments",
        include_str!("../../migrations/postgres/0010_environments.sql"),
    ),
    (
        11,
        "deployments",
        include_str!("../../migrations/postgres/0011_deployments.sql"),
    ),
    (
        12,
        "controls",
        include_str!("../../migrations/postgres/0012_controls.sql"),
    ),
    (
        13,
        "sweep indexes",
        include_str!("../../migrations/postgres/0013_sweep_indexes.sql"),
    ),
    (
        14,
        "stack states",
        include_str!("../../migrations/postgres/0014_stack_states.sql"),
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
    /// Applies every migration not yet applied; returns how many ran. On SQLite it takes the
    /// database's lock file first (see [`sqlite_lock`]).
    pub async fn migrate(&self) -> Result<usize> {
        let _lock = match &self.backend {
            Backend::Sqlite(pool) => sqlite_lock(pool.connect_options().get_filename()).await?,
            Backend::Postgres(_) => None,
        };
        self.migrate_locked().await
    }

    /// [`Store::migrate`] for a caller that holds the lock file already ([`Store::open`]).
    pub(super) async fn migrate_locked(&self) -> Result<usize> {
        self.migrate_through(i64::MAX).await
    }

    /// Applies the migrations up to `version` only: a database as an earlier release left it,
    /// for upgrade tests.
    #[doc(hidden)]
    pub async fn migrate_through(&self, version: i64) -> Result<usize> {
        let (all, name) = match self.backend {
            Backend::Sqlite(_) => (SQLITE, "sqlite"),
            Backend::Postgres(_) => (POSTGRES, "postgres"),
        };
        let upto = all.partition_point(|(v, ..)| *v <= version);
        let source = Source(&all[..upto]);
        let migrator = Migrator::new(source).await.context("loading migrations")?;
        let before = self.applied_migrations().await.unwrap_or(0);
        match &self.backend {
            Backend::Sqlite(pool) => migrator.run(pool).await,
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
/// `None` for an in-memory database. sqlx takes no lock on SQLite: two processes opening a new
/// database at once (the service and a CLI command) would race to switch it to WAL ("database
/// is locked") and to run migration 1 ("table repos already exists"). With the lock they take
/// turns, and the second finds everything done.
pub(super) async fn sqlite_lock(db: &std::path::Path) -> Result<Option<std::fs::File>> {
    let db = db.to_path_buf();
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
