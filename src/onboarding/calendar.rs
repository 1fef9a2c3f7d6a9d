//! Working days and working hours: which date a plan's day N falls on, whether now is a time to
//! write to someone, and how many working days a task is overdue. Everything is in the
//! employee's own time zone.

use std::collections::BTreeSet;

use jiff::civil::{Date, Time, Weekday};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ZonedDateTime};

use super::OnboardingSettings;
use super::plan::DayCount;

#[derive(Debug, Clone)]
pub struct Calendar {
    weekend: Vec<Weekday>,
    holidays: BTreeSet<Date>,
    pub work_start: Time,
    pub work_end: Time,
    pub default_zone: TimeZone,
}

/// Settings that cannot make a calendar, named so the admin can fix them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("onboarding.{field}: {message}")]
pub struct CalendarError {
    pub field: &'static str,
    pub message: String,
}

impl CalendarError {
    /// The configuration key at fault, as `config check` names keys.
    pub fn field_key(&self) -> &'static str {
        match self.field {
            "timezone" => "onboarding.timezone",
            "work_start" => "onboarding.work_start",
            "work_end" => "onboarding.work_end",
            "weekend" => "onboarding.weekend",
            "holidays" => "onboarding.holidays",
            _ => "onboarding",
        }
    }
}

fn bad(field: &'static str, message: String) -> CalendarError {
    CalendarError { field, message }
}

pub fn parse_zone(name: &str) -> Result<TimeZone, String> {
    TimeZone::get(name).map_err(|_| format!("{name:?} is not a known time zone (like \"Europe/Moscow\")"))
}

impl Calendar {
    pub fn new(settings: &OnboardingSettings) -> Result<Calendar, CalendarError> {
        let time = |field: &'static str, text: &str| {
            text.trim()
                .parse::<Time>()
                .map_err(|_| bad(field, format!("{text:?} is not a time like \"09:00\"")))
        };
        let work_start = time("work_start", &settings.work_start)?;
        let work_end = time("work_end", &settings.work_end)?;
        if work_end <= work_start {
            return Err(bad(
                "work_end",
                format!("{} is not after work_start {}", settings.work_end, settings.work_start),
            ));
        }
        let weekend = settings
            .weekend
            .iter()
            .map(|day| {
                weekday(day).ok_or_else(|| bad("weekend", format!("{day:?} is not a day of the week")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if weekend.len() >= 7 {
            return Err(bad("weekend", "leaves no working day".into()));
        }
        let holidays = settings
            .holidays
            .iter()
            .map(|d| {
                d.trim()
                    .parse::<Date>()
                    .map_err(|_| bad("holidays", format!("{d:?} is not a date like \"2027-01-01\"")))
            })
            .collect::<Result<_, _>>()?;
        let default_zone = parse_zone(&settings.timezone).map_err(|m| bad("timezone", m))?;
        Ok(Calendar { weekend, holidays, work_start, work_end, default_zone })
    }

    pub fn is_working_day(&self, date: Date) -> bool {
        !self.weekend.contains(&date.weekday()) && !self.holidays.contains(&date)
    }

    fn counts(&self, date: Date, count: DayCount) -> bool {
        count == DayCount::Calendar || self.is_working_day(date)
    }

    /// The date of plan day `day` (1 = the start date, or the first working day from it).
    pub fn date_of_day(&self, start: Date, day: u32, count: DayCount) -> Date {
        let mut date = start;
        let mut n = 0;
        loop {
            if self.counts(date, count) {
                n += 1;
                if n >= day {
                    return date;
                }
            }
            date = date.tomorrow().expect("dates stay far from the end of time");
        }
    }

    /// Working days strictly after `due` up to and including `today`.
    pub fn working_days_late(&self, due: Date, today: Date) -> u32 {
        let mut date = due;
        let mut late = 0;
        while date < today {
            date = date.tomorrow().expect("dates stay far from the end of time");
            if self.is_working_day(date) {
                late += 1;
            }
        }
        late
    }

    /// `now` in `zone`.
    pub fn local(&self, now: i64, zone: &TimeZone) -> ZonedDateTime {
        Timestamp::from_second(now).unwrap_or(Timestamp::UNIX_EPOCH).to_zoned_datetime(zone.clone())
    }

    /// Whether `local` falls in working hours on a working day.
    pub fn in_working_hours(&self, local: &ZonedDateTime) -> bool {
        let time = local.time();
        self.is_working_day(local.date()) && time >= self.work_start && time < self.work_end
    }
}

/// A weekday by its English name or three-letter abbreviation, any case.
pub fn weekday(name: &str) -> Option<Weekday> {
    Some(match name.trim().to_ascii_lowercase().as_str() {
        "monday" | "mon" => Weekday::Monday,
        "tuesday" | "tue" => Weekday::Tuesday,
        "wednesday" | "wed" => Weekday::Wednesday,
        "thursday" | "thu" => Weekday::Thursday,
        "friday" | "fri" => Weekday::Friday,
        "saturday" | "sat" => Weekday::Saturday,
        "sunday" | "sun" => Weekday::Sunday,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn calendar() -> Calendar {
        let settings = OnboardingSettings { holidays: vec!["2026-12-08".into()], ..Default::default() };
        Calendar::new(&settings).unwrap()
    }

    #[test]
    fn working_days_skip_weekends_and_holidays() {
        let c = calendar();
        let monday: Date = "2026-11-30".parse().unwrap();
        assert_eq!(c.date_of_day(monday, 1, DayCount::Working), monday);
        assert_eq!(c.date_of_day(monday, 5, DayCount::Working).to_string(), "2026-12-04");
        // Day 6 skips the weekend, day 7 the holiday on Tuesday 8 December.
        assert_eq!(c.date_of_day(monday, 6, DayCount::Working).to_string(), "2026-12-07");
        assert_eq!(c.date_of_day(monday, 7, DayCount::Working).to_string(), "2026-12-09");
        assert_eq!(c.date_of_day(monday, 7, DayCount::Calendar).to_string(), "2026-12-06");
        // A Saturday start begins on Monday.
        let saturday: Date = "2026-11-28".parse().unwrap();
        assert_eq!(c.date_of_day(saturday, 1, DayCount::Working), monday);
        let friday: Date = "2026-12-04".parse().unwrap();
        assert_eq!(c.working_days_late(friday, "2026-12-09".parse().unwrap()), 2);
    }

    #[test]
    fn working_hours_are_local() {
        let c = calendar();
        let vladivostok = parse_zone("Asia/Vladivostok").unwrap();
        // 2026-11-30 00:30 UTC is 10:30 in Vladivostok (UTC+10) and 03:30 in Moscow.
        let now = "2026-11-30T00:30:00Z".parse::<Timestamp>().unwrap().as_second();
        assert!(c.in_working_hours(&c.local(now, &vladivostok)));
        assert!(!c.in_working_hours(&c.local(now, &c.default_zone)));
        assert!(
            Calendar::new(&OnboardingSettings { timezone: "Mars/Olympus".into(), ..Default::default() })
                .is_err()
        );
    }
}
