//! Returns: a line may come back up to the units bought and not already in an earlier
//! return; the refund is the lines' paid unit prices times the units.

use std::collections::HashMap;

/// The state of a return: `requested -> received -> refunded`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReturnState {
    Requested,
    Received,
    Refunded,
}

impl ReturnState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Requested => "requested",
            Self::Received => "received",
            Self::Refunded => "refunded",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Requested, Self::Received, Self::Refunded]
            .into_iter()
            .find(|r| r.as_str() == s)
    }
}

/// A line of an order as returns see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bought {
    pub sku: String,
    pub quantity: i64,
    pub unit_minor: i64,
    /// The line's discounts together (partner sales priced by the price policy).
    pub discount_minor: i64,
    /// Units in earlier returns.
    pub returned: i64,
}

impl Bought {
    /// What the first `units` of the line cost: the unit price times the units,
    /// less their share of the discount (rounded down), so that returning every
    /// unit, in any number of returns, refunds exactly the line's total.
    pub fn paid_for(&self, units: i64) -> i128 {
        let units = i128::from(units.clamp(0, self.quantity.max(0)));
        let share = if self.quantity > 0 {
            i128::from(self.discount_minor) * units / i128::from(self.quantity)
        } else {
            0
        };
        i128::from(self.unit_minor) * units - share
    }
}

/// Checks a return's lines against what was bought; returns the refund amount or, per
/// line index, why it cannot come back.
pub fn check(bought: &[Bought], lines: &[(String, i64)]) -> Result<i64, Vec<(usize, String)>> {
    let by_sku: HashMap<&str, &Bought> = bought.iter().map(|b| (b.sku.as_str(), b)).collect();
    let mut problems = Vec::new();
    let mut refund: i128 = 0;
    for (i, (sku, q)) in lines.iter().enumerate() {
        match by_sku.get(sku.as_str()) {
            None => problems.push((i, format!("skus/{sku} is not part of the order"))),
            Some(b) if *q > b.quantity - b.returned => problems.push((
                i,
                format!(
                    "only {} of skus/{sku} can still come back",
                    (b.quantity - b.returned).max(0)
                ),
            )),
            Some(b) => refund += b.paid_for(b.returned + *q) - b.paid_for(b.returned),
        }
    }
    if problems.is_empty() {
        Ok(refund.clamp(0, i64::MAX as i128) as i64)
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bought() -> Vec<Bought> {
        vec![
            Bought {
                sku: "A".into(),
                quantity: 3,
                unit_minor: 1_000,
                discount_minor: 0,
                returned: 1,
            },
            Bought {
                sku: "B".into(),
                quantity: 1,
                unit_minor: 2_500,
                discount_minor: 0,
                returned: 0,
            },
        ]
    }

    #[test]
    fn the_refund_is_the_paid_unit_prices() {
        assert_eq!(check(&bought(), &[("A".into(), 2), ("B".into(), 1)]), Ok(4_500));
    }

    #[test]
    fn returns_of_a_discounted_line_in_any_split_refund_exactly_its_total() {
        // Every way to return 7 units in steps, for several discounts.
        for discount in [0, 1, 333, 6_999, 7_000] {
            for first in 1..=7 {
                for second in 0..=(7 - first) {
                    let mut line = Bought {
                        sku: "A".into(),
                        quantity: 7,
                        unit_minor: 1_000,
                        discount_minor: discount,
                        returned: 0,
                    };
                    let mut refunded = 0;
                    for step in [first, second, 7 - first - second] {
                        if step == 0 {
                            continue;
                        }
                        let r = check(std::slice::from_ref(&line), &[("A".into(), step)]).unwrap();
                        assert!(r >= 0);
                        refunded += r;
                        line.returned += step;
                    }
                    assert_eq!(refunded, 7_000 - discount, "discount {discount}, {first}+{second}");
                }
            }
        }
    }

    #[test]
    fn more_than_bought_or_unknown_lines_are_refused() {
        let err = check(&bought(), &[("A".into(), 3), ("C".into(), 1)]).unwrap_err();
        assert_eq!(err.iter().map(|(i, _)| *i).collect::<Vec<_>>(), [0, 1]);
    }
}
