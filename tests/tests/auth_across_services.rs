//! A downstream service verifies identity's tokens on its own: it fetches identity's
//! public keys over gRPC, follows a key rotation, enforces scopes, and obtains its own
//! service token for outgoing calls.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use std::sync::Arc;
use std::time::Duration;

use retail_kit::auth::{AuthLayer, ClientInterceptor, GrpcKeySource, Principal, ServiceTokenSource, Verifier};
use retail_kit::config::ServerSettings;
use retail_kit::server::{self, ServiceRoutes};
use retail_proto::identity::identity_service_client::IdentityServiceClient;
use retail_proto::identity::{self as pb};
use retail_suite::echo::pb::echo_service_client::EchoServiceClient;
use retail_suite::echo::pb::echo_service_server::{EchoService, EchoServiceServer, SERVICE_NAME};
use retail_suite::echo::pb::{EchoRequest, EchoResponse};
use secrecy::SecretString;
use tonic::transport::Channel;
use tonic::{Code, Request, Response, Status};

const ADMIN_PASSWORD: &str = "e2e-Boss-Passw0rd";

/// A stand-in downstream service whose one RPC needs the `orders.write` scope.
#[derive(Debug)]
struct Downstream;

#[tonic::async_trait]
impl EchoService for Downstream {
    async fn echo(&self, request: Request<EchoRequest>) -> Result<Response<EchoResponse>, Status> {
        let principal = Principal::of(&request)?;
        principal.require_scope("orders.write")?;
        Ok(Response::new(EchoResponse {
            payload: principal.subject.clone().into_bytes(),
        }))
    }
}

async fn channel(addr: std::net::SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_downstream_service_verifies_identity_tokens_and_follows_rotation() {
    let database = retail_testkit::TestDatabase::new().await.unwrap();
    let mut settings = retail_identity::Settings::default();
    settings.database.url = database.secret_url();
    settings.passwords.memory_kib = 256;
    settings.passwords.iterations = 1;
    settings.bootstrap.admin_password = SecretString::from(ADMIN_PASSWORD);
    settings.bootstrap.service_accounts = vec![retail_identity::settings::BootstrapServiceAccount {
        client_id: "orders".into(),
        client_secret: SecretString::from("orders-secret-for-e2e-0123456789"),
        scopes: vec!["orders.write".into()],
    }];
    let identity = retail_identity::Application::build(settings).await.unwrap();
    let identity_addr = identity.local_addr();
    tokio::spawn(identity.run(std::future::pending()));
    let identity_channel = channel(identity_addr).await;

    let verifier = Arc::new(Verifier::new(
        "retail-identity",
        Arc::new(GrpcKeySource::new(identity_channel.clone())),
        Duration::from_millis(200),
    ));
    let server_settings = ServerSettings::default();
    let bound = server::bind(&server_settings).await.unwrap();
    let downstream_addr = bound.local_addr();
    tokio::spawn(async move {
        server::serve(
            bound,
            &server_settings,
            ServiceRoutes {
                routes: tonic::service::Routes::new(EchoServiceServer::new(Downstream)),
                names: vec![SERVICE_NAME],
                auth: Some(AuthLayer::new(verifier, &[])),
            },
            std::future::pending(),
        )
        .await
    });
    let downstream = channel(downstream_addr).await;

    // The service's own token, attached by the client interceptor.
    let tokens = ServiceTokenSource::start(
        identity_channel.clone(),
        "orders".into(),
        SecretString::from("orders-secret-for-e2e-0123456789"),
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    let mut as_service = EchoServiceClient::with_interceptor(downstream.clone(), ClientInterceptor::new(Some(tokens)));
    as_service.echo(EchoRequest::default()).await.unwrap();

    // No token: UNAUTHENTICATED. A staff token without the scope: PERMISSION_DENIED.
    let mut anonymous = EchoServiceClient::new(downstream.clone());
    assert_eq!(
        anonymous.echo(EchoRequest::default()).await.unwrap_err().code(),
        Code::Unauthenticated
    );

    let mut identity_client = IdentityServiceClient::new(identity_channel);
    let admin = identity_client
        .login(pb::LoginRequest {
            username: "admin".into(),
            password: ADMIN_PASSWORD.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .tokens
        .unwrap()
        .access_token;
    let with = |token: &str| {
        let mut request = Request::new(EchoRequest::default());
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        request
    };
    // The admin holds every scope, orders.write included.
    anonymous.echo(with(&admin)).await.unwrap();

    let analyst_name = identity_client
        .create_user({
            let mut request = Request::new(pb::CreateUserRequest {
                user: Some(pb::User {
                    username: "nina".into(),
                    kind: pb::PrincipalKind::Staff as i32,
                    roles: vec![pb::Role::Analyst as i32],
                    ..Default::default()
                }),
                password: "analyst-Passw0rd!".into(),
                request_id: String::new(),
            });
            request
                .metadata_mut()
                .insert("authorization", format!("Bearer {admin}").parse().unwrap());
            request
        })
        .await
        .unwrap()
        .into_inner()
        .name;
    assert!(analyst_name.starts_with("users/"));
    let analyst = identity_client
        .login(pb::LoginRequest {
            username: "nina".into(),
            password: "analyst-Passw0rd!".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .tokens
        .unwrap()
        .access_token;
    assert_eq!(
        anonymous.echo(with(&analyst)).await.unwrap_err().code(),
        Code::PermissionDenied
    );

    // After a rotation, tokens signed with the new key verify downstream too.
    let mut rotate = Request::new(pb::RotateSigningKeyRequest {});
    rotate
        .metadata_mut()
        .insert("authorization", format!("Bearer {admin}").parse().unwrap());
    identity_client.rotate_signing_key(rotate).await.unwrap();
    let fresh = identity_client
        .login(pb::LoginRequest {
            username: "admin".into(),
            password: ADMIN_PASSWORD.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .tokens
        .unwrap()
        .access_token;
    anonymous.echo(with(&fresh)).await.unwrap();
    anonymous.echo(with(&admin)).await.unwrap();
}
