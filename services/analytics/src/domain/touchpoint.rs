//! Touchpoints: store and online events no service owns, their kinds, what each
//! must carry, and the checks that reject one event while the rest of its batch
//! is kept.

/// Kinds of touchpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    DoorPassed,
    DoorEntered,
    AislesSurveyed,
    AislePassed,
    FloorEntered,
    FloorWentUp,
    ZonePassed,
    ZoneStayed,
    TryOn,
    ShelfTouch,
    StaffSteps,
    StaffServed,
    StaffShown,
    StaffTryOn,
    PosReceipt,
    OnlineReach,
    OnlineVisit,
    OnlineInquiry,
    OnlineAddToCart,
    OnlineImpression,
    OnlineClick,
}

/// What a kind needs besides its id and time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Needs {
    pub store: bool,
    pub place: bool,
    pub sku: bool,
    pub subject: bool,
    pub staff: bool,
}

const fn needs(store: bool, place: bool, sku: bool, subject: bool, staff: bool) -> Needs {
    Needs {
        store,
        place,
        sku,
        subject,
        staff,
    }
}

impl Kind {
    pub const ALL: [Kind; 21] = [
        Self::DoorPassed,
        Self::DoorEntered,
        Self::AislesSurveyed,
        Self::AislePassed,
        Self::FloorEntered,
        Self::FloorWentUp,
        Self::ZonePassed,
        Self::ZoneStayed,
        Self::TryOn,
        Self::ShelfTouch,
        Self::StaffSteps,
        Self::StaffServed,
        Self::StaffShown,
        Self::StaffTryOn,
        Self::PosReceipt,
        Self::OnlineReach,
        Self::OnlineVisit,
        Self::OnlineInquiry,
        Self::OnlineAddToCart,
        Self::OnlineImpression,
        Self::OnlineClick,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::DoorPassed => "door_passed",
            Self::DoorEntered => "door_entered",
            Self::AislesSurveyed => "aisle_surveyed",
            Self::AislePassed => "aisle_passed",
            Self::FloorEntered => "floor_entered",
            Self::FloorWentUp => "floor_went_up",
            Self::ZonePassed => "zone_passed",
            Self::ZoneStayed => "zone_stayed",
            Self::TryOn => "try_on",
            Self::ShelfTouch => "shelf_touch",
            Self::StaffSteps => "staff_steps",
            Self::StaffServed => "staff_served",
            Self::StaffShown => "staff_shown",
            Self::StaffTryOn => "staff_try_on",
            Self::PosReceipt => "pos_receipt",
            Self::OnlineReach => "online_reach",
            Self::OnlineVisit => "online_visit",
            Self::OnlineInquiry => "online_inquiry",
            Self::OnlineAddToCart => "online_add_to_cart",
            Self::OnlineImpression => "online_impression",
            Self::OnlineClick => "online_click",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The fields a kind must carry.
    pub fn needs(self) -> Needs {
        match self {
            Self::DoorPassed | Self::DoorEntered => needs(true, false, false, false, false),
            Self::AislesSurveyed | Self::AislePassed | Self::FloorEntered | Self::FloorWentUp => {
                needs(true, true, false, false, false)
            }
            Self::ZonePassed | Self::ZoneStayed => needs(true, true, false, false, false),
            Self::TryOn | Self::ShelfTouch => needs(true, false, true, true, false),
            Self::StaffSteps | Self::StaffServed | Self::StaffShown | Self::StaffTryOn => {
                needs(true, false, false, false, true)
            }
            Self::PosReceipt => needs(true, false, false, false, false),
            Self::OnlineReach | Self::OnlineInquiry => needs(false, false, false, false, false),
            Self::OnlineVisit => needs(false, false, false, true, false),
            Self::OnlineAddToCart | Self::OnlineImpression | Self::OnlineClick => {
                needs(false, false, true, false, false)
            }
        }
    }
}

/// A touchpoint as ingested.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Raw {
    pub event_id: String,
    pub kind: String,
    /// Seconds since the epoch; `None` when missing.
    pub at: Option<i64>,
    pub store: String,
    pub place: String,
    pub sku: String,
    pub subject: String,
    pub staff: String,
    pub count: i64,
    pub seconds: i64,
    pub reception_seconds: i64,
    pub amount_minor: i64,
    pub skus: Vec<String>,
    pub home_page: bool,
}

/// A touchpoint that passed the checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Touchpoint {
    pub event_id: String,
    pub kind: Kind,
    pub at: i64,
    pub store: String,
    pub place: String,
    pub sku: String,
    pub subject: String,
    pub staff: String,
    /// At least 1.
    pub count: i64,
    pub seconds: i64,
    pub reception_seconds: i64,
    pub amount_minor: i64,
    pub skus: Vec<String>,
    pub home_page: bool,
}

/// The time window a touchpoint must fall in, against the time it arrives.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub now: i64,
    pub lateness: i64,
    pub future_skew: i64,
}

/// Longest id or code.
pub const MAX_TEXT: usize = 128;
/// Most SKUs on one receipt.
pub const MAX_RECEIPT_SKUS: usize = 200;
/// Bound of counts and amounts: a device's figure above it is a fault.
pub const MAX_FIGURE: i64 = 1_000_000_000;

/// Checks one touchpoint: the first fault as `(field, reason)`.
pub fn check(raw: Raw, window: Window) -> Result<Touchpoint, (&'static str, String)> {
    let id = raw.event_id.trim();
    if id.is_empty() || id.len() > MAX_TEXT {
        return Err(("event_id", format!("required, at most {MAX_TEXT} characters")));
    }
    let Some(kind) = Kind::parse(&raw.kind) else {
        return Err(("kind", format!("unknown kind {:?}", truncate(&raw.kind))));
    };
    let Some(at) = raw.at else {
        return Err(("occur_time", "required".into()));
    };
    if at > window.now + window.future_skew {
        return Err((
            "occur_time",
            format!("more than {} s in the future", window.future_skew),
        ));
    }
    if at < window.now - window.lateness {
        return Err((
            "occur_time",
            format!("older than the lateness window of {} s", window.lateness),
        ));
    }
    for (field, value) in [
        ("count", raw.count),
        ("seconds", raw.seconds),
        ("reception_seconds", raw.reception_seconds),
        ("amount_minor", raw.amount_minor),
    ] {
        if value < 0 {
            return Err((field, "must not be negative".into()));
        }
        if value > MAX_FIGURE {
            return Err((field, format!("at most {MAX_FIGURE}")));
        }
    }
    let need = kind.needs();
    for (field, value, required) in [
        ("store", &raw.store, need.store),
        ("place", &raw.place, need.place),
        ("sku_code", &raw.sku, need.sku),
        ("subject", &raw.subject, need.subject),
        ("staff_id", &raw.staff, need.staff),
    ] {
        if value.len() > MAX_TEXT {
            return Err((field, format!("at most {MAX_TEXT} characters")));
        }
        if required && value.trim().is_empty() {
            return Err((field, format!("required for {}", kind.as_str())));
        }
    }
    if raw.skus.len() > MAX_RECEIPT_SKUS || raw.skus.iter().any(|s| s.is_empty() || s.len() > MAX_TEXT) {
        return Err((
            "sku_codes",
            format!("at most {MAX_RECEIPT_SKUS} codes of 1 to {MAX_TEXT} characters"),
        ));
    }
    Ok(Touchpoint {
        event_id: id.to_owned(),
        kind,
        at,
        store: raw.store.trim().to_owned(),
        place: raw.place.trim().to_owned(),
        sku: raw.sku.trim().to_owned(),
        subject: raw.subject.trim().to_owned(),
        staff: raw.staff.trim().to_owned(),
        count: raw.count.max(1),
        seconds: raw.seconds,
        reception_seconds: raw.reception_seconds,
        amount_minor: raw.amount_minor,
        skus: raw.skus,
        home_page: raw.home_page,
    })
}

fn truncate(s: &str) -> String {
    s.chars().take(40).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Window = Window {
        now: 1_000_000,
        lateness: 3_600,
        future_skew: 300,
    };

    fn raw(kind: &str) -> Raw {
        Raw {
            event_id: "e-1".into(),
            kind: kind.into(),
            at: Some(1_000_000),
            store: "S1".into(),
            sku: "SKU-1".into(),
            subject: "shopper-1".into(),
            ..Default::default()
        }
    }

    #[test]
    fn every_kind_round_trips_its_name() {
        for kind in Kind::ALL {
            assert_eq!(Kind::parse(kind.as_str()), Some(kind));
        }
    }

    #[test]
    fn a_good_touchpoint_passes_with_count_at_least_one() {
        let t = check(raw("try_on"), WINDOW).unwrap();
        assert_eq!((t.kind, t.count), (Kind::TryOn, 1));
    }

    #[test]
    fn faults_name_their_field() {
        let field = |r: Raw| check(r, WINDOW).unwrap_err().0;
        assert_eq!(field(raw("teleport")), "kind");
        assert_eq!(
            field(Raw {
                at: Some(1_000_301),
                ..raw("try_on")
            }),
            "occur_time"
        );
        // At the edge of the skew allowance it is accepted.
        assert!(
            check(
                Raw {
                    at: Some(1_000_300),
                    ..raw("try_on")
                },
                WINDOW
            )
            .is_ok()
        );
        assert_eq!(
            field(Raw {
                at: Some(1_000_000 - 3_601),
                ..raw("try_on")
            }),
            "occur_time"
        );
        assert_eq!(
            field(Raw {
                at: None,
                ..raw("try_on")
            }),
            "occur_time"
        );
        assert_eq!(
            field(Raw {
                count: -1,
                ..raw("door_entered")
            }),
            "count"
        );
        assert_eq!(
            field(Raw {
                amount_minor: -5,
                ..raw("pos_receipt")
            }),
            "amount_minor"
        );
        assert_eq!(
            field(Raw {
                sku: String::new(),
                ..raw("try_on")
            }),
            "sku_code"
        );
        assert_eq!(field(raw("zone_stayed")), "place");
        assert_eq!(field(raw("staff_steps")), "staff_id");
        assert_eq!(
            field(Raw {
                event_id: " ".into(),
                ..raw("try_on")
            }),
            "event_id"
        );
    }
}
