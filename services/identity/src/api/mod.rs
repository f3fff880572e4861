//! The gRPC adapter of identity: authorise (the scope; partner principals see only
//! their own partner's users and keys), parse the request into the app's input
//! ([`parse`]), call the use case, convert the answer ([`convert`]).

mod convert;
mod parse;

use std::sync::Arc;

use retail_kit::auth::{Principal, PrincipalKind};
use retail_kit::convert::now;
use retail_kit::error::{ServiceError, ServiceResult};
use retail_kit::idempotency::IdempotencyKey;
use retail_kit::paging::Page;
use retail_proto::identity as pb;
use retail_proto::identity::identity_service_server::IdentityService;
use tonic::{Request, Response, Status};

use crate::app::{App, Caller, kind_of};
use crate::domain::scopes;
use convert::{
    api_key_created_stored, api_key_created_to_pb, api_key_to_pb, audit_event_to_pb, principal_to_pb, public_key_to_pb,
    service_account_created_stored, service_account_created_to_pb, service_account_to_pb, tokens_to_pb, user_to_pb,
};

/// Methods callable without a token.
pub(crate) const PUBLIC_METHODS: &[&str] = &[
    "/retail.identity.v1.IdentityService/Login",
    "/retail.identity.v1.IdentityService/RefreshToken",
    "/retail.identity.v1.IdentityService/Logout",
    "/retail.identity.v1.IdentityService/ExchangeApiKey",
    "/retail.identity.v1.IdentityService/IssueServiceToken",
    "/retail.identity.v1.IdentityService/ListPublicKeys",
];

type Rpc<T> = Result<Response<T>, Status>;

fn ok<T>(value: T) -> Rpc<T> {
    Ok(Response::new(value))
}

/// The caller, if it holds `scope`.
fn caller<T>(request: &Request<T>, scope: &str) -> ServiceResult<Caller> {
    let p = Principal::of(request)?;
    p.require_scope(scope)?;
    Ok(Caller::from(p))
}

#[derive(Debug, Clone)]
pub(crate) struct IdentityApi {
    app: Arc<App>,
}

impl IdentityApi {
    pub(crate) fn new(app: Arc<App>) -> Self {
        Self { app }
    }
}

#[tonic::async_trait]
impl IdentityService for IdentityApi {
    #[tracing::instrument(skip_all)]
    async fn login(&self, request: Request<pb::LoginRequest>) -> Rpc<pb::LoginResponse> {
        let login = parse::login(request.into_inner())?;
        let tokens = self.app.login(login).await?;
        ok(pb::LoginResponse {
            tokens: Some(tokens_to_pb(tokens)),
        })
    }

    #[tracing::instrument(skip_all)]
    async fn refresh_token(&self, request: Request<pb::RefreshTokenRequest>) -> Rpc<pb::RefreshTokenResponse> {
        let req = request.into_inner();
        parse::secret("refresh_token", &req.refresh_token)?;
        let tokens = self.app.refresh(&req.refresh_token).await?;
        ok(pb::RefreshTokenResponse {
            tokens: Some(tokens_to_pb(tokens)),
        })
    }

    #[tracing::instrument(skip_all)]
    async fn logout(&self, request: Request<pb::LogoutRequest>) -> Rpc<pb::LogoutResponse> {
        let req = request.into_inner();
        parse::secret("refresh_token", &req.refresh_token)?;
        self.app.logout(&req.refresh_token).await?;
        ok(pb::LogoutResponse {})
    }

    #[tracing::instrument(skip_all)]
    async fn exchange_api_key(&self, request: Request<pb::ExchangeApiKeyRequest>) -> Rpc<pb::ExchangeApiKeyResponse> {
        let req = request.into_inner();
        parse::secret("api_key", &req.api_key)?;
        let tokens = self.app.exchange_api_key(&req.api_key).await?;
        ok(pb::ExchangeApiKeyResponse {
            tokens: Some(tokens_to_pb(tokens)),
        })
    }

    #[tracing::instrument(skip_all)]
    async fn issue_service_token(
        &self,
        request: Request<pb::IssueServiceTokenRequest>,
    ) -> Rpc<pb::IssueServiceTokenResponse> {
        let req = request.into_inner();
        parse::service_credentials(&req)?;
        let tokens = self.app.issue_service_token(&req.client_id, &req.client_secret).await?;
        ok(pb::IssueServiceTokenResponse {
            tokens: Some(tokens_to_pb(tokens)),
        })
    }

    async fn list_public_keys(&self, _request: Request<pb::ListPublicKeysRequest>) -> Rpc<pb::ListPublicKeysResponse> {
        let keys = self.app.public_keys().await?;
        ok(pb::ListPublicKeysResponse {
            keys: keys.iter().map(public_key_to_pb).collect(),
        })
    }

    async fn get_current_principal(&self, request: Request<pb::GetCurrentPrincipalRequest>) -> Rpc<pb::Principal> {
        ok(principal_to_pb(Principal::of(&request)?))
    }

    #[tracing::instrument(skip_all)]
    async fn change_password(&self, request: Request<pb::ChangePasswordRequest>) -> Rpc<pb::ChangePasswordResponse> {
        let p = Principal::of(&request)?;
        if !matches!(p.kind, PrincipalKind::Staff | PrincipalKind::PartnerUser) {
            return Err(ServiceError::FailedPrecondition("only users have passwords".into()).into());
        }
        let who = Caller::from(p);
        let req = request.into_inner();
        let user = self.app.own_user(&who).await?;
        let new_password = parse::password_change(&req, &user.username)?;
        self.app
            .change_password(&who, &user, &req.current_password, &new_password)
            .await?;
        ok(pb::ChangePasswordResponse {})
    }

    #[tracing::instrument(skip_all)]
    async fn create_user(&self, request: Request<pb::CreateUserRequest>) -> Rpc<pb::User> {
        let who = caller(&request, scopes::USERS_WRITE)?;
        let req = request.into_inner();
        // The fingerprint must not be a fast hash of the password.
        let key = IdempotencyKey::from_request(
            "identity.CreateUser",
            &who.subject,
            &req.request_id,
            &pb::CreateUserRequest {
                password: String::new(),
                ..req.clone()
            },
        )?;
        let new = parse::new_user(&req, &who)?;
        ok(self.app.create_user(&who, new, key.as_ref(), user_to_pb).await?)
    }

    async fn get_user(&self, request: Request<pb::GetUserRequest>) -> Rpc<pb::User> {
        let who = caller(&request, scopes::USERS_READ)?;
        let id = parse::user_id("name", &request.get_ref().name)?;
        ok(user_to_pb(&self.app.user(&who, &id).await?))
    }

    async fn list_users(&self, request: Request<pb::ListUsersRequest>) -> Rpc<pb::ListUsersResponse> {
        let who = caller(&request, scopes::USERS_READ)?;
        let req = request.get_ref();
        let Some(partner) = parse::partner_filter(&who, &req.partner_id)? else {
            return ok(pb::ListUsersResponse::default());
        };
        let page = Page::parse(req.page_size, &req.page_token, &format!("partner={partner:?}"))?;
        let (users, next_page_token) = self.app.list_users(partner.as_deref(), &page).await?;
        ok(pb::ListUsersResponse {
            users: users.iter().map(user_to_pb).collect(),
            next_page_token,
        })
    }

    #[tracing::instrument(skip_all)]
    async fn update_user(&self, request: Request<pb::UpdateUserRequest>) -> Rpc<pb::User> {
        let who = caller(&request, scopes::USERS_WRITE)?;
        let req = request.into_inner();
        let Some(changes) = req.user else {
            return Err(ServiceError::invalid("user", "is required").into());
        };
        let paths = req.update_mask.map(|m| m.paths).unwrap_or_default();
        if paths.is_empty() {
            return Err(ServiceError::invalid("update_mask", "must name the fields to update").into());
        }
        let id = parse::user_id("user.name", &changes.name)?;
        // What may change depends on the user's kind: read it first.
        let current = self.app.user(&who, &id).await?;
        let update = parse::user_update(&changes, &paths, kind_of(&current)?)?;
        ok(user_to_pb(&self.app.update_user(&who, current, update).await?))
    }

    #[tracing::instrument(skip_all)]
    async fn reset_user_password(
        &self,
        request: Request<pb::ResetUserPasswordRequest>,
    ) -> Rpc<pb::ResetUserPasswordResponse> {
        let who = caller(&request, scopes::USERS_WRITE)?;
        let req = request.into_inner();
        let id = parse::user_id("name", &req.name)?;
        // The password must not contain the username: read the user first.
        let user = self.app.user(&who, &id).await?;
        let password = parse::new_password("name", &user.username, &req.new_password)?;
        self.app.reset_password(&who, &user, &password).await?;
        ok(pb::ResetUserPasswordResponse {})
    }

    #[tracing::instrument(skip_all)]
    async fn create_api_key(&self, request: Request<pb::CreateApiKeyRequest>) -> Rpc<pb::CreateApiKeyResponse> {
        let who = caller(&request, scopes::API_KEYS_WRITE)?;
        let req = request.into_inner();
        let key = IdempotencyKey::from_request("identity.CreateApiKey", &who.subject, &req.request_id, &req)?;
        let new = parse::new_api_key(&req, now())?;
        // A partner principal creates keys for its own partner only; another
        // partner's is as good as missing.
        if who.partner.as_ref().is_some_and(|own| *own != new.partner_id) {
            return Err(ServiceError::not_found("partner", new.partner_id).into());
        }
        ok(self
            .app
            .create_api_key(&who, new, key.as_ref(), api_key_created_to_pb, api_key_created_stored)
            .await?)
    }

    async fn get_api_key(&self, request: Request<pb::GetApiKeyRequest>) -> Rpc<pb::ApiKey> {
        let who = caller(&request, scopes::API_KEYS_READ)?;
        let id = parse::api_key_id("name", &request.get_ref().name)?;
        ok(api_key_to_pb(&self.app.api_key(&who, &id).await?))
    }

    async fn list_api_keys(&self, request: Request<pb::ListApiKeysRequest>) -> Rpc<pb::ListApiKeysResponse> {
        let who = caller(&request, scopes::API_KEYS_READ)?;
        let req = request.get_ref();
        let Some(partner) = parse::partner_filter(&who, &req.partner_id)? else {
            return ok(pb::ListApiKeysResponse::default());
        };
        let page = Page::parse(req.page_size, &req.page_token, &format!("partner={partner:?}"))?;
        let (keys, next_page_token) = self.app.list_api_keys(partner.as_deref(), &page).await?;
        ok(pb::ListApiKeysResponse {
            api_keys: keys.iter().map(api_key_to_pb).collect(),
            next_page_token,
        })
    }

    #[tracing::instrument(skip_all)]
    async fn revoke_api_key(&self, request: Request<pb::RevokeApiKeyRequest>) -> Rpc<pb::ApiKey> {
        let who = caller(&request, scopes::API_KEYS_WRITE)?;
        let id = parse::api_key_id("name", &request.get_ref().name)?;
        ok(api_key_to_pb(&self.app.revoke_api_key(&who, &id).await?))
    }

    #[tracing::instrument(skip_all)]
    async fn create_service_account(
        &self,
        request: Request<pb::CreateServiceAccountRequest>,
    ) -> Rpc<pb::CreateServiceAccountResponse> {
        let who = caller(&request, scopes::SERVICE_ACCOUNTS_WRITE)?;
        let req = request.into_inner();
        let key = IdempotencyKey::from_request("identity.CreateServiceAccount", &who.subject, &req.request_id, &req)?;
        let new = parse::new_service_account(&req)?;
        ok(self
            .app
            .create_service_account(
                &who,
                new,
                key.as_ref(),
                service_account_created_to_pb,
                service_account_created_stored,
            )
            .await?)
    }

    async fn list_service_accounts(
        &self,
        request: Request<pb::ListServiceAccountsRequest>,
    ) -> Rpc<pb::ListServiceAccountsResponse> {
        caller(&request, scopes::SERVICE_ACCOUNTS_READ)?;
        let req = request.get_ref();
        let page = Page::parse(req.page_size, &req.page_token, "")?;
        let (accounts, next_page_token) = self.app.list_service_accounts(&page).await?;
        ok(pb::ListServiceAccountsResponse {
            service_accounts: accounts.iter().map(service_account_to_pb).collect(),
            next_page_token,
        })
    }

    #[tracing::instrument(skip_all)]
    async fn rotate_signing_key(
        &self,
        request: Request<pb::RotateSigningKeyRequest>,
    ) -> Rpc<pb::RotateSigningKeyResponse> {
        let who = caller(&request, scopes::KEYS_WRITE)?;
        let key = self.app.rotate_signing_key(&who).await?;
        ok(pb::RotateSigningKeyResponse {
            key: Some(public_key_to_pb(&key)),
        })
    }

    async fn list_audit_events(
        &self,
        request: Request<pb::ListAuditEventsRequest>,
    ) -> Rpc<pb::ListAuditEventsResponse> {
        caller(&request, scopes::AUDIT_READ)?;
        let req = request.get_ref();
        let action = parse::audit_action(&req.action)?;
        let page = Page::parse(req.page_size, &req.page_token, &format!("action={action:?}"))?;
        let (events, next_page_token) = self.app.list_audit_events(action, &page).await?;
        ok(pb::ListAuditEventsResponse {
            audit_events: events.iter().map(audit_event_to_pb).collect(),
            next_page_token,
        })
    }
}
