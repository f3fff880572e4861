//! The rules of webhooks without I/O: the event types, what a subscription URL may
//! be, the signature, the retry schedule and which addresses are private.

use std::net::IpAddr;
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The kinds of events a partner can subscribe to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    /// An order of the partner left the warehouse.
    OrderShipped,
    /// An order of the partner reached its customer.
    OrderDelivered,
    /// A return of the partner's order was refunded.
    OrderReturned,
    /// A lead was offered to the partner.
    LeadAssigned,
    /// A deal lock of the partner ran out.
    LockExpired,
    /// A target of the partner (or one of its reps) was attained.
    TargetAttained,
    /// A redemption of the partner was approved, rejected, fulfilled or cancelled.
    RedemptionDecided,
}

impl EventType {
    pub const ALL: [EventType; 7] = [
        Self::OrderShipped,
        Self::OrderDelivered,
        Self::OrderReturned,
        Self::LeadAssigned,
        Self::LockExpired,
        Self::TargetAttained,
        Self::RedemptionDecided,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::OrderShipped => "order.shipped",
            Self::OrderDelivered => "order.delivered",
            Self::OrderReturned => "order.returned",
            Self::LeadAssigned => "lead.assigned",
            Self::LockExpired => "lock.expired",
            Self::TargetAttained => "target.attained",
            Self::RedemptionDecided => "redemption.decided",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// The event types of a subscription as stored: space-separated, in the order of
/// [`EventType::ALL`], each once.
pub fn join_types(types: &[EventType]) -> String {
    EventType::ALL
        .into_iter()
        .filter(|t| types.contains(t))
        .map(EventType::as_str)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The stored event types, unknown ones left out.
pub fn split_types(stored: &str) -> Vec<EventType> {
    stored.split_whitespace().filter_map(EventType::parse).collect()
}

/// The longest subscription URL.
pub const MAX_URL_LEN: usize = 2048;

/// Why a subscription URL is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadUrl(pub &'static str);

/// Checks a subscription URL: absolute `http` or `https` with a host, no user
/// information, no fragment, at most [`MAX_URL_LEN`] bytes; a host that is an IP
/// address must not be private unless `allow_private`. Host names are checked when
/// they are resolved, at each delivery.
pub fn check_url(url: &str, allow_private: bool) -> Result<http::Uri, BadUrl> {
    if url.is_empty() || url.len() > MAX_URL_LEN {
        return Err(BadUrl("must be 1-2048 characters"));
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(BadUrl("must not contain spaces or control characters"));
    }
    if url.contains('#') {
        return Err(BadUrl("must not have a fragment"));
    }
    let uri: http::Uri = url.parse().map_err(|_| BadUrl("is not a valid URL"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(BadUrl("must be an http:// or https:// URL")),
    }
    let Some(authority) = uri.authority() else {
        return Err(BadUrl("must name a host"));
    };
    if authority.as_str().contains('@') {
        return Err(BadUrl("must not carry user information"));
    }
    let host = authority.host();
    if host.is_empty() {
        return Err(BadUrl("must name a host"));
    }
    if let Some(ip) = host_ip(host)
        && !allow_private
        && !is_public(ip)
    {
        return Err(BadUrl("must not point at a private, loopback or link-local address"));
    }
    Ok(uri)
}

/// The IP address a URL's host is, if it is one (`[::1]` included).
pub fn host_ip(host: &str) -> Option<IpAddr> {
    host.trim_start_matches('[').trim_end_matches(']').parse().ok()
}

/// Whether outbound webhooks may reach `ip` when private addresses are refused:
/// not loopback, private (RFC 1918, unique local), link-local, shared (RFC 6598),
/// unspecified, broadcast, multicast or documentation ranges.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 192 && b == 0)
                || (a == 198 && (b == 18 || b == 19))
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || v6.is_unique_local()
                || v6.is_unicast_link_local()
                || v6.segments()[0] == 0x2001 && v6.segments()[1] == 0xdb8)
        }
    }
}

/// The `Webhook-Signature` header's value: `v1=` and the lowercase hex of
/// HMAC-SHA256, keyed with the subscription's secret, over
/// `{id}.{timestamp}.{body}`.
pub fn signature(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> String {
    // HMAC takes a key of any length.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(mac) => mac,
        Err(_) => return String::new(),
    };
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// A new signing secret: `whsec_` and 32 random bytes in hex.
pub fn new_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    format!("whsec_{}", hex::encode(bytes))
}

/// The wait after the `failures`-th failed attempt of a round (1-based):
/// `base * 2^(failures-1)`, at most `max`.
pub fn backoff(base: Duration, max: Duration, failures: u32) -> Duration {
    let factor = 2u32.saturating_pow(failures.saturating_sub(1).min(30));
    base.saturating_mul(factor).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_types_round_trip_and_store_in_a_fixed_order() {
        for t in EventType::ALL {
            assert_eq!(EventType::parse(t.as_str()), Some(t));
        }
        assert_eq!(EventType::parse("order.placed"), None);
        let stored = join_types(&[EventType::LockExpired, EventType::OrderShipped, EventType::OrderShipped]);
        assert_eq!(stored, "order.shipped lock.expired");
        assert_eq!(
            split_types(&stored),
            vec![EventType::OrderShipped, EventType::LockExpired]
        );
    }

    #[test]
    fn urls_are_http_or_https_with_a_host_and_no_credentials() {
        assert!(check_url("https://hooks.example.com/retail?x=1", false).is_ok());
        assert!(check_url("http://hooks.example.com:8443/in", false).is_ok());
        for bad in [
            "",
            "ftp://example.com/x",
            "file:///etc/passwd",
            "javascript:alert(1)",
            "/relative",
            "https://user:pw@example.com/",
            "https://example.com/#frag",
            "https://exa mple.com/",
            "example.com",
        ] {
            assert!(check_url(bad, true).is_err(), "{bad}");
        }
        assert!(check_url(&format!("https://e.com/{}", "a".repeat(MAX_URL_LEN)), true).is_err());
    }

    #[test]
    fn private_addresses_are_refused_unless_allowed() {
        for private in [
            "http://127.0.0.1:9000/",
            "http://10.1.2.3/",
            "http://172.16.0.1/",
            "http://192.168.1.1/",
            "http://169.254.169.254/latest/meta-data",
            "http://100.64.0.1/",
            "http://0.0.0.0/",
            "http://[::1]/",
            "http://[fd00::1]/",
            "http://[fe80::1]/",
            "http://[::ffff:10.0.0.1]/",
        ] {
            assert!(check_url(private, false).is_err(), "{private}");
            assert!(check_url(private, true).is_ok(), "{private}");
        }
        assert!(check_url("http://93.184.216.34/", false).is_ok());
        assert!(check_url("http://[2606:4700::1111]/", false).is_ok());
    }

    #[test]
    fn the_signature_is_hmac_sha256_over_id_timestamp_and_body() {
        let sig = signature("Jefe", "what do ya want ", 0, b"for nothing?");
        assert!(sig.starts_with("v1=") && sig.len() == 3 + 64);
        assert_eq!(sig, signature("Jefe", "what do ya want ", 0, b"for nothing?"));
        assert_ne!(sig, signature("Jefe", "what do ya want ", 1, b"for nothing?"));
        assert_ne!(sig, signature("jefe", "what do ya want ", 0, b"for nothing?"));
        // A known vector: HMAC-SHA256("key", "id.1.{}").
        let mut mac = Hmac::<Sha256>::new_from_slice(b"key").unwrap_or_else(|_| unreachable!());
        mac.update(b"id.1.{}");
        assert_eq!(
            signature("key", "id", 1, b"{}"),
            format!("v1={}", hex::encode(mac.finalize().into_bytes()))
        );
    }

    #[test]
    fn backoff_doubles_up_to_the_maximum() {
        let (base, max) = (Duration::from_secs(10), Duration::from_secs(300));
        assert_eq!(backoff(base, max, 1), Duration::from_secs(10));
        assert_eq!(backoff(base, max, 2), Duration::from_secs(20));
        assert_eq!(backoff(base, max, 4), Duration::from_secs(80));
        assert_eq!(backoff(base, max, 6), max);
        assert_eq!(backoff(base, max, 1000), max);
    }

    #[test]
    fn secrets_are_fresh_and_long() {
        let (a, b) = (new_secret(), new_secret());
        assert_ne!(a, b);
        assert_eq!(a.len(), "whsec_".len() + 64);
    }
}
