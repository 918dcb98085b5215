//! Relative paths are resolved once, against the directory `loom` was started in, and passed on
//! absolute: the agent runs git in several directories below its work root, so a path left
//! relative would name a different place to each command.

use std::path::{Path, PathBuf};

use anyhow::Context;

/// `path` made absolute against the current directory (`loom` never changes it), without
/// touching the file system.
pub fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    anyhow::ensure!(!path.as_os_str().is_empty(), "an empty path names no directory");
    std::path::absolute(path)
        .with_context(|| format!("cannot resolve {} against the current directory", path.display()))
}

/// A project repository as given on the command line: URLs, scp-like `host:path` and absolute
/// paths unchanged; a relative local path resolved against the current directory, where it must
/// exist.
pub fn repo(repo: &str) -> anyhow::Result<String> {
    if !loom_agent::is_relative_local_path(repo) {
        return Ok(repo.to_owned());
    }
    let resolved = absolute(Path::new(repo))?;
    let real = std::fs::canonicalize(&resolved).with_context(|| {
        format!(
            "repository {repo}: {} does not exist (a relative path is taken from the current directory)",
            resolved.display()
        )
    })?;
    real.into_os_string().into_string().map_err(|p| anyhow::anyhow!("repository path {p:?} is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's closure type, not ours
    fn relative_repositories_become_absolute_and_others_stay() {
        // In a jail: config tests change the current directory, and jails take turns.
        figment::Jail::expect_with(|_| {
            let here = std::env::current_dir().unwrap();
            assert_eq!(repo(".").unwrap(), std::fs::canonicalize(&here).unwrap().to_str().unwrap());
            for kept in ["https://example.com/r.git", "git@example.com:o/r.git", "/no/such/abs/path"] {
                assert_eq!(repo(kept).unwrap(), kept);
            }
            let err = format!("{:#}", repo("no-such-dir-4242").unwrap_err());
            assert!(err.contains("no-such-dir-4242 does not exist"), "{err}");
            assert!(err.contains(here.to_str().unwrap()), "the error says where it looked: {err}");
            assert_eq!(absolute(Path::new(".loom")).unwrap(), here.join(".loom"));
            assert!(absolute(Path::new("")).is_err());
            Ok(())
        });
    }
}
