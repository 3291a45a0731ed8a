//! Keys and secrets: the plan key that seals plans and state files at rest (gzip, then
//! ChaCha20-Poly1305 with a label authenticated alongside) and keys the variables hash, and
//! [`Secret`], a value that never prints itself; [`password`], dashboard password hashes.

pub mod password;

use std::fmt;
use std::io::{Read, Write};
use std::path::Path;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use hmac::{Hmac, Mac};
use sha2::Sha256;

const NONCE_LEN: usize = 12;

/// What a redacted value is replaced with.
pub const REDACTED: &str = "(sensitive)";

/// A secret value: its `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The plain value, for the one place that must pass it on (the step's environment).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

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

    /// A keyed signature of `data` for `purpose` (a session cookie, a CSRF token): the same
    /// key never signs two purposes alike.
    pub fn sign(&self, purpose: &str, data: &[u8]) -> [u8; 32] {
        let mut message = Vec::with_capacity(purpose.len() + 1 + data.len());
        message.extend_from_slice(purpose.as_bytes());
        message.push(0);
        message.extend_from_slice(data);
        self.mac(&message)
    }

    /// Whether `signature` is [`PlanKey::sign`]'s of `data` for `purpose`, compared in time
    /// independent of where they differ.
    pub fn verify(&self, purpose: &str, data: &[u8], signature: &[u8]) -> bool {
        let want = self.sign(purpose, data);
        signature.len() == want.len()
            && want
                .iter()
                .zip(signature)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }

    /// Compresses, then encrypts arbitrary bytes (a state file, say): the nonce followed by the
    /// ciphertext. `label` is authenticated with them, so a blob moved to a row with another
    /// label (its digest) does not open.
    pub fn seal_bytes(&self, data: &[u8], label: &[u8]) -> Result<Vec<u8>, SealError> {
        let nonce: [u8; NONCE_LEN] = rand::random();
        let payload = Payload {
            msg: &compress(data)?,
            aad: label,
        };
        let sealed = self
            .cipher()
            .encrypt(Nonce::from_slice(&nonce), payload)
            .map_err(|_| SealError::Decrypt)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// Opens what [`PlanKey::seal_bytes`] sealed with the same `label`.
    pub fn open_bytes(&self, sealed: &[u8], label: &[u8]) -> Result<Vec<u8>, SealError> {
        if sealed.len() < NONCE_LEN {
            return Err(SealError::Decrypt);
        }
        let (nonce, sealed) = sealed.split_at(NONCE_LEN);
        let payload = Payload {
            msg: sealed,
            aad: label,
        };
        let compressed = self
            .cipher()
            .decrypt(Nonce::from_slice(nonce), payload)
            .map_err(|_| SealError::Decrypt)?;
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

/// Why sealed bytes cannot be made or opened.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("cannot be decrypted: wrong key or tampered data")]
    Decrypt,
    #[error("compressing or decompressing: {0}")]
    Io(#[from] std::io::Error),
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
