//! The actions sandbox: every path a file action names is confined to the worktree, and every
//! command runs in a bubblewrap sandbox with a scrubbed environment, a timeout that kills all it
//! started, resource limits and an output cap (`command`).
//!
//! A path is refused when it is empty, absolute, contains `..` or a NUL, names anything under a
//! `.git` directory or file, or resolves (through symlinks, canonicalised) outside the worktree
//! or into its `.git`. Checks run on the canonical path of the deepest existing ancestor, so a
//! symlinked directory cannot smuggle a write out either.

pub(crate) mod command;
mod isolation;

use std::path::{Component, Path, PathBuf};

pub use command::{CommandOutput, run_command};
pub use isolation::{Isolation, probe};

use crate::Error;

/// A worktree that file actions may touch.
#[derive(Clone, Debug)]
pub struct Sandbox {
    root: PathBuf,
}

impl Sandbox {
    /// Confines actions to `root`, which must exist.
    pub fn new(root: &Path) -> Result<Sandbox, Error> {
        let root = root.canonicalize().map_err(|e| Error::io(format!("worktree {}", root.display()), e))?;
        Ok(Sandbox { root })
    }

    /// The canonical worktree directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The absolute path of `rel` inside the worktree, or why it is refused. The target need
    /// not exist (writes create it).
    pub fn resolve(&self, rel: &str) -> Result<PathBuf, Error> {
        let rel_path = check_lexically(rel)?;
        let joined = self.root.join(rel_path);
        let (existing, rest) = deepest_existing(&joined);
        let canonical = existing.canonicalize().map_err(|e| {
            if existing.is_symlink() {
                Error::refused(rel, "it goes through a dangling symlink (pointing outside the workspace or nowhere)")
            } else {
                Error::io(format!("resolving {rel:?}"), e)
            }
        })?;
        let inside = canonical
            .strip_prefix(&self.root)
            .map_err(|_| Error::refused(rel, "it resolves outside the workspace (through a symlink)"))?;
        if names_git(inside) {
            return Err(Error::refused(rel, "it resolves into .git, which file actions may not touch"));
        }
        // `join("")` would append a slash, turning a file path into a directory path.
        Ok(if rest.as_os_str().is_empty() { canonical } else { canonical.join(rest) })
    }

    /// The path relative to the worktree, for reports.
    pub fn relative<'a>(&self, abs: &'a Path) -> &'a Path {
        abs.strip_prefix(&self.root).unwrap_or(abs)
    }
}

fn check_lexically(rel: &str) -> Result<&Path, Error> {
    if rel.trim().is_empty() {
        return Err(Error::refused(rel, "the path is empty"));
    }
    if rel.contains('\0') || rel.len() > 4096 {
        return Err(Error::refused(rel, "the path contains NUL or is too long"));
    }
    let path = Path::new(rel);
    for component in path.components() {
        match component {
            Component::RootDir | Component::Prefix(_) => {
                return Err(Error::refused(rel, "absolute paths are not allowed; use a path relative to the worktree"));
            }
            Component::ParentDir => return Err(Error::refused(rel, "`..` is not allowed")),
            Component::Normal(n) if n == ".git" => {
                return Err(Error::refused(rel, ".git internals are not accessible to file actions"));
            }
            Component::Normal(_) | Component::CurDir => {}
        }
    }
    Ok(path)
}

fn names_git(inside: &Path) -> bool {
    inside.components().any(|c| matches!(c, Component::Normal(n) if n == ".git"))
}

/// Splits `path` into its deepest ancestor that exists as a directory entry (a dangling
/// symlink counts, so it is judged by where it points) and the rest.
fn deepest_existing(path: &Path) -> (PathBuf, PathBuf) {
    let mut existing = path.to_path_buf();
    let mut rest = Vec::new();
    while std::fs::symlink_metadata(&existing).is_err() {
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_owned());
                existing = parent.to_path_buf();
            }
            _ => break,
        }
    }
    (existing, rest.into_iter().rev().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sandbox() -> (tempfile::TempDir, tempfile::TempDir, Sandbox) {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("src")).unwrap();
        std::fs::write(root.path().join("src/lib.rs"), "x").unwrap();
        std::fs::create_dir_all(root.path().join(".git")).unwrap();
        let sandbox = Sandbox::new(root.path()).unwrap();
        (root, outside, sandbox)
    }

    fn refused(sandbox: &Sandbox, rel: &str) -> String {
        match sandbox.resolve(rel) {
            Err(Error::PathRefused { reason, .. }) => reason,
            other => panic!("{rel:?} should be refused, got {other:?}"),
        }
    }

    #[test]
    fn resolves_paths_inside_including_new_ones() {
        let (_root, _out, sb) = sandbox();
        assert_eq!(sb.resolve("src/lib.rs").unwrap(), sb.root().join("src/lib.rs"));
        assert_eq!(std::fs::read_to_string(sb.resolve("src/lib.rs").unwrap()).unwrap(), "x");
        assert_eq!(sb.resolve("./new/dir/file.txt").unwrap(), sb.root().join("new/dir/file.txt"));
    }

    #[test]
    fn refuses_traversal_absolute_and_git() {
        let (_root, _out, sb) = sandbox();
        assert!(refused(&sb, "../x").contains(".."));
        assert!(refused(&sb, "src/../../x").contains(".."));
        assert!(refused(&sb, "/etc/passwd").contains("absolute"));
        assert!(refused(&sb, ".git/config").contains(".git"));
        assert!(refused(&sb, "sub/.git/hooks/pre-commit").contains(".git"));
        assert!(refused(&sb, "").contains("empty"));
    }

    #[test]
    fn refuses_symlinks_that_leave_the_worktree() {
        let (root, outside, sb) = sandbox();
        std::fs::write(outside.path().join("secret"), "s").unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("out")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), root.path().join("secret")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("missing"), root.path().join("dangling")).unwrap();
        std::os::unix::fs::symlink(root.path().join(".git"), root.path().join("g")).unwrap();
        assert!(refused(&sb, "out/new.txt").contains("outside"));
        assert!(refused(&sb, "secret").contains("outside"));
        assert!(refused(&sb, "dangling").contains("dangling"));
        assert!(refused(&sb, "dangling/x").contains("dangling"));
        assert!(refused(&sb, "g/config").contains(".git"));
        std::os::unix::fs::symlink(root.path().join("src"), root.path().join("inside")).unwrap();
        assert_eq!(sb.resolve("inside/lib.rs").unwrap(), sb.root().join("src/lib.rs"));
    }
}
