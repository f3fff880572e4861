//! Bearer secrets: API keys, service-account client secrets and refresh tokens.
//!
//! Each is 256 random bits, so a fast SHA-256 is a safe way to store it (no
//! dictionary to attack, unlike passwords) and keeps every exchange cheap. Only the
//! hash is stored; comparisons are constant-time.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::Rng;
use subtle::ConstantTimeEq;

/// Visible prefix length of API keys (after `rk_`).
pub const API_KEY_PREFIX_LEN: usize = 8;

fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Hex SHA-256 of a secret: what is stored.
pub fn hash(secret: &str) -> String {
    retail_kit::convert::sha256_hex(secret.as_bytes())
}

/// Constant-time comparison of a presented secret with a stored hash.
pub fn matches(secret: &str, stored_hash: &str) -> bool {
    hash(secret).as_bytes().ct_eq(stored_hash.as_bytes()).into()
}

/// A new API key: the full key (shown once) and its visible prefix `rk_xxxxxxxx`.
pub fn new_api_key() -> (String, String) {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    let prefix: String = (0..API_KEY_PREFIX_LEN)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect();
    let prefix = format!("rk_{prefix}");
    (format!("{prefix}_{}", random_token()), prefix)
}

/// Splits a presented API key into its prefix; `None` if it is not shaped like one.
pub fn api_key_prefix(key: &str) -> Option<&str> {
    let prefix_len = 3 + API_KEY_PREFIX_LEN;
    let shaped = key.len() > prefix_len + 1
        && key.len() <= 128
        && key.starts_with("rk_")
        && key.as_bytes().get(prefix_len) == Some(&b'_')
        && key.is_ascii();
    shaped.then(|| &key[..prefix_len])
}

pub fn new_client_secret() -> String {
    format!("rs_{}", random_token())
}

pub fn new_refresh_token() -> String {
    format!("rt_{}", random_token())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_keys_carry_their_prefix_and_verify_by_hash() {
        let (key, prefix) = new_api_key();
        assert_eq!(api_key_prefix(&key), Some(prefix.as_str()));
        let stored = hash(&key);
        assert!(!stored.contains(&key[prefix.len() + 1..]));
        assert!(matches(&key, &stored));
        assert!(!matches(&format!("{key}x"), &stored));
        assert_ne!(new_api_key().0, key);
    }

    #[test]
    fn malformed_api_keys_have_no_prefix() {
        for bad in [
            "",
            "rk_",
            "rk_abc",
            "xx_abcdefgh_secret",
            "rk_abcdefghXsecret",
            "rk_abcdéfgh_secret",
        ] {
            assert_eq!(api_key_prefix(bad), None, "{bad:?}");
        }
    }
}
