//! Rendering results: the summary table (Markdown), JSON, and an SVG plot of the tasks still
//! in the old universe over simulated time, one curve per model.

use crate::run::RunResult;
use plotters::prelude::*;
use std::fmt::Write as _;
use std::path::Path;

/// Formats nanoseconds for people.
pub fn fmt_ns(ns: u64) -> String {
    let f = ns as f64;
    if ns >= 1_000_000_000 {
        format!("{:.2} s", f / 1e9)
    } else if ns >= 1_000_000 {
        format!("{:.2} ms", f / 1e6)
    } else if ns >= 1_000 {
        format!("{:.1} µs", f / 1e3)
    } else {
        format!("{ns} ns")
    }
}

/// The summary table, in Markdown.
pub fn table(results: &[RunResult]) -> String {
    let mut s = String::new();
    s.push_str(
        "| model | converged | time to converge | passes | stack walks | signals | violations | mixed stacks | max pause | stragglers (last pass: reasons) |\n",
    );
    s.push_str("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |\n");
    for r in results {
        let converged = if r.converged {
            "yes".to_string()
        } else if r.violation.is_some() {
            "no (violation)".to_string()
        } else if r.transitions.iter().any(|t| t.outcome == "gave-up") {
            "no (gave up)".to_string()
        } else if r.timed_out {
            format!("no (at {})", fmt_ns(r.sim_time_ns))
        } else {
            "no".to_string()
        };
        let time = r.time_to_converge_ns.map_or("-".to_string(), fmt_ns);
        let pause = if r.max_pause_ns > 0 { fmt_ns(r.max_pause_ns) } else { "-".into() };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.model,
            converged,
            time,
            r.passes,
            r.walks,
            r.signals,
            r.violations,
            r.oracle.mixed_stacks,
            pause,
            r.straggler_summary()
        );
    }
    s
}

/// What each model's transitions cost the machine, in Markdown.
pub fn cost_table(results: &[RunResult]) -> String {
    let mut s = String::new();
    s.push_str(
        "| model | transition CPU | engine | IPIs (on targets) | own walks | signals taken | IPIs / task | kicks / task | kicks / kicked task (max) | syscalls interrupted | added syscall latency p99 / max | pause per task: frozen p50 / max (tasks), stopped |\n",
    );
    s.push_str("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n");
    for r in results {
        let c = &r.costs;
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {:.2} | {:.2} | {:.2} ({}) | {} | {} / {} | {} |",
            r.model,
            fmt_ns(c.transition_cpu_ns),
            fmt_ns(c.engine_cpu_ns),
            fmt_ns(c.ipi_cpu_ns),
            fmt_ns(c.self_walk_ns),
            fmt_ns(c.signal_cpu_ns),
            c.ipis_per_task,
            c.kicks_per_task,
            c.kicks_per_kicked,
            c.max_kicks,
            c.interrupted_syscalls,
            fmt_ns(c.added.p99_ns),
            fmt_ns(c.added.max_ns),
            pause_cell(c),
        );
    }
    s
}

fn pause_cell(c: &crate::run::Costs) -> String {
    let mut parts = Vec::new();
    if c.frozen_tasks > 0 {
        parts.push(format!(
            "frozen {} / {} ({})",
            fmt_ns(c.freeze_pause.p50_ns),
            fmt_ns(c.freeze_pause.max_ns),
            c.frozen_tasks
        ));
    }
    if c.stop_pause_ns > 0 {
        parts.push(format!("stopped {} (all)", fmt_ns(c.stop_pause_ns)));
    }
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(", ")
    }
}

/// One cell of the cross-scenario matrix: the time to converge, or why not.
pub fn cell(r: &RunResult) -> String {
    if r.converged {
        let mut c = r.time_to_converge_ns.map_or("yes".to_string(), fmt_ns);
        if r.oracle.mixed_stacks > 0 {
            let _ = write!(c, " ({} mixed)", r.oracle.mixed_stacks);
        }
        c
    } else if r.violation.is_some() {
        format!("violation ({:?})", r.violation.as_ref().map(|v| v.invariant).unwrap_or(crate::oracle::Invariant::I1))
    } else if r.transitions.iter().any(|t| t.outcome == "gave-up") {
        "gave up".to_string()
    } else {
        format!("no (>{})", fmt_ns(r.sim_time_ns))
    }
}

/// Scenarios × models: the time each model took to converge, or why it did not.
pub fn matrix(rows: &[(String, Vec<RunResult>)]) -> String {
    let mut s = String::new();
    let Some((_, first)) = rows.first() else {
        return s;
    };
    s.push_str("| scenario |");
    for r in first {
        let _ = write!(s, " {} |", r.model);
    }
    s.push_str("\n| --- |");
    for _ in first {
        s.push_str(" --- |");
    }
    s.push('\n');
    for (name, results) in rows {
        let _ = write!(s, "| {name} |");
        for r in results {
            let _ = write!(s, " {} |", cell(r));
        }
        s.push('\n');
    }
    s
}

/// Details below the table: violations with their replay data, measured weaknesses, speed.
pub fn details(results: &[RunResult]) -> String {
    let mut s = String::new();
    for r in results {
        if let Some(v) = &r.violation {
            let _ = writeln!(s, "- {}: {v}", r.model);
        }
        if r.oracle.exiting_unswitched > 0 {
            let _ = writeln!(
                s,
                "- {}: {} exiting task(s) left in the old universe at completion (not visited)",
                r.model, r.oracle.exiting_unswitched
            );
        }
        if r.oracle.forced_mixed > 0 {
            let _ = writeln!(s, "- {}: {} stale frame(s) after force", r.model, r.oracle.forced_mixed);
        }
        let h = &r.heap;
        if !h.buffers.is_empty() || h.stats.shadow_allocs > 0 {
            let st = &h.stats;
            let _ = writeln!(
                s,
                "- {}: heap: {} objects, {} buffers, {} leaked; {} shadow variables allocated, {} destructor calls \
                 ({} leak, {} counter, {} by free_all), {} reclaimed after {} grace periods, {} live",
                r.model,
                h.objects.len(),
                h.buffers.len(),
                h.leaked().count(),
                st.shadow_allocs,
                st.leak_dtor_calls + st.counter_dtor_calls + st.other_dtor_calls,
                st.leak_dtor_calls,
                st.counter_dtor_calls,
                st.free_all_dtor_calls,
                st.reclaimed,
                st.reclaim_graces,
                h.shadows_live
            );
        }
        for o in r.outcomes.iter().filter(|o| o.error.is_some()) {
            let _ = writeln!(
                s,
                "- {}: {} at {} refused: {}",
                r.model,
                o.action,
                fmt_ns(o.at_ns),
                o.error.as_deref().unwrap_or_default()
            );
        }
        let _ = writeln!(
            s,
            "- {}: {} events in {} ({:.2} M events/s), {} simulated",
            r.model,
            r.events,
            fmt_ns(r.wall_ns),
            r.events_per_sec() / 1e6,
            fmt_ns(r.sim_time_ns)
        );
    }
    s
}

/// Writes `summary.md`, `results.json` and `old-universe.svg` into `dir`.
pub fn write_dir(dir: &Path, title: &str, results: &[RunResult]) -> Result<(), ReportError> {
    std::fs::create_dir_all(dir).map_err(|e| ReportError::Io(dir.display().to_string(), e.to_string()))?;
    let md = format!("# {title}\n\n{}\n{}\n{}", table(results), cost_table(results), details(results));
    let md_path = dir.join("summary.md");
    std::fs::write(&md_path, md).map_err(|e| ReportError::Io(md_path.display().to_string(), e.to_string()))?;
    let json = serde_json::to_string_pretty(results).map_err(|e| ReportError::Json(e.to_string()))?;
    let json_path = dir.join("results.json");
    std::fs::write(&json_path, json).map_err(|e| ReportError::Io(json_path.display().to_string(), e.to_string()))?;
    plot(&dir.join("old-universe.svg"), title, results)
}

/// Why a report could not be written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReportError {
    /// A file could not be written.
    Io(String, String),
    /// JSON encoding failed.
    Json(String),
    /// Plotting failed.
    Plot(String),
}

impl std::fmt::Display for ReportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReportError::Io(path, e) => write!(f, "cannot write {path}: {e}"),
            ReportError::Json(e) => write!(f, "cannot encode JSON: {e}"),
            ReportError::Plot(e) => write!(f, "cannot draw the plot: {e}"),
        }
    }
}

impl std::error::Error for ReportError {}

const COLORS: [RGBColor; 5] = [
    RGBColor(200, 40, 40),
    RGBColor(30, 120, 200),
    RGBColor(40, 160, 60),
    RGBColor(150, 80, 180),
    RGBColor(230, 140, 20),
];

/// Plots tasks still in the old universe over simulated time (log time axis), per model.
pub fn plot(path: &Path, title: &str, results: &[RunResult]) -> Result<(), ReportError> {
    let err = |e: String| ReportError::Plot(e);
    let max_t = results.iter().flat_map(|r| r.timeline.iter().map(|p| p.0)).max().unwrap_or(1).max(1);
    let max_n = results.iter().flat_map(|r| r.timeline.iter().map(|p| p.1)).max().unwrap_or(1).max(1);
    let x_lo = 1e-6f64;
    let x_hi = (max_t as f64 / 1e9).max(x_lo * 10.0) * 1.5;
    let root = SVGBackend::new(path, (960, 540)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("{title}: tasks still in the old universe"), ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d((x_lo..x_hi).log_scale(), 0u32..(max_n + max_n / 10 + 1))
        .map_err(|e| err(e.to_string()))?;
    chart
        .configure_mesh()
        .x_desc("simulated time since the transition started (s, log scale)")
        .y_desc("tasks not in the target universe")
        .draw()
        .map_err(|e| err(e.to_string()))?;
    // Drawn last-first so that the first models (Linux, improved) are on top.
    for (i, r) in results.iter().enumerate().rev() {
        let color = COLORS[i % COLORS.len()];
        // A step curve: each sample holds until the next.
        let mut pts: Vec<(f64, u32)> = Vec::with_capacity(r.timeline.len() * 2);
        for (j, &(t, n)) in r.timeline.iter().enumerate() {
            let x = (t as f64 / 1e9).max(x_lo);
            if j > 0 {
                let prev = pts.last().map_or(0, |p| p.1);
                pts.push((x, prev));
            }
            pts.push((x, n));
        }
        chart
            .draw_series(LineSeries::new(pts, color.stroke_width(2)))
            .map_err(|e| err(e.to_string()))?
            .label(r.model.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(e.to_string()))?;
    root.present().map_err(|e| err(e.to_string()))?;
    Ok(())
}
