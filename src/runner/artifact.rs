//! Plan artifacts: the binary plan (compressed, then encrypted at rest because terraform
//! writes sensitive values into it in plain text), the redacted plan JSON (compressed), and a
//! digest that binds both to what was planned. Apply opens an artifact only when its binding
//! still matches the repository, commit, stack, tool, lock file and variables it runs with.

use std::io::{Read, Write};
use std::path::Path;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::redact::Secret;

const NONCE_LEN: usize = 12;
const DIGEST_DOMAIN: &[u8] = b"tidemark-plan-v1\0";

/// The 32-byte key that encrypts binary plans at rest and keys the variables hash.
#[derive(Clone)]
pub struct PlanKey([u8; 32]);

impl std::fmt::Debug for PlanKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PlanKey(..)")
    }
}

/// A key that cannot be read, parsed or created.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("plan key in {0} is not 64 hex digits")]
    Malformed(String),
    #[error("plan key file {}: {source}", path.display())]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

impl PlanKey {
    /// A fresh random key (for `tidemark plan`, whose artifacts are never stored).
    pub fn generate() -> PlanKey {
        PlanKey(rand::random())
    }

    /// Parses 64 hex digits; `origin` names where they came from in the error.
    pub fn from_hex(text: &str, origin: &str) -> Result<PlanKey, KeyError> {
        let bytes = hex::decode(text.trim()).map_err(|_| KeyError::Malformed(origin.into()))?;
        let key = <[u8; 32]>::try_from(bytes).map_err(|_| KeyError::Malformed(origin.into()))?;
        Ok(PlanKey(key))
    }

    /// The key from the environment variable `var` when it is set, else from `path`, which is
    /// created (mode 0600, never overwritten) with a random key when absent.
    pub fn load(var: Option<&str>, path: &Path) -> Result<PlanKey, KeyError> {
        if let Some(var) = var
            && let Ok(text) = std::env::var(var)
        {
            return PlanKey::from_hex(&text, &format!("${var}"));
        }
        let io = |source| KeyError::Io {
            path: path.to_path_buf(),
            source,
        };
        use std::os::unix::fs::OpenOptionsExt;
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
        {
            Ok(mut file) => {
                let key = PlanKey::generate();
                file.write_all(hex::encode(key.0).as_bytes()).map_err(io)?;
                file.sync_all().map_err(io)?;
                Ok(key)
            }
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
                let text = std::fs::read_to_string(path).map_err(io)?;
                PlanKey::from_hex(&text, &path.display().to_string())
            }
            Err(err) => Err(io(err)),
        }
    }

    fn cipher(&self) -> ChaCha20Poly1305 {
        ChaCha20Poly1305::new(Key::from_slice(&self.0))
    }

    /// HMAC-SHA256 (RFC 2104) of `data`: a keyed hash, so that the stored variables hash
    /// cannot be used to guess low-entropy secrets offline.
    fn mac(&self, data: &[u8]) -> [u8; 32] {
        // A 32-byte key is always a valid HMAC key.
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(data);
        mac.finalize().into_bytes().into()
    }

    /// Compresses, then encrypts arbitrary bytes (a state file, say): the nonce followed by the
    /// ciphertext. `label` is authenticated with them, so a blob moved to a row with another
    /// label (its digest) does not open.
    pub fn seal_bytes(&self, data: &[u8], label: &[u8]) -> Result<Vec<u8>, ArtifactError> {
        let nonce: [u8; NONCE_LEN] = rand::random();
        let payload = Payload {
            msg: &compress(data)?,
            aad: label,
        };
        let sealed = self
            .cipher()
            .encrypt(Nonce::from_slice(&nonce), payload)
            .map_err(|_| ArtifactError::Decrypt)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// Opens what [`PlanKey::seal_bytes`] sealed with the same `label`.
    pub fn open_bytes(&self, sealed: &[u8], label: &[u8]) -> Result<Vec<u8>, ArtifactError> {
        if sealed.len() < NONCE_LEN {
            return Err(ArtifactError::Decrypt);
        }
        let (nonce, sealed) = sealed.split_at(NONCE_LEN);
        let payload = Payload {
            msg: sealed,
            aad: label,
        };
        let compressed = self
            .cipher()
            .decrypt(Nonce::from_slice(nonce), payload)
            .map_err(|_| ArtifactError::Decrypt)?;
        Ok(decompress(&compressed)?)
    }

    /// The keyed hash of a step's variables and secrets, independent of their order.
    pub fn vars_hash(
        &self,
        variables: &[(String, String)],
        secrets: &[(String, Secret)],
    ) -> String {
        let mut pairs: Vec<(&str, &str)> = variables
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .chain(secrets.iter().map(|(k, s)| (k.as_str(), s.expose())))
            .collect();
        pairs.sort();
        let mut data = Vec::new();
        for (name, value) in pairs {
            for part in [name, value] {
                data.extend_from_slice(&(part.len() as u64).to_be_bytes());
                data.extend_from_slice(part.as_bytes());
            }
        }
        hex::encode(self.mac(&data))
    }
}

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
        let nonce: [u8; NONCE_LEN] = rand::random();
        let payload = Payload {
            msg: &compress(plan)?,
            aad: digest.as_bytes(),
        };
        let sealed = key
            .cipher()
            .encrypt(Nonce::from_slice(&nonce), payload)
            .map_err(|_| ArtifactError::Decrypt)?;
        let mut plan_encrypted = nonce.to_vec();
        plan_encrypted.extend_from_slice(&sealed);
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
        if self.plan_encrypted.len() < NONCE_LEN {
            return Err(ArtifactError::Decrypt);
        }
        let (nonce, sealed) = self.plan_encrypted.split_at(NONCE_LEN);
        let payload = Payload {
            msg: sealed,
            aad: self.digest.as_bytes(),
        };
        let compressed = key
            .cipher()
            .decrypt(Nonce::from_slice(nonce), payload)
            .map_err(|_| ArtifactError::Decrypt)?;
        let plan = decompress(&compressed)?;
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

/// gzip at the default level.
pub fn compress(data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(data)?;
    encoder.finish()
}

/// gunzip.
pub fn decompress(data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    GzDecoder::new(data).read_to_end(&mut out)?;
    Ok(out)
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

    #[test]
    fn sealed_bytes_open_only_with_the_same_key_and_label() {
        let key = PlanKey::generate();
        let sealed = key.seal_bytes(b"state hunter2", b"label").expect("seal");
        assert!(!sealed.windows(7).any(|w| w == b"hunter2"));
        assert_eq!(
            key.open_bytes(&sealed, b"label").expect("open"),
            b"state hunter2"
        );
        assert!(key.open_bytes(&sealed, b"other").is_err());
        assert!(PlanKey::generate().open_bytes(&sealed, b"label").is_err());
        assert!(key.open_bytes(&sealed[..4], b"label").is_err());
    }

    #[test]
    fn vars_hash_is_keyed_and_order_independent() {
        let key = PlanKey::generate();
        let vars = |a: &str| {
            vec![
                ("TF_VAR_a".to_string(), a.to_string()),
                ("TF_VAR_b".into(), "2".into()),
            ]
        };
        let secrets = vec![("TF_VAR_pw".to_string(), Secret::new("hunter2"))];
        let mut reversed = vars("1");
        reversed.reverse();
        assert_eq!(
            key.vars_hash(&vars("1"), &secrets),
            key.vars_hash(&reversed, &secrets)
        );
        assert_ne!(
            key.vars_hash(&vars("1"), &secrets),
            key.vars_hash(&vars("3"), &secrets)
        );
        assert_ne!(
            key.vars_hash(&vars("1"), &secrets),
            PlanKey::generate().vars_hash(&vars("1"), &secrets)
        );
    }

    #[test]
    fn the_key_file_is_created_once_with_mode_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("plan.key");
        let first = PlanKey::load(None, &path).expect("create");
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = PlanKey::load(None, &path).expect("read");
        assert_eq!(first.0, again.0);
        std::fs::write(&path, "nope").expect("write");
        assert!(matches!(
            PlanKey::load(None, &path),
            Err(KeyError::Malformed(_))
        ));
    }
}
