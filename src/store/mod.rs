//! The database: one store API over SQLite (the embedded default, in WAL mode) and
//! PostgreSQL (for several instances sharing the work). Only this module knows SQL.
//!
//! Queries are written once in SQL both backends accept (`$1` placeholders, `RETURNING`,
//! partial unique indexes) and run through `on_pool!`, which expands the same expression for
//! whichever pool this store holds. Where the SQL must differ, the two variants sit side by side.

mod audit;
mod controls;
mod drift;
mod gate;
mod listing;
mod locks;
mod metrics;
mod migrate;
mod overview;
mod pulls;
mod repos;
mod retention;
mod runs;
mod states;
mod types;

pub use audit::AuditRecord;
pub use controls::Freeze;
pub use drift::{
    DriftCheck, DriftCheckRow, DriftDecision, DriftSaved, DriftStack, DriftStatus, OutboxRow,
};
pub use gate::StackSettings;
pub use metrics::{DeployedCommit, Gauges, HistoryFilter};
pub use overview::{OptionalStatus, StackBadge, StackFilter, StackOverview, StackState};
pub use pulls::PrRow;
pub use repos::StackRecord;
pub use retention::{Ages, Swept};
pub use runs::Recovered;
pub use states::{
    LockOutcome, StateCredential, StateError, StateGrant, StateLock, StateVersion, UnlockOutcome,
};

pub use types::*;

use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, Result};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

/// Runs one expression against whichever pool the store holds, binding it to `$pool`.
macro_rules! on_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match &$store.backend {
            $crate::store::Backend::Sqlite($pool) => $body,
            $crate::store::Backend::Postgres($pool) => $body,
        }
    };
}
pub(crate) use on_pool;

/// Starts a transaction that writes. On SQLite it takes the write lock at once (`BEGIN
/// IMMEDIATE`): a deferred transaction that reads, then writes, fails with `SQLITE_BUSY` and
/// without waiting when another connection committed in between (WAL snapshots cannot be
/// upgraded), which concurrent log writes made happen under load.
pub(crate) trait BeginWrite {
    type Db: sqlx::Database;
    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, Self::Db>, sqlx::Error>;
}

impl BeginWrite for SqlitePool {
    type Db = sqlx::Sqlite;
    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, sqlx::Error> {
        self.begin_with("BEGIN IMMEDIATE").await
    }
}

impl BeginWrite for PgPool {
    type Db = sqlx::Postgres;
    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
        self.begin().await
    }
}

#[derive(Debug, Clone)]
pub(crate) enum Backend {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// A handle on the database; cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    pub(crate) backend: Backend,
}

/// Creates the directory a SQLite database file goes in, when it is missing.
fn create_database_dir(db: &std::path::Path) -> Result<()> {
    if let Some(parent) = db.parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating database directory {}", parent.display()))?;
    }
    Ok(())
}

impl Store {
    /// Connects to a `sqlite://PATH` (created if missing) or `postgres://` URL. Does not migrate.
    pub async fn connect(url: &str) -> Result<Store> {
        let backend = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            // No JIT: Tidemark's queries are short, and compiling the plan of one that reads
            // every stack (the stacks page) costs more than running it.
            let options = PgConnectOptions::from_str(url)
                .with_context(|| format!("database URL {}", redact_url(url)))?
                .options([("jit", "off")]);
            let pool = PgPoolOptions::new()
                .max_connections(16)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(options)
                .await
                .with_context(|| format!("connecting to database {}", redact_url(url)))?;
            Backend::Postgres(pool)
        } else {
            let options = SqliteConnectOptions::from_str(url)
                .with_context(|| format!("database URL {url:?}"))?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .foreign_keys(true)
                .busy_timeout(Duration::from_secs(10));
            create_database_dir(options.get_filename())?;
            let pool = SqlitePoolOptions::new()
                .max_connections(8)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(options)
                .await
                .with_context(|| format!("opening database {url}"))?;
            Backend::Sqlite(pool)
        };
        Ok(Store { backend })
    }

    /// Connects and applies every pending migration: what `serve` and the CLI commands do.
    pub async fn open(url: &str) -> Result<Store> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let store = Self::connect(url).await?;
            store.migrate().await?;
            return Ok(store);
        }
        // Creating a SQLite database and migrating it happen under its lock file.
        let options =
            SqliteConnectOptions::from_str(url).with_context(|| format!("database URL {url:?}"))?;
        let db = options.get_filename();
        create_database_dir(db)?;
        let _lock = migrate::sqlite_lock(db).await?;
        let store = Self::connect(url).await?;
        store.migrate_locked().await?;
        Ok(store)
    }

    /// Which backend this is: `sqlite` or `postgres`.
    pub fn backend_name(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }

    pub async fn close(&self) {
        on_pool!(self, pool => pool.close().await)
    }
}

/// A database URL fit for messages: the password, if any, is masked.
pub fn redact_url(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://")
        && let Some((userinfo, host)) = rest.split_once('@')
        && let Some((user, _)) = userinfo.split_once(':')
    {
        return format!("{scheme}://{user}:***@{host}");
    }
    url.to_string()
}
