//! Bounds of money amounts, shared by every service that accepts one.

/// The largest amount of money, in minor units, any request may carry: 10^12 (ten
/// billion in a currency with cents). Prices, payments and refunds are all bounded
/// by it, so that sums of them (order totals, a member's spend, points earned from
/// them) stay far from `i64`'s range.
pub const MAX_AMOUNT_MINOR: i64 = 1_000_000_000_000;

/// `amount_minor` if it is positive and at most [`MAX_AMOUNT_MINOR`].
pub fn positive_amount(field: &str, amount_minor: i64) -> Result<i64, crate::error::Violation> {
    if amount_minor <= 0 || amount_minor > MAX_AMOUNT_MINOR {
        return Err(crate::error::Violation::new(
            field,
            format!("must be positive and at most {MAX_AMOUNT_MINOR}"),
        ));
    }
    Ok(amount_minor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_from_one_to_the_bound_pass_and_nothing_else() {
        for ok in [1, MAX_AMOUNT_MINOR] {
            assert_eq!(positive_amount("a", ok).ok(), Some(ok));
        }
        for bad in [i64::MIN, -1, 0, MAX_AMOUNT_MINOR + 1, i64::MAX] {
            assert!(positive_amount("a", bad).is_err(), "{bad}");
        }
    }
}
