//! Finding the PostgreSQL programs and running them as a user they accept: initdb and postgres
//! refuse to run as root, so as root every PostgreSQL command goes through `runuser` (or `su`)
//! as the `postgres` user.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::process::{find_program, is_executable};
use crate::{Error, Result};

/// The system user PostgreSQL commands run as when this process is root.
pub(crate) const PG_USER: &str = "postgres";

/// How a PostgreSQL command is started.
#[derive(Debug, Clone)]
enum RunAs {
    /// Directly, as the current (non-root) user.
    Me,
    /// `runuser -u postgres -- PROGRAM ARGS…`.
    Runuser(PathBuf),
    /// `su -s /bin/sh -c 'PROGRAM ARGS…' postgres`, where there is no runuser.
    Su(PathBuf),
}

/// The PostgreSQL binaries directory and the way to run its programs.
#[derive(Debug, Clone)]
pub(crate) struct Tools {
    bindir: PathBuf,
    run_as: RunAs,
}

impl Tools {
    /// Finds the binaries (`$LOOM_PG_BINDIR`, else `pg_config --bindir`, else the highest
    /// `/usr/lib/postgresql/*/bin` with an `initdb`) and how to run them.
    pub(crate) async fn find() -> Result<Tools> {
        let bindir = bindir().await?;
        let run_as = if running_as_root().await { run_as_postgres()? } else { RunAs::Me };
        Ok(Tools { bindir, run_as })
    }

    /// Whether commands run as [`PG_USER`] because this process is root.
    pub(crate) fn as_root(&self) -> bool {
        !matches!(self.run_as, RunAs::Me)
    }

    /// The path of a PostgreSQL program, e.g. `pg_isready`.
    pub(crate) fn program(&self, name: &str) -> PathBuf {
        self.bindir.join(name)
    }

    /// A command running PostgreSQL program `name` with `args` in `cwd`, as a user it accepts.
    pub(crate) fn command(&self, cwd: &Path, name: &str, args: &[String]) -> Command {
        let program = self.program(name);
        let mut command = match &self.run_as {
            RunAs::Me => Command::new(&program),
            RunAs::Runuser(runuser) => {
                let mut command = Command::new(runuser);
                command.args(["-u", PG_USER, "--"]).arg(&program);
                command
            }
            RunAs::Su(su) => {
                let line = std::iter::once(program.display().to_string()).chain(args.iter().cloned());
                let line: Vec<String> = line.map(|arg| shell_quote(&arg)).collect();
                let mut command = Command::new(su);
                command.args(["-s", "/bin/sh", "-c", &line.join(" "), PG_USER]);
                return with_defaults(command, cwd);
            }
        };
        command.args(args);
        with_defaults(command, cwd)
    }
}

fn with_defaults(mut command: Command, cwd: &Path) -> Command {
    // The caller's directory (say /root) may be closed to the postgres user.
    command.current_dir(cwd).stdin(std::process::Stdio::null());
    command
}

async fn bindir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("LOOM_PG_BINDIR") {
        return overridden_bindir(dir);
    }
    if let Some(dir) = pg_config_bindir().await.filter(|dir| has_initdb(dir)) {
        return Ok(dir);
    }
    highest_versioned_bindir(Path::new("/usr/lib/postgresql")).ok_or_else(|| Error::MissingBinary {
        program: "initdb",
        hint: "install PostgreSQL with `apt-get install postgresql`, or set LOOM_PG_BINDIR to the directory holding initdb"
            .to_owned(),
    })
}

fn overridden_bindir(dir: OsString) -> Result<PathBuf> {
    let dir = PathBuf::from(dir);
    if has_initdb(&dir) {
        return Ok(dir);
    }
    let hint = format!("LOOM_PG_BINDIR={} holds no executable initdb", dir.display());
    Err(Error::MissingBinary { program: "initdb", hint })
}

async fn pg_config_bindir() -> Option<PathBuf> {
    let output = tokio::process::Command::new("pg_config").arg("--bindir").output().await.ok()?;
    let dir = String::from_utf8(output.stdout).ok()?;
    (output.status.success() && !dir.trim().is_empty()).then(|| PathBuf::from(dir.trim()))
}

fn has_initdb(dir: &Path) -> bool {
    is_executable(&dir.join("initdb"))
}

/// The `ROOT/VERSION/bin` with an initdb and the highest VERSION (`16` > `15` > `9.6`).
fn highest_versioned_bindir(root: &Path) -> Option<PathBuf> {
    std::fs::read_dir(root)
        .ok()?
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| Some((version_key(entry.file_name().to_str()?)?, entry.path().join("bin"))))
        .filter(|(_, bin)| has_initdb(bin))
        .max_by(|(left, _), (right, _)| left.cmp(right))
        .map(|(_, bin)| bin)
}

fn version_key(name: &str) -> Option<Vec<u32>> {
    name.split('.').map(|part| part.parse().ok()).collect()
}

async fn running_as_root() -> bool {
    let status = tokio::fs::read_to_string("/proc/self/status").await.ok();
    if let Some(uid) = status.as_deref().and_then(effective_uid) {
        return uid == 0;
    }
    let output = tokio::process::Command::new("id").arg("-u").output().await;
    output.is_ok_and(|output| String::from_utf8_lossy(&output.stdout).trim() == "0")
}

/// The effective uid from the `Uid:` line of `/proc/self/status` (real, effective, saved, fs).
fn effective_uid(status: &str) -> Option<u32> {
    let line = status.lines().find_map(|line| line.strip_prefix("Uid:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn run_as_postgres() -> Result<RunAs> {
    if let Some(runuser) = find_program("runuser", &["/usr/sbin/runuser", "/sbin/runuser"]) {
        return Ok(RunAs::Runuser(runuser));
    }
    if let Some(su) = find_program("su", &["/bin/su", "/usr/bin/su"]) {
        return Ok(RunAs::Su(su));
    }
    Err(Error::MissingBinary {
        program: "runuser",
        hint: "PostgreSQL refuses to run as root; install util-linux (runuser) or login (su)".to_owned(),
    })
}

/// `arg` as one single-quoted `sh` word.
fn shell_quote(arg: &str) -> String {
    format!("'{}'", arg.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn effective_uid_is_the_second_field() {
        let status = "Name:\tcargo\nUid:\t1000\t0\t0\t0\nGid:\t0\t0\t0\t0\n";
        assert_eq!(effective_uid(status), Some(0));
        assert_eq!(effective_uid("Name:\tx\n"), None);
    }

    #[test]
    fn shell_quote_survives_quotes() {
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn the_highest_version_with_initdb_wins() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        for (version, with_initdb) in [("9.6", true), ("15", true), ("16", false), ("notes", true)] {
            let bin = root.path().join(version).join("bin");
            std::fs::create_dir_all(&bin).unwrap();
            if with_initdb {
                std::fs::write(bin.join("initdb"), "#!/bin/sh\n").unwrap();
                std::fs::set_permissions(bin.join("initdb"), std::fs::Permissions::from_mode(0o755)).unwrap();
            }
        }
        assert_eq!(highest_versioned_bindir(root.path()), Some(root.path().join("15/bin")));
    }

    #[test]
    fn su_gets_one_quoted_command_line() {
        let tools = Tools { bindir: "/pg/bin".into(), run_as: RunAs::Su("/bin/su".into()) };
        let command = tools.command(Path::new("/tmp"), "pg_ctl", &["-o".to_owned(), "-p 1 -k /a'b".to_owned()]);
        let args: Vec<_> = command.get_args().map(|arg| arg.to_str().unwrap()).collect();
        assert_eq!(args, ["-s", "/bin/sh", "-c", r"'/pg/bin/pg_ctl' '-o' '-p 1 -k /a'\''b'", "postgres"]);
    }

    #[test]
    fn runuser_runs_the_program_as_postgres() {
        let tools = Tools { bindir: "/pg/bin".into(), run_as: RunAs::Runuser("/sbin/runuser".into()) };
        let command = tools.command(Path::new("/tmp"), "initdb", &["-D".to_owned(), "/d".to_owned()]);
        assert_eq!(command.get_program(), "/sbin/runuser");
        let args: Vec<_> = command.get_args().map(|arg| arg.to_str().unwrap()).collect();
        assert_eq!(args, ["-u", "postgres", "--", "/pg/bin/initdb", "-D", "/d"]);
        assert_eq!(command.get_current_dir(), Some(Path::new("/tmp")));
    }

    #[test]
    fn a_bad_override_names_the_variable() {
        let err = overridden_bindir("/no/such/bin".into()).unwrap_err();
        assert!(err.to_string().contains("LOOM_PG_BINDIR=/no/such/bin"), "{err}");
    }
}
