//! Request fields parsed into types that can only hold valid values.

use std::sync::LazyLock;

use regex::Regex;
use retail_kit::error::Violation;

fn violation(field: &str, description: impl Into<String>) -> Violation {
    Violation::new(field, description)
}

/// Login name: 3-64 of `a-z 0-9 . _ -`, starting with a letter or digit. Stored
/// lower-case so that `Alice` and `alice` are one user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Username(String);

static USERNAME: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[a-z0-9][a-z0-9._-]{2,63}$").unwrap_or_else(|_| unreachable!("constant pattern")));

impl Username {
    pub fn parse(field: &str, raw: &str) -> Result<Self, Violation> {
        let normalised = raw.trim().to_lowercase();
        if normalised.is_empty() {
            return Err(violation(field, "is required"));
        }
        if !USERNAME.is_match(&normalised) {
            return Err(violation(
                field,
                "must be 3-64 characters of a-z, 0-9, '.', '_', '-', starting with a letter or digit",
            ));
        }
        Ok(Self(normalised))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A syntactically plausible email address (one `@`, a dotted domain), at most 254
/// characters, stored lower-case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

static EMAIL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^[a-z0-9.!#$%&'*+/=?^_`{|}~-]+@[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)+$")
        .unwrap_or_else(|_| unreachable!("constant pattern"))
});

impl Email {
    pub fn parse(field: &str, raw: &str) -> Result<Self, Violation> {
        let normalised = raw.trim().to_lowercase();
        if normalised.len() > 254 || !EMAIL.is_match(&normalised) {
            return Err(violation(field, "must be an email address"));
        }
        Ok(Self(normalised))
    }

    /// Empty input means "no email".
    pub fn parse_optional(field: &str, raw: &str) -> Result<Option<Self>, Violation> {
        if raw.trim().is_empty() {
            Ok(None)
        } else {
            Self::parse(field, raw).map(Some)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A password that meets the policy: 12-128 characters, not only letters and not only
/// digits, not containing the username. Never printed.
pub struct Password(String);

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(..)")
    }
}

pub const MIN_PASSWORD_CHARS: usize = 12;
pub const MAX_PASSWORD_CHARS: usize = 128;

impl Password {
    pub fn parse(field: &str, raw: &str, username: Option<&Username>) -> Result<Self, Violation> {
        let chars = raw.chars().count();
        if chars < MIN_PASSWORD_CHARS {
            return Err(violation(
                field,
                format!("must be at least {MIN_PASSWORD_CHARS} characters"),
            ));
        }
        if chars > MAX_PASSWORD_CHARS {
            return Err(violation(
                field,
                format!("must be at most {MAX_PASSWORD_CHARS} characters"),
            ));
        }
        if raw.chars().all(char::is_alphabetic) || raw.chars().all(|c| c.is_ascii_digit()) {
            return Err(violation(field, "must not be only letters or only digits"));
        }
        if raw.chars().collect::<std::collections::HashSet<_>>().len() < 4 {
            return Err(violation(field, "must use at least 4 different characters"));
        }
        if let Some(user) = username
            && raw.to_lowercase().contains(user.as_str())
        {
            return Err(violation(field, "must not contain the username"));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// Free text shown to people: trimmed, 1..=max characters, no control characters.
pub fn display_text(field: &str, raw: &str, max: usize, required: bool) -> Result<String, Violation> {
    let text = raw.trim();
    if text.is_empty() {
        return if required {
            Err(violation(field, "is required"))
        } else {
            Ok(String::new())
        };
    }
    if text.chars().count() > max {
        return Err(violation(field, format!("must be at most {max} characters")));
    }
    if text.chars().any(char::is_control) {
        return Err(violation(field, "must not contain control characters"));
    }
    Ok(text.to_owned())
}

/// Ids of other services' resources (partner ids): 1-64 of `A-Za-z0-9_-`.
pub fn external_id(field: &str, raw: &str) -> Result<String, Violation> {
    let ok =
        !raw.is_empty() && raw.len() <= 64 && raw.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(raw.to_owned())
    } else {
        Err(violation(field, "must be 1-64 characters of A-Z, a-z, 0-9, '-', '_'"))
    }
}

/// `collection/{id}` resource names; returns the id. Ids are UUIDs.
pub fn resource_id(field: &str, name: &str, collection: &str) -> Result<String, Violation> {
    let id = name
        .strip_prefix(collection)
        .and_then(|rest| rest.strip_prefix('/'))
        .ok_or_else(|| violation(field, format!("must be {collection}/{{id}}")))?;
    uuid::Uuid::parse_str(id)
        .map(|u| u.to_string())
        .map_err(|_| violation(field, format!("must be {collection}/{{id}} with a UUID id")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn usernames_are_normalised_and_checked() {
        assert_eq!(Username::parse("u", " Alice.B ").unwrap().as_str(), "alice.b");
        for bad in ["", "ab", "-alice", "al ice", "älice", &"a".repeat(65)] {
            assert!(Username::parse("u", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn emails_are_checked() {
        assert_eq!(
            Email::parse("e", "Ann@Example.COM").unwrap().as_str(),
            "ann@example.com"
        );
        for bad in [
            "ann",
            "ann@",
            "@example.com",
            "ann@example",
            "a b@example.com",
            "ann@@example.com",
        ] {
            assert!(Email::parse("e", bad).is_err(), "{bad:?}");
        }
        assert_eq!(Email::parse_optional("e", "  ").unwrap(), None);
    }

    #[test]
    fn weak_passwords_are_rejected() {
        let user = Username::parse("u", "alice").unwrap();
        for weak in [
            "short1!",
            "onlylettershere",
            "123456789012",
            "aaaaaaaaaaaa1",
            "my-alice-password-1",
        ] {
            assert!(Password::parse("p", weak, Some(&user)).is_err(), "{weak:?}");
        }
        assert!(Password::parse("p", "correct horse battery 9", Some(&user)).is_ok());
        assert!(Password::parse("p", &"ab1".repeat(50), None).is_err());
    }

    #[test]
    fn resource_names_parse() {
        let id = uuid::Uuid::new_v4().to_string();
        assert_eq!(resource_id("name", &format!("users/{id}"), "users").unwrap(), id);
        for bad in ["", "users/", "users/x", &format!("apiKeys/{id}"), &id] {
            assert!(resource_id("name", bad, "users").is_err(), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn parsers_never_panic(s in ".{0,300}") {
            let _ = Username::parse("u", &s);
            let _ = Email::parse("e", &s);
            let _ = Password::parse("p", &s, None);
            let _ = display_text("d", &s, 200, true);
            let _ = external_id("x", &s);
            let _ = resource_id("n", &s, "users");
        }

        #[test]
        fn a_parsed_display_text_respects_its_bounds(s in ".{0,300}") {
            if let Ok(text) = display_text("d", &s, 200, true) {
                prop_assert!(!text.is_empty() && text.chars().count() <= 200);
            }
        }
    }
}
