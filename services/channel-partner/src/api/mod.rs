//! The gRPC adapter of channel-partner: authorise (the scope; a partner principal
//! sees only its own organisation and what belongs to it, anything else is
//! NOT_FOUND), parse the request into the app's input ([`parse`]), call the use
//! case, convert the answer ([`convert`]).

mod convert;
mod parse;
pub(crate) mod policy;
pub(crate) mod quotes;
pub(crate) mod sales;

use std::sync::Arc;

use retail_kit::auth::Principal;
use retail_kit::convert::now;
use retail_kit::error::ServiceResult;
use retail_kit::idempotency::IdempotencyKey;
use retail_kit::paging::Page;
use retail_proto::partner as pb;
use retail_proto::partner::partner_service_server::PartnerService;
use tonic::{Request, Response, Status};

use crate::app::{App, Caller};
use crate::domain::partner::PartnerState;
use crate::domain::points::RedemptionState;
use convert::{
    catalog_item_to_pb, entry_to_pb, ledger_to_pb, level_change_to_pb, level_to_pb, partner_to_pb, redemption_to_pb,
    rep_to_pb, status_change_to_pb, target_to_pb,
};
use retail_proto::partner::incentive_service_server::IncentiveService;
use retail_proto::partner::target_service_server::TargetService;

pub(crate) const READ: &str = "partner.read";
pub(crate) const WRITE: &str = "partner.write";
/// The brand's own changes (partner principals never hold it).
pub(crate) const ADMIN: &str = "partner.admin";

type Rpc<T> = Result<Response<T>, Status>;

fn ok<T>(value: T) -> Rpc<T> {
    Ok(Response::new(value))
}

/// The caller, if it holds `scope`.
fn caller<T>(request: &Request<T>, scope: &str) -> ServiceResult<Caller> {
    let p = Principal::of(request)?;
    p.require_scope(scope)?;
    Ok(Caller::from(p))
}

/// Partner organisations, reps and levels.
#[derive(Debug, Clone)]
pub(crate) struct PartnerApi {
    app: Arc<App>,
}

impl PartnerApi {
    pub(crate) fn new(app: Arc<App>) -> Self {
        Self { app }
    }

    /// The status methods: `name` and `reason` of the request.
    async fn change_state<T>(
        &self,
        request: Request<T>,
        to: PartnerState,
        fields: fn(&T) -> (&str, &str),
    ) -> Rpc<pb::Partner> {
        let who = caller(&request, ADMIN)?;
        let (name, reason) = fields(request.get_ref());
        let id = parse::partner_id("name", name)?;
        let reason = parse::reason("reason", reason)?;
        ok(partner_to_pb(
            &self.app.change_partner_state(&who, &id, to, &reason, now()).await?,
        ))
    }
}

/// Targets.
#[derive(Debug, Clone)]
pub(crate) struct TargetApi {
    app: Arc<App>,
}

impl TargetApi {
    pub(crate) fn new(app: Arc<App>) -> Self {
        Self { app }
    }
}

/// Points ledgers, the catalog and redemptions.
#[derive(Debug, Clone)]
pub(crate) struct IncentiveApi {
    app: Arc<App>,
}

impl IncentiveApi {
    pub(crate) fn new(app: Arc<App>) -> Self {
        Self { app }
    }

    /// The decisions: `name` and `reason` of the request.
    async fn decide<T>(
        &self,
        request: Request<T>,
        to: RedemptionState,
        fields: fn(&T) -> (&str, &str),
    ) -> Rpc<pb::Redemption> {
        let who = caller(&request, ADMIN)?;
        let (name, reason) = fields(request.get_ref());
        let name = parse::redemption_name("name", name)?;
        let reason = if to == RedemptionState::Rejected {
            parse::reason("reason", reason)?
        } else {
            let mut v = retail_kit::error::Violations::new();
            let r = v.text("reason", reason, 500, false);
            v.finish()?;
            r
        };
        let decided = self.app.decide_redemption(&who, &name, to, &reason, now()).await?;
        ok(redemption_to_pb(&name.ledger, &decided))
    }
}

#[tonic::async_trait]
impl PartnerService for PartnerApi {
    #[tracing::instrument(skip_all)]
    async fn create_partner(&self, request: Request<pb::CreatePartnerRequest>) -> Rpc<pb::Partner> {
        let who = caller(&request, ADMIN)?;
        let req = request.into_inner();
        let key = IdempotencyKey::from_request("partner.CreatePartner", &who.owner, &req.request_id, &req)?;
        let new = parse::create_partner(&req)?;
        ok(self
            .app
            .create_partner(&who, new, key.as_ref(), now(), partner_to_pb)
            .await?)
    }

    async fn get_partner(&self, request: Request<pb::GetPartnerRequest>) -> Rpc<pb::Partner> {
        let who = caller(&request, READ)?;
        let id = parse::partner_id("name", &request.get_ref().name)?;
        ok(partner_to_pb(&self.app.partner(&who, &id).await?))
    }

    async fn list_partners(&self, request: Request<pb::ListPartnersRequest>) -> Rpc<pb::ListPartnersResponse> {
        let who = caller(&request, READ)?;
        let req = request.into_inner();
        let filter = parse::list_partners(&req)?;
        let page = Page::parse(req.page_size, &req.page_token, &format!("{filter:?}"))?;
        let (rows, next_page_token) = self.app.list_partners(&who, filter, &page).await?;
        ok(pb::ListPartnersResponse {
            partners: rows.iter().map(partner_to_pb).collect(),
            next_page_token,
        })
    }

    #[tracing::instrument(skip_all)]
    async fn activate_partner(&self, request: Request<pb::ActivatePartnerRequest>) -> Rpc<pb::Partner> {
        self.change_state(request, PartnerState::Active, |r| (&r.name, &r.reason))
            .await
    }

    #[tracing::instrument(skip_all)]
    async fn suspend_partner(&self, request: Request<pb::SuspendPartnerRequest>) -> Rpc<pb::Partner> {
        self.change_state(request, PartnerState::Suspended, |r| (&r.name, &r.reason))
            .await
    }

    #[tracing::instrument(skip_all)]
    async fn terminate_partner(&self, request: Request<pb::TerminatePartnerRequest>) -> Rpc<pb::Partner> {
        self.change_state(request, PartnerState::Terminated, |r| (&r.name, &r.reason))
            .await
    }

    async fn list_status_changes(
        &self,
        request: Request<pb::ListStatusChangesRequest>,
    ) -> Rpc<pb::ListStatusChangesResponse> {
        let who = caller(&request, READ)?;
        let req = request.into_inner();
        let id = parse::partner_id("parent", &req.parent)?;
        let page = Page::parse(req.page_size, &req.page_token, &req.parent)?;
        let (rows, next_page_token) = self.app.status_changes(&who, &id, &page).await?;
        ok(pb::ListStatusChangesResponse {
            status_changes: rows.iter().map(status_change_to_pb).collect(),
            next_page_token,
        })
    }

    #[tracing::instrument(skip_all)]
    async fn create_sales_rep(&self, request: Request<pb::CreateSalesRepRequest>) -> Rpc<pb::SalesRep> {
        let who = caller(&request, WRITE)?;
        let req = request.into_inner();
        let key = IdempotencyKey::from_request("partner.CreateSalesRep", &who.owner, &req.request_id, &req)?;
        let new = parse::create_rep(&req)?;
        ok(self.app.create_rep(&who, new, key.as_ref(), now(), rep_to_pb).await?)
    }

    async fn get_sales_rep(&self, request: Request<pb::GetSalesRepRequest>) -> Rpc<pb::SalesRep> {
        let who = caller(&request, READ)?;
        let id = parse::rep_id("name", &request.get_ref().name)?;
        ok(rep_to_pb(&self.app.rep(&who, &id).await?))
    }

    async fn list_sales_reps(&self, request: Request<pb::ListSalesRepsRequest>) -> Rpc<pb::ListSalesRepsResponse> {
        let who = caller(&request, READ)?;
        let req = request.into_inner();
        let filter = parse::list_reps(&req)?;
        let page = Page::parse(req.page_size, &req.page_token, &format!("{filter:?}"))?;
        let (rows, next_page_token) = self.app.list_reps(&who, filter, &page).await?;
        ok(pb::ListSalesRepsResponse {
            sales_reps: rows.iter().map(rep_to_pb).collect(),
            next_page_token,
        })
    }

    async fn list_levels(&self, request: Request<pb::ListLevelsRequest>) -> Rpc<pb::ListLevelsResponse> {
        caller(&request, READ)?;
        ok(pb::ListLevelsResponse {
            levels: self.app.levels().iter().map(level_to_pb).collect(),
            currency_code: self.app.rules.currency.clone(),
        })
    }

    async fn list_level_changes(
        &self,
        request: Request<pb::ListLevelChangesRequest>,
    ) -> Rpc<pb::ListLevelChangesResponse> {
        let who = caller(&request, READ)?;
        let req = request.into_inner();
        let id = parse::partner_id("parent", &req.parent)?;
        let page = Page::parse(req.page_size, &req.page_token, &req.parent)?;
        let (rows, next_page_token) = self.app.level_changes(&who, &id, &page).await?;
        ok(pb::ListLevelChangesResponse {
            level_changes: rows.iter().map(level_change_to_pb).collect(),
            next_page_token,
        })
    }

    #[tracing::instrument(skip_all)]
    async fn reevaluate_levels(
        &self,
        request: Request<pb::ReevaluateLevelsRequest>,
    ) -> Rpc<pb::ReevaluateLevelsResponse> {
        let who = caller(&request, ADMIN)?;
        who.require_brand("re-evaluates levels")?;
        let changed = self.app.reevaluate_levels(now()).await?;
        ok(pb::ReevaluateLevelsResponse {
            changed: i32::try_from(changed).unwrap_or(i32::MAX),
        })
    }
}

#[tonic::async_trait]
impl TargetService for TargetApi {
    #[tracing::instrument(skip_all)]
    async fn create_target(&self, request: Request<pb::CreateTargetRequest>) -> Rpc<pb::Target> {
        let who = caller(&request, ADMIN)?;
        let req = request.into_inner();
        let key = IdempotencyKey::from_request("partner.CreateTarget", &who.owner, &req.request_id, &req)?;
        let new = parse::create_target(&req)?;
        if let Some(t) = &req.target
            && !t.currency_code.is_empty()
            && t.currency_code != self.app.rules.currency
        {
            return Err(retail_kit::error::ServiceError::invalid(
                "target.currency_code",
                format!("must be {}", self.app.rules.currency),
            )
            .into());
        }
        let mut target = self
            .app
            .create_target(&who, new, key.as_ref(), now(), target_pb_in_programme_currency)
            .await?;
        target.currency_code = self.app.rules.currency.clone();
        ok(target)
    }

    async fn get_target(&self, request: Request<pb::GetTargetRequest>) -> Rpc<pb::Target> {
        let who = caller(&request, READ)?;
        let id = parse::target_id("name", &request.get_ref().name)?;
        let view = self.app.target(&who, &id, now()).await?;
        ok(target_to_pb(&view, &self.app.rules.currency))
    }

    async fn list_targets(&self, request: Request<pb::ListTargetsRequest>) -> Rpc<pb::ListTargetsResponse> {
        let who = caller(&request, READ)?;
        let req = request.into_inner();
        let subject = if req.subject.is_empty() {
            None
        } else {
            Some(parse::subject("subject", &req.subject)?)
        };
        let page = Page::parse(req.page_size, &req.page_token, &req.subject)?;
        let (views, next_page_token) = self.app.list_targets(&who, subject, &page, now()).await?;
        ok(pb::ListTargetsResponse {
            targets: views
                .iter()
                .map(|v| target_to_pb(v, &self.app.rules.currency))
                .collect(),
            next_page_token,
        })
    }
}

/// The target as created; the currency is filled in by the caller.
fn target_pb_in_programme_currency(view: &crate::app::TargetView) -> pb::Target {
    target_to_pb(view, "")
}

#[tonic::async_trait]
impl IncentiveService for IncentiveApi {
    async fn get_ledger(&self, request: Request<pb::GetLedgerRequest>) -> Rpc<pb::Ledger> {
        let who = caller(&request, READ)?;
        let subject = parse::ledger("name", &request.get_ref().name)?;
        ok(ledger_to_pb(&self.app.ledger(&who, &subject).await?))
    }

    async fn list_ledger_entries(
        &self,
        request: Request<pb::ListLedgerEntriesRequest>,
    ) -> Rpc<pb::ListLedgerEntriesResponse> {
        let who = caller(&request, READ)?;
        let req = request.into_inner();
        let subject = parse::ledger("parent", &req.parent)?;
        let page = Page::parse(req.page_size, &req.page_token, &req.parent)?;
        let (rows, next_page_token) = self.app.ledger_entries(&who, &subject, &page).await?;
        ok(pb::ListLedgerEntriesResponse {
            entries: rows.iter().map(entry_to_pb).collect(),
            next_page_token,
        })
    }

    #[tracing::instrument(skip_all)]
    async fn record_action(&self, request: Request<pb::RecordActionRequest>) -> Rpc<pb::LedgerEntry> {
        let who = caller(&request, ADMIN)?;
        let (subject, action, reference) = parse::record_action(request.get_ref())?;
        ok(entry_to_pb(
            &self
                .app
                .record_action(&who, &subject, &action, &reference, now())
                .await?,
        ))
    }

    #[tracing::instrument(skip_all)]
    async fn create_catalog_item(&self, request: Request<pb::CreateCatalogItemRequest>) -> Rpc<pb::CatalogItem> {
        let who = caller(&request, ADMIN)?;
        let new = parse::create_catalog_item(request.get_ref())?;
        ok(catalog_item_to_pb(
            &self.app.create_catalog_item(&who, new, now()).await?,
        ))
    }

    async fn list_catalog_items(
        &self,
        request: Request<pb::ListCatalogItemsRequest>,
    ) -> Rpc<pb::ListCatalogItemsResponse> {
        caller(&request, READ)?;
        let req = request.into_inner();
        let kind = parse::list_catalog_items(&req)?;
        let page = Page::parse(req.page_size, &req.page_token, &format!("{kind:?}"))?;
        let (rows, next_page_token) = self.app.list_catalog_items(kind, &page).await?;
        ok(pb::ListCatalogItemsResponse {
            catalog_items: rows.iter().map(catalog_item_to_pb).collect(),
            next_page_token,
        })
    }

    #[tracing::instrument(skip_all)]
    async fn request_redemption(&self, request: Request<pb::RequestRedemptionRequest>) -> Rpc<pb::Redemption> {
        let who = caller(&request, WRITE)?;
        let req = request.into_inner();
        let key = IdempotencyKey::from_request("partner.RequestRedemption", &who.owner, &req.request_id, &req)?;
        let (subject, item, quantity) = parse::request_redemption(&req)?;
        ok(self
            .app
            .request_redemption(&who, &subject, &item, quantity, key.as_ref(), now(), redemption_to_pb)
            .await?)
    }

    #[tracing::instrument(skip_all)]
    async fn approve_redemption(&self, request: Request<pb::ApproveRedemptionRequest>) -> Rpc<pb::Redemption> {
        self.decide(request, RedemptionState::Approved, |r| (&r.name, &r.reason))
            .await
    }

    #[tracing::instrument(skip_all)]
    async fn reject_redemption(&self, request: Request<pb::RejectRedemptionRequest>) -> Rpc<pb::Redemption> {
        self.decide(request, RedemptionState::Rejected, |r| (&r.name, &r.reason))
            .await
    }

    #[tracing::instrument(skip_all)]
    async fn fulfill_redemption(&self, request: Request<pb::FulfillRedemptionRequest>) -> Rpc<pb::Redemption> {
        self.decide(request, RedemptionState::Fulfilled, |r| (&r.name, &r.reason))
            .await
    }

    async fn get_redemption(&self, request: Request<pb::GetRedemptionRequest>) -> Rpc<pb::Redemption> {
        let who = caller(&request, READ)?;
        let name = parse::redemption_name("name", &request.get_ref().name)?;
        ok(redemption_to_pb(&name.ledger, &self.app.redemption(&who, &name).await?))
    }

    async fn list_redemptions(&self, request: Request<pb::ListRedemptionsRequest>) -> Rpc<pb::ListRedemptionsResponse> {
        let who = caller(&request, READ)?;
        let req = request.into_inner();
        let subject = parse::ledger("parent", &req.parent)?;
        let page = Page::parse(req.page_size, &req.page_token, &req.parent)?;
        let (rows, next_page_token) = self.app.list_redemptions(&who, &subject, &page).await?;
        ok(pb::ListRedemptionsResponse {
            redemptions: rows.iter().map(|r| redemption_to_pb(&subject, r)).collect(),
            next_page_token,
        })
    }
}
