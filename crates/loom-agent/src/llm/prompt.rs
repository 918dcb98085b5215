//! The prompts: the persona's body, the project's `AGENTS.md` and the action protocol in the
//! system prompt; the bead in the first user message. Nothing from the agent's configuration
//! beyond the persona reaches them (no keys, no environment).

use std::fmt::Write as _;

use loom_bus::{PROJECT_COMMANDS, TaskMessage};
use loom_domain::Persona;

use super::protocol::{PROTOCOL, TOOLS_PROTOCOL};
use crate::personas::DEFAULT_PERSONA;
use crate::sandbox::Sandbox;
use crate::sandbox::command::cap_text;
use crate::{AgentConfig, Error};

const AGENTS_MD_MAX: usize = 32 * 1024;
/// The bead context entry where the control plane puts the answers to the bead's escalations.
const ANSWERS: &str = "escalation_answer";

/// The persona a task plays: the bead's `role`, else the agent's, else `engineer`.
pub(crate) fn persona<'a>(config: &'a AgentConfig, task: &TaskMessage) -> Result<&'a Persona, Error> {
    let bead_role = task.metadata.role.as_deref().or_else(|| task.task_data.context.get("role").map(String::as_str));
    let name = bead_role
        .filter(|r| !r.trim().is_empty())
        .or_else(|| config.role.as_ref().map(|r| r.as_str()))
        .unwrap_or(DEFAULT_PERSONA);
    config.personas.pick(name)
}

/// The system prompt: the persona's body, AGENTS.md, the protocol of the actions it may take;
/// `tools`: the actions are native tools rather than JSON in the text.
pub(crate) fn system(persona: &Persona, sandbox: &Sandbox, tools: bool) -> String {
    let mut out = format!("{}\n\n", persona.instructions);
    // AGENTS.md is read through the sandbox: a symlink out of the worktree is not followed.
    if let Ok(path) = sandbox.resolve("AGENTS.md")
        && let Ok(text) = std::fs::read_to_string(path)
    {
        let _ = write!(out, "# Project instructions (AGENTS.md)\n\n{}\n\n", cap_text(&text, AGENTS_MD_MAX));
    }
    if tools {
        out.push_str(TOOLS_PROTOCOL);
    } else {
        // One line per action: leave out the denied ones.
        let denied = |line: &str| persona.deny.iter().any(|a| line.contains(&format!("\"action\":\"{a}\"")));
        for line in PROTOCOL.lines().filter(|l| !denied(l)) {
            out.push_str(line);
            out.push('\n');
        }
    }
    if !persona.deny.is_empty() {
        let _ = write!(
            out,
            "\n\nThe {} persona may not use: {}; such a call is refused.",
            persona.name,
            persona.deny.join(", ")
        );
        if persona.denies("push") {
            out.push_str(" Nothing you change is landed: `done` ends the task without pushing.");
        }
    }
    out
}

pub(crate) fn task(task: &TaskMessage) -> String {
    let d = &task.task_data;
    let mut out = format!("Bead {} ({}, P{}): {}\n\n", task.bead_id, or(&d.bead_type, "task"), d.priority, d.title);
    if !d.description.trim().is_empty() {
        let _ = write!(out, "{}\n\n", d.description.trim());
    }
    let shown = |(k, _): &(&String, &String)| k.as_str() != ANSWERS && k.as_str() != "token_budget_remaining";
    list(&mut out, "Context", d.context.iter().filter(shown));
    if let Some(answers) = d.context.get(ANSWERS).filter(|a| !a.trim().is_empty()) {
        let _ = write!(
            out,
            "A person answered your earlier escalation of this bead; go on with the task using the answer (do \
             not escalate the same question again):\n{}\n\n",
            answers.trim()
        );
    }
    let commands: Vec<(&str, &str)> =
        PROJECT_COMMANDS.iter().filter_map(|(key, _)| Some((*key, d.project_command(key)?))).collect();
    list(&mut out, "Project commands", commands.into_iter());
    let notes = d.project_context.iter().filter(|(k, _)| !PROJECT_COMMANDS.iter().any(|(c, _)| c == k));
    list(&mut out, "Project notes", notes);
    out.push_str("Begin with your first action.");
    out
}

/// A titled list of `- key: value` lines, left out when empty.
fn list<K: std::fmt::Display, V: std::fmt::Display>(
    out: &mut String,
    title: &str,
    items: impl Iterator<Item = (K, V)>,
) {
    let mut items = items.peekable();
    if items.peek().is_none() {
        return;
    }
    let _ = writeln!(out, "{title}:");
    for (k, v) in items {
        let _ = writeln!(out, "- {k}: {v}");
    }
    out.push('\n');
}

fn or<'a>(s: &'a str, default: &'a str) -> &'a str {
    if s.is_empty() { default } else { s }
}
