//! The prompts: the persona's body, the project's `AGENTS.md` and the action protocol in the
//! system prompt; the bead in the first user message. Nothing from the agent's configuration
//! beyond the persona reaches them (no keys, no environment).

use std::fmt::Write as _;

use loom_bus::{PROJECT_COMMANDS, TaskMessage};
use loom_domain::Persona;

use super::protocol::{PROTOCOL, TOOLS_PROTOCOL};
use crate::sandbox::Sandbox;
use crate::sandbox::command::cap_text;
use crate::{AgentConfig, Error};

const AGENTS_MD_MAX: usize = 32 * 1024;

const DEFAULT_PERSONA: &str = "You are a careful software engineer. Make the smallest change that \
fully does the work, keep the build and tests green, and explain your commits.";

/// The persona's instructions: `personas/<role or engineer>/SKILL.md`.
pub(crate) fn persona(config: &AgentConfig) -> Result<String, Error> {
    let Some(dir) = &config.personas_dir else {
        return Ok(DEFAULT_PERSONA.to_owned());
    };
    let name = config.role.as_ref().map_or("engineer", |r| r.as_str());
    let path = dir.join(name).join("SKILL.md");
    let text =
        std::fs::read_to_string(&path).map_err(|e| Error::Persona { path: path.clone(), reason: e.to_string() })?;
    let persona = Persona::parse(name, &text).map_err(|e| Error::Persona { path, reason: e.to_string() })?;
    Ok(persona.instructions)
}

/// The system prompt; `tools`: the actions are native tools rather than JSON in the text.
pub(crate) fn system(persona: &str, sandbox: &Sandbox, tools: bool) -> String {
    let mut out = format!("{persona}\n\n");
    // AGENTS.md is read through the sandbox: a symlink out of the worktree is not followed.
    if let Ok(path) = sandbox.resolve("AGENTS.md")
        && let Ok(text) = std::fs::read_to_string(path)
    {
        let _ = write!(out, "# Project instructions (AGENTS.md)\n\n{}\n\n", cap_text(&text, AGENTS_MD_MAX));
    }
    out.push_str(if tools { TOOLS_PROTOCOL } else { PROTOCOL });
    out
}

pub(crate) fn task(task: &TaskMessage) -> String {
    let d = &task.task_data;
    let mut out = format!("Bead {} ({}, P{}): {}\n\n", task.bead_id, or(&d.bead_type, "task"), d.priority, d.title);
    if !d.description.trim().is_empty() {
        let _ = write!(out, "{}\n\n", d.description.trim());
    }
    list(&mut out, "Context", d.context.iter());
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
