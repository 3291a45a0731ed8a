//! Cron schedules (`drift_schedule`): the standard five-field form users write, the `cron`
//! crate's six- and seven-field forms, and the first tick after a time. Pure: text in, times out.

use std::time::Duration;

use chrono::{DateTime, Utc};

/// A parsed `drift_schedule`. Times are in UTC.
#[derive(Debug, Clone)]
pub struct DriftSchedule {
    expression: String,
    /// One schedule, or two whose ticks are merged: standard cron fires when *either* the
    /// day of month or the weekday matches if both are restricted, the `cron` crate only when
    /// both do, so "0 9 1 * mon" becomes "the 1st at 9:00" plus "Mondays at 9:00".
    schedules: Vec<cron::Schedule>,
}

/// Why a `drift_schedule` could not be parsed.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    #[error(
        "drift_schedule {expression:?} has {fields} fields: expected 5 (minute hour day month weekday), 6 (with seconds) or 7 (with year)"
    )]
    FieldCount { expression: String, fields: usize },
    #[error("drift_schedule {expression:?} is not a valid cron expression: {reason}")]
    Invalid { expression: String, reason: String },
    #[error("drift_schedule {expression:?} never fires")]
    NeverFires { expression: String },
}

impl DriftSchedule {
    /// Parses a cron expression. The standard five-field form (`"0 */6 * * *"`, weekday 0-7
    /// with Sunday as 0 or 7, day of month and weekday combined with "or") is what users
    /// write; the six- and seven-field forms (a leading seconds field, an optional trailing
    /// year) and `@daily`-style shortcuts go to the `cron` crate unchanged, with its weekday
    /// numbering (1-7, Sunday is 1) and "and" of day of month and weekday.
    pub fn parse(expression: &str) -> Result<Self, ScheduleError> {
        let invalid = |reason: String| ScheduleError::Invalid {
            expression: expression.to_string(),
            reason,
        };
        let fields: Vec<&str> = expression.split_whitespace().collect();
        let cron_forms = match fields.as_slice() {
            [minute, hour, day, month, weekday] => {
                let weekday = standard_weekday_to_cron(weekday).map_err(invalid)?;
                let restricted = |f: &str| f != "*" && f != "?";
                if restricted(day) && restricted(&weekday) {
                    vec![
                        format!("0 {minute} {hour} {day} {month} *"),
                        format!("0 {minute} {hour} * {month} {weekday}"),
                    ]
                } else {
                    vec![format!("0 {minute} {hour} {day} {month} {weekday}")]
                }
            }
            [shortcut] if shortcut.starts_with('@') => vec![shortcut.to_string()],
            fields if fields.len() == 6 || fields.len() == 7 => vec![fields.join(" ")],
            fields => {
                return Err(ScheduleError::FieldCount {
                    expression: expression.to_string(),
                    fields: fields.len(),
                });
            }
        };
        let schedules = cron_forms
            .iter()
            .map(|form| {
                form.parse::<cron::Schedule>()
                    .map_err(|e| invalid(cron_reason(&e.to_string())))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let parsed = Self {
            expression: expression.to_string(),
            schedules,
        };
        // A valid expression such as "0 0 30 2 *" (February 30th) never fires; say so now
        // rather than silently never checking the stack.
        if parsed.next_after(Utc::now()).is_none() {
            return Err(ScheduleError::NeverFires {
                expression: expression.to_string(),
            });
        }
        Ok(parsed)
    }

    /// The expression as the user wrote it.
    pub fn expression(&self) -> &str {
        &self.expression
    }

    /// The first tick strictly after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.schedules
            .iter()
            .filter_map(|s| s.after(&after).next())
            .min()
    }

    /// The time between the first tick after `after` and the one following it: the interval
    /// the jitter window is a fraction of.
    pub fn interval_after(&self, after: DateTime<Utc>) -> Option<Duration> {
        let first = self.next_after(after)?;
        let second = self.next_after(first)?;
        (second - first).to_std().ok()
    }
}

/// The `cron` crate's error in one line: it prints the expression it parsed (our translation
/// of the user's, with a seconds field) and a caret line before the reason; only the reason
/// means anything to the user.
fn cron_reason(error: &str) -> String {
    error
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or(error)
        .trim()
        .to_string()
}

/// Translates a standard cron weekday field (0-7, Sunday is 0 and 7, names allowed) into the
/// `cron` crate's numbering (1-7, Sunday is 1) by expanding it into an explicit list.
fn standard_weekday_to_cron(field: &str) -> Result<String, String> {
    if field == "*" || field == "?" {
        return Ok(field.to_string());
    }
    let mut days = [false; 7];
    for item in field.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((range, step)) => {
                let step: u32 = step
                    .parse()
                    .ok()
                    .filter(|s| *s > 0)
                    .ok_or_else(|| format!("invalid weekday step in {item:?}"))?;
                (range, step)
            }
            None => (item, 1),
        };
        let (start, end) = match range {
            "*" => (0, 6),
            _ => match range.split_once('-') {
                Some((a, b)) => (weekday_number(a)?, weekday_number(b)?),
                // "1/2" means from Monday every other day, as in Vixie cron.
                None if step > 1 => (weekday_number(range)?, 6),
                None => {
                    let day = weekday_number(range)?;
                    (day, day)
                }
            },
        };
        if start > end {
            return Err(format!("weekday range {range:?} runs backwards"));
        }
        let mut day = start;
        while day <= end {
            days[(day % 7) as usize] = true;
            day += step;
        }
    }
    let list: Vec<String> = (0..7)
        .filter(|d| days[*d])
        .map(|d| (d + 1).to_string())
        .collect();
    Ok(list.join(","))
}

/// A weekday number (0-7) or a three-letter English name.
fn weekday_number(text: &str) -> Result<u32, String> {
    const NAMES: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];
    if let Ok(n) = text.parse::<u32>() {
        return if n <= 7 {
            Ok(n)
        } else {
            Err(format!("weekday {n} is out of range 0-7"))
        };
    }
    let lower = text.to_ascii_lowercase();
    NAMES
        .iter()
        .position(|name| *name == lower)
        .map(|i| i as u32)
        .ok_or_else(|| format!("{text:?} is not a weekday"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .expect("test time")
            .with_timezone(&Utc)
    }

    fn schedule(expr: &str) -> DriftSchedule {
        DriftSchedule::parse(expr).expect("test schedule")
    }

    /// Checks the first `expected.len()` ticks of `expr` after `after`.
    fn check(expr: &str, after: &str, expected: &[&str]) {
        let schedule = schedule(expr);
        let mut got = Vec::new();
        let mut t = at(after);
        for _ in expected {
            t = schedule.next_after(t).expect("a next tick");
            got.push(t.to_rfc3339());
        }
        let expected: Vec<String> = expected.iter().map(|e| at(e).to_rfc3339()).collect();
        assert_eq!(got, expected, "ticks of {expr:?}");
    }

    #[test]
    fn five_and_six_field_forms() {
        // 2026-01-01 is a Thursday.
        check(
            "0 */6 * * *",
            "2026-01-01T01:00:00Z",
            &["2026-01-01T06:00:00Z", "2026-01-01T12:00:00Z"],
        );
        check(
            "0 0 */6 * * *",
            "2026-01-01T01:00:00Z",
            &["2026-01-01T06:00:00Z", "2026-01-01T12:00:00Z"],
        );
        check(
            "30 15 3 * * * 2026",
            "2026-01-01T01:00:00Z",
            &["2026-01-01T03:15:30Z", "2026-01-02T03:15:30Z"],
        );
        check(
            "*/20 * * * *",
            "2026-01-01T01:05:00Z",
            &["2026-01-01T01:20:00Z"],
        );
    }

    #[test]
    fn standard_weekdays_count_sunday_as_zero_and_seven() {
        check(
            "0 9 * * 1",
            "2026-01-01T01:00:00Z",
            &["2026-01-05T09:00:00Z"],
        );
        check(
            "0 9 * * 0",
            "2026-01-01T01:00:00Z",
            &["2026-01-04T09:00:00Z"],
        );
        check(
            "0 9 * * 7",
            "2026-01-01T01:00:00Z",
            &["2026-01-04T09:00:00Z"],
        );
        check(
            "0 9 * * sun",
            "2026-01-01T01:00:00Z",
            &["2026-01-04T09:00:00Z"],
        );
        check(
            "0 9 * * 5-7",
            "2026-01-01T10:00:00Z",
            &[
                "2026-01-02T09:00:00Z",
                "2026-01-03T09:00:00Z",
                "2026-01-04T09:00:00Z",
                "2026-01-09T09:00:00Z",
            ],
        );
        check(
            "0 9 * * */2",
            "2026-01-01T01:00:00Z",
            &[
                "2026-01-01T09:00:00Z",
                "2026-01-03T09:00:00Z",
                "2026-01-04T09:00:00Z",
                "2026-01-06T09:00:00Z",
            ],
        );
        check(
            "0 9 * * Mon-Fri",
            "2026-01-02T10:00:00Z",
            &["2026-01-05T09:00:00Z"],
        );
    }

    #[test]
    fn day_of_month_and_weekday_combine_with_or_in_the_standard_form() {
        // The 1st of the month, and every Monday (Vixie cron semantics).
        check(
            "0 9 1 * mon",
            "2026-01-01T10:00:00Z",
            &[
                "2026-01-05T09:00:00Z",
                "2026-01-12T09:00:00Z",
                "2026-01-19T09:00:00Z",
                "2026-01-26T09:00:00Z",
                "2026-02-01T09:00:00Z",
                "2026-02-02T09:00:00Z",
            ],
        );
        // The six-field form is the cron crate's own: both must match (Monday the 1st).
        check(
            "0 0 9 1 * Mon",
            "2026-01-01T10:00:00Z",
            &["2026-06-01T09:00:00Z"],
        );
        check("@daily", "2026-01-01T10:00:00Z", &["2026-01-02T00:00:00Z"]);
    }

    #[test]
    fn errors_name_the_expression() {
        for (expr, wanted) in [
            ("0 */6 * *", "has 4 fields"),
            ("61 * * * *", "not a valid cron expression"),
            ("0 9 * * 8", "weekday 8 is out of range"),
            ("0 9 * * 5-2", "runs backwards"),
            ("0 0 30 2 *", "never fires"),
        ] {
            let err = DriftSchedule::parse(expr).expect_err(expr).to_string();
            assert!(err.contains(&format!("{expr:?}")), "{err}");
            assert!(err.contains(wanted), "{expr}: {err}");
        }
    }
}
