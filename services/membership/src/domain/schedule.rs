//! Recurring schedules of planned campaigns (docs/domain.md, Engagement): every N
//! days, weekly on given weekdays or monthly on a day, at a time of day in UTC,
//! until a time or for a number of occurrences, always within the campaign's window.
//!
//! The occurrences are a fixed series computed from the window's start, so they do
//! not depend on when the campaign job happens to run: a run finds the first
//! occurrence after the previous one it ran, and occurrences missed while nothing
//! ran are skipped (the next run after them stands for all of them). Times are UTC
//! throughout, so there are no daylight-saving gaps or repeats.

use std::collections::BTreeSet;

use chrono::{DateTime, Datelike, Days, NaiveDate, NaiveTime, Utc, Weekday};
use serde::{Deserialize, Serialize};

/// Days between occurrences of a daily schedule, at most.
pub(crate) const MAX_INTERVAL_DAYS: u32 = 366;
/// Occurrences a schedule may be limited to, at most.
pub(crate) const MAX_OCCURRENCES: u32 = 10_000;

/// Which days a schedule runs on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Frequency {
    /// Every `n` days from the day the window starts (1 = daily).
    EveryDays(u32),
    /// On these weekdays (Monday = 0 .. Sunday = 6), every week.
    Weekly(BTreeSet<u8>),
    /// On this day of each month (1-31); months without it run on their last day.
    Monthly(u32),
}

/// A checked recurring schedule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Schedule {
    pub(crate) frequency: Frequency,
    /// The time of day of every occurrence, UTC, in minutes after midnight (0-1439).
    pub(crate) minute_of_day: u32,
    /// No occurrence after this time.
    pub(crate) until: Option<DateTime<Utc>>,
    /// At most this many occurrences, counted from the first in the window
    /// (including those skipped because nothing ran then).
    pub(crate) count: Option<u32>,
}

fn weekday_index(w: Weekday) -> u8 {
    w.num_days_from_monday() as u8
}

/// The last day of the month `date` is in.
fn last_day_of_month(date: NaiveDate) -> u32 {
    let (y, m) = (date.year(), date.month());
    let first_next = if m == 12 {
        NaiveDate::from_ymd_opt(y + 1, 1, 1)
    } else {
        NaiveDate::from_ymd_opt(y, m + 1, 1)
    };
    first_next.and_then(|d| d.pred_opt()).map(|d| d.day()).unwrap_or(28)
}

impl Schedule {
    fn runs_on(&self, first_day: NaiveDate, day: NaiveDate) -> bool {
        match &self.frequency {
            Frequency::EveryDays(n) => {
                let n = i64::from((*n).max(1));
                (day - first_day).num_days().rem_euclid(n) == 0
            }
            Frequency::Weekly(days) => days.contains(&weekday_index(day.weekday())),
            Frequency::Monthly(d) => day.day() == (*d).min(last_day_of_month(day)),
        }
    }

    /// The occurrences within the window `[start, end)`, in order, each strictly
    /// after the one before.
    pub(crate) fn occurrences(&self, start: DateTime<Utc>, end: DateTime<Utc>) -> Occurrences<'_> {
        Occurrences {
            schedule: self,
            first_day: start.date_naive(),
            day: Some(start.date_naive()),
            start,
            end,
            seen: 0,
        }
    }

    /// The first occurrence in the window `[start, end)` strictly after `after`
    /// (the first of all with `None`); `None` when the series has ended.
    pub(crate) fn next_after(
        &self,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        after: Option<DateTime<Utc>>,
    ) -> Option<DateTime<Utc>> {
        self.occurrences(start, end)
            .find(|t| after.is_none_or(|after| *t > after))
    }
}

/// The occurrences of a schedule within a window (see [`Schedule::occurrences`]).
#[derive(Debug)]
pub(crate) struct Occurrences<'a> {
    schedule: &'a Schedule,
    first_day: NaiveDate,
    /// The next day to look at; `None` past the calendar's end.
    day: Option<NaiveDate>,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    /// Occurrences given so far.
    seen: u32,
}

impl Iterator for Occurrences<'_> {
    type Item = DateTime<Utc>;

    fn next(&mut self) -> Option<DateTime<Utc>> {
        let s = self.schedule;
        if s.count.is_some_and(|n| self.seen >= n) {
            return None;
        }
        let time = NaiveTime::from_num_seconds_from_midnight_opt(s.minute_of_day.min(1439) * 60, 0)?;
        loop {
            let day = self.day?;
            if day > self.end.date_naive() {
                self.day = None;
                return None;
            }
            self.day = day.checked_add_days(Days::new(1));
            if !s.runs_on(self.first_day, day) {
                continue;
            }
            let at = day.and_time(time).and_utc();
            if at < self.start {
                continue;
            }
            if at >= self.end || s.until.is_some_and(|until| at > until) {
                self.day = None;
                return None;
            }
            self.seen += 1;
            return Some(at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, TimeZone};
    use proptest::prelude::*;

    fn t(y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, h, min, 0).unwrap()
    }

    fn schedule(frequency: Frequency, minute_of_day: u32) -> Schedule {
        Schedule {
            frequency,
            minute_of_day,
            until: None,
            count: None,
        }
    }

    #[test]
    fn every_n_days_counts_from_the_window_start_day() {
        // The window starts on Sunday 2026-03-01 at 12:00; 09:00 that day is before
        // it, so the series begins on the 4th (1 + 3).
        let s = schedule(Frequency::EveryDays(3), 9 * 60);
        let got: Vec<_> = s.occurrences(t(2026, 3, 1, 12, 0), t(2026, 3, 12, 0, 0)).collect();
        assert_eq!(
            got,
            vec![t(2026, 3, 4, 9, 0), t(2026, 3, 7, 9, 0), t(2026, 3, 10, 9, 0)]
        );
        // At 12:00 sharp the first day counts.
        let s = schedule(Frequency::EveryDays(3), 12 * 60);
        assert_eq!(
            s.next_after(t(2026, 3, 1, 12, 0), t(2026, 3, 12, 0, 0), None),
            Some(t(2026, 3, 1, 12, 0))
        );
    }

    #[test]
    fn weekly_runs_on_its_weekdays() {
        // Monday and Thursday at 08:30; 2026-03-02 is a Monday.
        let s = schedule(Frequency::Weekly([0, 3].into()), 8 * 60 + 30);
        let got: Vec<_> = s.occurrences(t(2026, 3, 1, 0, 0), t(2026, 3, 12, 0, 0)).collect();
        assert_eq!(
            got,
            vec![t(2026, 3, 2, 8, 30), t(2026, 3, 5, 8, 30), t(2026, 3, 9, 8, 30)]
        );
    }

    #[test]
    fn monthly_on_the_31st_falls_back_to_the_last_day() {
        let s = schedule(Frequency::Monthly(31), 0);
        let got: Vec<_> = s.occurrences(t(2028, 1, 1, 0, 0), t(2028, 5, 1, 0, 0)).collect();
        // 2028 is a leap year.
        assert_eq!(
            got,
            vec![
                t(2028, 1, 31, 0, 0),
                t(2028, 2, 29, 0, 0),
                t(2028, 3, 31, 0, 0),
                t(2028, 4, 30, 0, 0)
            ]
        );
        let s = schedule(Frequency::Monthly(15), 10 * 60);
        assert_eq!(
            s.occurrences(t(2026, 1, 15, 11, 0), t(2026, 4, 1, 0, 0))
                .collect::<Vec<_>>(),
            vec![t(2026, 2, 15, 10, 0), t(2026, 3, 15, 10, 0)]
        );
    }

    #[test]
    fn a_series_ends_at_its_count_its_until_or_the_window() {
        let start = t(2026, 3, 2, 0, 0);
        let end = t(2026, 4, 1, 0, 0);
        let daily = |until, count| Schedule {
            frequency: Frequency::EveryDays(1),
            minute_of_day: 6 * 60,
            until,
            count,
        };
        assert_eq!(daily(None, Some(3)).occurrences(start, end).count(), 3);
        assert_eq!(
            daily(None, Some(3)).occurrences(start, end).last(),
            Some(t(2026, 3, 4, 6, 0))
        );
        // Until is inclusive.
        assert_eq!(
            daily(Some(t(2026, 3, 5, 6, 0)), None).occurrences(start, end).last(),
            Some(t(2026, 3, 5, 6, 0))
        );
        // The window's end is exclusive: March 2 .. 31 are 30 days.
        assert_eq!(daily(None, None).occurrences(start, end).count(), 30);
        assert_eq!(
            daily(None, None).occurrences(start, t(2026, 3, 31, 6, 0)).last(),
            Some(t(2026, 3, 30, 6, 0))
        );
    }

    #[test]
    fn missed_occurrences_are_skipped_not_repeated() {
        // Weekly on Mondays at 09:00, at most 4 times: March 2, 9, 16, 23.
        let s = Schedule {
            count: Some(4),
            ..schedule(Frequency::Weekly([0].into()), 9 * 60)
        };
        let (start, end) = (t(2026, 3, 1, 0, 0), t(2026, 6, 1, 0, 0));
        // The run after the first occurrence happened on the 2nd; the next run
        // came on the 17th (the 9th and the 16th missed): it stands for them, and
        // then comes the 23rd, the last of the four.
        assert_eq!(
            s.next_after(start, end, Some(t(2026, 3, 2, 9, 0))),
            Some(t(2026, 3, 9, 9, 0))
        );
        assert_eq!(
            s.next_after(start, end, Some(t(2026, 3, 17, 3, 0))),
            Some(t(2026, 3, 23, 9, 0))
        );
        assert_eq!(s.next_after(start, end, Some(t(2026, 3, 23, 9, 0))), None);
    }

    fn any_schedule() -> impl Strategy<Value = Schedule> {
        let frequency = prop_oneof![
            (1u32..40).prop_map(Frequency::EveryDays),
            prop::collection::btree_set(0u8..7, 1..7).prop_map(Frequency::Weekly),
            (1u32..=31).prop_map(Frequency::Monthly),
        ];
        (
            frequency,
            0u32..1440,
            prop::option::of(0i64..400 * 24 * 60),
            prop::option::of(1u32..60),
        )
            .prop_map(|(frequency, minute_of_day, until, count)| Schedule {
                frequency,
                minute_of_day,
                until: until.map(|m| t(2026, 1, 1, 0, 0) + Duration::minutes(m)),
                count,
            })
    }

    proptest! {
        #[test]
        fn occurrences_rise_and_stay_within_every_bound(
            s in any_schedule(),
            start_min in 0i64..60 * 24 * 60,
            len_min in 1i64..300 * 24 * 60,
        ) {
            let start = t(2026, 1, 1, 0, 0) + Duration::minutes(start_min);
            let end = start + Duration::minutes(len_min);
            let all: Vec<_> = s.occurrences(start, end).collect();
            for pair in all.windows(2) {
                prop_assert!(pair[0] < pair[1]);
            }
            for at in &all {
                prop_assert!(*at >= start && *at < end);
                prop_assert!(s.until.is_none_or(|u| *at <= u));
                prop_assert_eq!(at.time(), NaiveTime::from_num_seconds_from_midnight_opt(s.minute_of_day * 60, 0).unwrap());
            }
            if let Some(n) = s.count {
                prop_assert!(all.len() <= n as usize);
            }
            // Frequency: the gap between neighbours is what the schedule says.
            for pair in all.windows(2) {
                let gap = (pair[1] - pair[0]).num_days();
                match &s.frequency {
                    Frequency::EveryDays(n) => prop_assert_eq!(gap, i64::from(*n)),
                    Frequency::Weekly(_) => prop_assert!((1..=7).contains(&gap)),
                    Frequency::Monthly(_) => prop_assert!((28..=31).contains(&gap)),
                }
            }
        }

        #[test]
        fn next_after_is_the_first_later_occurrence(
            s in any_schedule(),
            len_min in 1i64..300 * 24 * 60,
            after_min in 0i64..320 * 24 * 60,
        ) {
            let start = t(2026, 1, 1, 0, 0);
            let end = start + Duration::minutes(len_min);
            let after = start + Duration::minutes(after_min);
            let all: Vec<_> = s.occurrences(start, end).collect();
            let next = s.next_after(start, end, Some(after));
            prop_assert_eq!(next, all.iter().copied().find(|t| *t > after));
            if let Some(next) = next {
                prop_assert!(next > after && next < end);
                // Nothing of the series lies between `after` and `next`.
                prop_assert!(all.iter().all(|t| *t <= after || *t >= next));
                // Following the series from `next` on reaches only later ones.
                prop_assert!(s.next_after(start, end, Some(next)).is_none_or(|n| n > next));
            }
            prop_assert_eq!(s.next_after(start, end, None), all.first().copied());
        }
    }
}
