//! Conversions between protobuf well-known types and `chrono`/`std` types.

use chrono::{DateTime, Utc};

/// Now, at the precision the databases store (microseconds), so that a value returned
/// right after a write equals the one read back later.
pub fn now() -> DateTime<Utc> {
    use chrono::SubsecRound;
    Utc::now().trunc_subsecs(6)
}

pub fn timestamp(at: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: at.timestamp_subsec_nanos() as i32,
    }
}

pub fn opt_timestamp(at: Option<DateTime<Utc>>) -> Option<prost_types::Timestamp> {
    at.map(timestamp)
}

/// `None` for timestamps outside chrono's range or with invalid nanos.
pub fn from_timestamp(ts: &prost_types::Timestamp) -> Option<DateTime<Utc>> {
    u32::try_from(ts.nanos)
        .ok()
        .and_then(|nanos| DateTime::from_timestamp(ts.seconds, nanos))
}

pub fn duration(d: std::time::Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

/// Lower-case hex of the SHA-256 of `data`: stored secrets, and keys that must not
/// carry the personal data they are derived from.
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    use std::fmt::Write;
    let digest = sha2::Sha256::digest(data);
    let mut hex = String::with_capacity(64);
    for byte in digest {
        let _ = write!(hex, "{byte:02x}");
    }
    hex
}

/// The UUID id of a resource name `{collection}/{id}`, in canonical text; the error
/// says the name's shape (`must be orders/{order_id}`).
pub fn uuid_id(name: &str, collection: &str) -> Result<String, String> {
    let shape = format!("{collection}/{{{}_id}}", collection.trim_end_matches('s'));
    let id = name
        .strip_prefix(collection)
        .and_then(|rest| rest.strip_prefix('/'))
        .ok_or_else(|| format!("must be {shape}"))?;
    uuid::Uuid::parse_str(id)
        .map(|u| u.to_string())
        .map_err(|_| format!("must be {shape} with a UUID id"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_hex_is_the_lower_case_digest() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn timestamps_round_trip() {
        let now = Utc::now();
        assert_eq!(from_timestamp(&timestamp(now)), Some(now));
        assert_eq!(from_timestamp(&prost_types::Timestamp { seconds: 0, nanos: -1 }), None);
    }
}
