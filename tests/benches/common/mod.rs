//! What the benchmarks share: their knobs and reading wrk's report.

/// A bench knob from the environment; `default` when unset or unreadable.
pub fn env_u64(name: &str, default: u64) -> u64 {
    #[allow(clippy::disallowed_methods)] // a bench knob, not service config
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// wrk's headline figures; NaN where wrk printed none.
#[derive(Debug, Clone, Copy)]
pub struct WrkFigures {
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// A wrk latency (`812.00us`, `4.26ms`, `1.02s`) in milliseconds.
fn duration_ms(text: &str) -> f64 {
    let (number, unit) = text
        .find(|c: char| c.is_ascii_alphabetic())
        .map(|i| text.split_at(i))
        .unwrap_or((text, "s"));
    let value: f64 = number.parse().unwrap_or(f64::NAN);
    match unit {
        "us" => value / 1000.0,
        "ms" => value,
        "s" => value * 1000.0,
        _ => f64::NAN,
    }
}

/// The figures in the output of `wrk --latency`.
pub fn parse_wrk(text: &str) -> WrkFigures {
    let mut figures = WrkFigures {
        rps: f64::NAN,
        p50_ms: f64::NAN,
        p99_ms: f64::NAN,
    };
    for line in text.lines().map(str::trim) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            ["Requests/sec:", rps] => figures.rps = rps.parse().unwrap_or(f64::NAN),
            ["50%", latency] => figures.p50_ms = duration_ms(latency),
            ["99%", latency] => figures.p99_ms = duration_ms(latency),
            _ => {}
        }
    }
    figures
}
