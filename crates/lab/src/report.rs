//! Renders lab results: the terminal table (comfy-table), Markdown (for `--markdown FILE`
//! and docs/lab.md), and JSON lines (`--json`), plus the chaos summary. No cluster access.
use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{ContentArrangement, Table};
use std::io::IsTerminal;

use crate::chaos::ChaosResult;
use crate::scenario::{ScenarioResult, Verdict};

/// "NOT_ENOUGH_REPLICAS 812, NOT_LEADER_OR_FOLLOWER 2", or "-".
pub fn errors_cell(result: &ScenarioResult) -> String {
    if result.stats.errors.is_empty() {
        return "-".into();
    }
    let mut errors: Vec<(&String, &usize)> = result.stats.errors.iter().collect();
    errors.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    errors.iter().map(|(name, n)| format!("{name} {n}")).collect::<Vec<_>>().join(", ")
}

/// The acknowledged column: acks=0 acknowledges nothing (the producer never waits).
pub fn acked_cell(result: &ScenarioResult) -> String {
    if result.stats.fire_and_forget > 0 && result.stats.acknowledged == 0 {
        "n/a (acks=0)".into()
    } else {
        result.stats.acknowledged.to_string()
    }
}

pub fn verdict_cell(result: &ScenarioResult) -> String {
    if result.verdict == Verdict::Ok && result.stats.duplicates > 0 {
        // Retried acks=0/1 sends whose first answer was lost (those producers are not
        // idempotent, KIP-98; an acks=all duplicate is a violation, never this verdict).
        return "ok (dup: retried sends)".into();
    }
    let head = match result.verdict {
        Verdict::Ok => "ok",
        Verdict::OkLossAllowed => "ok (loss allowed)",
        Verdict::Violation => "VIOLATION",
        Verdict::Caught => "CAUGHT",
        Verdict::Missed => "MISSED",
        Verdict::Error => "ERROR",
    };
    match result.verdict {
        Verdict::Ok | Verdict::OkLossAllowed => head.to_string(),
        _ if result.reasons.is_empty() => head.to_string(),
        _ => format!("{head}: {}", result.reasons.join("; ")),
    }
}

const HEADER: [&str; 8] =
    ["scenario", "sent", "acked", "errors (Kafka name, count)", "lost", "dup", "expected", "verdict"];

fn row(r: &ScenarioResult) -> [String; 8] {
    [
        r.scenario.id.clone(),
        r.stats.sent.to_string(),
        acked_cell(r),
        errors_cell(r),
        r.stats.lost.to_string(),
        r.stats.duplicates.to_string(),
        r.expected.clone(),
        verdict_cell(r),
    ]
}

/// The terminal table.
pub fn table(results: &[ScenarioResult]) -> String {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_content_arrangement(ContentArrangement::Dynamic);
    if !std::io::stdout().is_terminal() {
        // No terminal to measure: wide enough for one line per scenario.
        table.set_width(240);
    }
    table.set_header(HEADER);
    for r in results {
        table.add_row(row(r));
    }
    table.to_string()
}

/// The same table in Markdown.
pub fn markdown(results: &[ScenarioResult], seed: u64) -> String {
    let mut out = String::new();
    out.push_str(&format!("| {} |\n", HEADER.join(" | ")));
    out.push_str(&format!("|{}\n", "---|".repeat(HEADER.len())));
    for r in results {
        let cells: Vec<String> = row(r).iter().map(|c| c.replace('|', "\\|")).collect();
        out.push_str(&format!("| {} |\n", cells.join(" | ")));
    }
    out.push_str(&format!("\nseed {seed}: replay with `insync lab --seed {seed}`\n"));
    out
}

/// The lines a reader needs under the table: what each failing or caught scenario showed.
pub fn details(results: &[ScenarioResult]) -> String {
    let mut out = String::new();
    for r in results.iter().filter(|r| !matches!(r.verdict, Verdict::Ok | Verdict::OkLossAllowed)) {
        out.push_str(&format!("\n{} — {}\n", r.scenario.id, verdict_cell(r)));
        for note in &r.notes {
            out.push_str(&format!("    {note}\n"));
        }
        for a in r.anomalies.iter().take(5) {
            out.push_str(&format!("    anomaly: {a}\n"));
        }
        if r.anomalies.len() > 5 {
            out.push_str(&format!("    … {} anomalies in all\n", r.anomaly_counts.values().sum::<usize>()));
        }
    }
    out
}

/// The chaos summary for a terminal.
pub fn chaos_summary(result: &ChaosResult, replay: &str) -> String {
    let mut out = String::new();
    let verdict = match result.verdict {
        Verdict::Ok | Verdict::OkLossAllowed => "ok: nothing acknowledged was lost".to_string(),
        _ => format!("VIOLATION: {}", result.reasons.join("; ")),
    };
    out.push_str(&format!(
        "chaos: {} faults in {:.1} s; {} sent, {} acknowledged, {} failed, {} indeterminate ({} committed after all), {} lost, {} duplicates\n",
        result.faults,
        result.duration_ms as f64 / 1000.0,
        result.stats.sent,
        result.stats.acknowledged,
        result.stats.failed,
        result.stats.indeterminate,
        result.stats.indeterminate_committed,
        result.stats.lost,
        result.stats.duplicates
    ));
    if !result.stats.errors.is_empty() {
        let errors: Vec<String> = result.stats.errors.iter().map(|(k, v)| format!("{k} {v}")).collect();
        out.push_str(&format!("errors: {}\n", errors.join(", ")));
    }
    out.push_str(&format!("verdict: {verdict}\n"));
    for a in result.anomalies.iter().take(10) {
        out.push_str(&format!("  anomaly: {a}\n"));
    }
    out.push_str(&format!("seed {}: replay with `{replay}`\n", result.seed));
    out
}
