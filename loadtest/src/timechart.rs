//! The chart of a run over time: five panels over the same seconds (throughput, latency,
//! failures, the service's fallbacks, what it had out of rotation; a sixth, resident memory,
//! when the service exports it), each fault shaded from
//! its command to its undo and marked with a labelled line where it began. Lines are drawn
//! as path elements: plotters' series types are features this crate does not build.

use std::path::Path;

use plotters::{coord::Shift, prelude::*};

use crate::{
    faults::{NODES, Verb},
    metrics::Health,
    report::plot_error,
    series::{self, Applied},
    timeline::{FaultReport, spans},
};

type Line = (&'static str, RGBColor, Vec<(f64, f64)>);

/// A fault's shaded span: from, to, colour.
type Shade = (f64, f64, RGBAColor);

const STOP: RGBColor = RGBColor(220, 40, 40);
const PAUSE: RGBColor = RGBColor(230, 150, 0);
const DARK: RGBColor = RGBColor(60, 60, 60);
const GREENISH: RGBColor = RGBColor(0, 150, 70);
const PURPLE: RGBColor = RGBColor(140, 60, 170);

pub fn draw(report: &FaultReport, path: &Path) -> anyhow::Result<()> {
    let end = (report.seconds.len().max(1)) as f64;
    // A sixth panel, resident memory, when the service exports it.
    let memory: Vec<(f64, f64)> = report
        .health
        .iter()
        .filter_map(|h| h.rss_bytes.map(|b| (h.at, b / 1024.0 / 1024.0)))
        .collect();
    let rows = if memory.is_empty() { 5 } else { 6 };
    let root = SVGBackend::new(path, (1100, 270 * rows as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_error)?;
    let root = root
        .titled(&report.report.title, ("sans-serif", 18))
        .map_err(plot_error)?;
    let shades: Vec<Shade> = spans(&report.applied)
        .iter()
        .map(|span| {
            let to = span.undo.map_or(end, |u| u.done);
            let colour = if span.fault.verb == Verb::Pause {
                PAUSE
            } else {
                STOP
            };
            (span.fault.issued, to, colour.mix(0.10))
        })
        .collect();
    let mid = |t: u32| f64::from(t) + 0.5;
    let seconds = &report.seconds;
    let panels = root.split_evenly((rows, 1));
    panel(
        &panels[0],
        "requests/s (answered)",
        end,
        &[(
            "answers/s",
            BLUE,
            seconds
                .iter()
                .map(|s| (mid(s.t), s.responses as f64))
                .collect(),
        )],
        &shades,
        &report.applied,
        true,
    )?;
    panel(
        &panels[1],
        "latency per second, ms",
        end,
        &[
            (
                "p99",
                STOP,
                seconds.iter().map(|s| (mid(s.t), s.p99_ms)).collect(),
            ),
            (
                "p50",
                BLUE,
                seconds.iter().map(|s| (mid(s.t), s.p50_ms)).collect(),
            ),
        ],
        &shades,
        &report.applied,
        false,
    )?;
    panel(
        &panels[2],
        "failed requests/s",
        end,
        &[
            (
                "failed (all)",
                STOP,
                seconds
                    .iter()
                    .map(|s| (mid(s.t), s.failed as f64))
                    .collect(),
            ),
            (
                "503 answers",
                PAUSE,
                seconds
                    .iter()
                    .map(|s| (mid(s.t), s.unavailable as f64))
                    .collect(),
            ),
            (
                "no answer",
                DARK,
                seconds
                    .iter()
                    .map(|s| (mid(s.t), s.errors as f64))
                    .collect(),
            ),
        ],
        &shades,
        &report.applied,
        false,
    )?;
    let health = &report.health;
    panel(
        &panels[3],
        "what the service did instead of failing, per second (from /metrics)",
        end,
        &[
            (
                "reads moved to the primary",
                BLUE,
                series::rate(health, |h: &Health| h.read_fallbacks),
            ),
            (
                "cache lookups bypassing Redis",
                GREENISH,
                series::rate(health, |h: &Health| h.cache_bypasses),
            ),
            (
                "rate limits decided locally",
                PURPLE,
                series::rate(health, |h: &Health| h.ratelimit_fallbacks),
            ),
        ],
        &shades,
        &report.applied,
        false,
    )?;
    rotation(
        &panels[4],
        end,
        health,
        report.scrape_every_ms,
        &shades,
        &report.applied,
    )?;
    if !memory.is_empty() {
        panel(
            &panels[5],
            "service resident memory, MiB (process_resident_memory_bytes)",
            end,
            &[("RSS", DARK, memory)],
            &shades,
            &report.applied,
            false,
        )?;
    }
    root.present().map_err(plot_error)?;
    Ok(())
}

/// One panel of lines over the window, with the faults' shades and markers.
fn panel(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    caption: &str,
    end: f64,
    lines: &[Line],
    shades: &[Shade],
    applied: &[Applied],
    labels: bool,
) -> anyhow::Result<()> {
    let top = lines
        .iter()
        .flat_map(|(_, _, points)| points.iter().map(|(_, y)| *y))
        .fold(0.0, f64::max)
        .max(1.0)
        * 1.15;
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 14))
        .margin(8)
        .x_label_area_size(24)
        .y_label_area_size(56)
        .build_cartesian_2d(0.0..end, 0.0..top)
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .max_light_lines(1)
        .x_desc("seconds into the measured window")
        .label_style(("sans-serif", 11))
        .draw()
        .map_err(plot_error)?;
    background(&mut chart, top, shades, applied, labels)?;
    for (label, colour, points) in lines {
        let colour = *colour;
        chart
            .draw_series(std::iter::once(PathElement::new(
                points.clone(),
                colour.stroke_width(2),
            )))
            .map_err(plot_error)?
            .label(*label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(DARK.mix(0.4))
        .label_font(("sans-serif", 11))
        .draw()
        .map_err(plot_error)?;
    Ok(())
}

type Chart<'a, 'b> = ChartContext<
    'a,
    SVGBackend<'b>,
    Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
>;

/// The shaded spans of the faults, a dashed line where each command was issued, and (on the
/// first panel) what each command was.
fn background(
    chart: &mut Chart<'_, '_>,
    top: f64,
    shades: &[Shade],
    applied: &[Applied],
    labels: bool,
) -> anyhow::Result<()> {
    chart
        .draw_series(
            shades.iter().map(|(from, to, colour)| {
                Rectangle::new([(*from, 0.0), (*to, top)], colour.filled())
            }),
        )
        .map_err(plot_error)?;
    for (i, a) in applied.iter().enumerate() {
        let colour = match a.verb {
            Verb::Stop => STOP,
            Verb::Pause => PAUSE,
            Verb::Start | Verb::Resume => GREENISH,
        };
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![(a.issued, 0.0), (a.issued, top)],
                colour.mix(0.7).stroke_width(1),
            )))
            .map_err(plot_error)?;
        if labels {
            // Staggered, so commands a second apart do not print over each other.
            let y = top * (0.93 - 0.09 * (i % 4) as f64);
            chart
                .draw_series(std::iter::once(Text::new(
                    format!("{} {}", a.verb, a.node),
                    (a.issued + 0.15, y),
                    ("sans-serif", 12).into_font().color(&colour),
                )))
                .map_err(plot_error)?;
        }
    }
    Ok(())
}

/// One lane per node: a bar while the service had it out of rotation (read at each scrape).
fn rotation(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    end: f64,
    health: &[Health],
    scrape_every_ms: u64,
    shades: &[Shade],
    applied: &[Applied],
) -> anyhow::Result<()> {
    let lanes = NODES.len() as f64;
    let mut chart = ChartBuilder::on(area)
        .caption(
            "out of rotation, as the service saw it (replica out, breaker open)",
            ("sans-serif", 14),
        )
        .margin(8)
        .x_label_area_size(24)
        .y_label_area_size(56)
        .build_cartesian_2d(0.0..end, 0.0..lanes)
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .disable_y_axis()
        .max_light_lines(1)
        .label_style(("sans-serif", 11))
        .draw()
        .map_err(plot_error)?;
    background(&mut chart, lanes, shades, applied, false)?;
    let step = scrape_every_ms as f64 / 1000.0;
    for (lane, node) in NODES.iter().enumerate() {
        let y = lanes - lane as f64 - 1.0;
        let track = series::rotation_track(node, health);
        let bars: Vec<Rectangle<(f64, f64)>> = track
            .iter()
            .enumerate()
            .filter(|(_, (_, out))| *out)
            .map(|(i, (at, _))| {
                let next = track.get(i + 1).map_or(at + step, |(t, _)| *t);
                Rectangle::new([(*at, y + 0.2), (next, y + 0.8)], STOP.mix(0.8).filled())
            })
            .collect();
        chart.draw_series(bars).map_err(plot_error)?;
        let name = if track.is_empty() {
            format!("{node} (no series)")
        } else {
            (*node).to_owned()
        };
        chart
            .draw_series(std::iter::once(Text::new(
                name,
                (end * 0.005, y + 0.62),
                ("sans-serif", 11).into_font().color(&DARK),
            )))
            .map_err(plot_error)?;
    }
    Ok(())
}
