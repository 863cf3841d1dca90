//! The report's figures as SVG text, drawn with plotters' SVG backend only
//! (text stays `<text>` elements: no font files or font libraries needed):
//! a boot timeline per backend, latency, memory and workload-ratio bars,
//! and memory against instance count. Every figure carries the host line
//! ([`HostInfo::banner`]) so it cannot be mistaken for another host's.

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor;

use super::error::{ReportError, Result};
use super::model::{Backend, HostInfo, Measurements};
use super::summary::{fmt_num, median_ratio};
use crate::stats;

/// Width of every figure, px.
const WIDTH: u32 = 900;
/// Space for the bar labels on the left, px.
const LABEL_W: u32 = 230;

/// A backend's colour in every figure.
pub fn color(b: Backend) -> RGBColor {
    match b {
        Backend::Bare => RGBColor(90, 90, 90),
        Backend::Runc => RGBColor(31, 119, 180),
        Backend::RunmQemu => RGBColor(214, 39, 40),
        Backend::RunmOwnVmm => RGBColor(148, 103, 189),
        Backend::QemuDirect => RGBColor(255, 127, 14),
        Backend::RunmVmm => RGBColor(44, 160, 44),
    }
}

/// One bar: a median with its min-max whisker, and an optional inner part
/// (drawn darker from the axis: guest RAM within a VMM's memory).
#[derive(Debug, Clone)]
pub struct Bar {
    /// The label left of the bar.
    pub label: String,
    /// The bar's length (the median).
    pub value: f64,
    /// Whisker from here...
    pub min: f64,
    /// ...to here.
    pub max: f64,
    /// An inner part from the axis, if any.
    pub inner: Option<f64>,
    /// The bar's colour.
    pub color: RGBColor,
    /// Text after the bar.
    pub text: String,
}

/// Axis tick labels: whole numbers without decimals, others as in tables.
fn tick(v: &f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e9 {
        format!("{v:.0}")
    } else {
        fmt_num(*v)
    }
}

fn plot_err(name: &str) -> impl Fn(String) -> ReportError + '_ {
    move |detail| ReportError::Plot {
        name: name.to_string(),
        detail,
    }
}

fn e<E: std::fmt::Debug>(err: E) -> String {
    format!("{err:?}")
}

/// Draws the host line at the bottom of a figure.
fn footer(
    root: &DrawingArea<SVGBackend<'_>, Shift>,
    host: &HostInfo,
    h: u32,
) -> std::result::Result<(), String> {
    let style = TextStyle::from(("sans-serif", 11).into_font()).color(&RGBColor(90, 90, 90));
    let banner = host.banner();
    // Two lines when long, so the line stays inside the figure.
    let (a, b) = match banner.find(" · runc") {
        Some(i) if banner.len() > 120 => (banner[..i].to_string(), banner[i + 3..].to_string()),
        _ => (banner, String::new()),
    };
    let y = i32::try_from(h).unwrap_or(0);
    root.draw(&Text::new(a, (8, y - 30), style.clone()))
        .map_err(e)?;
    root.draw(&Text::new(b, (8, y - 16), style)).map_err(e)?;
    Ok(())
}

/// Axis bounds for a log scale: powers of ten around the values.
fn log_bounds(lo: f64, hi: f64) -> (f64, f64) {
    let lo = if lo > 0.0 { lo } else { hi.max(1.0) / 10.0 };
    let a = 10f64.powf(lo.log10().floor());
    let mut b = 10f64.powf(hi.max(lo).log10().ceil());
    if b <= a {
        b = a * 10.0;
    }
    (a, b)
}

/// Horizontal bars with whiskers, one per row; `log` for a log axis.
pub fn hbars(
    name: &str,
    title: &str,
    axis: &str,
    bars: &[Bar],
    log: bool,
    reference: Option<f64>,
    host: &HostInfo,
) -> Result<String> {
    let rows = bars.len().max(1);
    let h = 110 + 34 * u32::try_from(rows).unwrap_or(1) + 40;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, h)).into_drawing_area();
        root.fill(&WHITE).map_err(e).map_err(plot_err(name))?;
        let lo = bars
            .iter()
            .map(|b| if b.min.is_finite() { b.min } else { b.value })
            .fold(f64::INFINITY, f64::min);
        let hi = bars
            .iter()
            .map(|b| if b.max.is_finite() { b.max } else { b.value })
            .fold(0.0f64, f64::max);
        let hi = hi.max(reference.unwrap_or(0.0));
        let n = rows as f64;
        let (area, _) = root.split_vertically(h - 40);
        let mut builder = ChartBuilder::on(&area);
        builder
            .caption(title, ("sans-serif", 16))
            .margin(10)
            .margin_right(150)
            .x_label_area_size(36)
            .y_label_area_size(LABEL_W);
        if log {
            let (a, b) = log_bounds(lo.min(reference.unwrap_or(f64::INFINITY)), hi * 1.5);
            let mut chart = builder
                .build_cartesian_2d((a..b).log_scale(), -0.5f64..n - 0.5)
                .map_err(e)
                .map_err(plot_err(name))?;
            chart
                .configure_mesh()
                .disable_y_mesh()
                .y_labels(0)
                .x_desc(axis)
                .x_label_formatter(&tick)
                .draw()
                .map_err(e)
                .map_err(plot_err(name))?;
            bars_on(&mut chart, bars, a, reference).map_err(plot_err(name))?;
            labels(&root, &chart, bars, a).map_err(plot_err(name))?;
        } else {
            let b = if hi > 0.0 { hi * 1.1 } else { 1.0 };
            let mut chart = builder
                .build_cartesian_2d(0f64..b, -0.5f64..n - 0.5)
                .map_err(e)
                .map_err(plot_err(name))?;
            chart
                .configure_mesh()
                .disable_y_mesh()
                .y_labels(0)
                .x_desc(axis)
                .x_label_formatter(&tick)
                .draw()
                .map_err(e)
                .map_err(plot_err(name))?;
            bars_on(&mut chart, bars, 0.0, reference).map_err(plot_err(name))?;
            labels(&root, &chart, bars, 0.0).map_err(plot_err(name))?;
        }
        footer(&root, host, h).map_err(plot_err(name))?;
        root.present().map_err(e).map_err(plot_err(name))?;
    }
    Ok(svg)
}

fn bars_on<X>(
    chart: &mut ChartContext<
        '_,
        SVGBackend<'_>,
        Cartesian2d<X, plotters::coord::types::RangedCoordf64>,
    >,
    bars: &[Bar],
    base: f64,
    reference: Option<f64>,
) -> std::result::Result<(), String>
where
    X: Ranged<ValueType = f64>,
{
    let n = bars.len() as f64;
    for (i, b) in bars.iter().enumerate() {
        if !b.value.is_finite() {
            continue;
        }
        let y = n - 1.0 - i as f64;
        let c = b.color;
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(base, y - 0.32), (b.value.max(base), y + 0.32)],
                c.mix(0.55).filled(),
            )))
            .map_err(e)?;
        if let Some(inner) = b.inner.filter(|v| v.is_finite() && *v > base) {
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(base, y - 0.32), (inner, y + 0.32)],
                    c.filled(),
                )))
                .map_err(e)?;
        }
        if b.min.is_finite() && b.max.is_finite() && b.max > b.min {
            let style = ShapeStyle::from(&BLACK).stroke_width(1);
            chart
                .draw_series([
                    PathElement::new(vec![(b.min.max(base), y), (b.max, y)], style),
                    PathElement::new(
                        vec![(b.min.max(base), y - 0.15), (b.min.max(base), y + 0.15)],
                        style,
                    ),
                    PathElement::new(vec![(b.max, y - 0.15), (b.max, y + 0.15)], style),
                ])
                .map_err(e)?;
        }
    }
    if let Some(r) = reference {
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![(r, -0.5), (r, n - 0.5)],
                ShapeStyle::from(&BLACK).stroke_width(1),
            )))
            .map_err(e)?;
    }
    Ok(())
}

fn labels<X>(
    root: &DrawingArea<SVGBackend<'_>, Shift>,
    chart: &ChartContext<
        '_,
        SVGBackend<'_>,
        Cartesian2d<X, plotters::coord::types::RangedCoordf64>,
    >,
    bars: &[Bar],
    base: f64,
) -> std::result::Result<(), String>
where
    X: Ranged<ValueType = f64>,
{
    let n = bars.len() as f64;
    let style = TextStyle::from(("sans-serif", 13).into_font()).pos(text_anchor::Pos::new(
        text_anchor::HPos::Left,
        text_anchor::VPos::Center,
    ));
    for (i, b) in bars.iter().enumerate() {
        let y = n - 1.0 - i as f64;
        let (_, py) = chart.backend_coord(&(base.max(f64::MIN_POSITIVE), y));
        root.draw(&Text::new(b.label.clone(), (8, py), style.clone()))
            .map_err(e)?;
        let end = if b.max.is_finite() {
            b.max.max(b.value)
        } else {
            b.value
        };
        if end.is_finite() {
            let (px, _) = chart.backend_coord(&(end, y));
            root.draw(&Text::new(b.text.clone(), (px + 6, py), style.clone()))
                .map_err(e)?;
        } else {
            let (px, _) = chart.backend_coord(&(base.max(f64::MIN_POSITIVE), y));
            root.draw(&Text::new(b.text.clone(), (px + 6, py), style.clone()))
                .map_err(e)?;
        }
    }
    Ok(())
}

/// The boot timeline of one backend: one row per phase, a bar from the
/// previous phase's median to this one's.
pub fn timeline(m: &Measurements, b: Backend) -> Option<Result<String>> {
    let r = m.backend(b)?;
    let phases: Vec<(String, f64)> = r
        .phases
        .iter()
        .filter_map(|p| Some((p.name.clone(), stats::median(&p.ms)?)))
        .collect();
    if phases.is_empty() {
        return None;
    }
    let total = phases.iter().map(|(_, v)| *v).fold(0.0, f64::max);
    let (scale, unit) = if total > 10_000.0 {
        (1000.0, "s")
    } else {
        (1.0, "ms")
    };
    let mut prev = 0.0;
    let bars: Vec<Bar> = phases
        .iter()
        .map(|(name, at)| {
            let start = prev;
            prev = *at;
            Bar {
                label: name.clone(),
                value: at / scale,
                min: f64::NAN,
                max: f64::NAN,
                inner: None,
                color: color(b),
                text: format!(
                    "at {} {unit} (+{})",
                    fmt_num(at / scale),
                    fmt_num((at - start) / scale)
                ),
            }
        })
        .collect();
    let title = format!("Start-up timeline: {} — {}", b.label(), r.execution);
    let name = format!("timeline-{}.svg", b.short());
    Some(timeline_chart(
        &name, &title, unit, &bars, &phases, scale, &m.host,
    ))
}

fn timeline_chart(
    name: &str,
    title: &str,
    unit: &str,
    bars: &[Bar],
    phases: &[(String, f64)],
    scale: f64,
    host: &HostInfo,
) -> Result<String> {
    let rows = bars.len();
    let h = 110 + 34 * u32::try_from(rows).unwrap_or(1) + 40;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, h)).into_drawing_area();
        root.fill(&WHITE).map_err(e).map_err(plot_err(name))?;
        let total = bars.iter().map(|b| b.value).fold(0.0, f64::max).max(1e-3);
        let n = rows as f64;
        let (area, _) = root.split_vertically(h - 40);
        let mut chart = ChartBuilder::on(&area)
            .caption(title, ("sans-serif", 15))
            .margin(10)
            .margin_right(170)
            .x_label_area_size(36)
            .y_label_area_size(LABEL_W)
            .build_cartesian_2d(0f64..total * 1.05, -0.5f64..n - 0.5)
            .map_err(e)
            .map_err(plot_err(name))?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(0)
            .x_desc(format!("{unit} since the command was started (medians)"))
            .x_label_formatter(&tick)
            .draw()
            .map_err(e)
            .map_err(plot_err(name))?;
        let mut prev = 0.0;
        for (i, (_, at)) in phases.iter().enumerate() {
            let y = n - 1.0 - i as f64;
            let c = bars[i].color;
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [
                        (prev / scale, y - 0.32),
                        ((at / scale).max(prev / scale + total * 0.002), y + 0.32),
                    ],
                    c.mix(0.75).filled(),
                )))
                .map_err(e)
                .map_err(plot_err(name))?;
            prev = *at;
        }
        labels(&root, &chart, bars, 0.0).map_err(plot_err(name))?;
        footer(&root, host, h).map_err(plot_err(name))?;
        root.present().map_err(e).map_err(plot_err(name))?;
    }
    Ok(svg)
}

fn spread_bar(
    b: Backend,
    label: String,
    values: &[f64],
    inner: Option<f64>,
    unit: &str,
) -> Option<Bar> {
    let s = stats::summarize(values)?;
    Some(Bar {
        label,
        value: s.median,
        min: s.min,
        max: s.max,
        inner,
        color: color(b),
        text: format!("{} {unit}", fmt_num(s.median)),
    })
}

/// Start-to-exit latency of hello-world per backend (log axis).
pub fn latency(m: &Measurements) -> Result<String> {
    let bars: Vec<Bar> = m
        .backends
        .iter()
        .filter(|r| r.backend != Backend::RunmVmm)
        .filter_map(|r| spread_bar(r.backend, r.backend.label().into(), &r.hello_ms, None, "ms"))
        .collect();
    hbars(
        "latency.svg",
        "hello-world, start to exit (median, min-max whisker)",
        "ms (log scale)",
        &bars,
        true,
        None,
        &m.host,
    )
}

/// Host memory of one idle instance per backend: PSS, with the guest RAM
/// touched drawn darker inside it.
pub fn memory(m: &Measurements) -> Result<String> {
    let bars: Vec<Bar> = m
        .backends
        .iter()
        .filter_map(|r| {
            let pss: Vec<f64> = r.pss_kib.iter().map(|k| k / 1024.0).collect();
            let guest = stats::median(&r.guest_touched_kib).map(|k| k / 1024.0);
            let mut bar = spread_bar(r.backend, r.backend.label().into(), &pss, guest, "MiB")?;
            if let Some(g) = guest {
                bar.text = format!("{} (guest RAM {})", bar.text, fmt_num(g));
            }
            if r.backend == Backend::RunmVmm {
                bar.label = "runm-vmm (200 ms after KVM_RUN)".into();
            }
            Some(bar)
        })
        .collect();
    hbars(
        "memory.svg",
        "host memory of one idle instance: PSS of its host processes (darker: guest RAM touched)",
        "MiB",
        &bars,
        false,
        None,
        &m.host,
    )
}

/// The workloads as ratios to the bare process (log axis, 1 = bare).
pub fn workloads(m: &Measurements) -> Result<String> {
    let bare = m.backend(Backend::Bare);
    let mut bars = Vec::new();
    for r in m.backends.iter().filter(|r| r.backend != Backend::Bare) {
        for (what, values, base) in [
            ("CPU", &r.cpu_ms, bare.map(|b| &b.cpu_ms)),
            ("syscalls", &r.syscall_ms, bare.map(|b| &b.syscall_ms)),
            ("file I/O", &r.fileio_ms, bare.map(|b| &b.fileio_ms)),
        ] {
            let Some(base) = base else { continue };
            let Some(ratio) = median_ratio(values, base) else {
                continue;
            };
            let bm = stats::median(base).unwrap_or(1.0);
            bars.push(Bar {
                label: format!("{} · {what}", r.backend.short()),
                value: ratio,
                min: stats::min(values).map_or(f64::NAN, |v| v / bm),
                max: stats::max(values).map_or(f64::NAN, |v| v / bm),
                inner: None,
                color: color(r.backend),
                text: format!("×{}", fmt_num(ratio)),
            });
        }
    }
    hbars(
        "workloads.svg",
        "workloads as multiples of the bare process's time (line: bare = 1)",
        "× bare (log scale)",
        &bars,
        true,
        Some(1.0),
        &m.host,
    )
}

/// Summed PSS of N idle instances per backend.
pub fn density(m: &Measurements) -> Result<String> {
    let name = "density.svg";
    let h = 420;
    let series: Vec<(Backend, Vec<(f64, f64)>)> = m
        .backends
        .iter()
        .filter(|r| !r.density.is_empty())
        .map(|r| {
            (
                r.backend,
                r.density
                    .iter()
                    .map(|p| (p.instances as f64, p.total_pss_kib / 1024.0))
                    .collect(),
            )
        })
        .collect();
    let max_n = m.sizes.density.iter().copied().max().unwrap_or(1).max(1) as f64;
    let max_y = series
        .iter()
        .flat_map(|(_, pts)| pts.iter().map(|p| p.1))
        .fold(1.0f64, f64::max);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, h)).into_drawing_area();
        root.fill(&WHITE).map_err(e).map_err(plot_err(name))?;
        let (area, _) = root.split_vertically(h - 40);
        let mut chart = ChartBuilder::on(&area)
            .caption(
                "density: summed PSS of N idle instances run at once",
                ("sans-serif", 16),
            )
            .margin(10)
            .x_label_area_size(36)
            .y_label_area_size(60)
            .build_cartesian_2d(0.5f64..max_n + 0.5, 0f64..max_y * 1.15)
            .map_err(e)
            .map_err(plot_err(name))?;
        chart
            .configure_mesh()
            .x_desc("instances")
            .y_desc("MiB")
            .x_labels(usize::try_from(max_n as u64).unwrap_or(4))
            .x_label_formatter(&tick)
            .y_label_formatter(&tick)
            .draw()
            .map_err(e)
            .map_err(plot_err(name))?;
        for (b, pts) in &series {
            let c = color(*b);
            chart
                .draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))
                .map_err(e)
                .map_err(plot_err(name))?
                .label(b.label())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2))
                });
            chart
                .draw_series(pts.iter().map(|p| Circle::new(*p, 4, c.filled())))
                .map_err(e)
                .map_err(plot_err(name))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .draw()
            .map_err(e)
            .map_err(plot_err(name))?;
        footer(&root, &m.host, h).map_err(plot_err(name))?;
        root.present().map_err(e).map_err(plot_err(name))?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::render::tests::fixture;

    #[test]
    fn ticks_drop_needless_decimals() {
        assert_eq!(tick(&20.0), "20");
        assert_eq!(tick(&0.5), "0.500");
        assert_eq!(tick(&2.5), "2.50");
    }

    #[test]
    fn log_bounds_are_powers_of_ten() {
        assert_eq!(log_bounds(0.8, 3500.0), (0.1, 10_000.0));
        assert_eq!(log_bounds(5.0, 5.0), (1.0, 10.0));
        assert_eq!(log_bounds(0.0, 50.0), (1.0, 100.0));
    }

    #[test]
    fn every_figure_is_svg_naming_the_host() {
        let m = fixture();
        let figs = [
            latency(&m).unwrap(),
            memory(&m).unwrap(),
            workloads(&m).unwrap(),
            density(&m).unwrap(),
            timeline(&m, Backend::RunmQemu).unwrap().unwrap(),
        ];
        for svg in figs {
            assert!(svg.starts_with("<svg"), "{}", &svg[..40]);
            assert!(svg.contains("PVM KVM"), "host kind in every figure");
            assert!(svg.contains("runc 1.1.5"));
            assert!(svg.contains("QEMU 7.2.22"));
        }
        assert!(
            timeline(&m, Backend::RunmOwnVmm).is_none(),
            "nothing measured"
        );
    }
}
