//! `LoyaltyService`: the ladder, purchases and refunds, the points ledger and tier
//! changes.

use retail_kit::auth::Principal;
use retail_kit::idempotency::IdempotencyKey;
use retail_kit::paging::Page;
use retail_proto::membership as pb;
use retail_proto::membership::loyalty_service_server::LoyaltyService;
use tonic::Request;

use super::{LoyaltyApi, POINTS_WRITE, READ, Rpc, convert, ok, parse};

#[tonic::async_trait]
impl LoyaltyService for LoyaltyApi {
    async fn list_tiers(&self, request: Request<pb::ListTiersRequest>) -> Rpc<pb::ListTiersResponse> {
        Principal::of(&request)?.require_scope(READ)?;
        ok(convert::tiers(&self.app.rules))
    }

    #[tracing::instrument(skip_all)]
    async fn record_purchase(&self, request: Request<pb::RecordPurchaseRequest>) -> Rpc<pb::RecordPurchaseResponse> {
        Principal::of(&request)?.require_scope(POINTS_WRITE)?;
        let req = request.into_inner();
        let id = parse::member_id("name", &req.name)?;
        let input = parse::purchase(&req, &self.app.rules.currency)?;
        let (points_change, tier, balance) = self.app.record_purchase(&id, input).await?;
        ok(pb::RecordPurchaseResponse {
            points_change,
            tier,
            balance: Some(convert::balance(&balance)),
        })
    }

    async fn grant_points(&self, request: Request<pb::GrantPointsRequest>) -> Rpc<pb::PointsBalance> {
        let caller = {
            let principal = Principal::of(&request)?;
            principal.require_scope(POINTS_WRITE)?;
            principal.subject.clone()
        };
        let req = request.into_inner();
        let key = IdempotencyKey::from_request("membership.GrantPoints", &caller, &req.request_id, &req)?;
        let id = parse::member_id("name", &req.name)?;
        let points = parse::positive_points("points", req.points)?;
        let reason = parse::reason("reason", &req.reason)?;
        ok(self
            .app
            .grant(&id, points, reason, key.as_ref(), convert::balance)
            .await?)
    }

    async fn redeem_points(&self, request: Request<pb::RedeemPointsRequest>) -> Rpc<pb::PointsBalance> {
        let caller = {
            let principal = Principal::of(&request)?;
            principal.require_scope(POINTS_WRITE)?;
            principal.subject.clone()
        };
        let req = request.into_inner();
        let key = IdempotencyKey::from_request("membership.RedeemPoints", &caller, &req.request_id, &req)?;
        let id = parse::member_id("name", &req.name)?;
        let points = parse::positive_points("points", req.points)?;
        let reason = parse::reason("reason", &req.reason)?;
        ok(self
            .app
            .redeem(&id, points, reason, key.as_ref(), convert::balance)
            .await?)
    }

    async fn get_points_balance(&self, request: Request<pb::GetPointsBalanceRequest>) -> Rpc<pb::PointsBalance> {
        Principal::of(&request)?.require_scope(READ)?;
        let id = parse::member_id("name", &request.get_ref().name)?;
        ok(convert::balance(&self.app.balance(&id).await?))
    }

    async fn list_points_entries(
        &self,
        request: Request<pb::ListPointsEntriesRequest>,
    ) -> Rpc<pb::ListPointsEntriesResponse> {
        Principal::of(&request)?.require_scope(READ)?;
        let req = request.get_ref();
        let id = parse::member_id("parent", &req.parent)?;
        let page = Page::parse(req.page_size, &req.page_token, id.as_str())?;
        let (rows, next_page_token) = self.app.entries(&id, page).await?;
        ok(pb::ListPointsEntriesResponse {
            points_entries: rows.iter().map(|e| convert::entry(id.as_str(), e)).collect(),
            next_page_token,
        })
    }

    async fn list_tier_changes(
        &self,
        request: Request<pb::ListTierChangesRequest>,
    ) -> Rpc<pb::ListTierChangesResponse> {
        Principal::of(&request)?.require_scope(READ)?;
        let req = request.get_ref();
        let id = parse::member_id("parent", &req.parent)?;
        let page = Page::parse(req.page_size, &req.page_token, id.as_str())?;
        let (rows, next_page_token) = self.app.tier_changes(&id, page).await?;
        ok(pb::ListTierChangesResponse {
            tier_changes: rows.iter().map(convert::tier_change).collect(),
            next_page_token,
        })
    }
}
