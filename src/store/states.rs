//! The state backend's records: state versions (the whole state encrypted with the instance
//! key, its summary in the clear with sensitive outputs redacted), per-stack state locks (the
//! http backend's LOCK and UNLOCK), and per-run credentials scoped to one repository and stack.
//!
//! A lock or a credential belongs to a run and is only good while that run is `running`: a
//! worker that dies leaves neither a usable password nor a lock that blocks the next run.

use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::BeginWrite;
use super::{Store, on_pool};
use crate::crypto::{PlanKey, Secret};
use crate::statefile::{StateFileError, StateSummary, summarize_state};

/// A minted credential dies with its run, or after this long at the latest.
const CREDENTIAL_TTL: Duration = Duration::from_secs(12 * 3600);

/// A lock whose run is gone (finished, interrupted, deleted) no longer holds the stack.
const LIVE_LOCK: &str = "run_id IN (SELECT id FROM runs WHERE status = 'running')";

/// One stored state version: its clear-text summary, never the state itself.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StateVersion {
    pub serial: i64,
    pub lineage: String,
    /// sha256 (hex) of the state file.
    pub digest: String,
    /// How many managed resource instances the state holds.
    pub resource_count: i64,
    /// Their addresses.
    pub resources: Vec<String>,
    /// `{name: {value, sensitive, type}}`, sensitive values redacted.
    pub outputs: serde_json::Value,
    /// The run that wrote it, when a run did.
    pub run_id: Option<i64>,
    pub created_at: DateTime<Utc>,
    /// When a DELETE retired it: it is history, no longer the stack's current state.
    pub discarded_at: Option<DateTime<Utc>>,
}

#[derive(sqlx::FromRow)]
struct VersionRow {
    serial: i64,
    lineage: String,
    digest: String,
    resource_count: i64,
    resources: String,
    outputs: String,
    run_id: Option<i64>,
    created_at: DateTime<Utc>,
    discarded_at: Option<DateTime<Utc>>,
}

impl VersionRow {
    fn into_version(self) -> anyhow::Result<StateVersion> {
        Ok(StateVersion {
            serial: self.serial,
            lineage: self.lineage,
            digest: self.digest,
            resource_count: self.resource_count,
            resources: serde_json::from_str(&self.resources)
                .context("reading a state version's resources")?,
            outputs: serde_json::from_str(&self.outputs)
                .context("reading a state version's outputs")?,
            run_id: self.run_id,
            created_at: self.created_at,
            discarded_at: self.discarded_at,
        })
    }
}

const VERSION_COLUMNS: &str = "v.serial, v.lineage, v.digest, v.resource_count, v.resources, \
     v.outputs, v.run_id, v.created_at, v.discarded_at";

/// Why a state cannot be recorded.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state of stack {stack}: {source}")]
    Invalid {
        stack: String,
        source: StateFileError,
    },
    #[error(
        "state of stack {stack}: serial {serial} of lineage {lineage} is not newer than the stored serial {latest}"
    )]
    Stale {
        stack: String,
        lineage: String,
        serial: i64,
        latest: i64,
    },
    #[error("repository {0} is not tracked")]
    UnknownRepo(String),
    #[error(transparent)]
    Store(#[from] anyhow::Error),
}

impl From<sqlx::Error> for StateError {
    fn from(err: sqlx::Error) -> Self {
        StateError::Store(err.into())
    }
}

/// What to do with a new state given the stack's current one (pure; see `record_state`).
#[derive(Debug, PartialEq, Eq)]
enum Decision {
    Insert,
    /// The same bytes as the current version: nothing to store.
    Same,
    /// An older serial of the current lineage, or the same serial with other content.
    Stale {
        latest: i64,
    },
}

fn decide(current: Option<(&str, i64, &str)>, new: &StateSummary) -> Decision {
    match current {
        Some((lineage, serial, digest)) if lineage == new.lineage => {
            if new.serial == serial && new.digest == digest {
                Decision::Same
            } else if new.serial <= serial {
                Decision::Stale { latest: serial }
            } else {
                Decision::Insert
            }
        }
        _ => Decision::Insert,
    }
}

/// A held state lock: the lock info terraform sent (JSON with an `ID`).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct StateLock {
    pub lock_id: String,
    pub info: String,
    pub run_id: Option<i64>,
    pub created_at: DateTime<Utc>,
}

/// How a LOCK request went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockOutcome {
    Acquired,
    /// Someone else holds the stack's state.
    Held(StateLock),
}

/// How an UNLOCK request went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnlockOutcome {
    Released,
    NotLocked,
    /// Another lock ID holds the stack's state.
    Held(StateLock),
}

/// A run's credential for the state backend. The password is shown once, here.
#[derive(Debug, Clone)]
pub struct StateCredential {
    pub username: String,
    pub password: Secret,
}

/// What a valid credential allows: one stack's state, on behalf of one running run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateGrant {
    pub run_id: i64,
    pub repo: String,
    pub stack: String,
    /// The run's kind (`plan`, `apply`, `drift`).
    pub kind: String,
}

impl StateGrant {
    /// Only an apply may write or delete state; plans and drift checks read it (and lock it
    /// while they read). A plan runs code a pull request may have added, so its credential
    /// must not be able to change what it reads.
    pub fn may_write(&self) -> bool {
        self.kind == "apply"
    }
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

impl Store {
    async fn repo_id(&self, repo: &str) -> Result<i64, StateError> {
        let id: Option<i64> = on_pool!(self, pool => {
            sqlx::query_scalar("SELECT id FROM repos WHERE name = $1")
                .bind(repo)
                .fetch_optional(pool)
                .await?
        });
        id.ok_or_else(|| StateError::UnknownRepo(repo.to_string()))
    }

    /// The stack's current state version (the newest one no DELETE retired), if any.
    pub async fn latest_state(
        &self,
        repo: &str,
        stack: &str,
    ) -> anyhow::Result<Option<StateVersion>> {
        let sql = format!(
            "SELECT {VERSION_COLUMNS} FROM state_versions v JOIN repos p ON p.id = v.repo_id \
             WHERE p.name = $1 AND v.stack_path = $2 AND v.discarded_at IS NULL ORDER BY v.id DESC LIMIT 1"
        );
        let row: Option<VersionRow> = on_pool!(self, pool => {
            sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(repo).bind(stack).fetch_optional(pool).await?
        });
        row.map(VersionRow::into_version).transpose()
    }

    /// Every state version of a stack, newest first (retired ones included).
    pub async fn state_versions(
        &self,
        repo: &str,
        stack: &str,
    ) -> anyhow::Result<Vec<StateVersion>> {
        let sql = format!(
            "SELECT {VERSION_COLUMNS} FROM state_versions v JOIN repos p ON p.id = v.repo_id \
             WHERE p.name = $1 AND v.stack_path = $2 ORDER BY v.id DESC"
        );
        let rows: Vec<VersionRow> = on_pool!(self, pool => {
            sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(repo).bind(stack).fetch_all(pool).await?
        });
        rows.into_iter().map(VersionRow::into_version).collect()
    }

    /// The newest version of a stack's state with this serial.
    pub async fn state_version(
        &self,
        repo: &str,
        stack: &str,
        serial: i64,
    ) -> anyhow::Result<Option<StateVersion>> {
        let sql = format!(
            "SELECT {VERSION_COLUMNS} FROM state_versions v JOIN repos p ON p.id = v.repo_id \
             WHERE p.name = $1 AND v.stack_path = $2 AND v.serial = $3 ORDER BY v.id DESC LIMIT 1"
        );
        let row: Option<VersionRow> = on_pool!(self, pool => {
            sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(repo).bind(stack).bind(serial).fetch_optional(pool).await?
        });
        row.map(VersionRow::into_version).transpose()
    }

    /// The state file itself, decrypted: of version `serial`, or the current one for `None`.
    pub async fn state_blob(
        &self,
        repo: &str,
        stack: &str,
        serial: Option<i64>,
        key: &PlanKey,
    ) -> anyhow::Result<Option<Vec<u8>>> {
        let row: Option<(Option<Vec<u8>>, String, i64)> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT v.state_encrypted, v.digest, v.serial FROM state_versions v JOIN repos p ON p.id = v.repo_id \
                 WHERE p.name = $1 AND v.stack_path = $2 \
                 AND (($3 IS NULL AND v.discarded_at IS NULL) OR v.serial = $3) ORDER BY v.id DESC LIMIT 1",
            )
            .bind(repo)
            .bind(stack)
            .bind(serial)
            .fetch_optional(pool)
            .await?
        });
        let Some((sealed, digest, serial)) = row else {
            return Ok(None);
        };
        let what = || format!("state serial {serial} of stack {stack} in {repo}");
        let sealed = sealed.with_context(|| format!("{} has no stored state file", what()))?;
        let raw = key
            .open_bytes(&sealed, digest.as_bytes())
            .with_context(what)?;
        anyhow::ensure!(
            sha256_hex(&raw) == digest,
            "{} does not match its digest",
            what()
        );
        Ok(Some(raw))
    }

    /// Stores a new state version of a stack from a state file (a POST to the backend, or a
    /// `terraform state pull` after an apply of a stack with its own backend). The file is
    /// encrypted with `key`; its summary is kept in the clear with sensitive outputs redacted.
    /// The same bytes as the current version store nothing; an older serial of the current
    /// lineage is refused ([`StateError::Stale`]).
    pub async fn record_state(
        &self,
        repo: &str,
        stack: &str,
        run_id: Option<i64>,
        raw: &[u8],
        key: &PlanKey,
    ) -> Result<StateVersion, StateError> {
        let summary = summarize_state(raw).map_err(|source| StateError::Invalid {
            stack: stack.to_string(),
            source,
        })?;
        let repo_id = self.repo_id(repo).await?;
        let sealed = key
            .seal_bytes(raw, summary.digest.as_bytes())
            .context("encrypting a state file")?;
        let now = Utc::now();
        let resources = serde_json::to_string(&summary.resources).context("state resources")?;
        let outputs = summary.outputs.to_string();
        let decision = on_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let current: Option<(String, i64, String)> = sqlx::query_as(
                "SELECT lineage, serial, digest FROM state_versions WHERE repo_id = $1 AND stack_path = $2 \
                 AND discarded_at IS NULL ORDER BY id DESC LIMIT 1",
            )
            .bind(repo_id)
            .bind(stack)
            .fetch_optional(&mut *tx)
            .await?;
            let decision = decide(
                current.as_ref().map(|(l, s, d)| (l.as_str(), *s, d.as_str())),
                &summary,
            );
            if decision == Decision::Insert {
                sqlx::query(
                    "INSERT INTO state_versions (repo_id, stack_path, serial, lineage, digest, resource_count, \
                     outputs, run_id, created_at, state_encrypted, resources) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                )
                .bind(repo_id)
                .bind(stack)
                .bind(summary.serial)
                .bind(&summary.lineage)
                .bind(&summary.digest)
                .bind(summary.resources.len() as i64)
                .bind(&outputs)
                .bind(run_id)
                .bind(now)
                .bind(&sealed)
                .bind(&resources)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
            }
            decision
        });
        match decision {
            Decision::Insert => Ok(StateVersion {
                serial: summary.serial,
                lineage: summary.lineage,
                digest: summary.digest,
                resource_count: summary.resources.len() as i64,
                resources: summary.resources,
                outputs: summary.outputs,
                run_id,
                created_at: now,
                discarded_at: None,
            }),
            Decision::Same => Ok(self
                .latest_state(repo, stack)
                .await?
                .with_context(|| format!("the state of stack {stack} vanished"))?),
            Decision::Stale { latest } => Err(StateError::Stale {
                stack: stack.to_string(),
                lineage: summary.lineage,
                serial: summary.serial,
                latest,
            }),
        }
    }

    /// Retires a stack's current state (the backend's DELETE); its versions stay as history.
    /// Returns how many versions were retired.
    pub async fn discard_state(&self, repo: &str, stack: &str) -> anyhow::Result<u64> {
        Ok(on_pool!(self, pool => {
            sqlx::query(
                "UPDATE state_versions SET discarded_at = $1 WHERE stack_path = $2 AND discarded_at IS NULL \
                 AND repo_id IN (SELECT id FROM repos WHERE name = $3)",
            )
            .bind(Utc::now())
            .bind(stack)
            .bind(repo)
            .execute(pool)
            .await?
            .rows_affected()
        }))
    }

    /// The lock held on a stack's state, if a running run holds one.
    pub async fn state_lock(&self, repo: &str, stack: &str) -> anyhow::Result<Option<StateLock>> {
        let sql = format!(
            "SELECT lock_id, info, run_id, created_at FROM state_locks WHERE stack_path = $1 \
             AND repo_id IN (SELECT id FROM repos WHERE name = $2) AND {LIVE_LOCK}"
        );
        Ok(on_pool!(self, pool => {
            sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(stack).bind(repo).fetch_optional(pool).await?
        }))
    }

    /// Takes the lock on a stack's state for `run_id` with terraform's lock `info` (JSON whose
    /// `ID` is `lock_id`). A lock left by a run that is no longer running is taken over.
    pub async fn lock_state(
        &self,
        repo: &str,
        stack: &str,
        lock_id: &str,
        info: &str,
        run_id: i64,
    ) -> Result<LockOutcome, StateError> {
        let repo_id = self.repo_id(repo).await?;
        let stale = format!(
            "DELETE FROM state_locks WHERE repo_id = $1 AND stack_path = $2 AND (run_id IS NULL OR NOT ({LIVE_LOCK}))"
        );
        let taken = on_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            sqlx::query(sqlx::AssertSqlSafe(stale))
                .bind(repo_id)
                .bind(stack)
                .execute(&mut *tx)
                .await?;
            let taken = sqlx::query(
                "INSERT INTO state_locks (repo_id, stack_path, lock_id, info, run_id, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (repo_id, stack_path) DO NOTHING",
            )
            .bind(repo_id)
            .bind(stack)
            .bind(lock_id)
            .bind(info)
            .bind(run_id)
            .bind(Utc::now())
            .execute(&mut *tx)
            .await?
            .rows_affected()
                == 1;
            tx.commit().await?;
            taken
        });
        if taken {
            return Ok(LockOutcome::Acquired);
        }
        match self.state_lock(repo, stack).await? {
            Some(held) if held.lock_id == lock_id => Ok(LockOutcome::Acquired),
            Some(held) => Ok(LockOutcome::Held(held)),
            // The holder released it between the insert and the read: the caller may retry.
            None => Ok(LockOutcome::Held(StateLock {
                lock_id: String::new(),
                info: "{}".into(),
                run_id: None,
                created_at: Utc::now(),
            })),
        }
    }

    /// Releases the lock `lock_id` on a stack's state.
    pub async fn unlock_state(
        &self,
        repo: &str,
        stack: &str,
        lock_id: &str,
    ) -> anyhow::Result<UnlockOutcome> {
        let Some(held) = self.state_lock(repo, stack).await? else {
            return Ok(UnlockOutcome::NotLocked);
        };
        if held.lock_id != lock_id {
            return Ok(UnlockOutcome::Held(held));
        }
        on_pool!(self, pool => {
            sqlx::query(
                "DELETE FROM state_locks WHERE stack_path = $1 AND lock_id = $2 \
                 AND repo_id IN (SELECT id FROM repos WHERE name = $3)",
            )
            .bind(stack)
            .bind(lock_id)
            .bind(repo)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(UnlockOutcome::Released)
    }

    /// Mints a credential for run `run_id` to use the state of `stack` in `repo`, and nothing
    /// else: to read and lock it, and, for an apply run only, to write it ([`StateGrant::may_write`]). Only its hash is stored; it is good while the run is running, until
    /// [`Store::revoke_state_credentials`], for twelve hours at most.
    pub async fn mint_state_credential(
        &self,
        run_id: i64,
        repo: &str,
        stack: &str,
    ) -> anyhow::Result<StateCredential> {
        let repo_id = self.repo_id(repo).await.map_err(anyhow::Error::from)?;
        let username = format!("run-{run_id}-{}", hex::encode(rand::random::<[u8; 6]>()));
        let password = hex::encode(rand::random::<[u8; 32]>());
        let now = Utc::now();
        let expires = now + chrono::Duration::from_std(CREDENTIAL_TTL)?;
        on_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO state_credentials (username, password_sha256, run_id, repo_id, stack_path, created_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(&username)
            .bind(sha256_hex(password.as_bytes()))
            .bind(run_id)
            .bind(repo_id)
            .bind(stack)
            .bind(now)
            .bind(expires)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(StateCredential {
            username,
            password: Secret::new(password),
        })
    }

    /// What a username and password may do, if they are a live credential.
    pub async fn authorize_state(
        &self,
        username: &str,
        password: &str,
    ) -> anyhow::Result<Option<StateGrant>> {
        let row: Option<(String, i64, String, String, String)> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT c.password_sha256, c.run_id, p.name, c.stack_path, r.kind FROM state_credentials c \
                 JOIN repos p ON p.id = c.repo_id JOIN runs r ON r.id = c.run_id \
                 WHERE c.username = $1 AND c.revoked_at IS NULL AND c.expires_at > $2 AND r.status = 'running'",
            )
            .bind(username)
            .bind(Utc::now())
            .fetch_optional(pool)
            .await?
        });
        // Hashes are compared, not passwords: how long the comparison takes says nothing
        // about the password.
        Ok(row
            .filter(|(hash, ..)| *hash == sha256_hex(password.as_bytes()))
            .map(|(_, run_id, repo, stack, kind)| StateGrant {
                run_id,
                repo,
                stack,
                kind,
            }))
    }

    /// Revokes every state credential of a run and releases the state locks it still holds
    /// (the run has ended). Returns how many credentials were revoked.
    pub async fn revoke_state_credentials(&self, run_id: i64) -> anyhow::Result<u64> {
        Ok(on_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let revoked = sqlx::query(
                "UPDATE state_credentials SET revoked_at = $1 WHERE run_id = $2 AND revoked_at IS NULL",
            )
            .bind(Utc::now())
            .bind(run_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            sqlx::query("DELETE FROM state_locks WHERE run_id = $1")
                .bind(run_id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            revoked
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(lineage: &str, serial: i64, digest: &str) -> StateSummary {
        StateSummary {
            serial,
            lineage: lineage.into(),
            digest: digest.into(),
            resources: Vec::new(),
            outputs: serde_json::json!({}),
        }
    }

    #[test]
    fn newer_serials_and_new_lineages_are_stored() {
        let check = |current: Option<(&str, i64, &str)>, new: StateSummary, expected: Decision| {
            assert_eq!(decide(current, &new), expected, "{current:?} then {new:?}");
        };
        check(None, summary("a", 0, "d0"), Decision::Insert);
        check(
            Some(("a", 1, "d1")),
            summary("a", 2, "d2"),
            Decision::Insert,
        );
        check(Some(("a", 1, "d1")), summary("a", 1, "d1"), Decision::Same);
        check(
            Some(("a", 1, "d1")),
            summary("a", 1, "dx"),
            Decision::Stale { latest: 1 },
        );
        check(
            Some(("a", 5, "d5")),
            summary("a", 4, "d4"),
            Decision::Stale { latest: 5 },
        );
        check(
            Some(("a", 5, "d5")),
            summary("b", 1, "e1"),
            Decision::Insert,
        );
    }
}
