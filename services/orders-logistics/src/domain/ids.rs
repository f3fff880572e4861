//! Identifiers orders works with, parsed once from resource names at the edge.

use std::fmt;

/// An order's id (a UUID v7: ids sort by creation, which paging relies on).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OrderId(String);

impl OrderId {
    pub fn new() -> Self {
        Self(uuid::Uuid::now_v7().to_string())
    }

    /// From `orders/{order_id}`.
    pub fn parse_name(name: &str) -> Result<Self, String> {
        retail_kit::convert::uuid_id(name, "orders").map(Self)
    }

    /// From an id read back from storage (written by this service).
    pub fn from_stored(id: String) -> Self {
        Self(id)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn resource_name(&self) -> String {
        format!("orders/{}", self.0)
    }
}

impl Default for OrderId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for OrderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A return of an order: `orders/{order_id}/returns/{return_id}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReturnName {
    pub order: OrderId,
    pub id: String,
}

impl ReturnName {
    pub fn parse(name: &str) -> Result<Self, String> {
        const SHAPE: &str = "must be orders/{order_id}/returns/{return_id}";
        let rest = name.strip_prefix("orders/").ok_or(SHAPE)?;
        let (order, ret) = rest.split_once("/returns/").ok_or(SHAPE)?;
        let order = uuid::Uuid::parse_str(order).map_err(|_| SHAPE)?.to_string();
        let id = uuid::Uuid::parse_str(ret).map_err(|_| SHAPE)?.to_string();
        Ok(Self {
            order: OrderId(order),
            id,
        })
    }

    pub fn resource_name(&self) -> String {
        format!("orders/{}/returns/{}", self.order, self.id)
    }
}

/// A member, `members/{member_id}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberId(String);

impl MemberId {
    pub fn parse_name(name: &str) -> Result<Self, String> {
        retail_kit::convert::uuid_id(name, "members").map(Self)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

/// A SKU code as catalog spells it: 1-64 of `A-Z 0-9 - _ .`, starting with a letter
/// or digit, upper-cased.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SkuCode(String);

impl SkuCode {
    /// From `skus/{sku_code}`.
    pub fn parse_name(name: &str) -> Result<Self, String> {
        let code = name
            .strip_prefix("skus/")
            .ok_or("must be skus/{sku_code}")?
            .trim()
            .to_ascii_uppercase();
        let ok = !code.is_empty()
            && code.len() <= 64
            && code.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
            && code
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if ok {
            Ok(Self(code))
        } else {
            Err("must be skus/{sku_code} with letters, digits, '-', '_', '.'".into())
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_into_ids_and_bad_ones_say_the_shape() {
        let id = "0190f5b2-8d3e-7c41-9a6b-2f0e1d3c4b5a";
        assert_eq!(OrderId::parse_name(&format!("orders/{id}")).unwrap().as_str(), id);
        assert!(OrderId::parse_name(id).unwrap_err().contains("orders/{order_id}"));
        assert!(OrderId::parse_name("orders/42").unwrap_err().contains("UUID"));
        let ret = ReturnName::parse(&format!("orders/{id}/returns/{id}")).unwrap();
        assert_eq!(ret.resource_name(), format!("orders/{id}/returns/{id}"));
        assert!(ReturnName::parse(&format!("orders/{id}")).is_err());
        assert!(MemberId::parse_name(&format!("members/{id}")).is_ok());
        assert!(MemberId::parse_name("members/x").is_err());
    }

    #[test]
    fn sku_codes_are_upper_cased_and_checked_like_catalog_does() {
        assert_eq!(SkuCode::parse_name("skus/run-42").unwrap().as_str(), "RUN-42");
        assert_eq!(SkuCode::parse_name("skus/ a.b_c ").unwrap().as_str(), "A.B_C");
        for bad in ["RUN-42", "skus/", "skus/-A", "skus/A B", "skus/ä"] {
            assert!(SkuCode::parse_name(bad).is_err(), "{bad}");
        }
        assert!(SkuCode::parse_name(&format!("skus/{}", "A".repeat(64))).is_ok());
        assert!(SkuCode::parse_name(&format!("skus/{}", "A".repeat(65))).is_err());
    }
}
