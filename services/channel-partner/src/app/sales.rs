//! What a paid order or a refund of channel `partner` does, in the transaction of
//! the orders log consumer: it is recorded once as an attributed sale (to the
//! partner, and to the rep the order names if the rep is the partner's or the
//! brand's), may upgrade the partner's level, earns points on the collective and
//! the rep's individual ledger (times the level's multiplier) or reverses them in
//! proportion to the refund, and may attain the partner's and the rep's targets.

use chrono::{DateTime, Utc};
use retail_kit::error::ServiceResult;
use sea_orm::{ActiveModelTrait, ActiveValue::Set, DatabaseTransaction, EntityTrait};

use super::App;
use super::targets::progress;
use crate::domain::ids::{PartnerId, RepId, Subject};
use crate::domain::points::{self as rules, EntryKind};
use crate::events;
use crate::store::{self, Seller, ledgers, order_points, sale, sales_rep};

/// A paid order or a refund as the orders log reports it.
#[derive(Debug, Clone)]
pub struct Sale {
    pub order_id: String,
    /// The return or cancellation a refund stands for; empty for a payment.
    pub reference: String,
    pub refund: bool,
    pub partner_id: String,
    /// As the order names it: a rep's id or its identity user id; may be empty.
    pub sales_rep: String,
    pub currency: String,
    /// Positive.
    pub amount_minor: i64,
    pub at: DateTime<Utc>,
}

/// What applying a sale did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Recorded,
    /// Counted before (the same payment or refund delivered again).
    Duplicate,
    /// Not the programme's: unknown partner, other currency.
    Skipped,
}

impl App {
    /// Applies a sale in a transaction of its own, as the orders log would (for
    /// tools and tests that drive the programme without orders).
    pub async fn record_sale(&self, s: &Sale) -> ServiceResult<Applied> {
        let txn = retail_kit::db::begin_write(&self.db).await?;
        let applied = self.apply_sale(&txn, s).await?;
        txn.commit().await?;
        self.log.committed();
        Ok(applied)
    }

    /// The rep an order names, if it may be credited with the partner's sale.
    async fn attributed_rep(
        &self,
        txn: &DatabaseTransaction,
        partner: &str,
        named: &str,
    ) -> ServiceResult<Option<sales_rep::Model>> {
        if named.is_empty() {
            return Ok(None);
        }
        let rep = match store::rep(txn, named).await? {
            Some(rep) => Some(rep),
            None => store::rep_by_user(txn, named).await?,
        };
        Ok(rep.filter(|r| r.partner_id == partner || r.partner_id.is_empty()))
    }

    /// Applies a sale once.
    pub async fn apply_sale(&self, txn: &DatabaseTransaction, s: &Sale) -> ServiceResult<Applied> {
        let kind = if s.refund { "refund" } else { "paid" };
        if s.currency != self.rules.currency || s.amount_minor <= 0 {
            tracing::warn!(order_id = %s.order_id, "partner sale in another currency or without an amount; not counted");
            return Ok(Applied::Skipped);
        }
        if store::sale_exists(txn, &s.order_id, kind, &s.reference).await? {
            return Ok(Applied::Duplicate);
        }
        // A refund counts against a payment that counted.
        if s.refund && !store::sale_exists(txn, &s.order_id, "paid", "").await? {
            return Ok(Applied::Skipped);
        }
        // The partner's row lock orders its sales, level changes and ledgers.
        if !store::lock_partner(txn, &s.partner_id).await? {
            tracing::warn!(order_id = %s.order_id, "sale attributed to a partner that does not exist; not counted");
            return Ok(Applied::Skipped);
        }
        let Some(partner) = store::partner(txn, &s.partner_id).await? else {
            return Ok(Applied::Skipped);
        };
        let rep = self.attributed_rep(txn, &partner.id, &s.sales_rep).await?;
        let rep_id = rep.as_ref().map(|r| r.id.clone()).unwrap_or_default();
        sale::ActiveModel {
            id: Set(store::new_id()),
            order_id: Set(s.order_id.clone()),
            kind: Set(kind.to_owned()),
            reference: Set(s.reference.clone()),
            partner_id: Set(partner.id.clone()),
            rep_id: Set(rep_id.clone()),
            amount_minor: Set(if s.refund { -s.amount_minor } else { s.amount_minor }),
            occurred_at: Set(s.at),
        }
        .insert(txn)
        .await?;

        let mut ledgers_of_sale = vec![Subject::Partner(PartnerId::from_stored(partner.id.clone()))];
        if let Some(rep) = &rep {
            ledgers_of_sale.push(Subject::Rep(RepId::from_stored(rep.id.clone())));
        }
        if s.refund {
            for subject in &ledgers_of_sale {
                self.reverse_order_points(txn, subject, s).await?;
            }
        } else {
            let level = self.upgrade_after_sale(txn, &partner, s.at).await?;
            let multiplier = self.rules.ladder.privileges(&level).points_multiplier;
            let points = rules::earned_points(
                s.amount_minor,
                self.rules.minor_exponent,
                self.rules.base_rate,
                multiplier,
            );
            for subject in &ledgers_of_sale {
                self.earn_order_points(txn, subject, &partner.id, s, points).await?;
            }
        }
        let mut sellers = vec![Seller::Partner(&partner.id)];
        if !rep_id.is_empty() {
            sellers.push(Seller::Rep(&rep_id));
        }
        for seller in sellers {
            for t in store::open_targets_at(txn, seller, s.at).await? {
                let now = progress(txn, &t).await?;
                if now >= t.amount_minor && store::mark_attained(txn, &t.id, s.at).await? {
                    events::target_attained(&t, now).publish(txn, &t.id).await?;
                }
            }
        }
        Ok(Applied::Recorded)
    }

    async fn earn_order_points(
        &self,
        txn: &DatabaseTransaction,
        subject: &Subject,
        partner: &str,
        s: &Sale,
        points: i64,
    ) -> ServiceResult<()> {
        let ledger = subject.ledger_id();
        let kind = match subject {
            Subject::Partner(_) => rules::LedgerKind::Collective,
            Subject::Rep(_) => rules::LedgerKind::Individual,
        };
        ledgers::ensure(txn, &ledger, kind, partner, s.at).await?;
        order_points::ActiveModel {
            ledger_id: Set(ledger.clone()),
            order_id: Set(s.order_id.clone()),
            earned: Set(points),
            paid_minor: Set(s.amount_minor),
            refunded_minor: Set(0),
            reversed: Set(0),
        }
        .insert(txn)
        .await?;
        let source = format!("order-{}", s.order_id);
        if let Some(change) = ledgers::credit(
            txn,
            &ledger,
            EntryKind::Earn,
            points,
            &source,
            s.at,
            self.rules.lot_months,
        )
        .await?
        {
            events::points_changed(&subject.ledger_name(), &change)
                .publish(txn, &ledger)
                .await?;
        }
        Ok(())
    }

    async fn reverse_order_points(&self, txn: &DatabaseTransaction, subject: &Subject, s: &Sale) -> ServiceResult<()> {
        let ledger = subject.ledger_id();
        let Some(earned) = order_points::Entity::find_by_id((ledger.clone(), s.order_id.clone()))
            .one(txn)
            .await?
        else {
            return Ok(());
        };
        let refunded = (earned.refunded_minor + s.amount_minor).min(earned.paid_minor);
        let points = rules::points_to_reverse(earned.earned, earned.reversed, earned.paid_minor, refunded);
        let mut row: order_points::ActiveModel = earned.clone().into();
        row.refunded_minor = Set(refunded);
        row.reversed = Set(earned.reversed + points);
        row.update(txn).await?;
        let source = format!("refund-{}-{}", s.order_id, s.reference);
        if let Some(change) = ledgers::reverse(txn, &ledger, points, &source, s.at).await? {
            events::points_changed(&subject.ledger_name(), &change)
                .publish(txn, &ledger)
                .await?;
        }
        Ok(())
    }
}
