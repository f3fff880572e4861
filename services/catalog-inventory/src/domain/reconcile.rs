//! The listing reconciliation of one channel (docs/domain.md, Products, SKUs and listings):
//! listed SKUs without sellable stock, unlisted SKUs with sellable stock, and the same
//! goods listed more than once (listed SKUs whose composed title and variant
//! attributes are equal, ignoring case and spacing).

use std::collections::BTreeMap;

/// One SKU as the reconciliation sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkuFacts {
    pub sku: String,
    pub title: String,
    /// Variant attributes, sorted by key.
    pub attributes: BTreeMap<String, String>,
    pub listed: bool,
    pub sellable: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub listed_without_stock: Vec<String>,
    pub unlisted_with_stock: Vec<String>,
    /// (title, SKUs) with two or more SKUs each.
    pub duplicates: Vec<(String, Vec<String>)>,
}

/// What makes two listings the same goods: normalised title and attributes.
type GoodsKey = (String, Vec<(String, String)>);

fn normal(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase()
}

pub fn reconcile(skus: &[SkuFacts]) -> Report {
    let mut report = Report::default();
    let mut same_goods: BTreeMap<GoodsKey, (String, Vec<String>)> = BTreeMap::new();
    for s in skus {
        if s.listed && s.sellable <= 0 {
            report.listed_without_stock.push(s.sku.clone());
        }
        if !s.listed && s.sellable > 0 {
            report.unlisted_with_stock.push(s.sku.clone());
        }
        if s.listed {
            let key = (
                normal(&s.title),
                s.attributes.iter().map(|(k, v)| (normal(k), normal(v))).collect(),
            );
            same_goods
                .entry(key)
                .or_insert_with(|| (s.title.clone(), Vec::new()))
                .1
                .push(s.sku.clone());
        }
    }
    report.listed_without_stock.sort();
    report.unlisted_with_stock.sort();
    report.duplicates = same_goods
        .into_values()
        .filter(|(_, skus)| skus.len() > 1)
        .map(|(title, mut skus)| {
            skus.sort();
            (title, skus)
        })
        .collect();
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sku(code: &str, title: &str, size: &str, listed: bool, sellable: i64) -> SkuFacts {
        SkuFacts {
            sku: code.into(),
            title: title.into(),
            attributes: [("size".to_owned(), size.to_owned())].into(),
            listed,
            sellable,
        }
    }

    #[test]
    fn finds_every_kind_of_mismatch() {
        let report = reconcile(&[
            sku("A", "Runner", "42", true, 0),
            sku("B", "Runner", "43", true, 5),
            sku("C", "runner ", "43", true, 1),
            sku("D", "Boot", "40", false, 3),
            sku("E", "Boot", "41", false, 0),
            sku("F", "Boot", "40", true, 2),
        ]);
        assert_eq!(report.listed_without_stock, ["A"]);
        assert_eq!(report.unlisted_with_stock, ["D"]);
        assert_eq!(
            report.duplicates,
            [("Runner".to_owned(), vec!["B".to_owned(), "C".to_owned()])]
        );
    }

    #[test]
    fn a_clean_channel_reports_nothing() {
        assert_eq!(
            reconcile(&[sku("A", "Runner", "42", true, 3), sku("B", "Runner", "43", false, 0)]),
            Report::default()
        );
    }
}
