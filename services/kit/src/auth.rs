//! Verifying identity's access tokens in every service, and attaching a service's own
//! token to its outgoing calls.
//!
//! - [`Claims`] is the token format identity signs (EdDSA JWT, `kid` in the header).
//! - [`Verifier`] checks signature, issuer, audience and time with public keys from a
//!   [`KeySource`], cached and refreshed when an unknown key id appears (rate limited,
//!   one refresh at a time).
//! - [`AuthLayer`] runs the verifier on every gRPC request and puts the [`Principal`]
//!   into the request extensions; public methods pass without a token.
//! - [`ServiceTokenSource`] and [`ClientInterceptor`] obtain, renew and attach the
//!   service's own token on outgoing calls.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tonic::Status;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

use crate::error::{ServiceError, ServiceResult};

/// The audience of every token: the services of the suite.
pub const AUDIENCE: &str = "retail-suite";

/// What kind of principal a token stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PrincipalKind {
    Staff,
    PartnerUser,
    PartnerSystem,
    Service,
}

impl PrincipalKind {
    pub fn is_partner(self) -> bool {
        matches!(self, Self::PartnerUser | Self::PartnerSystem)
    }
}

/// The claims of an access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    /// Id of the user, API key or service account.
    pub sub: String,
    pub exp: i64,
    pub iat: i64,
    pub nbf: i64,
    /// Unique token id, for audit correlation.
    pub jti: String,
    pub kind: PrincipalKind,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    /// Space-separated scopes (RFC 8693 style).
    pub scope: String,
    /// Set for partner principals: every query they make is scoped to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partner_id: Option<String>,
    /// Login session of a user token, so a session can be ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// Store codes a staff user is confined to in per-store views (a store
    /// manager's own stores); empty when the user has none assigned.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stores: Vec<String>,
}

/// The authenticated caller of an RPC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub subject: String,
    pub kind: PrincipalKind,
    pub roles: Vec<String>,
    pub scopes: BTreeSet<String>,
    pub partner_id: Option<String>,
    /// The stores the user is assigned to (the `stores` claim).
    pub stores: Vec<String>,
    pub session_id: Option<String>,
    pub token_id: String,
    pub expires_at: DateTime<Utc>,
}

impl From<Claims> for Principal {
    fn from(c: Claims) -> Self {
        Self {
            subject: c.sub,
            kind: c.kind,
            roles: c.roles,
            scopes: c.scope.split_whitespace().map(str::to_owned).collect(),
            partner_id: c.partner_id,
            stores: c.stores,
            session_id: c.sid,
            token_id: c.jti,
            expires_at: DateTime::from_timestamp(c.exp, 0).unwrap_or_default(),
        }
    }
}

impl Principal {
    /// The principal the auth layer attached; UNAUTHENTICATED when there is none.
    pub fn of<T>(request: &tonic::Request<T>) -> ServiceResult<&Principal> {
        request
            .extensions()
            .get::<Arc<Principal>>()
            .map(|p| &**p)
            .ok_or_else(|| ServiceError::Unauthenticated("missing bearer token".into()))
    }

    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.contains(scope)
    }

    /// PERMISSION_DENIED unless the token grants `scope`.
    pub fn require_scope(&self, scope: &str) -> ServiceResult<()> {
        if self.has_scope(scope) {
            Ok(())
        } else {
            Err(ServiceError::PermissionDenied(format!("missing scope {scope}")))
        }
    }

    /// The partner a partner principal is confined to; `None` for staff and services.
    pub fn partner_scope(&self) -> Option<&str> {
        if self.kind.is_partner() {
            self.partner_id.as_deref()
        } else {
            None
        }
    }

    /// Whose request ids the principal's are: a partner's systems and users act as
    /// one client (a retry may come through another of its keys), anyone else is
    /// its own.
    pub fn request_owner(&self) -> String {
        match self.partner_scope() {
            Some(partner) => format!("partner:{partner}"),
            None => self.subject.clone(),
        }
    }
}

/// A public key that verifies tokens with its key id.
#[derive(Debug, Clone)]
pub struct VerificationKey {
    pub key_id: String,
    /// Raw 32-byte Ed25519 public key.
    pub public_key: Vec<u8>,
    /// No valid token can carry this key id after this time.
    pub expires_at: Option<DateTime<Utc>>,
}

/// Where the verifier gets its keys: identity over gRPC, or identity's own store.
#[async_trait::async_trait]
pub trait KeySource: Send + Sync + std::fmt::Debug {
    async fn fetch(&self) -> anyhow::Result<Vec<VerificationKey>>;
}

/// Fetches public keys from identity's `ListPublicKeys`.
#[derive(Debug, Clone)]
pub struct GrpcKeySource {
    channel: Channel,
    timeout: Duration,
}

impl GrpcKeySource {
    pub fn new(channel: Channel) -> Self {
        Self {
            channel,
            timeout: Duration::from_secs(3),
        }
    }
}

#[async_trait::async_trait]
impl KeySource for GrpcKeySource {
    async fn fetch(&self) -> anyhow::Result<Vec<VerificationKey>> {
        use retail_proto::identity::{ListPublicKeysRequest, identity_service_client::IdentityServiceClient};
        let mut client = IdentityServiceClient::new(self.channel.clone());
        let mut request = tonic::Request::new(ListPublicKeysRequest {});
        request.set_timeout(self.timeout);
        let keys = client.list_public_keys(request).await?.into_inner().keys;
        Ok(keys
            .into_iter()
            .map(|k| VerificationKey {
                key_id: k.key_id,
                public_key: k.public_key,
                expires_at: k
                    .expire_time
                    .and_then(|t| DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32)),
            })
            .collect())
    }
}

struct CachedKey {
    key: DecodingKey,
    expires_at: Option<DateTime<Utc>>,
}

/// Verifies access tokens locally with cached public keys.
pub struct Verifier {
    source: Arc<dyn KeySource>,
    validation: Validation,
    keys: RwLock<HashMap<String, Arc<CachedKey>>>,
    /// Serialises refreshes and remembers the last one, for the rate limit.
    last_refresh: tokio::sync::Mutex<Option<Instant>>,
    min_refresh_interval: Duration,
    /// Tokens already verified, by the SHA-256 of the token: a caller repeats its
    /// token on every call, and the signature check is the costliest part of a small
    /// RPC. Entries live at most a minute and never past the token's expiry.
    verified: moka::sync::Cache<[u8; 32], Arc<Principal>>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    pub fn new(issuer: &str, source: Arc<dyn KeySource>, min_refresh_interval: Duration) -> Self {
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub", "nbf"]);
        validation.validate_nbf = true;
        validation.leeway = 30;
        Self {
            source,
            validation,
            keys: RwLock::new(HashMap::new()),
            last_refresh: tokio::sync::Mutex::new(None),
            min_refresh_interval,
            verified: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(60))
                .build(),
        }
    }

    /// Checks a token; every failure is UNAUTHENTICATED with a short reason. The
    /// principal is shared: a hit of the verified-token cache copies nothing.
    pub async fn verify(&self, token: &str) -> ServiceResult<Arc<Principal>> {
        use sha2::Digest;
        let digest: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
        if let Some(principal) = self.verified.get(&digest) {
            // The same leeway as the validation: past it the token is checked (and
            // refused) again.
            if principal.expires_at + chrono::Duration::seconds(self.validation.leeway as i64) > Utc::now() {
                return Ok(principal);
            }
            self.verified.invalidate(&digest);
        }
        let principal = Arc::new(self.verify_signed(token).await?);
        self.verified.insert(digest, principal.clone());
        Ok(principal)
    }

    async fn verify_signed(&self, token: &str) -> ServiceResult<Principal> {
        let unauthenticated = |reason: &str| ServiceError::Unauthenticated(format!("invalid access token: {reason}"));
        let header = jsonwebtoken::decode_header(token).map_err(|_| unauthenticated("malformed"))?;
        if header.alg != Algorithm::EdDSA {
            return Err(unauthenticated("unsupported algorithm"));
        }
        let kid = header.kid.ok_or_else(|| unauthenticated("no key id"))?;
        let key = match self.cached(&kid) {
            Some(key) => key,
            None => {
                self.refresh_for(&kid).await;
                self.cached(&kid)
                    .ok_or_else(|| unauthenticated("unknown signing key"))?
            }
        };
        let data = jsonwebtoken::decode::<Claims>(token, &key.key, &self.validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            match e.kind() {
                ErrorKind::ExpiredSignature => unauthenticated("expired"),
                ErrorKind::ImmatureSignature => unauthenticated("not yet valid"),
                ErrorKind::InvalidSignature => unauthenticated("bad signature"),
                ErrorKind::InvalidIssuer => unauthenticated("wrong issuer"),
                ErrorKind::InvalidAudience => unauthenticated("wrong audience"),
                _ => unauthenticated("malformed"),
            }
        })?;
        // A partner principal without its partner would see everything: refuse it.
        if data.claims.kind.is_partner() && data.claims.partner_id.as_deref().is_none_or(str::is_empty) {
            return Err(unauthenticated("partner token without partner"));
        }
        Ok(Principal::from(data.claims))
    }

    fn cached(&self, kid: &str) -> Option<Arc<CachedKey>> {
        let keys = self.keys.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        keys.get(kid)
            .filter(|k| k.expires_at.is_none_or(|at| at > Utc::now()))
            .cloned()
    }

    /// Refetches the keys for an unknown key id. Refreshes are serialised and spaced
    /// at least `min_refresh_interval` apart (a caller waits for the next slot rather
    /// than being refused, so a freshly rotated key verifies at most one interval
    /// late); callers queued behind a refresh that started after they arrived reuse
    /// its result, so a flood of forged key ids costs one fetch per interval.
    async fn refresh_for(&self, kid: &str) {
        let arrived = Instant::now();
        let mut last = self.last_refresh.lock().await;
        if last.is_some_and(|at| at >= arrived) || self.cached(kid).is_some() {
            return;
        }
        if let Some(at) = *last {
            let since = at.elapsed();
            if since < self.min_refresh_interval {
                tokio::time::sleep(self.min_refresh_interval - since).await;
            }
        }
        *last = Some(Instant::now());
        self.fetch_keys().await;
    }

    /// Refetches the keys now, for example right after a rotation.
    pub async fn refresh(&self) {
        let mut last = self.last_refresh.lock().await;
        *last = Some(Instant::now());
        self.fetch_keys().await;
    }

    async fn fetch_keys(&self) {
        match self.source.fetch().await {
            Ok(fetched) => {
                let fresh: HashMap<_, _> = fetched
                    .into_iter()
                    .filter(|k| k.public_key.len() == 32)
                    .map(|k| {
                        let cached = CachedKey {
                            key: DecodingKey::from_ed_der(&k.public_key),
                            expires_at: k.expires_at,
                        };
                        (k.key_id, Arc::new(cached))
                    })
                    .collect();
                tracing::debug!(keys = fresh.len(), "refreshed token verification keys");
                *self.keys.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = fresh;
            }
            Err(err) => tracing::warn!(error = format!("{err:#}"), "failed to refresh token verification keys"),
        }
    }
}

/// Tower layer authenticating every gRPC request with the [`Verifier`].
#[derive(Clone, Debug)]
pub struct AuthLayer {
    verifier: Arc<Verifier>,
    public: Arc<HashSet<String>>,
}

impl AuthLayer {
    /// `public_methods` are full paths (`/pkg.Service/Method`) callable without a token;
    /// health checks and reflection are always public.
    pub fn new(verifier: Arc<Verifier>, public_methods: &[&str]) -> Self {
        Self {
            verifier,
            public: Arc::new(public_methods.iter().map(|m| m.to_string()).collect()),
        }
    }

    fn is_public(&self, path: &str) -> bool {
        path.starts_with("/grpc.health.v1.Health/")
            || path.starts_with("/grpc.reflection.")
            || self.public.contains(path)
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`AuthLayer`] wraps around the routes.
#[derive(Clone, Debug)]
pub struct AuthService<S> {
    inner: S,
    layer: AuthLayer,
}

/// The bearer token of an `authorization` header, or an error if the header is
/// malformed.
pub fn bearer_token(headers: &http::HeaderMap) -> Option<Result<&str, ()>> {
    let value = headers.get(http::header::AUTHORIZATION)?;
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
        .filter(|t| !t.is_empty());
    Some(token.ok_or(()))
}

impl<S, B> tower::Service<http::Request<B>> for AuthService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        // The clone is not ready; take the ready one and leave the clone behind.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let layer = self.layer.clone();
        Box::pin(async move {
            let public = layer.is_public(request.uri().path());
            let outcome = match bearer_token(request.headers()) {
                Some(Ok(token)) => layer.verifier.verify(token).await.map(Some),
                Some(Err(())) => Err(ServiceError::Unauthenticated(
                    "authorization must be `Bearer <access token>`".into(),
                )),
                None => Ok(None),
            };
            match outcome {
                Ok(Some(principal)) => {
                    request.extensions_mut().insert(principal);
                }
                // Public methods ignore a stale or bad token: the caller may be
                // logging in precisely because its token expired.
                Ok(None) | Err(_) if public => {}
                Ok(None) => {
                    return Ok(Status::unauthenticated("missing bearer token").into_http());
                }
                Err(err) => return Ok(Status::from(err).into_http()),
            }
            inner.call(request).await
        })
    }
}

/// A service's own access token, obtained with its client credentials and renewed
/// in the background before it expires.
#[derive(Debug)]
pub struct ServiceTokenSource {
    current: RwLock<Option<String>>,
}

impl ServiceTokenSource {
    /// Obtains the first token (retrying for up to `startup_wait`) and keeps renewing
    /// it until the returned source is dropped.
    pub async fn start(
        identity: Channel,
        client_id: String,
        client_secret: secrecy::SecretString,
        startup_wait: Duration,
    ) -> anyhow::Result<Arc<Self>> {
        let source = Arc::new(Self {
            current: RwLock::new(None),
        });
        let deadline = Instant::now() + startup_wait;
        let mut lifetime = loop {
            match fetch_service_token(&identity, &client_id, &client_secret).await {
                Ok((token, lifetime)) => {
                    source.set(token);
                    break lifetime;
                }
                Err(err) if Instant::now() < deadline => {
                    tracing::warn!(error = %err, "service token not available yet");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(err) => return Err(anyhow::anyhow!("failed to obtain the service token: {err}")),
            }
        };
        let weak = Arc::downgrade(&source);
        tokio::spawn(async move {
            loop {
                // Renew at 80% of the lifetime so calls never carry an expired token.
                tokio::time::sleep(lifetime.mul_f64(0.8).max(Duration::from_secs(1))).await;
                let Some(source) = weak.upgrade() else { break };
                match fetch_service_token(&identity, &client_id, &client_secret).await {
                    Ok((token, next)) => {
                        source.set(token);
                        lifetime = next;
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "failed to renew the service token");
                        lifetime = Duration::from_secs(5);
                    }
                }
            }
        });
        Ok(source)
    }

    /// A source that always hands out `token` (a token minted elsewhere, or tests).
    pub fn fixed(token: String) -> Arc<Self> {
        Arc::new(Self {
            current: RwLock::new(Some(token)),
        })
    }

    fn set(&self, token: String) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Some(token);
    }

    pub fn token(&self) -> Option<String> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

async fn fetch_service_token(
    identity: &Channel,
    client_id: &str,
    client_secret: &secrecy::SecretString,
) -> Result<(String, Duration), Status> {
    use retail_proto::identity::{IssueServiceTokenRequest, identity_service_client::IdentityServiceClient};
    use secrecy::ExposeSecret;
    let mut client = IdentityServiceClient::new(identity.clone());
    let mut request = tonic::Request::new(IssueServiceTokenRequest {
        client_id: client_id.to_owned(),
        client_secret: client_secret.expose_secret().to_owned(),
    });
    request.set_timeout(Duration::from_secs(3));
    let tokens = client
        .issue_service_token(request)
        .await?
        .into_inner()
        .tokens
        .ok_or_else(|| Status::internal("identity returned no token"))?;
    let lifetime = tokens
        .expires_in
        .map(|d| Duration::from_secs(d.seconds.max(1) as u64))
        .unwrap_or(Duration::from_secs(60));
    Ok((tokens.access_token, lifetime))
}

/// Outgoing-call interceptor: attaches the service's token and the current trace
/// context.
#[derive(Clone, Debug, Default)]
pub struct ClientInterceptor {
    tokens: Option<Arc<ServiceTokenSource>>,
}

impl ClientInterceptor {
    pub fn new(tokens: Option<Arc<ServiceTokenSource>>) -> Self {
        Self { tokens }
    }
}

impl tonic::service::Interceptor for ClientInterceptor {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        crate::telemetry::inject_context(request.metadata_mut());
        if let Some(token) = self.tokens.as_ref().and_then(|t| t.token()) {
            let value = MetadataValue::try_from(format!("Bearer {token}"))
                .map_err(|_| Status::internal("service token is not a valid header value"))?;
            request.metadata_mut().insert("authorization", value);
        }
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;
    use ed25519_dalek::pkcs8::EncodePrivateKey;
    use jsonwebtoken::{EncodingKey, Header};

    #[derive(Debug)]
    struct StaticKeys(Vec<VerificationKey>, std::sync::atomic::AtomicUsize);

    #[async_trait::async_trait]
    impl KeySource for StaticKeys {
        async fn fetch(&self) -> anyhow::Result<Vec<VerificationKey>> {
            self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(self.0.clone())
        }
    }

    fn keypair(seed: u8) -> (EncodingKey, Vec<u8>) {
        let key = SigningKey::from_bytes(&[seed; 32]);
        let der = key.to_pkcs8_der().unwrap();
        (
            EncodingKey::from_ed_der(der.as_bytes()),
            key.verifying_key().to_bytes().to_vec(),
        )
    }

    fn claims(exp_offset: i64) -> Claims {
        let now = Utc::now().timestamp();
        Claims {
            iss: "retail-identity".into(),
            aud: AUDIENCE.into(),
            sub: "u1".into(),
            exp: now + exp_offset,
            iat: now,
            nbf: now,
            jti: "t1".into(),
            kind: PrincipalKind::PartnerUser,
            roles: vec![],
            scope: "orders.read orders.write".into(),
            partner_id: Some("p1".into()),
            sid: None,
            stores: Vec::new(),
        }
    }

    fn sign(key: &EncodingKey, kid: &str, claims: &Claims) -> String {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(kid.into());
        jsonwebtoken::encode(&header, claims, key).unwrap()
    }

    fn verifier(keys: Vec<VerificationKey>) -> (Verifier, Arc<StaticKeys>) {
        let source = Arc::new(StaticKeys(keys, Default::default()));
        (
            Verifier::new("retail-identity", source.clone(), Duration::from_millis(200)),
            source,
        )
    }

    #[tokio::test]
    async fn a_valid_token_yields_its_principal() {
        let (enc, public) = keypair(1);
        let (v, _) = verifier(vec![VerificationKey {
            key_id: "k1".into(),
            public_key: public,
            expires_at: None,
        }]);
        let p = v.verify(&sign(&enc, "k1", &claims(600))).await.unwrap();
        assert_eq!(p.subject, "u1");
        assert_eq!(p.partner_scope(), Some("p1"));
        assert!(p.require_scope("orders.write").is_ok());
        assert!(matches!(
            p.require_scope("identity.users.write"),
            Err(ServiceError::PermissionDenied(_))
        ));
    }

    #[tokio::test]
    async fn expired_tampered_and_unknown_key_tokens_are_rejected() {
        let (enc, public) = keypair(1);
        let (other, _) = keypair(2);
        let (v, source) = verifier(vec![VerificationKey {
            key_id: "k1".into(),
            public_key: public,
            expires_at: None,
        }]);
        let expired = v.verify(&sign(&enc, "k1", &claims(-120))).await.unwrap_err();
        assert!(expired.to_string().contains("expired"), "{expired}");

        let forged = v.verify(&sign(&other, "k1", &claims(600))).await.unwrap_err();
        assert!(matches!(forged, ServiceError::Unauthenticated(_)));

        let token = sign(&enc, "k1", &claims(600));
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        let mut payload = claims(600);
        payload.scope = "identity.users.write".into();
        use base64::Engine;
        parts[1] = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(&payload).unwrap());
        let tampered = v.verify(&parts.join(".")).await.unwrap_err();
        assert!(tampered.to_string().contains("bad signature"), "{tampered}");

        let unknown = v.verify(&sign(&enc, "k9", &claims(600))).await.unwrap_err();
        assert!(unknown.to_string().contains("unknown signing key"), "{unknown}");
        let _ = source;

        assert!(v.verify("garbage").await.is_err());
        assert!(v.verify("").await.is_err());
    }

    #[tokio::test]
    async fn a_flood_of_forged_key_ids_costs_one_fetch_per_interval() {
        let (enc, public) = keypair(1);
        let (v, source) = verifier(vec![VerificationKey {
            key_id: "k1".into(),
            public_key: public,
            expires_at: None,
        }]);
        let v = Arc::new(v);
        let started = std::time::Instant::now();
        let tasks: Vec<_> = (0..50)
            .map(|i| {
                let v = v.clone();
                let token = sign(&enc, &format!("forged-{i}"), &claims(600));
                tokio::spawn(async move { v.verify(&token).await })
            })
            .collect();
        for t in tasks {
            assert!(t.await.unwrap().is_err());
        }
        let fetches = source.1.load(std::sync::atomic::Ordering::SeqCst);
        let intervals = (started.elapsed().as_millis() / 200) as usize + 1;
        assert!(fetches <= intervals + 1, "{fetches} fetches in {intervals} intervals");
    }

    #[tokio::test]
    async fn a_partner_token_without_its_partner_is_rejected() {
        let (enc, public) = keypair(4);
        let (v, _) = verifier(vec![VerificationKey {
            key_id: "k1".into(),
            public_key: public,
            expires_at: None,
        }]);
        let mut c = claims(600);
        c.partner_id = None;
        let err = v.verify(&sign(&enc, "k1", &c)).await.unwrap_err();
        assert!(err.to_string().contains("partner"), "{err}");
    }

    #[tokio::test]
    async fn keys_past_their_expiry_no_longer_verify() {
        let (enc, public) = keypair(3);
        let (v, _) = verifier(vec![VerificationKey {
            key_id: "old".into(),
            public_key: public,
            expires_at: Some(Utc::now() - chrono::Duration::seconds(1)),
        }]);
        assert!(v.verify(&sign(&enc, "old", &claims(600))).await.is_err());
    }

    #[test]
    fn bearer_tokens_are_parsed_strictly() {
        let mut h = http::HeaderMap::new();
        assert!(bearer_token(&h).is_none());
        h.insert("authorization", "Bearer abc".parse().unwrap());
        assert_eq!(bearer_token(&h), Some(Ok("abc")));
        h.insert("authorization", "Basic abc".parse().unwrap());
        assert_eq!(bearer_token(&h), Some(Err(())));
        h.insert("authorization", "Bearer ".parse().unwrap());
        assert_eq!(bearer_token(&h), Some(Err(())));
    }
}
