//! Sizes, ages and durations in docker's words (go-units'
//! `HumanSizeWithPrecision` and `HumanDuration`, buildx du's sizes):
//! rendering, so byte-identical to docker's output; times are parsed with
//! jiff.

/// docker's `units.HumanSizeWithPrecision(size, 3)`: decimal units, three
/// significant digits.
pub fn human_size(size: u64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    let mut v = size as f64;
    let mut i = 0;
    while v >= 1000.0 && i < UNITS.len() - 1 {
        v /= 1000.0;
        i += 1;
    }
    format!("{}{}", sig3(v), UNITS[i])
}

/// Go's `%.3g` for the range human_size produces (0 ≤ v < 1000).
fn sig3(v: f64) -> String {
    let decimals = if v >= 100.0 {
        0
    } else if v >= 10.0 {
        1
    } else {
        2
    };
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// `kiln du`'s sizes, as `buildx du` prints them: decimal units, three
/// decimals.
pub fn du_size(n: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u + 1 < units.len() {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n}B")
    } else {
        format!("{v:.3}{}", units[u])
    }
}

/// docker's `units.HumanDuration` (image ages, container uptimes).
pub fn human_duration(secs: i64) -> String {
    let secs = secs.max(0);
    if secs < 1 {
        "Less than a second".into()
    } else if secs == 1 {
        "1 second".into()
    } else if secs < 60 {
        format!("{secs} seconds")
    } else if secs / 60 == 1 {
        "About a minute".into()
    } else if secs / 60 < 60 {
        format!("{} minutes", secs / 60)
    } else {
        let hours = (secs as f64 / 3600.0 + 0.5) as i64;
        if hours == 1 {
            "About an hour".into()
        } else if hours < 48 {
            format!("{hours} hours")
        } else if hours < 24 * 7 * 2 {
            format!("{} days", hours / 24)
        } else if hours < 24 * 30 * 2 {
            format!("{} weeks", hours / 24 / 7)
        } else if hours < 24 * 365 * 2 {
            format!("{} months", hours / 24 / 30)
        } else {
            format!("{} years", secs / 3600 / 24 / 365)
        }
    }
}

/// "2 years ago", as docker words an image's age.
pub fn ago(t: i64) -> String {
    let now = jiff::Timestamp::now().as_second();
    format!("{} ago", human_duration(now - t))
}

/// docker's time argument (`logs --since/--until`, the `until=` filters
/// of `prune`): a Go duration before `now_ns` (`24h`, `1h30m`), Unix
/// seconds (`1700000000.5`), an RFC 3339 time, or a date or date-time taken
/// as UTC. Nanoseconds since the epoch; `None` if it is none of these.
pub fn docker_time_ns(v: &str, now_ns: i128) -> Option<i128> {
    if let Ok(d) = kiln_worker::container::life::parse_go_duration(v) {
        return Some(now_ns - i128::try_from(d.as_nanos()).unwrap_or(i128::MAX));
    }
    if let Ok(f) = v.parse::<f64>() {
        return Some((f * 1e9) as i128);
    }
    if let Ok(t) = v.parse::<jiff::Timestamp>() {
        return Some(t.as_nanosecond());
    }
    let utc = |z: Result<jiff::Zoned, jiff::Error>| z.ok().map(|z| z.timestamp().as_nanosecond());
    if let Ok(d) = v.parse::<jiff::civil::DateTime>() {
        return utc(d.to_zoned(jiff::tz::TimeZone::UTC));
    }
    if let Ok(d) = v.parse::<jiff::civil::Date>() {
        return utc(d.to_zoned(jiff::tz::TimeZone::UTC));
    }
    None
}

/// Seconds since the epoch of an RFC 3339 time (`2024-01-01T00:00:00Z`,
/// fractions and offsets allowed).
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    s.parse::<jiff::Timestamp>().ok().map(|t| t.as_second())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_like_docker() {
        assert_eq!(human_size(395), "395B");
        assert_eq!(human_size(1_031_856), "1.03MB");
        assert_eq!(human_size(990_777), "991kB");
        assert_eq!(human_size(4_260_000), "4.26MB");
        assert_eq!(human_size(0), "0B");
        assert_eq!(du_size(999), "999B");
        assert_eq!(du_size(1_500_000), "1.500MB");
    }

    #[test]
    fn times() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("2024-01-01T00:00:00Z"), Some(1_704_067_200));
        assert_eq!(
            parse_rfc3339("2024-01-01T01:00:00.123456789+01:00"),
            Some(1_704_067_200)
        );
        assert_eq!(parse_rfc3339("garbage"), None);
    }

    #[test]
    fn durations_like_docker() {
        assert_eq!(human_duration(0), "Less than a second");
        assert_eq!(human_duration(5), "5 seconds");
        assert_eq!(human_duration(90), "About a minute");
        assert_eq!(human_duration(600), "10 minutes");
    }
}
