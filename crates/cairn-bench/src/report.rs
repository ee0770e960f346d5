//! The results: a Markdown section for docs/BENCHMARKS.md, JSON, and a
//! PNG plot.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use plotters::prelude::*;
use serde_json::json;

/// Whether more of a measure is better.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Better {
    Higher,
    Lower,
}

/// One measured number of one system.
#[derive(Clone, Debug)]
pub struct Measure {
    /// The row of the table, e.g. "append 100 B, batches of 1, 64 clients".
    pub workload: String,
    /// What is measured, e.g. "events/s" or "p99 ms".
    pub unit: &'static str,
    pub better: Better,
    /// Per system, in the order of `Report::systems`; None where not run.
    pub values: Vec<Option<f64>>,
    /// Which panel of the plot, if any, and the bar's label there.
    pub plot: Option<(Panel, &'static str)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Panel {
    Throughput,
    Latency,
}

pub struct Report {
    pub systems: Vec<String>,
    pub versions: Vec<String>,
    pub measures: Vec<Measure>,
    pub notes: Vec<String>,
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn fmt_value(v: f64, unit: &str) -> String {
    if unit.contains("ms") {
        if v < 10.0 {
            format!("{v:.2}")
        } else {
            format!("{v:.1}")
        }
    } else if v >= 1e6 {
        format!("{:.2} M", v / 1e6)
    } else if v >= 1e4 {
        format!("{:.1} k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

impl Report {
    /// The table: each system's value, then Cairn / peer for each peer
    /// (Cairn is the first system).
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let mut head = "| workload | measure |".to_string();
        let mut rule = "| --- | --- |".to_string();
        for s in &self.systems {
            let _ = write!(head, " {s} |");
            rule.push_str(" ---: |");
        }
        for s in self.systems.iter().skip(1) {
            let _ = write!(head, " Cairn / {s} |");
            rule.push_str(" ---: |");
        }
        let _ = writeln!(out, "{head}\n{rule}");
        for m in &self.measures {
            let _ = write!(out, "| {} | {} |", m.workload, m.unit);
            for v in &m.values {
                let _ = write!(out, " {} |", v.map_or("—".to_string(), |v| fmt_value(v, m.unit)));
            }
            for v in m.values.iter().skip(1) {
                let ratio = match (m.values[0], v) {
                    (Some(c), Some(p)) if *p > 0.0 => {
                        let r = c / p;
                        let ahead = match m.better {
                            Better::Higher => r >= 1.0,
                            Better::Lower => r <= 1.0,
                        };
                        if ahead {
                            format!("**{r:.2}×**")
                        } else {
                            format!("{r:.2}×")
                        }
                    }
                    _ => "—".to_string(),
                };
                let _ = write!(out, " {ratio} |");
            }
            out.push('\n');
        }
        out
    }

    pub fn json(&self) -> serde_json::Value {
        json!({
            "systems": self.systems,
            "versions": self.versions,
            "measures": self.measures.iter().map(|m| json!({
                "workload": m.workload, "unit": m.unit,
                "higher_is_better": m.better == Better::Higher, "values": m.values,
            })).collect::<Vec<_>>(),
            "notes": self.notes,
        })
    }

    /// A PNG of the throughput and latency panels, bars per system on a
    /// log scale.
    pub fn plot(&self, path: &Path) -> Result<()> {
        let font = font()?;
        let leaked: &'static [u8] = Box::leak(font.into_boxed_slice());
        plotters::style::register_font("sans-serif", FontStyle::Normal, leaked).map_err(|_| anyhow::anyhow!("the font file is not a TrueType font"))?;
        let (w, h) = (1400u32, 1100u32);
        let mut buf = vec![255u8; (w * h * 3) as usize];
        {
            let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
            root.fill(&WHITE).map_err(plot_err)?;
            let (top, bottom) = root.split_vertically(h / 2);
            self.panel(&top, Panel::Throughput, "Throughput (events/s, higher is better)")?;
            self.panel(&bottom, Panel::Latency, "Latency (ms, lower is better)")?;
            root.present().map_err(plot_err)?;
        }
        let file = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
        let mut enc = png::Encoder::new(std::io::BufWriter::new(file), w, h);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        enc.write_header()?.write_image_data(&buf)?;
        Ok(())
    }

    fn panel(&self, area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>, panel: Panel, title: &str) -> Result<()> {
        let rows: Vec<&Measure> = self.measures.iter().filter(|m| m.plot.is_some_and(|(p, _)| p == panel)).collect();
        let values = rows.iter().flat_map(|m| m.values.iter().flatten().copied());
        let (lo, hi) = values.fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
        if rows.is_empty() || lo > hi {
            return Ok(());
        }
        let (lo, hi) = ((lo / 3.0).max(1e-3), hi * 3.0);
        let n = rows.len();
        let labels: Vec<String> = rows.iter().map(|m| m.plot.map_or("", |(_, l)| l).to_string()).collect();
        let mut chart = ChartBuilder::on(area)
            .caption(title, ("sans-serif", 26))
            .margin(15)
            .x_label_area_size(70)
            .y_label_area_size(90)
            .build_cartesian_2d(0f64..n as f64, (lo..hi).log_scale())
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(n * 2 + 1)
            .x_label_formatter(&|x| {
                let i = x.floor() as usize;
                if (x - x.floor() - 0.5).abs() < 0.01 && i < labels.len() {
                    labels[i].clone()
                } else {
                    String::new()
                }
            })
            .x_label_style(("sans-serif", 15))
            .y_label_style(("sans-serif", 15))
            .y_label_formatter(&|v| fmt_value(*v, if panel == Panel::Latency { "ms" } else { "" }))
            .draw()
            .map_err(plot_err)?;
        let colors = [RGBColor(0x2b, 0x6c, 0xb0), RGBColor(0x27, 0xae, 0x60), RGBColor(0xe6, 0x7e, 0x22)];
        let k = self.systems.len() as f64;
        for (s, name) in self.systems.iter().enumerate() {
            let color = colors[s % colors.len()];
            let bars = rows.iter().enumerate().filter_map(|(i, m)| {
                let v = m.values.get(s).copied().flatten()?;
                let x0 = i as f64 + 0.1 + 0.8 * s as f64 / k;
                Some(Rectangle::new([(x0, lo), (x0 + 0.8 / k - 0.02, v)], color.filled()))
            });
            chart
                .draw_series(bars)
                .map_err(plot_err)?
                .label(name.as_str())
                .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], color.filled()));
        }
        chart
            .configure_series_labels()
            // Upper left: the first groups are the lowest bars of both panels.
            .position(SeriesLabelPosition::UpperLeft)
            .label_font(("sans-serif", 17))
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(plot_err)?;
        Ok(())
    }
}

fn plot_err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow::anyhow!("drawing the plot: {e:?}")
}

/// A TrueType font for the plot's text: DejaVu or Liberation Sans from the
/// system, Debian's fonts-dejavu-core installed when there is neither.
fn font() -> Result<Vec<u8>> {
    const CANDIDATES: [&str; 3] = [
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
        "/usr/share/fonts/truetype/liberation2/LiberationSans-Regular.ttf",
    ];
    let find = || CANDIDATES.iter().find_map(|p| std::fs::read(p).ok());
    if let Some(f) = find() {
        return Ok(f);
    }
    eprintln!("bench: no font for the plot; installing Debian's fonts-dejavu-core");
    let ok = std::process::Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends", "fonts-dejavu-core"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    match find() {
        Some(f) if ok => Ok(f),
        _ => bail!("no TrueType font for the plot (looked for {CANDIDATES:?}); install fonts-dejavu-core"),
    }
}

/// Replaces the text between `<!-- peers:begin -->` and `<!-- peers:end -->`
/// in `doc` with `section`, or appends both markers and the section.
pub fn splice(doc: &str, section: &str) -> String {
    const BEGIN: &str = "<!-- peers:begin -->";
    const END: &str = "<!-- peers:end -->";
    match (doc.find(BEGIN), doc.find(END)) {
        (Some(b), Some(e)) if b < e => format!("{}{BEGIN}\n{section}{}", &doc[..b], &doc[e..]),
        _ => format!("{}\n{BEGIN}\n{section}{END}\n", doc.trim_end_matches('\n').to_string() + "\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> Report {
        Report {
            systems: vec!["Cairn".into(), "NATS".into(), "PostgreSQL".into()],
            versions: vec![],
            measures: vec![
                Measure { workload: "append 100 B, batches of 1, 64 clients".into(), unit: "events/s", better: Better::Higher, values: vec![Some(2000.0), Some(1000.0), None], plot: Some((Panel::Throughput, "100 B ×1")) },
                Measure { workload: "tail".into(), unit: "p99 ms", better: Better::Lower, values: vec![Some(2.0), Some(4.0), Some(1.0)], plot: Some((Panel::Latency, "tail p99")) },
            ],
            notes: vec![],
        }
    }

    #[test]
    fn the_table_gives_ratios_and_marks_where_cairn_is_ahead() {
        let md = report().markdown();
        let lines: Vec<&str> = md.lines().collect();
        assert_eq!(lines[0], "| workload | measure | Cairn | NATS | PostgreSQL | Cairn / NATS | Cairn / PostgreSQL |");
        assert_eq!(lines[2], "| append 100 B, batches of 1, 64 clients | events/s | 2000 | 1000 | — | **2.00×** | — |");
        assert_eq!(lines[3], "| tail | p99 ms | 2.00 | 4.00 | 1.00 | **0.50×** | 2.00× |");
    }

    #[test]
    fn splicing_replaces_the_section_or_appends_it() {
        let once = splice("# B\n\ntext\n", "one\n");
        assert_eq!(once, "# B\n\ntext\n\n<!-- peers:begin -->\none\n<!-- peers:end -->\n");
        let twice = splice(&once, "two\n");
        assert_eq!(twice, "# B\n\ntext\n\n<!-- peers:begin -->\ntwo\n<!-- peers:end -->\n");
    }

    #[test]
    fn the_plot_is_a_png() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("p.png");
        match report().plot(&path) {
            Ok(()) => assert_eq!(&std::fs::read(&path).expect("read")[..8], b"\x89PNG\r\n\x1a\n"),
            // Only a machine without a font and without root to install one.
            Err(e) => assert!(e.to_string().contains("font"), "{e:#}"),
        }
    }
}
