//! AMAZON.DATE for the local matcher: a spoken date phrase and today's date come in; the
//! value Alexa would put in the slot goes out (`2026-12-04`, `2026-W49`, `2026-W49-WE`,
//! `2026-12`, `2026`), or `None` when the phrase is not a date.
//! <https://developer.amazon.com/en-US/docs/alexa/custom-skills/slot-type-reference.html#date>

use chrono::{Datelike, Duration, NaiveDate, Weekday};

const MONTHS: &[&str] = &[
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
];

const ORDINALS: &[&str] = &[
    "first",
    "second",
    "third",
    "fourth",
    "fifth",
    "sixth",
    "seventh",
    "eighth",
    "ninth",
    "tenth",
    "eleventh",
    "twelfth",
    "thirteenth",
    "fourteenth",
    "fifteenth",
    "sixteenth",
    "seventeenth",
    "eighteenth",
    "nineteenth",
    "twentieth",
    "twenty first",
    "twenty second",
    "twenty third",
    "twenty fourth",
    "twenty fifth",
    "twenty sixth",
    "twenty seventh",
    "twenty eighth",
    "twenty ninth",
    "thirtieth",
    "thirty first",
];

/// The AMAZON.DATE value of `phrase` as said on `today`.
pub fn resolve(phrase: &str, today: NaiveDate) -> Option<String> {
    let p = phrase
        .trim()
        .to_lowercase()
        .replace(['-', ','], " ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    // ISO dates keep their dashes.
    if let Ok(d) = NaiveDate::parse_from_str(phrase.trim(), "%Y-%m-%d") {
        return Some(day(d));
    }
    let p = p.strip_prefix("on ").unwrap_or(&p);
    let p = p.strip_prefix("the ").unwrap_or(p);
    match p {
        "today" => return Some(day(today)),
        "tomorrow" => return Some(day(today + Duration::days(1))),
        "yesterday" => return Some(day(today - Duration::days(1))),
        "the day after tomorrow" | "day after tomorrow" => {
            return Some(day(today + Duration::days(2)))
        }
        "this week" => return Some(week(today, "")),
        "next week" => return Some(week(today + Duration::weeks(1), "")),
        "last week" => return Some(week(today - Duration::weeks(1), "")),
        "this weekend" => return Some(week(today, "-WE")),
        "next weekend" => return Some(week(today + Duration::weeks(1), "-WE")),
        "this month" => return Some(format!("{:04}-{:02}", today.year(), today.month())),
        "next month" => {
            let d = add_months(today, 1);
            return Some(format!("{:04}-{:02}", d.year(), d.month()));
        }
        "this year" => return Some(today.year().to_string()),
        "next year" => return Some((today.year() + 1).to_string()),
        _ => {}
    }
    if let Some(d) = weekday_phrase(p, today) {
        return Some(day(d));
    }
    month_day_phrase(p, today).map(day)
}

fn day(d: NaiveDate) -> String {
    d.format("%Y-%m-%d").to_string()
}

fn week(d: NaiveDate, suffix: &str) -> String {
    let w = d.iso_week();
    format!("{:04}-W{:02}{suffix}", w.year(), w.week())
}

fn add_months(d: NaiveDate, n: u32) -> NaiveDate {
    d.checked_add_months(chrono::Months::new(n)).unwrap_or(d)
}

fn weekday(word: &str) -> Option<Weekday> {
    word.parse::<Weekday>().ok().filter(|_| word.len() >= 3)
}

/// `friday`, `this friday`, `on friday` → the next Friday from today (today itself when it
/// is Friday); `next friday` → the first Friday after today.
fn weekday_phrase(p: &str, today: NaiveDate) -> Option<NaiveDate> {
    let (strictly_after, word) = match p.split_once(' ') {
        Some(("next", w)) => (true, w),
        Some(("this", w)) | Some(("coming", w)) => (false, w),
        Some(_) => return None,
        None => (false, p),
    };
    let target = weekday(word)?;
    let mut days = (7 + target.num_days_from_monday() as i64
        - today.weekday().num_days_from_monday() as i64)
        % 7;
    if days == 0 && strictly_after {
        days = 7;
    }
    Some(today + Duration::days(days))
}

/// `december fourth`, `december 4th`, `4 december`, `the fourth of december 2026` → that day,
/// this year or, if it has passed, next year (as Alexa does without a year).
fn month_day_phrase(p: &str, today: NaiveDate) -> Option<NaiveDate> {
    let words: Vec<&str> = p.split(' ').filter(|w| *w != "of" && *w != "the").collect();
    let month_at = words.iter().position(|w| MONTHS.contains(w))?;
    let month = MONTHS.iter().position(|m| *m == words[month_at])? as u32 + 1;
    let before = words[..month_at].join(" ");
    let after: Vec<&str> = words[month_at + 1..].to_vec();
    let (day_words, year_words): (String, Vec<&str>) = if !before.is_empty() {
        (before, after)
    } else {
        // "december twenty fourth 2026": the day is one or two words.
        let two = after.iter().take(2).cloned().collect::<Vec<_>>().join(" ");
        if after.len() >= 2 && day_number(&two).is_some() {
            (two, after[2..].to_vec())
        } else {
            (
                after.first()?.to_string(),
                after.get(1..).unwrap_or(&[]).to_vec(),
            )
        }
    };
    let d = day_number(&day_words)?;
    let year = match year_words.as_slice() {
        [] => None,
        [y] => Some(
            y.parse::<i32>()
                .ok()
                .filter(|y| (1900..=2200).contains(y))?,
        ),
        _ => return None,
    };
    match year {
        Some(y) => NaiveDate::from_ymd_opt(y, month, d),
        None => {
            let this_year = NaiveDate::from_ymd_opt(today.year(), month, d);
            match this_year {
                Some(date) if date >= today => Some(date),
                _ => NaiveDate::from_ymd_opt(today.year() + 1, month, d),
            }
        }
    }
}

fn day_number(w: &str) -> Option<u32> {
    if let Some(i) = ORDINALS.iter().position(|o| *o == w) {
        return Some(i as u32 + 1);
    }
    let digits = w.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let suffix = &w[digits.len()..];
    if !matches!(suffix, "" | "st" | "nd" | "rd" | "th") {
        return None;
    }
    digits.parse().ok().filter(|d| (1..=31).contains(d))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Thursday.
    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 12, 3).unwrap()
    }

    #[test]
    fn spoken_dates_resolve_as_alexa_would() {
        for (phrase, want) in [
            ("today", Some("2026-12-03")),
            ("tomorrow", Some("2026-12-04")),
            ("Friday", Some("2026-12-04")),
            ("next friday", Some("2026-12-04")),
            ("this thursday", Some("2026-12-03")),
            ("next thursday", Some("2026-12-10")),
            ("on monday", Some("2026-12-07")),
            ("2026-12-04", Some("2026-12-04")),
            ("december fourth", Some("2026-12-04")),
            ("december 24th", Some("2026-12-24")),
            ("the twenty fourth of december", Some("2026-12-24")),
            ("4 january", Some("2027-01-04")),
            ("march 3rd 2028", Some("2028-03-03")),
            ("next week", Some("2026-W50")),
            ("this weekend", Some("2026-W49-WE")),
            ("next month", Some("2027-01")),
            ("february thirtieth", None),
            ("soon", None),
            ("next blue", None),
        ] {
            assert_eq!(resolve(phrase, today()).as_deref(), want, "{phrase}");
        }
    }
}
