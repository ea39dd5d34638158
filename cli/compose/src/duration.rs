//! Go's `time.ParseDuration` and `Duration.String`, because compose prints
//! durations the Go way (`90s` → `1m30s`, `1m` → `1m0s`).

/// Parses a Go duration (`1h2m3.5s`, `300ms`, `-1s`) into nanoseconds.
pub fn parse(s: &str) -> Option<i128> {
    let (neg, mut rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if rest == "0" {
        return Some(0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_end == 0 {
            return None;
        }
        let num: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_end] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        rest = &rest[unit_end..];
        total += num * unit;
    }
    let n = total.round() as i128;
    Some(if neg { -n } else { n })
}

fn frac(v: u128, unit: u128, precision: usize) -> String {
    let whole = v / unit;
    let rem = v % unit;
    if rem == 0 {
        return whole.to_string();
    }
    let digits = format!("{rem:0precision$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

/// Formats nanoseconds as Go's `Duration.String` does.
pub fn format(ns: i128) -> String {
    if ns == 0 {
        return "0s".into();
    }
    let sign = if ns < 0 { "-" } else { "" };
    let u = ns.unsigned_abs();
    if u < 1_000 {
        return format!("{sign}{u}ns");
    }
    if u < 1_000_000 {
        return format!("{sign}{}µs", frac(u, 1_000, 3));
    }
    if u < 1_000_000_000 {
        return format!("{sign}{}ms", frac(u, 1_000_000, 6));
    }
    let secs_total = u / 1_000_000_000;
    let sub = u % 1_000_000_000;
    let h = secs_total / 3600;
    let m = (secs_total % 3600) / 60;
    let s = secs_total % 60;
    let sec = frac(s * 1_000_000_000 + sub, 1_000_000_000, 9);
    let mut out = String::from(sign);
    if h > 0 {
        out.push_str(&format!("{h}h{m}m"));
    } else if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    out.push_str(&format!("{sec}s"));
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn go_strings() {
        let f = |s| super::format(super::parse(s).unwrap());
        assert_eq!(f("90s"), "1m30s");
        assert_eq!(f("1m"), "1m0s");
        assert_eq!(f("1h"), "1h0m0s");
        assert_eq!(f("1.5s"), "1.5s");
        assert_eq!(f("300ms"), "300ms");
        assert_eq!(f("10s"), "10s");
        assert!(super::parse("10").is_none());
    }
}
