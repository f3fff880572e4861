//! Identity's views as protobuf messages.

use retail_kit::auth::{Principal, PrincipalKind};
use retail_kit::convert::{duration, opt_timestamp, timestamp};
use retail_proto::identity as pb;

use crate::app::{ApiKeyCreated, ServiceAccountCreated, Tokens};
use crate::domain::scopes::{self, Role};
use crate::domain::users::UserKind;
use crate::store::{api_key, audit_event, service_account, signing_key, user};

fn pb_kind(kind: PrincipalKind) -> pb::PrincipalKind {
    match kind {
        PrincipalKind::Staff => pb::PrincipalKind::Staff,
        PrincipalKind::PartnerUser => pb::PrincipalKind::PartnerUser,
        PrincipalKind::PartnerSystem => pb::PrincipalKind::PartnerSystem,
        PrincipalKind::Service => pb::PrincipalKind::Service,
    }
}

fn pb_role(role: Role) -> pb::Role {
    match role {
        Role::Admin => pb::Role::Admin,
        Role::StoreManager => pb::Role::StoreManager,
        Role::Analyst => pb::Role::Analyst,
        Role::Support => pb::Role::Support,
    }
}

pub(super) fn tokens_to_pb(t: Tokens) -> pb::TokenPair {
    let (refresh_token, refresh_expires_in) = match t.refresh {
        Some((token, ttl)) => (token, Some(duration(ttl))),
        None => (String::new(), None),
    };
    pb::TokenPair {
        access_token: t.access_token,
        token_type: "Bearer".into(),
        expires_in: Some(duration(t.expires_in)),
        refresh_token,
        refresh_expires_in,
        scopes: t.scopes,
    }
}

pub(super) fn principal_to_pb(p: &Principal) -> pb::Principal {
    pb::Principal {
        subject: p.subject.clone(),
        kind: pb_kind(p.kind) as i32,
        roles: p
            .roles
            .iter()
            .filter_map(|r| Role::parse(r))
            .map(|r| pb_role(r) as i32)
            .collect(),
        scopes: p.scopes.iter().cloned().collect(),
        partner_id: p.partner_id.clone().unwrap_or_default(),
        expire_time: Some(timestamp(p.expires_at)),
        stores: p.stores.clone(),
    }
}

pub(super) fn user_to_pb(u: &user::Model) -> pb::User {
    let kind = match UserKind::parse(&u.kind) {
        Some(kind) => pb_kind(kind.principal()),
        None => pb::PrincipalKind::Unspecified,
    };
    pb::User {
        name: format!("users/{}", u.id),
        username: u.username.clone(),
        email: u.email.clone().unwrap_or_default(),
        display_name: u.display_name.clone(),
        kind: kind as i32,
        roles: scopes::roles_of(&u.roles)
            .into_iter()
            .map(|r| pb_role(r) as i32)
            .collect(),
        partner_id: u.partner_id.clone().unwrap_or_default(),
        stores: crate::domain::users::stores_of(&u.stores),
        disabled: u.disabled,
        create_time: Some(timestamp(u.created_at)),
        update_time: Some(timestamp(u.updated_at)),
        last_login_time: opt_timestamp(u.last_login_at),
    }
}

pub(super) fn api_key_to_pb(k: &api_key::Model) -> pb::ApiKey {
    pb::ApiKey {
        name: format!("apiKeys/{}", k.id),
        display_name: k.display_name.clone(),
        partner_id: k.partner_id.clone(),
        scopes: scopes::split(&k.scopes),
        prefix: k.prefix.clone(),
        create_time: Some(timestamp(k.created_at)),
        last_use_time: opt_timestamp(k.last_used_at),
        revoke_time: opt_timestamp(k.revoked_at),
        expire_time: opt_timestamp(k.expires_at),
    }
}

pub(super) fn api_key_created_to_pb(c: &ApiKeyCreated) -> pb::CreateApiKeyResponse {
    pb::CreateApiKeyResponse {
        api_key: Some(api_key_to_pb(&c.key)),
        secret: c.secret.clone(),
    }
}

/// What a replay answers: the key without its secret (shown once).
pub(super) fn api_key_created_stored(r: &pb::CreateApiKeyResponse) -> pb::CreateApiKeyResponse {
    pb::CreateApiKeyResponse {
        api_key: r.api_key.clone(),
        secret: String::new(),
    }
}

pub(super) fn service_account_to_pb(a: &service_account::Model) -> pb::ServiceAccount {
    pb::ServiceAccount {
        name: format!("serviceAccounts/{}", a.id),
        client_id: a.client_id.clone(),
        scopes: scopes::split(&a.scopes),
        create_time: Some(timestamp(a.created_at)),
    }
}

pub(super) fn service_account_created_to_pb(c: &ServiceAccountCreated) -> pb::CreateServiceAccountResponse {
    pb::CreateServiceAccountResponse {
        service_account: Some(service_account_to_pb(&c.account)),
        client_secret: c.client_secret.clone(),
    }
}

/// What a replay answers: the account without its secret (shown once).
pub(super) fn service_account_created_stored(r: &pb::CreateServiceAccountResponse) -> pb::CreateServiceAccountResponse {
    pb::CreateServiceAccountResponse {
        service_account: r.service_account.clone(),
        client_secret: String::new(),
    }
}

pub(super) fn public_key_to_pb(k: &signing_key::Model) -> pb::PublicKey {
    pb::PublicKey {
        key_id: k.id.clone(),
        algorithm: "EdDSA".into(),
        public_key: k.public_key.clone(),
        create_time: Some(timestamp(k.created_at)),
        retire_time: opt_timestamp(k.retired_at),
        expire_time: opt_timestamp(k.expires_at),
    }
}

pub(super) fn audit_event_to_pb(e: &audit_event::Model) -> pb::AuditEvent {
    pb::AuditEvent {
        name: format!("auditEvents/{}", e.id),
        action: e.action.clone(),
        actor: e.actor.clone(),
        target: e.target.clone(),
        create_time: Some(timestamp(e.created_at)),
        detail_json: e.detail_json.clone(),
    }
}
