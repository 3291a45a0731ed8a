//! How Tidemark authenticates to GitHub: a token, or a GitHub App installation. For an App,
//! an RS256 JWT signed with the App's private key is exchanged for an installation token,
//! which is cached until five minutes before it expires.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;

use crate::forge::ForgeError;

/// Credentials for the API. Their values never print.
#[derive(Clone)]
pub enum Auth {
    Token(String),
    App {
        app_id: u64,
        /// The App's private key, PEM.
        private_key_pem: String,
        installation_id: u64,
    },
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::Token(_) => f.write_str("Auth::Token(..)"),
            Auth::App {
                app_id,
                installation_id,
                ..
            } => write!(
                f,
                "Auth::App {{ app_id: {app_id}, installation_id: {installation_id}, .. }}"
            ),
        }
    }
}

/// An installation token and when to stop using it.
#[derive(Clone)]
pub(super) struct CachedToken {
    pub token: String,
    pub renew_at: SystemTime,
}

/// Reuse an installation token until this long before GitHub says it expires.
const RENEW_BEFORE: Duration = Duration::from_secs(300);

#[derive(serde::Serialize)]
struct Claims {
    iat: u64,
    exp: u64,
    iss: String,
}

/// The App's JWT: issued a minute in the past (clock drift), valid nine minutes (GitHub allows
/// ten at most).
pub(super) fn app_jwt(
    app_id: u64,
    private_key_pem: &str,
    now: SystemTime,
) -> Result<String, ForgeError> {
    let now = now
        .duration_since(UNIX_EPOCH)
        .map_err(|_| ForgeError::Unauthorized("the clock is before 1970".into()))?
        .as_secs();
    let claims = Claims {
        iat: now.saturating_sub(60),
        exp: now + 9 * 60,
        iss: app_id.to_string(),
    };
    let key =
        jsonwebtoken::EncodingKey::from_rsa_pem(private_key_pem.as_bytes()).map_err(|err| {
            ForgeError::Unauthorized(format!(
                "the GitHub App private key is not an RSA PEM key: {err}"
            ))
        })?;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
        &claims,
        &key,
    )
    .map_err(|err| ForgeError::Unauthorized(format!("signing the GitHub App JWT: {err}")))
}

/// `POST /app/installations/{id}/access_tokens`'s answer.
#[derive(Deserialize)]
pub(super) struct InstallationToken {
    pub token: String,
    pub expires_at: chrono::DateTime<chrono::Utc>,
}

impl InstallationToken {
    pub(super) fn cached(self) -> CachedToken {
        let expires: SystemTime = self.expires_at.into();
        CachedToken {
            token: self.token,
            renew_at: expires.checked_sub(RENEW_BEFORE).unwrap_or(UNIX_EPOCH),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_print() {
        let token = Auth::Token("ghp_secret".into());
        assert!(!format!("{token:?}").contains("ghp_secret"));
        let app = Auth::App {
            app_id: 1,
            private_key_pem: "-----BEGIN RSA PRIVATE KEY-----secret".into(),
            installation_id: 2,
        };
        assert!(!format!("{app:?}").contains("secret"));
    }

    #[test]
    fn a_bad_key_is_an_unauthorized_error_without_the_key() {
        let err = app_jwt(1, "not a key", SystemTime::now()).expect_err("refused");
        assert!(matches!(err, ForgeError::Unauthorized(_)));
        assert!(!err.to_string().contains("not a key"));
    }
}
