//! RFC 3339 UTC timestamps with microseconds, without a date-time dependency.

use std::fmt::Write;
use std::time::{SystemTime, UNIX_EPOCH};

/// Appends `now` as `YYYY-MM-DDTHH:MM:SS.ffffffZ` (UTC).
pub(crate) fn write_rfc3339(out: &mut String, now: SystemTime) {
    write_rfc3339_digits(out, now, 6);
}

/// `at` as `YYYY-MM-DDTHH:MM:SS.fffZ` (UTC, milliseconds), as Alertmanager's API and most tools print it.
pub fn rfc3339_millis(at: SystemTime) -> String {
    let mut out = String::with_capacity(24);
    write_rfc3339_digits(&mut out, at, 3);
    out
}

/// Appends `now` with `digits` (3 or 6) fractional digits; times before 1970 print as the epoch.
fn write_rfc3339_digits(out: &mut String, now: SystemTime, digits: usize) {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = since.as_secs();
    let (year, month, day) = civil_from_days((seconds / 86_400) as i64);
    let second_of_day = seconds % 86_400;
    let fraction = if digits == 3 {
        since.subsec_millis()
    } else {
        since.subsec_micros()
    };
    // Writing into a String cannot fail.
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{fraction:0digits$}Z",
        second_of_day / 3600,
        second_of_day / 60 % 60,
        second_of_day % 60,
    );
}

/// `YYYY-MM-DDTHH:MM:SS[.f…]Z` (UTC, up to microseconds kept) to microseconds since the Unix epoch;
/// `None` for anything else, including offsets other than `Z` and times before 1970.
pub(crate) fn parse_rfc3339_micros(text: &str) -> Option<u64> {
    let text = text.strip_suffix('Z').or_else(|| text.strip_suffix('z'))?;
    let (date, time) = text.split_once(['T', 't', ' '])?;
    let mut date_parts = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (year, month, day) = (date_parts.next()??, date_parts.next()??, date_parts.next()??);
    let (clock, fraction) = time.split_once('.').unwrap_or((time, ""));
    let mut clock_parts = clock.splitn(3, ':').map(|p| p.parse::<u64>().ok());
    let (hour, minute, second) = (clock_parts.next()??, clock_parts.next()??, clock_parts.next()??);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    if !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let micros = fraction
        .bytes()
        .chain(std::iter::repeat(b'0'))
        .take(6)
        .fold(0_u64, |acc, digit| acc * 10 + u64::from(digit - b'0'));
    let days = u64::try_from(days_from_civil(year, month, day)).ok()?;
    Some(((days * 86_400 + hour * 3600 + minute * 60 + second) * 1_000_000) + micros)
}

/// Proleptic Gregorian (year, month, day) to days since 1970-01-01; Howard Hinnant's `days_from_civil`.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let shifted_month = (month + 9) % 12;
    let day_of_year = (153 * shifted_month + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
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

    #[test]
    fn parsing_inverts_formatting() {
        for (seconds, micros) in [
            (0, 0),
            (951_782_400, 5),
            (1_709_251_199, 999_999),
            (4_102_444_800, 0),
        ] {
            assert_eq!(
                parse_rfc3339_micros(&format(seconds, micros)),
                Some(seconds * 1_000_000 + micros)
            );
        }
        assert_eq!(
            parse_rfc3339_micros("2026-01-01T00:00:00Z"),
            Some(1_767_225_600_000_000)
        );
        assert_eq!(parse_rfc3339_micros("2026-01-01T00:00:00+01:00"), None);
        assert_eq!(parse_rfc3339_micros("2026-13-01T00:00:00Z"), None);
    }
}
