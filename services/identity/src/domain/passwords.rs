//! Password hashing with argon2id (memory-hard). Hashes are PHC strings carrying their
//! own salt and parameters, so a cost change applies to new hashes without breaking
//! old ones.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString, rand_core::OsRng};
use argon2::{Algorithm, Argon2, Params, Version};

use crate::settings::PasswordSettings;

/// Hashes and verifies passwords with the configured cost.
#[derive(Debug, Clone)]
pub struct PasswordHasherConfig {
    params: Params,
}

impl PasswordHasherConfig {
    pub fn new(settings: &PasswordSettings) -> anyhow::Result<Self> {
        let params = Params::new(settings.memory_kib, settings.iterations, settings.parallelism, None)
            .map_err(|e| anyhow::anyhow!("invalid argon2 parameters: {e}"))?;
        Ok(Self { params })
    }

    fn argon2(&self) -> Argon2<'static> {
        Argon2::new(Algorithm::Argon2id, Version::V0x13, self.params.clone())
    }

    pub fn hash(&self, password: &str) -> anyhow::Result<String> {
        let salt = SaltString::generate(&mut OsRng);
        self.argon2()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| anyhow::anyhow!("failed to hash a password: {e}"))
    }

    /// False for a wrong password and for an unreadable hash.
    pub fn verify(&self, password: &str, phc: &str) -> bool {
        match PasswordHash::new(phc) {
            Ok(parsed) => self.argon2().verify_password(password.as_bytes(), &parsed).is_ok(),
            Err(_) => false,
        }
    }

    /// Spends the time of one verification, so an unknown username answers as slowly
    /// as a wrong password and usernames cannot be probed by timing.
    pub fn verify_dummy(&self, password: &str) {
        static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        let phc = DUMMY.get_or_init(|| self.hash("dummy password for timing").unwrap_or_default());
        let _ = self.verify(password, phc);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> PasswordHasherConfig {
        PasswordHasherConfig::new(&PasswordSettings {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        })
        .unwrap()
    }

    #[test]
    fn hashes_are_argon2id_salted_and_verify() {
        let h = cheap();
        let a = h.hash("correct horse battery 9").unwrap();
        let b = h.hash("correct horse battery 9").unwrap();
        assert!(a.starts_with("$argon2id$"));
        assert_ne!(a, b, "salted");
        assert!(!a.contains("correct horse"));
        assert!(h.verify("correct horse battery 9", &a));
        assert!(!h.verify("wrong horse battery 9", &a));
        assert!(!h.verify("x", "not a hash"));
    }
}
