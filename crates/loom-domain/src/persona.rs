//! Personas: `personas/<name>/SKILL.md`, a front matter block and a markdown body that goes into
//! an agent's system prompt.
//!
//! The front matter is the flat subset of YAML that persona files use: `key: value` lines, with
//! `[a, b]` inline lists; quotes around a value are removed. Anything else is an error naming the
//! line, so a typo is never silently ignored.

use std::collections::BTreeMap;

use crate::Error;

/// A validated persona.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Persona {
    /// The directory name; equals the `name` key.
    pub name: String,
    pub description: String,
    /// Capabilities it is expected to use (`code`, `review`, `test`, …).
    pub capabilities: Vec<String>,
    /// Optional model override for the LLM executor.
    pub model: Option<String>,
    /// Optional LLM provider connector (`llm_provider: ID`) the LLM executor resolves for this
    /// persona's beads, before the project's and the agent's.
    pub llm_provider: Option<String>,
    /// The markdown body: the system prompt.
    pub instructions: String,
    /// Actions it may not take (`deny: [git_commit, push]`): not offered to the model, refused
    /// if called anyway; `push` means the agent does not land the bead's work.
    pub deny: Vec<String>,
}

const KNOWN_KEYS: &[&str] = &["name", "description", "capabilities", "model", "deny", "llm_provider"];

/// The actions a persona can deny: the LLM executor's actions and `push` (landing the work).
/// `done`, `fail` and `escalate` end a task and cannot be denied.
pub const PERSONA_ACTIONS: &[&str] = &[
    "read_file",
    "write_file",
    "edit_file",
    "list_files",
    "search_text",
    "run_command",
    "build",
    "test",
    "git_status",
    "git_diff",
    "git_commit",
    "create_bead",
    "push",
];

impl Persona {
    /// Parses the text of `personas/<dir_name>/SKILL.md`.
    pub fn parse(dir_name: &str, text: &str) -> Result<Self, Error> {
        let bad = |reason: String| Error::invalid("persona", format!("{dir_name}/SKILL.md: {reason}"));
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let rest = text
            .strip_prefix("---\n")
            .or_else(|| text.strip_prefix("---\r\n"))
            .ok_or_else(|| bad("must start with a '---' front matter line".into()))?;
        let (front, body) =
            split_front_matter(rest).ok_or_else(|| bad("front matter is not closed by a '---' line".into()))?;
        let fields = parse_front_matter(front).map_err(bad)?;
        let name = fields.get("name").and_then(|v| v.first()).cloned().unwrap_or_default();
        if name != dir_name {
            return Err(bad(format!("name {name:?} must equal the directory name")));
        }
        let description = fields.get("description").and_then(|v| v.first()).cloned().unwrap_or_default();
        if description.trim().is_empty() {
            return Err(bad("description is required".into()));
        }
        let instructions = body.trim().to_owned();
        if instructions.is_empty() {
            return Err(bad("the body (the persona's instructions) is empty".into()));
        }
        let deny = fields.get("deny").cloned().unwrap_or_default();
        if let Some(unknown) = deny.iter().find(|a| !PERSONA_ACTIONS.contains(&a.as_str())) {
            return Err(bad(format!(
                "deny: unknown action {unknown:?} (known: {}; done, fail and escalate cannot be denied)",
                PERSONA_ACTIONS.join(", ")
            )));
        }
        Ok(Persona {
            name,
            description,
            capabilities: fields.get("capabilities").cloned().unwrap_or_default(),
            model: fields.get("model").and_then(|v| v.first()).cloned(),
            llm_provider: fields.get("llm_provider").and_then(|v| v.first()).cloned().filter(|p| !p.is_empty()),
            instructions,
            deny,
        })
    }

    /// Whether the persona may not take `action` (an action name or `push`).
    pub fn denies(&self, action: &str) -> bool {
        self.deny.iter().any(|a| a == action)
    }
}

fn split_front_matter(rest: &str) -> Option<(&str, &str)> {
    let mut offset = 0;
    for line in rest.split_inclusive('\n') {
        if line.trim_end() == "---" {
            return Some((&rest[..offset], &rest[offset + line.len()..]));
        }
        offset += line.len();
    }
    None
}

fn parse_front_matter(front: &str) -> Result<BTreeMap<String, Vec<String>>, String> {
    let mut fields = BTreeMap::new();
    for (n, line) in front.lines().enumerate() {
        let line = line.trim_end();
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let (key, value) =
            line.split_once(':').ok_or_else(|| format!("front matter line {}: expected `key: value`", n + 2))?;
        let key = key.trim();
        if !KNOWN_KEYS.contains(&key) {
            return Err(format!("front matter line {}: unknown key {key:?} (known: {})", n + 2, KNOWN_KEYS.join(", ")));
        }
        let value = value.trim();
        let values = match value.strip_prefix('[').and_then(|v| v.strip_suffix(']')) {
            Some(list) => list.split(',').map(unquote).filter(|s| !s.is_empty()).collect(),
            None => vec![unquote(value)],
        };
        if fields.insert(key.to_owned(), values).is_some() {
            return Err(format!("front matter line {}: {key:?} given twice", n + 2));
        }
    }
    Ok(fields)
}

fn unquote(s: &str) -> String {
    let s = s.trim();
    let quoted =
        s.len() >= 2 && ((s.starts_with('"') && s.ends_with('"')) || (s.starts_with('\'') && s.ends_with('\'')));
    if quoted { s[1..s.len() - 1].to_owned() } else { s.to_owned() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_persona() {
        let text = "---\nname: engineer\ndescription: \"Writes code\"\ncapabilities: [code, test]\n---\n\n# Engineer\nDo the work.\n";
        let p = Persona::parse("engineer", text).unwrap();
        assert_eq!(p.description, "Writes code");
        assert_eq!(p.capabilities, ["code", "test"]);
        assert_eq!(p.instructions, "# Engineer\nDo the work.");
        assert_eq!(p.model, None);
        assert!(p.deny.is_empty() && !p.denies("push"));
        let text = "---\nname: r\ndescription: d\ndeny: [git_commit, push]\n---\nReview.";
        let p = Persona::parse("r", text).unwrap();
        assert!(p.denies("push") && p.denies("git_commit") && !p.denies("read_file"));
        assert_eq!(p.llm_provider, None);
        let p = Persona::parse("r", "---\nname: r\ndescription: d\nllm_provider: big-llm\n---\nReview.").unwrap();
        assert_eq!(p.llm_provider.as_deref(), Some("big-llm"));
    }

    #[test]
    fn rejects_bad_files_with_the_reason() {
        let cases = [
            ("no front matter", "# Engineer"),
            ("not closed", "---\nname: e\n"),
            ("must equal the directory name", "---\nname: other\ndescription: d\n---\nbody"),
            ("unknown key \"colour\"", "---\nname: e\ndescription: d\ncolour: red\n---\nbody"),
            ("description is required", "---\nname: e\n---\nbody"),
            ("body", "---\nname: e\ndescription: d\n---\n  \n"),
            ("deny: unknown action \"git_pus\"", "---\nname: e\ndescription: d\ndeny: [push, git_pus]\n---\nbody"),
            ("deny: unknown action \"done\"", "---\nname: e\ndescription: d\ndeny: [done]\n---\nbody"),
        ];
        for (want, text) in cases {
            let err = Persona::parse("e", text).unwrap_err().to_string();
            let want = if want == "no front matter" {
                "must start with"
            } else if want == "not closed" {
                "not closed"
            } else {
                want
            };
            assert!(err.contains(want), "{err}");
        }
    }
}
