//! Client secrets: generated with 256 bits of entropy, stored as argon2id hashes, hashed and
//! verified on the blocking pool so that the async runtime never stalls on them.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use base64::Engine;
use rand::RngCore;

use crate::error::ApiError;

pub fn generate_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn hash_now(secret: &str) -> Result<String, argon2::password_hash::Error> {
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    Ok(Argon2::default()
        .hash_password(secret.as_bytes(), &salt)?
        .to_string())
}

pub async fn hash(secret: String) -> Result<String, ApiError> {
    tokio::task::spawn_blocking(move || hash_now(&secret))
        .await?
        .map_err(|e| ApiError::internal(anyhow::anyhow!("hashing a secret: {e}")))
}

/// Verifies a secret; with no stored hash it still spends the same work, so that response
/// times do not tell which client ids exist.
pub async fn verify(secret: String, stored: Option<String>) -> Result<bool, ApiError> {
    tokio::task::spawn_blocking(move || {
        let stored = stored.unwrap_or_else(|| {
            // A fixed hash of a random value: verification runs and fails.
            "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$5Y4V0rC0i+qJmbWqbXc8d6FjqS5uOqAzGQ0eQ4Vf4Wk".to_owned()
        });
        match PasswordHash::new(&stored) {
            Ok(parsed) => Argon2::default().verify_password(secret.as_bytes(), &parsed).is_ok(),
            Err(_) => false,
        }
    })
    .await
    .map_err(ApiError::from)
}

/// Synchronous form for `unboxd admin` commands, which run outside request handling.
pub fn hash_blocking(secret: &str) -> anyhow::Result<String> {
    hash_now(secret).map_err(|e| anyhow::anyhow!("hashing a secret: {e}"))
}
