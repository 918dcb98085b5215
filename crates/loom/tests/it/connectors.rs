//! `loom up` with an LLM provider registered as a connector: an `llm` bead runs against the
//! scripted OpenAI-compatible server the connector names (the `[llm]` endpoint is a dead one),
//! and a key rotated with `loom connector update` is used from the next task on, without a
//! restart; no key is ever shown.

use serde_json::{Value, json};

use crate::llm::{ChatServer, Reply};
use crate::support::{Up, bare_repo, show};

const FIRST: &str = "sk-connector-first-0123456789";
const SECOND: &str = "sk-connector-second-0123456789";

fn one_task(file: &str) -> Vec<Reply> {
    vec![
        Reply::Say(json!({"action": "write_file", "path": file, "content": "hi\n"})),
        Reply::Say(json!({"action": "git_commit", "message": format!("add {file}")})),
        Reply::Say(json!({"action": "done", "summary": format!("added {file}")})),
    ]
}

#[test]
fn llm_beads_resolve_their_endpoint_by_connector_and_follow_a_key_rotation() {
    let mut replies = one_task("one.txt");
    replies.extend(one_task("two.txt"));
    let server = ChatServer::start(replies);
    let tmp = tempfile::tempdir().unwrap();
    let origin = bare_repo(tmp.path());
    let toml = "[llm]\nbase_url = \"http://127.0.0.1:9/v1\"\nmodel = \"not-this-one\"\n\n\
                [connectors]\nllm_provider = \"scripted\"\n";
    std::fs::write(tmp.path().join("loom.toml"), toml).unwrap();
    let (first, second) = (tmp.path().join("first.key"), tmp.path().join("second.key"));
    std::fs::write(&first, format!("{FIRST}\n")).unwrap();
    std::fs::write(&second, SECOND).unwrap();
    let up = Up::start(tmp.path(), &[]);
    assert!(up.output.text().contains("loom: connectors in process"), "{}", up.output.text());

    let added = up.loom(&[
        "connector",
        "add",
        "scripted",
        "--kind",
        "llm_provider",
        "--url",
        &format!("{}/v1", server.url),
        "--setting",
        "default_model=scripted-model",
        "--secret-file",
        &format!("api_key={}", first.display()),
        "--json",
    ]);
    let added: Value = serde_json::from_str(&added).unwrap();
    assert_eq!(added["secrets"], json!({ "api_key": "****" }), "{added}");
    up.loom(&["project", "add", "demo", "--repo", origin.to_str().unwrap()]);
    let bead = up.loom(&["bead", "create", "--project", "demo", "--title", "one", "--context", "executor=llm"]);
    let shown = up.wait_status(bead.trim(), "closed");
    assert_eq!(shown["close_reason"], "completed", "{shown}");
    assert_eq!(show(&origin, "one.txt"), "hi\n");
    let after_first = server.requests().len();
    assert_eq!(after_first, 3);

    // Rotate the key: the next task uses the new one, with no restart.
    up.loom(&["connector", "update", "scripted", "--secret-file", &format!("api_key={}", second.display())]);
    let bead = up.loom(&["bead", "create", "--project", "demo", "--title", "two", "--context", "executor=llm"]);
    let shown = up.wait_status(bead.trim(), "closed");
    assert_eq!(shown["close_reason"], "completed", "{shown}");
    let requests = server.requests();
    assert_eq!(requests.len(), 6);
    for (i, (authorization, body)) in requests.iter().enumerate() {
        let key = if i < after_first { FIRST } else { SECOND };
        assert_eq!(authorization.as_deref(), Some(format!("Bearer {key}").as_str()), "request {i}");
        assert_eq!(body["model"], "scripted-model", "the connector's default model");
        assert!(!body.to_string().contains(FIRST) && !body.to_string().contains(SECOND));
    }
    let listed = up.loom(&["connector", "list", "--json"]) + &up.loom(&["connector", "show", "scripted"]);
    for text in [listed, up.output.text()] {
        assert!(!text.contains(FIRST) && !text.contains(SECOND), "a key leaked: {text}");
    }
}
