//! Partner principals and membership. Identity lets partner users and API keys hold
//! no membership scope (POS recognition runs with a service's token), so no
//! membership or loyalty RPC answers a partner with a member, whoever's customer the
//! member is.

use retail_kit::auth::PrincipalKind;
use retail_proto::common::Money;
use retail_proto::events::event_log_service_client::EventLogServiceClient;
use retail_proto::membership::loyalty_service_client::LoyaltyServiceClient;
use retail_proto::membership::{self as pb};
use retail_testkit::tokens::{claims, sign};
use tonic::Code;

use crate::helpers::*;

/// Every scope identity lets a partner principal hold.
const PARTNER_SCOPES: &[&str] = &[
    "catalog.read",
    "orders.read",
    "orders.write",
    "partner.read",
    "partner.write",
];

fn partner_token(kind: PrincipalKind, partner: &str) -> String {
    sign(&claims(&format!("{partner}-user"), kind, PARTNER_SCOPES, Some(partner)))
}

/// Fails unless the call was refused for want of a scope, showing nothing.
fn refused<T: std::fmt::Debug>(rpc: &str, result: Result<tonic::Response<T>, tonic::Status>) {
    match result {
        Ok(answer) => panic!("{rpc} answered a partner: {answer:?}"),
        Err(status) => {
            assert_eq!(status.code(), Code::PermissionDenied, "{rpc}: {status:?}");
            assert!(!status.message().contains("Bea"), "{rpc}: {status:?}");
        }
    }
}

#[tokio::test]
async fn a_partner_reaches_no_member_of_any_partner_through_membership_or_loyalty() {
    let app = spawn_app().await;
    // A customer known at partner B's till.
    let pos_id = pb::Identifier {
        kind: pb::IdentifierKind::External as i32,
        value: "till-b-0042".into(),
        channel: "partner_pos".into(),
    };
    let member = app
        .register("Bea", vec![phone("+4915112345678"), pos_id.clone()])
        .await
        .unwrap();
    let name = member.name.clone();
    for kind in [PrincipalKind::PartnerUser, PrincipalKind::PartnerSystem] {
        for partner in ["p-a", "p-b"] {
            let t = partner_token(kind, partner);
            let mut m = app.client();
            let mut l = LoyaltyServiceClient::new(app.channel.clone());
            let rpc = |r: &str| format!("{kind:?} of {partner}: {r}");
            refused(
                &rpc("IdentifyMember"),
                m.identify_member(with_token(
                    &t,
                    pb::IdentifyMemberRequest {
                        identifier: Some(pos_id.clone()),
                    },
                ))
                .await,
            );
            refused(
                &rpc("IdentifyMember by phone"),
                m.identify_member(with_token(
                    &t,
                    pb::IdentifyMemberRequest {
                        identifier: Some(phone("+4915112345678")),
                    },
                ))
                .await,
            );
            refused(
                &rpc("GetMember"),
                m.get_member(with_token(
                    &t,
                    pb::GetMemberRequest {
                        name: name.clone(),
                        read_mask: None,
                    },
                ))
                .await,
            );
            refused(
                &rpc("ListMembers"),
                m.list_members(with_token(&t, pb::ListMembersRequest::default())).await,
            );
            refused(
                &rpc("ExportMember"),
                m.export_member(with_token(&t, pb::ExportMemberRequest { name: name.clone() }))
                    .await,
            );
            refused(
                &rpc("RegisterMember"),
                m.register_member(with_token(
                    &t,
                    pb::RegisterMemberRequest {
                        member: Some(pb::Member {
                            display_name: "Probe".into(),
                            identifiers: vec![pos_id.clone()],
                            ..Default::default()
                        }),
                        request_id: String::new(),
                    },
                ))
                .await,
            );
            refused(
                &rpc("UpdateMember"),
                m.update_member(with_token(
                    &t,
                    pb::UpdateMemberRequest {
                        member: Some(pb::Member {
                            name: name.clone(),
                            display_name: "Changed".into(),
                            ..Default::default()
                        }),
                        update_mask: Some(prost_types::FieldMask {
                            paths: vec!["display_name".into()],
                        }),
                    },
                ))
                .await,
            );
            refused(
                &rpc("AddIdentifier"),
                m.add_identifier(with_token(
                    &t,
                    pb::AddIdentifierRequest {
                        name: name.clone(),
                        identifier: Some(email("probe@example.com")),
                    },
                ))
                .await,
            );
            refused(
                &rpc("RemoveIdentifier"),
                m.remove_identifier(with_token(
                    &t,
                    pb::RemoveIdentifierRequest {
                        name: name.clone(),
                        identifier: Some(pos_id.clone()),
                    },
                ))
                .await,
            );
            refused(
                &rpc("SetTags"),
                m.set_tags(with_token(
                    &t,
                    pb::SetTagsRequest {
                        name: name.clone(),
                        ..Default::default()
                    },
                ))
                .await,
            );
            refused(
                &rpc("SetConsent"),
                m.set_consent(with_token(
                    &t,
                    pb::SetConsentRequest {
                        name: name.clone(),
                        consent: None,
                    },
                ))
                .await,
            );
            refused(
                &rpc("EraseMember"),
                m.erase_member(with_token(
                    &t,
                    pb::EraseMemberRequest {
                        name: name.clone(),
                        reason: "probe".into(),
                    },
                ))
                .await,
            );
            refused(
                &rpc("ListTiers"),
                l.list_tiers(with_token(&t, pb::ListTiersRequest {})).await,
            );
            refused(
                &rpc("GetPointsBalance"),
                l.get_points_balance(with_token(&t, pb::GetPointsBalanceRequest { name: name.clone() }))
                    .await,
            );
            refused(
                &rpc("ListPointsEntries"),
                l.list_points_entries(with_token(
                    &t,
                    pb::ListPointsEntriesRequest {
                        parent: name.clone(),
                        ..Default::default()
                    },
                ))
                .await,
            );
            refused(
                &rpc("ListTierChanges"),
                l.list_tier_changes(with_token(
                    &t,
                    pb::ListTierChangesRequest {
                        parent: name.clone(),
                        ..Default::default()
                    },
                ))
                .await,
            );
            refused(
                &rpc("RecordPurchase"),
                l.record_purchase(with_token(
                    &t,
                    pb::RecordPurchaseRequest {
                        name: name.clone(),
                        purchase: Some(pb::Purchase {
                            order_id: "order-of-a".into(),
                            amount: Some(Money {
                                currency_code: "EUR".into(),
                                amount_minor: 10_000,
                            }),
                            occur_time: None,
                            channel: "partner".into(),
                        }),
                        refund: false,
                        request_id: "probe".into(),
                    },
                ))
                .await,
            );
            refused(
                &rpc("GrantPoints"),
                l.grant_points(with_token(
                    &t,
                    pb::GrantPointsRequest {
                        name: name.clone(),
                        points: 100,
                        reason: "probe".into(),
                        request_id: "probe".into(),
                    },
                ))
                .await,
            );
            refused(
                &rpc("RedeemPoints"),
                l.redeem_points(with_token(
                    &t,
                    pb::RedeemPointsRequest {
                        name: name.clone(),
                        points: 1,
                        reason: "probe".into(),
                        request_id: "probe".into(),
                    },
                ))
                .await,
            );
            let mut log = EventLogServiceClient::new(app.channel.clone());
            let subscribed = log
                .subscribe(with_token(
                    &t,
                    retail_proto::events::SubscribeRequest {
                        after_position: 0,
                        max_batch_size: 10,
                    },
                ))
                .await;
            let status = match subscribed {
                Err(status) => status,
                Ok(stream) => match stream.into_inner().message().await {
                    Err(status) => status,
                    Ok(batch) => panic!("{kind:?} of {partner} reads the event log: {batch:?}"),
                },
            };
            assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
        }
    }
    // Nothing changed: the member is as registered, recognised by staff.
    let again = app.identify(pos_id).await.unwrap();
    assert_eq!(again.name, name);
    assert_eq!(again.display_name, "Bea");
    assert_eq!(again.identifiers.len(), 2);
}
