//! How the API commands print for people (tables, a bead in full with its latest result) and
//! for scripts (`--json`).

use loom_api::{AttemptDto, BeadDto, ConversationDto, ProjectDto};
use serde::Serialize;

pub(super) fn print_json(v: &impl Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

pub(super) fn print_projects(projects: &[ProjectDto]) {
    println!("{:<20} {:<8} {:<10} {:<8} REPO", "ID", "PREFIX", "STRATEGY", "STATUS");
    for p in projects {
        println!("{:<20} {:<8} {:<10} {:<8} {}", p.id, p.bead_prefix, p.git_strategy, p.status, p.git_repo);
    }
}

pub(super) fn print_beads(beads: &[BeadDto]) {
    println!("{:<14} {:<3} {:<12} {:<8} TITLE", "ID", "PRI", "STATUS", "TYPE");
    for b in beads {
        println!("{:<14} P{:<2} {:<12} {:<8} {}", b.id, b.priority, b.status, b.bead_type, b.title);
    }
}

pub(super) fn print_bead(b: &BeadDto) {
    println!("{} [{}] P{} {} — {}", b.id, b.status, b.priority, b.bead_type, b.title);
    if let Some(a) = &b.assignee {
        println!("  assignee: {a}");
    }
    let secs = |t: &chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    match (&b.dispatch_id, b.dispatch_state.as_deref(), &b.started_at, &b.lease_expires_at) {
        (Some(d), Some("queued"), _, _) => println!("  dispatch {d}: queued, waiting for a free agent slot"),
        (Some(d), _, Some(at), Some(until)) => {
            let by = b.started_by.as_deref().unwrap_or("an agent");
            println!("  dispatch {d}: running on {by} since {}, lease until {}", secs(at), secs(until));
        }
        (Some(d), _, _, Some(until)) => println!("  dispatch {d}, lease until {}", secs(until)),
        _ => {}
    }
    if !b.blocked_by.is_empty() {
        println!("  waits on: {}", b.blocked_by.join(", "));
    }
    if let Some(e) = &b.last_error {
        println!("  last error: {e}");
    }
    if let Some(r) = &b.close_reason {
        println!("  closed: {r}");
    }
    if let Some(from) = b.context.get("discovered_from") {
        println!("  discovered while working on {from}");
    }
    println!("  attempts {}, version {}", b.attempts, b.version);
    if let Some(r) = &b.latest_result {
        print_result(r);
    }
    if !b.description.is_empty() {
        println!("\n{}", b.description);
    }
}

/// Lines of a result's output `loom bead show` prints (its end; `--json` has all of it).
const OUTPUT_LINES: usize = 20;

fn print_result(r: &AttemptDto) {
    let secs = r.duration_ms as f64 / 1000.0;
    println!("  latest result: {} (attempt {}, agent {}, {secs:.1} s)", r.status, r.attempt, r.agent_id);
    if let Some(e) = &r.error {
        println!("    error: {e}");
    }
    if r.total_tokens > 0 {
        println!(
            "    tokens: {} prompt + {} completion = {} ({} via {}, ${:.4})",
            r.prompt_tokens, r.completion_tokens, r.total_tokens, r.model, r.provider, r.cost_usd
        );
    }
    for c in &r.commits {
        println!("    commit {} on {}", c.sha, c.branch);
    }
    for a in &r.artifacts {
        println!("    artifact {a}");
    }
    if !r.created_beads.is_empty() {
        println!("    created beads: {}", r.created_beads.join(", "));
    }
    let lines: Vec<&str> = r.output.lines().collect();
    if !lines.is_empty() {
        println!("    output{}:", if lines.len() > OUTPUT_LINES { " (last lines)" } else { "" });
        for line in &lines[lines.len().saturating_sub(OUTPUT_LINES)..] {
            println!("    | {line}");
        }
    }
}

/// A conversation, one block per message: `[turn] role`, the calls, the content.
pub(super) fn print_conversation(c: &ConversationDto) {
    println!("{} attempt {} (dispatch {}): {} messages", c.bead_id, c.attempt, c.dispatch_id, c.messages.len());
    for m in &c.messages {
        let role = m["role"].as_str().unwrap_or("?");
        let turn = m["turn"].as_u64().map(|t| format!("[{t}] ")).unwrap_or_default();
        let answers = m["tool_call_id"].as_str().map(|id| format!(" (answers {id})")).unwrap_or_default();
        println!("\n--- {turn}{role}{answers}");
        for call in m["tool_calls"].as_array().into_iter().flatten() {
            println!("call {} {}", call["name"].as_str().unwrap_or("?"), call["arguments"].as_str().unwrap_or(""));
        }
        let content = m["content"].as_str().unwrap_or_default();
        if !content.is_empty() {
            println!("{content}");
        }
    }
}

/// What an import did, and every line that went wrong.
pub(super) fn print_import(s: &loom_api::ImportSummary) {
    println!(
        "{} lines: {} created, {} updated, {} skipped (unchanged), {} external references, {} errors",
        s.lines,
        s.created,
        s.updated,
        s.skipped,
        s.external,
        s.errors.len()
    );
    for m in &s.mapped {
        println!("line {}: id {} is not a bead id here; imported as {}", m.line, m.from, m.to);
    }
    for d in &s.dangling {
        println!(
            "line {}: {} -> {} ({}): not in the file or the project; {}",
            d.line, d.issue, d.depends_on, d.kind, d.action
        );
    }
    for c in &s.cycles {
        println!("cycle on lines {:?}: {}; not imported", c.lines, c.issues.join(" -> "));
    }
    for e in &s.errors {
        println!("line {}: {}", e.line, e.error);
    }
}
