//! Member fields parsed into normalised values: identifiers (phone, email, card,
//! external id), tags, consent channels, profile attributes.

use retail_kit::error::Violation;

/// Identifiers per member, at most.
pub(crate) const MAX_IDENTIFIERS: usize = retail_kit::limits::MAX_IDENTIFIERS;
/// Tags per member, at most; and per request.
pub(crate) const MAX_TAGS: usize = 100;

fn violation(field: &str, description: impl Into<String>) -> Violation {
    Violation::new(field, description)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum IdentifierKind {
    Phone,
    Email,
    Card,
    External,
    /// A device id (app installation, a phone seen by Wi-Fi).
    Device,
    /// An RFID card or tag.
    Rfid,
    /// The id a beacon reports for a phone.
    Beacon,
}

impl IdentifierKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Phone => "phone",
            Self::Email => "email",
            Self::Card => "card",
            Self::External => "external",
            Self::Device => "device",
            Self::Rfid => "rfid",
            Self::Beacon => "beacon",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        match s {
            "phone" => Some(Self::Phone),
            "email" => Some(Self::Email),
            "card" => Some(Self::Card),
            "external" => Some(Self::External),
            "device" => Some(Self::Device),
            "rfid" => Some(Self::Rfid),
            "beacon" => Some(Self::Beacon),
            _ => None,
        }
    }

    /// Whether an anonymous contact may be kept by this kind: device, RFID, beacon
    /// and channel ids, which carry no personal data. Phone numbers, email
    /// addresses and loyalty cards only ever recognise members.
    pub(crate) fn anonymous(self) -> bool {
        matches!(self, Self::External | Self::Device | Self::Rfid | Self::Beacon)
    }
}

/// A normalised identifier: the same person typing `+49 151 1234-5678` or
/// `+4915112345678` is recognised as one.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Identifier {
    pub(crate) kind: IdentifierKind,
    /// Empty except for external ids.
    pub(crate) channel: String,
    pub(crate) value: String,
}

impl Identifier {
    pub(crate) fn parse(field: &str, kind: IdentifierKind, channel: &str, raw: &str) -> Result<Self, Violation> {
        let value_field = format!("{field}.value");
        let raw = raw.trim();
        if raw.is_empty() {
            return Err(violation(&value_field, "is required"));
        }
        if raw.len() > retail_kit::limits::MAX_IDENTIFIER_BYTES {
            return Err(violation(&value_field, "must be at most 128 characters"));
        }
        let (channel, value) = match kind {
            IdentifierKind::Phone => {
                let digits: String = raw
                    .chars()
                    .filter(|c| !matches!(c, ' ' | '-' | '(' | ')' | '.'))
                    .collect();
                let ok = digits.starts_with('+')
                    && digits.len() >= 8
                    && digits.len() <= 16
                    && digits[1..].chars().all(|c| c.is_ascii_digit())
                    && !digits[1..].starts_with('0');
                if !ok {
                    return Err(violation(
                        &value_field,
                        "must be a phone number in E.164 form, e.g. +4915112345678",
                    ));
                }
                (String::new(), digits)
            }
            IdentifierKind::Email => {
                let email = raw.to_lowercase();
                let ok = match email.split_once('@') {
                    Some((local, domain)) => {
                        !local.is_empty()
                            && !domain.contains('@')
                            && domain.contains('.')
                            && !domain.starts_with('.')
                            && !domain.ends_with('.')
                            && !email.chars().any(|c| c.is_whitespace() || c.is_control())
                    }
                    None => false,
                };
                if !ok {
                    return Err(violation(&value_field, "must be an email address"));
                }
                (String::new(), email)
            }
            IdentifierKind::Card => {
                let card: String = raw.chars().filter(|c| *c != ' ' && *c != '-').collect();
                if card.len() < 6 || card.len() > 32 || !card.chars().all(|c| c.is_ascii_alphanumeric()) {
                    return Err(violation(&value_field, "must be 6-32 letters or digits"));
                }
                (String::new(), card.to_uppercase())
            }
            IdentifierKind::External => {
                let channel = channel.trim().to_lowercase();
                if channel.is_empty()
                    || channel.len() > 32
                    || !channel
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                {
                    return Err(violation(
                        &format!("{field}.channel"),
                        "must be 1-32 characters of a-z, 0-9, '_' for external ids",
                    ));
                }
                if raw.chars().any(|c| c.is_control() || c.is_whitespace()) {
                    return Err(violation(&value_field, "must not contain spaces or control characters"));
                }
                (channel, raw.to_owned())
            }
            IdentifierKind::Device | IdentifierKind::Rfid | IdentifierKind::Beacon => {
                if raw.chars().any(|c| c.is_control() || c.is_whitespace()) {
                    return Err(violation(&value_field, "must not contain spaces or control characters"));
                }
                // RFID and beacon ids are hex or alphanumeric codes printed in either case.
                let value = if kind == IdentifierKind::Device {
                    raw.to_owned()
                } else {
                    raw.to_uppercase()
                };
                (String::new(), value)
            }
        };
        Ok(Self { kind, channel, value })
    }

    /// The cache key of this identifier: a hash, so neither Redis keys nor the
    /// invalidation messages carry phone numbers or email addresses.
    pub(crate) fn cache_key(&self) -> String {
        let plain = format!("{}:{}:{}", self.kind.as_str(), self.channel, self.value);
        format!("ident:{}", retail_kit::convert::sha256_hex(plain.as_bytes()))
    }
}

/// Where a touch happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scene {
    Store,
    Online,
    PartnerOutlet,
}

impl Scene {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Store => "store",
            Self::Online => "online",
            Self::PartnerOutlet => "partner_outlet",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        [Self::Store, Self::Online, Self::PartnerOutlet]
            .into_iter()
            .find(|k| k.as_str() == s)
    }

    /// A physical place a person enters: a check-in here is a scene trigger.
    pub(crate) fn physical(self) -> bool {
        matches!(self, Self::Store | Self::PartnerOutlet)
    }
}

/// What a touch was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TouchKind {
    CheckIn,
    Visit,
    ViewProduct,
    TryProduct,
}

impl TouchKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::CheckIn => "check_in",
            Self::Visit => "visit",
            Self::ViewProduct => "view_product",
            Self::TryProduct => "try_product",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        [Self::CheckIn, Self::Visit, Self::ViewProduct, Self::TryProduct]
            .into_iter()
            .find(|k| k.as_str() == s)
    }

    /// Whether the touch is about a product (which it then names).
    pub(crate) fn about_product(self) -> bool {
        matches!(self, Self::ViewProduct | Self::TryProduct)
    }
}

/// Consent channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum ConsentChannel {
    Sms,
    Email,
    AppPush,
    Social,
}

impl ConsentChannel {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Sms => "sms",
            Self::Email => "email",
            Self::AppPush => "app_push",
            Self::Social => "social",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        match s {
            "sms" => Some(Self::Sms),
            "email" => Some(Self::Email),
            "app_push" => Some(Self::AppPush),
            "social" => Some(Self::Social),
            _ => None,
        }
    }
}

/// Tag paths: 1-8 segments of `a-z 0-9 _ -` joined by `/`, at most 200 characters.
pub(crate) fn tag_path(field: &str, raw: &str) -> Result<String, Violation> {
    let path = raw.trim().to_lowercase();
    let segments: Vec<_> = path.split('/').collect();
    let ok = !path.is_empty()
        && path.len() <= 200
        && segments.len() <= 8
        && segments.iter().all(|s| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
        });
    if ok {
        Ok(path)
    } else {
        Err(violation(
            field,
            "must be 1-8 segments of a-z, 0-9, '_', '-' separated by '/'",
        ))
    }
}

/// Whether `path` is `prefix` or lies below it: the rule the member list's tag
/// filter applies in SQL (`path = prefix OR path LIKE prefix/%`).
#[cfg(test)]
pub(crate) fn tag_matches(path: &str, prefix: &str) -> bool {
    path == prefix || path.strip_prefix(prefix).is_some_and(|rest| rest.starts_with('/'))
}

/// ISO date `YYYY-MM-DD`, not in the future; empty = unknown.
pub(crate) fn birth_date(
    field: &str,
    raw: &str,
    today: chrono::NaiveDate,
) -> Result<Option<chrono::NaiveDate>, Violation> {
    if raw.trim().is_empty() {
        return Ok(None);
    }
    match chrono::NaiveDate::parse_from_str(raw.trim(), "%Y-%m-%d") {
        Ok(date) if date <= today && date.year_ce().1 >= 1900 => Ok(Some(date)),
        _ => Err(violation(field, "must be a past date YYYY-MM-DD")),
    }
}

use chrono::Datelike;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn phones_are_normalised_to_e164() {
        let a = Identifier::parse("i", IdentifierKind::Phone, "", "+49 151 1234-5678").unwrap();
        let b = Identifier::parse("i", IdentifierKind::Phone, "", "+4915112345678").unwrap();
        assert_eq!(a, b);
        for bad in ["015112345678", "+0151", "+49abc12345", "+", "+123456789012345678"] {
            assert!(Identifier::parse("i", IdentifierKind::Phone, "", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn emails_cards_and_external_ids_are_checked() {
        assert_eq!(
            Identifier::parse("i", IdentifierKind::Email, "", "Ann@Example.com")
                .unwrap()
                .value,
            "ann@example.com"
        );
        for bad in ["ann", "ann@example", "@example.com", "a@b@c.de", "a b@c.de"] {
            assert!(Identifier::parse("i", IdentifierKind::Email, "", bad).is_err(), "{bad}");
        }
        assert_eq!(
            Identifier::parse("i", IdentifierKind::Card, "", "ab12-3456")
                .unwrap()
                .value,
            "AB123456"
        );
        assert!(Identifier::parse("i", IdentifierKind::External, "", "x1").is_err());
        let ext = Identifier::parse("i", IdentifierKind::External, "App", "u-1").unwrap();
        assert_eq!((ext.channel.as_str(), ext.value.as_str()), ("app", "u-1"));
    }

    #[test]
    fn device_rfid_and_beacon_ids_keep_no_personal_data_and_open_contacts() {
        let rfid = Identifier::parse("i", IdentifierKind::Rfid, "ignored", " e200 ").unwrap();
        assert_eq!((rfid.channel.as_str(), rfid.value.as_str()), ("", "E200"));
        assert_eq!(
            Identifier::parse("i", IdentifierKind::Device, "", "Dev-1")
                .unwrap()
                .value,
            "Dev-1"
        );
        assert!(Identifier::parse("i", IdentifierKind::Beacon, "", "a b").is_err());
        for kind in [
            IdentifierKind::Device,
            IdentifierKind::Rfid,
            IdentifierKind::Beacon,
            IdentifierKind::External,
        ] {
            assert!(kind.anonymous());
            assert_eq!(IdentifierKind::parse(kind.as_str()), Some(kind));
        }
        for kind in [IdentifierKind::Phone, IdentifierKind::Email, IdentifierKind::Card] {
            assert!(!kind.anonymous());
        }
        assert!(Scene::Store.physical() && Scene::PartnerOutlet.physical() && !Scene::Online.physical());
        assert!(TouchKind::TryProduct.about_product() && !TouchKind::CheckIn.about_product());
    }

    #[test]
    fn tag_paths_are_hierarchical() {
        assert_eq!(
            tag_path("t", "Interest/Outdoor/Hiking").unwrap(),
            "interest/outdoor/hiking"
        );
        assert!(tag_path("t", "a//b").is_err());
        assert!(tag_path("t", "").is_err());
        assert!(tag_matches("interest/outdoor/hiking", "interest/outdoor"));
        assert!(!tag_matches("interest/outdoorsy", "interest/outdoor"));
    }

    #[test]
    fn birth_dates_are_past_iso_dates() {
        let today = chrono::NaiveDate::from_ymd_opt(2026, 11, 22).unwrap();
        assert!(birth_date("b", "1990-02-28", today).unwrap().is_some());
        assert!(birth_date("b", "2030-01-01", today).is_err());
        assert!(birth_date("b", "1990-02-30", today).is_err());
        assert_eq!(birth_date("b", "", today).unwrap(), None);
    }

    proptest! {
        #[test]
        fn identifier_parsing_never_panics(s in ".{0,200}", c in ".{0,40}") {
            for kind in [IdentifierKind::Phone, IdentifierKind::Email, IdentifierKind::Card, IdentifierKind::External, IdentifierKind::Device, IdentifierKind::Rfid, IdentifierKind::Beacon] {
                let _ = Identifier::parse("i", kind, &c, &s);
            }
            let _ = tag_path("t", &s);
        }
    }
}
