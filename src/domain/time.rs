//! Timestamps as the Better Stack dialect writes them: UTC with milliseconds.

use chrono::{DateTime, NaiveDate, NaiveDateTime, SecondsFormat, TimeZone, Utc};

/// A point in time with millisecond precision, the precision we store and show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    pub fn now() -> Self {
        Self(Utc::now().timestamp_millis())
    }

    pub fn from_millis(ms: i64) -> Self {
        Self(ms)
    }

    pub fn as_millis(self) -> i64 {
        self.0
    }

    /// Accepts RFC 3339 (`2025-12-02T00:00:00Z`, `...+02:00`, fractions), a date-time
    /// without offset (read as UTC), or a bare date (midnight UTC).
    pub fn parse_iso8601(input: &str) -> Option<Self> {
        let s = input.trim();
        let parsed = DateTime::parse_from_rfc3339(s)
            .map(|dt| dt.with_timezone(&Utc))
            .ok()
            .or_else(|| {
                ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"]
                    .iter()
                    .find_map(|f| NaiveDateTime::parse_from_str(s, f).ok())
                    .map(|n| Utc.from_utc_datetime(&n))
            })
            .or_else(|| {
                NaiveDate::parse_from_str(s, "%Y-%m-%d")
                    .ok()
                    .and_then(|d| d.and_hms_opt(0, 0, 0))
                    .map(|n| Utc.from_utc_datetime(&n))
            })?;
        Some(Self(parsed.timestamp_millis()))
    }

    /// `2025-11-07T13:20:55.652Z`
    pub fn to_iso8601_millis(self) -> String {
        DateTime::<Utc>::from_timestamp_millis(self.0)
            .unwrap_or_default()
            .to_rfc3339_opts(SecondsFormat::Millis, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_with_milliseconds_in_utc() {
        let t = Timestamp::parse_iso8601("2025-11-07T13:20:55.652Z").unwrap();
        assert_eq!(t.to_iso8601_millis(), "2025-11-07T13:20:55.652Z");
        let t = Timestamp::parse_iso8601("2025-12-02T02:00:00+02:00").unwrap();
        assert_eq!(t.to_iso8601_millis(), "2025-12-02T00:00:00.000Z");
        let t = Timestamp::parse_iso8601("2025-12-02").unwrap();
        assert_eq!(t.to_iso8601_millis(), "2025-12-02T00:00:00.000Z");
        let t = Timestamp::parse_iso8601("2025-12-02T00:00:00").unwrap();
        assert_eq!(t.to_iso8601_millis(), "2025-12-02T00:00:00.000Z");
    }

    #[test]
    fn rejects_impossible_dates_and_junk() {
        for bad in [
            "2025-13-45T00:00:00Z",
            "2025-02-30",
            "tomorrow",
            "",
            "2025-12-02T25:00:00Z",
        ] {
            assert!(Timestamp::parse_iso8601(bad).is_none(), "{bad}");
        }
    }
}
