//! RFC 3339 UTC timestamps with microseconds, without a date-time dependency.

use std::fmt::Write;
use std::time::{SystemTime, UNIX_EPOCH};

/// Appends `now` as `YYYY-MM-DDTHH:MM:SS.ffffffZ` (UTC).
pub(super) fn write_rfc3339(out: &mut String, now: SystemTime) {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = since.as_secs();
    let (year, month, day) = civil_from_days((seconds / 86_400) as i64);
    let second_of_day = seconds % 86_400;
    // Writing into a String cannot fail.
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        second_of_day / 3600,
        second_of_day / 60 % 60,
        second_of_day % 60,
        since.subsec_micros()
    );
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day); Howard Hinnant's `civil_from_days`.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * shifted_month + 2) / 5 + 1) as u32;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn format(seconds: u64, micros: u64) -> String {
        let mut out = String::new();
        write_rfc3339(
            &mut out,
            UNIX_EPOCH + Duration::from_secs(seconds) + Duration::from_micros(micros),
        );
        out
    }

    #[test]
    fn known_instants() {
        assert_eq!(format(0, 0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(format(951_782_400, 5), "2000-02-29T00:00:00.000005Z");
        assert_eq!(format(1_709_251_199, 999_999), "2024-02-29T23:59:59.999999Z");
        assert_eq!(format(4_102_444_800, 0), "2100-01-01T00:00:00.000000Z");
    }
}
