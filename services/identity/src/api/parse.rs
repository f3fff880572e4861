//! Requests parsed into the app's inputs, every field violation collected at once.

use chrono::{DateTime, Utc};
use retail_kit::convert::from_timestamp;
use retail_kit::error::{ServiceError, ServiceResult, Violations};
use retail_kit::limits;
use retail_proto::identity as pb;

use crate::app::{Caller, Login, NewApiKey, NewServiceAccount, NewUser, UserUpdate};
use crate::domain::fields::{self, Email, Password, Username};
use crate::domain::ids::{ApiKeyId, UserId};
use crate::domain::scopes::{self, Role};
use crate::domain::users::UserKind;

const MAX_SECRET_INPUT: usize = 256;

pub(super) fn user_id(field: &str, name: &str) -> ServiceResult<UserId> {
    Ok(UserId::parse(field, name)?)
}

pub(super) fn api_key_id(field: &str, name: &str) -> ServiceResult<ApiKeyId> {
    Ok(ApiKeyId::parse(field, name)?)
}

/// Rejects oversized secret inputs before any work, and empty ones.
pub(super) fn secret(field: &str, value: &str) -> ServiceResult<()> {
    if value.is_empty() {
        return Err(ServiceError::invalid(field, "is required"));
    }
    if value.len() > MAX_SECRET_INPUT {
        return Err(ServiceError::invalid(
            field,
            format!("must be at most {MAX_SECRET_INPUT} bytes"),
        ));
    }
    Ok(())
}

fn role_of_pb(value: i32) -> Option<Role> {
    match pb::Role::try_from(value).ok()? {
        pb::Role::Admin => Some(Role::Admin),
        pb::Role::StoreManager => Some(Role::StoreManager),
        pb::Role::Analyst => Some(Role::Analyst),
        pb::Role::Support => Some(Role::Support),
        pb::Role::Unspecified => None,
    }
}

/// Roles of a request, at most [`limits::MAX_ROLES`].
fn roles(v: &mut Violations, field: &str, raw: &[i32]) -> Vec<Role> {
    let mut roles = Vec::new();
    let n = v.at_most(field, raw, limits::MAX_ROLES);
    for (i, r) in raw.iter().enumerate().take(n) {
        match role_of_pb(*r) {
            Some(role) => roles.push(role),
            None => v.add(format!("{field}[{i}]"), "is not a role"),
        }
    }
    roles
}

/// Login names are only bounded here: any other name fails like a wrong password.
pub(super) fn login(req: pb::LoginRequest) -> ServiceResult<Login> {
    let mut v = Violations::new();
    if req.username.trim().is_empty() {
        v.add("username", "is required");
    } else if req.username.len() > 64 {
        v.add("username", "must be at most 64 characters");
    }
    if req.password.is_empty() {
        v.add("password", "is required");
    } else if req.password.len() > 4 * fields::MAX_PASSWORD_CHARS {
        v.add("password", "is too long");
    }
    v.finish()?;
    Ok(Login {
        username: req.username.trim().to_lowercase(),
        password: req.password,
    })
}

pub(super) fn service_credentials(req: &pb::IssueServiceTokenRequest) -> ServiceResult<()> {
    let mut v = Violations::new();
    if req.client_id.is_empty() || req.client_id.len() > 64 {
        v.add("client_id", "must be 1-64 characters");
    }
    if req.client_secret.is_empty() || req.client_secret.len() > MAX_SECRET_INPUT {
        v.add("client_secret", format!("must be 1-{MAX_SECRET_INPUT} bytes"));
    }
    v.finish()
}

/// A new password for the user named `username` (as stored), checked against the
/// policy; `username_field` names the field should the stored name be unreadable.
pub(super) fn new_password(username_field: &str, username: &str, raw: &str) -> ServiceResult<Password> {
    let username = Username::parse(username_field, username)?;
    Ok(Password::parse("new_password", raw, Some(&username))?)
}

/// A user's own password change: the current password as presented and the new one.
pub(super) fn password_change(req: &pb::ChangePasswordRequest, username: &str) -> ServiceResult<Password> {
    secret("current_password", &req.current_password)?;
    let new_password = new_password("username", username, &req.new_password)?;
    if req.new_password == req.current_password {
        return Err(ServiceError::invalid(
            "new_password",
            "must differ from the current password",
        ));
    }
    Ok(new_password)
}

/// A user to create as `caller` may create it: a partner principal creates users of
/// its own partner only.
pub(super) fn new_user(req: &pb::CreateUserRequest, caller: &Caller) -> ServiceResult<NewUser> {
    let Some(user) = req.user.as_ref() else {
        return Err(ServiceError::invalid("user", "is required"));
    };
    let mut v = Violations::new();
    let username = v.check(Username::parse("user.username", &user.username));
    let email = v.check(Email::parse_optional("user.email", &user.email)).flatten();
    let display_name = v
        .check(fields::display_text(
            "user.display_name",
            &user.display_name,
            200,
            false,
        ))
        .unwrap_or_default();
    let password = v.check(Password::parse("password", &req.password, username.as_ref()));
    let kind = match pb::PrincipalKind::try_from(user.kind) {
        Ok(pb::PrincipalKind::Staff) => Some(UserKind::Staff),
        Ok(pb::PrincipalKind::PartnerUser) => Some(UserKind::PartnerUser),
        _ => {
            v.add(
                "user.kind",
                "must be PRINCIPAL_KIND_STAFF or PRINCIPAL_KIND_PARTNER_USER",
            );
            None
        }
    };
    let roles = roles(&mut v, "user.roles", &user.roles);
    let stores = v
        .check(crate::domain::users::parse_stores("user.stores", &user.stores))
        .unwrap_or_default();
    let mut partner_id = None;
    match kind {
        Some(UserKind::Staff) => {
            if roles.is_empty() && user.roles.is_empty() {
                v.add("user.roles", "a staff user needs at least one role");
            }
            if !user.partner_id.is_empty() {
                v.add("user.partner_id", "must be empty for staff users");
            }
        }
        Some(UserKind::PartnerUser) => {
            if !user.roles.is_empty() {
                v.add("user.roles", "must be empty for partner users");
            }
            if !user.stores.is_empty() {
                v.add("user.stores", "must be empty for partner users");
            }
            partner_id = v.check(fields::external_id("user.partner_id", &user.partner_id));
        }
        None => {}
    }
    v.finish()?;
    let (Some(username), Some(password), Some(kind)) = (username, password, kind) else {
        return Err(ServiceError::internal(anyhow::anyhow!("validated fields missing")));
    };
    if let Some(own) = &caller.partner
        && partner_id.as_ref() != Some(own)
    {
        return Err(ServiceError::PermissionDenied(
            "partners can only create their own users".into(),
        ));
    }
    Ok(NewUser {
        username,
        email,
        display_name,
        password,
        kind,
        roles,
        partner_id,
        stores,
    })
}

/// The changes the mask `paths` names, for a user of `kind`.
pub(super) fn user_update(changes: &pb::User, paths: &[String], kind: UserKind) -> ServiceResult<UserUpdate> {
    let mut v = Violations::new();
    let mut update = UserUpdate::default();
    for path in v.mask_paths("update_mask", paths) {
        match path.as_str() {
            "email" => {
                if let Some(email) = v.check(Email::parse_optional("user.email", &changes.email)) {
                    update.email = Some(email);
                    update.fields.push("email");
                }
            }
            "display_name" => {
                if let Some(name) = v.check(fields::display_text(
                    "user.display_name",
                    &changes.display_name,
                    200,
                    true,
                )) {
                    update.display_name = Some(name);
                    update.fields.push("display_name");
                }
            }
            "roles" => {
                if !kind.has_roles() {
                    v.add("user.roles", "partner users have no roles");
                    continue;
                }
                let roles = roles(&mut v, "user.roles", &changes.roles);
                if roles.is_empty() {
                    v.add("user.roles", "a staff user needs at least one role");
                }
                update.roles = Some(roles);
                update.fields.push("roles");
            }
            "disabled" => {
                update.disabled = Some(changes.disabled);
                update.fields.push("disabled");
            }
            "stores" => {
                if !kind.has_roles() {
                    v.add("user.stores", "partner users have no stores");
                    continue;
                }
                if let Some(stores) = v.check(crate::domain::users::parse_stores("user.stores", &changes.stores)) {
                    update.stores = Some(stores);
                    update.fields.push("stores");
                }
            }
            other => v.add("update_mask", format!("cannot update `{other}`")),
        }
    }
    v.finish()?;
    Ok(update)
}

/// The partner filter of a list request. A partner principal is confined to its own
/// partner; `None` when it asks for another partner's rows (an empty page, which
/// reveals nothing about them).
pub(super) fn partner_filter(caller: &Caller, requested: &str) -> ServiceResult<Option<Option<String>>> {
    let requested = if requested.is_empty() {
        None
    } else {
        Some(fields::external_id("partner_id", requested)?)
    };
    match &caller.partner {
        None => Ok(Some(requested)),
        Some(own) if requested.as_ref().is_none_or(|p| p == own) => Ok(Some(Some(own.clone()))),
        Some(_) => Ok(None),
    }
}

pub(super) fn new_api_key(req: &pb::CreateApiKeyRequest, at: DateTime<Utc>) -> ServiceResult<NewApiKey> {
    let Some(spec) = req.api_key.as_ref() else {
        return Err(ServiceError::invalid("api_key", "is required"));
    };
    let mut v = Violations::new();
    let display_name = v.check(fields::display_text(
        "api_key.display_name",
        &spec.display_name,
        200,
        true,
    ));
    let partner_id = v.check(fields::external_id("api_key.partner_id", &spec.partner_id));
    if spec.scopes.is_empty() {
        v.add("api_key.scopes", "at least one scope is required");
    }
    if spec.scopes.len() > scopes::PARTNER.len() {
        v.add("api_key.scopes", "too many scopes");
    }
    for (i, scope) in spec.scopes.iter().enumerate().take(scopes::PARTNER.len()) {
        if !scopes::is_partner_scope(scope) {
            v.add(
                format!("api_key.scopes[{i}]"),
                format!("must be one of {}", scopes::PARTNER.join(", ")),
            );
        }
    }
    let expires_at = match &spec.expire_time {
        None => None,
        Some(ts) => match from_timestamp(ts) {
            Some(t) if t > at => Some(t),
            _ => {
                v.add("api_key.expire_time", "must be a valid time in the future");
                None
            }
        },
    };
    v.finish()?;
    let (Some(display_name), Some(partner_id)) = (display_name, partner_id) else {
        return Err(ServiceError::internal(anyhow::anyhow!("validated fields missing")));
    };
    Ok(NewApiKey {
        display_name,
        partner_id,
        scopes: spec.scopes.clone(),
        expires_at,
    })
}

pub(super) fn new_service_account(req: &pb::CreateServiceAccountRequest) -> ServiceResult<NewServiceAccount> {
    let Some(spec) = req.service_account.as_ref() else {
        return Err(ServiceError::invalid("service_account", "is required"));
    };
    let mut v = Violations::new();
    let client_id = v.check(fields::external_id("service_account.client_id", &spec.client_id));
    let n = v.at_most("service_account.scopes", &spec.scopes, limits::MAX_SCOPES);
    for (i, scope) in spec.scopes.iter().enumerate().take(n) {
        if !scopes::is_known(scope) {
            v.add(format!("service_account.scopes[{i}]"), "is not a known scope");
        }
    }
    v.finish()?;
    let Some(client_id) = client_id else {
        return Err(ServiceError::internal(anyhow::anyhow!("validated fields missing")));
    };
    Ok(NewServiceAccount {
        client_id,
        scopes: spec.scopes.clone(),
    })
}

/// An audit action filter: empty for all actions.
pub(super) fn audit_action(raw: &str) -> ServiceResult<Option<&str>> {
    if raw.is_empty() {
        Ok(None)
    } else if raw.len() > 64 || !raw.chars().all(|c| c.is_ascii_lowercase() || c == '.' || c == '_') {
        Err(ServiceError::invalid(
            "action",
            "must be an action name such as login.failed",
        ))
    } else {
        Ok(Some(raw))
    }
}
