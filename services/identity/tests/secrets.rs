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

/// What a refused configuration prints: the error's Display and Debug with its chain.
fn refusal(env: &[(&str, &str)], file: Option<&str>) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("identity.toml");
    if let Some(content) = file {
        std::fs::write(&path, content).unwrap();
    }
    let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let result =
        retail_kit::config::load_from::<retail_identity::Settings, _>("identity", file.map(|_| path.as_path()), env);
    let err = anyhow::Error::new(result.expect_err("the configuration is refused"));
    format!("{err:#}\n{err:?}")
}

/// Regression: a service-account list given as one JSON value was refused with the
/// whole value, client secret included, in the message.
#[test]
fn a_refused_configuration_never_prints_a_secret_value() {
    let secret = "s3cr3t-value-0123456789-0123456789";
    let accounts = format!(r#"[{{"client_id":"orders","client_secret":"{secret}","scopes":["catalog.read"],"x":1}}]"#);
    let short = r#"[{"client_id":"orders","client_secret":"s3cr3t-short","scopes":[]}]"#;
    // What, the environment, the content of a configuration file.
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, Option<String>);
    let cases: Vec<Case> = vec![
        (
            "service accounts with an unknown key",
            vec![("RETAIL_IDENTITY__BOOTSTRAP__SERVICE_ACCOUNTS", accounts.as_str())],
            None,
        ),
        (
            "service accounts that are not JSON",
            vec![(
                "RETAIL_IDENTITY__BOOTSTRAP__SERVICE_ACCOUNTS",
                "[{\"client_secret\": s3cr3t",
            )],
            None,
        ),
        (
            "a service account secret too short",
            vec![("RETAIL_IDENTITY__BOOTSTRAP__SERVICE_ACCOUNTS", short)],
            None,
        ),
        (
            "a database URL of another database",
            vec![("RETAIL_IDENTITY__DATABASE__URL", "mysql://root:s3cr3t@db/identity")],
            None,
        ),
        (
            "a database URL given as a table",
            vec![(
                "RETAIL_IDENTITY__DATABASE__URL__HOST",
                "postgres://u:s3cr3t@db/identity",
            )],
            None,
        ),
        (
            "an admin password given as a table",
            vec![("RETAIL_IDENTITY__BOOTSTRAP__ADMIN_PASSWORD__X", "s3cr3t")],
            None,
        ),
        (
            "a file with an unquoted database URL",
            vec![],
            Some("[database]\nurl = postgres://u:s3cr3t@db/identity\n".into()),
        ),
        (
            "a file with an unquoted admin password",
            vec![],
            Some("[bootstrap]\nadmin_password = s3cr3t s3cr3t\n".into()),
        ),
        (
            "a file with a service account secret of the wrong type",
            vec![],
            Some(
                "[[bootstrap.service_accounts]]\nclient_id = \"x\"\nclient_secret = [\"s3cr3t\"]\nscopes = []\n".into(),
            ),
        ),
    ];
    for (what, env, file) in cases {
        let printed = refusal(&env, file.as_deref());
        assert!(!printed.contains("s3cr3t"), "{what}: {printed}");
        assert!(printed.contains("invalid configuration"), "{what}: {printed}");
    }
}

#[test]
fn service_accounts_are_accepted_as_one_json_value_as_kubernetes_passes_them() {
    let accounts = r#"[{"client_id":"orders","client_secret":"orders-secret-0123456789-0123456789","scopes":["catalog.read","membership.members.read"]}]"#;
    let env = vec![(
        "RETAIL_IDENTITY__BOOTSTRAP__SERVICE_ACCOUNTS".to_owned(),
        accounts.to_owned(),
    )];
    let settings: retail_identity::Settings = retail_kit::config::load_from("identity", None, env).unwrap();
    let account = &settings.bootstrap.service_accounts[0];
    assert_eq!(account.client_id, "orders");
    assert_eq!(account.scopes, ["catalog.read", "membership.members.read"]);
}
