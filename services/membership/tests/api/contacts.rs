//! Anonymous contacts read by staff: `GetContact` and `ListContacts` (paging,
//! filters by identifier and merged state), refused to partners and services.

use retail_kit::auth::PrincipalKind;
use retail_proto::membership::{self as pb};
use tonic::Code;

use crate::helpers::*;

fn anonymous(kind: pb::IdentifierKind, value: &str, channel: &str) -> pb::Identifier {
    pb::Identifier {
        kind: kind as i32,
        value: value.into(),
        channel: channel.into(),
    }
}

fn device(value: &str) -> pb::Identifier {
    anonymous(pb::IdentifierKind::Device, value, "")
}

/// A visit at the store door; the contact (or member) it recognised.
async fn seen(app: &TestApp, id: pb::Identifier, linked: Vec<pb::Identifier>) -> pb::IdentifyVisitorResponse {
    app.client()
        .identify_visitor(authed(pb::IdentifyVisitorRequest {
            identifier: Some(id),
            touchpoint: Some(pb::Touchpoint {
                scene: pb::Scene::Store as i32,
                place: "BER-1".into(),
                kind: pb::TouchKind::Visit as i32,
                product: String::new(),
                occur_time: None,
            }),
            linked_identifiers: linked,
            request_id: String::new(),
        }))
        .await
        .unwrap()
        .into_inner()
}

async fn list(
    app: &TestApp,
    token: &str,
    req: pb::ListContactsRequest,
) -> Result<pb::ListContactsResponse, tonic::Status> {
    app.client()
        .list_contacts(with_token(token, req))
        .await
        .map(|r| r.into_inner())
}

fn names(r: &pb::ListContactsResponse) -> Vec<&str> {
    r.contacts.iter().map(|c| c.name.as_str()).collect()
}

#[tokio::test]
async fn staff_get_and_list_contacts_by_identifier_and_merged_state() {
    let app = spawn_app().await;
    let staff = staff_token();
    let first = seen(&app, device("dev-1"), vec![]).await.contact.unwrap().name;
    let second = seen(
        &app,
        device("dev-2"),
        vec![anonymous(pb::IdentifierKind::Beacon, "bcn-2", "")],
    )
    .await
    .contact
    .unwrap()
    .name;
    let third = seen(&app, anonymous(pb::IdentifierKind::External, "oid-3", "wechat"), vec![])
        .await
        .contact
        .unwrap()
        .name;

    let got = app
        .client()
        .get_contact(authed(pb::GetContactRequest { name: second.clone() }))
        .await
        .unwrap()
        .into_inner();
    let mut ids: Vec<(i32, &str)> = got.identifiers.iter().map(|i| (i.kind, i.value.as_str())).collect();
    ids.sort();
    assert_eq!(
        ids,
        vec![
            (pb::IdentifierKind::Device as i32, "dev-2"),
            (pb::IdentifierKind::Beacon as i32, "BCN-2")
        ]
    );
    assert_eq!(got.touchpoints.len(), 1);
    assert!(got.last_seen_time.is_some());
    assert_eq!((got.merged_into.as_str(), got.merge_time), ("", None));

    // All three, one per page, oldest first.
    let mut token = String::new();
    let mut pages = Vec::new();
    loop {
        let page = list(
            &app,
            &staff,
            pb::ListContactsRequest {
                page_size: 1,
                page_token: token.clone(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        pages.extend(page.contacts.into_iter().map(|c| c.name));
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(pages, vec![first.clone(), second.clone(), third.clone()]);

    let by = |kind: pb::IdentifierKind, value: &str, channel: &str| pb::ListContactsRequest {
        identifier_kind: kind as i32,
        identifier_value: value.into(),
        identifier_channel: channel.into(),
        ..Default::default()
    };
    let beacons = list(&app, &staff, by(pb::IdentifierKind::Beacon, "", ""))
        .await
        .unwrap();
    assert_eq!(names(&beacons), vec![second.as_str()]);
    let devices = list(&app, &staff, by(pb::IdentifierKind::Device, "", ""))
        .await
        .unwrap();
    assert_eq!(names(&devices), vec![first.as_str(), second.as_str()]);
    let one = list(&app, &staff, by(pb::IdentifierKind::Device, " dev-1 ", ""))
        .await
        .unwrap();
    assert_eq!(names(&one), vec![first.as_str()]);
    let wechat = list(&app, &staff, by(pb::IdentifierKind::External, "oid-3", "wechat"))
        .await
        .unwrap();
    assert_eq!(names(&wechat), vec![third.as_str()]);
    let nobody = list(&app, &staff, by(pb::IdentifierKind::Device, "dev-9", ""))
        .await
        .unwrap();
    assert!(nobody.contacts.is_empty());

    // The first turns out to be a member: merged, without ids of its own.
    let member = app.register("M", vec![phone("+4915100000077")]).await.unwrap().name;
    let recognised = seen(&app, phone("+4915100000077"), vec![device("dev-1")]).await;
    assert_eq!(recognised.member.unwrap().name, member);
    let merged = list(
        &app,
        &staff,
        pb::ListContactsRequest {
            merged: Some(true),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(names(&merged), vec![first.as_str()]);
    assert_eq!(merged.contacts[0].merged_into, member);
    assert!(merged.contacts[0].merge_time.is_some());
    assert!(merged.contacts[0].identifiers.is_empty());
    let anonymous_only = list(
        &app,
        &staff,
        pb::ListContactsRequest {
            merged: Some(false),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(names(&anonymous_only), vec![second.as_str(), third.as_str()]);
    let devices = list(&app, &staff, by(pb::IdentifierKind::Device, "", ""))
        .await
        .unwrap();
    assert_eq!(names(&devices), vec![second.as_str()]);
}

#[tokio::test]
async fn contacts_are_for_staff_and_bad_requests_are_refused() {
    let app = spawn_app().await;
    let first = seen(&app, device("dev-1"), vec![]).await.contact.unwrap().name;
    let read = ["membership.members.read"];
    let partner = retail_testkit::tokens::sign(&retail_testkit::tokens::claims(
        "partner-user",
        PrincipalKind::PartnerUser,
        &read,
        Some("acme-0"),
    ));
    let service = retail_testkit::tokens::sign(&retail_testkit::tokens::claims(
        "orders",
        PrincipalKind::Service,
        &read,
        None,
    ));
    let no_scope = token(&["membership.members.write"]);
    for t in [&partner, &service, &no_scope] {
        let err = app
            .client()
            .get_contact(with_token(t, pb::GetContactRequest { name: first.clone() }))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied);
        let err = list(&app, t, pb::ListContactsRequest::default()).await.unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied);
    }

    let err = app
        .client()
        .get_contact(authed(pb::GetContactRequest {
            name: "contacts/not-a-uuid".into(),
        }))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&err), vec!["name"]);
    let err = app
        .client()
        .get_contact(authed(pb::GetContactRequest {
            name: format!("contacts/{}", uuid::Uuid::now_v7()),
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    let staff = staff_token();
    let bad = |identifier_kind: i32, value: &str| pb::ListContactsRequest {
        identifier_kind,
        identifier_value: value.into(),
        ..Default::default()
    };
    // Members' kinds are never a contact's; a value needs its kind.
    for (req, field) in [
        (bad(pb::IdentifierKind::Phone as i32, ""), "identifier_kind"),
        (bad(0, "dev-1"), "identifier_kind"),
        (bad(99, ""), "identifier_kind"),
        (bad(pb::IdentifierKind::External as i32, "oid-1"), "identifier_channel"),
    ] {
        let err = list(&app, &staff, req).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert_eq!(violated_fields(&err), vec![field]);
    }
    let err = list(
        &app,
        &staff,
        pb::ListContactsRequest {
            page_token: "garbage".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
}
