//! `CouponService`: coupons (staff, `catalog.pricing.write`), codes issued to
//! members, and redemptions for orders (`inventory.reserve`, which orders holds).
//! The rules are in [`crate::domain::coupons`].

use std::sync::Arc;

use retail_kit::convert::{from_timestamp, timestamp};
use retail_kit::error::{ServiceError, ServiceResult, Violations};
use retail_kit::idempotency::IdempotencyKey;
use retail_kit::money::MAX_AMOUNT_MINOR;
use retail_kit::paging::Page;
use retail_proto::catalog as pb;
use retail_proto::catalog::coupon_service_server::CouponService;
use retail_proto::common::Money;
use tonic::Request;

use super::parse::{channel, member_name};
use super::{Rpc, authorised, ok};
use crate::app::{App, CouponView, NewCoupon, coupon_kind, coupon_rules};
use crate::domain::codes::{self, Channel, OrderId, SkuCode};
use crate::domain::coupons::{self, CouponKind, MAX_PERCENT_BP, Off};
use crate::events::money;
use crate::store::coupon_redemption;

const ADMIN: &str = "catalog.pricing.write";
/// Redemptions are held for an order like its stock.
const REDEEM: &str = "inventory.reserve";

/// Scope entries of each kind, at most.
const MAX_SCOPE: usize = 1_000;
/// Members per `IssueCouponCodes`, at most.
const MAX_ISSUE: usize = 1_000;

#[derive(Debug, Clone)]
pub(crate) struct CouponApi {
    app: Arc<App>,
}

impl CouponApi {
    pub(crate) fn new(app: Arc<App>) -> Self {
        Self { app }
    }
}

fn coupon_id(field: &str, name: &str) -> ServiceResult<String> {
    retail_kit::convert::uuid_id(name, "coupons").map_err(|e| ServiceError::invalid(field, e))
}

/// An amount of money: currency and a positive amount within the limit.
fn amount(v: &mut Violations, field: &str, m: &Money) -> (String, i64) {
    let currency = v
        .field(&format!("{field}.currency_code"), codes::currency(&m.currency_code))
        .unwrap_or_default();
    if m.amount_minor <= 0 || m.amount_minor > MAX_AMOUNT_MINOR {
        v.add(
            format!("{field}.amount_minor"),
            format!("must be positive and at most {MAX_AMOUNT_MINOR}"),
        );
    }
    (currency, m.amount_minor)
}

fn new_coupon(c: &pb::Coupon) -> ServiceResult<NewCoupon> {
    let mut v = Violations::new();
    let display_name = v.text("coupon.display_name", &c.display_name, 200, true);
    let kind = match pb::coupon::Kind::try_from(c.kind) {
        Ok(pb::coupon::Kind::SingleUse) => Some(CouponKind::SingleUse),
        Ok(pb::coupon::Kind::Shared) => Some(CouponKind::Shared),
        _ => {
            v.add("coupon.kind", "must be KIND_SINGLE_USE or KIND_SHARED");
            None
        }
    };
    let code = if c.code.is_empty() {
        None
    } else if kind == Some(CouponKind::SingleUse) {
        v.add(
            "coupon.code",
            "must be empty for a single-use coupon (codes are issued per member)",
        );
        None
    } else {
        v.field("coupon.code", coupons::code(&c.code))
    };
    match kind {
        Some(CouponKind::Shared) if c.usage_cap < 1 => v.add("coupon.usage_cap", "must be at least 1"),
        Some(CouponKind::SingleUse) if c.usage_cap != 0 => v.add(
            "coupon.usage_cap",
            "must be 0 for a single-use coupon (each code is used once)",
        ),
        _ => {}
    }
    let off = match (c.percent_off_bp, &c.amount_off) {
        (0, None) => {
            v.add(
                "coupon.percent_off_bp",
                "one of percent_off_bp and amount_off is required",
            );
            None
        }
        (_, Some(_)) if c.percent_off_bp > 0 => {
            v.add(
                "coupon.amount_off",
                "only one of percent_off_bp and amount_off may be set",
            );
            None
        }
        (bp, None) if bp > MAX_PERCENT_BP => {
            v.add(
                "coupon.percent_off_bp",
                format!("must be 1-{MAX_PERCENT_BP} basis points (at most 100 %)"),
            );
            None
        }
        (bp, None) => Some(Off::Percent(bp)),
        (_, Some(m)) => {
            let (currency, minor) = amount(&mut v, "coupon.amount_off", m);
            Some(Off::Amount { currency, minor })
        }
    };
    let min_order = c.min_order.as_ref().map(|m| amount(&mut v, "coupon.min_order", m));
    if let (Some(Off::Amount { currency, .. }), Some((min_currency, _))) = (&off, &min_order)
        && currency != min_currency
        && !currency.is_empty()
    {
        v.add("coupon.min_order.currency_code", "must be the currency of amount_off");
    }
    let start = c.start_time.as_ref().and_then(from_timestamp);
    let end = c.end_time.as_ref().and_then(from_timestamp);
    match (start, end) {
        (None, _) => v.add("coupon.start_time", "is required"),
        (_, None) => v.add("coupon.end_time", "is required"),
        (Some(a), Some(b)) if b <= a => v.add("coupon.end_time", "must be after start_time"),
        _ => {}
    }
    for (field, len) in [
        ("coupon.skus", c.skus.len()),
        ("coupon.categories", c.categories.len()),
        ("coupon.channels", c.channels.len()),
    ] {
        if len > MAX_SCOPE {
            v.add(field, format!("at most {MAX_SCOPE}"));
        }
    }
    let skus: Vec<SkuCode> = c
        .skus
        .iter()
        .take(MAX_SCOPE)
        .enumerate()
        .filter_map(|(i, name)| v.field(&format!("coupon.skus[{i}]"), SkuCode::from_resource_name(name)))
        .collect();
    let categories: Vec<String> = c
        .categories
        .iter()
        .take(MAX_SCOPE)
        .enumerate()
        .filter_map(|(i, raw)| v.field(&format!("coupon.categories[{i}]"), codes::path(raw)))
        .collect();
    let mut channels: Vec<Channel> = Vec::new();
    for (i, raw) in c.channels.iter().take(MAX_SCOPE).enumerate() {
        match channel(*raw) {
            Ok(Channel::Partner) => v.add(
                format!("coupon.channels[{i}]"),
                "coupons are for consumer channels (store, online, app)",
            ),
            Ok(ch) => channels.push(ch),
            Err(e) => v.add(format!("coupon.channels[{i}]"), e),
        }
    }
    v.finish()?;
    let (Some(kind), Some(off), Some(starts_at), Some(ends_at)) = (kind, off, start, end) else {
        return Err(ServiceError::invalid("coupon", "is incomplete"));
    };
    Ok(NewCoupon {
        display_name,
        kind,
        code,
        off,
        starts_at,
        ends_at,
        skus,
        categories,
        channels,
        min_order,
        usage_cap: c.usage_cap,
    })
}

fn coupon_to_pb(v: &CouponView) -> pb::Coupon {
    let c = &v.coupon;
    let kind = match coupon_kind(c) {
        Ok(CouponKind::SingleUse) => pb::coupon::Kind::SingleUse,
        Ok(CouponKind::Shared) => pb::coupon::Kind::Shared,
        Err(_) => pb::coupon::Kind::Unspecified,
    };
    let rules = coupon_rules(c).ok();
    let channel_of = |ch: &Channel| match ch {
        Channel::Store => pb::SalesChannel::Store,
        Channel::Online => pb::SalesChannel::Online,
        Channel::App => pb::SalesChannel::App,
        Channel::Partner => pb::SalesChannel::Partner,
    } as i32;
    pb::Coupon {
        name: format!("coupons/{}", c.id),
        display_name: c.display_name.clone(),
        kind: kind as i32,
        code: v.code.clone(),
        percent_off_bp: c.percent_off_bp.max(0) as u32,
        amount_off: (c.amount_off_minor > 0)
            .then(|| money(&c.currency, c.amount_off_minor))
            .flatten(),
        start_time: Some(timestamp(c.starts_at)),
        end_time: Some(timestamp(c.ends_at)),
        skus: rules
            .as_ref()
            .map(|r| r.skus.iter().map(|s| format!("skus/{s}")).collect())
            .unwrap_or_default(),
        categories: rules.as_ref().map(|r| r.categories.clone()).unwrap_or_default(),
        channels: rules
            .as_ref()
            .map(|r| r.channels.iter().map(channel_of).collect())
            .unwrap_or_default(),
        min_order: (c.min_order_minor > 0)
            .then(|| money(&c.currency, c.min_order_minor))
            .flatten(),
        usage_cap: c.usage_cap,
        used_count: v.used,
        issued_count: v.issued,
        disable_time: c.disabled_at.map(timestamp),
        create_time: Some(timestamp(c.created_at)),
    }
}

fn redemption_to_pb(r: &coupon_redemption::Model) -> pb::CouponRedemption {
    let state = match r.state.as_str() {
        "active" => pb::coupon_redemption::State::Active,
        "released" => pb::coupon_redemption::State::Released,
        _ => pb::coupon_redemption::State::Unspecified,
    };
    pb::CouponRedemption {
        order_id: r.order_id.clone(),
        code: r.code.clone(),
        coupon: format!("coupons/{}", r.coupon_id),
        member: if r.member_id.is_empty() {
            String::new()
        } else {
            format!("members/{}", r.member_id)
        },
        state: state as i32,
        create_time: Some(timestamp(r.created_at)),
    }
}

#[tonic::async_trait]
impl CouponService for CouponApi {
    #[tracing::instrument(skip_all)]
    async fn create_coupon(&self, request: Request<pb::CreateCouponRequest>) -> Rpc<pb::Coupon> {
        let caller = authorised(&request, ADMIN)?.subject.clone();
        let req = request.into_inner();
        let key = IdempotencyKey::from_request("catalog.CreateCoupon", &caller, &req.request_id, &req)?;
        let Some(c) = req.coupon.as_ref() else {
            return Err(ServiceError::invalid("coupon", "is required").into());
        };
        let input = new_coupon(c)?;
        ok(self.app.create_coupon(key.as_ref(), input, coupon_to_pb).await?)
    }

    async fn get_coupon(&self, request: Request<pb::GetCouponRequest>) -> Rpc<pb::Coupon> {
        authorised(&request, ADMIN)?;
        let id = coupon_id("name", &request.get_ref().name)?;
        ok(coupon_to_pb(&self.app.coupon(&id).await?))
    }

    async fn list_coupons(&self, request: Request<pb::ListCouponsRequest>) -> Rpc<pb::ListCouponsResponse> {
        authorised(&request, ADMIN)?;
        let req = request.into_inner();
        let page = Page::parse(req.page_size, &req.page_token, "coupons")?;
        let (views, next_page_token) = self.app.coupons(&page).await?;
        ok(pb::ListCouponsResponse {
            coupons: views.iter().map(coupon_to_pb).collect(),
            next_page_token,
        })
    }

    #[tracing::instrument(skip_all)]
    async fn disable_coupon(&self, request: Request<pb::DisableCouponRequest>) -> Rpc<pb::Coupon> {
        authorised(&request, ADMIN)?;
        let id = coupon_id("name", &request.get_ref().name)?;
        ok(coupon_to_pb(&self.app.disable_coupon(&id).await?))
    }

    #[tracing::instrument(skip_all)]
    async fn issue_coupon_codes(
        &self,
        request: Request<pb::IssueCouponCodesRequest>,
    ) -> Rpc<pb::IssueCouponCodesResponse> {
        authorised(&request, ADMIN)?;
        let req = request.into_inner();
        let mut v = Violations::new();
        let id = v.field("coupon", retail_kit::convert::uuid_id(&req.coupon, "coupons"));
        if req.members.is_empty() || req.members.len() > MAX_ISSUE {
            v.add("members", format!("1-{MAX_ISSUE} members"));
        }
        let mut members: Vec<String> = Vec::new();
        for (i, name) in req.members.iter().take(MAX_ISSUE).enumerate() {
            if let Some(m) = v.field(&format!("members[{i}]"), member_name(name)) {
                if members.contains(&m) {
                    v.add(format!("members[{i}]"), "is listed twice");
                } else {
                    members.push(m);
                }
            }
        }
        v.finish()?;
        let Some(id) = id else {
            return Err(ServiceError::invalid("coupon", "is required").into());
        };
        let codes = self.app.issue_codes(&id, &members).await?;
        ok(pb::IssueCouponCodesResponse {
            codes: codes
                .into_iter()
                .map(|(member, code)| pb::IssuedCouponCode {
                    member: format!("members/{member}"),
                    code,
                })
                .collect(),
        })
    }

    #[tracing::instrument(skip_all)]
    async fn redeem_coupon(&self, request: Request<pb::RedeemCouponRequest>) -> Rpc<pb::CouponRedemption> {
        authorised(&request, REDEEM)?;
        let req = request.into_inner();
        let mut v = Violations::new();
        let order = v.field("order_id", OrderId::parse(&req.order_id));
        let code = v.field("code", coupons::code(&req.code));
        let member = if req.member.is_empty() {
            None
        } else {
            v.field("member", member_name(&req.member))
        };
        v.finish()?;
        let (Some(order), Some(code)) = (order, code) else {
            return Err(ServiceError::invalid("order_id", "is required").into());
        };
        let r = self.app.redeem_coupon(&order, &code, member.as_deref()).await?;
        ok(redemption_to_pb(&r))
    }

    #[tracing::instrument(skip_all)]
    async fn release_coupon_redemption(
        &self,
        request: Request<pb::ReleaseCouponRedemptionRequest>,
    ) -> Rpc<pb::CouponRedemption> {
        authorised(&request, REDEEM)?;
        let order = OrderId::parse(&request.get_ref().order_id).map_err(|e| ServiceError::invalid("order_id", e))?;
        ok(redemption_to_pb(&self.app.release_coupon(&order).await?))
    }
}
