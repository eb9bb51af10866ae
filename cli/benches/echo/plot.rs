//! The SVG plot of a bench run (plotters, SVG backend only).
//!
//! Owns: one figure with a row per (message size, depth): msgs/s against connections,
//! p99 against connections (one line per server, both log-x), and server CPU ns/msg as
//! stacked user/system bars at 50 connections. Must not: compute figures (it draws
//! [`Results::row`] medians).

use std::path::Path;

use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::report::{fmt_rate, Results};
use crate::scenario::{size_label, Scenario};
use crate::server::ServerKind;

const W: u32 = 1500;
const ROW_H: u32 = 380;

fn color(kind: ServerKind) -> RGBColor {
    match kind {
        ServerKind::TcpReactor => RGBColor(214, 39, 40),
        ServerKind::TokioCt => RGBColor(31, 119, 180),
        ServerKind::TokioMt => RGBColor(44, 160, 44),
        ServerKind::BareMio => RGBColor(80, 80, 80),
        ServerKind::Go => RGBColor(0, 173, 216),
    }
}

const USER: RGBColor = RGBColor(31, 119, 180);
const SYS: RGBColor = RGBColor(255, 127, 14);

type DrawResult = Result<(), String>;

fn err<E: std::fmt::Debug>(e: E) -> String {
    format!("plot: {e:?}")
}

/// Draw `results` into an SVG file at `path`.
pub fn write_svg(results: &Results, path: &Path) -> DrawResult {
    let mut rows: Vec<(usize, usize)> = results
        .scenarios
        .iter()
        .map(|s| (s.size, s.depth))
        .collect();
    rows.dedup();
    if rows.is_empty() {
        return Ok(());
    }
    let h = 50 + ROW_H * rows.len() as u32;
    let root = SVGBackend::new(path, (W, h)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let root = root
        .titled(
            "tcp-reactor echo benchmark (medians; see docs/BENCHMARKS.md)",
            ("sans-serif", 22),
        )
        .map_err(err)?;
    let areas = root.split_evenly((rows.len(), 3));
    for (i, &(size, depth)) in rows.iter().enumerate() {
        let scs: Vec<Scenario> = results
            .scenarios
            .iter()
            .filter(|s| s.size == size && s.depth == depth)
            .copied()
            .collect();
        let what = format!("{} × depth {depth}", size_label(size));
        line_chart(
            results,
            &areas[3 * i],
            &scs,
            &format!("msgs/s, {what}"),
            |r| r.msgs_per_s,
            false,
        )?;
        line_chart(
            results,
            &areas[3 * i + 1],
            &scs,
            &format!("p99 latency µs, {what}"),
            |r| r.p99_us,
            true,
        )?;
        let at = scs.iter().find(|s| s.conns == 50).or(scs.first()).copied();
        if let Some(sc) = at {
            cpu_bars(results, &areas[3 * i + 2], &sc)?;
        }
    }
    root.present().map_err(err)
}

fn line_chart<DB: DrawingBackend>(
    results: &Results,
    area: &DrawingArea<DB, plotters::coord::Shift>,
    scs: &[Scenario],
    caption: &str,
    metric: fn(&crate::report::Row) -> f64,
    log_y: bool,
) -> DrawResult {
    let series: Vec<(ServerKind, Vec<(f64, f64)>)> = results
        .servers
        .iter()
        .map(|&k| {
            let pts = scs
                .iter()
                .filter_map(|s| results.row(k, s).map(|r| (s.conns as f64, metric(&r))))
                .filter(|&(_, y)| y > 0.0)
                .collect();
            (k, pts)
        })
        .collect();
    let ys = series.iter().flat_map(|(_, p)| p.iter().map(|&(_, y)| y));
    let (lo, hi) = ys.fold((f64::MAX, 0f64), |(lo, hi), y| (lo.min(y), hi.max(y)));
    if hi <= 0.0 {
        return Ok(());
    }
    let x = (0.7f64..1500f64).log_scale();
    let mut builder = ChartBuilder::on(area);
    builder
        .caption(caption, ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(65);
    if log_y {
        let mut chart = builder
            .build_cartesian_2d(x, (lo * 0.7..hi * 6.0).log_scale())
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("connections")
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_label_formatter(&|v| format!("{v:.0}"))
            .draw()
            .map_err(err)?;
        draw_lines(&mut chart, &series)
    } else {
        let mut chart = builder
            // Headroom for the legend above the lines.
            .build_cartesian_2d(x, 0f64..hi * 1.45)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("connections")
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_label_formatter(&|v| fmt_rate(*v))
            .draw()
            .map_err(err)?;
        draw_lines(&mut chart, &series)
    }
}

fn draw_lines<'a, DB, X, Y>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<X, Y>>,
    series: &[(ServerKind, Vec<(f64, f64)>)],
) -> DrawResult
where
    DB: DrawingBackend + 'a,
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    for (kind, pts) in series {
        let c = color(*kind);
        chart
            .draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))
            .map_err(err)?
            .label(kind.name())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2)));
        chart
            .draw_series(pts.iter().map(|&p| Circle::new(p, 3, c.filled())))
            .map_err(err)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(err)
}

fn cpu_bars<DB: DrawingBackend>(
    results: &Results,
    area: &DrawingArea<DB, plotters::coord::Shift>,
    sc: &Scenario,
) -> DrawResult {
    let bars: Vec<(ServerKind, f64, f64)> = results
        .servers
        .iter()
        .filter_map(|&k| {
            let r = results.row(k, sc)?;
            Some((k, r.user_ns?, r.sys_ns?))
        })
        .collect();
    if bars.is_empty() {
        return Ok(());
    }
    // Headroom above the tallest bar for its label and the legend.
    let top = bars.iter().map(|b| b.1 + b.2).fold(0.0, f64::max) * 1.4;
    let names: Vec<&str> = bars.iter().map(|b| b.0.name()).collect();
    let mut chart = ChartBuilder::on(area)
        .caption(
            format!("server CPU ns/msg (user + sys), {sc}"),
            ("sans-serif", 16),
        )
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(65)
        // An integer range includes its end, so 0..n-1 gives n segments.
        .build_cartesian_2d(
            (0..bars.len().saturating_sub(1)).into_segmented(),
            0f64..top.max(1.0),
        )
        .map_err(err)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .y_desc("ns per message")
        .y_label_formatter(&|v| format!("{v:.0}"))
        .x_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => {
                names.get(*i).map(|s| s.to_string()).unwrap_or_default()
            }
            SegmentValue::Last => String::new(),
        })
        .draw()
        .map_err(err)?;
    let rect = |i: usize, y0: f64, y1: f64, c: RGBColor| -> Rectangle<(SegmentValue<usize>, f64)> {
        let mut bar = Rectangle::new(
            [
                (SegmentValue::Exact(i), y0),
                (SegmentValue::Exact(i + 1), y1),
            ],
            c.filled(),
        );
        bar.set_margin(0, 0, 18, 18);
        bar
    };
    chart
        .draw_series(
            bars.iter()
                .enumerate()
                .map(|(i, b)| rect(i, 0.0, b.1, USER)),
        )
        .map_err(err)?
        .label("user")
        .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], USER.filled()));
    chart
        .draw_series(
            bars.iter()
                .enumerate()
                .map(|(i, b)| rect(i, b.1, b.1 + b.2, SYS)),
        )
        .map_err(err)?
        .label("system")
        .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], SYS.filled()));
    chart
        .draw_series(bars.iter().enumerate().map(|(i, b)| {
            Text::new(
                format!("user {:.0} / sys {:.0}", b.1, b.2),
                (SegmentValue::CenterOf(i), b.1 + b.2 + top * 0.02),
                TextStyle::from(("sans-serif", 12).into_font())
                    .pos(Pos::new(HPos::Center, VPos::Bottom)),
            )
        }))
        .map_err(err)?;
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(err)
}
