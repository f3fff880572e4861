//! Starts membership on port 0 against a fresh database (and Redis when
//! `RETAIL_TEST_REDIS_URL` is set), with tokens signed by a test key that stands in
//! for identity.
#![allow(dead_code)] // shared by several test binaries, each using a part

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use retail_membership::Settings;
use retail_proto::membership::membership_service_client::MembershipServiceClient;
use retail_proto::membership::{self as pb};
use retail_testkit::TestDatabase;
use sea_orm::DatabaseConnection;
use tonic::transport::Channel;

pub use retail_testkit::tokens::{violated_fields, with_token};

/// A token as identity would issue it, with `scopes`.
pub fn token(scopes: &[&str]) -> String {
    retail_testkit::tokens::staff_token(scopes)
}

/// A CRM administrator's token: members, segments and campaigns, and the event log.
pub fn staff_token() -> String {
    token(&[
        "membership.members.read",
        "membership.members.write",
        "membership.engagement.read",
        "membership.engagement.write",
        "events.read",
    ])
}

#[derive(Debug)]
pub struct TestApp {
    pub addr: SocketAddr,
    pub db: DatabaseConnection,
    pub channel: Channel,
    pub cache: Arc<retail_kit::cache::VersionedCache>,
    pub namespace: String,
    pub state: Option<Arc<retail_membership::App>>,
    _database: TestDatabase,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(configure: impl FnOnce(&mut Settings)) -> TestApp {
    let database = TestDatabase::new().await.unwrap();
    let mut settings = Settings::default();
    settings.database.url = database.secret_url();
    settings.database.max_connections = 16;
    settings.cache.redis_url = retail_testkit::redis_url();
    settings.cache.timeout_ms = 200;
    settings.cache.namespace = format!("membership-test-{}", uuid::Uuid::new_v4().simple());
    settings.events.poll_ms = 50;
    configure(&mut settings);
    let namespace = settings.cache.namespace.clone();
    let keys = retail_testkit::tokens::test_keys();
    let app = retail_membership::Application::build_with_keys(settings, keys)
        .await
        .unwrap();
    let addr = app.local_addr();
    let db = app.db();
    let cache = app.cache();
    let state = Some(app.app());
    tokio::spawn(app.run(std::future::pending()));
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .unwrap();
    TestApp {
        addr,
        db,
        channel,
        cache,
        namespace,
        state,
        _database: database,
    }
}

pub fn authed<T>(message: T) -> tonic::Request<T> {
    with_token(&staff_token(), message)
}

pub fn phone(value: &str) -> pb::Identifier {
    pb::Identifier {
        kind: pb::IdentifierKind::Phone as i32,
        value: value.into(),
        channel: String::new(),
    }
}

pub fn email(value: &str) -> pb::Identifier {
    pb::Identifier {
        kind: pb::IdentifierKind::Email as i32,
        value: value.into(),
        channel: String::new(),
    }
}

impl TestApp {
    pub fn client(&self) -> MembershipServiceClient<Channel> {
        MembershipServiceClient::new(self.channel.clone())
    }

    pub async fn register(&self, name: &str, identifiers: Vec<pb::Identifier>) -> Result<pb::Member, tonic::Status> {
        self.client()
            .register_member(authed(pb::RegisterMemberRequest {
                member: Some(pb::Member {
                    display_name: name.into(),
                    region: "DE-BE".into(),
                    identifiers,
                    ..Default::default()
                }),
                request_id: String::new(),
            }))
            .await
            .map(|r| r.into_inner())
    }

    pub async fn identify(&self, id: pb::Identifier) -> Result<pb::Member, tonic::Status> {
        self.client()
            .identify_member(authed(pb::IdentifyMemberRequest { identifier: Some(id) }))
            .await
            .map(|r| r.into_inner())
    }
}

/// `GetMember` of `member` (`members/{id}`) with a read mask of `paths`.
pub async fn masked(app: &TestApp, member: &str, paths: &[&str]) -> Result<pb::Member, tonic::Status> {
    app.client()
        .get_member(authed(pb::GetMemberRequest {
            name: member.into(),
            read_mask: Some(prost_types::FieldMask {
                paths: paths.iter().map(|p| p.to_string()).collect(),
            }),
        }))
        .await
        .map(|r| r.into_inner())
}
