//! The gRPC adapter of analytics: authorise (the scope, and for a store manager
//! his stores: [`StoreScope`]), parse the request
//! ([`parse`]), call the use case, convert the answer ([`convert`]). Every KPI
//! answer carries the log positions it reflects.

mod convert;
mod parse;

use std::sync::Arc;

use retail_kit::auth::Principal;
use retail_kit::error::{ServiceError, ServiceResult, Violations};
use retail_kit::paging::Page;
use retail_proto::analytics as pb;
use retail_proto::analytics::analytics_admin_service_server::AnalyticsAdminService;
use retail_proto::analytics::analytics_service_server::AnalyticsService;
use retail_proto::analytics::touchpoint_service_server::TouchpointService;
use tonic::{Request, Response, Status, Streaming};

use crate::app::App;
use crate::app::access::StoreScope;
use crate::app::touchpoints::{MAX_BATCH, Outcome};
use convert::{figures, freshness, outcome, place_rates, ts};

pub(crate) const READ: &str = "analytics.read";
pub(crate) const WRITE: &str = "analytics.write";
pub(crate) const ADMIN: &str = "analytics.admin";

type Rpc<T> = Result<Response<T>, Status>;

fn ok<T>(value: T) -> Rpc<T> {
    Ok(Response::new(value))
}

fn authorise<T>(request: &Request<T>, scope: &str) -> ServiceResult<()> {
    Principal::of(request)?.require_scope(scope)
}

/// Requires `analytics.read` and returns the stores the caller sees
/// ([`StoreScope`]).
fn reader<T>(request: &Request<T>) -> ServiceResult<StoreScope> {
    let principal = Principal::of(request)?;
    principal.require_scope(READ)?;
    Ok(StoreScope::of(principal))
}

#[derive(Debug, Clone)]
pub(crate) struct AnalyticsApi {
    app: Arc<App>,
}

impl AnalyticsApi {
    pub(crate) fn new(app: Arc<App>) -> Self {
        Self { app }
    }
}

#[tonic::async_trait]
impl AnalyticsService for AnalyticsApi {
    async fn get_sales_report(&self, request: Request<pb::GetSalesReportRequest>) -> Rpc<pb::SalesReport> {
        let scope = reader(&request)?;
        let (period, dim, key) = parse::sales(request.get_ref())?;
        scope.require_dimension(&dim, &key)?;
        let positions = self.app.recent_freshness().await?;
        let r = self.app.sales(period, &dim, &key).await?;
        ok(pb::SalesReport {
            current: Some(figures(&r.current)),
            previous: Some(figures(&r.previous)),
            revenue_growth: r.revenue_growth,
            orders_growth: r.orders_growth,
            average_order_value_growth: r.aov_growth,
            items_per_ticket_growth: r.items_per_ticket_growth,
            freshness: freshness(positions),
        })
    }

    async fn list_member_rfm(&self, request: Request<pb::ListMemberRfmRequest>) -> Rpc<pb::ListMemberRfmResponse> {
        reader(&request)?.require_member_level()?;
        let req = request.into_inner();
        let mut v = Violations::new();
        let as_of = parse::as_of(&mut v, &req.as_of_time);
        let window = parse::window_days(&mut v, "window_days", req.window_days, 365);
        let member = parse::member(&mut v, &req.member);
        let segment = if req.segment.is_empty() {
            None
        } else {
            let s = crate::domain::kpi::Segment::parse(&req.segment);
            if s.is_none() {
                v.add("segment", "one of the eight RFM segments");
            }
            s
        };
        v.finish()?;
        let page = Page::parse(
            req.page_size,
            &req.page_token,
            &format!("{as_of}/{window}/{member:?}/{segment:?}"),
        )?;
        let positions = self.app.recent_freshness().await?;
        let (all, _) = self.app.rfm(as_of, window).await?;
        let selected: Vec<_> = all
            .into_iter()
            .filter(|m| member.as_ref().is_none_or(|id| &m.member == id))
            .filter(|m| segment.is_none_or(|s| m.score.segment == s))
            .filter(|m| page.after.as_ref().is_none_or(|after| &m.member > after))
            .take(page.fetch_limit() as usize)
            .collect();
        if let Some(id) = &member
            && selected.is_empty()
            && page.after.is_none()
        {
            return Err(ServiceError::not_found("member", format!("members/{id}")).into());
        }
        let (members, next_page_token) = page.finish(selected, |m| m.member.clone());
        ok(pb::ListMemberRfmResponse {
            members: members
                .into_iter()
                .map(|m| pb::MemberRfm {
                    member_id: m.member,
                    recency_days: m.recency_days,
                    frequency: m.frequency,
                    monetary_minor: m.monetary,
                    r_score: i32::from(m.score.r),
                    f_score: i32::from(m.score.f),
                    m_score: i32::from(m.score.m),
                    segment: m.score.segment.as_str().to_owned(),
                    cycle_days: m.cycle_days.unwrap_or(0.0),
                    next_purchase_time: m.next_purchase.and_then(ts),
                })
                .collect(),
            next_page_token,
            freshness: freshness(positions),
        })
    }

    async fn get_rfm_distribution(&self, request: Request<pb::GetRfmDistributionRequest>) -> Rpc<pb::RfmDistribution> {
        authorise(&request, READ)?;
        let req = request.into_inner();
        let mut v = Violations::new();
        let as_of = parse::as_of(&mut v, &req.as_of_time);
        let window = parse::window_days(&mut v, "window_days", req.window_days, 365);
        v.finish()?;
        let positions = self.app.recent_freshness().await?;
        let (segments, means) = self.app.rfm_distribution(as_of, window).await?;
        ok(pb::RfmDistribution {
            segments: segments
                .into_iter()
                .map(|(s, members, monetary)| pb::SegmentCount {
                    segment: s.as_str().to_owned(),
                    members,
                    monetary_minor: monetary,
                })
                .collect(),
            mean_r_score: means.0,
            mean_f_score: means.1,
            mean_m_score: means.2,
            freshness: freshness(positions),
        })
    }

    async fn get_pyramid(&self, request: Request<pb::GetPyramidRequest>) -> Rpc<pb::Pyramid> {
        authorise(&request, READ)?;
        let period = parse::only_period(&request.get_ref().period)?;
        let positions = self.app.recent_freshness().await?;
        let layers = self.app.pyramid(period).await?;
        ok(pb::Pyramid {
            layers: layers
                .into_iter()
                .map(|l| pb::PyramidLayer {
                    layer: l.name.to_owned(),
                    headcount: l.headcount,
                    share_of_customers: l.share_of_customers,
                    revenue_minor: l.revenue,
                    share_of_revenue: l.share_of_revenue,
                    orders: l.orders,
                    average_order_value_minor: l.aov,
                })
                .collect(),
            freshness: freshness(positions),
        })
    }

    async fn get_member_stats(&self, request: Request<pb::GetMemberStatsRequest>) -> Rpc<pb::MemberStats> {
        authorise(&request, READ)?;
        let period = parse::only_period(&request.get_ref().period)?;
        let positions = self.app.recent_freshness().await?;
        let s = self.app.member_stats(period).await?;
        ok(pb::MemberStats {
            registered: s.registered,
            registered_in_period: s.registered_in_period,
            activated: s.activated,
            purchasing: s.purchasing,
            marketable: s.marketable,
            daily_active: s.daily,
            weekly_active: s.weekly,
            monthly_active: s.monthly,
            freshness: freshness(positions),
        })
    }

    async fn get_lifecycle(&self, request: Request<pb::GetLifecycleRequest>) -> Rpc<pb::Lifecycle> {
        authorise(&request, READ)?;
        let req = request.into_inner();
        let (period, w) = parse::period_window(&req.period, req.window_days, 90)?;
        let positions = self.app.recent_freshness().await?;
        let l = self.app.lifecycle(period, w).await?;
        ok(pb::Lifecycle {
            distribution: l
                .distribution
                .into_iter()
                .map(|(s, n)| pb::LifecycleCount {
                    state: s.as_str().to_owned(),
                    members: n,
                })
                .collect(),
            flows: l
                .flows
                .into_iter()
                .map(|(a, b, n)| pb::LifecycleFlow {
                    from_state: a.as_str().to_owned(),
                    to_state: b.as_str().to_owned(),
                    members: n,
                    direction: crate::domain::lifecycle::direction(a, b).to_owned(),
                })
                .collect(),
            freshness: freshness(positions),
        })
    }

    async fn get_stickiness(&self, request: Request<pb::GetStickinessRequest>) -> Rpc<pb::Stickiness> {
        authorise(&request, READ)?;
        let req = request.into_inner();
        let (period, w) = parse::period_window(&req.period, req.window_days, 90)?;
        let positions = self.app.recent_freshness().await?;
        let s = self.app.stickiness(period, w).await?;
        ok(pb::Stickiness {
            repeat_purchase_rate: s.repeat_rate,
            active_arpu_minor: s.active_arpu,
            churn_rate: s.churn_rate,
            cohorts: s
                .cohorts
                .into_iter()
                .map(|c| pb::CohortRetention {
                    cohort: c.month,
                    customers: c.customers,
                    retention: c.retention,
                })
                .collect(),
            freshness: freshness(positions),
            wake_up: Some(convert::win_back(s.wake_up)),
            wake_up_control: Some(convert::win_back(s.wake_up_control)),
            reactivation: Some(convert::win_back(s.reactivation)),
            reactivation_control: Some(convert::win_back(s.reactivation_control)),
        })
    }

    async fn list_overdue_members(
        &self,
        request: Request<pb::ListOverdueMembersRequest>,
    ) -> Rpc<pb::ListOverdueMembersResponse> {
        reader(&request)?.require_member_level()?;
        let req = request.into_inner();
        let mut v = Violations::new();
        let as_of = parse::as_of(&mut v, &req.as_of_time);
        let factor = if req.factor == 0.0 {
            self.app.settings.analytics.overdue_factor
        } else if req.factor.is_finite() && (1.0..=100.0).contains(&req.factor) {
            req.factor
        } else {
            v.add("factor", "between 1 and 100");
            1.5
        };
        v.finish()?;
        let page = Page::parse(req.page_size, &req.page_token, &format!("{as_of}/{factor}"))?;
        let positions = self.app.recent_freshness().await?;
        let selected: Vec<_> = self
            .app
            .overdue(as_of, factor)
            .await?
            .into_iter()
            .filter(|o| page.after.as_ref().is_none_or(|after| &o.member > after))
            .take(page.fetch_limit() as usize)
            .collect();
        let (members, next_page_token) = page.finish(selected, |o| o.member.clone());
        ok(pb::ListOverdueMembersResponse {
            members: members
                .into_iter()
                .map(|o| pb::OverdueMember {
                    member_id: o.member,
                    cycle_days: o.cycle_days,
                    days_since_last: o.days_since_last,
                    next_purchase_time: ts(o.next),
                })
                .collect(),
            next_page_token,
            freshness: freshness(positions),
        })
    }

    async fn get_satisfaction(&self, request: Request<pb::GetSatisfactionRequest>) -> Rpc<pb::Satisfaction> {
        let scope = reader(&request)?;
        let (period, dim, key) = parse::satisfaction(request.get_ref())?;
        scope.require_dimension(&dim, &key)?;
        let positions = self.app.recent_freshness().await?;
        let s = self.app.satisfaction(period, &dim, &key).await?;
        ok(pb::Satisfaction {
            ratings: s.ratings,
            average_rating: s.average_rating,
            respondents: s.nps.respondents,
            promoters: s.nps.promoters,
            detractors: s.nps.detractors,
            nps: s.nps.score,
            freshness: freshness(positions),
        })
    }

    async fn get_customer_value(&self, request: Request<pb::GetCustomerValueRequest>) -> Rpc<pb::CustomerValue> {
        authorise(&request, READ)?;
        let period = parse::only_period(&request.get_ref().period)?;
        let positions = self.app.recent_freshness().await?;
        let channels = self.app.customer_value(period).await?;
        let rules = &self.app.settings.analytics;
        ok(pb::CustomerValue {
            channels: channels
                .into_iter()
                .map(|c| pb::ChannelValue {
                    channel: c.channel,
                    customers: c.customers,
                    average_order_value_minor: c.aov,
                    purchases_per_year: c.purchases_per_year,
                    clv_minor: c.clv,
                    return_rate: c.return_rate,
                    cac_minor: c.cac,
                    effective_cac_minor: c.effective_cac,
                    cac_to_clv: c.cac_to_clv,
                })
                .collect(),
            gross_margin: rules.gross_margin,
            lifetime_years: rules.lifetime_years,
            freshness: freshness(positions),
        })
    }

    async fn get_store_funnel(&self, request: Request<pb::GetStoreFunnelRequest>) -> Rpc<pb::StoreFunnel> {
        let scope = reader(&request)?;
        let req = request.get_ref();
        let (period, store) = parse::store_period(&req.period, &req.store)?;
        scope.require_store(&store)?;
        let positions = self.app.recent_freshness().await?;
        let f = self.app.store_funnel(period, &store).await?;
        ok(pb::StoreFunnel {
            passed_by: f.passed_by,
            entered: f.entered,
            entry_rate: f.entry_rate,
            pass_through: place_rates(f.pass_through),
            upstairs: place_rates(f.upstairs),
            dwell: place_rates(f.dwell),
            purchase: place_rates(f.purchase),
            touch_rate: f.touch_rate,
            try_on_rate: f.try_on_rate,
            receipts: f.receipts,
            average_transaction_seconds: f.average_transaction_seconds,
            average_reception_seconds: f.average_reception_seconds,
            freshness: freshness(positions),
        })
    }

    async fn list_sku_flags(&self, request: Request<pb::ListSkuFlagsRequest>) -> Rpc<pb::ListSkuFlagsResponse> {
        let scope = reader(&request)?;
        let req = request.into_inner();
        let mut v = Violations::new();
        let period = parse::period(&mut v, "period", &req.period);
        let store = v.text("store", &req.store, crate::domain::touchpoint::MAX_TEXT, true);
        let top = parse::share(&mut v, "top_share", req.top_share, 0.1);
        let low = parse::share(&mut v, "low_factor", req.low_factor, 0.5);
        v.finish()?;
        scope.require_store(&store)?;
        let period = period.ok_or_else(|| ServiceError::invalid("period", "required"))?;
        let positions = self.app.recent_freshness().await?;
        let skus = self.app.sku_flags(period, &store, top, low).await?;
        ok(pb::ListSkuFlagsResponse {
            skus: skus
                .into_iter()
                .filter(|f| !req.flagged_only || f.try_on_flag || f.touch_flag)
                .map(|f| pb::SkuFlags {
                    sku_code: f.sku,
                    triers: f.triers,
                    try_on_buyers: f.try_on_buyers,
                    try_on_rate: f.try_on_rate,
                    try_on_conversion: f.try_on_conversion,
                    touchers: f.touchers,
                    touch_buyers: f.touch_buyers,
                    touch_rate: f.touch_rate,
                    touch_conversion: f.touch_conversion,
                    try_on_flag: f.try_on_flag,
                    touch_flag: f.touch_flag,
                })
                .collect(),
            freshness: freshness(positions),
        })
    }

    async fn list_staff_metrics(
        &self,
        request: Request<pb::ListStaffMetricsRequest>,
    ) -> Rpc<pb::ListStaffMetricsResponse> {
        let scope = reader(&request)?;
        let req = request.get_ref();
        let (period, store) = parse::store_period(&req.period, &req.store)?;
        scope.require_store(&store)?;
        let positions = self.app.recent_freshness().await?;
        let staff = self.app.staff(period, &store).await?;
        ok(pb::ListStaffMetricsResponse {
            staff: staff
                .into_iter()
                .map(|s| pb::StaffMetrics {
                    staff_id: s.staff,
                    steps: s.steps,
                    customers_served: s.served,
                    products_shown: s.shown,
                    try_ons_given: s.try_ons,
                    receipts: s.receipts,
                    sales_minor: s.sales,
                    conversion: s.conversion,
                })
                .collect(),
            freshness: freshness(positions),
        })
    }

    async fn get_online_funnel(&self, request: Request<pb::GetOnlineFunnelRequest>) -> Rpc<pb::OnlineFunnel> {
        authorise(&request, READ)?;
        let period = parse::only_period(&request.get_ref().period)?;
        let positions = self.app.recent_freshness().await?;
        let f = self.app.online_funnel(period).await?;
        ok(pb::OnlineFunnel {
            reach: f.reach,
            visits: f.visits,
            effective_entry_rate: f.effective_entry_rate,
            home_page_visits: f.home_visits,
            average_depth: f.average_depth,
            bounce_rate: f.bounce_rate,
            inquiries: f.inquiries,
            add_to_carts: f.add_to_carts,
            add_to_cart_conversion: f.add_to_cart_conversion,
            paid_orders: f.paid_orders,
            payment_conversion: f.payment_conversion,
            repurchase_rate: f.repurchase_rate,
            freshness: freshness(positions),
        })
    }

    async fn list_product_classes(
        &self,
        request: Request<pb::ListProductClassesRequest>,
    ) -> Rpc<pb::ListProductClassesResponse> {
        authorise(&request, READ)?;
        let req = request.get_ref();
        let mut v = Violations::new();
        let period = parse::period(&mut v, "period", &req.period);
        let category = v.text("category", &req.category, 200, true);
        v.finish()?;
        let period = period.ok_or_else(|| ServiceError::invalid("period", "required"))?;
        let positions = self.app.recent_freshness().await?;
        let (classes, median_ctr, median_units) = self.app.product_classes(period, &category).await?;
        ok(pb::ListProductClassesResponse {
            products: classes
                .into_iter()
                .map(|c| pb::ProductClass {
                    sku_code: c.sku,
                    click_through_rate: c.ctr,
                    units: c.units,
                    class: c.class.to_owned(),
                })
                .collect(),
            median_click_through_rate: median_ctr,
            median_units,
            freshness: freshness(positions),
        })
    }

    async fn get_goods_report(&self, request: Request<pb::GetGoodsReportRequest>) -> Rpc<pb::GoodsReport> {
        authorise(&request, READ)?;
        let req = request.get_ref();
        let mut v = Violations::new();
        let as_of = parse::as_of(&mut v, &req.as_of_time);
        let slow = parse::window_days(&mut v, "slow_days", req.slow_days, 30);
        let warehouse = v.text("warehouse", &req.warehouse, crate::domain::touchpoint::MAX_TEXT, false);
        v.finish()?;
        let positions = self.app.recent_freshness().await?;
        let (outs, slow) = self.app.goods(as_of, slow, &warehouse).await?;
        let lines = |lines: Vec<crate::app::kpis::GoodsLine>| {
            lines
                .into_iter()
                .map(|l| pb::GoodsLine {
                    sku_code: l.sku,
                    warehouse_code: l.warehouse,
                    sellable: l.sellable,
                    last_sale_time: l.last_sale.and_then(ts),
                })
                .collect()
        };
        ok(pb::GoodsReport {
            stock_outs: lines(outs),
            slow_movers: lines(slow),
            freshness: freshness(positions),
        })
    }

    async fn list_target_attainment(
        &self,
        request: Request<pb::ListTargetAttainmentRequest>,
    ) -> Rpc<pb::ListTargetAttainmentResponse> {
        authorise(&request, READ)?;
        let req = request.get_ref();
        let mut v = Violations::new();
        let as_of = parse::as_of(&mut v, &req.as_of_time);
        let kind = if req.subject_kind.is_empty() {
            "partner"
        } else {
            req.subject_kind.as_str()
        };
        if !matches!(kind, "partner" | "rep") {
            v.add("subject_kind", "\"partner\" or \"rep\"");
        }
        if !matches!(req.period_kind.as_str(), "" | "month" | "quarter" | "year") {
            v.add("period_kind", "\"month\", \"quarter\", \"year\" or empty");
        }
        let partner = v.text("partner", &req.partner, crate::domain::touchpoint::MAX_TEXT, false);
        v.finish()?;
        let positions = self.app.recent_freshness().await?;
        let targets = self
            .app
            .target_standings(as_of, kind, &req.period_kind, &partner)
            .await?;
        ok(pb::ListTargetAttainmentResponse {
            targets: targets
                .into_iter()
                .map(|t| pb::TargetAttainment {
                    target_id: t.target_id,
                    subject_kind: t.subject_kind,
                    partner: t.partner,
                    sales_rep: t.rep,
                    level: t.level,
                    period_kind: t.period_kind,
                    period: Some(pb::Period {
                        start_time: ts(t.start),
                        end_time: ts(t.end),
                    }),
                    amount_minor: t.amount,
                    actual_minor: t.actual,
                    attainment: t.attainment,
                    projected_minor: t.projected,
                    projected_attainment: t.projected_attainment,
                    rank: t.rank as i32,
                    peer_count: t.peers as i32,
                    attain_time: t.attained_at.and_then(ts),
                })
                .collect(),
            freshness: freshness(positions),
        })
    }

    async fn get_lead_conversion(&self, request: Request<pb::GetLeadConversionRequest>) -> Rpc<pb::LeadConversion> {
        authorise(&request, READ)?;
        let (period, partner) = parse::partner_period(&request.get_ref().period, &request.get_ref().partner)?;
        let positions = self.app.recent_freshness().await?;
        let (total, partners) = self.app.lead_conversion(period, &partner).await?;
        ok(pb::LeadConversion {
            total: Some(convert::leads(total)),
            partners: partners.into_iter().map(convert::leads).collect(),
            freshness: freshness(positions),
        })
    }

    async fn get_pipeline_conversion(
        &self,
        request: Request<pb::GetPipelineConversionRequest>,
    ) -> Rpc<pb::PipelineConversion> {
        authorise(&request, READ)?;
        let (period, partner) = parse::partner_period(&request.get_ref().period, &request.get_ref().partner)?;
        let positions = self.app.recent_freshness().await?;
        let stages = self.app.pipeline_conversion(period, &partner).await?;
        ok(pb::PipelineConversion {
            stages: stages
                .into_iter()
                .map(|s| pb::StageConversion {
                    stage: s.stage,
                    reached: s.reached,
                    advanced: s.advanced,
                    lost: s.lost,
                    conversion: s.conversion,
                    average_days: s.average_days,
                })
                .collect(),
            freshness: freshness(positions),
        })
    }
}

#[derive(Debug, Clone)]
pub(crate) struct TouchpointApi {
    app: Arc<App>,
}

impl TouchpointApi {
    pub(crate) fn new(app: Arc<App>) -> Self {
        Self { app }
    }
}

fn check_batch(field: &str, len: usize) -> ServiceResult<()> {
    if len > MAX_BATCH {
        return Err(ServiceError::invalid(field, format!("at most {MAX_BATCH} per message")));
    }
    Ok(())
}

#[tonic::async_trait]
impl TouchpointService for TouchpointApi {
    async fn ingest_touchpoints(
        &self,
        request: Request<pb::IngestTouchpointsRequest>,
    ) -> Rpc<pb::IngestTouchpointsResponse> {
        authorise(&request, WRITE)?;
        let req = request.into_inner();
        check_batch("touchpoints", req.touchpoints.len())?;
        let raws = req.touchpoints.into_iter().map(parse::touchpoint).collect();
        let now = chrono::Utc::now().timestamp();
        ok(outcome(self.app.ingest(raws, 0, now).await?))
    }

    async fn stream_touchpoints(
        &self,
        request: Request<Streaming<pb::StreamTouchpointsRequest>>,
    ) -> Rpc<pb::IngestTouchpointsResponse> {
        authorise(&request, WRITE)?;
        let mut stream = request.into_inner();
        let mut total = Outcome::default();
        let mut offset = 0;
        // Each message is stored when it arrives: what was stored before a
        // failure stays stored, and a retry of the stream is deduplicated by id.
        while let Some(message) = stream.message().await? {
            check_batch("touchpoints", message.touchpoints.len())?;
            let n = message.touchpoints.len();
            let raws = message.touchpoints.into_iter().map(parse::touchpoint).collect();
            let now = chrono::Utc::now().timestamp();
            total.merge(self.app.ingest(raws, offset, now).await?);
            offset += n;
        }
        ok(outcome(total))
    }
}

#[derive(Debug, Clone)]
pub(crate) struct AdminApi {
    app: Arc<App>,
}

impl AdminApi {
    pub(crate) fn new(app: Arc<App>) -> Self {
        Self { app }
    }
}

#[tonic::async_trait]
impl AnalyticsAdminService for AdminApi {
    async fn set_acquisition_cost(&self, request: Request<pb::SetAcquisitionCostRequest>) -> Rpc<pb::AcquisitionCost> {
        authorise(&request, ADMIN)?;
        let req = request.into_inner();
        let mut v = Violations::new();
        let channel = v.text("channel", &req.channel, 64, true);
        if !(0..=retail_kit::money::MAX_AMOUNT_MINOR).contains(&req.cac_minor) {
            v.add("cac_minor", "between 0 and the suite's amount bound");
        }
        v.finish()?;
        let now = chrono::Utc::now().timestamp();
        self.app.set_acquisition_cost(&channel, req.cac_minor, now).await?;
        ok(pb::AcquisitionCost {
            channel,
            cac_minor: req.cac_minor,
            update_time: ts(now),
        })
    }

    async fn rebuild_projections(
        &self,
        request: Request<pb::RebuildProjectionsRequest>,
    ) -> Rpc<pb::RebuildProjectionsResponse> {
        authorise(&request, ADMIN)?;
        let replayed = self.app.rebuild().await?;
        ok(pb::RebuildProjectionsResponse {
            events_replayed: replayed as i64,
            freshness: freshness(self.app.recent_freshness().await?),
        })
    }

    async fn import_events(&self, request: Request<pb::ImportEventsRequest>) -> Rpc<pb::ImportEventsResponse> {
        authorise(&request, ADMIN)?;
        let events = request.into_inner().events;
        check_batch("events", events.len())?;
        let mut v = Violations::new();
        for (i, e) in events.iter().enumerate() {
            if e.position == 0 {
                v.add(format!("events[{i}].position"), "must be positive");
            }
            if e.r#type.is_empty() || e.payload.is_none() {
                v.add(format!("events[{i}].payload"), "type and payload are required");
            }
        }
        v.finish()?;
        let (applied, position) = self.app.import(events).await?;
        ok(pb::ImportEventsResponse {
            applied: applied as i64,
            position,
        })
    }
}
