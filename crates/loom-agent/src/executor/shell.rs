//! The shell executor: the bead's `command` (or the project's `build` then `test`) with `sh -c`
//! in the worktree, sandboxed. Exit 0 is success. The command sees `LOOM_PROJECT_ID`,
//! `LOOM_BEAD_ID`, `LOOM_DISPATCH_ID` and `LOOM_ATTEMPT` (to key an external side effect by
//! dispatch, as the fault suite does).

use loom_bus::TaskMessage;
use loom_domain::ContextMap;

use super::Outcome;
use crate::sandbox::run_command_with;
use crate::workspace::Worktree;
use crate::{AgentConfig, Error};

/// The command a shell task runs: `command`, else `build` and `test` chained with `&&`.
pub(crate) fn shell_command(context: &ContextMap) -> Option<String> {
    if let Some(cmd) = context.get("command").filter(|c| !c.trim().is_empty()) {
        return Some(cmd.clone());
    }
    let steps: Vec<&str> =
        ["build", "test"].iter().filter_map(|k| context.get(*k)).map(|s| s.trim()).filter(|s| !s.is_empty()).collect();
    (!steps.is_empty()).then(|| steps.join(" && "))
}

pub(crate) async fn run(config: &AgentConfig, task: &TaskMessage, wt: &Worktree) -> Result<Outcome, Error> {
    let Some(command) = shell_command(&task.task_data.context) else {
        return Ok(Outcome::failure(
            "shell task has no command: set the bead's context key `command` (or `build`/`test`)",
        ));
    };
    let attempt = task.metadata.attempt.to_string();
    let env = [
        ("LOOM_PROJECT_ID", task.project_id.as_str()),
        ("LOOM_BEAD_ID", task.bead_id.as_str()),
        ("LOOM_DISPATCH_ID", task.metadata.dispatch_id.as_str()),
        ("LOOM_ATTEMPT", attempt.as_str()),
    ];
    let out = run_command_with(&wt.path, &command, &config.command, &env).await?;
    let mut outcome = if out.success() {
        Outcome::success(out.output.clone())
    } else {
        let mut o = Outcome::failure(format!("command failed ({}): {command}", out.status_line()));
        o.output = out.output.clone();
        o
    };
    outcome.context.insert("command_status".into(), out.status_line());
    outcome.context.insert("command_ms".into(), out.duration.as_millis().to_string());
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_command_then_build_and_test() {
        let mut c = ContextMap::new();
        assert_eq!(shell_command(&c), None);
        c.insert("test".into(), "cargo test".into());
        c.insert("build".into(), "cargo build".into());
        assert_eq!(shell_command(&c).unwrap(), "cargo build && cargo test");
        c.insert("command".into(), "make".into());
        assert_eq!(shell_command(&c).unwrap(), "make");
    }
}
