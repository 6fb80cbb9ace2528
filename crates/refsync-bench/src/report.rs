//! Pure helpers of the report: latency percentiles, the rate-limit window check, the text
//! table and the SVG plot of latency against offered load.

use std::fmt::Write as _;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Latency percentiles (nearest rank), in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Latency {
    /// Samples.
    pub count: usize,
    /// Median.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// Maximum.
    pub max_us: u64,
}

/// Sorts `samples` (µs) and takes the nearest-rank percentiles; all zero when empty.
pub fn summarize(samples: &mut [u32]) -> Latency {
    samples.sort_unstable();
    let n = samples.len();
    if n == 0 {
        return Latency::default();
    }
    let rank = |p: f64| -> u64 {
        // Nearest rank: the smallest value with at least p % of the samples at or below it.
        let k = ((p / 100.0) * n as f64).ceil() as usize;
        u64::from(samples[k.clamp(1, n) - 1])
    };
    Latency {
        count: n,
        p50_us: rank(50.0),
        p90_us: rank(90.0),
        p99_us: rank(99.0),
        max_us: u64::from(samples[n - 1]),
    }
}

/// The most arrivals in any window of length `window` (arrivals as offsets from any origin,
/// in any order).
pub fn max_in_window(arrivals: &[Duration], window: Duration) -> usize {
    let mut sorted = arrivals.to_vec();
    sorted.sort_unstable();
    let mut best = 0;
    let mut start = 0;
    for end in 0..sorted.len() {
        while sorted[end] - sorted[start] >= window {
            start += 1;
        }
        best = best.max(end - start + 1);
    }
    best
}

/// A plain text table: a header row, a rule, the rows; columns padded to their widest cell,
/// columns of numbers right-aligned.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let columns = headers.len();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate().take(columns) {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    // A column is numeric (right-aligned, header included) when every cell is a number.
    let numeric: Vec<bool> = (0..columns)
        .map(|i| {
            !rows.is_empty()
                && rows
                    .iter()
                    .all(|r| r.get(i).is_some_and(|c| c.parse::<f64>().is_ok()))
        })
        .collect();
    let mut out = String::new();
    let line = |out: &mut String, cells: &mut dyn Iterator<Item = &str>| {
        let mut parts = Vec::new();
        for (i, cell) in cells.enumerate().take(columns) {
            let pad = widths[i].saturating_sub(cell.chars().count());
            parts.push(if numeric[i] {
                format!("{}{cell}", " ".repeat(pad))
            } else {
                format!("{cell}{}", " ".repeat(pad))
            });
        }
        let _ = writeln!(out, "{}", parts.join("  ").trim_end());
    };
    line(&mut out, &mut headers.iter().copied());
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    let _ = writeln!(out, "{}", rule.join("  "));
    for row in rows {
        line(&mut out, &mut row.iter().map(String::as_str));
    }
    out
}

/// One line of the plot: (x, y) points in data units.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// The legend text.
    pub label: String,
    /// The points, in x order.
    pub points: Vec<(f64, f64)>,
    /// Dashed (for the second percentile of the same backend).
    pub dashed: bool,
}

const COLORS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf",
];

/// An SVG line chart: x and y logarithmic (offered load and latency span decades), ticks on
/// both axes, a dotted horizontal line at `target_y` when given, and a legend.
pub fn line_chart_svg(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    target_y: Option<(f64, &str)>,
) -> String {
    const W: f64 = 760.0;
    const H: f64 = 440.0;
    const LEFT: f64 = 70.0;
    const RIGHT: f64 = 200.0;
    const TOP: f64 = 40.0;
    const BOTTOM: f64 = 60.0;
    let xs = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .filter(|x| *x > 0.0 && x.is_finite());
    let (mut x_min, mut x_max) = xs.fold((f64::MAX, f64::MIN), |(a, b), x| (a.min(x), b.max(x)));
    if x_min > x_max {
        (x_min, x_max) = (1.0, 10.0);
    }
    let lx_min = x_min.log10().floor();
    let mut lx_max = x_max.log10().ceil();
    if lx_max <= lx_min {
        lx_max = lx_min + 1.0;
    }
    // y logarithmic too: latencies span a millisecond to seconds once a load saturates.
    let ys = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .chain(target_y.map(|t| t.0))
        .filter(|y| *y > 0.0 && y.is_finite());
    let (y_min, y_data_max) = ys.fold((f64::MAX, f64::MIN), |(a, b), y| (a.min(y), b.max(y)));
    let (y_min, y_data_max) = if y_min > y_data_max {
        (1.0, 10.0)
    } else {
        (y_min, y_data_max)
    };
    let ly_min = y_min.log10().floor();
    let mut ly_max = y_data_max.log10().ceil();
    if ly_max <= ly_min {
        ly_max = ly_min + 1.0;
    }
    let plot_w = W - LEFT - RIGHT;
    let plot_h = H - TOP - BOTTOM;
    let px = |x: f64| LEFT + (x.max(1e-12).log10() - lx_min) / (lx_max - lx_min) * plot_w;
    let py = |y: f64| {
        let ly = y.max(10f64.powf(ly_min)).log10();
        TOP + plot_h - (ly - ly_min) / (ly_max - ly_min) * plot_h
    };

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="22" font-size="15" text-anchor="middle">{}</text>"#,
        LEFT + plot_w / 2.0,
        escape(title)
    );
    // Axes and grid.
    let mut decade = lx_min;
    while decade <= lx_max + 1e-9 {
        for m in [1.0, 2.0, 5.0] {
            let x = 10f64.powf(decade) * m;
            if x.log10() > lx_max + 1e-9 {
                break;
            }
            let xp = px(x);
            let _ = writeln!(
                s,
                r##"<line x1="{xp:.1}" y1="{TOP}" x2="{xp:.1}" y2="{:.1}" stroke="#e5e5e5"/>"##,
                TOP + plot_h
            );
            let _ = writeln!(
                s,
                r#"<text x="{xp:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
                TOP + plot_h + 16.0,
                fmt_number(x)
            );
        }
        decade += 1.0;
    }
    let mut y_decade = ly_min;
    while y_decade <= ly_max + 1e-9 {
        let y = 10f64.powf(y_decade);
        let yp = py(y);
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{yp:.1}" x2="{:.1}" y2="{yp:.1}" stroke="#e5e5e5"/>"##,
            LEFT + plot_w
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            LEFT - 6.0,
            yp + 4.0,
            fmt_number(y)
        );
        y_decade += 1.0;
    }
    let _ = writeln!(
        s,
        r##"<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#333"/>"##
    );
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
        LEFT + plot_w / 2.0,
        H - 18.0,
        escape(x_label)
    );
    let _ = writeln!(
        s,
        r#"<text transform="translate(18 {:.1}) rotate(-90)" text-anchor="middle">{}</text>"#,
        TOP + plot_h / 2.0,
        escape(y_label)
    );
    if let Some((t, label)) = target_y {
        let yp = py(t);
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{yp:.1}" x2="{:.1}" y2="{yp:.1}" stroke="#555" stroke-dasharray="2 3"/>"##,
            LEFT + plot_w
        );
        let _ = writeln!(
            s,
            r##"<text x="{:.1}" y="{:.1}" fill="#555">{}</text>"##,
            LEFT + 4.0,
            yp - 4.0,
            escape(label)
        );
    }
    // Lines and legend.
    for (i, series) in series.iter().enumerate() {
        let color = COLORS[(i / 2) % COLORS.len()];
        let dash = if series.dashed {
            r#" stroke-dasharray="6 4""#
        } else {
            ""
        };
        let points: Vec<String> = series
            .points
            .iter()
            .filter(|p| p.0 > 0.0 && p.0.is_finite() && p.1.is_finite())
            .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2"{dash}/>"#,
            points.join(" ")
        );
        for p in &points {
            let (cx, cy) = p.split_once(',').unwrap_or(("0", "0"));
            let _ = writeln!(s, r#"<circle cx="{cx}" cy="{cy}" r="3" fill="{color}"/>"#);
        }
        let ly = TOP + 10.0 + 20.0 * i as f64;
        let lx = LEFT + plot_w + 14.0;
        let _ = writeln!(
            s,
            r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{color}" stroke-width="2"{dash}/>"#,
            lx + 24.0
        );
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}">{}</text>"#,
            lx + 30.0,
            ly + 4.0,
            escape(&series.label)
        );
    }
    s.push_str("</svg>\n");
    s
}

fn fmt_number(x: f64) -> String {
    if x >= 1000.0 && (x / 1000.0).fract() == 0.0 {
        format!("{}k", x / 1000.0)
    } else if x.fract() == 0.0 {
        format!("{x:.0}")
    } else {
        let s = format!("{x:.2}");
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut v: Vec<u32> = (1..=100).rev().collect();
        let l = summarize(&mut v);
        assert_eq!(
            (l.count, l.p50_us, l.p90_us, l.p99_us, l.max_us),
            (100, 50, 90, 99, 100)
        );
        let mut one = vec![7];
        assert_eq!(summarize(&mut one).p99_us, 7);
        assert_eq!(summarize(&mut []), Latency::default());
    }

    #[test]
    fn window_counts_are_exact_at_the_edges() {
        let ms = |v: &[u64]| {
            v.iter()
                .map(|&m| Duration::from_millis(m))
                .collect::<Vec<_>>()
        };
        let w = Duration::from_secs(60);
        // 0 and 60 s are in different 60 s windows, 0 and 59.999 s in the same one.
        assert_eq!(max_in_window(&ms(&[0, 60_000]), w), 1);
        assert_eq!(max_in_window(&ms(&[60_000, 0, 59_999]), w), 2);
        assert_eq!(max_in_window(&[], w), 0);
    }

    #[test]
    fn tables_align_columns_and_right_align_numbers() {
        let t = table(
            &["case", "rate"],
            &[
                vec!["sqlite".into(), "12".into()],
                vec!["postgres".into(), "1234".into()],
            ],
        );
        assert_eq!(
            t,
            "case      rate\n--------  ----\nsqlite      12\npostgres  1234\n"
        );
    }

    #[test]
    fn the_plot_has_every_series_a_legend_and_the_target_line() {
        let svg = line_chart_svg(
            "Ack latency",
            "offered deliveries/s",
            "ms",
            &[
                Series {
                    label: "sqlite p50".into(),
                    points: vec![(500.0, 0.4), (2000.0, 0.6), (10000.0, 3.0)],
                    dashed: false,
                },
                Series {
                    label: "sqlite p99 <&>".into(),
                    points: vec![(500.0, 1.0), (2000.0, 2.0), (10000.0, 30.0)],
                    dashed: true,
                },
            ],
            Some((10.0, "target p99 10 ms")),
        );
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert_eq!(svg.matches("<circle").count(), 6);
        assert!(svg.contains("sqlite p99 &lt;&amp;&gt;"));
        assert!(svg.contains("target p99 10 ms"));
        assert!(svg.contains(">10k<"), "x ticks in thousands");
        // y decades from below the smallest value to above the largest.
        assert!(svg.contains(">0.1<") && svg.contains(">100<"), "{svg}");
    }
}
