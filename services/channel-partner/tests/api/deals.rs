//! Deal locks: one winner of a race, duplicates on the normalised customer key,
//! expiry by the service's clock, one extension by the brand, release, the lock
//! check, isolation between partners.

use chrono::Duration;
use futures::future::join_all;
use retail_proto::events as ev;
use retail_proto::partner::{self as pb};
use tonic::Code;

use crate::helpers::*;

fn customer(name: &str, region: &str, tax_id: &str) -> pb::Customer {
    pb::Customer {
        display_name: name.into(),
        region: region.into(),
        tax_id: tax_id.into(),
    }
}

fn lock_of(c: pb::Customer) -> pb::DealLock {
    pb::DealLock {
        subject_kind: pb::DealSubjectKind::Customer.into(),
        customer: Some(c),
        ..Default::default()
    }
}

impl TestApp {
    async fn register(&self, partner: &str, c: pb::Customer) -> Result<pb::DealLock, tonic::Status> {
        self.deals()
            .register_deal_lock(as_partner(
                partner,
                pb::RegisterDealLockRequest {
                    parent: format!("partners/{partner}"),
                    deal_lock: Some(lock_of(c)),
                    request_id: String::new(),
                },
            ))
            .await
            .map(|r| r.into_inner())
    }

    async fn locked_to_other(&self, partner: &str, c: pb::Customer) -> bool {
        self.deals()
            .check_customer_lock(authed(pb::CheckCustomerLockRequest {
                customer: Some(c),
                partner: format!("partners/{partner}"),
            }))
            .await
            .unwrap()
            .into_inner()
            .locked_to_other_partner
    }

    async fn get_lock(&self, request: tonic::Request<pb::GetDealLockRequest>) -> Result<pb::DealLock, tonic::Status> {
        self.deals().get_deal_lock(request).await.map(|r| r.into_inner())
    }

    async fn list_locks(&self, request: tonic::Request<pb::ListDealLocksRequest>) -> Vec<pb::DealLock> {
        self.deals()
            .list_deal_locks(request)
            .await
            .unwrap()
            .into_inner()
            .deal_locks
    }
}

fn list(parent: &str, state: pb::DealLockState) -> pb::ListDealLocksRequest {
    pb::ListDealLocksRequest {
        parent: parent.into(),
        page_size: 500,
        page_token: String::new(),
        state: state.into(),
    }
}

#[tokio::test]
async fn of_100_partners_racing_for_a_customer_exactly_one_holds_it_and_no_loser_learns_who() {
    let app = spawn_app().await;
    let ids: Vec<String> = (0..100).map(|i| format!("p{i:03}")).collect();
    for id in &ids {
        app.active(id).await;
    }
    // The same customer, written a little differently by each partner.
    let results = join_all(ids.iter().enumerate().map(|(i, id)| {
        let name = if i % 2 == 0 {
            "ACME Pumps, Ltd."
        } else {
            "  acme   pumps ltd"
        };
        let region = if i % 3 == 0 { "North" } else { "north" };
        app.register(id, customer(name, region, ""))
    }))
    .await;
    let winners: Vec<&pb::DealLock> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(winners.len(), 1, "exactly one registration wins");
    let holder = winners[0].name.split('/').nth(1).unwrap().to_owned();
    let losers: Vec<&tonic::Status> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert_eq!(losers.len(), 99);
    for status in losers {
        assert!(
            matches!(status.code(), Code::AlreadyExists | Code::FailedPrecondition),
            "{status:?}"
        );
        assert!(!status.message().contains(&holder), "{}", status.message());
    }
    // The brand sees the one active lock and who holds it.
    let active = app
        .list_locks(authed(list("partners/-", pb::DealLockState::Active)))
        .await;
    assert_eq!(active.len(), 1);
    assert_eq!(active[0].name, winners[0].name);
    assert!(
        app.locked_to_other("p000", customer("Acme Pumps Ltd", "NORTH", ""))
            .await
            || holder == "p000"
    );
    assert!(!app.locked_to_other(&holder, customer("acme pumps", "north", "")).await);
}

#[tokio::test]
async fn duplicates_are_found_by_name_and_region_or_by_tax_id() {
    let app = spawn_app().await;
    app.active("a").await;
    app.active("b").await;
    app.register("a", customer("Beta GmbH", "North", "DE 123-456"))
        .await
        .unwrap();
    // Same name and region, written otherwise.
    let dup = app
        .register("b", customer("beta gmbh.", " north", ""))
        .await
        .unwrap_err();
    assert_eq!(dup.code(), Code::AlreadyExists);
    assert!(!dup.message().contains("partners/a"));
    // Another name, the same tax id.
    let dup = app
        .register("b", customer("Beta Holding", "South", "de123456"))
        .await
        .unwrap_err();
    assert_eq!(dup.code(), Code::AlreadyExists);
    // The same name in another region is another customer.
    app.register("b", customer("Beta GmbH", "South", "")).await.unwrap();
    // A second lock of the holder on the same customer is a duplicate too.
    assert_eq!(
        app.register("a", customer("Beta GmbH", "north", ""))
            .await
            .unwrap_err()
            .code(),
        Code::AlreadyExists
    );
}

#[tokio::test]
async fn a_lock_expires_by_the_services_clock_and_the_customer_is_free_again() {
    let app = spawn_app().await;
    app.active("a").await;
    app.active("b").await;
    let lock = app.register("a", customer("Gamma", "north", "")).await.unwrap();
    let created = lock.create_time.unwrap().seconds;
    assert_eq!(
        lock.expire_time.unwrap().seconds - created,
        90 * 86_400,
        "90 days by default"
    );
    assert_eq!(lock.state, pb::DealLockState::Active as i32);
    // Day 89: the sweep leaves it.
    app.app.advance_clock(Duration::days(89));
    assert_eq!(app.app.sweep_sales().await.unwrap().0, 0);
    assert!(app.locked_to_other("b", customer("Gamma", "north", "")).await);
    // Day 91: expired, with its event.
    app.app.advance_clock(Duration::days(2));
    assert_eq!(app.app.sweep_sales().await.unwrap().0, 1);
    let got = app
        .get_lock(authed(pb::GetDealLockRequest {
            name: lock.name.clone(),
        }))
        .await
        .unwrap();
    assert_eq!(got.state, pb::DealLockState::Expired as i32);
    assert!(got.end_time.is_some());
    let changes = app.events::<ev::DealLockChanged>(2).await;
    let kinds: Vec<&str> = changes.iter().map(|c| c.change.as_str()).collect();
    assert_eq!(kinds, ["registered", "expired"]);
    assert_eq!(changes[1].deal_lock, lock.name);
    assert!(!app.locked_to_other("b", customer("Gamma", "north", "")).await);
    // Another partner registers it now.
    app.register("b", customer("Gamma", "north", "")).await.unwrap();
    assert!(app.locked_to_other("a", customer("gamma", "North", "")).await);
}

#[tokio::test]
async fn a_lock_that_ran_out_before_the_sweep_does_not_block_a_new_registration() {
    let app = spawn_app().await;
    app.active("a").await;
    app.active("b").await;
    let old = app.register("a", customer("Delta", "north", "T-1")).await.unwrap();
    app.app.advance_clock(Duration::days(90));
    // No sweep ran: the registration itself ends the old lock.
    app.register("b", customer("Delta", "north", "T-1")).await.unwrap();
    let got = app
        .get_lock(authed(pb::GetDealLockRequest { name: old.name }))
        .await
        .unwrap();
    assert_eq!(got.state, pb::DealLockState::Expired as i32);
    assert_eq!(app.app.sweep_sales().await.unwrap().0, 0);
}

#[tokio::test]
async fn the_brand_extends_a_lock_once() {
    let app = spawn_app().await;
    app.active("a").await;
    let lock = app.register("a", customer("Epsilon", "north", "")).await.unwrap();
    let extend = |token: String| {
        let name = lock.name.clone();
        let deals = app.deals();
        async move {
            let mut deals = deals;
            deals
                .extend_deal_lock(with_token(
                    &token,
                    pb::ExtendDealLockRequest {
                        name,
                        reason: "approved: tender runs late".into(),
                    },
                ))
                .await
                .map(|r| r.into_inner())
        }
    };
    // A partner cannot extend its own lock.
    assert_eq!(
        extend(partner_user("a")).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    let extended = extend(admin()).await.unwrap();
    assert!(extended.extended);
    assert_eq!(
        extended.expire_time.unwrap().seconds - lock.expire_time.unwrap().seconds,
        90 * 86_400
    );
    assert_eq!(extended.extension_reason, "approved: tender runs late");
    // Only once.
    assert_eq!(extend(admin()).await.unwrap_err().code(), Code::FailedPrecondition);
    // It holds past the first 90 days, and ends after 180.
    app.app.advance_clock(Duration::days(100));
    assert_eq!(app.app.sweep_sales().await.unwrap().0, 0);
    app.app.advance_clock(Duration::days(81));
    assert_eq!(app.app.sweep_sales().await.unwrap().0, 1);
}

#[tokio::test]
async fn the_holder_or_the_brand_releases_and_another_partner_sees_nothing() {
    let app = spawn_app().await;
    app.active("a").await;
    app.active("b").await;
    let lock = app.register("a", customer("Zeta", "north", "")).await.unwrap();
    let mine = app.register("b", customer("Eta", "north", "")).await.unwrap();
    // b cannot read, release or list a's lock.
    let get_b = app
        .get_lock(as_partner(
            "b",
            pb::GetDealLockRequest {
                name: lock.name.clone(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(get_b.code(), Code::NotFound);
    let release = |partner: Option<&str>, name: &str| {
        let request = pb::ReleaseDealLockRequest {
            name: name.into(),
            reason: "customer chose another supplier".into(),
        };
        let request = match partner {
            Some(p) => as_partner(p, request),
            None => authed(request),
        };
        let mut deals = app.deals();
        async move { deals.release_deal_lock(request).await.map(|r| r.into_inner()) }
    };
    assert_eq!(release(Some("b"), &lock.name).await.unwrap_err().code(), Code::NotFound);
    assert_eq!(
        app.deals()
            .list_deal_locks(as_partner("b", list("partners/a", pb::DealLockState::Unspecified)))
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    // The wildcard gives a partner its own locks only; the brand all of them.
    let own = app
        .list_locks(as_partner("b", list("partners/-", pb::DealLockState::Unspecified)))
        .await;
    assert_eq!(
        own.iter().map(|l| l.name.clone()).collect::<Vec<_>>(),
        std::slice::from_ref(&mine.name)
    );
    assert_eq!(
        app.list_locks(authed(list("partners/-", pb::DealLockState::Unspecified)))
            .await
            .len(),
        2
    );
    // b may not ask whether a customer is locked to another partner than a.
    let check = app
        .deals()
        .check_customer_lock(as_partner(
            "b",
            pb::CheckCustomerLockRequest {
                customer: Some(customer("Zeta", "north", "")),
                partner: "partners/a".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(check.code(), Code::NotFound);
    // The holder releases; twice is FAILED_PRECONDITION.
    let released = release(Some("a"), &lock.name).await.unwrap();
    assert_eq!(released.state, pb::DealLockState::Released as i32);
    assert_eq!(released.end_reason, "customer chose another supplier");
    assert_eq!(
        release(Some("a"), &lock.name).await.unwrap_err().code(),
        Code::FailedPrecondition
    );
    assert!(!app.locked_to_other("b", customer("Zeta", "north", "")).await);
    // The brand releases b's lock.
    let released = release(None, &mine.name).await.unwrap();
    assert_eq!(released.state, pb::DealLockState::Released as i32);
    let changes = app.events::<ev::DealLockChanged>(4).await;
    assert_eq!(changes.iter().filter(|c| c.change == "released").count(), 2);
}

#[tokio::test]
async fn bad_registrations_name_their_fields() {
    let app = spawn_app().await;
    app.active("a").await;
    let status = app
        .deals()
        .register_deal_lock(as_partner(
            "a",
            pb::RegisterDealLockRequest {
                parent: "partners/a".into(),
                deal_lock: Some(pb::DealLock {
                    subject_kind: pb::DealSubjectKind::Order.into(),
                    customer: Some(customer("", "?!", &"x".repeat(40))),
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let mut fields = violated_fields(&status);
    fields.sort();
    assert_eq!(
        fields,
        [
            "deal_lock.customer.display_name",
            "deal_lock.customer.region",
            "deal_lock.customer.tax_id",
            "deal_lock.subject_ref",
        ]
    );
    // An order lock names the order; it also holds the customer.
    let order = app
        .deals()
        .register_deal_lock(as_partner(
            "a",
            pb::RegisterDealLockRequest {
                parent: "partners/a".into(),
                deal_lock: Some(pb::DealLock {
                    subject_kind: pb::DealSubjectKind::Order.into(),
                    subject_ref: "order-17".into(),
                    customer: Some(customer("Theta", "north", "")),
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(order.subject_ref, "order-17");
    assert!(app.locked_to_other("b", customer("Theta", "north", "")).await);
}
