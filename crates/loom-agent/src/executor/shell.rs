//! The shell executor: the bead's `command` (or the `build` then `test` command, the bead's or
//! else the project's) with `sh -c` in the worktree, sandboxed and audited (`runner`). Exit 0
//! is success. The command
//! sees `LOOM_PROJECT_ID`, `LOOM_BEAD_ID`, `LOOM_DISPATCH_ID` and `LOOM_ATTEMPT` (to key an
//! external side effect by dispatch, as the fault suite does), and the project's commands as
//! `LOOM_BUILD`, `LOOM_TEST` and `LOOM_LINT` (those set).

use loom_bus::{TaskData, TaskMessage};

use super::Outcome;
use super::runner::Runner;
use crate::Error;

/// The command a shell task runs: `command`, else `build` and `test` chained with `&&`.
pub(crate) fn shell_command(task: &TaskData) -> Option<String> {
    if let Some(cmd) = task.context.get("command").filter(|c| !c.trim().is_empty()) {
        return Some(cmd.clone());
    }
    let steps: Vec<&str> = ["build", "test"].iter().filter_map(|k| task.project_command(k)).collect();
    (!steps.is_empty()).then(|| steps.join(" && "))
}

pub(crate) async fn run(runner: &Runner<'_>, task: &TaskMessage) -> Result<Outcome, Error> {
    let Some(command) = shell_command(&task.task_data) else {
        return Ok(Outcome::failure(
            "shell task has no command: set the bead's context key `command` (or `build`/`test`)",
        ));
    };
    let out = runner.run("shell", &command).await?;
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
        let mut t = TaskData::default();
        assert_eq!(shell_command(&t), None);
        t.project_context.insert("test".into(), "cargo test".into());
        t.project_context.insert("build".into(), "cargo build".into());
        assert_eq!(shell_command(&t).unwrap(), "cargo build && cargo test", "the project's commands");
        t.context.insert("build".into(), "make".into());
        assert_eq!(shell_command(&t).unwrap(), "make && cargo test", "the bead's own win");
        t.context.insert("command".into(), "make all".into());
        assert_eq!(shell_command(&t).unwrap(), "make all");
    }
}
