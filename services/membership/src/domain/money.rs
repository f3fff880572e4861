//! Money is an integer count of minor units plus an ISO-4217 code; never a float.

/// Decimal places of a currency's minor unit (ISO 4217). Unknown codes are rejected
/// by the API before they reach the rules.
pub(crate) fn minor_exponent(currency: &str) -> Option<u32> {
    match currency {
        "JPY" | "KRW" | "VND" | "CLP" | "ISK" | "UGX" | "XAF" | "XOF" => Some(0),
        "BHD" | "KWD" | "OMR" | "JOD" | "TND" | "LYD" | "IQD" => Some(3),
        c if c.len() == 3 && c.chars().all(|ch| ch.is_ascii_uppercase()) => Some(2),
        _ => None,
    }
}

/// Fixed-point factor with four decimals: 1.5 is `Factor(15_000)`. Multipliers and
/// rates are configured this way so that point arithmetic stays exact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub(crate) struct Factor(pub u32);

impl Factor {
    pub(crate) const ONE: Factor = Factor(10_000);
    pub(crate) const SCALE: i128 = 10_000;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exponents_follow_iso_4217() {
        assert_eq!(minor_exponent("EUR"), Some(2));
        assert_eq!(minor_exponent("JPY"), Some(0));
        assert_eq!(minor_exponent("KWD"), Some(3));
        assert_eq!(minor_exponent("eur"), None);
        assert_eq!(minor_exponent("EURO"), None);
    }
}
