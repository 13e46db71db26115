//! Charts as inline SVG made on the server: bars (deploys per day) and lines (success rate,
//! duration percentiles), with axes, labels, a `<title>` and `<desc>` for screen readers and
//! a `<title>` on every bar and point. Colours come from classes in the stylesheet; each
//! chart carries `data-chart` (its id) and `data-points` (how many points it drew) for tests.

use chrono::NaiveDate;
use maud::{Markup, html};

/// The drawing's size in its own units (it scales to the page's width).
const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 220.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 14.0;
const BOTTOM: f64 = 30.0;

/// What every chart has: an id, a title, the days along the x axis and how a value on the y
/// axis is written.
pub struct Chart<'a> {
    /// `data-chart` and the base of the element ids (unique on the page).
    pub id: &'a str,
    /// The chart's title (shown above it, and its accessible name).
    pub title: &'a str,
    /// One entry per day, in order.
    pub days: &'a [NaiveDate],
    /// How a value is written (axis labels, tooltips).
    pub format: &'a dyn Fn(f64) -> String,
    /// The top of the y axis; `None`: a round number above the largest value.
    pub y_max: Option<f64>,
}

/// One line of a line chart: a value per day (`None`: no value that day, a gap).
pub struct Series<'a> {
    /// Its name in the legend and tooltips.
    pub name: &'a str,
    /// Its CSS class (`s1`, `s2`): which colour.
    pub class: &'a str,
    /// A value per day of [`Chart::days`].
    pub values: Vec<Option<f64>>,
}

/// The smallest of 1, 2, 2.5, 5 × 10ⁿ at or above `v` (1 when `v` is 0 or less).
fn round_up(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let magnitude = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .into_iter()
        .map(|step| step * magnitude)
        .find(|top| *top >= v - 1e-9)
        .unwrap_or(10.0 * magnitude)
}

/// `3 Mar`.
fn day_label(day: NaiveDate) -> String {
    day.format("%-d %b").to_string()
}

/// The plot's coordinates for a chart of `n` days with values up to `max`.
struct Frame {
    n: usize,
    max: f64,
}

impl Frame {
    fn plot_width() -> f64 {
        WIDTH - LEFT - RIGHT
    }

    fn plot_height() -> f64 {
        HEIGHT - TOP - BOTTOM
    }

    /// The middle of day `i`'s slot.
    fn x(&self, i: usize) -> f64 {
        LEFT + Self::plot_width() * (i as f64 + 0.5) / self.n.max(1) as f64
    }

    fn slot(&self) -> f64 {
        Self::plot_width() / self.n.max(1) as f64
    }

    fn y(&self, v: f64) -> f64 {
        TOP + Self::plot_height() * (1.0 - (v / self.max).clamp(0.0, 1.0))
    }
}

/// Axes, grid lines with the y values, and day labels (first, middle, last).
fn axes(chart: &Chart<'_>, frame: &Frame) -> Markup {
    let bottom = HEIGHT - BOTTOM;
    let ticks = [0.0, frame.max / 2.0, frame.max];
    let n = chart.days.len();
    let mut labelled: Vec<usize> = if n == 0 {
        Vec::new()
    } else {
        vec![0, n / 2, n - 1]
    };
    labelled.dedup();
    html! {
        g.axes aria-hidden="true" {
            @for v in ticks {
                line.grid x1=(LEFT) x2=(WIDTH - RIGHT) y1=(r(frame.y(v))) y2=(r(frame.y(v))) {}
                text.label x=(LEFT - 6.0) y=(r(frame.y(v) + 4.0)) text-anchor="end" { ((chart.format)(v)) }
            }
            line.axis x1=(LEFT) x2=(LEFT) y1=(TOP) y2=(bottom) {}
            line.axis x1=(LEFT) x2=(WIDTH - RIGHT) y1=(bottom) y2=(bottom) {}
            @for i in labelled {
                text.label x=(r(frame.x(i))) y=(HEIGHT - 10.0) text-anchor="middle" { (day_label(chart.days[i])) }
            }
        }
    }
}

/// Rounded to a tenth, for shorter SVG.
fn r(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

fn frame_of(chart: &Chart<'_>, largest: f64) -> Frame {
    Frame {
        n: chart.days.len(),
        max: chart.y_max.unwrap_or_else(|| round_up(largest)),
    }
}

fn svg(chart: &Chart<'_>, desc: &str, points: usize, body: Markup) -> Markup {
    let title_id = format!("{}-title", chart.id);
    let desc_id = format!("{}-desc", chart.id);
    html! {
        figure.chart {
            figcaption id=(format!("{}-caption", chart.id)) { (chart.title) }
            svg xmlns="http://www.w3.org/2000/svg" viewBox=(format!("0 0 {WIDTH} {HEIGHT}"))
                role="img" aria-labelledby=(format!("{title_id} {desc_id}"))
                data-chart=(chart.id) data-points=(points) {
                title id=(title_id) { (chart.title) }
                desc id=(desc_id) { (desc) }
                @if chart.days.is_empty() {
                    text.label.empty x=(WIDTH / 2.0) y=(HEIGHT / 2.0) text-anchor="middle" { "No data for this period" }
                } @else {
                    (body)
                }
            }
        }
    }
}

/// A bar per day.
pub fn bar_chart(chart: &Chart<'_>, values: &[f64]) -> Markup {
    let largest = values.iter().copied().fold(0.0, f64::max);
    let frame = frame_of(chart, largest);
    let total: f64 = values.iter().sum();
    let desc = match chart.days.first().zip(chart.days.last()) {
        Some((first, last)) => format!(
            "{} from {} to {}; the most in one day: {}.",
            (chart.format)(total),
            day_label(*first),
            day_label(*last),
            (chart.format)(largest)
        ),
        None => "No data for this period.".to_owned(),
    };
    let width = (frame.slot() * 0.7).max(1.0);
    let body = html! {
        (axes(chart, &frame))
        g.bars {
            @for (i, (day, v)) in chart.days.iter().zip(values).enumerate() {
                rect.bar x=(r(frame.x(i) - width / 2.0)) y=(r(frame.y(*v))) width=(r(width))
                    height=(r(frame.y(0.0) - frame.y(*v))) data-day=(day.to_string()) data-value=(v) {
                    title { (day_label(*day)) ": " ((chart.format)(*v)) }
                }
            }
        }
    };
    svg(chart, &desc, values.len().min(chart.days.len()), body)
}

/// A line per series, broken where a day has no value; a lone value is a dot.
pub fn line_chart(chart: &Chart<'_>, series: &[Series<'_>]) -> Markup {
    let largest = series
        .iter()
        .flat_map(|s| s.values.iter().flatten())
        .copied()
        .fold(0.0, f64::max);
    let frame = frame_of(chart, largest);
    let points: usize = series
        .iter()
        .map(|s| s.values.iter().take(chart.days.len()).flatten().count())
        .sum();
    let desc = series
        .iter()
        .map(|s| {
            let known: Vec<f64> = s.values.iter().flatten().copied().collect();
            match known.last() {
                Some(last) => format!(
                    "{}: {} day(s) with a value, the last {}.",
                    s.name,
                    known.len(),
                    (chart.format)(*last)
                ),
                None => format!("{}: no values.", s.name),
            }
        })
        .collect::<Vec<_>>()
        .join(" ");
    let body = html! {
        (axes(chart, &frame))
        @for s in series {
            g class=(format!("series {}", s.class)) data-series=(s.name) {
                path.line d=(path_of(&frame, &s.values)) {}
                @for (i, (day, v)) in chart.days.iter().zip(&s.values).enumerate() {
                    @if let Some(v) = v {
                        circle.dot cx=(r(frame.x(i))) cy=(r(frame.y(*v))) r="3" data-day=(day.to_string()) {
                            title { (s.name) ", " (day_label(*day)) ": " ((chart.format)(*v)) }
                        }
                    }
                }
            }
        }
        g.legend aria-hidden="true" {
            @for (i, s) in series.iter().enumerate() {
                g class=(s.class) {
                    rect.key x=(LEFT + 8.0 + i as f64 * 120.0) y=(TOP) width="10" height="10" {}
                    text.label x=(LEFT + 22.0 + i as f64 * 120.0) y=(TOP + 9.0) { (s.name) }
                }
            }
        }
    };
    svg(chart, &desc, points, body)
}

/// `M x y L x y …`, starting again (`M`) after every gap.
fn path_of(frame: &Frame, values: &[Option<f64>]) -> String {
    let mut d = String::new();
    let mut pen_down = false;
    for (i, v) in values.iter().enumerate().take(frame.n) {
        match v {
            Some(v) => {
                let cmd = if pen_down { 'L' } else { 'M' };
                if !d.is_empty() {
                    d.push(' ');
                }
                d.push_str(&format!("{cmd}{} {}", r(frame.x(i)), r(frame.y(*v))));
                pen_down = true;
            }
            None => pen_down = false,
        }
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    fn days(n: usize) -> Vec<NaiveDate> {
        let start = NaiveDate::from_ymd_opt(2026, 3, 1).unwrap();
        (0..n)
            .map(|i| start + chrono::Days::new(i as u64))
            .collect()
    }

    fn count(v: f64) -> String {
        format!("{v}")
    }

    fn chart<'a>(
        id: &'a str,
        days: &'a [NaiveDate],
        format: &'a dyn Fn(f64) -> String,
    ) -> Chart<'a> {
        Chart {
            id,
            title: "Deploys per day",
            days,
            format,
            y_max: None,
        }
    }

    #[test]
    fn round_numbers_top_the_axis() {
        for (v, want) in [
            (0.0, 1.0),
            (1.0, 1.0),
            (3.0, 5.0),
            (7.0, 10.0),
            (11.0, 20.0),
            (24.0, 25.0),
            (0.3, 0.5),
            (130.0, 200.0),
        ] {
            assert_eq!(round_up(v), want, "{v}");
        }
    }

    #[test]
    fn an_empty_period_says_so() {
        let none = days(0);
        let svg = bar_chart(&chart("deploys", &none, &count), &[]).into_string();
        assert!(svg.contains(r#"data-points="0""#), "{svg}");
        assert!(svg.contains("No data for this period"), "{svg}");
        assert!(!svg.contains("<rect"), "{svg}");
        let svg = line_chart(&chart("rate", &none, &count), &[]).into_string();
        assert!(svg.contains("No data for this period"), "{svg}");
    }

    #[test]
    fn one_day_is_one_bar_and_one_dot() {
        let one = days(1);
        let svg = bar_chart(&chart("deploys", &one, &count), &[4.0]).into_string();
        assert_eq!(svg.matches("<rect").count(), 1, "{svg}");
        assert!(
            svg.contains(r#"data-day="2026-03-01" data-value="4""#),
            "{svg}"
        );
        assert!(svg.contains("<title>1 Mar: 4</title>"), "{svg}");
        let series = [Series {
            name: "success rate",
            class: "s1",
            values: vec![Some(50.0)],
        }];
        let svg = line_chart(&chart("rate", &one, &count), &series).into_string();
        assert_eq!(svg.matches("<circle").count(), 1, "{svg}");
        assert!(svg.contains(r#"d="M"#), "{svg}");
        assert!(!svg.contains(" L"), "one point draws no segment: {svg}");
    }

    #[test]
    fn many_days_draw_bars_axes_and_broken_lines() {
        let many = days(30);
        let values: Vec<f64> = (0..30).map(|i| f64::from(i % 4)).collect();
        let svg = bar_chart(&chart("deploys", &many, &count), &values).into_string();
        assert_eq!(svg.matches("<rect").count(), 30, "{svg}");
        assert!(svg.contains(r#"data-points="30""#));
        assert!(
            svg.contains(r#"role="img""#)
                && svg.contains(r#"aria-labelledby="deploys-title deploys-desc""#)
        );
        assert!(
            svg.contains("<title id=\"deploys-title\">Deploys per day</title>"),
            "{svg}"
        );
        assert!(
            svg.contains(">1 Mar<") && svg.contains(">16 Mar<") && svg.contains(">30 Mar<"),
            "{svg}"
        );
        assert!(
            svg.contains("43 from 1 Mar to 30 Mar; the most in one day: 3."),
            "{svg}"
        );
        // The tallest bar reaches the top of a 5-high axis (3 → 5): 3/5 of the plot height.
        assert!(svg.contains(">5</text>"), "{svg}");

        let mut values: Vec<Option<f64>> = (0..30).map(|i| Some(f64::from(i))).collect();
        values[10] = None;
        values[11] = None;
        let series = [
            Series {
                name: "p50",
                class: "s1",
                values: values.clone(),
            },
            Series {
                name: "p90",
                class: "s2",
                values: vec![None; 30],
            },
        ];
        let svg = line_chart(&chart("duration", &many, &count), &series).into_string();
        assert_eq!(svg.matches("<circle").count(), 28, "{svg}");
        assert!(svg.contains(r#"data-points="28""#));
        let p50 = svg.split("data-series=\"p50\"").nth(1).unwrap();
        let path = p50.split("d=\"").nth(1).unwrap().split('"').next().unwrap();
        assert_eq!(
            path.matches('M').count(),
            2,
            "the gap restarts the line: {path}"
        );
        assert!(svg.contains("p90: no values."), "{svg}");
        assert!(
            svg.contains("p50: 28 day(s) with a value, the last 29."),
            "{svg}"
        );
    }

    #[test]
    fn names_are_escaped() {
        let one = days(1);
        let series = [Series {
            name: "<b>",
            class: "s1",
            values: vec![Some(1.0)],
        }];
        let svg = line_chart(
            &Chart {
                title: "a & b",
                ..chart("x", &one, &count)
            },
            &series,
        )
        .into_string();
        assert!(
            svg.contains("a &amp; b") && svg.contains("&lt;b&gt;") && !svg.contains("<b>"),
            "{svg}"
        );
    }
}
