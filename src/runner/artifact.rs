//! Plan artifacts: the binary plan (compressed, then encrypted at rest because terraform
//! writes sensitive values into it in plain text), the redacted plan JSON (compressed), and a
//! digest that binds both to what was planned. Apply opens an artifact only when its binding
//! still matches the repository, commit, stack, tool, lock file and variables it runs with.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::crypto::{PlanKey, SealError, compress, decompress};

const DIGEST_DOMAIN: &[u8] = b"tidemark-plan-v1\0";

/// What a plan is bound to. Apply recomputes it and refuses an artifact that differs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binding {
    pub repo: String,
    pub commit: String,
    pub stack: String,
    pub runner: String,
    pub tool_version: String,
    /// sha256 of `.terraform.lock.hcl` after init (of the empty string when there is none).
    pub lock_hash: String,
    /// [`PlanKey::vars_hash`] of the variables and secrets.
    pub vars_hash: String,
}

impl Binding {
    /// The first field that differs from `other`, with both values (none of them secret).
    fn mismatch(&self, other: &Binding) -> Option<(&'static str, String, String)> {
        let fields = [
            ("repo", &self.repo, &other.repo),
            ("commit", &self.commit, &other.commit),
            ("stack", &self.stack, &other.stack),
            ("runner", &self.runner, &other.runner),
            ("tool_version", &self.tool_version, &other.tool_version),
            ("lock_hash", &self.lock_hash, &other.lock_hash),
            ("vars_hash", &self.vars_hash, &other.vars_hash),
        ];
        fields
            .into_iter()
            .find(|(_, a, b)| a != b)
            .map(|(name, a, b)| (name, a.clone(), b.clone()))
    }
}

/// A stored plan.
#[derive(Debug, Clone)]
pub struct PlanArtifact {
    /// The binary plan, gzip-compressed, then encrypted: nonce followed by ciphertext.
    pub plan_encrypted: Vec<u8>,
    /// The redacted plan JSON, gzip-compressed.
    pub plan_json: Vec<u8>,
    /// sha256 hex over the binding and the binary plan.
    pub digest: String,
    pub binding: Binding,
}

/// Why an artifact cannot be built or opened.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("the plan no longer matches: {field} was {planned:?} at plan time and is {now:?} now")]
    BindingMismatch {
        field: &'static str,
        planned: String,
        now: String,
    },
    #[error("the plan cannot be decrypted: wrong key or tampered artifact")]
    Decrypt,
    #[error("the plan's digest does not match its content")]
    Digest,
    #[error("compressing or decompressing a plan: {0}")]
    Io(#[from] std::io::Error),
}

impl From<SealError> for ArtifactError {
    fn from(err: SealError) -> ArtifactError {
        match err {
            SealError::Decrypt => ArtifactError::Decrypt,
            SealError::Io(err) => ArtifactError::Io(err),
        }
    }
}

/// The digest binding `plan` to `binding`.
pub fn digest(binding: &Binding, plan: &[u8]) -> String {
    // A struct always serialises: every field is a string.
    let binding_json = serde_json::to_vec(binding).unwrap_or_default();
    let hash = Sha256::new()
        .chain_update(DIGEST_DOMAIN)
        .chain_update((binding_json.len() as u64).to_be_bytes())
        .chain_update(&binding_json)
        .chain_update(plan)
        .finalize();
    hex::encode(hash)
}

impl PlanArtifact {
    /// Builds an artifact from the binary plan and the already redacted plan JSON.
    pub fn seal(
        key: &PlanKey,
        binding: Binding,
        plan: &[u8],
        redacted_json: &[u8],
    ) -> Result<PlanArtifact, ArtifactError> {
        let digest = digest(&binding, plan);
        let plan_encrypted = key.seal_bytes(plan, digest.as_bytes())?;
        Ok(PlanArtifact {
            plan_encrypted,
            plan_json: compress(redacted_json)?,
            digest,
            binding,
        })
    }

    /// The binary plan, after checking that the artifact is bound to `expected` and intact.
    pub fn open(&self, key: &PlanKey, expected: &Binding) -> Result<Vec<u8>, ArtifactError> {
        if let Some((field, planned, now)) = self.binding.mismatch(expected) {
            return Err(ArtifactError::BindingMismatch {
                field,
                planned,
                now,
            });
        }
        let plan = key.open_bytes(&self.plan_encrypted, self.digest.as_bytes())?;
        if digest(expected, &plan) != self.digest {
            return Err(ArtifactError::Digest);
        }
        Ok(plan)
    }

    /// The redacted plan JSON, decompressed.
    pub fn plan_json(&self) -> Result<Vec<u8>, ArtifactError> {
        Ok(decompress(&self.plan_json)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding() -> Binding {
        Binding {
            repo: "infra".into(),
            commit: "abc123".into(),
            stack: "stacks/net".into(),
            runner: "terraform".into(),
            tool_version: "1.0.3".into(),
            lock_hash: "l".into(),
            vars_hash: "v".into(),
        }
    }

    #[test]
    fn a_sealed_plan_opens_with_the_same_binding_and_key() {
        let key = PlanKey::generate();
        let artifact = PlanArtifact::seal(&key, binding(), b"PLAN-hunter2", b"{}").expect("seal");
        assert!(!artifact.plan_encrypted.windows(7).any(|w| w == b"hunter2"));
        assert_eq!(
            artifact.open(&key, &binding()).expect("open"),
            b"PLAN-hunter2"
        );
        assert_eq!(artifact.plan_json().expect("json"), b"{}");
        assert_eq!(artifact.digest, digest(&binding(), b"PLAN-hunter2"));
    }

    #[test]
    fn a_changed_binding_wrong_key_or_tampering_is_refused() {
        let key = PlanKey::generate();
        let artifact = PlanArtifact::seal(&key, binding(), b"PLAN", b"{}").expect("seal");
        let moved = Binding {
            commit: "def456".into(),
            ..binding()
        };
        let err = artifact.open(&key, &moved).expect_err("mismatch");
        assert_eq!(
            err.to_string(),
            "the plan no longer matches: commit was \"abc123\" at plan time and is \"def456\" now"
        );
        assert!(matches!(
            artifact.open(&PlanKey::generate(), &binding()),
            Err(ArtifactError::Decrypt)
        ));
        let mut tampered = artifact.clone();
        let last = tampered.plan_encrypted.len() - 1;
        tampered.plan_encrypted[last] ^= 1;
        assert!(matches!(
            tampered.open(&key, &binding()),
            Err(ArtifactError::Decrypt)
        ));
        let mut relabelled = artifact.clone();
        relabelled.digest = digest(&binding(), b"OTHER");
        assert!(relabelled.open(&key, &binding()).is_err());
    }
}
