//! Coupons: created and disabled by staff, codes issued to members, priced by quotes
//! ([`App::apply_coupon`]) and redeemed for orders. A redemption is one per order
//! id (a retry answers the first), and the use it takes is one conditional update
//! of the code's row (`used_count < usage_cap`), so concurrent orders never use a
//! code more often than its cap.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use retail_kit::convert::now;
use retail_kit::error::{ServiceError, ServiceResult, Violations};
use retail_kit::idempotency::{self, IdempotencyKey};
use retail_kit::paging::Page;

use super::App;
use super::quotes::{AppliedCoupon, CouponAsk, QuotedLine};
use crate::domain::codes::{Channel, OrderId, SkuCode};
use crate::domain::coupons::{self as rules, CodeUse, CouponKind, CouponRules, Line, NotApplicable, Off};
use crate::store::coupons::{self as db, redemption_state};
use crate::store::{coupon, coupon_code, coupon_redemption};

/// A coupon to create, parsed.
#[derive(Debug, Clone)]
pub(crate) struct NewCoupon {
    pub(crate) display_name: String,
    pub(crate) kind: CouponKind,
    /// A shared coupon's code; `None`: one is generated.
    pub(crate) code: Option<String>,
    pub(crate) off: Off,
    pub(crate) starts_at: DateTime<Utc>,
    pub(crate) ends_at: DateTime<Utc>,
    /// As given, to name a SKU that does not exist by its position.
    pub(crate) skus: Vec<SkuCode>,
    pub(crate) categories: Vec<String>,
    pub(crate) channels: Vec<Channel>,
    pub(crate) min_order: Option<(String, i64)>,
    pub(crate) usage_cap: i64,
}

/// A coupon with its shared code and its uses.
#[derive(Debug, Clone)]
pub(crate) struct CouponView {
    pub(crate) coupon: coupon::Model,
    /// A shared coupon's code; empty for a single-use one.
    pub(crate) code: String,
    pub(crate) used: i64,
    pub(crate) issued: i64,
}

fn json_list(raw: &str) -> ServiceResult<Vec<String>> {
    serde_json::from_str(raw).map_err(|e| ServiceError::internal(anyhow::Error::new(e).context("stored coupon scope")))
}

fn to_json(list: &[String]) -> ServiceResult<String> {
    serde_json::to_string(list).map_err(ServiceError::internal)
}

/// A coupon's kind as stored.
pub(crate) fn kind_of(c: &coupon::Model) -> ServiceResult<CouponKind> {
    CouponKind::parse(&c.kind)
        .ok_or_else(|| ServiceError::internal(anyhow::anyhow!("unknown stored coupon kind {:?}", c.kind)))
}

/// The coupon's rules as stored.
pub(crate) fn rules_of(c: &coupon::Model) -> ServiceResult<CouponRules> {
    let off = if c.percent_off_bp > 0 {
        Off::Percent(c.percent_off_bp as u32)
    } else {
        Off::Amount {
            currency: c.currency.clone(),
            minor: c.amount_off_minor,
        }
    };
    let channels = json_list(&c.channels_json)?
        .iter()
        .map(|name| {
            Channel::parse(name)
                .ok_or_else(|| ServiceError::internal(anyhow::anyhow!("unknown stored coupon channel {name:?}")))
        })
        .collect::<ServiceResult<_>>()?;
    Ok(CouponRules {
        off,
        starts_at: c.starts_at,
        ends_at: c.ends_at,
        skus: json_list(&c.skus_json)?,
        categories: json_list(&c.categories_json)?,
        channels,
        min_order: (c.min_order_minor > 0).then(|| (c.currency.clone(), c.min_order_minor)),
        disabled: c.disabled_at.is_some(),
    })
}

/// A new code: 12 characters of 0-9 and A-F from a random UUID (48 bits).
fn new_code() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_ascii_uppercase()
}

fn not_found(id: &str) -> ServiceError {
    ServiceError::not_found("coupon", format!("coupons/{id}"))
}

fn not_applicable(why: NotApplicable) -> ServiceError {
    ServiceError::FailedPrecondition(why.to_string())
}

impl App {
    /// Creates a coupon. A SKU or category that names nothing is INVALID_ARGUMENT on
    /// its field; a shared code already taken ALREADY_EXISTS. Idempotent by `key`.
    pub(crate) async fn create_coupon<R>(
        &self,
        key: Option<&IdempotencyKey>,
        input: NewCoupon,
        render: fn(&CouponView) -> R,
    ) -> ServiceResult<R>
    where
        R: prost::Message + Default + Clone + Send + 'static,
    {
        let mut v = Violations::new();
        let codes: Vec<String> = input.skus.iter().map(|c| c.as_str().to_owned()).collect();
        let known = db::known_skus(&self.db, &codes).await?;
        for (i, code) in codes.iter().enumerate() {
            if !known.contains(code) {
                v.add(format!("coupon.skus[{i}]"), "no such SKU");
            }
        }
        for (i, category) in input.categories.iter().enumerate() {
            if !db::category_exists(&self.db, category).await? {
                v.add(format!("coupon.categories[{i}]"), "no product is in this category");
            }
        }
        v.finish()?;
        let dedup = |list: Vec<String>| {
            let mut out: Vec<String> = Vec::with_capacity(list.len());
            for item in list {
                if !out.contains(&item) {
                    out.push(item);
                }
            }
            out
        };
        let mut channels: Vec<String> = input.channels.iter().map(|c| c.as_str().to_owned()).collect();
        channels.sort();
        let (percent, amount, currency) = match &input.off {
            Off::Percent(bp) => (
                *bp as i32,
                0,
                input.min_order.as_ref().map(|m| m.0.clone()).unwrap_or_default(),
            ),
            Off::Amount { currency, minor } => (0, *minor, currency.clone()),
        };
        let at = now();
        let model = coupon::Model {
            id: uuid::Uuid::now_v7().to_string(),
            display_name: input.display_name,
            kind: input.kind.as_str().to_owned(),
            percent_off_bp: percent,
            amount_off_minor: amount,
            currency,
            starts_at: input.starts_at,
            ends_at: input.ends_at,
            skus_json: to_json(&dedup(codes))?,
            categories_json: to_json(&dedup(input.categories))?,
            channels_json: to_json(&dedup(channels))?,
            min_order_minor: input.min_order.map(|m| m.1).unwrap_or(0),
            usage_cap: if input.kind == CouponKind::Shared {
                input.usage_cap
            } else {
                0
            },
            disabled_at: None,
            created_at: at,
        };
        let code = (input.kind == CouponKind::Shared).then(|| coupon_code::Model {
            code: input.code.clone().unwrap_or_else(new_code),
            coupon_id: model.id.clone(),
            member_id: String::new(),
            usage_cap: input.usage_cap,
            used_count: 0,
            created_at: at,
        });
        if let Some(c) = &code
            && db::find_code(&self.db, &c.code).await?.is_some()
        {
            return Err(ServiceError::AlreadyExists(format!("coupon code {} is taken", c.code)));
        }
        idempotency::execute(&self.db, key, Clone::clone, |txn| {
            let (model, code) = (model.clone(), code.clone());
            Box::pin(async move {
                db::insert_coupon(txn, model.clone(), code.clone()).await?;
                Ok(render(&CouponView {
                    coupon: model,
                    code: code.map(|c| c.code).unwrap_or_default(),
                    used: 0,
                    issued: 0,
                }))
            })
        })
        .await
    }

    async fn view(&self, coupon: coupon::Model, usage: &HashMap<String, (i64, i64)>) -> ServiceResult<CouponView> {
        let (used, issued) = usage.get(&coupon.id).copied().unwrap_or((0, 0));
        let code = if kind_of(&coupon)? == CouponKind::Shared {
            db::codes_of_members(&self.db, &coupon.id, &[String::new()])
                .await?
                .into_iter()
                .next()
                .map(|c| c.code)
                .unwrap_or_default()
        } else {
            String::new()
        };
        let issued = if code.is_empty() { issued } else { 0 };
        Ok(CouponView {
            coupon,
            code,
            used,
            issued,
        })
    }

    pub(crate) async fn coupon(&self, id: &str) -> ServiceResult<CouponView> {
        let coupon = db::find_coupon(&self.db, id).await?.ok_or_else(|| not_found(id))?;
        let usage = db::usage(&self.db, std::slice::from_ref(&coupon.id)).await?;
        self.view(coupon, &usage).await
    }

    /// Coupons newest first; returns the page and the next page's token.
    pub(crate) async fn coupons(&self, page: &Page) -> ServiceResult<(Vec<CouponView>, String)> {
        let rows = db::list_coupons(&self.db, page).await?;
        let (rows, next) = page.finish(rows, |c| c.id.clone());
        let ids: Vec<String> = rows.iter().map(|c| c.id.clone()).collect();
        let usage = db::usage(&self.db, &ids).await?;
        let mut views = Vec::with_capacity(rows.len());
        for row in rows {
            views.push(self.view(row, &usage).await?);
        }
        Ok((views, next))
    }

    /// Disables a coupon (disabling again changes nothing).
    pub(crate) async fn disable_coupon(&self, id: &str) -> ServiceResult<CouponView> {
        if db::find_coupon(&self.db, id).await?.is_none() {
            return Err(not_found(id));
        }
        let id_owned = id.to_owned();
        idempotency::transaction(&self.db, |txn| {
            let id = id_owned.clone();
            Box::pin(async move { db::disable(txn, &id, now()).await })
        })
        .await?;
        self.coupon(id).await
    }

    /// One code of a single-use coupon per member, in the order given; a member
    /// with a code keeps it. FAILED_PRECONDITION for a shared or disabled coupon.
    pub(crate) async fn issue_codes(&self, id: &str, members: &[String]) -> ServiceResult<Vec<(String, String)>> {
        let coupon = db::find_coupon(&self.db, id).await?.ok_or_else(|| not_found(id))?;
        if kind_of(&coupon)? != CouponKind::SingleUse {
            return Err(ServiceError::FailedPrecondition(
                "codes are issued only for single-use coupons; a shared coupon has one code".into(),
            ));
        }
        if coupon.disabled_at.is_some() {
            return Err(not_applicable(NotApplicable::Disabled));
        }
        let at = now();
        let codes = idempotency::transaction(&self.db, |txn| {
            let (id, members) = (id.to_owned(), members.to_vec());
            Box::pin(async move {
                let have = db::codes_of_members(txn, &id, &members).await?;
                let new: Vec<coupon_code::Model> = members
                    .iter()
                    .filter(|m| !have.iter().any(|c| &c.member_id == *m))
                    .map(|m| coupon_code::Model {
                        code: new_code(),
                        coupon_id: id.clone(),
                        member_id: m.clone(),
                        usage_cap: 1,
                        used_count: 0,
                        created_at: at,
                    })
                    .collect();
                db::insert_codes(txn, new).await?;
                db::codes_of_members(txn, &id, &members).await
            })
        })
        .await?;
        let by_member: HashMap<&str, &str> = codes.iter().map(|c| (c.member_id.as_str(), c.code.as_str())).collect();
        members
            .iter()
            .map(|m| {
                by_member
                    .get(m.as_str())
                    .map(|code| (m.clone(), (*code).to_owned()))
                    .ok_or_else(|| ServiceError::Aborted("codes were being issued concurrently; retry".into()))
            })
            .collect()
    }

    /// The code and its coupon, as a quote or a redemption at `at` may use it.
    async fn usable_code(
        &self,
        code: &str,
        member: Option<&str>,
        at: DateTime<Utc>,
    ) -> ServiceResult<(coupon_code::Model, coupon::Model, CouponRules)> {
        let row = db::find_code(&self.db, code)
            .await?
            .ok_or_else(|| ServiceError::not_found("coupon code", code.to_owned()))?;
        let coupon = db::find_coupon(&self.db, &row.coupon_id)
            .await?
            .ok_or_else(|| ServiceError::internal(anyhow::anyhow!("a coupon code without its coupon")))?;
        let rules = rules_of(&coupon)?;
        let owner = (!row.member_id.is_empty()).then_some(row.member_id.as_str());
        rules::usable(
            &rules,
            &CodeUse {
                owner,
                used: row.used_count,
                cap: row.usage_cap,
            },
            member,
            at,
        )
        .map_err(not_applicable)?;
        Ok((row, coupon, rules))
    }

    /// Applies a coupon to quoted lines: each line's share, and the coupon applied.
    pub(crate) async fn apply_coupon(
        &self,
        ask: &CouponAsk,
        channel: Channel,
        currency: &str,
        at: DateTime<Utc>,
        lines: &mut [QuotedLine],
    ) -> ServiceResult<AppliedCoupon> {
        let (row, coupon, rules) = self.usable_code(&ask.code, ask.member.as_deref(), at).await?;
        let categories = if rules.categories.is_empty() {
            HashMap::new()
        } else {
            let codes: Vec<String> = lines.iter().map(|l| l.sku.as_str().to_owned()).collect();
            db::sku_categories(&self.db, &codes).await?
        };
        let scoped: Vec<Line> = lines
            .iter()
            .map(|l| Line {
                in_scope: rules::in_scope(
                    &rules,
                    l.sku.as_str(),
                    categories.get(l.sku.as_str()).map(String::as_str).unwrap_or(""),
                ),
                total_minor: l.total_minor,
            })
            .collect();
        let discounts = rules::discounts(&rules, channel, currency, &scoped).map_err(not_applicable)?;
        let mut total = 0i64;
        for (line, off) in lines.iter_mut().zip(&discounts) {
            line.coupon_minor = *off;
            line.total_minor -= off;
            total = total.saturating_add(*off);
        }
        Ok(AppliedCoupon {
            code: row.code,
            coupon_id: coupon.id,
            display_name: coupon.display_name,
            percent_off_bp: match rules.off {
                Off::Percent(bp) => bp,
                Off::Amount { .. } => 0,
            },
            discount_minor: total,
        })
    }

    /// Redeems `code` for an order; see the module documentation. A retry for the
    /// same order answers the first redemption; another code for the same order is
    /// ALREADY_EXISTS; a released one FAILED_PRECONDITION.
    pub(crate) async fn redeem_coupon(
        &self,
        order_id: &OrderId,
        code: &str,
        member: Option<&str>,
    ) -> ServiceResult<coupon_redemption::Model> {
        if let Some(done) = db::find_redemption(&self.db, order_id.as_str()).await? {
            return replayed(done, code);
        }
        let at = now();
        let (row, coupon, _) = self.usable_code(code, member, at).await?;
        let model = coupon_redemption::Model {
            order_id: order_id.as_str().to_owned(),
            code: row.code.clone(),
            coupon_id: coupon.id,
            member_id: member.unwrap_or_default().to_owned(),
            state: redemption_state::ACTIVE.into(),
            created_at: at,
            updated_at: at,
        };
        let result = idempotency::transaction(&self.db, |txn| {
            let model = model.clone();
            Box::pin(async move {
                // The coupon's own state (disabled, window) was checked above; the use
                // is taken here, only if one is left.
                db::insert_redemption(txn, model.clone()).await?;
                if db::take_use(txn, &model.code).await? == 0 {
                    return Err(not_applicable(NotApplicable::UsedUp));
                }
                Ok(model)
            })
        })
        .await;
        match result {
            Ok(model) => Ok(model),
            // A twin for the same order committed first.
            Err(ServiceError::AlreadyExists(_)) => match db::find_redemption(&self.db, order_id.as_str()).await? {
                Some(done) => replayed(done, code),
                None => Err(ServiceError::Aborted("the redemption raced another; retry".into())),
            },
            Err(err) => Err(err),
        }
    }

    /// Releases an order's redemption and gives its use back; a released one
    /// answers as it is. NOT_FOUND when the order redeemed nothing.
    pub(crate) async fn release_coupon(&self, order_id: &OrderId) -> ServiceResult<coupon_redemption::Model> {
        let Some(found) = db::find_redemption(&self.db, order_id.as_str()).await? else {
            return Err(ServiceError::not_found(
                "coupon redemption",
                order_id.as_str().to_owned(),
            ));
        };
        if found.state == redemption_state::ACTIVE {
            idempotency::transaction(&self.db, |txn| {
                let found = found.clone();
                Box::pin(async move {
                    // Only the update that turns it released gives the use back.
                    if db::release_redemption(txn, &found.order_id, now()).await? == 1 {
                        db::give_back_use(txn, &found.code).await?;
                    }
                    Ok(())
                })
            })
            .await?;
        }
        db::find_redemption(&self.db, order_id.as_str())
            .await?
            .ok_or_else(|| ServiceError::not_found("coupon redemption", order_id.as_str().to_owned()))
    }
}

/// An order's earlier redemption, as a retry of `code` sees it.
fn replayed(done: coupon_redemption::Model, code: &str) -> ServiceResult<coupon_redemption::Model> {
    if done.code != code {
        return Err(ServiceError::AlreadyExists(
            "the order has redeemed another coupon code".into(),
        ));
    }
    if done.state != redemption_state::ACTIVE {
        return Err(ServiceError::FailedPrecondition(
            "the order's coupon redemption was released".into(),
        ));
    }
    Ok(done)
}
