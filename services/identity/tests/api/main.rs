//! Identity driven over gRPC on port 0, against SQLite or, when
//! `RETAIL_TEST_DATABASE_URL` is set, a fresh PostgreSQL database per test.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

mod helpers;

use std::time::Duration;

use helpers::*;
use retail_proto::identity::{self as pb};
use tonic::Code;

mod auth {
    use super::*;
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    use retail_identity::store::signing_key;
    use retail_kit::auth::{AUDIENCE, Claims, PrincipalKind};
    use sea_orm::{EntityTrait, QueryOrder};

    #[tokio::test]
    async fn health_reports_serving() {
        let app = spawn_app().await;
        let mut health = tonic_health::pb::health_client::HealthClient::new(app.channel.clone());
        for service in ["", "retail.identity.v1.IdentityService"] {
            let status = health
                .check(tonic_health::pb::HealthCheckRequest {
                    service: service.into(),
                })
                .await
                .unwrap()
                .into_inner()
                .status;
            assert_eq!(
                status,
                tonic_health::pb::health_check_response::ServingStatus::Serving as i32
            );
        }
    }

    #[tokio::test]
    async fn the_bootstrapped_admin_logs_in_and_its_token_is_accepted() {
        let app = spawn_app().await;
        let tokens = app.login("admin", ADMIN_PASSWORD).await.unwrap();
        assert_eq!(tokens.token_type, "Bearer");
        assert!(!tokens.refresh_token.is_empty());
        assert!(tokens.scopes.contains(&"identity.users.write".to_string()));
        let me = app
            .client()
            .get_current_principal(authed(&tokens.access_token, pb::GetCurrentPrincipalRequest {}))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(me.kind, pb::PrincipalKind::Staff as i32);
        assert_eq!(me.roles, vec![pb::Role::Admin as i32]);
        let users = app
            .client()
            .list_users(authed(&tokens.access_token, pb::ListUsersRequest::default()))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(users.users.len(), 1);
        assert_eq!(users.users[0].username, "admin");
    }

    #[tokio::test]
    async fn a_call_without_a_token_is_unauthenticated() {
        let app = spawn_app().await;
        let err = app
            .client()
            .list_users(pb::ListUsersRequest::default())
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated);
    }

    async fn current_key(app: &TestApp) -> signing_key::Model {
        signing_key::Entity::find()
            .order_by_desc(signing_key::Column::CreatedAt)
            .one(&app.db)
            .await
            .unwrap()
            .unwrap()
    }

    fn claims(exp_offset: i64) -> Claims {
        let now = chrono::Utc::now().timestamp();
        Claims {
            iss: "retail-identity".into(),
            aud: AUDIENCE.into(),
            sub: "someone".into(),
            exp: now + exp_offset,
            iat: now - 1000,
            nbf: now - 1000,
            jti: "j".into(),
            kind: PrincipalKind::Staff,
            roles: vec!["admin".into()],
            scope: "identity.users.read".into(),
            partner_id: None,
            sid: None,
            stores: Vec::new(),
        }
    }

    fn sign(der: &[u8], kid: &str, claims: &Claims) -> String {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(kid.into());
        jsonwebtoken::encode(&header, claims, &EncodingKey::from_ed_der(der)).unwrap()
    }

    #[tokio::test]
    async fn tampered_expired_and_unknown_key_tokens_are_unauthenticated() {
        let app = spawn_app().await;
        let key = current_key(&app).await;
        let call = |token: String| {
            let mut client = app.client();
            async move {
                client
                    .list_users(authed(&token, pb::ListUsersRequest::default()))
                    .await
                    .unwrap_err()
            }
        };

        let good = sign(&key.private_key, &key.id, &claims(600));
        assert!(
            app.client()
                .list_users(authed(&good, pb::ListUsersRequest::default()))
                .await
                .is_ok()
        );

        let expired = call(sign(&key.private_key, &key.id, &claims(-600))).await;
        assert_eq!(expired.code(), Code::Unauthenticated);
        assert!(expired.message().contains("expired"), "{}", expired.message());

        // Same header and signature, payload widened to more scopes.
        let real = app.admin_token().await;
        let parts: Vec<&str> = real.split('.').collect();
        use base64::Engine;
        let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut payload: serde_json::Value = serde_json::from_slice(&engine.decode(parts[1]).unwrap()).unwrap();
        payload["sub"] = "someone-else".into();
        let tampered = format!("{}.{}.{}", parts[0], engine.encode(payload.to_string()), parts[2]);
        let err = call(tampered).await;
        assert_eq!(err.code(), Code::Unauthenticated);

        let foreign = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
        use ed25519_dalek::pkcs8::EncodePrivateKey;
        let foreign_der = foreign.to_pkcs8_der().unwrap();
        let err = call(sign(foreign_der.as_bytes(), "no-such-key", &claims(600))).await;
        assert_eq!(err.code(), Code::Unauthenticated);
        assert!(err.message().contains("unknown signing key"), "{}", err.message());
        let err = call(sign(foreign_der.as_bytes(), &key.id, &claims(600))).await;
        assert_eq!(err.code(), Code::Unauthenticated);

        for garbage in ["", "x", "a.b.c", "Bearer", &"A".repeat(10_000)] {
            let err = call(garbage.to_string()).await;
            assert_eq!(err.code(), Code::Unauthenticated, "{garbage:.20}");
        }
    }

    #[tokio::test]
    async fn a_token_without_the_scope_is_permission_denied() {
        let app = spawn_app().await;
        let admin = app.admin_token().await;
        app.create_staff(&admin, "ann", "analyst-Passw0rd!", &[pb::Role::Analyst])
            .await;
        let analyst = app.login("ann", "analyst-Passw0rd!").await.unwrap().access_token;
        let err = app
            .client()
            .list_users(authed(&analyst, pb::ListUsersRequest::default()))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied);
        assert!(err.message().contains("identity.users.read"));
        let err = app
            .client()
            .rotate_signing_key(authed(&analyst, pb::RotateSigningKeyRequest {}))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied);
    }

    #[tokio::test]
    async fn rotated_keys_keep_verifying_old_tokens_and_sign_new_ones() {
        let app = spawn_app().await;
        let before = app.admin_token().await;
        let rotated = app
            .client()
            .rotate_signing_key(authed(&before, pb::RotateSigningKeyRequest {}))
            .await
            .unwrap()
            .into_inner()
            .key
            .unwrap();
        let after = app.admin_token().await;
        let kid = |t: &str| jsonwebtoken::decode_header(t).unwrap().kid.unwrap();
        assert_ne!(kid(&before), kid(&after));
        assert_eq!(kid(&after), rotated.key_id);
        for token in [&before, &after] {
            app.client()
                .get_current_principal(authed(token, pb::GetCurrentPrincipalRequest {}))
                .await
                .unwrap();
        }
        let keys = app
            .client()
            .list_public_keys(pb::ListPublicKeysRequest {})
            .await
            .unwrap()
            .into_inner()
            .keys;
        assert_eq!(keys.len(), 2);
        assert!(
            keys.iter()
                .any(|k| k.key_id == kid(&before) && k.retire_time.is_some() && k.expire_time.is_some())
        );
        assert!(keys.iter().all(|k| k.public_key.len() == 32 && k.algorithm == "EdDSA"));
    }

    #[tokio::test]
    async fn the_client_interceptor_attaches_the_service_token() {
        let app = spawn_app().await;
        let tokens = retail_kit::auth::ServiceTokenSource::start(
            app.channel.clone(),
            SERVICE_CLIENT_ID.into(),
            secrecy::SecretString::from(SERVICE_SECRET),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        let mut client = pb::identity_service_client::IdentityServiceClient::with_interceptor(
            app.channel.clone(),
            retail_kit::auth::ClientInterceptor::new(Some(tokens)),
        );
        let me = client
            .get_current_principal(pb::GetCurrentPrincipalRequest {})
            .await
            .unwrap()
            .into_inner();
        assert_eq!(me.kind, pb::PrincipalKind::Service as i32);
        assert_eq!(me.scopes, vec!["catalog.read".to_string(), "orders.read".to_string()]);

        let err = app
            .client()
            .issue_service_token(pb::IssueServiceTokenRequest {
                client_id: SERVICE_CLIENT_ID.into(),
                client_secret: "wrong".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated);
    }

    #[tokio::test]
    async fn a_verifier_in_another_service_checks_identity_tokens_with_fetched_keys() {
        let app = spawn_app().await;
        let verifier = retail_kit::auth::Verifier::new(
            "retail-identity",
            std::sync::Arc::new(retail_kit::auth::GrpcKeySource::new(app.channel.clone())),
            Duration::from_millis(100),
        );
        let token = app.admin_token().await;
        let principal = verifier.verify(&token).await.unwrap();
        assert!(principal.has_scope("identity.users.write"));
        // After a rotation the new key id is unknown to the cache; it is fetched.
        app.client()
            .rotate_signing_key(authed(&token, pb::RotateSigningKeyRequest {}))
            .await
            .unwrap();
        let fresh = app.admin_token().await;
        assert!(verifier.verify(&fresh).await.is_ok());
        assert!(verifier.verify(&token).await.is_ok());
    }
}

mod sessions {
    use super::*;

    #[tokio::test]
    async fn refresh_rotates_and_a_reused_refresh_token_revokes_the_session() {
        let app = spawn_app().await;
        let first = app.login("admin", ADMIN_PASSWORD).await.unwrap();
        let second = app
            .client()
            .refresh_token(pb::RefreshTokenRequest {
                refresh_token: first.refresh_token.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .tokens
            .unwrap();
        assert_ne!(second.refresh_token, first.refresh_token);

        // The first token comes back: treated as stolen, the session ends for both.
        let err = app
            .client()
            .refresh_token(pb::RefreshTokenRequest {
                refresh_token: first.refresh_token.clone(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated);
        let err = app
            .client()
            .refresh_token(pb::RefreshTokenRequest {
                refresh_token: second.refresh_token.clone(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated);
    }

    #[tokio::test]
    async fn racing_refreshes_of_one_token_yield_at_most_one_new_token() {
        let app = spawn_app().await;
        let login = app.login("admin", ADMIN_PASSWORD).await.unwrap();
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let mut client = app.client();
                let token = login.refresh_token.clone();
                tokio::spawn(async move {
                    client
                        .refresh_token(pb::RefreshTokenRequest { refresh_token: token })
                        .await
                })
            })
            .collect();
        let mut successes = 0;
        for t in tasks {
            if t.await.unwrap().is_ok() {
                successes += 1;
            }
        }
        assert!(successes <= 1, "{successes} refreshes succeeded");
    }

    #[tokio::test]
    async fn logout_ends_the_session() {
        let app = spawn_app().await;
        let tokens = app.login("admin", ADMIN_PASSWORD).await.unwrap();
        app.client()
            .logout(pb::LogoutRequest {
                refresh_token: tokens.refresh_token.clone(),
            })
            .await
            .unwrap();
        let err = app
            .client()
            .refresh_token(pb::RefreshTokenRequest {
                refresh_token: tokens.refresh_token.clone(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated);
        // Logging out again is harmless.
        app.client()
            .logout(pb::LogoutRequest {
                refresh_token: tokens.refresh_token,
            })
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn changing_the_password_ends_other_sessions_and_the_old_password() {
        let app = spawn_app().await;
        let admin = app.admin_token().await;
        app.create_staff(&admin, "sam", "support-Passw0rd!", &[pb::Role::Support])
            .await;
        let phone = app.login("sam", "support-Passw0rd!").await.unwrap();
        let laptop = app.login("sam", "support-Passw0rd!").await.unwrap();

        let err = app
            .client()
            .change_password(authed(
                &laptop.access_token,
                pb::ChangePasswordRequest {
                    current_password: "not-the-Passw0rd!".into(),
                    new_password: "brand-new-Passw0rd!".into(),
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert_eq!(violated_fields(&err), ["current_password"]);

        app.client()
            .change_password(authed(
                &laptop.access_token,
                pb::ChangePasswordRequest {
                    current_password: "support-Passw0rd!".into(),
                    new_password: "brand-new-Passw0rd!".into(),
                },
            ))
            .await
            .unwrap();
        assert_eq!(
            app.login("sam", "support-Passw0rd!").await.unwrap_err().code(),
            Code::Unauthenticated
        );
        app.login("sam", "brand-new-Passw0rd!").await.unwrap();
        let phone_refresh = app
            .client()
            .refresh_token(pb::RefreshTokenRequest {
                refresh_token: phone.refresh_token,
            })
            .await;
        assert_eq!(phone_refresh.unwrap_err().code(), Code::Unauthenticated);
        app.client()
            .refresh_token(pb::RefreshTokenRequest {
                refresh_token: laptop.refresh_token,
            })
            .await
            .unwrap();
    }
}

mod users {
    use super::*;
    use prost_types::FieldMask;

    #[tokio::test]
    async fn a_store_managers_stores_are_set_by_an_admin_and_carried_in_his_tokens() {
        let app = spawn_app().await;
        let admin = app.admin_token().await;
        let created = app
            .client()
            .create_user(authed(
                &admin,
                pb::CreateUserRequest {
                    user: Some(pb::User {
                        username: "max".into(),
                        kind: pb::PrincipalKind::Staff as i32,
                        roles: vec![pb::Role::StoreManager as i32],
                        stores: vec!["MUC".into(), "BER".into(), "MUC".into()],
                        ..Default::default()
                    }),
                    password: "manager-Passw0rd!".into(),
                    request_id: String::new(),
                },
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(created.stores, ["BER", "MUC"], "deduplicated and sorted");
        let session = app.login("max", "manager-Passw0rd!").await.unwrap();
        let me = app
            .client()
            .get_current_principal(authed(&session.access_token, pb::GetCurrentPrincipalRequest {}))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(me.stores, ["BER", "MUC"]);

        let updated = app
            .client()
            .update_user(authed(
                &admin,
                pb::UpdateUserRequest {
                    user: Some(pb::User {
                        name: created.name.clone(),
                        stores: vec!["HAM".into()],
                        display_name: "ignored".into(),
                        ..Default::default()
                    }),
                    update_mask: Some(FieldMask {
                        paths: vec!["stores".into()],
                    }),
                },
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(updated.stores, ["HAM"]);
        assert_eq!(updated.display_name, "max", "not in the mask");
        // The next refresh carries the new stores.
        let refreshed = app
            .client()
            .refresh_token(pb::RefreshTokenRequest {
                refresh_token: session.refresh_token,
            })
            .await
            .unwrap()
            .into_inner()
            .tokens
            .unwrap();
        let me = app
            .client()
            .get_current_principal(authed(&refreshed.access_token, pb::GetCurrentPrincipalRequest {}))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(me.stores, ["HAM"]);

        // Bad codes, and stores of a partner user, are refused.
        let bad = app
            .client()
            .update_user(authed(
                &admin,
                pb::UpdateUserRequest {
                    user: Some(pb::User {
                        name: created.name.clone(),
                        stores: vec!["B ER".into()],
                        ..Default::default()
                    }),
                    update_mask: Some(FieldMask {
                        paths: vec!["stores".into()],
                    }),
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(bad.code(), Code::InvalidArgument);
        let partner = app
            .client()
            .create_user(authed(
                &admin,
                pb::CreateUserRequest {
                    user: Some(pb::User {
                        username: "pat".into(),
                        kind: pb::PrincipalKind::PartnerUser as i32,
                        partner_id: "p-1".into(),
                        stores: vec!["BER".into()],
                        ..Default::default()
                    }),
                    password: "partner-Passw0rd!".into(),
                    request_id: String::new(),
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(partner.code(), Code::InvalidArgument);
        // Only holders of identity.users.write set stores.
        let denied = app
            .client()
            .update_user(authed(
                &refreshed.access_token,
                pb::UpdateUserRequest {
                    user: Some(pb::User {
                        name: created.name.clone(),
                        stores: vec!["BER".into(), "HAM".into()],
                        ..Default::default()
                    }),
                    update_mask: Some(FieldMask {
                        paths: vec!["stores".into()],
                    }),
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(denied.code(), Code::PermissionDenied);
    }

    #[tokio::test]
    async fn create_user_is_idempotent_by_request_id_even_when_retries_race() {
        let app = spawn_app().await;
        let admin = app.admin_token().await;
        let request = pb::CreateUserRequest {
            user: Some(pb::User {
                username: "pat".into(),
                email: "pat@example.com".into(),
                kind: pb::PrincipalKind::PartnerUser as i32,
                partner_id: "p-1".into(),
                ..Default::default()
            }),
            password: "partner-Passw0rd!".into(),
            request_id: "create-pat-1".into(),
        };
        let tasks: Vec<_> = (0..10)
            .map(|_| {
                let mut client = app.client();
                let request = authed(&admin, request.clone());
                tokio::spawn(async move { client.create_user(request).await })
            })
            .collect();
        let mut names = std::collections::HashSet::new();
        for t in tasks {
            names.insert(t.await.unwrap().unwrap().into_inner().name);
        }
        assert_eq!(names.len(), 1, "every retry sees the same user");
        let listed = app
            .client()
            .list_users(authed(
                &admin,
                pb::ListUsersRequest {
                    partner_id: "p-1".into(),
                    ..Default::default()
                },
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(listed.users.len(), 1);

        let mut different = request.clone();
        different.user.as_mut().unwrap().username = "pat2".into();
        let err = app.client().create_user(authed(&admin, different)).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert_eq!(violated_fields(&err), ["request_id"]);
    }

    #[tokio::test]
    async fn a_duplicate_username_is_already_exists() {
        let app = spawn_app().await;
        let admin = app.admin_token().await;
        app.create_staff(&admin, "dora", "explorer-Passw0rd!!", &[pb::Role::Support])
            .await;
        let err = app
            .client()
            .create_user(authed(
                &admin,
                pb::CreateUserRequest {
                    user: Some(pb::User {
                        username: "DORA".into(),
                        kind: pb::PrincipalKind::Staff as i32,
                        roles: vec![pb::Role::Analyst as i32],
                        ..Default::default()
                    }),
                    password: "another-Passw0rd!".into(),
                    request_id: String::new(),
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::AlreadyExists);
    }

    #[tokio::test]
    async fn update_with_a_field_mask_changes_only_those_fields_and_disabling_locks_out() {
        let app = spawn_app().await;
        let admin = app.admin_token().await;
        let user = app
            .create_staff(&admin, "mia", "manager-Passw0rd!", &[pb::Role::Support])
            .await;
        let session = app.login("mia", "manager-Passw0rd!").await.unwrap();
        let updated = app
            .client()
            .update_user(authed(
                &admin,
                pb::UpdateUserRequest {
                    user: Some(pb::User {
                        name: user.name.clone(),
                        display_name: "Mia M.".into(),
                        email: "ignored@example.com".into(),
                        roles: vec![pb::Role::StoreManager as i32],
                        ..Default::default()
                    }),
                    update_mask: Some(FieldMask {
                        paths: vec!["display_name".into(), "roles".into()],
                    }),
                },
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(updated.display_name, "Mia M.");
        assert_eq!(updated.email, "", "email was not in the mask");
        assert_eq!(updated.roles, vec![pb::Role::StoreManager as i32]);

        app.client()
            .update_user(authed(
                &admin,
                pb::UpdateUserRequest {
                    user: Some(pb::User {
                        name: user.name.clone(),
                        disabled: true,
                        ..Default::default()
                    }),
                    update_mask: Some(FieldMask {
                        paths: vec!["disabled".into()],
                    }),
                },
            ))
            .await
            .unwrap();
        assert_eq!(
            app.login("mia", "manager-Passw0rd!").await.unwrap_err().code(),
            Code::Unauthenticated
        );
        let refresh = app
            .client()
            .refresh_token(pb::RefreshTokenRequest {
                refresh_token: session.refresh_token,
            })
            .await;
        assert_eq!(refresh.unwrap_err().code(), Code::Unauthenticated);

        let audit = app
            .client()
            .list_audit_events(authed(
                &admin,
                pb::ListAuditEventsRequest {
                    action: "user.roles_changed".into(),
                    ..Default::default()
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .audit_events;
        assert_eq!(audit.len(), 1);
        assert!(audit[0].detail_json.contains("store_manager"));
    }

    #[tokio::test]
    async fn an_admin_cannot_lock_themself_out() {
        let app = spawn_app().await;
        let admin = app.admin_token().await;
        let me = app
            .client()
            .list_users(authed(&admin, pb::ListUsersRequest::default()))
            .await
            .unwrap()
            .into_inner()
            .users
            .remove(0);
        let err = app
            .client()
            .update_user(authed(
                &admin,
                pb::UpdateUserRequest {
                    user: Some(pb::User {
                        name: me.name,
                        roles: vec![pb::Role::Analyst as i32],
                        ..Default::default()
                    }),
                    update_mask: Some(FieldMask {
                        paths: vec!["roles".into()],
                    }),
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition);
    }

    #[tokio::test]
    async fn users_page_through_in_creation_order() {
        let app = spawn_app().await;
        let admin = app.admin_token().await;
        for i in 0..5 {
            app.create_staff(&admin, &format!("user{i}"), "paging-Passw0rd!", &[pb::Role::Analyst])
                .await;
        }
        let mut seen = Vec::new();
        let mut token = String::new();
        loop {
            let page = app
                .client()
                .list_users(authed(
                    &admin,
                    pb::ListUsersRequest {
                        page_size: 2,
                        page_token: token.clone(),
                        ..Default::default()
                    },
                ))
                .await
                .unwrap()
                .into_inner();
            assert!(page.users.len() <= 2);
            seen.extend(page.users.into_iter().map(|u| u.username));
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        assert_eq!(seen, ["admin", "user0", "user1", "user2", "user3", "user4"]);
    }
}

mod api_keys {
    use super::*;

    async fn create_key(app: &TestApp, admin: &str, partner: &str, request_id: &str) -> pb::CreateApiKeyResponse {
        app.client()
            .create_api_key(authed(
                admin,
                pb::CreateApiKeyRequest {
                    api_key: Some(pb::ApiKey {
                        display_name: "POS integration".into(),
                        partner_id: partner.into(),
                        scopes: vec!["orders.write".into(), "orders.read".into()],
                        ..Default::default()
                    }),
                    request_id: request_id.into(),
                },
            ))
            .await
            .unwrap()
            .into_inner()
    }

    #[tokio::test]
    async fn an_api_key_is_shown_once_exchanged_for_a_partner_token_and_revoked() {
        let app = spawn_app().await;
        let admin = app.admin_token().await;
        let created = create_key(&app, &admin, "partner-7", "key-req-1").await;
        let key = created.api_key.unwrap();
        assert!(created.secret.starts_with(&format!("{}_", key.prefix)));

        // A replay of the create returns the key but never the secret again.
        let replay = create_key(&app, &admin, "partner-7", "key-req-1").await;
        assert_eq!(replay.api_key.unwrap().name, key.name);
        assert!(replay.secret.is_empty());

        let token = app
            .client()
            .exchange_api_key(pb::ExchangeApiKeyRequest {
                api_key: created.secret.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .tokens
            .unwrap();
        assert!(token.refresh_token.is_empty());
        let me = app
            .client()
            .get_current_principal(authed(&token.access_token, pb::GetCurrentPrincipalRequest {}))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(me.kind, pb::PrincipalKind::PartnerSystem as i32);
        assert_eq!(me.partner_id, "partner-7");
        assert_eq!(me.scopes, vec!["orders.read".to_string(), "orders.write".to_string()]);

        let listed = app
            .client()
            .get_api_key(authed(&admin, pb::GetApiKeyRequest { name: key.name.clone() }))
            .await
            .unwrap()
            .into_inner();
        assert!(listed.last_use_time.is_some());

        let revoked = app
            .client()
            .revoke_api_key(authed(&admin, pb::RevokeApiKeyRequest { name: key.name.clone() }))
            .await
            .unwrap()
            .into_inner();
        assert!(revoked.revoke_time.is_some());
        let err = app
            .client()
            .exchange_api_key(pb::ExchangeApiKeyRequest {
                api_key: created.secret,
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated);
    }

    #[tokio::test]
    async fn api_keys_cannot_carry_staff_scopes() {
        let app = spawn_app().await;
        let admin = app.admin_token().await;
        let err = app
            .client()
            .create_api_key(authed(
                &admin,
                pb::CreateApiKeyRequest {
                    api_key: Some(pb::ApiKey {
                        display_name: "sneaky".into(),
                        partner_id: "p1".into(),
                        scopes: vec!["orders.read".into(), "identity.users.write".into()],
                        ..Default::default()
                    }),
                    request_id: String::new(),
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert_eq!(violated_fields(&err), ["api_key.scopes[1]"]);
    }

    #[tokio::test]
    async fn a_partner_principal_sees_only_its_own_partners_keys() {
        // Partner principals never hold identity scopes by default; a service account
        // with them stands in for a partner-facing admin tool here.
        let app = spawn_app().await;
        let admin = app.admin_token().await;
        let mine = create_key(&app, &admin, "p-a", "").await.api_key.unwrap();
        let theirs = create_key(&app, &admin, "p-b", "").await.api_key.unwrap();
        let partner = app
            .client()
            .exchange_api_key(pb::ExchangeApiKeyRequest {
                api_key: create_key(&app, &admin, "p-a", "").await.secret,
            })
            .await
            .unwrap()
            .into_inner()
            .tokens
            .unwrap()
            .access_token;
        // Without the read scope the answer is PERMISSION_DENIED whatever the key.
        for name in [&mine.name, &theirs.name] {
            let err = app
                .client()
                .get_api_key(authed(&partner, pb::GetApiKeyRequest { name: name.clone() }))
                .await
                .unwrap_err();
            assert_eq!(err.code(), Code::PermissionDenied);
        }
    }
}

mod brute_force {
    use super::*;

    #[tokio::test]
    async fn repeated_failures_are_slowed_then_locked_and_the_lock_expires() {
        let app = spawn_app_with(|s| {
            s.lockout.slow_after = 2;
            s.lockout.base_delay_ms = 300;
            s.lockout.max_delay_ms = 300;
            s.lockout.lock_after = 4;
            s.lockout.lock_secs = 2;
        })
        .await;
        for _ in 0..2 {
            assert_eq!(
                app.login("admin", "wrong-Passw0rd!!").await.unwrap_err().code(),
                Code::Unauthenticated
            );
        }
        // Slowed: an immediate retry is refused without checking the password.
        let err = app.login("admin", ADMIN_PASSWORD).await.unwrap_err();
        assert_eq!(err.code(), Code::ResourceExhausted);
        tokio::time::sleep(Duration::from_millis(350)).await;
        assert_eq!(
            app.login("admin", "wrong-Passw0rd!!").await.unwrap_err().code(),
            Code::Unauthenticated
        );
        tokio::time::sleep(Duration::from_millis(350)).await;
        assert_eq!(
            app.login("admin", "wrong-Passw0rd!!").await.unwrap_err().code(),
            Code::Unauthenticated
        );
        // Locked now: even the right password is refused.
        tokio::time::sleep(Duration::from_millis(350)).await;
        let err = app.login("admin", ADMIN_PASSWORD).await.unwrap_err();
        assert_eq!(err.code(), Code::ResourceExhausted);
        assert!(err.message().contains("locked"));
        tokio::time::sleep(Duration::from_millis(2_100)).await;
        app.login("admin", ADMIN_PASSWORD).await.unwrap();

        let admin = app.admin_token().await;
        let audit = app
            .client()
            .list_audit_events(authed(&admin, pb::ListAuditEventsRequest::default()))
            .await
            .unwrap()
            .into_inner()
            .audit_events;
        let actions: Vec<_> = audit.iter().map(|e| e.action.as_str()).collect();
        assert!(actions.contains(&"login.locked"), "{actions:?}");
        assert_eq!(actions.iter().filter(|a| **a == "login.failed").count(), 4);
        assert_eq!(actions[0], "login.succeeded", "newest first");
    }

    #[tokio::test]
    async fn unknown_usernames_are_throttled_like_known_ones() {
        let app = spawn_app_with(|s| {
            s.lockout.slow_after = 1;
            s.lockout.lock_after = 2;
        })
        .await;
        for name in ["admin", "nobody"] {
            let first = app.login(name, "wrong-Passw0rd!!").await.unwrap_err();
            assert_eq!(first.code(), Code::Unauthenticated);
            assert_eq!(first.message(), "invalid username or password");
            assert_eq!(
                app.login(name, "wrong-Passw0rd!!").await.unwrap_err().code(),
                Code::ResourceExhausted
            );
        }
    }

    #[tokio::test]
    async fn api_key_guessing_by_prefix_is_throttled() {
        let app = spawn_app_with(|s| {
            s.lockout.slow_after = 2;
            s.lockout.lock_after = 3;
        })
        .await;
        let guess = "rk_abcdefgh_not-the-secret";
        for _ in 0..2 {
            let err = app
                .client()
                .exchange_api_key(pb::ExchangeApiKeyRequest { api_key: guess.into() })
                .await
                .unwrap_err();
            assert_eq!(err.code(), Code::Unauthenticated);
        }
        let err = app
            .client()
            .exchange_api_key(pb::ExchangeApiKeyRequest { api_key: guess.into() })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::ResourceExhausted);
    }
}

mod bad_input {
    use super::*;

    /// Every malformed request gets a precise client error, never INTERNAL or
    /// UNKNOWN, and writes nothing.
    #[tokio::test]
    async fn a_batch_of_bad_requests_gets_precise_errors() {
        let app = spawn_app().await;
        let admin = app.admin_token().await;
        let mut c = app.client();
        let staff = |username: &str, email: &str| pb::User {
            username: username.into(),
            email: email.into(),
            kind: pb::PrincipalKind::Staff as i32,
            roles: vec![pb::Role::Support as i32],
            ..Default::default()
        };
        let create = |user: Option<pb::User>, password: &str| {
            authed(
                &admin,
                pb::CreateUserRequest {
                    user,
                    password: password.into(),
                    request_id: String::new(),
                },
            )
        };
        let cases: Vec<(&str, tonic::Status, Code, Vec<&str>)> = vec![
            (
                "empty login",
                c.login(pb::LoginRequest::default()).await.unwrap_err(),
                Code::InvalidArgument,
                vec!["username", "password"],
            ),
            (
                "oversized username",
                c.login(pb::LoginRequest {
                    username: "a".repeat(10_000),
                    password: "x".into(),
                })
                .await
                .unwrap_err(),
                Code::InvalidArgument,
                vec!["username"],
            ),
            (
                "missing user",
                c.create_user(create(None, "good-Passw0rd!")).await.unwrap_err(),
                Code::InvalidArgument,
                vec!["user"],
            ),
            (
                "malformed email and weak password",
                c.create_user(create(Some(staff("eve", "eve@@example")), "password"))
                    .await
                    .unwrap_err(),
                Code::InvalidArgument,
                vec!["user.email", "password"],
            ),
            (
                "bad username",
                c.create_user(create(Some(staff("e v e", "")), "good-Passw0rd!"))
                    .await
                    .unwrap_err(),
                Code::InvalidArgument,
                vec!["user.username"],
            ),
            (
                "oversized display name",
                c.create_user(create(
                    Some(pb::User {
                        display_name: "x".repeat(201),
                        ..staff("eve", "")
                    }),
                    "good-Passw0rd!",
                ))
                .await
                .unwrap_err(),
                Code::InvalidArgument,
                vec!["user.display_name"],
            ),
            (
                "unspecified kind and role",
                c.create_user(create(
                    Some(pb::User {
                        username: "eve".into(),
                        roles: vec![0, 99],
                        ..Default::default()
                    }),
                    "good-Passw0rd!",
                ))
                .await
                .unwrap_err(),
                Code::InvalidArgument,
                vec!["user.kind", "user.roles[0]", "user.roles[1]"],
            ),
            (
                "partner user without partner",
                c.create_user(create(
                    Some(pb::User {
                        username: "eve".into(),
                        kind: pb::PrincipalKind::PartnerUser as i32,
                        ..Default::default()
                    }),
                    "good-Passw0rd!",
                ))
                .await
                .unwrap_err(),
                Code::InvalidArgument,
                vec!["user.partner_id"],
            ),
            (
                "oversized request id",
                c.create_user(authed(
                    &admin,
                    pb::CreateUserRequest {
                        user: Some(staff("eve", "")),
                        password: "good-Passw0rd!".into(),
                        request_id: "r".repeat(500),
                    },
                ))
                .await
                .unwrap_err(),
                Code::InvalidArgument,
                vec!["request_id"],
            ),
            (
                "malformed resource name",
                c.get_user(authed(
                    &admin,
                    pb::GetUserRequest {
                        name: "people/1".into(),
                    },
                ))
                .await
                .unwrap_err(),
                Code::InvalidArgument,
                vec!["name"],
            ),
            (
                "unknown user",
                c.get_user(authed(
                    &admin,
                    pb::GetUserRequest {
                        name: format!("users/{}", uuid::Uuid::new_v4()),
                    },
                ))
                .await
                .unwrap_err(),
                Code::NotFound,
                vec![],
            ),
            (
                "unknown api key",
                c.revoke_api_key(authed(
                    &admin,
                    pb::RevokeApiKeyRequest {
                        name: format!("apiKeys/{}", uuid::Uuid::new_v4()),
                    },
                ))
                .await
                .unwrap_err(),
                Code::NotFound,
                vec![],
            ),
            (
                "negative page size",
                c.list_users(authed(
                    &admin,
                    pb::ListUsersRequest {
                        page_size: -5,
                        ..Default::default()
                    },
                ))
                .await
                .unwrap_err(),
                Code::InvalidArgument,
                vec!["page_size"],
            ),
            (
                "forged page token",
                c.list_users(authed(
                    &admin,
                    pb::ListUsersRequest {
                        page_token: "bm90IGEgdG9rZW4".into(),
                        ..Default::default()
                    },
                ))
                .await
                .unwrap_err(),
                Code::InvalidArgument,
                vec!["page_token"],
            ),
            (
                "empty update mask",
                c.update_user(authed(
                    &admin,
                    pb::UpdateUserRequest {
                        user: Some(pb::User::default()),
                        update_mask: None,
                    },
                ))
                .await
                .unwrap_err(),
                Code::InvalidArgument,
                vec!["update_mask"],
            ),
            (
                "garbage refresh token",
                c.refresh_token(pb::RefreshTokenRequest {
                    refresh_token: "garbage".into(),
                })
                .await
                .unwrap_err(),
                Code::Unauthenticated,
                vec![],
            ),
            (
                "empty refresh token",
                c.refresh_token(pb::RefreshTokenRequest::default()).await.unwrap_err(),
                Code::InvalidArgument,
                vec!["refresh_token"],
            ),
            (
                "garbage api key",
                c.exchange_api_key(pb::ExchangeApiKeyRequest {
                    api_key: "\u{0}\u{1}rk_".into(),
                })
                .await
                .unwrap_err(),
                Code::Unauthenticated,
                vec![],
            ),
            (
                "api key without scopes, partner or name",
                c.create_api_key(authed(
                    &admin,
                    pb::CreateApiKeyRequest {
                        api_key: Some(pb::ApiKey::default()),
                        request_id: String::new(),
                    },
                ))
                .await
                .unwrap_err(),
                Code::InvalidArgument,
                vec!["api_key.display_name", "api_key.partner_id", "api_key.scopes"],
            ),
            (
                "api key expiring in the past",
                c.create_api_key(authed(
                    &admin,
                    pb::CreateApiKeyRequest {
                        api_key: Some(pb::ApiKey {
                            display_name: "k".into(),
                            partner_id: "p".into(),
                            scopes: vec!["orders.read".into()],
                            expire_time: Some(prost_types::Timestamp { seconds: 1, nanos: 0 }),
                            ..Default::default()
                        }),
                        request_id: String::new(),
                    },
                ))
                .await
                .unwrap_err(),
                Code::InvalidArgument,
                vec!["api_key.expire_time"],
            ),
            (
                "bad audit action filter",
                c.list_audit_events(authed(
                    &admin,
                    pb::ListAuditEventsRequest {
                        action: "DROP TABLE".into(),
                        ..Default::default()
                    },
                ))
                .await
                .unwrap_err(),
                Code::InvalidArgument,
                vec!["action"],
            ),
        ];
        for (what, status, code, fields) in cases {
            assert_eq!(status.code(), code, "{what}: {}", status.message());
            assert_eq!(violated_fields(&status), fields, "{what}");
        }
        let users = c
            .list_users(authed(&admin, pb::ListUsersRequest::default()))
            .await
            .unwrap()
            .into_inner()
            .users;
        assert_eq!(users.len(), 1, "no bad request wrote a user");
    }

    /// Bytes of trailers a status takes, as HTTP/2 clients count them against their
    /// limit: names, values (the message percent-encoded, details in base64) and 32
    /// bytes per entry.
    fn trailer_bytes(status: &tonic::Status) -> usize {
        let message: usize = status
            .message()
            .bytes()
            .map(|b| if (0x20..0x7f).contains(&b) && b != b'%' { 1 } else { 3 })
            .sum();
        let details = status.details().len().div_ceil(3) * 4;
        "grpc-status".len() + 2 + "grpc-message".len() + message + "grpc-status-details-bin".len() + details + 3 * 32
    }

    /// Regression: each violation was written into the message and the details, so
    /// a request with thousands of bad entries got trailers far beyond the 8 KiB C++
    /// and Python clients accept, which then reported RESOURCE_EXHAUSTED instead.
    #[tokio::test]
    async fn a_huge_bad_request_gets_an_error_every_client_can_read() {
        let app = spawn_app().await;
        let admin = app.admin_token().await;
        let mut c = app.client();
        let status = c
            .create_service_account(authed(
                &admin,
                pb::CreateServiceAccountRequest {
                    service_account: Some(pb::ServiceAccount {
                        client_id: "ü".repeat(5_000),
                        scopes: (0..50_000)
                            .map(|i| format!("no.such.scope.{i}.{}", "x".repeat(40)))
                            .collect(),
                        ..Default::default()
                    }),
                    request_id: String::new(),
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{}", status.message());
        let size = trailer_bytes(&status);
        assert!(size < 8 * 1024, "{size} bytes of trailers");
        let fields = violated_fields(&status);
        assert_eq!(fields.len(), retail_kit::limits::MAX_VIOLATIONS + 1, "{fields:?}");
        assert_eq!(fields[0], "service_account.client_id");
        assert_eq!(fields[1], "service_account.scopes", "the list is flagged as too long");
        assert_eq!(fields.last().unwrap(), "", "the last entry counts the ones left out");

        let paths: Vec<String> = (0..10_000).map(|i| format!("no_such_field_{i}")).collect();
        let me = c
            .get_current_principal(authed(&admin, pb::GetCurrentPrincipalRequest {}))
            .await
            .unwrap()
            .into_inner();
        let status = c
            .update_user(authed(
                &admin,
                pb::UpdateUserRequest {
                    user: Some(pb::User {
                        name: format!("users/{}", me.subject),
                        ..Default::default()
                    }),
                    update_mask: Some(prost_types::FieldMask { paths }),
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{}", status.message());
        assert!(trailer_bytes(&status) < 8 * 1024);
        assert_eq!(violated_fields(&status)[0], "update_mask");
    }
}
