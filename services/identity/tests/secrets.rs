//! Passwords, refresh tokens, API-key and client secrets are nowhere in clear text:
//! not in any table, not in any log line.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

#[path = "api/helpers.rs"]
mod helpers;

use helpers::*;
use retail_proto::identity::{self as pb};
use sea_orm::EntityTrait;

async fn dump_tables(app: &TestApp) -> String {
    use retail_identity::store::{api_key, audit_event, login_throttle, refresh_token, service_account, session, user};
    use retail_kit::idempotency::entity as idempotency;
    let db = &app.db;
    let mut dump = String::new();
    dump += &format!("{:?}", user::Entity::find().all(db).await.unwrap());
    dump += &format!("{:?}", session::Entity::find().all(db).await.unwrap());
    dump += &format!("{:?}", refresh_token::Entity::find().all(db).await.unwrap());
    dump += &format!("{:?}", api_key::Entity::find().all(db).await.unwrap());
    dump += &format!("{:?}", service_account::Entity::find().all(db).await.unwrap());
    dump += &format!("{:?}", audit_event::Entity::find().all(db).await.unwrap());
    dump += &format!("{:?}", login_throttle::Entity::find().all(db).await.unwrap());
    for row in idempotency::Entity::find().all(db).await.unwrap() {
        dump += &String::from_utf8_lossy(&row.response);
        dump += &String::from_utf8_lossy(&row.fingerprint);
    }
    dump
}

#[tokio::test]
async fn secrets_are_stored_only_hashed_and_never_logged() {
    let logs = retail_testkit::capture_logs();
    let app = spawn_app().await;
    let admin = app.login("admin", ADMIN_PASSWORD).await.unwrap();
    let user_password = "clear-text-Passw0rd-42";
    app.client()
        .create_user(authed(
            &admin.access_token,
            pb::CreateUserRequest {
                user: Some(pb::User {
                    username: "carol".into(),
                    email: "carol@example.com".into(),
                    kind: pb::PrincipalKind::Staff as i32,
                    roles: vec![pb::Role::Support as i32],
                    ..Default::default()
                }),
                password: user_password.into(),
                request_id: "create-carol".into(),
            },
        ))
        .await
        .unwrap();
    let carol = app.login("carol", user_password).await.unwrap();
    let _ = app.login("carol", "wrong-guess-Passw0rd").await;
    let key = app
        .client()
        .create_api_key(authed(
            &admin.access_token,
            pb::CreateApiKeyRequest {
                api_key: Some(pb::ApiKey {
                    display_name: "till".into(),
                    partner_id: "p1".into(),
                    scopes: vec!["orders.read".into()],
                    ..Default::default()
                }),
                request_id: "key-1".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let account = app
        .client()
        .create_service_account(authed(
            &admin.access_token,
            pb::CreateServiceAccountRequest {
                service_account: Some(pb::ServiceAccount {
                    client_id: "analytics".into(),
                    scopes: vec!["events.read".into()],
                    ..Default::default()
                }),
                request_id: "sa-1".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    app.client()
        .exchange_api_key(pb::ExchangeApiKeyRequest {
            api_key: key.secret.clone(),
        })
        .await
        .unwrap();
    app.client()
        .issue_service_token(pb::IssueServiceTokenRequest {
            client_id: "analytics".into(),
            client_secret: account.client_secret.clone(),
        })
        .await
        .unwrap();

    let secrets = [
        ADMIN_PASSWORD.to_string(),
        user_password.to_string(),
        "wrong-guess-Passw0rd".to_string(),
        admin.refresh_token.clone(),
        carol.refresh_token.clone(),
        key.secret.clone(),
        key.secret[key.api_key.as_ref().unwrap().prefix.len() + 1..].to_string(),
        account.client_secret.clone(),
        SERVICE_SECRET.to_string(),
    ];
    let dump = dump_tables(&app).await;
    assert!(dump.contains("argon2id"), "password hashes are argon2id");
    let log_text = logs.contents();
    assert!(!log_text.is_empty(), "logs were captured");
    for secret in &secrets {
        assert!(!secret.is_empty());
        assert!(!dump.contains(secret.as_str()), "a secret is stored in clear text");
        assert!(!log_text.contains(secret.as_str()), "a secret was logged");
    }
    assert!(!log_text.contains(&admin.access_token), "an access token was logged");
}
