//! The personas an agent can play: the repository's `personas/<name>/SKILL.md`, built into the
//! binary, each overridable by a file of the same name in a personas directory (a directory
//! persona wins; the others stay built in; a directory may add new ones). Every file is
//! validated when the set is loaded, so a broken one stops the agent at start-up, naming it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use loom_domain::Persona;

use crate::Error;

/// The default persona when neither the bead nor the agent names a role.
pub const DEFAULT_PERSONA: &str = "engineer";

/// The personas shipped inside the binary (`personas/` at the repository root).
const BUILTIN: &[(&str, &str)] = &[
    ("devops", include_str!("../../../personas/devops/SKILL.md")),
    ("docs", include_str!("../../../personas/docs/SKILL.md")),
    ("engineer", include_str!("../../../personas/engineer/SKILL.md")),
    ("project-manager", include_str!("../../../personas/project-manager/SKILL.md")),
    ("qa", include_str!("../../../personas/qa/SKILL.md")),
    ("reviewer", include_str!("../../../personas/reviewer/SKILL.md")),
];

/// Where a persona came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PersonaSource {
    Builtin,
    File(PathBuf),
}

/// A validated set of personas by name.
#[derive(Clone, Debug)]
pub struct Personas {
    by_name: BTreeMap<String, (Persona, PersonaSource)>,
}

impl Default for Personas {
    fn default() -> Self {
        Personas::builtin()
    }
}

impl Personas {
    /// The personas built into the binary.
    pub fn builtin() -> Personas {
        let by_name = BUILTIN
            .iter()
            .map(|(name, text)| {
                let persona = Persona::parse(name, text).expect("the built-in personas are valid (tested)");
                ((*name).to_owned(), (persona, PersonaSource::Builtin))
            })
            .collect();
        Personas { by_name }
    }

    /// The built-in personas, overridden (by name) and extended by `dir/<name>/SKILL.md`; a
    /// missing `dir` leaves the built-in ones. An unreadable or invalid file is an error naming it.
    pub fn load(dir: &Path) -> Result<Personas, Error> {
        let mut set = Personas::builtin();
        if !dir.exists() {
            return Ok(set);
        }
        let bad = |path: &Path, reason: String| Error::Persona { path: path.to_owned(), reason };
        let entries = std::fs::read_dir(dir).map_err(|e| bad(dir, format!("cannot read the directory: {e}")))?;
        for entry in entries {
            let entry = entry.map_err(|e| bad(dir, e.to_string()))?;
            if !entry.file_type().map_err(|e| bad(&entry.path(), e.to_string()))?.is_dir() {
                continue;
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            let file = entry.path().join("SKILL.md");
            let text = std::fs::read_to_string(&file).map_err(|e| bad(&file, e.to_string()))?;
            let persona = Persona::parse(&name, &text).map_err(|e| bad(&file, e.to_string()))?;
            set.by_name.insert(name, (persona, PersonaSource::File(file)));
        }
        Ok(set)
    }

    pub fn get(&self, name: &str) -> Option<&Persona> {
        self.by_name.get(name).map(|(p, _)| p)
    }

    /// Every persona with where it came from, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&Persona, &PersonaSource)> {
        self.by_name.values().map(|(p, s)| (p, s))
    }

    /// The persona called `name`, or an error listing the known ones.
    pub(crate) fn pick(&self, name: &str) -> Result<&Persona, Error> {
        self.get(name).ok_or_else(|| Error::Persona {
            path: PathBuf::from(name),
            reason: format!(
                "no persona named {name:?} (known: {})",
                self.by_name.keys().map(String::as_str).collect::<Vec<_>>().join(", ")
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_persona_of_the_repository_is_built_in_and_the_engineer_can_do_everything() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../personas");
        let mut on_disk: Vec<String> =
            std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        on_disk.sort();
        let builtin = Personas::builtin();
        let names: Vec<&str> = builtin.iter().map(|(p, _)| p.name.as_str()).collect();
        assert_eq!(names, on_disk, "add a new persona to BUILTIN");
        assert!(builtin.get(DEFAULT_PERSONA).unwrap().deny.is_empty());
        let reviewer = builtin.get("reviewer").unwrap();
        for denied in ["write_file", "edit_file", "git_commit", "push"] {
            assert!(reviewer.denies(denied), "{denied}");
        }
    }
}
