//! The access tokens identity signs, and the token pairs of users' sessions.

use std::time::Duration;

use retail_kit::auth::{AUDIENCE, Claims, PrincipalKind};
use retail_kit::error::ServiceResult;

use super::{App, chrono_of, kind_of, now};
use crate::domain::scopes;
use crate::store::user;

/// Tokens handed out: an access token and, for a user's session, its refresh token.
pub(crate) struct Tokens {
    pub(crate) access_token: String,
    pub(crate) expires_in: Duration,
    /// The refresh token and how long it lives; none for API keys and services.
    pub(crate) refresh: Option<(String, Duration)>,
    pub(crate) scopes: Vec<String>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("expires_in", &self.expires_in)
            .field("scopes", &self.scopes)
            .finish_non_exhaustive()
    }
}

/// Who an access token is for.
pub(super) struct Grant<'a> {
    pub(super) subject: &'a str,
    pub(super) kind: PrincipalKind,
    pub(super) roles: &'a [scopes::Role],
    pub(super) scopes: Vec<String>,
    pub(super) partner_id: Option<&'a str>,
    pub(super) session_id: Option<&'a str>,
    /// The user's stores (staff users).
    pub(super) stores: Vec<String>,
}

impl App {
    /// Signs an access token for `grant`; a grant without a session gets no refresh
    /// token.
    pub(super) fn issue(&self, grant: Grant<'_>) -> ServiceResult<Tokens> {
        let ttl = self.tokens.access_ttl();
        let issued = now();
        let claims = Claims {
            iss: self.tokens.issuer.clone(),
            aud: AUDIENCE.into(),
            sub: grant.subject.to_owned(),
            exp: (issued + chrono_of(ttl)).timestamp(),
            iat: issued.timestamp(),
            nbf: issued.timestamp(),
            jti: uuid::Uuid::new_v4().to_string(),
            kind: grant.kind,
            roles: grant.roles.iter().map(|r| r.as_str().to_owned()).collect(),
            scope: grant.scopes.join(" "),
            partner_id: grant.partner_id.map(str::to_owned),
            sid: grant.session_id.map(str::to_owned),
            stores: grant.stores,
        };
        Ok(Tokens {
            access_token: self.keys.sign(&claims)?,
            expires_in: ttl,
            refresh: None,
            scopes: grant.scopes,
        })
    }

    /// The token pair of `user`'s session: an access token with the user's current
    /// roles and scopes, and `refresh_token`.
    pub(super) fn user_tokens(
        &self,
        user: &user::Model,
        session_id: &str,
        refresh_token: String,
    ) -> ServiceResult<Tokens> {
        let kind = kind_of(user)?;
        let roles = scopes::roles_of(&user.roles);
        let tokens = self.issue(Grant {
            subject: &user.id,
            kind: kind.principal(),
            roles: &roles,
            scopes: kind.scopes(&roles),
            partner_id: user.partner_id.as_deref(),
            session_id: Some(session_id),
            stores: crate::domain::users::stores_of(&user.stores),
        })?;
        Ok(Tokens {
            refresh: Some((refresh_token, self.tokens.refresh_ttl())),
            ..tokens
        })
    }
}
