//! The sweep's SVG: throughput against loop lag p99, one panel per loop,
//! each point labelled with its setting, the labels placed so that
//! neighbouring points' labels do not cover each other or a point.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::{Point, Workload, relative};
use crate::experiments::Row;
use crate::experiments::cpu::Policy;
use crate::options::short;

/// A point's label in the plot: `N=1k`, `1ms`.
fn short_label(policy: Policy) -> String {
    match policy {
        Policy::Every(n) if n >= 1_000_000 => format!("N={}M", n / 1_000_000),
        Policy::Every(n) if n >= 1_000 => format!("N={}k", n / 1_000),
        Policy::Every(n) => format!("N={n}"),
        Policy::Slice(d) => short(d),
    }
}

/// The colours of the count and time-slice series.
const BLUE_LINE: RGBColor = RGBColor(31, 90, 200);
const RED_LINE: RGBColor = RGBColor(210, 40, 40);

/// The label font's size, px, and the width of one of its characters.
const FONT_PX: i32 = 12;
const CHAR_PX: i32 = 7;

/// A rectangle in pixels: left, top, right, bottom.
type Rect = (i32, i32, i32, i32);

fn overlap(a: Rect, b: Rect) -> i32 {
    let w = (a.2.min(b.2) - a.0.max(b.0)).max(0);
    let h = (a.3.min(b.3) - a.1.max(b.1)).max(0);
    w * h
}

/// Places labels beside their points without covering each other or any
/// point: tries spots around each point, nearest first, and takes the
/// first free one (or the least covered). Returns each label's left-centre
/// anchor, in pixels.
fn place_labels(points: &[(i32, i32)], labels: &[String], area: Rect) -> Vec<(i32, i32)> {
    let marks: Vec<Rect> = points
        .iter()
        .map(|&(x, y)| (x - 5, y - 5, x + 5, y + 5))
        .collect();
    let mut placed: Vec<Rect> = Vec::new();
    // Place the most crowded points first: they have the fewest free spots.
    let mut order: Vec<usize> = (0..points.len()).collect();
    let crowd = |i: usize| {
        points
            .iter()
            .filter(|p| (p.0 - points[i].0).abs() < 60 && (p.1 - points[i].1).abs() < 30)
            .count()
    };
    order.sort_by_key(|&i| std::cmp::Reverse(crowd(i)));
    let mut result = vec![(0, 0); points.len()];
    for i in order {
        let (x, y) = points[i];
        let w = labels[i].chars().count() as i32 * CHAR_PX;
        let h = FONT_PX + 2;
        let mut candidates = Vec::new();
        for ring in 0..4 {
            let dy = ring * (h + 2);
            for (cx, cy) in [
                (x + 8, y - dy),
                (x + 8, y + dy),
                (x - 8 - w, y - dy),
                (x - 8 - w, y + dy),
                (x - w / 2, y - 12 - dy),
                (x - w / 2, y + 12 + dy),
            ] {
                candidates.push((cx, cy));
            }
        }
        let rect = |(cx, cy): (i32, i32)| (cx, cy - h / 2, cx + w, cy + h / 2);
        let cost = |c: (i32, i32)| {
            let r = rect(c);
            let outside = (area.0 - r.0).max(0)
                + (r.2 - area.2).max(0)
                + (area.1 - r.1).max(0)
                + (r.3 - area.3).max(0);
            placed.iter().map(|&p| overlap(r, p)).sum::<i32>()
                + marks.iter().map(|&m| overlap(r, m)).sum::<i32>()
                + outside * 100
        };
        let best = candidates
            .iter()
            .copied()
            .find(|&c| cost(c) == 0)
            .unwrap_or_else(|| {
                candidates
                    .iter()
                    .copied()
                    .min_by_key(|&c| cost(c))
                    .unwrap_or((x + 8, y))
            });
        placed.push(rect(best));
        result[i] = best;
    }
    result
}

/// One panel per loop: throughput (y, % of the loop without yields)
/// against loop lag p99 (x, log scale), count budgets in blue, time slices
/// in red, labels placed so that neighbours stay readable.
pub(super) fn plot(
    points: &[Point],
    rows: &[Row],
    bare: [f64; 3],
    path: &Path,
) -> anyhow::Result<()> {
    // A log axis cannot show 0: an idle-looking lag is drawn at 0.5 ms (the
    // ticker's timer has a resolution of 1 ms).
    let lag = |r: &Row| r.p99_lag_ms.max(0.5);
    let x_min = 0.4f64;
    let x_max = rows.iter().map(lag).fold(10.0, f64::max) * 3.0;
    let y_max = points
        .iter()
        .zip(rows)
        .map(|(p, r)| relative(p, r, bare))
        .fold(100.0, f64::max)
        .min(150.0)
        + 12.0;

    let root = SVGBackend::new(path, (1500, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let (title, body) = root.split_vertically(96);
    title.draw(&Text::new(
        "Yield every N steps or every time slice: throughput against loop lag",
        (750, 12),
        ("sans-serif", 22)
            .into_font()
            .color(&BLACK)
            .pos(Pos::new(HPos::Center, VPos::Top)),
    ))?;
    title.draw(&Text::new(
        "The N that keeps light steps fast lets heavy steps stall the loop, and no N suits \
         steps that change cost; a 1 ms slice keeps every loop fast and on time.",
        (750, 44),
        ("sans-serif", 14)
            .into_font()
            .color(&BLACK.mix(0.75))
            .pos(Pos::new(HPos::Center, VPos::Top)),
    ))?;
    legend(&title, 80)?;
    let panels = body.split_evenly((1, 3));
    for (panel, workload) in panels.iter().zip(Workload::ALL) {
        plot_panel(panel, workload, points, rows, bare, (x_min, x_max, y_max))?;
    }
    root.present()?;
    Ok(())
}

fn plot_panel(
    panel: &DrawingArea<SVGBackend<'_>, Shift>,
    workload: Workload,
    points: &[Point],
    rows: &[Row],
    bare: [f64; 3],
    (x_min, x_max, y_max): (f64, f64, f64),
) -> anyhow::Result<()> {
    let lag = |r: &Row| r.p99_lag_ms.max(0.5);
    let mut chart = ChartBuilder::on(panel)
        .caption(workload.caption(), ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(42)
        .y_label_area_size(52)
        .build_cartesian_2d((x_min..x_max).log_scale(), 0.0..y_max)?;
    chart
        .configure_mesh()
        .x_desc("loop lag p99, ms (log scale)")
        .y_desc("throughput, % of no yield check")
        .x_label_formatter(&|x| {
            if *x >= 1.0 {
                format!("{x:.0}")
            } else {
                format!("{x:.1}")
            }
        })
        .y_label_formatter(&|y| format!("{y:.0}%"))
        .light_line_style(WHITE)
        .draw()?;

    // The good corner: within 2 ms of the idle timer and at 90 % of full
    // speed or better.
    chart.draw_series([Rectangle::new(
        [(x_min, 90.0), (2.0, y_max)],
        GREEN.mix(0.1).filled(),
    )])?;
    chart.draw_series(LineSeries::new(
        [(x_min, 100.0), (x_max, 100.0)],
        BLACK.mix(0.35).stroke_width(1),
    ))?;

    let mine: Vec<(Point, &Row)> = points
        .iter()
        .zip(rows)
        .filter(|(p, _)| p.workload == workload)
        .map(|(p, r)| (*p, r))
        .collect();
    let xy = |p: &Point, r: &Row| (lag(r), relative(p, r, bare));
    let every: Vec<(f64, f64)> = mine
        .iter()
        .filter(|(p, _)| matches!(p.policy, Policy::Every(_)))
        .map(|(p, r)| xy(p, r))
        .collect();
    let slice: Vec<(f64, f64)> = mine
        .iter()
        .filter(|(p, _)| matches!(p.policy, Policy::Slice(_)))
        .map(|(p, r)| xy(p, r))
        .collect();
    let (blue, red) = (BLUE_LINE, RED_LINE);
    chart.draw_series(LineSeries::new(every.clone(), blue.stroke_width(2)))?;
    chart.draw_series(every.iter().map(|p| Circle::new(*p, 5, blue.filled())))?;
    chart.draw_series(LineSeries::new(slice.clone(), red.stroke_width(2)))?;
    chart.draw_series(
        slice
            .iter()
            .map(|p| EmptyElement::at(*p) + Rectangle::new([(-5, -5), (5, 5)], red.filled())),
    )?;

    // Labels, placed in pixels.
    let pixels: Vec<(i32, i32)> = mine
        .iter()
        .map(|(p, r)| chart.backend_coord(&xy(p, r)))
        .collect();
    let labels: Vec<String> = mine.iter().map(|(p, _)| short_label(p.policy)).collect();
    let (xs, ys) = chart.plotting_area().get_pixel_range();
    let anchors = place_labels(&pixels, &labels, (xs.start, ys.start, xs.end, ys.end));
    let root = chart.plotting_area().strip_coord_spec();
    let (ox, oy) = root.get_base_pixel();
    for (((p, _), label), (&anchor, &at)) in
        mine.iter().zip(&labels).zip(anchors.iter().zip(&pixels))
    {
        let color = match p.policy {
            Policy::Every(_) => blue,
            Policy::Slice(_) => red,
        };
        let local = |(x, y): (i32, i32)| (x - ox, y - oy);
        // A leader line when the label had to move away from its point.
        if (anchor.1 - at.1).abs() > FONT_PX {
            let width = label.chars().count() as i32 * CHAR_PX;
            let end = if anchor.0 >= at.0 {
                (anchor.0 - 2, anchor.1)
            } else {
                (anchor.0 + width + 2, anchor.1)
            };
            root.draw(&PathElement::new(
                [local(at), local(end)],
                color.mix(0.4).stroke_width(1),
            ))?;
        }
        // A white box behind the label keeps it readable across lines.
        let (lx, ly) = local(anchor);
        let width = label.chars().count() as i32 * CHAR_PX;
        root.draw(&Rectangle::new(
            [
                (lx - 1, ly - FONT_PX / 2 - 1),
                (lx + width, ly + FONT_PX / 2 + 1),
            ],
            WHITE.mix(0.85).filled(),
        ))?;
        root.draw(&Text::new(
            label.clone(),
            local(anchor),
            ("sans-serif", FONT_PX)
                .into_font()
                .color(&color)
                .pos(Pos::new(HPos::Left, VPos::Center)),
        ))?;
    }

    Ok(())
}

/// The legend, one row under the title (inside a panel it would cover
/// points).
fn legend(area: &DrawingArea<SVGBackend<'_>, Shift>, y: i32) -> anyhow::Result<()> {
    let font = ("sans-serif", 13).into_font().color(&BLACK.mix(0.8));
    let text = |s: &str, x: i32| {
        Text::new(
            s.to_owned(),
            (x, y),
            font.clone().pos(Pos::new(HPos::Left, VPos::Center)),
        )
    };
    let mut x = 330;
    area.draw(&PathElement::new(
        [(x, y), (x + 24, y)],
        BLUE_LINE.stroke_width(2),
    ))?;
    area.draw(&Circle::new((x + 12, y), 5, BLUE_LINE.filled()))?;
    area.draw(&text("yield every N steps", x + 32))?;
    x += 200;
    area.draw(&PathElement::new(
        [(x, y), (x + 24, y)],
        RED_LINE.stroke_width(2),
    ))?;
    area.draw(&Rectangle::new(
        [(x + 7, y - 5), (x + 17, y + 5)],
        RED_LINE.filled(),
    ))?;
    area.draw(&text("yield every time slice", x + 32))?;
    x += 215;
    area.draw(&PathElement::new([(x, y), (x + 24, y)], BLACK.mix(0.35)))?;
    area.draw(&text("no yield check (100 %)", x + 32))?;
    x += 210;
    area.draw(&Rectangle::new(
        [(x, y - 7), (x + 24, y + 7)],
        GREEN.mix(0.1).filled(),
    ))?;
    area.draw(&text("fast and on time: lag ≤ 2 ms, speed ≥ 90 %", x + 32))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_of_neighbouring_points_do_not_overlap() {
        // Five points within a few pixels of each other, as the fast count
        // budgets and the slices land near (1 ms, 100 %), and one apart.
        let points = [
            (200, 100),
            (204, 102),
            (208, 99),
            (203, 106),
            (199, 103),
            (400, 300),
        ];
        let labels: Vec<String> = ["N=10k", "N=100k", "N=1M", "100µs", "1ms", "N=10"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let anchors = place_labels(&points, &labels, (0, 0, 600, 400));
        let h = FONT_PX + 2;
        let rects: Vec<Rect> = anchors
            .iter()
            .zip(&labels)
            .map(|(&(x, y), l)| {
                (
                    x,
                    y - h / 2,
                    x + l.chars().count() as i32 * CHAR_PX,
                    y + h / 2,
                )
            })
            .collect();
        for (i, a) in rects.iter().enumerate() {
            for b in &rects[i + 1..] {
                assert_eq!(overlap(*a, *b), 0, "labels {a:?} and {b:?} overlap");
            }
            for &(x, y) in &points {
                assert_eq!(
                    overlap(*a, (x - 5, y - 5, x + 5, y + 5)),
                    0,
                    "{a:?} covers a point"
                );
            }
            assert!(
                a.0 >= 0 && a.1 >= 0 && a.2 <= 600 && a.3 <= 400,
                "{a:?} outside"
            );
        }
        // A label with room beside its point stays right next to it.
        assert_eq!(anchors[5], (408, 300));
    }

    #[test]
    fn labels_name_the_setting_shortly() {
        assert_eq!(short_label(Policy::Every(1_000_000)), "N=1M");
        assert_eq!(short_label(Policy::Every(10_000)), "N=10k");
        assert_eq!(short_label(Policy::Every(100)), "N=100");
        assert_eq!(
            short_label(Policy::Slice(std::time::Duration::from_millis(1))),
            "1ms"
        );
    }
}
