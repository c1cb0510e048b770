//! target/bench/chart.png: the scaling rows (TCP_CRR to a published port against the number of
//! other mappings installed, per setup) and netctl's ratios to veth, docker-way and (with
//! `--docker`) the real Docker, per row.

use std::path::Path;

use anyhow::{Context, Result, anyhow};
use plotters::prelude::*;
use plotters::style::FontStyle;

use super::report::Results;
use super::tools::CHART_FONT;

/// Each setup's colour: its line in the scale panel, and the bars of netctl's ratio to it.
fn color(setup: &str) -> RGBColor {
    match setup {
        "veth" => RGBColor(120, 120, 120),
        "docker-way" => RGBColor(30, 100, 200),
        "netctl" => RGBColor(220, 90, 20),
        _ => RGBColor(40, 160, 70),
    }
}

/// Draws the chart; see the module doc.
pub fn draw(results: &Results, path: &Path) -> Result<()> {
    let font = std::fs::read(CHART_FONT).with_context(|| format!("reading {CHART_FONT}"))?;
    // plotters keeps registered fonts for the life of the process: leak the bytes once.
    let font: &'static [u8] = Box::leak(font.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, font)
        .map_err(|_| anyhow!("{CHART_FONT} is not a usable font"))?;

    let root = BitMapBackend::new(path, (1400, 700)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let (left, right) = root.split_horizontally(560);
    scale_panel(results, &left)?;
    ratio_panel(results, &right)?;
    root.present().map_err(err)?;
    Ok(())
}

fn err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("drawing the chart: {e:?}")
}

fn scale_panel(
    results: &Results,
    area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
) -> Result<()> {
    let ns: Vec<f64> = results
        .rows
        .iter()
        .filter_map(|r| r.id.strip_prefix("scale.crr."))
        .filter_map(|n| n.parse::<f64>().ok())
        .collect();
    let mut series: Vec<(&str, Vec<(f64, f64)>)> = Vec::new();
    let mut y_max: f64 = 1.0;
    for (col, setup) in results.setups.iter().enumerate() {
        let pts: Vec<(f64, f64)> = ns
            .iter()
            .filter_map(|n| {
                let c = results.cells(&format!("scale.crr.{n}"));
                c[col].value().map(|v| (*n, v))
            })
            .collect();
        for (_, v) in &pts {
            y_max = y_max.max(*v);
        }
        if !pts.is_empty() {
            series.push((setup, pts));
        }
    }
    let x_max = ns.iter().copied().fold(10.0_f64, f64::max) * 2.0;
    let mut chart = ChartBuilder::on(area)
        .caption(
            "TCP_CRR to a published port vs other mappings",
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d((5.0_f64..x_max).log_scale(), 0.0_f64..y_max * 1.15)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("other port mappings installed (N, log scale)")
        .y_desc("connections/s")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 15))
        .draw()
        .map_err(err)?;
    for (setup, pts) in series {
        let color = color(setup);
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(3)))
            .map_err(err)?
            .label(setup)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(3))
            });
        chart
            .draw_series(pts.into_iter().map(|p| Circle::new(p, 5, color.filled())))
            .map_err(err)?;
    }
    // The flatness figures the report states, in the headroom above the lines.
    let mut y = 62;
    for setup in ["netctl", "docker-way"] {
        if let Ok(f) = results.flatness(setup) {
            let text = format!(
                "{setup}: min/max = {:.2} (spread {:.1}%)",
                f.min_over_max,
                f.spread() * 100.0
            );
            area.draw(&Text::new(text, (100, y), ("sans-serif", 14)))
                .map_err(err)?;
            y += 20;
        }
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .position(SeriesLabelPosition::LowerLeft)
        .draw()
        .map_err(err)?;
    Ok(())
}

fn ratio_panel(
    results: &Results,
    area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
) -> Result<()> {
    let references = results.references();
    let bars = ratio_bars(results);
    let x_max = bars
        .iter()
        .flat_map(|(_, r)| r.iter().map(|v| v.unwrap_or(0.0)))
        .fold(1.5_f64, f64::max)
        * 1.1;
    #[allow(clippy::cast_precision_loss)]
    let k = bars.len().max(1) as f64;
    let caption = format!(
        "netctl / {}",
        references
            .iter()
            .map(|r| format!("{r} ({})", color_name(r)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(150)
        .build_cartesian_2d(0.0_f64..x_max, 0.0_f64..k)
        .map_err(err)?;
    let labels: Vec<String> = bars.iter().map(|b| b.0.clone()).collect();
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(bars.len().max(1) * 2 + 1)
        .y_label_formatter(&|y| {
            let f = y - y.floor();
            if (f - 0.5).abs() > 0.01 {
                return String::new();
            }
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let i = y.floor() as usize;
            labels
                .get(bars_index(i, labels.len()))
                .cloned()
                .unwrap_or_default()
        })
        .x_desc("ratio (>1: netctl's figure is higher; for s, MiB and CPU rows lower is better)")
        .label_style(("sans-serif", 13))
        .axis_desc_style(("sans-serif", 15))
        .draw()
        .map_err(err)?;
    if bars.is_empty() {
        area.draw(&Text::new(
            "no ratios: netctl or the reference figures are missing",
            (100, 300),
            ("sans-serif", 18),
        ))
        .map_err(err)?;
        return Ok(());
    }
    for (i, (_, ratios)) in bars.iter().enumerate() {
        // First row at the top; within a row's band, one bar per reference from the top.
        #[allow(clippy::cast_precision_loss)]
        let y = (bars.len() - 1 - i) as f64;
        for (j, (v, reference)) in ratios.iter().zip(&references).enumerate() {
            let Some(v) = v else { continue };
            let (top, bottom) = bar_band(j, ratios.len());
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(0.0, y + bottom), (*v, y + top)],
                    color(reference).filled(),
                )))
                .map_err(err)?;
        }
    }
    chart
        .draw_series(std::iter::once(PathElement::new(
            vec![(1.0, 0.0), (1.0, k)],
            BLACK.stroke_width(2),
        )))
        .map_err(err)?;
    Ok(())
}

/// Per row with at least one ratio: its id and netctl's ratio to each reference setup
/// (`Results::references` order).
fn ratio_bars(results: &Results) -> Vec<(String, Vec<Option<f64>>)> {
    let references = results.references();
    results
        .rows
        .iter()
        .filter_map(|r| {
            let c = results.cells(&r.id);
            let ratios: Vec<Option<f64>> =
                references.iter().map(|x| results.ratio(&c, x)).collect();
            ratios
                .iter()
                .any(Option::is_some)
                .then(|| (r.id.clone(), ratios))
        })
        .collect()
}

/// The vertical extent (top, bottom) within a row's band of height 1 of bar `j` of `n`.
fn bar_band(j: usize, n: usize) -> (f64, f64) {
    #[allow(clippy::cast_precision_loss)]
    let (j, n) = (j as f64, n.max(1) as f64);
    let h = 0.8 / n;
    let top = 0.9 - j * h;
    (top - 0.02, top - h + 0.02)
}

fn color_name(setup: &str) -> &'static str {
    match setup {
        "veth" => "grey",
        "docker-way" => "blue",
        "netctl" => "orange",
        _ => "green",
    }
}

/// Bars are drawn top-down; the label for band `i` (from the bottom) is row `len-1-i`.
fn bars_index(i: usize, len: usize) -> usize {
    len.saturating_sub(1).saturating_sub(i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::report::tests::sample;

    #[test]
    fn one_bar_per_reference_setup() {
        let three = ratio_bars(&sample(false));
        assert!(three.iter().all(|(_, r)| r.len() == 2));
        let four = ratio_bars(&sample(true));
        assert!(four.iter().all(|(_, r)| r.len() == 3));
        let c2c = four.iter().find(|(id, _)| id == "c2c.tp1").unwrap();
        assert_eq!(c2c.1[2], Some(19.0 / 15.0));
        // Bars stay inside their row's band, top down, without overlapping.
        for n in 1..=3 {
            let bands: Vec<(f64, f64)> = (0..n).map(|j| bar_band(j, n)).collect();
            for (top, bottom) in &bands {
                assert!(*top <= 0.9 && *bottom >= 0.1 && bottom < top);
            }
            for pair in bands.windows(2) {
                assert!(pair[1].0 < pair[0].1);
            }
        }
    }

    #[test]
    fn draws_three_and_four_columns() {
        if !Path::new(CHART_FONT).exists() {
            eprintln!("skipped: no {CHART_FONT} (fonts-dejavu-core)");
            return;
        }
        for docker in [false, true] {
            let path = std::env::temp_dir().join(format!(
                "xtask-chart-test-{}-{docker}.png",
                std::process::id()
            ));
            draw(&sample(docker), &path).unwrap();
            let size = std::fs::metadata(&path).unwrap().len();
            std::fs::remove_file(&path).unwrap();
            assert!(size > 10_000, "{size} bytes");
        }
    }
}
