//! The level ladder (docs/domain.md, Channel partners): levels earned by trailing
//! 12-month attributed sales against configurable thresholds, each with its
//! privileges. A sale that crosses a threshold upgrades at once; a partner whose
//! sales fell is moved down only at the periodic re-evaluation, and by one level
//! at a time.

use serde::{Deserialize, Serialize};

/// One level and its privileges.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LevelDef {
    pub code: String,
    /// Trailing 12-month attributed sales (minor units) that reach the level.
    pub threshold_minor: i64,
    /// The privileges the level brings.
    #[serde(flatten)]
    pub privileges: Privileges,
}

/// What a level allows: the discount ceiling (the price policy refers special
/// discounts above it to a brand manager), the priority of distributed leads, and
/// the multiplier of points earned on sales.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Privileges {
    /// Basis points (100 = 1%).
    pub discount_ceiling_bp: u32,
    /// Higher first.
    pub lead_priority: u32,
    /// In 1/10000 (10000 = x1).
    pub points_multiplier: u32,
}

/// The ladder, lowest first; the first level starts at 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ladder(Vec<LevelDef>);

/// Why a ladder is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LadderError {
    #[error("the ladder needs at least one level")]
    Empty,
    #[error("the first level must start at 0")]
    FirstNotZero,
    #[error("thresholds must rise strictly from level to level")]
    NotRising,
    #[error("level codes must be 1-32 characters of a-z, 0-9, '_' and unique")]
    BadCode,
}

impl Ladder {
    pub fn new(levels: Vec<LevelDef>) -> Result<Self, LadderError> {
        let first = levels.first().ok_or(LadderError::Empty)?;
        if first.threshold_minor != 0 {
            return Err(LadderError::FirstNotZero);
        }
        if levels.windows(2).any(|w| w[1].threshold_minor <= w[0].threshold_minor) {
            return Err(LadderError::NotRising);
        }
        let code_ok = |c: &str| {
            !c.is_empty()
                && c.len() <= 32
                && c.chars()
                    .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '_')
        };
        let unique = levels
            .iter()
            .enumerate()
            .all(|(i, l)| levels[..i].iter().all(|o| o.code != l.code));
        if !unique || !levels.iter().all(|l| code_ok(&l.code)) {
            return Err(LadderError::BadCode);
        }
        Ok(Self(levels))
    }

    /// `registered`, `silver`, `gold`, `platinum` at 0, 50,000, 200,000 and
    /// 500,000 (major units) of trailing 12-month sales.
    pub fn standard() -> Self {
        let level = |code: &str, major: i64, ceiling: u32, priority: u32, multiplier: u32| LevelDef {
            code: code.into(),
            threshold_minor: major * 100,
            privileges: Privileges {
                discount_ceiling_bp: ceiling,
                lead_priority: priority,
                points_multiplier: multiplier,
            },
        };
        Self(vec![
            level("registered", 0, 500, 1, 10_000),
            level("silver", 50_000, 1_000, 2, 12_500),
            level("gold", 200_000, 1_500, 3, 15_000),
            level("platinum", 500_000, 2_000, 4, 20_000),
        ])
    }

    pub fn levels(&self) -> &[LevelDef] {
        &self.0
    }

    pub fn lowest(&self) -> &LevelDef {
        &self.0[0]
    }

    /// The index of `code`; an unknown code (a level removed from the
    /// configuration) counts as the lowest.
    pub fn index_of(&self, code: &str) -> usize {
        self.0.iter().position(|l| l.code == code).unwrap_or(0)
    }

    pub fn privileges(&self, code: &str) -> Privileges {
        self.0[self.index_of(code)].privileges
    }

    /// The highest level `trailing_minor` reaches.
    pub fn qualified(&self, trailing_minor: i64) -> usize {
        self.0
            .iter()
            .rposition(|l| trailing_minor >= l.threshold_minor)
            .unwrap_or(0)
    }

    /// After a sale: a higher level if the sales reach one, never a lower one.
    pub fn after_sale(&self, current: &str, trailing_minor: i64) -> Option<&LevelDef> {
        let (now, reached) = (self.index_of(current), self.qualified(trailing_minor));
        (reached > now).then(|| &self.0[reached])
    }

    /// At the re-evaluation: up to the level reached, or down by one level.
    pub fn reevaluated(&self, current: &str, trailing_minor: i64) -> Option<&LevelDef> {
        let (now, reached) = (self.index_of(current), self.qualified(trailing_minor));
        let to = if reached > now {
            reached
        } else if reached < now {
            now - 1
        } else {
            return None;
        };
        Some(&self.0[to])
    }
}

/// Why a level changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LevelChangeReason {
    Sales,
    Reevaluation,
}

impl LevelChangeReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sales => "sales",
            Self::Reevaluation => "reevaluation",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: i64 = 100; // one major unit

    #[test]
    fn crossing_a_threshold_upgrades_at_once_even_by_several_levels() {
        let ladder = Ladder::standard();
        assert_eq!(ladder.after_sale("registered", 49_999 * K), None);
        assert_eq!(ladder.after_sale("registered", 50_000 * K).unwrap().code, "silver");
        assert_eq!(ladder.after_sale("registered", 600_000 * K).unwrap().code, "platinum");
        assert_eq!(ladder.after_sale("gold", 10 * K), None, "a sale never downgrades");
    }

    #[test]
    fn re_evaluation_upgrades_fully_but_downgrades_by_one_level() {
        let ladder = Ladder::standard();
        assert_eq!(ladder.reevaluated("platinum", 0).unwrap().code, "gold");
        assert_eq!(ladder.reevaluated("gold", 0).unwrap().code, "silver");
        assert_eq!(ladder.reevaluated("silver", 0).unwrap().code, "registered");
        assert_eq!(ladder.reevaluated("registered", 0), None);
        assert_eq!(ladder.reevaluated("gold", 250_000 * K), None, "still qualifies");
        assert_eq!(ladder.reevaluated("silver", 700_000 * K).unwrap().code, "platinum");
        assert_eq!(ladder.reevaluated("gold", 60_000 * K).unwrap().code, "silver");
    }

    #[test]
    fn privileges_rise_with_the_level_and_an_unknown_code_is_the_lowest() {
        let ladder = Ladder::standard();
        assert_eq!(ladder.privileges("gold").points_multiplier, 15_000);
        assert_eq!(ladder.privileges("gold").discount_ceiling_bp, 1_500);
        assert_eq!(ladder.privileges("gone"), ladder.lowest().privileges);
    }

    #[test]
    fn a_ladder_must_start_at_zero_rise_and_name_levels_once() {
        let mut levels = Ladder::standard().levels().to_vec();
        assert!(Ladder::new(levels.clone()).is_ok());
        levels[2].threshold_minor = levels[1].threshold_minor;
        assert_eq!(Ladder::new(levels.clone()), Err(LadderError::NotRising));
        let mut levels = Ladder::standard().levels().to_vec();
        levels[0].threshold_minor = 1;
        assert_eq!(Ladder::new(levels), Err(LadderError::FirstNotZero));
        let mut levels = Ladder::standard().levels().to_vec();
        levels[3].code = "gold".into();
        assert_eq!(Ladder::new(levels), Err(LadderError::BadCode));
        assert_eq!(Ladder::new(vec![]), Err(LadderError::Empty));
    }
}
