//! Cron expressions, as Harbor writes them (six fields, seconds first) or
//! as crontab does (five), evaluated in UTC.
//!
//! Fields: `*`, `N`, `N-M`, `*/S`, `N-M/S`, `N/S` and lists of those;
//! day of week 0-7 (0 and 7 are Sunday). When both day of month and day of
//! week are restricted, a day matching either is due (crontab's rule). Also
//! `@yearly`, `@monthly`, `@weekly`, `@daily`, `@midnight`, `@hourly`.

use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cron {
    seconds: u64,
    minutes: u64,
    hours: u64,
    days: u64,
    months: u64,
    weekdays: u64,
    /// Day of month was `*` (or `?`).
    any_day: bool,
    any_weekday: bool,
    text: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronError(String);

impl fmt::Display for CronError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CronError {}

fn field(spec: &str, name: &str, lo: u32, hi: u32) -> Result<(u64, bool), CronError> {
    let err = |why: &str| CronError(format!("cron {name} field {spec:?}: {why}"));
    let mut bits = 0u64;
    let any = spec == "*" || spec == "?";
    for part in spec.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => {
                let s: u32 = s.parse().map_err(|_| err("the step is not a number"))?;
                if s == 0 {
                    return Err(err("the step is zero"));
                }
                (r, s)
            }
            None => (part, 1),
        };
        let num = |t: &str| -> Result<u32, CronError> {
            let n: u32 = t.parse().map_err(|_| err(&format!("{t:?} is not a number")))?;
            if n < lo || n > hi {
                return Err(err(&format!("{n} is outside {lo}-{hi}")));
            }
            Ok(n)
        };
        let (a, b) = if range == "*" || range == "?" {
            (lo, hi)
        } else if let Some((a, b)) = range.split_once('-') {
            let (a, b) = (num(a)?, num(b)?);
            if a > b {
                return Err(err(&format!("the range {a}-{b} is backwards")));
            }
            (a, b)
        } else {
            let a = num(range)?;
            // `N/S` runs from N to the end of the field.
            (a, if part.contains('/') { hi } else { a })
        };
        let mut v = a;
        while v <= b {
            bits |= 1 << v;
            v += step;
        }
    }
    Ok((bits, any))
}

impl Cron {
    pub fn parse(text: &str) -> Result<Cron, CronError> {
        let t = text.trim();
        let expanded = match t {
            "@yearly" | "@annually" => "0 0 0 1 1 *",
            "@monthly" => "0 0 0 1 * *",
            "@weekly" => "0 0 0 * * 0",
            "@daily" | "@midnight" => "0 0 0 * * *",
            "@hourly" => "0 0 * * * *",
            other if other.starts_with('@') => return Err(CronError(format!("unknown cron shorthand {other:?}"))),
            other => other,
        };
        let parts: Vec<&str> = expanded.split_whitespace().collect();
        let parts: Vec<&str> = match parts.len() {
            6 => parts,
            5 => std::iter::once("0").chain(parts).collect(),
            n => {
                return Err(CronError(format!(
                    "cron expression {t:?} has {n} fields; expected 6 (second minute hour day month weekday) or 5"
                )))
            }
        };
        let (seconds, _) = field(parts[0], "second", 0, 59)?;
        let (minutes, _) = field(parts[1], "minute", 0, 59)?;
        let (hours, _) = field(parts[2], "hour", 0, 23)?;
        let (days, any_day) = field(parts[3], "day-of-month", 1, 31)?;
        let (months, _) = field(parts[4], "month", 1, 12)?;
        let (mut weekdays, any_weekday) = field(parts[5], "day-of-week", 0, 7)?;
        if weekdays & (1 << 7) != 0 {
            weekdays |= 1;
        }
        Ok(Cron {
            seconds,
            minutes,
            hours,
            days,
            months,
            weekdays,
            any_day,
            any_weekday,
            text: t.to_string(),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    fn day_due(&self, month: u32, day: u32, weekday: u32) -> bool {
        if self.months & (1 << month) == 0 {
            return false;
        }
        let dom = self.days & (1 << day) != 0;
        let dow = self.weekdays & (1 << weekday) != 0;
        match (self.any_day, self.any_weekday) {
            (true, true) => true,
            (true, false) => dow,
            (false, true) => dom,
            (false, false) => dom || dow,
        }
    }

    /// The first due time strictly after `after_secs` (Unix seconds, UTC);
    /// None if none comes within five years (say, 30 February).
    pub fn next_after(&self, after_secs: i64) -> Option<i64> {
        let start = after_secs + 1;
        let first_day = start.div_euclid(86_400);
        for day in first_day..first_day + 5 * 366 {
            let (_, m, d) = civil(day);
            // 1970-01-01 was a Thursday.
            let weekday = (day + 4).rem_euclid(7) as u32;
            if !self.day_due(m, d, weekday) {
                continue;
            }
            let from = if day == first_day { start.rem_euclid(86_400) } else { 0 };
            for h in 0..24i64 {
                if self.hours & (1 << h) == 0 || (h + 1) * 3600 <= from {
                    continue;
                }
                for min in 0..60i64 {
                    if self.minutes & (1 << min) == 0 || h * 3600 + (min + 1) * 60 <= from {
                        continue;
                    }
                    for s in 0..60i64 {
                        let t = h * 3600 + min * 60 + s;
                        if self.seconds & (1 << s) != 0 && t >= from {
                            return Some(day * 86_400 + t);
                        }
                    }
                }
            }
        }
        None
    }
}

/// (year, month 1-12, day 1-31) of a day count since 1970-01-01.
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2026-12-03T21:40:23Z, a Thursday.
    const NOW: i64 = 1_796_334_023;

    fn next(expr: &str, after: i64) -> i64 {
        Cron::parse(expr).unwrap().next_after(after).unwrap()
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil(0), (1970, 1, 1));
        assert_eq!(civil(NOW / 86_400), (2026, 12, 3));
        assert_eq!(civil(11_016), (2000, 2, 29));
    }

    #[test]
    fn next_times() {
        // Every minute, at second 0.
        assert_eq!(next("* * * * *", NOW), NOW - 23 + 60);
        // Harbor's six fields: daily at midnight.
        assert_eq!(next("0 0 0 * * *", NOW), NOW - NOW % 86_400 + 86_400);
        assert_eq!(next("@daily", NOW), NOW - NOW % 86_400 + 86_400);
        // Every 15 seconds.
        assert_eq!(next("*/15 * * * * *", NOW), NOW - 23 + 30);
        // Sundays at 03:30; the next Sunday is 2026-12-06.
        let sunday = NOW - NOW % 86_400 + 3 * 86_400 + 3 * 3600 + 30 * 60;
        assert_eq!(next("30 3 * * 0", NOW), sunday);
        assert_eq!(next("30 3 * * 7", NOW), sunday);
        // The first of the month, or a Monday (either, as in crontab).
        assert_eq!(next("0 0 1 * 1", NOW), NOW - NOW % 86_400 + 4 * 86_400);
        // Strictly after: a due instant itself is not returned again.
        let t = next("0 */5 * * * *", NOW);
        assert_eq!(next("0 */5 * * * *", t), t + 300);
        // 29 February comes in 2028.
        let leap = next("0 0 0 29 2 *", NOW);
        assert_eq!(civil(leap / 86_400), (2028, 2, 29));
        assert_eq!(Cron::parse("0 0 0 30 2 *").unwrap().next_after(NOW), None);
    }

    #[test]
    fn bad_expressions_say_why() {
        for (e, why) in [
            ("* * *", "3 fields"),
            ("61 * * * * *", "outside 0-59"),
            ("* * 25 * * *", "outside 0-23"),
            ("*/0 * * * *", "step is zero"),
            ("5-1 * * * *", "backwards"),
            ("x * * * *", "not a number"),
            ("@often", "unknown cron shorthand"),
        ] {
            let msg = Cron::parse(e).unwrap_err().to_string();
            assert!(msg.contains(why), "{e}: {msg}");
        }
    }
}
