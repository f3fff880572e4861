//! Size limits of requests and of the errors that answer them, kept in one place so
//! every service enforces, and the README documents, the same numbers.
//!
//! Request limits bound the work and memory a single request can cost. Error limits
//! keep a status within the 8 KiB of metadata that common gRPC clients (C++, Python,
//! grpc-web proxies) accept by default: beyond it they report RESOURCE_EXHAUSTED
//! "received metadata size exceeds hard limit" instead of the error itself.

/// Largest request message a server decodes (bytes): tonic's default, which every
/// generated server keeps (a test in [`crate::server`] fails if tonic changes it);
/// larger messages are refused with OUT_OF_RANGE before any handler runs.
pub const MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;

/// Paths of an `update_mask` or `read_mask`.
pub const MAX_MASK_PATHS: usize = 32;
/// Scopes of one service account (API keys hold at most the partner scopes).
pub const MAX_SCOPES: usize = 64;
/// Roles of one user.
pub const MAX_ROLES: usize = 16;
/// Identifiers (email, phone, card number, external ids) of one member.
pub const MAX_IDENTIFIERS: usize = 20;
/// Bytes of one identifier value.
pub const MAX_IDENTIFIER_BYTES: usize = 128;
/// Any other repeated field without a tighter limit of its own.
pub const MAX_REPEATED: usize = 1_000;

/// Field violations listed in an INVALID_ARGUMENT status; a last entry says how many
/// more there were.
pub const MAX_VIOLATIONS: usize = 20;
/// Bytes of a violation's field path in a status.
pub const MAX_VIOLATION_FIELD_BYTES: usize = 96;
/// Bytes of a violation's description in a status.
pub const MAX_VIOLATION_DESCRIPTION_BYTES: usize = 120;
/// Bytes of a status message.
pub const MAX_STATUS_MESSAGE_BYTES: usize = 300;

/// `text` cut to at most `max` bytes at a character boundary, marked with `…` when
/// something was cut.
pub fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    const MARK: &str = "…";
    let mut end = max.saturating_sub(MARK.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{MARK}", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_keeps_short_text_and_cuts_long_text_at_a_character_boundary() {
        assert_eq!(truncate("short", 10), "short");
        let cut = truncate(&"é".repeat(100), 11);
        assert!(cut.len() <= 11, "{cut}");
        assert!(cut.ends_with('…'));
        assert!(cut.starts_with("ééé"));
    }
}
