//! Parsed identifiers and small value types of the catalog: SKU and warehouse codes,
//! product and promotion ids, the order ids of reservations, sales channels,
//! merchandising roles, composed titles, tags and category paths.

use std::fmt;

/// A SKU code: 1-64 characters of `A-Z 0-9 - _ .`, starting with a letter or digit,
/// upper-cased.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SkuCode(String);

/// A warehouse code: 1-32 characters of `A-Z 0-9 - _`, starting with a letter or
/// digit, upper-cased.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WarehouseCode(String);

fn code(raw: &str, max: usize, extra: &[char]) -> Result<String, String> {
    let upper = raw.trim().to_ascii_uppercase();
    if upper.is_empty() {
        return Err("is required".into());
    }
    if upper.len() > max {
        return Err(format!("must be at most {max} characters"));
    }
    let mut chars = upper.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || extra.contains(&c));
    if !first_ok || !rest_ok {
        let allowed: String = extra.iter().map(|c| format!(" '{c}'")).collect();
        return Err(format!(
            "must be letters and digits with{allowed}, starting with a letter or digit"
        ));
    }
    Ok(upper)
}

impl SkuCode {
    pub fn parse(raw: &str) -> Result<Self, String> {
        code(raw, 64, &['-', '_', '.']).map(Self)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `skus/{code}`.
    pub fn resource_name(&self) -> String {
        format!("skus/{}", self.0)
    }

    /// Parses `skus/{code}`.
    pub fn from_resource_name(name: &str) -> Result<Self, String> {
        let code = name.strip_prefix("skus/").ok_or("must be skus/{sku_code}")?;
        Self::parse(code)
    }
}

impl WarehouseCode {
    pub fn parse(raw: &str) -> Result<Self, String> {
        code(raw, 32, &['-', '_']).map(Self)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `warehouses/{code}`.
    pub fn resource_name(&self) -> String {
        format!("warehouses/{}", self.0)
    }

    /// Parses `warehouses/{code}`.
    pub fn from_resource_name(name: &str) -> Result<Self, String> {
        let code = name.strip_prefix("warehouses/").ok_or("must be warehouses/{code}")?;
        Self::parse(code)
    }
}

impl fmt::Display for SkuCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for WarehouseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A product's id (a UUID v7).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProductId(String);

impl ProductId {
    pub fn new() -> Self {
        Self(uuid::Uuid::now_v7().to_string())
    }

    /// Parses `products/{product_id}`.
    pub fn from_resource_name(name: &str) -> Result<Self, String> {
        retail_kit::convert::uuid_id(name, "products").map(Self)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `products/{product_id}`.
    pub fn resource_name(&self) -> String {
        format!("products/{}", self.0)
    }
}

impl Default for ProductId {
    fn default() -> Self {
        Self::new()
    }
}

/// A promotion's id (a UUID v7).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PromotionId(String);

impl PromotionId {
    pub fn new() -> Self {
        Self(uuid::Uuid::now_v7().to_string())
    }

    /// Parses `promotions/{promotion_id}`.
    pub fn from_resource_name(name: &str) -> Result<Self, String> {
        retail_kit::convert::uuid_id(name, "promotions").map(Self)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `promotions/{promotion_id}`.
    pub fn resource_name(&self) -> String {
        format!("promotions/{}", self.0)
    }
}

impl Default for PromotionId {
    fn default() -> Self {
        Self::new()
    }
}

/// The order a reservation is for, by the id orders gave it: 1-128 printable ASCII
/// characters (catalog does not rely on the form orders' ids take).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OrderId(String);

impl OrderId {
    pub fn parse(raw: &str) -> Result<Self, &'static str> {
        if raw.is_empty() || raw.len() > 128 || !raw.chars().all(|c| c.is_ascii_graphic()) {
            return Err("must be 1-128 printable ASCII characters without spaces");
        }
        Ok(Self(raw.to_owned()))
    }

    /// Parses `reservations/{order_id}`: a reservation is named by its order.
    pub fn from_reservation_name(name: &str) -> Result<Self, &'static str> {
        let id = name
            .strip_prefix("reservations/")
            .ok_or("must be reservations/{order_id}")?;
        Self::parse(id)
    }

    /// From an id read back from storage (written by this service).
    pub fn from_stored(id: String) -> Self {
        Self(id)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `reservations/{order_id}`.
    pub fn reservation_name(&self) -> String {
        format!("reservations/{}", self.0)
    }
}

impl fmt::Display for OrderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where goods are sold. Store, online and app are consumer channels and price
/// alike; partner sales use the partners' price lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Channel {
    Store,
    Online,
    App,
    Partner,
}

impl Channel {
    pub const ALL: [Channel; 4] = [Channel::Store, Channel::Online, Channel::App, Channel::Partner];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Store => "store",
            Self::Online => "online",
            Self::App => "app",
            Self::Partner => "partner",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }

    pub fn is_consumer(self) -> bool {
        !matches!(self, Self::Partner)
    }
}

/// Merchandising role of a product.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Hero,
    Volume,
    Potential,
    Anchor,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Hero, Role::Volume, Role::Potential, Role::Anchor];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hero => "hero",
            Self::Volume => "volume",
            Self::Potential => "potential",
            Self::Anchor => "anchor",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// The words of a title, in the order they are composed.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TitleParts {
    pub category: Vec<String>,
    pub attribute: Vec<String>,
    pub brand: Vec<String>,
    pub selling_point: Vec<String>,
    pub promotion: Vec<String>,
}

/// Words per part, at most.
pub const MAX_TITLE_WORDS: usize = 20;
/// Characters per word, at most.
pub const MAX_TITLE_WORD_LEN: usize = 60;

impl TitleParts {
    /// The title: brand, attribute, category, selling-point and promotion words,
    /// separated by single spaces (the way shelf labels and search titles read:
    /// "Trailfox lightweight running shoe all-day comfort new season").
    pub fn compose(&self) -> String {
        [
            &self.brand,
            &self.attribute,
            &self.category,
            &self.selling_point,
            &self.promotion,
        ]
        .into_iter()
        .flatten()
        .map(|w| w.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
    }

    /// Checks every part; returns (part name, reason) for the first bad word of each.
    pub fn violations(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        for (name, words) in [
            ("category_words", &self.category),
            ("attribute_words", &self.attribute),
            ("brand_words", &self.brand),
            ("selling_point_words", &self.selling_point),
            ("promotion_words", &self.promotion),
        ] {
            if words.len() > MAX_TITLE_WORDS {
                out.push((name, format!("at most {MAX_TITLE_WORDS} words")));
            } else if let Some(w) = words.iter().find(|w| {
                w.trim().is_empty() || w.chars().count() > MAX_TITLE_WORD_LEN || w.chars().any(char::is_control)
            }) {
                let _ = w;
                out.push((
                    name,
                    format!("words must be 1-{MAX_TITLE_WORD_LEN} characters without control characters"),
                ));
            }
        }
        if self.category.is_empty() {
            out.push(("category_words", "at least one category word is required".into()));
        }
        out
    }
}

/// A tag or category path: `/`-separated segments of lower-case letters, digits,
/// `_`, `-` and `=`, 1-200 characters, for example `scenario/trail` or
/// `footwear/running`.
pub fn path(raw: &str) -> Result<String, String> {
    let p = raw.trim().to_lowercase();
    if p.is_empty() {
        return Err("is required".into());
    }
    if p.len() > 200 {
        return Err("must be at most 200 characters".into());
    }
    let ok = p.split('/').all(|seg| {
        !seg.is_empty()
            && seg
                .chars()
                .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '=' | '.'))
    });
    if !ok {
        return Err("must be non-empty segments separated by '/' of letters, digits, '_', '-', '=', '.'".into());
    }
    Ok(p)
}

/// An ISO-4217 code: three upper-case letters.
pub fn currency(raw: &str) -> Result<String, String> {
    if raw.len() == 3 && raw.chars().all(|c| c.is_ascii_uppercase()) {
        Ok(raw.to_owned())
    } else {
        Err("must be an ISO-4217 code such as EUR".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn sku_codes_are_upper_cased_and_checked() {
        assert_eq!(SkuCode::parse(" shoe-42.red_1 ").unwrap().as_str(), "SHOE-42.RED_1");
        for bad in ["", "-SHOE", "SH OE", "SHOE/1", "ŠHOE", "SHOE;DROP", &"A".repeat(65)] {
            assert!(SkuCode::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            SkuCode::from_resource_name("skus/ab-1").unwrap().resource_name(),
            "skus/AB-1"
        );
        assert!(SkuCode::from_resource_name("AB-1").is_err());
    }

    #[test]
    fn warehouse_codes_allow_no_dots() {
        assert_eq!(WarehouseCode::parse("ber-1").unwrap().as_str(), "BER-1");
        assert!(WarehouseCode::parse("BER.1").is_err());
        assert!(WarehouseCode::from_resource_name("warehouses/").is_err());
    }

    #[test]
    fn product_and_promotion_names_carry_uuids() {
        let id = "0190a0b4-0000-7000-8000-000000000001";
        let p = ProductId::from_resource_name(&format!("products/{}", id.to_uppercase())).unwrap();
        assert_eq!(p.resource_name(), format!("products/{id}"));
        assert_eq!(
            ProductId::from_resource_name("products/x").unwrap_err(),
            "must be products/{product_id} with a UUID id"
        );
        assert_eq!(
            PromotionId::from_resource_name(id).unwrap_err(),
            "must be promotions/{promotion_id}"
        );
        assert_eq!(ProductId::new().as_str().len(), 36);
    }

    #[test]
    fn order_ids_are_printable_ascii_and_name_their_reservation() {
        let id = OrderId::from_reservation_name("reservations/o-1").unwrap();
        assert_eq!(id.as_str(), "o-1");
        assert_eq!(id.reservation_name(), "reservations/o-1");
        for bad in ["", "o 1", "ö", &"a".repeat(129)] {
            assert!(OrderId::parse(bad).is_err(), "{bad:?}");
        }
        assert!(OrderId::from_reservation_name("o-1").is_err());
    }

    #[test]
    fn titles_read_brand_attribute_category_selling_point_promotion() {
        let parts = TitleParts {
            category: vec!["running shoe".into()],
            attribute: vec!["lightweight".into(), "breathable".into()],
            brand: vec!["Trailfox".into()],
            selling_point: vec!["all-day  comfort".into()],
            promotion: vec!["new season".into()],
        };
        assert_eq!(
            parts.compose(),
            "Trailfox lightweight breathable running shoe all-day comfort new season"
        );
        assert!(parts.violations().is_empty());
        assert_eq!(TitleParts::default().violations()[0].0, "category_words");
    }

    #[test]
    fn paths_are_hierarchical() {
        assert_eq!(path("Scenario/Trail").unwrap(), "scenario/trail");
        assert!(path("a//b").is_err());
        assert!(path("/a").is_err());
    }

    #[test]
    fn channels_and_roles_round_trip() {
        for c in Channel::ALL {
            assert_eq!(Channel::parse(c.as_str()), Some(c));
        }
        assert!(!Channel::Partner.is_consumer());
        for r in Role::ALL {
            assert_eq!(Role::parse(r.as_str()), Some(r));
        }
    }

    proptest! {
        #[test]
        fn a_parsed_sku_code_parses_to_itself(raw in "\\PC{0,80}") {
            if let Ok(code) = SkuCode::parse(&raw) {
                prop_assert_eq!(SkuCode::parse(code.as_str()), Ok(code.clone()));
                prop_assert!(code.as_str().len() <= 64);
            }
        }
    }
}
