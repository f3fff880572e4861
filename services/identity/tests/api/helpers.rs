//! Starts identity on port 0 against a fresh database and hands out typed clients.
#![allow(dead_code)] // shared by several test binaries, each using a part

use std::net::SocketAddr;
use std::time::Duration;

use retail_identity::Settings;
use retail_identity::settings::BootstrapServiceAccount;
use retail_proto::identity::identity_service_client::IdentityServiceClient;
use retail_proto::identity::{self as pb};
use retail_testkit::TestDatabase;
use sea_orm::DatabaseConnection;
use secrecy::SecretString;
use tokio::sync::oneshot;
use tonic::transport::Channel;

pub const ADMIN_PASSWORD: &str = "first-Boss-Passw0rd";
pub const SERVICE_CLIENT_ID: &str = "membership";
pub const SERVICE_SECRET: &str = "membership-test-secret-0123456789";

#[derive(Debug)]
pub struct TestApp {
    pub addr: SocketAddr,
    pub db: DatabaseConnection,
    pub channel: Channel,
    shutdown: Option<oneshot::Sender<()>>,
    pub server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    _database: TestDatabase,
}

pub fn test_settings(database: &TestDatabase) -> Settings {
    let mut settings = Settings::default();
    settings.server.port = 0;
    settings.database.url = database.secret_url();
    settings.database.max_connections = 8;
    // Cheap hashing keeps tests fast; the algorithm is the production one.
    settings.passwords.memory_kib = 256;
    settings.passwords.iterations = 1;
    settings.bootstrap.admin_password = SecretString::from(ADMIN_PASSWORD);
    settings.bootstrap.service_accounts = vec![BootstrapServiceAccount {
        client_id: SERVICE_CLIENT_ID.into(),
        client_secret: SecretString::from(SERVICE_SECRET),
        scopes: vec!["catalog.read".into(), "orders.read".into()],
    }];
    settings
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(configure: impl FnOnce(&mut Settings)) -> TestApp {
    let database = TestDatabase::new().await.expect("test database");
    let mut settings = test_settings(&database);
    configure(&mut settings);
    let app = retail_identity::Application::build(settings)
        .await
        .expect("identity builds");
    let addr = app.local_addr();
    let db = app.db();
    let (tx, rx) = oneshot::channel::<()>();
    let server = tokio::spawn(app.run(async move {
        let _ = rx.await;
    }));
    let channel = Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .expect("connect");
    TestApp {
        addr,
        db,
        channel,
        shutdown: Some(tx),
        server: Some(server),
        _database: database,
    }
}

impl TestApp {
    pub fn client(&self) -> IdentityServiceClient<Channel> {
        IdentityServiceClient::new(self.channel.clone())
    }

    pub async fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.expect("join").expect("server exits cleanly");
        }
    }

    pub async fn login(&self, username: &str, password: &str) -> Result<pb::TokenPair, tonic::Status> {
        let response = self
            .client()
            .login(pb::LoginRequest {
                username: username.into(),
                password: password.into(),
            })
            .await?;
        Ok(response.into_inner().tokens.expect("tokens"))
    }

    pub async fn admin_token(&self) -> String {
        self.login("admin", ADMIN_PASSWORD)
            .await
            .expect("admin login")
            .access_token
    }

    /// Creates a staff user with `roles` and returns its resource name.
    pub async fn create_staff(&self, token: &str, username: &str, password: &str, roles: &[pb::Role]) -> pb::User {
        self.client()
            .create_user(authed(
                token,
                pb::CreateUserRequest {
                    user: Some(pb::User {
                        username: username.into(),
                        kind: pb::PrincipalKind::Staff as i32,
                        roles: roles.iter().map(|r| *r as i32).collect(),
                        ..Default::default()
                    }),
                    password: password.into(),
                    request_id: String::new(),
                },
            ))
            .await
            .expect("create staff")
            .into_inner()
    }
}

/// A request with a bearer token.
pub fn authed<T>(token: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().expect("header"));
    request
}

/// The field names of a status's BadRequest details.
pub fn violated_fields(status: &tonic::Status) -> Vec<String> {
    use tonic_types::StatusExt;
    status
        .get_error_details()
        .bad_request()
        .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
        .unwrap_or_default()
}
