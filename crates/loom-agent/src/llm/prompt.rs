//! The prompts: the persona's body, the project's `AGENTS.md` and the action protocol in the
//! system prompt; the bead in the first user message. Nothing from the agent's configuration
//! beyond the persona reaches them (no keys, no environment).

use std::fmt::Write as _;

use loom_bus::TaskMessage;
use loom_domain::Persona;

use super::protocol::PROTOCOL;
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

pub(crate) fn system(persona: &str, sandbox: &Sandbox) -> String {
    let mut out = format!("{persona}\n\n");
    // AGENTS.md is read through the sandbox: a symlink out of the worktree is not followed.
    if let Ok(path) = sandbox.resolve("AGENTS.md")
        && let Ok(text) = std::fs::read_to_string(path)
    {
        let _ = write!(out, "# Project instructions (AGENTS.md)\n\n{}\n\n", cap_text(&text, AGENTS_MD_MAX));
    }
    out.push_str(PROTOCOL);
    out
}

pub(crate) fn task(task: &TaskMessage) -> String {
    let d = &task.task_data;
    let mut out = format!("Bead {} ({}, P{}): {}\n\n", task.bead_id, or(&d.bead_type, "task"), d.priority, d.title);
    if !d.description.trim().is_empty() {
        let _ = write!(out, "{}\n\n", d.description.trim());
    }
    if !d.context.is_empty() {
        out.push_str("Context:\n");
        for (k, v) in &d.context {
            let _ = writeln!(out, "- {k}: {v}");
        }
        out.push('\n');
    }
    out.push_str("Reply with your first action.");
    out
}

fn or<'a>(s: &'a str, default: &'a str) -> &'a str {
    if s.is_empty() { default } else { s }
}
