//! Placing an order: a saga driven by orders over membership and catalog-inventory.
//!
//! 1. Claim: a saga row keyed by the caller's request id is written before any remote
//!    step (a racing retry finds it and waits for, then replays, the first result).
//! 2. Price: the member's tier from membership, unit prices from catalog. A partner
//!    sale naming its end customer is first checked against deal registration
//!    (channel-partner configured): a customer locked to another partner is refused.
//! 3. Reserve: stock for every line, idempotent by order id, with the payment window
//!    as its TTL (a crashed saga cannot hold stock forever); then a coupon the
//!    order names is redeemed at catalog, idempotent by order id.
//! 4. Store: the order, its lines, its timeline entry and `OrderPlaced`, in one
//!    guarded write with the update that marks the saga done (only if it is still
//!    started: a saga taken over by the recovery is never stored late).
//!
//! The saga row holds only `started` until the store step: whatever the step an
//! abandoned saga stopped at, compensation releases the reservation of its order id
//! (none made counts as released), so recording each remote step would cost a
//! transaction per order and tell recovery nothing it needs.
//!
//! Any failure compensates: the saga turns `compensating` (which the recovery also
//! does for sagas whose process died), the reservation and any coupon redemption
//! are released, and the saga is `failed`. The sweeper retries releases that failed and recovers stale sagas.

use std::time::Duration;

use chrono::{DateTime, Utc};
use retail_kit::convert::now;
use retail_kit::db::GuardedWrite;
use retail_kit::error::{ServiceError, ServiceResult};
use retail_kit::idempotency;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryTrait};
use tonic::Code;

use super::{App, Caller};
use crate::domain::ids::{MemberId, SkuCode};
use crate::domain::order::{Channel, Customer};
use crate::downstream::{LineDiscount, Units, from_downstream};
use crate::events;
use crate::store::{self, OrderView, saga_state};

/// An order to place, parsed.
#[derive(Debug, Clone)]
pub struct PlaceOrder {
    /// The caller's request id, if the request is to be idempotent.
    pub request_id: Option<String>,
    /// Hash of the request, to refuse a reused request id with another request.
    pub fingerprint: Vec<u8>,
    pub member: Option<MemberId>,
    pub channel: Channel,
    /// For partner sales: the partner (a partner principal's own).
    pub partner_id: String,
    pub sales_rep: String,
    pub store: String,
    /// Each SKU once, with its units.
    pub lines: Vec<(SkuCode, i64)>,
    /// For partner sales: a special discount of the partner to use,
    /// `partners/{partner_id}/specialDiscounts/{id}`.
    pub special_discount: Option<String>,
    /// For partner sales: the end customer, if the order names one.
    pub customer: Option<Customer>,
    /// For consumer sales: a coupon code to redeem (upper-cased).
    pub coupon_code: Option<String>,
    /// For partner sales: the quote whose prices the order takes,
    /// `partners/{partner_id}/quotes/{id}`.
    pub quote: Option<String>,
}

const COMPENSATING: &str = "compensating";

impl App {
    /// Places an order; see the module documentation.
    pub async fn place(&self, caller: &Caller, input: PlaceOrder) -> ServiceResult<OrderView> {
        // A quote's order is placed by channel-partner when the quote is accepted.
        if input.quote.is_some() && caller.partner.is_some() {
            return Err(ServiceError::PermissionDenied(
                "an order from a quote is placed by accepting the quote".into(),
            ));
        }
        let request_key = input.request_id.as_ref().map(|id| format!("{}:{id}", caller.owner));
        let order_id = match self.claim(request_key.as_deref(), &input.fingerprint).await? {
            Claim::New(order_id) => order_id,
            Claim::Replay(view) => return Ok(*view),
        };
        match self.run_saga(&order_id, &input).await {
            Ok(view) => {
                self.log.committed();
                Ok(view)
            }
            Err(err) => {
                self.compensate(&order_id, &err.to_string()).await;
                Err(err)
            }
        }
    }

    async fn claim(&self, request_key: Option<&str>, fingerprint: &[u8]) -> ServiceResult<Claim> {
        let waited_since = std::time::Instant::now();
        loop {
            let order_id = store::new_id();
            let at = now();
            let row = store::saga::Model {
                order_id: order_id.clone(),
                request_key: request_key.map_or_else(|| format!("anonymous:{order_id}"), str::to_owned),
                fingerprint: fingerprint.to_vec(),
                state: saga_state::STARTED.into(),
                step: "started".into(),
                error: String::new(),
                created_at: at,
                updated_at: at,
            };
            // One statement: the unique request key settles a race between twins.
            if store::insert_saga(&self.db, row).await? {
                return Ok(Claim::New(order_id));
            }
            let Some(key) = request_key else {
                continue;
            };
            let Some(existing) = store::saga_by_key(&self.db, key).await? else {
                continue;
            };
            if existing.fingerprint != fingerprint {
                return Err(ServiceError::invalid(
                    "request_id",
                    "was already used for a different request",
                ));
            }
            match existing.state.as_str() {
                saga_state::DONE => {
                    let order = store::find_order(&self.db, &existing.order_id)
                        .await?
                        .ok_or_else(|| ServiceError::internal(anyhow::anyhow!("a finished saga has no order")))?;
                    return Ok(Claim::Replay(Box::new(store::view(&self.db, order).await?)));
                }
                saga_state::FAILED => {
                    // The earlier attempt failed and was compensated: try again.
                    store::forget_failed_saga(&self.db, &existing.order_id).await?;
                }
                _ if waited_since.elapsed() < self.settings.orders.placement_wait() => {
                    // A twin is placing this order right now: wait for its outcome.
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
                // Still unfinished (a slow downstream, or a process that died placing it
                // and whose saga the sweeper has not taken over yet): answer now, well
                // inside the request's deadline, with a status clients retry.
                _ => {
                    return Err(ServiceError::Aborted(
                        "this order is still being placed; retry with the same request id".into(),
                    ));
                }
            }
        }
    }

    async fn run_saga(&self, order_id: &str, input: &PlaceOrder) -> ServiceResult<OrderView> {
        let settings = &self.settings.orders;
        let tier = match &input.member {
            Some(member) => self
                .downstream
                .member_tier(member.as_str())
                .await
                .map_err(|s| match s.code() {
                    Code::NotFound => ServiceError::not_found("member", format!("members/{}", member.as_str())),
                    _ => from_downstream("membership", s),
                })?,
            None => String::new(),
        };
        // Deal registration: a partner sale to a customer another partner holds a
        // lock on is refused before anything is priced, reserved or used.
        if let (Channel::Partner, Some(customer)) = (input.channel, &input.customer)
            && self.downstream.checks_customer_locks()
        {
            let locked = self
                .downstream
                .customer_locked_to_other(&input.partner_id, customer)
                .await
                .map_err(|s| from_downstream("channel-partner", s))?;
            if locked {
                return Err(ServiceError::FailedPrecondition(
                    "the customer is locked to another partner by deal registration".into(),
                ));
            }
        }
        let lines: Vec<Units> = input
            .lines
            .iter()
            .map(|(sku, q)| (sku.as_str().to_owned(), *q))
            .collect();
        let priced = if let Some(quote) = &input.quote {
            self.price_from_quote(input, quote, &lines).await?
        } else if input.channel == Channel::Partner && self.downstream.prices_partner_orders() {
            self.price_for_partner(input, &lines).await?
        } else {
            if input.special_discount.is_some() {
                return Err(ServiceError::FailedPrecondition(
                    "special discounts need partner pricing, which is not configured".into(),
                ));
            }
            match &input.coupon_code {
                Some(code) => self.price_with_coupon(input, code, &tier, &lines).await?,
                None => {
                    let prices = self
                        .downstream
                        .quote(&settings.currency, &tier, &lines)
                        .await
                        .map_err(|s| from_downstream("catalog", s))?;
                    Priced {
                        discounts: vec![Vec::new(); prices.len()],
                        prices,
                        level: String::new(),
                        special: None,
                    }
                }
            }
        };
        let Priced {
            prices,
            discounts,
            level,
            special,
        } = priced;

        let window = Duration::from_secs(settings.payment_window_secs);
        self.downstream
            .reserve(order_id, &lines, window)
            .await
            .map_err(|s| from_downstream("catalog", s))?;
        // No separate "reserved" step is stored: the store write below only
        // completes a saga still STARTED, and a compensation releases by order id
        // whether or not a reservation was made.

        // The coupon is redeemed once the stock is held: idempotent by order, and
        // only one conditional update at catalog takes a code's use, so of orders
        // racing for a code's last use one gets it and the others fail here (and
        // compensate). A compensation releases the redemption of its order id.
        if let Some(code) = &input.coupon_code {
            let member = input.member.as_ref().map(|m| m.as_str()).unwrap_or_default();
            self.downstream
                .redeem_coupon(order_id, code, member)
                .await
                .map_err(|s| from_downstream("catalog", s))?;
        }

        // The special discount is used last, once the stock is held: idempotent by
        // order, so the sweeper or a retry never uses it twice for this order.
        if let Some((name, reference)) = &special {
            self.downstream
                .consume_special_discount(name, reference, &format!("orders/{order_id}"))
                .await
                .map_err(|s| from_downstream("channel-partner", s))?;
        }

        let at = now();
        let line_discount = |d: &[LineDiscount]| d.iter().map(|d| d.amount_minor).sum::<i64>();
        let total = lines
            .iter()
            .zip(&prices)
            .zip(&discounts)
            .try_fold(0i64, |sum, (((_, q), p), d)| {
                q.checked_mul(*p)
                    .and_then(|t| t.checked_sub(line_discount(d)))
                    .and_then(|t| sum.checked_add(t))
            })
            .ok_or_else(|| ServiceError::invalid("order.lines", "the order total is too large"))?;
        let order = store::order::Model {
            id: order_id.to_owned(),
            member_id: input.member.as_ref().map(|m| m.as_str().to_owned()).unwrap_or_default(),
            member_tier: tier,
            channel: input.channel.as_str().to_owned(),
            partner_id: input.partner_id.clone(),
            sales_rep: input.sales_rep.clone(),
            store: input.store.clone(),
            currency: settings.currency.clone(),
            total_minor: total,
            state: "pending_payment".into(),
            payment_reference: String::new(),
            paid_minor: 0,
            paid_at: None,
            refunded_minor: 0,
            carrier: String::new(),
            tracking_number: String::new(),
            shipped_at: None,
            delivered_at: None,
            tracking_stage: 0,
            last_tracking_at: None,
            cancel_reason: String::new(),
            payment_due_at: at + chrono::Duration::seconds(settings.payment_window_secs as i64),
            created_at: at,
            updated_at: at,
            special_discount: special.map(|(name, _)| name).unwrap_or_default(),
            partner_level: level,
            customer_name: input
                .customer
                .as_ref()
                .map(|c| c.display_name.clone())
                .unwrap_or_default(),
            customer_region: input.customer.as_ref().map(|c| c.region.clone()).unwrap_or_default(),
            customer_tax_id: input.customer.as_ref().map(|c| c.tax_id.clone()).unwrap_or_default(),
            coupon_code: input.coupon_code.clone().unwrap_or_default(),
            quote: input.quote.clone(),
        };
        let lines: Vec<store::line::Model> = lines
            .iter()
            .zip(&prices)
            .zip(&discounts)
            .enumerate()
            .map(|(i, (((sku, quantity), unit), d))| {
                Ok(store::line::Model {
                    order_id: order_id.to_owned(),
                    sku_code: sku.clone(),
                    ordinal: i as i32,
                    quantity: *quantity,
                    unit_minor: *unit,
                    returned_quantity: 0,
                    discount_minor: line_discount(d),
                    discounts: if d.is_empty() {
                        String::new()
                    } else {
                        serde_json::to_string(d).map_err(ServiceError::internal)?
                    },
                })
            })
            .collect::<ServiceResult<_>>()?;
        // One guarded write: stored only if the saga is still started, so a saga the
        // recovery took over is never stored late.
        let view = OrderView { order, lines };
        let event = events::placed(&view);
        let OrderView { order, lines } = view;
        let writes = GuardedWrite::new(
            store::saga_progress_update(&order.id, saga_state::DONE, "stored", "", order.created_at).into_query(),
        )
        .insert([store::order::ActiveModel::from(order.clone())])?
        .insert(lines.iter().cloned().map(store::line::ActiveModel::from))?
        .insert([store::timeline_row(
            &order.id,
            "placed",
            "",
            "",
            "pending_payment",
            order.created_at,
        )])?
        .insert([event.outbox_row(&order.id)])?;
        let applied = match idempotency::apply(&self.db, &writes).await {
            // The quote's unique key: another order was placed from it first.
            Err(ServiceError::AlreadyExists(_)) if input.quote.is_some() => {
                return Err(ServiceError::FailedPrecondition(
                    "the quote already has its order".into(),
                ));
            }
            other => other?,
        };
        if !applied {
            return Err(ServiceError::Aborted("placing the order was abandoned; retry".into()));
        }
        // Exactly what was written (`now()` is already at the database's precision).
        Ok(OrderView { order, lines })
    }

    /// Undoes a saga that will not finish: marks it compensating (unless it finished
    /// meanwhile), releases its reservation, marks it failed. A release that fails is
    /// retried by the sweeper.
    pub async fn compensate(&self, order_id: &str, why: &str) {
        let taken = idempotency::transaction(&self.db, |txn| {
            let (order_id, why) = (order_id.to_owned(), why.to_owned());
            Box::pin(
                async move { store::saga_progress(txn, &order_id, COMPENSATING, "compensating", &why, now()).await },
            )
        })
        .await;
        match taken {
            Ok(true) => self.finish_compensation(order_id).await,
            Ok(false) => {}
            Err(err) => tracing::warn!(order_id, error = %err, "could not mark the saga for compensation"),
        }
    }

    async fn finish_compensation(&self, order_id: &str) {
        if let Err(status) = self.downstream.release(order_id).await {
            tracing::warn!(order_id, error = %status.message(), "releasing the reservation failed; will retry");
            return;
        }
        // A coupon redeemed for the order is given back (none counts as released).
        if let Err(status) = self.downstream.release_coupon(order_id).await {
            tracing::warn!(order_id, error = %status.message(), "releasing the coupon failed; will retry");
            return;
        }
        let result = store::saga::Entity::update_many()
            .col_expr(
                store::saga::Column::State,
                sea_orm::sea_query::Expr::value(saga_state::FAILED),
            )
            .col_expr(store::saga::Column::UpdatedAt, sea_orm::sea_query::Expr::value(now()))
            .filter(store::saga::Column::OrderId.eq(order_id))
            .filter(store::saga::Column::State.eq(COMPENSATING))
            .exec(&self.db)
            .await;
        if let Err(err) = result {
            tracing::warn!(order_id, error = %err, "could not mark the saga failed; will retry");
        }
    }

    /// Compensates sagas whose process died (untouched since `stale_after`) and
    /// retries unfinished compensations. Runs at start and then periodically.
    pub async fn recover_sagas(&self, as_of: DateTime<Utc>) -> ServiceResult<u64> {
        let stale_after = chrono::Duration::seconds(self.settings.orders.saga_stale_after_secs as i64);
        let stale = store::stale_sagas(&self.db, as_of - stale_after, 200).await?;
        let mut recovered = 0;
        for saga in &stale {
            tracing::warn!(order_id = %saga.order_id, step = %saga.step, "compensating an abandoned saga");
            self.compensate(&saga.order_id, &format!("abandoned at step {}", saga.step))
                .await;
            recovered += 1;
        }
        let unfinished = store::saga::Entity::find()
            .filter(store::saga::Column::State.eq(COMPENSATING))
            .all(&self.db)
            .await?;
        for saga in unfinished {
            self.finish_compensation(&saga.order_id).await;
        }
        Ok(recovered)
    }
}

/// Unit prices, each line's discounts, the partner's level and the special
/// discount to use (name, reference).
struct Priced {
    prices: Vec<i64>,
    discounts: Vec<Vec<LineDiscount>>,
    level: String,
    special: Option<(String, String)>,
}

impl App {
    /// A partner sale's prices: the partner's level (active partners only), the
    /// level's wholesale list from catalog, the price policy's discounts line by
    /// line, then the special discount (granted or approved) on what remains.
    async fn price_for_partner(&self, input: &PlaceOrder, lines: &[Units]) -> ServiceResult<Priced> {
        let partner = |s| from_downstream("channel-partner", s);
        let level = self
            .downstream
            .partner_level(&input.partner_id)
            .await
            .map_err(partner)?;
        let prices = self
            .downstream
            .quote_wholesale(&self.settings.orders.currency, &level, lines)
            .await
            .map_err(|s| from_downstream("catalog", s))?;
        let basket: Vec<(String, i64, i64)> = lines
            .iter()
            .zip(&prices)
            .map(|((sku, q), p)| (sku.clone(), *p, *q))
            .collect();
        let policy = self
            .downstream
            .evaluate_policy(&input.partner_id, &basket)
            .await
            .map_err(partner)?;
        if policy.level != level {
            return Err(ServiceError::Aborted(
                "the partner's level changed while the order was priced; retry".into(),
            ));
        }
        let mut discounts = policy.lines;
        let special = match &input.special_discount {
            None => None,
            Some(name) => {
                let s = self.downstream.special_discount(name).await.map_err(partner)?;
                if !s.usable {
                    return Err(ServiceError::FailedPrecondition(format!(
                        "special discount {name} is {}, not granted or approved",
                        s.state
                    )));
                }
                for (((_, q), p), d) in lines.iter().zip(&prices).zip(discounts.iter_mut()) {
                    let gross = i128::from(*q) * i128::from(*p);
                    let net = gross - d.iter().map(|x| i128::from(x.amount_minor)).sum::<i128>();
                    let amount = special_amount(net, s.rate_bp);
                    if amount > 0 {
                        d.push(LineDiscount {
                            rule: name.clone(),
                            rate_bp: s.rate_bp,
                            amount_minor: amount,
                        });
                    }
                }
                Some((name.clone(), s.reference))
            }
        };
        Ok(Priced {
            prices,
            discounts,
            level,
            special,
        })
    }
}

impl App {
    /// A consumer sale's prices with a coupon: catalog's quote for the order's
    /// channel, the coupon's discount on each line it applies to.
    async fn price_with_coupon(
        &self,
        input: &PlaceOrder,
        code: &str,
        tier: &str,
        lines: &[Units],
    ) -> ServiceResult<Priced> {
        let channel = match input.channel {
            Channel::Store => retail_proto::catalog::SalesChannel::Store,
            Channel::Online | Channel::Partner => retail_proto::catalog::SalesChannel::Online,
        };
        let member = input.member.as_ref().map(|m| m.as_str()).unwrap_or_default();
        let quoted = self
            .downstream
            .quote_with_coupon(&self.settings.orders.currency, tier, channel, member, code, lines)
            .await
            .map_err(|s| from_downstream("catalog", s))?;
        let discounts = quoted
            .discounts
            .iter()
            .map(|amount| {
                if *amount > 0 {
                    vec![LineDiscount {
                        rule: quoted.coupon.clone(),
                        rate_bp: quoted.rate_bp,
                        amount_minor: *amount,
                    }]
                } else {
                    Vec::new()
                }
            })
            .collect();
        Ok(Priced {
            prices: quoted.prices,
            discounts,
            level: String::new(),
            special: None,
        })
    }

    /// A quote's prices: the quote must be the order's partner's, issued or
    /// approved and unexpired, with exactly the order's SKUs and units; no
    /// order was placed from it yet. Its unit prices are the order's, without
    /// further discounts.
    async fn price_from_quote(&self, input: &PlaceOrder, name: &str, lines: &[Units]) -> ServiceResult<Priced> {
        if !self.downstream.prices_partner_orders() {
            return Err(ServiceError::FailedPrecondition(
                "orders from quotes need channel-partner, which is not configured".into(),
            ));
        }
        let q = self
            .downstream
            .quote_prices(name)
            .await
            .map_err(|s| from_downstream("channel-partner", s))?;
        if q.partner_id != input.partner_id {
            return Err(ServiceError::invalid(
                "order.quote",
                "must be a quote of the order's partner",
            ));
        }
        if !q.usable {
            return Err(ServiceError::FailedPrecondition(format!(
                "quote {name} is {}, not issued or approved",
                q.state
            )));
        }
        let same = q.lines.len() == lines.len()
            && lines
                .iter()
                .all(|(sku, units)| q.lines.iter().any(|(s, u, _)| s == sku && u == units));
        if !same {
            return Err(ServiceError::FailedPrecondition(format!(
                "the order's lines must be quote {name}'s SKUs and units"
            )));
        }
        if store::order_of_quote(&self.db, name).await?.is_some() {
            return Err(ServiceError::FailedPrecondition(
                "the quote already has its order".into(),
            ));
        }
        let prices = lines
            .iter()
            .map(|(sku, _)| {
                q.lines
                    .iter()
                    .find(|(s, _, _)| s == sku)
                    .map_or(0, |(_, _, price)| *price)
            })
            .collect::<Vec<_>>();
        Ok(Priced {
            discounts: vec![Vec::new(); prices.len()],
            prices,
            level: q.level,
            special: None,
        })
    }
}

/// `rate_bp` basis points of `net`, rounded down (never negative, never more than
/// `net`).
pub(crate) fn special_amount(net: i128, rate_bp: i32) -> i64 {
    let rate = i128::from(rate_bp.clamp(0, 10_000));
    i64::try_from((net.max(0) * rate) / 10_000).unwrap_or(i64::MAX)
}

enum Claim {
    New(String),
    Replay(Box<OrderView>),
}
