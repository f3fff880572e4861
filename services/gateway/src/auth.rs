//! Who calls: a partner system's API key (`X-Api-Key`, or `Authorization: Bearer
//! rk_...`) exchanged at identity for a short-lived token that is cached until
//! shortly before it expires, or a partner user's own bearer token passed through.
//! Either way the caller is one partner, and every call the gateway makes carries
//! that caller's token, so the services behind it scope it to its partner.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use retail_kit::auth::{Principal, Verifier};
use retail_proto::identity::ExchangeApiKeyRequest;
use retail_proto::identity::identity_service_client::IdentityServiceClient;
use sha2::Digest;
use tonic::transport::Channel;

use crate::problem::Problem;

/// The authenticated partner behind a request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The access token every call to a service carries.
    pub token: Arc<str>,
    /// The partner the caller acts for.
    pub partner_id: Arc<str>,
}

struct Exchanged {
    token: Arc<str>,
    partner_id: Arc<str>,
    use_until: Instant,
}

/// Authenticates requests.
pub struct Authenticator {
    identity: Channel,
    verifier: Arc<Verifier>,
    timeout: Duration,
    refresh_before: Duration,
    /// Tokens exchanged for API keys, by the SHA-256 of the key (never the key).
    exchanged: Mutex<HashMap<[u8; 32], Arc<Exchanged>>>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator").finish_non_exhaustive()
    }
}

/// The most API keys whose tokens are kept; past it expired ones are dropped.
const MAX_CACHED_KEYS: usize = 10_000;

enum Credential<'a> {
    ApiKey(&'a str),
    Token(&'a str),
}

fn credential(headers: &HeaderMap) -> Result<Credential<'_>, Problem> {
    if let Some(key) = headers.get("x-api-key") {
        let key = key
            .to_str()
            .map_err(|_| Problem::unauthenticated("X-Api-Key is not a valid API key"))?
            .trim();
        return Ok(Credential::ApiKey(key));
    }
    match retail_kit::auth::bearer_token(headers) {
        Some(Ok(token)) if token.starts_with("rk_") => Ok(Credential::ApiKey(token)),
        Some(Ok(token)) => Ok(Credential::Token(token)),
        Some(Err(())) => Err(Problem::unauthenticated(
            "the Authorization header must be `Bearer <token or API key>`",
        )),
        None => Err(Problem::unauthenticated(
            "an API key (X-Api-Key or Authorization: Bearer rk_...) or a partner user's bearer token is required",
        )),
    }
}

impl Authenticator {
    pub fn new(identity: Channel, verifier: Arc<Verifier>, timeout: Duration, refresh_before: Duration) -> Self {
        Self {
            identity,
            verifier,
            timeout,
            refresh_before,
            exchanged: Mutex::new(HashMap::new()),
        }
    }

    /// The partner calling with `headers`: 401 without valid credentials, 403 for a
    /// principal that is not a partner's.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Caller, Problem> {
        match credential(headers)? {
            Credential::Token(token) => {
                let principal = self
                    .verifier
                    .verify(token)
                    .await
                    .map_err(|err| Problem::unauthenticated(format!("the bearer token is not valid: {err}")))?;
                Ok(Caller {
                    token: token.into(),
                    partner_id: partner_of(&principal)?.into(),
                })
            }
            Credential::ApiKey(key) => self.exchange(key).await,
        }
    }

    async fn exchange(&self, key: &str) -> Result<Caller, Problem> {
        let digest: [u8; 32] = sha2::Sha256::digest(key.as_bytes()).into();
        let now = Instant::now();
        if let Some(cached) = self.cached(&digest, now) {
            return Ok(Caller {
                token: cached.token.clone(),
                partner_id: cached.partner_id.clone(),
            });
        }
        let mut client = IdentityServiceClient::new(self.identity.clone());
        let request = retail_kit::resilience::request(
            ExchangeApiKeyRequest {
                api_key: key.to_owned(),
            },
            self.timeout,
        );
        let tokens = match client.exchange_api_key(request).await {
            Ok(response) => response.into_inner().tokens.unwrap_or_default(),
            Err(status) => {
                return Err(match status.code() {
                    tonic::Code::Unauthenticated
                    | tonic::Code::InvalidArgument
                    | tonic::Code::NotFound
                    | tonic::Code::PermissionDenied
                    | tonic::Code::FailedPrecondition => Problem::unauthenticated(
                        "the API key is not valid, revoked, expired, or its partner is not active",
                    ),
                    _ => Problem::from(status),
                });
            }
        };
        let principal = self
            .verifier
            .verify(&tokens.access_token)
            .await
            .map_err(|err| Problem::from(tonic::Status::from(err)))?;
        let partner_id = partner_of(&principal)?;
        let lifetime = tokens
            .expires_in
            .map(|d| Duration::from_secs(d.seconds.max(0) as u64))
            .unwrap_or_default();
        let exchanged = Arc::new(Exchanged {
            token: tokens.access_token.into(),
            partner_id: partner_id.into(),
            use_until: now + lifetime.saturating_sub(self.refresh_before),
        });
        if let Ok(mut cache) = self.exchanged.lock() {
            if cache.len() >= MAX_CACHED_KEYS {
                cache.retain(|_, e| e.use_until > now);
            }
            if cache.len() < MAX_CACHED_KEYS {
                cache.insert(digest, exchanged.clone());
            }
        }
        Ok(Caller {
            token: exchanged.token.clone(),
            partner_id: exchanged.partner_id.clone(),
        })
    }

    fn cached(&self, digest: &[u8; 32], now: Instant) -> Option<Arc<Exchanged>> {
        let mut cache = self.exchanged.lock().ok()?;
        match cache.get(digest) {
            Some(e) if e.use_until > now => Some(e.clone()),
            Some(_) => {
                cache.remove(digest);
                None
            }
            None => None,
        }
    }

    /// Forgets the token of the API key in `headers` (identity refused it).
    pub fn forget(&self, headers: &HeaderMap) {
        if let Ok(Credential::ApiKey(key)) = credential(headers) {
            let digest: [u8; 32] = sha2::Sha256::digest(key.as_bytes()).into();
            if let Ok(mut cache) = self.exchanged.lock() {
                cache.remove(&digest);
            }
        }
    }
}

fn partner_of(principal: &Principal) -> Result<&str, Problem> {
    principal.partner_scope().ok_or_else(|| {
        Problem::new(
            axum::http::StatusCode::FORBIDDEN,
            "the gateway serves partner systems and partner users only",
        )
    })
}
