//! The customer lifecycle relative to `as_of` and a window W (docs/domain.md,
//! Lifecycle), computed from a member's purchase times, and the direction of a
//! move between two states.

use super::DAY;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum State {
    NewOnce,
    NewRepeat,
    OldRepeat,
    OldOnce,
    Silent,
    Sleeping,
    Lost,
    Prospect,
}

impl State {
    pub const ALL: [State; 8] = [
        Self::NewOnce,
        Self::NewRepeat,
        Self::OldRepeat,
        Self::OldOnce,
        Self::Silent,
        Self::Sleeping,
        Self::Lost,
        Self::Prospect,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::NewOnce => "new_once",
            Self::NewRepeat => "new_repeat",
            Self::OldRepeat => "old_repeat",
            Self::OldOnce => "old_once",
            Self::Silent => "silent",
            Self::Sleeping => "sleeping",
            Self::Lost => "lost",
            Self::Prospect => "prospect",
        }
    }

    pub fn is_active(self) -> bool {
        matches!(self, Self::NewOnce | Self::NewRepeat | Self::OldRepeat | Self::OldOnce)
    }

    /// Has bought and is not lost: counts among the valid members churn is
    /// measured against.
    pub fn is_valid(self) -> bool {
        !matches!(self, Self::Lost | Self::Prospect)
    }

    /// Closeness to buying: active 3, silent 2, sleeping 1, lost 0, prospect -1.
    fn level(self) -> i8 {
        match self {
            s if s.is_active() => 3,
            Self::Silent => 2,
            Self::Sleeping => 1,
            Self::Lost => 0,
            _ => -1,
        }
    }
}

/// The state at `as_of` of a member with ascending purchase `times` (seconds; those
/// after `as_of` are ignored), window `w_days`.
pub fn state(times: &[i64], as_of: i64, w_days: i64) -> State {
    let w = w_days * DAY;
    let past: Vec<i64> = times.iter().copied().filter(|t| *t <= as_of).collect();
    let (Some(first), Some(last)) = (past.first(), past.last()) else {
        return State::Prospect;
    };
    let within = |from: i64| past.iter().filter(|t| **t > as_of - from).count();
    let in_w = within(w);
    if in_w > 0 {
        let new = *first > as_of - w;
        return match (new, in_w >= 2) {
            (true, false) => State::NewOnce,
            (true, true) => State::NewRepeat,
            (false, true) => State::OldRepeat,
            (false, false) => State::OldOnce,
        };
    }
    let since = as_of - last;
    if since <= 2 * w {
        State::Silent
    } else if since <= 4 * w {
        State::Sleeping
    } else {
        State::Lost
    }
}

/// "forward" towards buying, "backward" away from it, "same" level.
pub fn direction(from: State, to: State) -> &'static str {
    match to.level().cmp(&from.level()) {
        std::cmp::Ordering::Greater => "forward",
        std::cmp::Ordering::Less => "backward",
        std::cmp::Ordering::Equal => "same",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_000 * DAY;

    fn days_ago(d: &[i64]) -> Vec<i64> {
        let mut t: Vec<i64> = d.iter().map(|x| NOW - x * DAY).collect();
        t.sort();
        t
    }

    #[test]
    fn every_state_by_hand_with_a_90_day_window() {
        let s = |d: &[i64]| state(&days_ago(d), NOW, 90);
        assert_eq!(s(&[]), State::Prospect);
        assert_eq!(s(&[10]), State::NewOnce);
        assert_eq!(s(&[10, 80]), State::NewRepeat);
        assert_eq!(s(&[10, 20, 200]), State::OldRepeat);
        assert_eq!(s(&[10, 200]), State::OldOnce);
        // 90 days ago is outside (as_of - W, as_of]; 180 is still silent.
        assert_eq!(s(&[90]), State::Silent);
        assert_eq!(s(&[180]), State::Silent);
        assert_eq!(s(&[181]), State::Sleeping);
        assert_eq!(s(&[360]), State::Sleeping);
        assert_eq!(s(&[361]), State::Lost);
        // A purchase after as_of does not count.
        assert_eq!(state(&[NOW + DAY], NOW, 90), State::Prospect);
    }

    #[test]
    fn moves_towards_buying_are_forward() {
        assert_eq!(direction(State::Sleeping, State::OldOnce), "forward");
        assert_eq!(direction(State::Prospect, State::NewOnce), "forward");
        assert_eq!(direction(State::Silent, State::Lost), "backward");
        assert_eq!(direction(State::NewOnce, State::OldRepeat), "same");
    }
}
