//! What must exist after the first start: the first admin and the configured service
//! accounts. Runs at every start and changes only what differs from configuration.

use anyhow::Context;
use chrono::Utc;
use sea_orm::DatabaseConnection;
use secrecy::ExposeSecret;
use serde_json::json;

use crate::domain::fields::{Password, Username};
use crate::domain::passwords::PasswordHasherConfig;
use crate::domain::scopes::{self, Role};
use crate::domain::secrets;
use crate::settings::BootstrapSettings;
use crate::store::{self, Audit};

fn err(e: retail_kit::ServiceError) -> anyhow::Error {
    anyhow::anyhow!("{e}")
}

pub(crate) async fn run(
    db: &DatabaseConnection,
    settings: &BootstrapSettings,
    hasher: &PasswordHasherConfig,
) -> anyhow::Result<()> {
    admin(db, settings, hasher).await?;
    for (i, account) in settings.service_accounts.iter().enumerate() {
        if let Some(bad) = account.scopes.iter().find(|s| !scopes::is_known(s)) {
            anyhow::bail!("invalid configuration: `bootstrap.service_accounts[{i}].scopes` has unknown scope {bad}");
        }
        let scopes = account.scopes.join(" ");
        let secret_hash = secrets::hash(account.client_secret.expose_secret());
        match store::find_service_account_by_client_id(db, &account.client_id)
            .await
            .map_err(err)?
        {
            Some(existing) => {
                if existing.secret_hash != secret_hash || existing.scopes != scopes {
                    store::update_service_account_credentials(db, &existing.id, secret_hash, scopes)
                        .await
                        .map_err(err)?;
                }
            }
            None => {
                // Another replica starting at the same time may win the insert.
                let inserted = store::insert_service_account(
                    db,
                    store::service_account::Model {
                        id: store::new_id(),
                        client_id: account.client_id.clone(),
                        secret_hash,
                        scopes,
                        created_at: Utc::now(),
                    },
                )
                .await;
                match inserted {
                    Ok(_) | Err(retail_kit::ServiceError::AlreadyExists(_)) => {}
                    Err(e) => return Err(err(e)),
                }
            }
        }
    }
    Ok(())
}

async fn admin(
    db: &DatabaseConnection,
    settings: &BootstrapSettings,
    hasher: &PasswordHasherConfig,
) -> anyhow::Result<()> {
    let password = settings.admin_password.expose_secret();
    let username = Username::parse("bootstrap.admin_username", &settings.admin_username)
        .map_err(|v| anyhow::anyhow!("invalid configuration: `{}` {}", v.field, v.description))?;
    if store::find_user_by_username(db, username.as_str())
        .await
        .map_err(err)?
        .is_some()
    {
        return Ok(());
    }
    if password.is_empty() {
        tracing::warn!("no admin user exists and bootstrap.admin_password is not set; set it to create one");
        return Ok(());
    }
    let password = Password::parse("bootstrap.admin_password", password, Some(&username))
        .map_err(|v| anyhow::anyhow!("invalid configuration: `{}` {}", v.field, v.description))?;
    let hash = hasher
        .hash(password.expose())
        .context("failed to hash the admin password")?;
    let now = Utc::now();
    let inserted = store::insert_user(
        db,
        store::user::Model {
            id: store::new_id(),
            username: username.as_str().to_owned(),
            email: None,
            display_name: "Administrator".into(),
            kind: "staff".into(),
            roles: Role::Admin.as_str().into(),
            partner_id: None,
            password_hash: hash,
            disabled: false,
            created_at: now,
            updated_at: now,
            last_login_at: None,
            password_changed_at: now,
            stores: String::new(),
        },
    )
    .await;
    let user = match inserted {
        Ok(user) => user,
        // Another replica starting at the same time created it.
        Err(retail_kit::ServiceError::AlreadyExists(_)) => return Ok(()),
        Err(e) => return Err(err(e)),
    };
    store::record_audit(
        db,
        Audit {
            action: "user.created",
            actor: "bootstrap",
            target: &user.id,
            detail: json!({ "kind": "staff", "roles": "admin" }),
        },
        now,
    )
    .await
    .map_err(err)?;
    tracing::info!(user_id = %user.id, "created the first admin user");
    Ok(())
}
