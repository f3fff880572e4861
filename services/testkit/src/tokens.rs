//! Tokens as identity would issue them, signed by a fixed test key, and the key
//! source that makes a service under test trust that key without running identity.

use std::sync::Arc;

use ed25519_dalek::pkcs8::EncodePrivateKey;
use retail_kit::auth::{AUDIENCE, Claims, KeySource, PrincipalKind, VerificationKey};

const SEED: [u8; 32] = [42; 32];
const KEY_ID: &str = "test-key";

#[derive(Debug)]
struct StaticKeys(Vec<VerificationKey>);

#[async_trait::async_trait]
impl KeySource for StaticKeys {
    async fn fetch(&self) -> anyhow::Result<Vec<VerificationKey>> {
        Ok(self.0.clone())
    }
}

/// The public key of the test signing key, as a service's key source.
pub fn test_keys() -> Arc<dyn KeySource> {
    let key = ed25519_dalek::SigningKey::from_bytes(&SEED);
    Arc::new(StaticKeys(vec![VerificationKey {
        key_id: KEY_ID.into(),
        public_key: key.verifying_key().to_bytes().to_vec(),
        expires_at: None,
    }]))
}

/// Signs `claims` with the test key.
pub fn sign(claims: &Claims) -> String {
    let key = ed25519_dalek::SigningKey::from_bytes(&SEED);
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.kid = Some(KEY_ID.into());
    let der = key.to_pkcs8_der().unwrap_or_else(|e| panic!("test key encodes: {e}"));
    jsonwebtoken::encode(&header, claims, &jsonwebtoken::EncodingKey::from_ed_der(der.as_bytes()))
        .unwrap_or_else(|e| panic!("test token signs: {e}"))
}

/// Claims of a principal valid for an hour.
pub fn claims(subject: &str, kind: PrincipalKind, scopes: &[&str], partner_id: Option<&str>) -> Claims {
    let now = chrono::Utc::now().timestamp();
    Claims {
        iss: "retail-identity".into(),
        aud: AUDIENCE.into(),
        sub: subject.into(),
        exp: now + 3600,
        iat: now,
        nbf: now,
        jti: uuid::Uuid::new_v4().to_string(),
        kind,
        roles: vec![],
        scope: scopes.join(" "),
        partner_id: partner_id.map(str::to_owned),
        sid: None,
        stores: Vec::new(),
    }
}

/// A staff token with `scopes`.
pub fn staff_token(scopes: &[&str]) -> String {
    sign(&claims("staff-1", PrincipalKind::Staff, scopes, None))
}

/// `message` with `authorization: Bearer {token}`.
pub fn with_token<T>(token: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Ok(value) = format!("Bearer {token}").parse() {
        request.metadata_mut().insert("authorization", value);
    }
    request
}

/// The fields named by a status's `google.rpc.BadRequest` details.
pub fn violated_fields(status: &tonic::Status) -> Vec<String> {
    use tonic_types::StatusExt;
    status
        .get_error_details()
        .bad_request()
        .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
        .unwrap_or_default()
}
