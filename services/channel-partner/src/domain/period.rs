//! Target periods (calendar month, quarter, year in UTC) and the figures a target
//! shows: attainment and the projection to the period's end at the current run rate.

use chrono::{DateTime, Datelike, Months, NaiveDate, TimeZone, Utc};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PeriodKind {
    Month,
    Quarter,
    Year,
}

impl PeriodKind {
    pub const ALL: [Self; 3] = [Self::Month, Self::Quarter, Self::Year];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Month => "month",
            Self::Quarter => "quarter",
            Self::Year => "year",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    fn months(self) -> u32 {
        match self {
            Self::Month => 1,
            Self::Quarter => 3,
            Self::Year => 12,
        }
    }
}

/// A period: `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    pub kind: PeriodKind,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

impl Period {
    /// The period of `kind` starting on `start` (`YYYY-MM-DD`), which must be the
    /// first day of a month, of a quarter (January, April, July, October) or of a
    /// year.
    pub fn parse(kind: PeriodKind, start: &str) -> Result<Self, String> {
        let date = NaiveDate::parse_from_str(start, "%Y-%m-%d").map_err(|_| "must be a date YYYY-MM-DD".to_owned())?;
        let aligned = date.day() == 1
            && match kind {
                PeriodKind::Month => true,
                PeriodKind::Quarter => date.month() % 3 == 1,
                PeriodKind::Year => date.month() == 1,
            };
        if !aligned {
            return Err(format!("must be the first day of a {}", kind.as_str()));
        }
        if !(2000..=2999).contains(&date.year()) {
            return Err("must be a year from 2000 to 2999".into());
        }
        let start = Utc
            .with_ymd_and_hms(date.year(), date.month(), 1, 0, 0, 0)
            .single()
            .ok_or_else(|| "must be a date YYYY-MM-DD".to_owned())?;
        Self::from_start(kind, start).ok_or_else(|| "is out of range".to_owned())
    }

    pub fn from_start(kind: PeriodKind, start: DateTime<Utc>) -> Option<Self> {
        let end = start.checked_add_months(Months::new(kind.months()))?;
        Some(Self { kind, start, end })
    }

    /// `YYYY-MM-DD` of the first day.
    pub fn start_date(&self) -> String {
        self.start.format("%Y-%m-%d").to_string()
    }

    pub fn overlaps(&self, other_start: DateTime<Utc>, other_end: DateTime<Utc>) -> bool {
        self.start < other_end && other_start < self.end
    }

    /// Progress at the period's end if it goes on as it went so far: progress
    /// divided by the time elapsed, times the period's length (rounded down); 0
    /// before the start, the progress itself from the end on.
    pub fn projection(&self, progress_minor: i64, now: DateTime<Utc>) -> i64 {
        if now <= self.start {
            return 0;
        }
        if now >= self.end {
            return progress_minor;
        }
        let elapsed = (now - self.start).num_milliseconds().max(1) as i128;
        let length = (self.end - self.start).num_milliseconds() as i128;
        let projected = progress_minor as i128 * length / elapsed;
        projected.clamp(i64::MIN as i128, i64::MAX as i128) as i64
    }
}

/// Progress as a share of the amount in basis points, rounded down (negative when
/// refunds outweigh sales).
pub fn attainment_bp(progress_minor: i64, amount_minor: i64) -> i64 {
    if amount_minor <= 0 {
        return 0;
    }
    let bp = (progress_minor as i128 * 10_000).div_euclid(amount_minor as i128);
    bp.clamp(i64::MIN as i128, i64::MAX as i128) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_start_on_calendar_boundaries_and_end_a_length_later() {
        let q = Period::parse(PeriodKind::Quarter, "2026-10-01").unwrap();
        assert_eq!(q.end, Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap());
        assert_eq!(q.start_date(), "2026-10-01");
        let m = Period::parse(PeriodKind::Month, "2026-02-01").unwrap();
        assert_eq!(m.end, Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap());
        assert!(Period::parse(PeriodKind::Quarter, "2026-11-01").is_err());
        assert!(Period::parse(PeriodKind::Year, "2026-04-01").is_err());
        assert!(Period::parse(PeriodKind::Month, "2026-04-02").is_err());
        assert!(Period::parse(PeriodKind::Month, "2026-13-01").is_err());
        assert!(Period::parse(PeriodKind::Month, "1999-01-01").is_err());
        assert!(Period::parse(PeriodKind::Month, "soon").is_err());
    }

    #[test]
    fn periods_overlap_when_they_share_an_instant() {
        let q = Period::parse(PeriodKind::Quarter, "2026-10-01").unwrap();
        let nov = Period::parse(PeriodKind::Month, "2026-11-01").unwrap();
        let jan = Period::parse(PeriodKind::Month, "2027-01-01").unwrap();
        assert!(q.overlaps(nov.start, nov.end));
        assert!(!q.overlaps(jan.start, jan.end), "the end is exclusive");
    }

    #[test]
    fn the_projection_extends_the_run_rate_to_the_periods_end() {
        let m = Period::parse(PeriodKind::Month, "2026-04-01").unwrap(); // 30 days
        let day_10 = m.start + chrono::Duration::days(10);
        assert_eq!(m.projection(1_000, day_10), 3_000);
        assert_eq!(m.projection(1_000, m.start), 0);
        assert_eq!(m.projection(1_000, m.end + chrono::Duration::days(3)), 1_000);
        assert_eq!(m.projection(-300, day_10), -900);
    }

    #[test]
    fn attainment_is_in_basis_points_rounded_down() {
        assert_eq!(attainment_bp(5_000, 10_000), 5_000);
        assert_eq!(attainment_bp(1, 3), 3_333);
        assert_eq!(attainment_bp(25_000, 10_000), 25_000);
        assert_eq!(attainment_bp(-1, 3), -3_334);
        assert_eq!(attainment_bp(1, 0), 0);
    }
}
