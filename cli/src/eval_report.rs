//! Reports of `redraft eval`: the summary of each run, the table, the JSON
//! file and the accuracy-against-budget plot.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use plotters::prelude::*;
use serde::Serialize;
use serde_json::json;

use crate::eval::{EvalArgs, EvalStrategy, PromptResult, per_category};

/// Places where a TrueType font for the plot's labels is looked for.
/// NOTE: the plot needs one of these (Debian's fonts-dejavu-core provides the
/// first); without any, `--plot` fails with an error that lists them.
const FONT_PATHS: [&str; 4] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
];

/// The results of one strategy at one budget.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    /// The strategy.
    pub strategy: EvalStrategy,
    /// Generator calls per prompt.
    pub budget: u32,
    /// Accuracy over every prompt.
    pub overall: f64,
    /// Accuracy per category.
    pub categories: BTreeMap<String, f64>,
    /// Mean generator calls per prompt, retries included.
    pub mean_generator_calls: f64,
    /// Mean critic calls per prompt, retries included.
    pub mean_critic_calls: f64,
    /// Mean seconds per prompt.
    pub mean_seconds: f64,
    /// Each prompt's result, in file order.
    pub results: Vec<PromptResult>,
}

impl RunSummary {
    /// Summarizes the results of one run.
    pub fn new(strategy: EvalStrategy, budget: u32, results: Vec<PromptResult>) -> Self {
        let count = results.len().max(1) as f64;
        let mean = |value: &dyn Fn(&PromptResult) -> f64| -> f64 {
            results.iter().map(value).sum::<f64>() / count
        };
        Self {
            strategy,
            budget,
            overall: mean(&|result| f64::from(u8::from(result.correct))),
            categories: per_category(&results),
            mean_generator_calls: mean(&|result| f64::from(result.generator_calls)),
            mean_critic_calls: mean(&|result| f64::from(result.critic_calls)),
            mean_seconds: mean(&|result| result.seconds),
            results,
        }
    }
}

/// Formats a plain-text table with one row per run: accuracy per category
/// and overall, then mean calls and seconds per prompt.
pub fn table(summaries: &[RunSummary]) -> String {
    let mut categories: Vec<&String> = summaries
        .iter()
        .flat_map(|summary| summary.categories.keys())
        .collect();
    categories.sort();
    categories.dedup();

    let mut header = vec!["strategy".to_string(), "budget".to_string()];
    header.extend(categories.iter().map(|category| category.to_string()));
    header.extend(
        ["overall", "gen calls", "critic calls", "s/prompt"]
            .iter()
            .map(|name| name.to_string()),
    );
    let mut rows = vec![header];
    for summary in summaries {
        let mut row = vec![
            summary.strategy.name().to_string(),
            summary.budget.to_string(),
        ];
        for category in &categories {
            row.push(
                summary
                    .categories
                    .get(*category)
                    .map_or("-".to_string(), |accuracy| format!("{accuracy:.3}")),
            );
        }
        row.push(format!("{:.3}", summary.overall));
        row.push(format!("{:.2}", summary.mean_generator_calls));
        row.push(format!("{:.2}", summary.mean_critic_calls));
        row.push(format!("{:.2}", summary.mean_seconds));
        rows.push(row);
    }

    let widths: Vec<usize> = (0..rows[0].len())
        .map(|column| rows.iter().map(|row| row[column].len()).max().unwrap_or(0))
        .collect();
    rows.iter()
        .map(|row| {
            row.iter()
                .zip(&widths)
                .enumerate()
                .map(|(column, (cell, width))| {
                    if column == 0 {
                        format!("{cell:<width$}")
                    } else {
                        format!("{cell:>width$}")
                    }
                })
                .collect::<Vec<_>>()
                .join("  ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Writes the runs, prompt by prompt, with the settings that produced them.
pub fn write_json(path: &Path, args: &EvalArgs, summaries: &[RunSummary]) -> anyhow::Result<()> {
    let document = json!({
        "prompts_file": args.prompts.display().to_string(),
        "prompts": summaries.first().map_or(0, |summary| summary.results.len()),
        "candidates_per_iteration": args.candidates,
        "threshold": args.threshold,
        "seed": args.seed,
        "steps": args.steps,
        "guidance_scale": args.guidance,
        "runs": summaries,
    });
    let text = serde_json::to_string_pretty(&document)?;
    std::fs::write(path, text + "\n").with_context(|| format!("failed to write {}", path.display()))
}

/// Draws overall accuracy against budget, one line per strategy, to a PNG.
pub fn plot(path: &Path, summaries: &[RunSummary]) -> anyhow::Result<()> {
    let font = FONT_PATHS
        .iter()
        .find_map(|candidate| std::fs::read(candidate).ok())
        .with_context(|| {
            format!(
                "no TrueType font for the plot's labels; looked in {}",
                FONT_PATHS.join(", ")
            )
        })?;
    // The font must outlive every drawing call.
    let font: &'static [u8] = Box::leak(font.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, font)
        .map_err(|_| anyhow::anyhow!("the plot's font is not a valid TrueType font"))?;
    draw(path, summaries)
        .map_err(|error| anyhow::anyhow!("failed to draw {}: {error}", path.display()))
}

fn draw(path: &Path, summaries: &[RunSummary]) -> Result<(), Box<dyn std::error::Error>> {
    let max_budget = summaries
        .iter()
        .map(|summary| summary.budget)
        .max()
        .unwrap_or(1);
    let root = BitMapBackend::new(path, (800, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("accuracy against budget", ("sans-serif", 24))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(
            (0.5f64..f64::from(max_budget) * 1.5).log_scale(),
            0.0f64..1.0,
        )?;
    chart
        .configure_mesh()
        .x_desc("generator calls per prompt")
        .y_desc("accuracy (shapes oracle)")
        .x_label_formatter(&|budget| format!("{budget:.0}"))
        .draw()?;

    let mut strategies: Vec<EvalStrategy> =
        summaries.iter().map(|summary| summary.strategy).collect();
    strategies.sort();
    strategies.dedup();
    for (index, strategy) in strategies.iter().enumerate() {
        let color = Palette99::pick(index).to_rgba();
        let mut points: Vec<(f64, f64)> = summaries
            .iter()
            .filter(|summary| summary.strategy == *strategy)
            .map(|summary| (f64::from(summary.budget), summary.overall))
            .collect();
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
            .label(strategy.name())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart.draw_series(
            points
                .iter()
                .map(|point| Circle::new(*point, 4, color.filled())),
        )?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(category: &str, correct: bool, calls: u32) -> PromptResult {
        PromptResult {
            prompt: "a red circle".to_string(),
            category: category.to_string(),
            correct,
            reason: String::new(),
            status: "JOB_STATUS_EXHAUSTED".to_string(),
            best_score: 0.5,
            generator_calls: calls,
            critic_calls: calls,
            seconds: 1.0,
            actions: vec!["reseed".to_string()],
        }
    }

    #[test]
    fn summary_means() {
        let summary = RunSummary::new(
            EvalStrategy::Adaptive,
            4,
            vec![result("colors", true, 4), result("position", false, 2)],
        );
        assert_eq!(summary.overall, 0.5);
        assert_eq!(summary.mean_generator_calls, 3.0);
        assert_eq!(summary.categories["colors"], 1.0);
        assert_eq!(summary.categories["position"], 0.0);
    }

    #[test]
    fn table_has_row_per_run() {
        let runs = vec![
            RunSummary::new(
                EvalStrategy::SingleShot,
                1,
                vec![result("colors", false, 1)],
            ),
            RunSummary::new(EvalStrategy::Adaptive, 4, vec![result("colors", true, 4)]),
        ];
        let table = table(&runs);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3, "{table}");
        assert!(lines[0].starts_with("strategy"), "{table}");
        assert!(lines[0].contains("colors"), "{table}");
        assert!(lines[1].starts_with("single-shot"), "{table}");
        assert!(lines[2].starts_with("adaptive"), "{table}");
        assert!(lines[2].contains("1.000"), "{table}");
    }

    #[test]
    fn plot_writes_png() {
        if FONT_PATHS.iter().all(|path| !Path::new(path).exists()) {
            // The error path is what a machine without fonts gets.
            let dir = tempfile::tempdir().unwrap();
            let error = plot(&dir.path().join("plot.png"), &[]).unwrap_err();
            assert!(error.to_string().contains("no TrueType font"), "{error}");
            return;
        }
        let runs = vec![
            RunSummary::new(
                EvalStrategy::SingleShot,
                1,
                vec![result("colors", false, 1)],
            ),
            RunSummary::new(EvalStrategy::Adaptive, 2, vec![result("colors", true, 2)]),
            RunSummary::new(EvalStrategy::Adaptive, 4, vec![result("colors", true, 4)]),
        ];
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plot.png");
        plot(&path, &runs).unwrap();
        let image = image::open(&path).unwrap();
        assert_eq!((image.width(), image.height()), (800, 500));
    }
}
