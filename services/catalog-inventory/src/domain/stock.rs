//! Which warehouses hold a reservation (docs/domain.md, Reservations), the states a
//! reservation goes through, and why stock moves.
//!
//! The rule, per line: the first warehouse, by priority then code, whose sellable
//! stock covers the whole line holds it (one parcel per line where possible);
//! otherwise the line is split across warehouses in that order. A line that all
//! warehouses together cannot cover fails the whole reservation.
//!
//! The plan is made from a read of the stock; the store applies it with conditional
//! updates (`sellable >= quantity`), so a concurrent reservation that got there first
//! makes the apply fail and the plan is made again from fresh stock: the database,
//! not this plan, is what never oversells.

use super::codes::{SkuCode, WarehouseCode};

/// Where a reservation stands. Active holds units; committed shipped them out;
/// released and expired gave them back (on request, or when its time ran out).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReservationState {
    Active,
    Committed,
    Released,
    Expired,
}

impl ReservationState {
    pub const ALL: [Self; 4] = [Self::Active, Self::Committed, Self::Released, Self::Expired];

    /// As stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Committed => "committed",
            Self::Released => "released",
            Self::Expired => "expired",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

/// Why stock moved, as its audit row and its `StockChanged` event say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MovementKind {
    /// Goods received into a warehouse.
    Receive,
    /// A correction of one bucket (a count, damage found).
    Adjust,
    /// Units moved between the sellable and unsellable buckets.
    Move,
    /// Sellable units held for an order.
    Reserve,
    /// Held units shipped out.
    Commit,
    /// Held units given back on request.
    Release,
    /// Held units given back when the reservation's time ran out.
    Expire,
    /// Shipped units that came back.
    Return,
}

impl MovementKind {
    pub const ALL: [Self; 8] = [
        Self::Receive,
        Self::Adjust,
        Self::Move,
        Self::Reserve,
        Self::Commit,
        Self::Release,
        Self::Expire,
        Self::Return,
    ];

    /// As stored and published.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Receive => "receive",
            Self::Adjust => "adjust",
            Self::Move => "move",
            Self::Reserve => "reserve",
            Self::Commit => "commit",
            Self::Release => "release",
            Self::Expire => "expire",
            Self::Return => "return",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

/// Sellable stock of one SKU in one warehouse, as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Available {
    pub warehouse: WarehouseCode,
    pub priority: i32,
    pub sellable: i64,
}

/// Units of a line to hold in one warehouse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    pub sku: SkuCode,
    pub warehouse: WarehouseCode,
    pub quantity: i64,
}

/// Why a line cannot be held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shortage {
    pub sku: SkuCode,
    pub requested: i64,
    pub available: i64,
}

/// Allocates one line of `quantity` units of `sku` from `stock`.
pub fn allocate_line(sku: &SkuCode, quantity: i64, stock: &[Available]) -> Result<Vec<Allocation>, Shortage> {
    let mut ordered: Vec<&Available> = stock.iter().filter(|a| a.sellable > 0).collect();
    ordered.sort_by(|a, b| a.priority.cmp(&b.priority).then_with(|| a.warehouse.cmp(&b.warehouse)));
    let available: i64 = ordered.iter().map(|a| a.sellable).sum();
    if available < quantity {
        return Err(Shortage {
            sku: sku.clone(),
            requested: quantity,
            available,
        });
    }
    if let Some(whole) = ordered.iter().find(|a| a.sellable >= quantity) {
        return Ok(vec![Allocation {
            sku: sku.clone(),
            warehouse: whole.warehouse.clone(),
            quantity,
        }]);
    }
    let mut left = quantity;
    let mut out = Vec::new();
    for a in ordered {
        if left == 0 {
            break;
        }
        let take = a.sellable.min(left);
        left -= take;
        out.push(Allocation {
            sku: sku.clone(),
            warehouse: a.warehouse.clone(),
            quantity: take,
        });
    }
    Ok(out)
}

/// How `quantity` returned units of a SKU are spread over its shipped allocations
/// `(warehouse, shipped, already returned)`: back to the warehouses they left, in
/// allocation order. `None` when more would come back than left.
pub fn spread_return(quantity: i64, shipped: &[(WarehouseCode, i64, i64)]) -> Option<Vec<(WarehouseCode, i64)>> {
    let open: i64 = shipped.iter().map(|(_, q, r)| q - r).sum();
    if quantity <= 0 || quantity > open {
        return None;
    }
    let mut left = quantity;
    let mut out = Vec::new();
    for (wh, q, r) in shipped {
        let take = (q - r).min(left);
        if take > 0 {
            out.push((wh.clone(), take));
            left -= take;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn wh(code: &str, priority: i32, sellable: i64) -> Available {
        Available {
            warehouse: WarehouseCode::parse(code).unwrap(),
            priority,
            sellable,
        }
    }

    fn sku() -> SkuCode {
        SkuCode::parse("SKU-1").unwrap()
    }

    #[test]
    fn reservation_states_and_movement_kinds_round_trip_and_refuse_the_unknown() {
        for s in ReservationState::ALL {
            assert_eq!(ReservationState::parse(s.as_str()), Some(s));
        }
        for k in MovementKind::ALL {
            assert_eq!(MovementKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(ReservationState::parse("Active"), None);
        assert_eq!(MovementKind::parse("steal"), None);
    }

    #[test]
    fn the_first_warehouse_that_covers_the_line_holds_it_whole() {
        let stock = [wh("B", 1, 5), wh("A", 2, 50), wh("C", 1, 20)];
        let got = allocate_line(&sku(), 10, &stock).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].warehouse.as_str(), "C");
    }

    #[test]
    fn a_line_no_warehouse_covers_is_split_in_priority_order() {
        let stock = [wh("B", 1, 5), wh("A", 1, 4), wh("C", 0, 3)];
        let got: Vec<_> = allocate_line(&sku(), 10, &stock)
            .unwrap()
            .into_iter()
            .map(|a| (a.warehouse.as_str().to_owned(), a.quantity))
            .collect();
        assert_eq!(got, [("C".into(), 3), ("A".into(), 4), ("B".into(), 3)]);
    }

    #[test]
    fn a_shortage_names_what_is_available() {
        let err = allocate_line(&sku(), 10, &[wh("A", 0, 4), wh("B", 0, -1)]).unwrap_err();
        assert_eq!((err.requested, err.available), (10, 4));
    }

    #[test]
    fn returns_go_back_where_they_left_and_never_exceed_what_shipped() {
        let a = WarehouseCode::parse("A").unwrap();
        let b = WarehouseCode::parse("B").unwrap();
        let shipped = [(a.clone(), 3, 1), (b.clone(), 4, 0)];
        assert_eq!(spread_return(4, &shipped), Some(vec![(a, 2), (b, 2)]));
        assert_eq!(spread_return(7, &shipped), None);
        assert_eq!(spread_return(0, &shipped), None);
    }

    proptest! {
        #[test]
        fn allocations_cover_the_line_within_each_warehouse(
            quantity in 1i64..200,
            stock in proptest::collection::vec((0i32..3, -5i64..100), 0..6),
        ) {
            let stock: Vec<_> = stock.iter().enumerate()
                .map(|(i, (p, s))| wh(&format!("W{i}"), *p, *s)).collect();
            match allocate_line(&sku(), quantity, &stock) {
                Ok(allocs) => {
                    prop_assert_eq!(allocs.iter().map(|a| a.quantity).sum::<i64>(), quantity);
                    for a in &allocs {
                        let have = stock.iter().find(|s| s.warehouse == a.warehouse).unwrap().sellable;
                        prop_assert!(a.quantity > 0 && a.quantity <= have);
                    }
                }
                Err(short) => {
                    let total: i64 = stock.iter().map(|s| s.sellable.max(0)).sum();
                    prop_assert!(total < quantity);
                    prop_assert_eq!(short.available, total);
                }
            }
        }
    }
}
