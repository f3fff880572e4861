//! Loyalty queries: purchases, lots, ledger entries, tier changes, and the
//! conditional balance updates that keep the ledger from going negative.

use chrono::{DateTime, Utc};
use retail_kit::db::{is_unique_violation, one_of};
use retail_kit::error::{ServiceError, ServiceResult};
use retail_kit::paging::Page;
use sea_orm::sea_query::{Expr, ExprTrait, UnionType};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseBackend, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect, QueryTrait, Statement,
};

use super::entities::{member, points_entry, points_lot, purchase, tier_change};
use super::{Standing, new_id};
use crate::domain::points::MAX_POINTS;
use retail_kit::events::Outgoing;
use retail_kit::events::entity::outbox;

/// A member's purchases and refunds after `after` (all of them for `None`), oldest
/// first: those a spend window starting there counts, read through the
/// `(member_id, occurred_at)` index.
pub(crate) async fn purchases_after(
    conn: &impl ConnectionTrait,
    member_id: &str,
    after: Option<DateTime<Utc>>,
) -> ServiceResult<Vec<purchase::Model>> {
    let mut query = purchase::Entity::find().filter(purchase::Column::MemberId.eq(member_id));
    if let Some(after) = after {
        query = query.filter(purchase::Column::OccurredAt.gt(after));
    }
    Ok(query
        .order_by_asc(purchase::Column::OccurredAt)
        .order_by_asc(purchase::Column::Id)
        .all(conn)
        .await?)
}

/// What recording payments of `order_ids` for `member_ids` needs to know, in one
/// read: the purchases and refunds of those members after `spend_after` (for their
/// qualifying spend; none if `None`, all of them for `Some(None)`), and any payment
/// already recorded for one of the orders, whoever it was for. Oldest first.
///
/// Two questions, each answered by its own index (`uq_purchases_order_kind_reference`,
/// `idx_purchases_member`), in one `UNION ALL`. On PostgreSQL each branch looks up
/// its keys one by one (`unnest` and a `LATERAL` subquery that `OFFSET 0` keeps from
/// being flattened into a join): the prepared statement's cached generic plan,
/// made while the table was small, would otherwise stay a scan of the whole table
/// (testing every row against the key lists) as the table grows, until the next
/// ANALYZE.
pub(crate) async fn purchases_for_payments(
    conn: &impl ConnectionTrait,
    member_ids: &[String],
    spend_after: Option<Option<DateTime<Utc>>>,
    order_ids: &[String],
) -> ServiceResult<Vec<purchase::Model>> {
    let backend = conn.get_database_backend();
    let statement = if backend == DatabaseBackend::Postgres {
        let mut sql = String::from(
            "SELECT p.* FROM unnest($1::varchar[]) AS wanted(order_id) CROSS JOIN LATERAL (\
             SELECT * FROM purchases WHERE purchases.order_id = wanted.order_id \
             AND purchases.kind = 'paid' AND purchases.reference = '' OFFSET 0) AS p",
        );
        let mut values: Vec<sea_orm::Value> = vec![order_ids.to_vec().into()];
        if let Some(after) = spend_after {
            sql.push_str(
                " UNION ALL SELECT p.* FROM unnest($2::varchar[]) AS wanted(member_id) CROSS JOIN LATERAL (\
                 SELECT * FROM purchases WHERE purchases.member_id = wanted.member_id",
            );
            values.push(member_ids.to_vec().into());
            if let Some(after) = after {
                sql.push_str(" AND purchases.occurred_at > $3");
                values.push(after.into());
            }
            sql.push_str(" OFFSET 0) AS p");
        }
        Statement::from_sql_and_values(backend, sql, values)
    } else {
        let mut query = purchase::Entity::find()
            .filter(purchase::Column::OrderId.is_in(order_ids.iter().cloned()))
            .filter(purchase::Column::Kind.eq("paid"))
            .filter(purchase::Column::Reference.eq(""))
            .into_query();
        if let Some(after) = spend_after {
            let mut window =
                purchase::Entity::find().filter(purchase::Column::MemberId.is_in(member_ids.iter().cloned()));
            if let Some(after) = after {
                window = window.filter(purchase::Column::OccurredAt.gt(after));
            }
            query.union(UnionType::All, window.into_query());
        }
        backend.build(&query)
    };
    let mut rows = purchase::Entity::find().from_raw_sql(statement).all(conn).await?;
    // A payment of one of the members for one of the orders answers both branches.
    rows.sort_by(|a, b| (a.occurred_at, &a.id).cmp(&(b.occurred_at, &b.id)));
    rows.dedup_by(|a, b| a.id == b.id);
    Ok(rows)
}

pub(crate) async fn find_purchase(
    conn: &impl ConnectionTrait,
    order_id: &str,
    kind: &str,
    reference: &str,
) -> ServiceResult<Option<purchase::Model>> {
    Ok(purchase::Entity::find()
        .filter(purchase::Column::OrderId.eq(order_id))
        .filter(purchase::Column::Kind.eq(kind))
        .filter(purchase::Column::Reference.eq(reference))
        .one(conn)
        .await?)
}

pub(crate) async fn refunds_of_order(
    conn: &impl ConnectionTrait,
    order_id: &str,
) -> ServiceResult<Vec<purchase::Model>> {
    Ok(purchase::Entity::find()
        .filter(purchase::Column::OrderId.eq(order_id))
        .filter(purchase::Column::Kind.eq("refund"))
        .all(conn)
        .await?)
}

/// Records a purchase or refund once: the same order (or refund request) again is
/// ALREADY_EXISTS. The duplicate is found by the unique index and written around
/// (`ON CONFLICT DO NOTHING`), not raised as a database error, so a transaction
/// applying a batch of order events stays usable and needs no read beforehand.
pub(crate) async fn insert_purchase(conn: &impl ConnectionTrait, model: purchase::Model) -> ServiceResult<()> {
    use sea_orm::TryInsertResult;
    let inserted = purchase::Entity::insert(purchase::ActiveModel::from(model))
        .on_conflict_do_nothing_on([
            purchase::Column::OrderId,
            purchase::Column::Kind,
            purchase::Column::Reference,
        ])
        .exec_without_returning(conn)
        .await
        .map_err(|e| {
            if is_unique_violation(&e) {
                ServiceError::AlreadyExists("this purchase is already recorded".into())
            } else {
                e.into()
            }
        })?;
    match inserted {
        TryInsertResult::Inserted(rows) if rows > 0 => Ok(()),
        _ => Err(ServiceError::AlreadyExists("this purchase is already recorded".into())),
    }
}

/// Lots that still hold points, first expiring first.
pub(crate) async fn open_lots(conn: &impl ConnectionTrait, member_id: &str) -> ServiceResult<Vec<points_lot::Model>> {
    Ok(points_lot::Entity::find()
        .filter(points_lot::Column::MemberId.eq(member_id))
        .filter(points_lot::Column::Remaining.gt(0))
        .order_by_asc(points_lot::Column::ExpiresAt)
        .order_by_asc(points_lot::Column::Id)
        .all(conn)
        .await?)
}

/// Takes `points` from a lot; false (and nothing changed) if it holds fewer.
pub(crate) async fn take_from_lot(conn: &impl ConnectionTrait, lot_id: &str, points: i64) -> ServiceResult<bool> {
    let result = points_lot::Entity::update_many()
        .col_expr(
            points_lot::Column::Remaining,
            Expr::col(points_lot::Column::Remaining).sub(points),
        )
        .filter(points_lot::Column::Id.eq(lot_id))
        .filter(points_lot::Column::Remaining.gte(points))
        .exec(conn)
        .await?;
    Ok(result.rows_affected == 1)
}

pub(crate) async fn insert_entry(
    conn: &impl ConnectionTrait,
    member_id: &str,
    kind: &str,
    points: i64,
    reference: &str,
    lot_id: &str,
    now: DateTime<Utc>,
) -> ServiceResult<()> {
    entry_row(member_id, kind, points, reference, lot_id, now)
        .insert(conn)
        .await?;
    Ok(())
}

/// A ledger entry's row (the reference cut to its column's 128 characters).
pub(crate) fn entry_row(
    member_id: &str,
    kind: &str,
    points: i64,
    reference: &str,
    lot_id: &str,
    now: DateTime<Utc>,
) -> points_entry::ActiveModel {
    points_entry::ActiveModel {
        id: Set(new_id()),
        member_id: Set(member_id.to_owned()),
        kind: Set(kind.to_owned()),
        points: Set(points),
        reference: Set(reference.chars().take(128).collect()),
        lot_id: Set(lot_id.to_owned()),
        created_at: Set(now),
    }
}

/// Credits points after repaying `repaid` of the debt, as a change of the member (new
/// version), in one statement that returns the standing. Only while the balance
/// stays within [`MAX_POINTS`]: FAILED_PRECONDITION (nothing changed) otherwise.
pub(crate) async fn credit(
    conn: &impl ConnectionTrait,
    member_id: &str,
    credit: i64,
    repaid: i64,
    now: DateTime<Utc>,
) -> ServiceResult<Standing> {
    let update = member::Entity::update_many()
        .col_expr(
            member::Column::PointsBalance,
            Expr::col(member::Column::PointsBalance).add(credit),
        )
        .col_expr(
            member::Column::PointsDebt,
            Expr::col(member::Column::PointsDebt).sub(repaid),
        )
        .filter(member::Column::PointsBalance.lte(MAX_POINTS.saturating_sub(credit)));
    match super::update_returning_standing(conn, update, member_id, now).await {
        Err(ServiceError::NotFound { .. }) => Err(ServiceError::FailedPrecondition(format!(
            "the points balance would pass its maximum of {MAX_POINTS}"
        ))),
        other => other,
    }
}

/// Takes `points` from the balance if it covers them: the one place redemptions race,
/// settled by the row's conditional update (and the CHECK constraint behind it).
pub(crate) async fn debit(conn: &impl ConnectionTrait, member_id: &str, points: i64) -> ServiceResult<bool> {
    let result = member::Entity::update_many()
        .col_expr(
            member::Column::PointsBalance,
            Expr::col(member::Column::PointsBalance).sub(points),
        )
        .filter(member::Column::Id.eq(member_id))
        .filter(member::Column::PointsBalance.gte(points))
        .exec(conn)
        .await?;
    Ok(result.rows_affected == 1)
}

/// Adds `debt` to the member's debt, which stops at [`MAX_POINTS`]: a debt beyond
/// it could never be repaid by a balance that cannot pass it.
pub(crate) async fn add_debt(conn: &impl ConnectionTrait, member_id: &str, debt: i64) -> ServiceResult<()> {
    use sea_orm::sea_query::CaseStatement;
    let capped: Expr = CaseStatement::new()
        .case(
            Expr::col(member::Column::PointsDebt).gt(MAX_POINTS.saturating_sub(debt)),
            Expr::val(MAX_POINTS),
        )
        .finally(Expr::col(member::Column::PointsDebt).add(debt))
        .into();
    member::Entity::update_many()
        .col_expr(member::Column::PointsDebt, capped)
        .filter(member::Column::Id.eq(member_id))
        .exec(conn)
        .await?;
    Ok(())
}

/// Moves the member from tier `from` to `to`, with its tier change row; false (and
/// nothing written) if the member is no longer in `from`, e.g. upgraded meanwhile.
pub async fn set_tier(
    conn: &impl ConnectionTrait,
    member_id: &str,
    from: &str,
    to: &str,
    reason: &str,
    now: DateTime<Utc>,
) -> ServiceResult<bool> {
    let moved = member::Entity::update_many()
        .col_expr(member::Column::Tier, Expr::value(to))
        .filter(member::Column::Id.eq(member_id))
        .filter(member::Column::Tier.eq(from))
        .exec(conn)
        .await?;
    if moved.rows_affected != 1 {
        return Ok(false);
    }
    tier_change_row(member_id, from, to, reason, now).insert(conn).await?;
    Ok(true)
}

pub(crate) fn tier_change_row(
    member_id: &str,
    from: &str,
    to: &str,
    reason: &str,
    now: DateTime<Utc>,
) -> tier_change::ActiveModel {
    tier_change::ActiveModel {
        id: Set(new_id()),
        member_id: Set(member_id.to_owned()),
        from_tier: Set(from.to_owned()),
        to_tier: Set(to.to_owned()),
        reason: Set(reason.to_owned()),
        created_at: Set(now),
    }
}

/// A member's share of a batch of payments, as its guard writes it.
#[derive(Debug, Clone)]
pub struct Credited<'a> {
    pub member_id: &'a str,
    /// The version read: the member must still be at it.
    pub version: i64,
    pub credit: i64,
    pub repaid: i64,
    pub tier: &'a str,
}

/// The guard of a batch of payments, for all its members in one statement: credits
/// each member's points after repaying its debt, sets its tier, and makes the change
/// its next version, for each member still at the version read (nothing else changed
/// it since). The caller counts the rows it matched: one per member.
///
/// On PostgreSQL the members' values go as one array per column (`UPDATE ... FROM
/// (SELECT unnest($1) AS id, ...)`), so the text is the same for any number of
/// members and is planned once per connection; on SQLite, as `CASE` per member.
pub fn credit_at_versions(
    backend: DatabaseBackend,
    members: &[Credited<'_>],
    now: DateTime<Utc>,
) -> sea_orm::sea_query::UpdateStatement {
    use sea_orm::sea_query::{Alias, CaseStatement, Func, Query, TableRef};
    let update = member::Entity::update_many().col_expr(member::Column::UpdatedAt, Expr::value(now));
    if backend == DatabaseBackend::Postgres {
        // Qualified: the values' columns are named alike.
        let own = |c: member::Column| Expr::col((member::Entity, c));
        let credited = Alias::new("credited");
        let of = |field: &str| Expr::col((credited.clone(), Alias::new(field)));
        let column =
            |values: sea_orm::Value, field: &str| (Func::cust("unnest").arg(Expr::val(values)), Alias::new(field));
        let mut values = Query::select();
        for (expr, name) in [
            column(
                members
                    .iter()
                    .map(|m| m.member_id.to_owned())
                    .collect::<Vec<_>>()
                    .into(),
                "id",
            ),
            column(members.iter().map(|m| m.version).collect::<Vec<_>>().into(), "version"),
            column(members.iter().map(|m| m.credit).collect::<Vec<_>>().into(), "credit"),
            column(members.iter().map(|m| m.repaid).collect::<Vec<_>>().into(), "repaid"),
            column(
                members.iter().map(|m| m.tier.to_owned()).collect::<Vec<_>>().into(),
                "tier",
            ),
        ] {
            values.expr_as(expr, name);
        }
        let mut query = update
            .col_expr(
                member::Column::PointsBalance,
                own(member::Column::PointsBalance).add(of("credit")),
            )
            .col_expr(
                member::Column::PointsDebt,
                own(member::Column::PointsDebt).sub(of("repaid")),
            )
            .col_expr(member::Column::Tier, of("tier"))
            .col_expr(member::Column::Version, own(member::Column::Version).add(1))
            .filter(own(member::Column::Id).eq(of("id")))
            .filter(own(member::Column::Version).eq(of("version")))
            .into_query();
        query.from(TableRef::SubQuery(Box::new(values), credited.into()));
        return query;
    }
    // `CASE WHEN id = <member> THEN <its value> ...`, one branch per member.
    let per_member = |value: &dyn Fn(&Credited<'_>) -> Expr| -> Expr {
        members
            .iter()
            .fold(CaseStatement::new(), |case, m| {
                case.case(Expr::col(member::Column::Id).eq(m.member_id), value(m))
            })
            .into()
    };
    update
        .col_expr(
            member::Column::PointsBalance,
            Expr::col(member::Column::PointsBalance).add(per_member(&|m| Expr::val(m.credit))),
        )
        .col_expr(
            member::Column::PointsDebt,
            Expr::col(member::Column::PointsDebt).sub(per_member(&|m| Expr::val(m.repaid))),
        )
        .col_expr(member::Column::Tier, per_member(&|m| Expr::val(m.tier)))
        .col_expr(member::Column::Version, Expr::col(member::Column::Version).add(1))
        .filter(member::Column::Id.is_in(members.iter().map(|m| m.member_id)))
        .filter(Expr::col(member::Column::Version).eq(per_member(&|m| Expr::val(m.version))))
        .into_query()
}

/// Live (not erased) members among `ids`, locked for the caller's transaction
/// (`FOR UPDATE`, in id order so that two such reads cannot deadlock): other
/// writers of these members wait for its commit instead of changing them between
/// this read and its writes. SQLite has no row locks; its write transactions run
/// one at a time.
pub(crate) async fn live_members(conn: &impl ConnectionTrait, ids: &[String]) -> ServiceResult<Vec<member::Model>> {
    Ok(member::Entity::find()
        .filter(one_of(conn.get_database_backend(), member::Column::Id, ids))
        .filter(member::Column::ErasedAt.is_null())
        .filter(member::Column::MergedInto.is_null())
        .order_by_asc(member::Column::Id)
        .lock_exclusive()
        .all(conn)
        .await?)
}

pub(crate) async fn entries(
    conn: &impl ConnectionTrait,
    member_id: &str,
    page: &Page,
) -> ServiceResult<Vec<points_entry::Model>> {
    let mut query = points_entry::Entity::find()
        .filter(points_entry::Column::MemberId.eq(member_id))
        .order_by_desc(points_entry::Column::Id)
        .limit(page.fetch_limit());
    if let Some(before) = &page.after {
        query = query.filter(points_entry::Column::Id.lt(before.as_str()));
    }
    Ok(query.all(conn).await?)
}

pub(crate) async fn all_entries(
    conn: &impl ConnectionTrait,
    member_id: &str,
) -> ServiceResult<Vec<points_entry::Model>> {
    Ok(points_entry::Entity::find()
        .filter(points_entry::Column::MemberId.eq(member_id))
        .order_by_asc(points_entry::Column::Id)
        .all(conn)
        .await?)
}

pub async fn tier_changes(
    conn: &impl ConnectionTrait,
    member_id: &str,
    page: Option<&Page>,
) -> ServiceResult<Vec<tier_change::Model>> {
    let mut query = tier_change::Entity::find()
        .filter(tier_change::Column::MemberId.eq(member_id))
        .order_by_desc(tier_change::Column::Id);
    if let Some(page) = page {
        query = query.limit(page.fetch_limit());
        if let Some(before) = &page.after {
            query = query.filter(tier_change::Column::Id.lt(before.as_str()));
        }
    }
    Ok(query.all(conn).await?)
}

/// Members with lots that have expired but still hold points.
pub(crate) async fn members_with_expired_lots(
    conn: &impl ConnectionTrait,
    as_of: DateTime<Utc>,
) -> ServiceResult<Vec<String>> {
    let rows: Vec<String> = points_lot::Entity::find()
        .select_only()
        .column(points_lot::Column::MemberId)
        .distinct()
        .filter(points_lot::Column::Remaining.gt(0))
        .filter(points_lot::Column::ExpiresAt.lte(as_of))
        .into_tuple()
        .all(conn)
        .await?;
    Ok(rows)
}

/// A live member's tier and qualifying spend, as the re-evaluation reads them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TierStanding {
    pub(crate) member_id: String,
    pub(crate) tier: String,
    /// Paid amounts minus refunds in `(spend_after, as_of]`, never negative.
    pub(crate) spend: i64,
}

/// The next `limit` live members after `after` (by id), each with its tier and its
/// qualifying spend in `(spend_after, as_of]` (from the beginning for `None`),
/// in one statement: the spend is summed by the database, through the
/// `(member_id, occurred_at)` index, not read row by row.
///
/// PostgreSQL sums exactly (as `numeric`) and the sum is clamped to `0..=i64::MAX`,
/// as the rules clamp it; SQLite sums as a float (`TOTAL`, which cannot overflow),
/// exact while a member's window totals less than 2^53 minor units.
pub(crate) async fn tier_standings(
    conn: &impl ConnectionTrait,
    after: &str,
    limit: u64,
    spend_after: Option<DateTime<Utc>>,
    as_of: DateTime<Utc>,
) -> ServiceResult<Vec<TierStanding>> {
    let backend = conn.get_database_backend();
    let postgres = backend == DatabaseBackend::Postgres;
    let param = |n: usize| if postgres { format!("${n}") } else { "?".to_owned() };
    let sum = if postgres {
        "LEAST(GREATEST(SUM(p.amount_minor), 0), 9223372036854775807)::bigint"
    } else {
        "CAST(MAX(TOTAL(p.amount_minor), 0) AS INTEGER)"
    };
    let mut values: Vec<sea_orm::Value> = vec![as_of.into()];
    let mut window = format!("p.occurred_at <= {}", param(1));
    if let Some(start) = spend_after {
        values.push(start.into());
        window.push_str(&format!(" AND p.occurred_at > {}", param(2)));
    }
    let (after_param, limit_param) = (param(values.len() + 1), param(values.len() + 2));
    values.push(after.into());
    values.push((limit as i64).into());
    let sql = format!(
        "SELECT m.id, m.tier, COALESCE((SELECT {sum} FROM purchases p \
         WHERE p.member_id = m.id AND {window}), 0) AS spend \
         FROM members m WHERE m.erased_at IS NULL AND m.merged_into IS NULL AND m.id > {after_param} \
         ORDER BY m.id LIMIT {limit_param}"
    );
    let rows = conn
        .query_all_raw(Statement::from_sql_and_values(backend, sql, values))
        .await?;
    rows.iter()
        .map(|row| {
            Ok(TierStanding {
                member_id: row.try_get("", "id")?,
                tier: row.try_get("", "tier")?,
                spend: row.try_get("", "spend")?,
            })
        })
        .collect()
}

/// A member to move from one tier to another, with the event that reports it.
#[derive(Debug, Clone)]
pub(crate) struct TierMove {
    pub(crate) member_id: String,
    pub(crate) from: String,
    pub(crate) to: String,
    pub(crate) event: Outgoing,
}

/// Members one statement moves on SQLite, whose statements take one value per
/// member and column (PostgreSQL takes one array per column, for any number).
const MOVES_PER_SQLITE_STATEMENT: usize = 2_000;
/// Rows one insert writes on SQLite.
const ROWS_PER_SQLITE_INSERT: usize = 1_000;

/// Moves each member still in its `from` tier to `to`, as a change of the member
/// (next version, `updated_at` = `at`), with a tier change row (`reason`, `at`) and
/// its event in the outbox for each member moved. A member no longer in `from`
/// (upgraded by a payment meanwhile, say) is left alone, and nothing is written for
/// it. Returns the members moved with the versions their change commits.
///
/// On PostgreSQL all of it is one statement, the values one array per column (the
/// text is the same for any number of members): the update, and inserts that
/// select their rows from what it moved. On SQLite, in the caller's transaction: the
/// updates (`CASE` per member), then the inserts for the members they returned.
pub(crate) async fn move_tiers(
    conn: &impl ConnectionTrait,
    moves: &[TierMove],
    reason: &str,
    at: DateTime<Utc>,
) -> ServiceResult<Vec<(String, i64)>> {
    use sea_orm::sea_query::{ArrayType, CaseStatement, Query, Value};
    let backend = conn.get_database_backend();
    let read = |rows: Vec<sea_orm::QueryResult>| -> ServiceResult<Vec<(String, i64)>> {
        rows.iter()
            .map(|row| Ok((row.try_get("", "id")?, row.try_get("", "version")?)))
            .collect()
    };
    if moves.is_empty() {
        return Ok(Vec::new());
    }
    if backend == DatabaseBackend::Postgres {
        let text = |f: &dyn Fn(&TierMove) -> String| -> Value { moves.iter().map(f).collect::<Vec<_>>().into() };
        let payloads = moves
            .iter()
            .map(|m| Value::Bytes(Some(m.event.payload().to_vec())))
            .collect();
        let sql = "WITH moves AS (\
              SELECT * FROM unnest($1::varchar[], $2::varchar[], $3::varchar[], $4::varchar[], \
              $5::varchar[], $6::varchar[], $7::bytea[]) \
              AS m(id, from_tier, to_tier, change_id, event_id, event_type, payload)\
            ), moved AS (\
              UPDATE members SET tier = moves.to_tier, version = members.version + 1, updated_at = $8 \
              FROM moves WHERE members.id = moves.id AND members.tier = moves.from_tier \
              RETURNING members.id, members.version\
            ), changes AS (\
              INSERT INTO tier_changes (id, member_id, from_tier, to_tier, reason, created_at) \
              SELECT moves.change_id, moves.id, moves.from_tier, moves.to_tier, $9, $8 \
              FROM moves JOIN moved ON moved.id = moves.id\
            ), events AS (\
              INSERT INTO outbox (id, event_type, aggregate_id, payload, occurred_at) \
              SELECT moves.event_id, moves.event_type, moves.id, moves.payload, $10 \
              FROM moves JOIN moved ON moved.id = moves.id\
            ) SELECT id, version FROM moved";
        let values = vec![
            text(&|m| m.member_id.clone()),
            text(&|m| m.from.clone()),
            text(&|m| m.to.clone()),
            text(&|_| new_id()),
            text(&|_| new_id()),
            text(&|m| m.event.type_name().to_owned()),
            Value::Array(ArrayType::Bytes, Some(Box::new(payloads))),
            at.into(),
            reason.into(),
            Utc::now().into(),
        ];
        let rows = conn
            .query_all_raw(Statement::from_sql_and_values(backend, sql, values))
            .await?;
        return read(rows);
    }
    let mut moved = Vec::with_capacity(moves.len());
    for chunk in moves.chunks(MOVES_PER_SQLITE_STATEMENT) {
        let per_member = |value: fn(&TierMove) -> &String| -> Expr {
            chunk
                .iter()
                .fold(CaseStatement::new(), |case, m| {
                    case.case(
                        Expr::col(member::Column::Id).eq(m.member_id.as_str()),
                        Expr::val(value(m).as_str()),
                    )
                })
                .into()
        };
        let mut query = member::Entity::update_many()
            .col_expr(member::Column::Tier, per_member(|m| &m.to))
            .col_expr(member::Column::Version, Expr::col(member::Column::Version).add(1))
            .col_expr(member::Column::UpdatedAt, Expr::value(at))
            .filter(member::Column::Id.is_in(chunk.iter().map(|m| m.member_id.as_str())))
            .filter(Expr::col(member::Column::Tier).eq(per_member(|m| &m.from)))
            .into_query();
        query.returning(Query::returning().columns([member::Column::Id, member::Column::Version]));
        moved.extend(read(conn.query_all_raw(backend.build(&query)).await?)?);
    }
    let done: std::collections::HashSet<&str> = moved.iter().map(|(id, _)| id.as_str()).collect();
    let done: Vec<&TierMove> = moves.iter().filter(|m| done.contains(m.member_id.as_str())).collect();
    for chunk in done.chunks(ROWS_PER_SQLITE_INSERT) {
        tier_change::Entity::insert_many(
            chunk
                .iter()
                .map(|m| tier_change_row(&m.member_id, &m.from, &m.to, reason, at)),
        )
        .exec_without_returning(conn)
        .await?;
        outbox::Entity::insert_many(chunk.iter().map(|m| m.event.outbox_row(&m.member_id)))
            .exec_without_returning(conn)
            .await?;
    }
    Ok(moved)
}
