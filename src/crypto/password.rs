//! Dashboard passwords: only their argon2id hashes (PHC strings, `$argon2id$v=19$...`) are
//! kept, in environment variables the config names; a login is checked against the hash in
//! constant time. Hashes of other algorithms, or argon2 variants other than `argon2id`, are
//! refused when the service starts, never silently weaker.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2};

/// Why a stored hash cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("not a PHC string ($argon2id$v=19$m=...,t=...,p=...$SALT$HASH): {0}")]
    Malformed(String),
    #[error("the hash is {0}, not argon2id")]
    NotArgon2id(String),
}

/// Checks that `phc` is an argon2id hash Tidemark can verify against.
pub fn check_hash(phc: &str) -> Result<(), HashError> {
    let parsed = PasswordHash::new(phc.trim()).map_err(|e| HashError::Malformed(e.to_string()))?;
    if parsed.algorithm != Algorithm::Argon2id.ident() {
        return Err(HashError::NotArgon2id(parsed.algorithm.to_string()));
    }
    Ok(())
}

/// Whether `password` is the one `phc` was made from (false for a hash that does not parse).
pub fn verify(phc: &str, password: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(phc.trim()) else {
        return false;
    };
    Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok()
}

/// An argon2id hash of `password` with a fresh random salt and argon2's default cost (19 MiB,
/// two passes: OWASP's recommendation).
pub fn hash(password: &str) -> String {
    let salt: [u8; 16] = rand::random();
    let salt = SaltString::encode_b64(&salt).expect("16 bytes are a valid salt");
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2 with default parameters hashes any password")
        .to_string()
}

/// A hash no password matches, verified against when a login names an unknown user, so an
/// unknown name takes as long to refuse as a wrong password.
pub fn decoy() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| hash(&hex::encode(rand::random::<[u8; 16]>())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_verifies_its_password_only() {
        let phc = hash("correct horse");
        assert!(phc.starts_with("$argon2id$v=19$"), "{phc}");
        check_hash(&phc).expect("usable");
        assert!(verify(&phc, "correct horse"));
        assert!(!verify(&phc, "correct horse "));
        assert!(!verify("garbage", "correct horse"));
        assert!(!verify(decoy(), "correct horse"));
    }

    #[test]
    fn other_algorithms_and_garbage_are_refused() {
        let argon2i = "$argon2i$v=19$m=16,t=2,p=1$c2FsdHNhbHQ$YQ8zL2ODXnZV3y+e5p9bJw";
        assert!(matches!(check_hash(argon2i), Err(HashError::NotArgon2id(a)) if a == "argon2i"));
        assert!(matches!(
            check_hash("hunter2"),
            Err(HashError::Malformed(_))
        ));
    }
}
