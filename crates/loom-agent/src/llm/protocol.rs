//! The action protocols. Text: one JSON object per model reply, found leniently (code fences
//! and leading prose are skipped; the first object that parses is taken). Native: the same
//! actions as OpenAI `tools` (a JSON Schema per action), a `tool_calls` entry decoded from its
//! name and `arguments`. Both are validated alike.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// Largest `write_file` content or `edit_file` text accepted.
const CONTENT_MAX: usize = 1024 * 1024;
/// Longest reply searched for an action.
const REPLY_MAX: usize = 512 * 1024;

/// One step the model asks the agent to take.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub(crate) enum Action {
    ReadFile {
        path: String,
    },
    WriteFile {
        path: String,
        content: String,
    },
    EditFile {
        path: String,
        #[serde(alias = "old_text", alias = "search")]
        old: String,
        #[serde(alias = "new_text", alias = "replace")]
        new: String,
    },
    ListFiles {
        #[serde(default)]
        path: Option<String>,
    },
    SearchText {
        #[serde(alias = "pattern", alias = "text")]
        query: String,
        #[serde(default)]
        path: Option<String>,
    },
    RunCommand {
        command: String,
    },
    Build,
    Test,
    GitStatus,
    GitDiff,
    GitCommit {
        message: String,
    },
    CreateBead {
        title: String,
        #[serde(default)]
        description: String,
        #[serde(default)]
        priority: Option<u8>,
        #[serde(default, rename = "type")]
        bead_type: Option<String>,
    },
    Done {
        #[serde(default, alias = "message")]
        summary: String,
    },
    Fail {
        #[serde(default, alias = "message")]
        reason: String,
    },
    Escalate {
        #[serde(default, alias = "message")]
        reason: String,
    },
}

impl Action {
    /// The action's name as the protocol spells it.
    pub(crate) fn name(&self) -> String {
        serde_json::to_value(self).ok().and_then(|v| v["action"].as_str().map(str::to_owned)).unwrap_or_default()
    }

    fn validate(&self) -> Result<(), String> {
        let need = |field: &str, value: &str| {
            if value.trim().is_empty() { Err(format!("`{field}` must not be empty")) } else { Ok(()) }
        };
        match self {
            Action::ReadFile { path } => need("path", path),
            Action::WriteFile { path, content } => {
                need("path", path)?;
                size("content", content)
            }
            Action::EditFile { path, old, new } => {
                need("path", path)?;
                need("old", old)?;
                size("old", old)?;
                size("new", new)
            }
            Action::SearchText { query, .. } => need("query", query),
            Action::RunCommand { command } => need("command", command),
            Action::GitCommit { message } => need("message", message),
            Action::CreateBead { title, priority, .. } => {
                need("title", title)?;
                match priority {
                    Some(p) if *p > 3 => Err("`priority` must be 0-3".into()),
                    _ => Ok(()),
                }
            }
            _ => Ok(()),
        }
    }
}

fn size(field: &str, text: &str) -> Result<(), String> {
    if text.len() > CONTENT_MAX { Err(format!("`{field}` is larger than {CONTENT_MAX} bytes")) } else { Ok(()) }
}

/// Finds, decodes and validates the action in a model reply, or says why there is none.
pub(crate) fn parse_action(reply: &str) -> Result<Action, String> {
    let reply = if reply.len() > REPLY_MAX { &reply[..reply.floor_char_boundary(REPLY_MAX)] } else { reply };
    let object = first_object(reply).ok_or("no JSON object found in the reply")?;
    let action: Action = serde_json::from_value(normalise(object)?).map_err(|e| format!("invalid action: {e}"))?;
    action.validate()?;
    Ok(action)
}

/// Decodes and validates one native call: the function's name and its `arguments` text.
pub(crate) fn parse_call(name: &str, arguments: &str) -> Result<Action, String> {
    let arguments = if arguments.trim().is_empty() { "{}" } else { arguments };
    let args: Value =
        serde_json::from_str(arguments).map_err(|e| format!("the arguments of {name} are not JSON: {e}"))?;
    let Value::Object(mut object) = args else {
        return Err(format!("the arguments of {name} are not a JSON object"));
    };
    object.insert("action".into(), Value::String(name.to_owned()));
    let action: Action = serde_json::from_value(normalise(object)?).map_err(|e| format!("invalid action: {e}"))?;
    action.validate()?;
    Ok(action)
}

/// The actions as OpenAI `tools` but the `denied` ones: one function each, its parameters a
/// JSON Schema.
pub(crate) fn tools(denied: &[String]) -> Value {
    let string = |d: &str| json!({ "type": "string", "description": d });
    let path = string("path relative to the repository root");
    let none = json!({});
    let defs: [(&str, &str, Value, &[&str]); 15] = [
        ("read_file", "Read a text file.", json!({ "path": path }), &["path"]),
        (
            "write_file",
            "Create or overwrite a file with this content.",
            json!({ "path": path, "content": string("the whole new content") }),
            &["path", "content"],
        ),
        (
            "edit_file",
            "Replace text that occurs exactly once in a file.",
            json!({ "path": path, "old": string("exact text to replace (must occur once)"),
                    "new": string("replacement") }),
            &["path", "old", "new"],
        ),
        ("list_files", "List the files under a directory (default: the root).", json!({ "path": path }), &[]),
        (
            "search_text",
            "Find lines containing a text.",
            json!({ "query": string("text to find"), "path": string("directory or file to search (default: the root)") }),
            &["query"],
        ),
        (
            "run_command",
            "Run a shell command in the repository (sandboxed).",
            json!({ "command": string("the shell command") }),
            &["command"],
        ),
        ("build", "Run the project's build command.", none.clone(), &[]),
        ("test", "Run the project's test command.", none.clone(), &[]),
        ("git_status", "Show `git status`.", none.clone(), &[]),
        ("git_diff", "Show the uncommitted changes.", none.clone(), &[]),
        ("git_commit", "Commit all changes.", json!({ "message": string("what and why") }), &["message"]),
        (
            "create_bead",
            "Record a follow-up task for later.",
            json!({ "title": string("title"), "description": string("what to do"),
                    "priority": { "type": "integer", "minimum": 0, "maximum": 3 },
                    "type": string("task, bug, feature, …") }),
            &["title"],
        ),
        (
            "done",
            "Finish: the work is complete; lands the commits.",
            json!({ "summary": string("what was done") }),
            &["summary"],
        ),
        ("fail", "Give up: the work cannot be done.", json!({ "reason": string("why") }), &["reason"]),
        (
            "escalate",
            "Stop and ask a human to decide.",
            json!({ "reason": string("what must be decided") }),
            &["reason"],
        ),
    ];
    let tools: Vec<Value> = defs
        .into_iter()
        .filter(|(name, ..)| !denied.iter().any(|d| d == name))
        .map(|(name, description, properties, required)| {
            json!({ "type": "function", "function": { "name": name, "description": description,
                "parameters": { "type": "object", "properties": properties, "required": required,
                                "additionalProperties": false } } })
        })
        .collect();
    Value::Array(tools)
}

fn first_object(text: &str) -> Option<Map<String, Value>> {
    text.match_indices('{').find_map(|(at, _)| {
        let mut values = serde_json::Deserializer::from_str(&text[at..]).into_iter::<Value>();
        match values.next() {
            Some(Ok(Value::Object(map))) => Some(map),
            _ => None,
        }
    })
}

/// Accepts `{"action": …, "args": {…}}` and `{"tool"|"name"|"type": …}` besides the flat form.
fn normalise(mut object: Map<String, Value>) -> Result<Value, String> {
    let name = ["action", "tool", "name", "type"]
        .iter()
        .find_map(|k| object.get(*k).and_then(Value::as_str).map(|s| (*k, s.to_owned())));
    let Some((key, name)) = name else {
        return Err("the JSON object has no \"action\" field".into());
    };
    object.remove(key);
    for nested in ["args", "arguments", "parameters", "params", "input"] {
        if let Some(Value::Object(args)) = object.remove(nested) {
            object.extend(args);
        }
    }
    object.insert("action".into(), Value::String(name.trim().to_ascii_lowercase()));
    Ok(Value::Object(object))
}

/// The protocol as the system prompt states it.
pub(crate) const PROTOCOL: &str = r#"# Action protocol

Reply with exactly ONE JSON object per message: the next action. The agent performs it and
answers with its result. Paths are relative to the repository root; `..`, absolute paths and
`.git` are refused. Actions:

{"action":"read_file","path":"src/lib.rs"}
{"action":"write_file","path":"src/new.rs","content":"..."}
{"action":"edit_file","path":"src/lib.rs","old":"exact text (must occur once)","new":"replacement"}
{"action":"list_files","path":"src"}
{"action":"search_text","query":"fn main","path":"src"}
{"action":"run_command","command":"ls -la"}
{"action":"build"}
{"action":"test"}
{"action":"git_status"}
{"action":"git_diff"}
{"action":"git_commit","message":"what and why"}
{"action":"create_bead","title":"follow-up work","description":"...","priority":2,"type":"task"}
{"action":"done","summary":"what was done"}
{"action":"fail","reason":"why it cannot be done"}
{"action":"escalate","reason":"what a human must decide"}

Work in small steps. Commit when the change is complete; `done` lands your commits."#;

/// The instructions when the actions are native tools.
pub(crate) const TOOLS_PROTOCOL: &str = r#"# Tools

Do the work by calling the tools; one reply may call several, performed in order, each
answered with its result. Paths are relative to the repository root; `..`, absolute paths and
`.git` are refused. Work in small steps. Commit (`git_commit`) when the change is complete;
`done` lands your commits, `fail` gives up, `escalate` asks a human."#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_fenced_and_prose_wrapped_actions() {
        let want = Action::ReadFile { path: "a.rs".into() };
        assert_eq!(parse_action(r#"{"action":"read_file","path":"a.rs"}"#).unwrap(), want);
        assert_eq!(parse_action("```json\n{\"action\": \"read_file\", \"path\": \"a.rs\"}\n```").unwrap(), want);
        let prose = "Let me look at {the file} first.\n{\"action\":\"read_file\",\"path\":\"a.rs\"} and then more";
        assert_eq!(parse_action(prose).unwrap(), want);
        let nested = r#"{"tool":"Read_File","args":{"path":"a.rs"}}"#;
        assert_eq!(parse_action(nested).unwrap(), want);
        assert_eq!(parse_action(r#"{"action":"build"}"#).unwrap(), Action::Build);
        let edit = r#"{"action":"edit_file","path":"x","old_text":"a","new_text":"b"}"#;
        assert_eq!(
            parse_action(edit).unwrap(),
            Action::EditFile { path: "x".into(), old: "a".into(), new: "b".into() }
        );
    }

    #[test]
    fn explains_what_is_wrong() {
        assert!(parse_action("I will now edit the file.").unwrap_err().contains("no JSON object"));
        assert!(parse_action(r#"{"path":"a"}"#).unwrap_err().contains("no \"action\""));
        assert!(parse_action(r#"{"action":"explode"}"#).unwrap_err().contains("unknown variant"));
        assert!(parse_action(r#"{"action":"read_file"}"#).unwrap_err().contains("path"));
        assert!(parse_action(r#"{"action":"run_command","command":"  "}"#).unwrap_err().contains("empty"));
        assert!(parse_action(r#"{"action":"create_bead","title":"t","priority":9}"#).unwrap_err().contains("0-3"));
    }

    #[test]
    fn native_calls_decode_and_every_action_has_a_tool() {
        assert_eq!(parse_call("read_file", r#"{"path":"a.rs"}"#).unwrap(), Action::ReadFile { path: "a.rs".into() });
        assert_eq!(parse_call("build", "").unwrap(), Action::Build);
        assert!(parse_call("read_file", "{\"path\":").unwrap_err().contains("not JSON"));
        assert!(parse_call("read_file", "[]").unwrap_err().contains("not a JSON object"));
        assert!(parse_call("explode", "{}").unwrap_err().contains("unknown variant"));
        assert!(parse_call("run_command", r#"{"command":" "}"#).unwrap_err().contains("empty"));
        let tools = tools(&[]);
        let names: Vec<&str> =
            tools.as_array().unwrap().iter().map(|t| t["function"]["name"].as_str().unwrap()).collect();
        for name in loom_domain::PERSONA_ACTIONS.iter().filter(|a| **a != "push") {
            assert!(names.contains(name), "a persona may deny {name}, which must be a tool");
        }
        for name in names.iter().filter(|n| !["done", "fail", "escalate"].contains(n)) {
            assert!(loom_domain::PERSONA_ACTIONS.contains(name), "a persona must be able to deny {name}");
        }
        let denied = super::tools(&["git_commit".to_owned(), "push".to_owned()]);
        assert_eq!(denied.as_array().unwrap().len(), 14);
        assert!(!denied.to_string().contains("git_commit"));
        for tool in tools.as_array().unwrap() {
            let f = &tool["function"];
            let name = f["name"].as_str().unwrap();
            let mut args = serde_json::Map::new();
            for field in f["parameters"]["required"].as_array().unwrap() {
                args.insert(field.as_str().unwrap().into(), "x".into());
            }
            let action = parse_call(name, &Value::Object(args).to_string()).unwrap();
            assert_eq!(action.name(), name, "the schema's required fields make a valid {name}");
        }
        assert_eq!(tools.as_array().unwrap().len(), 15);
    }

    #[test]
    fn names_round_trip() {
        assert_eq!(Action::GitDiff.name(), "git_diff");
        assert_eq!(Action::Done { summary: String::new() }.name(), "done");
    }
}
