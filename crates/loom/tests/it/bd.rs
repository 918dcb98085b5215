//! `loom bead import` / `loom bead export` against `loom up` on the embedded default (SQLite):
//! a bd file with a bad line is imported but for that line (exit 1, the line named), a second
//! import skips everything, and the export gives the issues back.

use crate::support::{Up, bare_repo};

const FILE: &str = concat!(
    r#"{"id":"bd-1","title":"on a hook","status":"hooked","priority":4,"issue_type":"agent","owner":"ann","created_at":"2025-05-01T10:00:00.123456789Z","updated_at":"2025-05-01T11:00:00Z"}"#,
    "\n",
    "{\"id\":\"bd-x\",\"title\":\n",
    r#"{"id":"bd-2","title":"done","status":"closed","issue_type":"convoy","created_at":"2025-05-02T10:00:00Z","updated_at":"2025-05-02T11:00:00Z","closed_at":"2025-05-02T11:00:00Z","close_reason":"shipped","dependencies":[{"issue_id":"bd-2","depends_on_id":"bd-1","type":"blocks","created_at":"2025-05-02T10:00:00Z","created_by":"ann"},{"issue_id":"bd-2","depends_on_id":"bd-1","type":"tracks","created_at":"2025-05-02T10:00:00Z"}]}"#,
    "\n",
);

#[test]
fn bead_import_and_export_carry_a_bd_file_through_the_cli() {
    let tmp = tempfile::tempdir().unwrap();
    bare_repo(tmp.path());
    let up = Up::run(&format!("loom up --data-dir {}", tmp.path().join("data").display()), tmp.path(), &[]);
    let added = up.loom_in(tmp.path(), &["project", "add", "bd", "--repo", "origin.git"]);
    assert!(added.status.success(), "{}", String::from_utf8_lossy(&added.stderr));
    std::fs::write(tmp.path().join("issues.jsonl"), FILE).unwrap();

    let first = up.loom_in(tmp.path(), &["bead", "import", "--project", "bd", "issues.jsonl"]);
    let (stdout, stderr) = (String::from_utf8_lossy(&first.stdout), String::from_utf8_lossy(&first.stderr));
    assert!(!first.status.success(), "a line had an error: exit 1");
    assert!(stdout.contains("3 lines: 2 created, 0 updated, 0 skipped"), "{stdout}");
    assert!(stdout.contains("line 2: not a JSON issue object"), "{stdout}");
    assert!(stderr.contains("1 of 3 lines had errors"), "{stderr}");

    let good: String = FILE.lines().filter(|l| !l.starts_with("{\"id\":\"bd-x\"")).map(|l| format!("{l}\n")).collect();
    std::fs::write(tmp.path().join("good.jsonl"), &good).unwrap();
    let again = up.loom_in(tmp.path(), &["bead", "import", "--project", "bd", "good.jsonl", "--json"]);
    assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!((summary["created"].as_u64(), summary["skipped"].as_u64()), (Some(0), Some(2)), "{summary}");

    let exported = up.loom_in(tmp.path(), &["bead", "export", "--project", "bd", "--output", "out.jsonl"]);
    assert!(exported.status.success(), "{}", String::from_utf8_lossy(&exported.stderr));
    let parse =
        |text: &str| -> Vec<serde_json::Value> { text.lines().map(|l| serde_json::from_str(l).unwrap()).collect() };
    let out = std::fs::read_to_string(tmp.path().join("out.jsonl")).unwrap();
    assert_eq!(parse(&out), parse(&good), "the export is the file, field for field");
    assert_eq!(up.loom(&["bead", "export", "--project", "bd"]), out, "to standard output too");
}
