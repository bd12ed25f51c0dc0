//! The console's pages and the small formatting helpers they share.

pub mod auth;
pub mod build;
pub mod builds;
pub mod cluster;
pub mod layout;
pub mod live;
pub mod overrides;
pub mod service;
pub mod waves;

use cascade_core::{JobStatus, UnixMillis};
use maud::{html, Markup};

/// Milliseconds since the Unix epoch now (the console's only clock: durations of running builds).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// `YYYY-MM-DD HH:MM:SS` in UTC (days to civil date after H. Hinnant's published method).
pub fn utc(at: UnixMillis) -> String {
    let secs = at.0 / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// A time as `<time>` with the exact UTC time.
pub fn time(at: UnixMillis) -> Markup {
    html! { time datetime=(at.0) { (utc(at)) } }
}

/// `1.5 s`, `3 min 20 s`, `2 h 5 min`.
pub fn duration(ms: u64) -> String {
    let secs = ms / 1000;
    match secs {
        0..=59 => format!("{:.1} s", ms as f64 / 1000.0),
        60..=3599 => format!("{} min {} s", secs / 60, secs % 60),
        _ => format!("{} h {} min", secs / 3600, secs % 3600 / 60),
    }
}

/// `512 B`, `1.2 MiB`, `9.8 GiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {} ({n} bytes)", UNITS[unit])
    }
}

/// A status badge; `data-status` lets tests and scripts read it.
pub fn badge(status: &JobStatus) -> Markup {
    let name = status.name();
    html! { span class={"badge " (name)} data-status=(name) { (name) } }
}

/// How long a build took, or has been going.
pub fn build_duration(job: &cascade_core::Job) -> String {
    let end = job.finished_at.map_or(now_ms(), |f| f.0);
    duration(end.saturating_sub(job.submitted_at.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_times_sizes_and_durations() {
        assert_eq!(utc(UnixMillis(0)), "1970-01-01 00:00:00");
        assert_eq!(utc(UnixMillis(1_795_853_171_000)), "2026-11-28 08:06:11");
        assert_eq!(utc(UnixMillis(951_782_400_000)), "2000-02-29 00:00:00");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB (1536 bytes)");
        assert_eq!(duration(1500), "1.5 s");
        assert_eq!(duration(200_000), "3 min 20 s");
    }
}
