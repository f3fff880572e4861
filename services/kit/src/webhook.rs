//! Outbound signed webhooks, shared by the services that call out to URLs others
//! configure: the signature scheme, what a target URL may be, which addresses are
//! private, the retry schedule, and the HTTP client that enforces all of it.
//!
//! A request is a `POST` of a JSON body with the headers `Webhook-Id`,
//! `Webhook-Timestamp` (Unix seconds) and `Webhook-Signature: v1=<hex>`, the
//! lowercase hex of HMAC-SHA256 keyed with the shared secret over
//! `{id}.{timestamp}.{body}`. The id stays the same on every try of one message,
//! so receivers can drop repeats.
//!
//! The client refuses what a configured URL must not make a service reach: other
//! schemes, redirects (not followed: a 3xx is a failed attempt), and, unless
//! private addresses are allowed, hosts that are or resolve to loopback, private,
//! link-local and other non-public addresses (checked on the addresses actually
//! connected to, so a name that resolves differently later is caught).

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use chrono::Utc;
use hmac::{Hmac, Mac};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::rt::TokioExecutor;
use sha2::Sha256;

/// The longest target URL accepted.
pub const MAX_URL_LEN: usize = 2048;

/// Why a target URL is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadUrl(pub &'static str);

/// Checks a target URL: absolute `http` or `https` with a host, no user
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
/// HMAC-SHA256, keyed with the shared secret, over
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

/// The wait after the `failures`-th failed attempt of a round (1-based):
/// `base * 2^(failures-1)`, at most `max`.
pub fn backoff(base: Duration, max: Duration, failures: u32) -> Duration {
    let factor = 2u32.saturating_pow(failures.saturating_sub(1).min(30));
    base.saturating_mul(factor).min(max)
}

/// Resolves host names to the addresses webhooks may connect to.
#[derive(Debug, Clone)]
struct GuardedResolver {
    allow_private: bool,
}

impl tower::Service<Name> for GuardedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), 0))
                .await?
                .filter(|a| allow_private || is_public(a.ip()))
                .collect();
            if addrs.is_empty() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    "the host resolves to no public address",
                ));
            }
            Ok(addrs.into_iter())
        })
    }
}

type HttpsClient = HyperClient<hyper_rustls::HttpsConnector<HttpConnector<GuardedResolver>>, Full<Bytes>>;

/// The outbound HTTP client of webhooks: HTTP/1 over TCP or rustls, a timeout per
/// request (connect included), redirects not followed, private addresses refused
/// unless allowed (both on the URL and on every address a name resolves to).
#[derive(Clone)]
pub struct Client {
    client: HttpsClient,
    timeout: Duration,
    allow_private: bool,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The receiver answered with this status.
    Status(u16),
    /// No answer: why.
    Failed(String),
}

impl Outcome {
    pub fn accepted(&self) -> bool {
        matches!(self, Self::Status(s) if (200..300).contains(s))
    }
}

impl Client {
    pub fn new(timeout: Duration, allow_private: bool) -> anyhow::Result<Self> {
        let mut http = HttpConnector::new_with_resolver(GuardedResolver { allow_private });
        http.enforce_http(false);
        http.set_connect_timeout(Some(timeout));
        http.set_nodelay(true);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(Arc::new(rustls::crypto::ring::default_provider()))?
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = HyperClient::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(4)
            .build(https);
        Ok(Self {
            client,
            timeout,
            allow_private,
        })
    }

    /// POSTs `body` to `url` with the webhook headers, within the timeout.
    pub async fn send(&self, url: &str, id: &str, secret: &str, body: &str) -> Outcome {
        let uri = match check_url(url, self.allow_private) {
            Ok(uri) => uri,
            Err(BadUrl(why)) => return Outcome::Failed(format!("the URL {why}")),
        };
        let timestamp = Utc::now().timestamp();
        let request = http::Request::post(uri)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::USER_AGENT, "retail-suite-webhooks/1")
            .header("webhook-id", id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature(secret, id, timestamp, body.as_bytes()))
            .body(Full::new(Bytes::from(body.to_owned())));
        let request = match request {
            Ok(request) => request,
            Err(_) => return Outcome::Failed("the request could not be built".into()),
        };
        match tokio::time::timeout(self.timeout, self.client.request(request)).await {
            Err(_) => Outcome::Failed("timed out".into()),
            Ok(Err(err)) => Outcome::Failed(connect_error(&err)),
            // The body is not read: only the status counts.
            Ok(Ok(response)) => Outcome::Status(response.status().as_u16()),
        }
    }
}

/// A connection error without the URL or anything the receiver sent.
fn connect_error(err: &hyper_util::client::legacy::Error) -> String {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(err);
    while let Some(inner) = source {
        if let Some(io) = inner.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                std::io::ErrorKind::PermissionDenied => "refused: the host resolves to no public address".into(),
                std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
                std::io::ErrorKind::TimedOut => "connect timed out".into(),
                _ => "connection failed".into(),
            };
        }
        source = inner.source();
    }
    if err.is_connect() {
        "connection failed".into()
    } else {
        "the request failed".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
