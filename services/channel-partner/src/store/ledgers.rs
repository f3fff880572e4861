//! The points ledgers as stored: every change is an immutable entry plus the
//! ledger's balance and debt moved by the entry's amounts in one guarded update
//! (`balance + points >= 0 AND debt + debt_change >= 0`, and CHECK constraints
//! behind it), and lots taken by guarded updates (`remaining >= n`), so two racing
//! changes can never spend the same points. The plans come from
//! [`crate::domain::points`]; an entry's source is unique per ledger, so each
//! source counts once.

use chrono::{DateTime, Utc};
use retail_kit::error::{ServiceError, ServiceResult};
use retail_kit::paging::Page;
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
};

use super::{entry, ledger, lot, new_id, redemption_take};
use crate::domain::points::{self as rules, EntryKind, LedgerKind, Lot};

/// A ledger after an entry.
#[derive(Debug, Clone)]
pub struct Change {
    pub entry: entry::Model,
    pub balance: i64,
    pub debt: i64,
    pub partner_id: String,
}

/// Creates the ledger if it does not exist.
pub async fn ensure(
    conn: &impl ConnectionTrait,
    id: &str,
    kind: LedgerKind,
    partner_id: &str,
    at: DateTime<Utc>,
) -> ServiceResult<()> {
    if ledger::Entity::find_by_id(id.to_owned()).one(conn).await?.is_none() {
        ledger::ActiveModel {
            id: Set(id.to_owned()),
            kind: Set(kind.as_str().to_owned()),
            partner_id: Set(partner_id.to_owned()),
            balance: Set(0),
            debt: Set(0),
            updated_at: Set(at),
        }
        .insert(conn)
        .await?;
    }
    Ok(())
}

pub async fn get(conn: &impl ConnectionTrait, id: &str) -> ServiceResult<Option<ledger::Model>> {
    Ok(ledger::Entity::find_by_id(id.to_owned()).one(conn).await?)
}

pub async fn has_source(conn: &impl ConnectionTrait, ledger_id: &str, source: &str) -> ServiceResult<bool> {
    Ok(entry::Entity::find()
        .filter(entry::Column::LedgerId.eq(ledger_id))
        .filter(entry::Column::Source.eq(source))
        .one(conn)
        .await?
        .is_some())
}

pub async fn entries(conn: &impl ConnectionTrait, ledger_id: &str, page: &Page) -> ServiceResult<Vec<entry::Model>> {
    let mut q = entry::Entity::find()
        .filter(entry::Column::LedgerId.eq(ledger_id))
        .order_by_asc(entry::Column::Id);
    if let Some(after) = &page.after {
        q = q.filter(entry::Column::Id.gt(after.as_str()));
    }
    Ok(q.limit(page.fetch_limit()).all(conn).await?)
}

/// The ledger's lots that still hold points.
async fn lots(conn: &impl ConnectionTrait, ledger_id: &str) -> ServiceResult<Vec<Lot<String>>> {
    let rows = lot::Entity::find()
        .filter(lot::Column::LedgerId.eq(ledger_id))
        .filter(lot::Column::Remaining.gt(0))
        .all(conn)
        .await?;
    Ok(rows
        .into_iter()
        .map(|l| Lot {
            id: l.id,
            expires_at: l.expires_at,
            remaining: l.remaining,
        })
        .collect())
}

/// Something changed under the plan (a racing change): the transaction is retried.
fn raced(what: &str) -> ServiceError {
    ServiceError::Aborted(format!("{what} changed concurrently; try again"))
}

/// Takes `n` points from a lot, or gives them back (`n` negative).
async fn move_lot(conn: &impl ConnectionTrait, lot_id: &str, n: i64) -> ServiceResult<()> {
    let r = lot::Entity::update_many()
        .col_expr(lot::Column::Remaining, Expr::col(lot::Column::Remaining).sub(n))
        .filter(lot::Column::Id.eq(lot_id))
        .filter(Expr::col(lot::Column::Remaining).sub(n).gte(0))
        .filter(
            Expr::col(lot::Column::Remaining)
                .sub(n)
                .lte(Expr::col(lot::Column::Points)),
        )
        .exec(conn)
        .await?;
    if r.rows_affected == 1 {
        Ok(())
    } else {
        Err(raced("a points lot"))
    }
}

/// Writes an entry and moves the ledger by it.
async fn write(
    conn: &impl ConnectionTrait,
    ledger_id: &str,
    kind: EntryKind,
    points: i64,
    debt_change: i64,
    source: &str,
    at: DateTime<Utc>,
) -> ServiceResult<Change> {
    let r = ledger::Entity::update_many()
        .col_expr(ledger::Column::Balance, Expr::col(ledger::Column::Balance).add(points))
        .col_expr(ledger::Column::Debt, Expr::col(ledger::Column::Debt).add(debt_change))
        .col_expr(ledger::Column::UpdatedAt, Expr::value(at))
        .filter(ledger::Column::Id.eq(ledger_id))
        .filter(Expr::col(ledger::Column::Balance).add(points).gte(0))
        .filter(Expr::col(ledger::Column::Debt).add(debt_change).gte(0))
        .filter(Expr::col(ledger::Column::Balance).add(points).lte(rules::MAX_POINTS))
        .exec(conn)
        .await?;
    if r.rows_affected != 1 {
        return Err(raced("a points ledger"));
    }
    let entry = entry::ActiveModel {
        id: Set(new_id()),
        ledger_id: Set(ledger_id.to_owned()),
        kind: Set(kind.as_str().to_owned()),
        points: Set(points),
        debt_change: Set(debt_change),
        source: Set(source.to_owned()),
        created_at: Set(at),
    }
    .insert(conn)
    .await?;
    let after = get(conn, ledger_id)
        .await?
        .ok_or_else(|| ServiceError::internal(anyhow::anyhow!("ledger {ledger_id} vanished")))?;
    Ok(Change {
        entry,
        balance: after.balance,
        debt: after.debt,
        partner_id: after.partner_id,
    })
}

/// Credits `points` (an earning, an action): debt is repaid first, the rest is a
/// new lot. `None` if the source was counted before.
pub async fn credit(
    conn: &impl ConnectionTrait,
    ledger_id: &str,
    kind: EntryKind,
    points: i64,
    source: &str,
    at: DateTime<Utc>,
    lot_months: u32,
) -> ServiceResult<Option<Change>> {
    if points <= 0 || has_source(conn, ledger_id, source).await? {
        return Ok(None);
    }
    let Some(ledger) = get(conn, ledger_id).await? else {
        return Ok(None);
    };
    let (repaid, credited) = rules::settle_debt(ledger.debt, points);
    let credited = Ord::max(Ord::min(credited, rules::MAX_POINTS - ledger.balance), 0);
    if credited > 0 {
        lot::ActiveModel {
            id: Set(new_id()),
            ledger_id: Set(ledger_id.to_owned()),
            points: Set(credited),
            remaining: Set(credited),
            credited_at: Set(at),
            expires_at: Set(rules::lot_expiry(at, lot_months)),
        }
        .insert(conn)
        .await?;
    }
    write(conn, ledger_id, kind, credited, -repaid, source, at)
        .await
        .map(Some)
}

/// Takes `points` back for a refund: from lots first-expiring-first, the rest as
/// debt. `None` if the source was counted before.
pub async fn reverse(
    conn: &impl ConnectionTrait,
    ledger_id: &str,
    points: i64,
    source: &str,
    at: DateTime<Utc>,
) -> ServiceResult<Option<Change>> {
    if points <= 0 || has_source(conn, ledger_id, source).await? {
        return Ok(None);
    }
    let plan = rules::plan_reversal(&lots(conn, ledger_id).await?, points, at);
    let mut taken = 0;
    for (id, n) in &plan.from_lots {
        move_lot(conn, id, *n).await?;
        taken += n;
    }
    write(conn, ledger_id, EntryKind::Reverse, -taken, plan.debt, source, at)
        .await
        .map(Some)
}

/// Redeems `points` from lots first-expiring-first, recording what each lot gave
/// under `redemption_id`. FAILED_PRECONDITION if the usable balance is short.
pub async fn redeem(
    conn: &impl ConnectionTrait,
    ledger_id: &str,
    points: i64,
    redemption_id: &str,
    at: DateTime<Utc>,
) -> ServiceResult<Change> {
    let lots = lots(conn, ledger_id).await?;
    let Some(plan) = rules::plan_redemption(&lots, points, at) else {
        return Err(ServiceError::FailedPrecondition(format!(
            "insufficient points: {} available, {points} requested",
            rules::available(&lots, at)
        )));
    };
    for (id, n) in &plan {
        move_lot(conn, id, *n).await?;
        redemption_take::ActiveModel {
            redemption_id: Set(redemption_id.to_owned()),
            lot_id: Set(id.clone()),
            points: Set(*n),
        }
        .insert(conn)
        .await?;
    }
    write(
        conn,
        ledger_id,
        EntryKind::Redeem,
        -points,
        0,
        &format!("redemption-{redemption_id}"),
        at,
    )
    .await
}

/// Gives a rejected redemption's points back: debt is repaid first, the rest goes
/// back into the lots it came from (a lot that expired meanwhile is written off by
/// the next expiry run).
pub async fn give_back(
    conn: &impl ConnectionTrait,
    ledger_id: &str,
    redemption_id: &str,
    at: DateTime<Utc>,
) -> ServiceResult<Option<Change>> {
    let source = format!("redemption-{redemption_id}-returned");
    if has_source(conn, ledger_id, &source).await? {
        return Ok(None);
    }
    let Some(ledger) = get(conn, ledger_id).await? else {
        return Ok(None);
    };
    let takes = redemption_take::Entity::find()
        .filter(redemption_take::Column::RedemptionId.eq(redemption_id))
        .order_by_asc(redemption_take::Column::LotId)
        .all(conn)
        .await?;
    let total: i64 = takes.iter().map(|t| t.points).sum();
    let (repaid, mut back) = rules::settle_debt(ledger.debt, total);
    let returned = back;
    for t in takes {
        if back == 0 {
            break;
        }
        let n = Ord::min(t.points, back);
        move_lot(conn, &t.lot_id, -n).await?;
        back -= n;
    }
    write(conn, ledger_id, EntryKind::Return, returned, -repaid, &source, at)
        .await
        .map(Some)
}

/// Writes off the ledger's lots expired at `as_of`, one entry per lot.
pub async fn expire(conn: &impl ConnectionTrait, ledger_id: &str, as_of: DateTime<Utc>) -> ServiceResult<Vec<Change>> {
    let mut changes = Vec::new();
    for (id, n) in rules::plan_expiry(&lots(conn, ledger_id).await?, as_of) {
        move_lot(conn, &id, n).await?;
        changes.push(
            write(
                conn,
                ledger_id,
                EntryKind::Expire,
                -n,
                0,
                &format!("expiry-{id}"),
                as_of,
            )
            .await?,
        );
    }
    Ok(changes)
}

/// Ledgers holding lots expired at `as_of`.
pub async fn with_expired_lots(conn: &impl ConnectionTrait, as_of: DateTime<Utc>) -> ServiceResult<Vec<String>> {
    let rows: Vec<String> = lot::Entity::find()
        .select_only()
        .column(lot::Column::LedgerId)
        .distinct()
        .filter(lot::Column::Remaining.gt(0))
        .filter(lot::Column::ExpiresAt.lte(as_of))
        .into_tuple()
        .all(conn)
        .await?;
    Ok(rows)
}
