//! Channel-partner's own integration tests: the gRPC server on port 0 against a
//! fresh database (PostgreSQL when `RETAIL_TEST_DATABASE_URL` is set).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

mod helpers;

use helpers::*;
use retail_proto::partner::{self as pb};
use tonic::Code;

#[tokio::test]
async fn a_registered_partner_is_applied_at_the_lowest_level_and_listed() {
    let app = spawn_app().await;
    let created = app.create("acme").await.unwrap();
    assert_eq!(created.name, "partners/acme");
    assert_eq!(created.state, pb::PartnerState::Applied as i32);
    assert_eq!(created.level, "registered");
    assert_eq!(created.r#type, pb::PartnerType::Dealer as i32);
    let got = app
        .client()
        .get_partner(authed(pb::GetPartnerRequest {
            name: "partners/acme".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got, created);
    let again = app.create("acme").await.unwrap_err();
    assert_eq!(again.code(), Code::AlreadyExists);
    app.create("bolt").await.unwrap();
    let listed = app
        .client()
        .list_partners(authed(pb::ListPartnersRequest {
            page_size: 1,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.partners.len(), 1);
    assert_eq!(listed.partners[0].name, "partners/acme");
    let rest = app
        .client()
        .list_partners(authed(pb::ListPartnersRequest {
            page_size: 1,
            page_token: listed.next_page_token,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rest.partners[0].name, "partners/bolt");
    assert!(rest.next_page_token.is_empty());
}

#[tokio::test]
async fn a_bad_registration_names_every_field_and_writes_nothing() {
    let app = spawn_app().await;
    let err = app
        .client()
        .create_partner(authed(pb::CreatePartnerRequest {
            partner: Some(pb::Partner::default()),
            partner_id: "not an id".into(),
            request_id: String::new(),
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let mut fields = violated_fields(&err);
    fields.sort();
    assert_eq!(
        fields,
        ["partner.display_name", "partner.region", "partner.type", "partner_id"]
    );
    let listed = app
        .client()
        .list_partners(authed(pb::ListPartnersRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert!(listed.partners.is_empty());
}
