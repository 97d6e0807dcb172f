//! A bar chart of a report's series, drawn on the server as SVG: no script, readable by
//! screen readers (a title and description, and each bar's count in its tooltip).

use maud::{Markup, html};

const WIDTH: f64 = 900.0;
const HEIGHT: f64 = 260.0;
const LEFT: f64 = 48.0;
const BOTTOM: f64 = 36.0;
const TOP: f64 = 12.0;

/// A bar per `(label, count)`, with a labelled vertical axis; `title` names the chart. A bar
/// with a link in `links` (by position) leads to its events.
pub(crate) fn bars(title: &str, bars: &[(String, u64)], links: &[String]) -> Markup {
    let max = bars.iter().map(|(_, n)| *n).max().unwrap_or(0).max(1);
    let plot_width = WIDTH - LEFT - 8.0;
    let plot_height = HEIGHT - TOP - BOTTOM;
    let step = plot_width / bars.len().max(1) as f64;
    let bar_width = (step * 0.8).max(1.0);
    // Label at most about twelve bars, evenly.
    let label_every = bars.len().div_ceil(12).max(1);
    let total: u64 = bars.iter().map(|(_, n)| n).sum();
    let description = format!(
        "{} bars from {} to {}; {} events in all; the highest bar is {}.",
        bars.len(),
        bars.first().map_or("", |b| b.0.as_str()),
        bars.last().map_or("", |b| b.0.as_str()),
        total,
        max
    );
    // The axis tops at an even count, so its three labels are distinct whole numbers (a top of
    // 1 read "0, 1, 1").
    let top = max.max(2).next_multiple_of(2);
    let ticks = [0, top / 2, top];
    html! {
        // A chart of links is a group of them (an image's content would be hidden from
        // assistive technology); without links it is one image.
        svg.chart viewBox={ "0 0 " (WIDTH) " " (HEIGHT) } role=(if links.is_empty() { "img" } else { "group" }) aria-labelledby="chart-title chart-desc" xmlns="http://www.w3.org/2000/svg" {
            title id="chart-title" { (title) }
            desc id="chart-desc" { (description) }
            line.axis x1=(LEFT) y1=(TOP) x2=(LEFT) y2=(TOP + plot_height) {}
            line.axis x1=(LEFT) y1=(TOP + plot_height) x2=(WIDTH - 8.0) y2=(TOP + plot_height) {}
            @for tick in ticks {
                @let y = TOP + plot_height * (1.0 - tick as f64 / top as f64);
                text x=(LEFT - 6.0) y=(y + 4.0) text-anchor="end" { (tick) }
            }
            @for (i, (label, count)) in bars.iter().enumerate() {
                @let height = plot_height * (*count as f64) / (top as f64);
                @let x = LEFT + step * i as f64 + (step - bar_width) / 2.0;
                @let rect = html! {
                    rect.bar x=(format!("{x:.1}")) y=(format!("{:.1}", TOP + plot_height - height)) width=(format!("{bar_width:.1}")) height=(format!("{height:.1}")) {
                        title { (label) ": " (count) }
                    }
                };
                @match links.get(i).filter(|_| *count > 0) {
                    Some(link) => a href=(link) aria-label={ (label) ": " (count) " events" } { (rect) },
                    None => (rect),
                }
                // On a phone the labels grow and two in three step aside (style.css), so the
                // rest stay apart.
                @if i % label_every == 0 {
                    text class=[(!(i / label_every).is_multiple_of(3)).then_some("minor")] x=(format!("{:.1}", x + bar_width / 2.0)) y=(HEIGHT - BOTTOM + 16.0) text-anchor="middle" { (short(label)) }
                }
            }
        }
    }
}

/// A bucket's start as a short label: `MM-DD` for days, `MM-DD HH:00` for hours.
fn short(label: &str) -> String {
    let date = label.get(5..10).unwrap_or(label);
    match label.get(11..13) {
        Some(hour) if label.get(13..19) == Some(":00:00") && hour != "00" => {
            format!("{date} {hour}h")
        }
        _ => date.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::bars;

    /// The axis labels of a chart, bottom to top.
    fn axis(counts: &[u64]) -> Vec<String> {
        let data: Vec<(String, u64)> = counts
            .iter()
            .enumerate()
            .map(|(i, n)| (format!("2026-12-0{}T00:00:00Z", i + 1), *n))
            .collect();
        let svg = bars("t", &data, &[]).into_string();
        svg.split("text-anchor=\"end\">")
            .skip(1)
            .map(|rest| rest.split('<').next().unwrap().to_string())
            .collect()
    }

    #[test]
    fn the_axis_labels_are_distinct_whole_numbers() {
        assert_eq!(axis(&[1, 0, 1]), ["0", "1", "2"]);
        assert_eq!(axis(&[0, 0]), ["0", "1", "2"]);
        assert_eq!(axis(&[7, 3]), ["0", "4", "8"]);
        assert_eq!(axis(&[10]), ["0", "5", "10"]);
    }
}
