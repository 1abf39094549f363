//! `--plot FILE`: an SVG of jobs/s by pool size for the throughput scenarios the run measured:
//! `encode` and `evacuate-fs` (the `encode` scenario's 4 KiB corpus) and `evacuate-s3` (the
//! `s3` scenario). One line per measured scenario, log-scale y axis (the S3 rates are orders of
//! magnitude below the local ones).
//!
//! Drawn with plotters' SVG backend only: no bitmap code, no system fonts (text is placed with
//! plotters' built-in size estimate and rendered by whatever views the SVG).

use plotters::prelude::*;

use crate::report::{EncodeKind, Report};
use crate::util::{Result, StressError};

/// Size of the picture, pixels.
const SIZE: (u32, u32) = (860, 520);

/// One line of the plot.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Legend text.
    pub name: String,
    /// Line and marker colour.
    pub color: RGBColor,
    /// (pool size, jobs/s), by pool size.
    pub points: Vec<(u32, f64)>,
}

/// Colour of the `encode` line.
pub const ENCODE: RGBColor = RGBColor(0x1f, 0x77, 0xb4);
/// Colour of the `evacuate-fs` line.
pub const EVACUATE_FS: RGBColor = RGBColor(0xff, 0x7f, 0x0e);
/// Colour of the `evacuate-s3` line.
pub const EVACUATE_S3: RGBColor = RGBColor(0x2c, 0xa0, 0x2c);

/// The lines `report` has data for, in a fixed order; scenarios without data have none.
pub fn series(report: &Report) -> Vec<Series> {
    let mut out = Vec::new();
    for (kind, name, color) in [
        (EncodeKind::Encode, "encode (4 KiB)", ENCODE),
        (EncodeKind::Evacuate, "evacuate-fs (4 KiB)", EVACUATE_FS),
    ] {
        let mut points: Vec<(u32, f64)> = report
            .encode
            .iter()
            .filter(|e| e.kind == kind && e.corpus == "4k")
            .map(|e| (pool_u32(e.pool), e.jobs_per_sec))
            .collect();
        points.sort_by_key(|p| p.0);
        if !points.is_empty() {
            out.push(Series {
                name: name.into(),
                color,
                points,
            });
        }
    }
    let mut s3: Vec<(u32, f64)> = report
        .s3
        .iter()
        .map(|r| (pool_u32(r.pool), r.jobs_per_sec))
        .collect();
    s3.sort_by_key(|p| p.0);
    if let Some(r) = report.s3.first() {
        out.push(Series {
            name: format!("evacuate-s3 (4 KiB, {} ms per request)", r.latency_ms),
            color: EVACUATE_S3,
            points: s3,
        });
    }
    out
}

fn pool_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// The SVG document. Fails if the report has none of the plotted scenarios.
pub fn svg(report: &Report) -> Result<String> {
    let series = series(report);
    if series.is_empty() {
        return Err(StressError::Plot(
            "the run measured none of encode, evacuate-fs, evacuate-s3 (run `encode` and/or \
             `s3`)"
                .into(),
        ));
    }
    let max_pool = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .max()
        .unwrap_or(1)
        .max(2);
    // Rates at or below zero have no place on a log axis: they are drawn at its floor.
    let positive = || {
        series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1))
            .filter(|v| *v > 0.0)
    };
    let lo = positive().fold(f64::INFINITY, f64::min);
    let hi = positive().fold(0.0f64, f64::max);
    // Whole decades, so the axis has labelled ticks however narrow the data's range is.
    let (lo, hi) = if lo.is_finite() && hi > 0.0 {
        let lo = 10f64.powf(lo.log10().floor());
        let hi = 10f64.powf(hi.log10().ceil());
        // One more decade on top: room for the legend above the highest line.
        (lo, if hi > lo { hi * 10.0 } else { lo * 100.0 })
    } else {
        (1.0, 10.0)
    };
    let m = &report.machine;
    let title = format!(
        "houndpool: jobs/s by pool size ({} cores{})",
        m.cores,
        if m.quick { ", --quick run" } else { "" }
    );
    let mut doc = String::new();
    {
        let root = SVGBackend::with_string(&mut doc, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(16)
            .x_label_area_size(44)
            .y_label_area_size(72)
            // One segment per pool size, points at its centre: pool sizes are counts.
            .build_cartesian_2d((1u32..max_pool).into_segmented(), (lo..hi).log_scale())
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_desc("hounds in the pool")
            .y_desc("jobs/s (log scale)")
            .x_labels(max_pool as usize)
            .disable_x_mesh()
            .y_label_formatter(&|v| format!("{v:.0}"))
            .label_style(("sans-serif", 14))
            .axis_desc_style(("sans-serif", 15))
            .draw()
            .map_err(plot_err)?;
        for s in &series {
            let color = s.color;
            let points: Vec<(SegmentValue<u32>, f64)> = s
                .points
                .iter()
                .map(|&(x, y)| (SegmentValue::CenterOf(x), y.max(lo)))
                .collect();
            chart
                .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
                .map_err(plot_err)?
                .label(s.name.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
            chart
                .draw_series(PointSeries::of_element(
                    points,
                    4,
                    color.filled(),
                    &|c, size, style| Circle::new(c, size, style),
                ))
                .map_err(plot_err)?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 14))
            .draw()
            .map_err(plot_err)?;
        root.present().map_err(plot_err)?;
    }
    Ok(doc)
}

fn plot_err(e: impl std::fmt::Display) -> StressError {
    StressError::Plot(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{EncodeResult, Machine, S3Result};

    fn report(encode: bool, s3: bool) -> Report {
        let row = |kind, corpus: &str, pool, jobs_per_sec| EncodeResult {
            kind,
            corpus: corpus.into(),
            pool,
            jobs_per_sec,
            mb_per_sec: jobs_per_sec * 4096.0 / 1e6,
            inprocess_jobs_per_sec: 20_000.0,
            efficiency: 0.5,
        };
        Report {
            machine: Machine {
                cores: 3,
                kernel: "Linux".into(),
                cpu_model: "Test".into(),
                date: "2025-01-01T00:00:00Z".into(),
                quick: true,
                hound_binary: "hound".into(),
            },
            ipc: vec![],
            encode: if encode {
                vec![
                    row(EncodeKind::Encode, "4k", 2, 30_000.0),
                    row(EncodeKind::Encode, "4k", 1, 18_000.0),
                    row(EncodeKind::Encode, "4k", 3, 41_000.0),
                    row(EncodeKind::Evacuate, "4k", 1, 2_300.0),
                    row(EncodeKind::Evacuate, "4k", 2, 1_100.0),
                    row(EncodeKind::Evacuate, "4k", 3, 0.0),
                    // Not plotted: the mixed corpus.
                    row(EncodeKind::Encode, "mixed", 1, 9_000.0),
                ]
            } else {
                vec![]
            },
            submit: vec![],
            respawn: None,
            chaos: None,
            idle: None,
            s3: if s3 {
                (1..=3)
                    .map(|pool| S3Result {
                        latency_ms: 20,
                        pool,
                        jobs_per_sec: 24.0 * pool as f64,
                        mb_per_sec: 0.1,
                    })
                    .collect()
            } else {
                vec![]
            },
            s3_skipped: None,
            s3_drain: None,
        }
    }

    fn hex(c: RGBColor) -> String {
        format!("#{:02X}{:02X}{:02X}", c.0, c.1, c.2)
    }

    /// The polylines of the document stroked in `color`, each as its number of points.
    fn lines_of(doc: &roxmltree::Document<'_>, color: RGBColor) -> Vec<usize> {
        doc.descendants()
            .filter(|n| n.has_tag_name("polyline") && n.attribute("stroke") == Some(&hex(color)))
            .map(|n| {
                n.attribute("points")
                    .unwrap_or("")
                    .split_whitespace()
                    .count()
            })
            .collect()
    }

    fn texts(doc: &roxmltree::Document<'_>) -> Vec<String> {
        doc.descendants()
            .filter(|n| n.has_tag_name("text"))
            .filter_map(|n| n.text().map(|t| t.trim().to_string()))
            .collect()
    }

    #[test]
    fn one_series_per_measured_scenario_in_well_formed_svg() {
        let text = svg(&report(true, true)).unwrap();
        let doc = roxmltree::Document::parse(&text).expect("well-formed XML");
        assert!(doc.root_element().has_tag_name("svg"));
        let texts = texts(&doc);
        for (name, color) in [
            ("encode (4 KiB)", ENCODE),
            ("evacuate-fs (4 KiB)", EVACUATE_FS),
            ("evacuate-s3 (4 KiB, 20 ms per request)", EVACUATE_S3),
        ] {
            assert!(
                texts.iter().any(|t| t == name),
                "no legend {name:?}: {texts:?}"
            );
            // The data line (3 pool sizes) and the legend's sample line (2 points).
            let mut lines = lines_of(&doc, color);
            lines.sort_unstable();
            assert_eq!(lines, [2, 3], "{name}");
        }
        assert!(texts.iter().any(|t| t.contains("--quick run")));
    }

    #[test]
    fn scenarios_that_did_not_run_have_no_series() {
        let text = svg(&report(false, true)).unwrap();
        let doc = roxmltree::Document::parse(&text).expect("well-formed XML");
        assert!(lines_of(&doc, ENCODE).is_empty());
        assert!(lines_of(&doc, EVACUATE_FS).is_empty());
        assert_eq!(lines_of(&doc, EVACUATE_S3).len(), 2);
        assert!(!texts(&doc).iter().any(|t| t.starts_with("encode")));
        let s = series(&report(true, false));
        let names: Vec<&str> = s.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["encode (4 KiB)", "evacuate-fs (4 KiB)"]);
        assert_eq!(s[0].points, [(1, 18_000.0), (2, 30_000.0), (3, 41_000.0)]);
    }

    #[test]
    fn a_run_without_throughput_scenarios_is_refused_with_a_reason() {
        let e = svg(&report(false, false)).unwrap_err();
        assert!(e.to_string().contains("none of encode"), "{e}");
    }
}
