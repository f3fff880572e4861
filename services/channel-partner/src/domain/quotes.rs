//! Quotes: the allowed price range of a line from the range table, whether a
//! quote goes out at once or waits for approval, and the quote's states.

use chrono::{DateTime, Utc};

use super::sales::CustomerClass;

/// Whether the customer bought from the partner before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relationship {
    New,
    Existing,
}

impl Relationship {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::New => "new",
            Self::Existing => "existing",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        [Self::New, Self::Existing].into_iter().find(|r| r.as_str() == raw)
    }
}

/// Where a quote is (as stored; expiry is read off `valid_until`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuoteState {
    PendingApproval,
    Issued,
    Approved,
    Rejected,
    Accepted,
    Expired,
}

impl QuoteState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PendingApproval => "pending_approval",
            Self::Issued => "issued",
            Self::Approved => "approved",
            Self::Rejected => "rejected",
            Self::Accepted => "accepted",
            Self::Expired => "expired",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        [
            Self::PendingApproval,
            Self::Issued,
            Self::Approved,
            Self::Rejected,
            Self::Accepted,
            Self::Expired,
        ]
        .into_iter()
        .find(|s| s.as_str() == raw)
    }

    /// The state as seen at `now`: an open quote past `valid_until` has expired.
    pub fn at(self, valid_until: DateTime<Utc>, now: DateTime<Utc>) -> Self {
        match self {
            Self::PendingApproval | Self::Issued | Self::Approved if valid_until <= now => Self::Expired,
            s => s,
        }
    }

    /// Whether the customer may accept it (issued or approved).
    pub fn acceptable(self) -> bool {
        matches!(self, Self::Issued | Self::Approved)
    }
}

/// One row of the range table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeRow {
    pub id: String,
    pub level: String,
    pub class: CustomerClass,
    pub relationship: Relationship,
    /// The volume band's lower bound (minor units).
    pub volume_from_minor: i64,
    pub min_discount_bp: i32,
    pub max_discount_bp: i32,
}

/// The row that applies to a quote: of the partner's level, the customer's
/// class and the relationship, the one with the highest band the expected volume
/// reaches.
pub fn applicable_row<'a>(
    rows: &'a [RangeRow],
    level: &str,
    class: CustomerClass,
    relationship: Relationship,
    expected_volume_minor: i64,
) -> Option<&'a RangeRow> {
    rows.iter()
        .filter(|r| {
            r.level == level
                && r.class == class
                && r.relationship == relationship
                && r.volume_from_minor <= expected_volume_minor
        })
        .max_by_key(|r| r.volume_from_minor)
}

/// The unit prices in range for a list price: `[list x (1 - max), list x (1 -
/// min)]`, the low end rounded up and the high end rounded down, so a price in
/// range never carries more than the most discount or less than the least.
pub fn unit_range(list_minor: i64, min_discount_bp: i32, max_discount_bp: i32) -> (i64, i64) {
    let list = i128::from(list_minor.max(0));
    let low_share = i128::from(10_000 - max_discount_bp.clamp(0, 10_000));
    let high_share = i128::from(10_000 - min_discount_bp.clamp(0, 10_000));
    let low = (list * low_share + 9_999) / 10_000;
    let high = (list * high_share) / 10_000;
    (
        i64::try_from(low).unwrap_or(i64::MAX),
        i64::try_from(high).unwrap_or(i64::MAX),
    )
}

/// A line as quoted and priced against its range.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PricedLine {
    pub sku: String,
    pub quantity: i64,
    pub unit_minor: i64,
    pub list_minor: i64,
    /// The range; both 0 when no row applies.
    pub min_unit_minor: i64,
    pub max_unit_minor: i64,
    pub in_range: bool,
}

impl PricedLine {
    pub fn total_minor(&self) -> i64 {
        self.unit_minor.saturating_mul(self.quantity)
    }
}

/// Prices `(sku, quantity, unit price)` lines at their list prices against
/// `row`: without a row no line is in range.
pub fn price_lines(lines: &[(String, i64, i64)], lists: &[i64], row: Option<&RangeRow>) -> Vec<PricedLine> {
    lines
        .iter()
        .zip(lists)
        .map(|((sku, quantity, unit), list)| {
            let (min_unit_minor, max_unit_minor, in_range) = match row {
                Some(r) => {
                    let (low, high) = unit_range(*list, r.min_discount_bp, r.max_discount_bp);
                    (low, high, low <= *unit && *unit <= high)
                }
                None => (0, 0, false),
            };
            PricedLine {
                sku: sku.clone(),
                quantity: *quantity,
                unit_minor: *unit,
                list_minor: *list,
                min_unit_minor,
                max_unit_minor,
                in_range,
            }
        })
        .collect()
}

/// Issued at once when every line is in range; otherwise pending approval.
pub fn initial_state(lines: &[PricedLine]) -> QuoteState {
    if !lines.is_empty() && lines.iter().all(|l| l.in_range) {
        QuoteState::Issued
    } else {
        QuoteState::PendingApproval
    }
}

#[cfg(test)]
// Amounts in minor units are written major_minor (100_00 = 100.00).
#[allow(clippy::inconsistent_digit_grouping)]
mod tests {
    use super::*;

    fn row(level: &str, from: i64, min: i32, max: i32) -> RangeRow {
        RangeRow {
            id: format!("{level}-{from}"),
            level: level.into(),
            class: CustomerClass::A,
            relationship: Relationship::New,
            volume_from_minor: from,
            min_discount_bp: min,
            max_discount_bp: max,
        }
    }

    #[test]
    fn the_highest_band_reached_applies() {
        let rows = vec![
            row("gold", 0, 0, 500),
            row("gold", 1_000_00, 0, 1_000),
            row("silver", 0, 0, 300),
        ];
        let pick = |v| applicable_row(&rows, "gold", CustomerClass::A, Relationship::New, v).map(|r| r.id.clone());
        assert_eq!(pick(0).as_deref(), Some("gold-0"));
        assert_eq!(pick(99_999).as_deref(), Some("gold-0"));
        assert_eq!(pick(1_000_00).as_deref(), Some("gold-100000"));
        assert_eq!(
            applicable_row(&rows, "gold", CustomerClass::B, Relationship::New, 0),
            None
        );
        assert_eq!(
            applicable_row(&rows, "gold", CustomerClass::A, Relationship::Existing, 0),
            None
        );
    }

    #[test]
    fn range_ends_round_inwards() {
        // 10% to 25% off 99.99: 74.9925 rounds up to 75.00, 89.991 down to 89.99.
        assert_eq!(unit_range(99_99, 1_000, 2_500), (75_00, 89_99));
        assert_eq!(unit_range(100_00, 0, 0), (100_00, 100_00));
        assert_eq!(unit_range(100_00, 0, 10_000), (0, 100_00));
    }

    #[test]
    fn any_line_out_of_range_waits_for_approval() {
        let r = row("gold", 0, 500, 1_500);
        let lines = vec![("a".to_owned(), 2, 90_00), ("b".to_owned(), 1, 50_00)];
        let priced = price_lines(&lines, &[100_00, 50_00], Some(&r));
        assert!(priced[0].in_range);
        assert!(!priced[1].in_range, "no discount is under the least");
        assert_eq!(initial_state(&priced), QuoteState::PendingApproval);
        let priced = price_lines(&lines[..1], &[100_00], Some(&r));
        assert_eq!(initial_state(&priced), QuoteState::Issued);
        let priced = price_lines(&lines[..1], &[100_00], None);
        assert_eq!(initial_state(&priced), QuoteState::PendingApproval);
    }

    #[test]
    fn open_quotes_expire_by_the_clock() {
        let t = DateTime::<Utc>::from_timestamp(1_700_000_000, 0).unwrap_or_default();
        assert_eq!(QuoteState::Issued.at(t, t), QuoteState::Expired);
        assert_eq!(
            QuoteState::Issued.at(t, t - chrono::Duration::seconds(1)),
            QuoteState::Issued
        );
        assert_eq!(QuoteState::Accepted.at(t, t), QuoteState::Accepted);
        assert_eq!(QuoteState::Rejected.at(t, t), QuoteState::Rejected);
    }
}
