//! Starts channel-partner on port 0 against a fresh database, with tokens signed by a
//! test key that stands in for identity.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;

use retail_channel_partner::{App, Settings};
use retail_kit::auth::PrincipalKind;
use retail_proto::partner::partner_service_client::PartnerServiceClient;
use retail_proto::partner::{self as pb};
use retail_testkit::TestDatabase;
use retail_testkit::tokens::{claims, sign};
use tonic::transport::Channel;

pub use retail_testkit::tokens::{staff_token, violated_fields, with_token};

pub const SCOPES: &[&str] = &["partners.read", "partners.write"];

pub fn admin() -> String {
    staff_token(SCOPES)
}

/// A token of a user of `partner`.
pub fn partner_user(partner: &str) -> String {
    sign(&claims(
        &format!("user-of-{partner}"),
        PrincipalKind::PartnerUser,
        SCOPES,
        Some(partner),
    ))
}

pub fn authed<T>(message: T) -> tonic::Request<T> {
    with_token(&admin(), message)
}

pub struct TestApp {
    pub addr: SocketAddr,
    pub app: Arc<App>,
    pub client: PartnerServiceClient<Channel>,
    _database: TestDatabase,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(configure: impl FnOnce(&mut Settings)) -> TestApp {
    let database = TestDatabase::new().await.unwrap();
    let mut settings = Settings::default();
    settings.database.url = database.secret_url();
    settings.database.max_connections = 8;
    settings.events.poll_ms = 50;
    configure(&mut settings);
    let app = retail_channel_partner::Application::build_with_keys(settings, retail_testkit::tokens::test_keys())
        .await
        .unwrap();
    let addr = app.local_addr();
    let state = app.app();
    tokio::spawn(app.run(std::future::pending()));
    let channel = Channel::from_shared(format!("http://{addr}")).unwrap().connect_lazy();
    TestApp {
        addr,
        app: state,
        client: PartnerServiceClient::new(channel),
        _database: database,
    }
}

pub fn dealer(display_name: &str) -> pb::Partner {
    pb::Partner {
        display_name: display_name.into(),
        r#type: pb::PartnerType::Dealer as i32,
        region: "north".into(),
        ..Default::default()
    }
}

impl TestApp {
    pub fn client(&self) -> PartnerServiceClient<Channel> {
        self.client.clone()
    }

    /// Registers a dealer under `id` as the brand.
    pub async fn create(&self, id: &str) -> Result<pb::Partner, tonic::Status> {
        self.client()
            .create_partner(authed(pb::CreatePartnerRequest {
                partner: Some(dealer(&format!("Dealer {id}"))),
                partner_id: id.into(),
                request_id: String::new(),
            }))
            .await
            .map(|r| r.into_inner())
    }
}
