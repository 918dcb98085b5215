//! The personas of `loom up`, `loom serve agent` and `loom persona list`: built into the binary,
//! overridden by name (and extended) by `personas_dir/<name>/SKILL.md`.

use std::path::Path;

use loom_agent::{PersonaSource, Personas};

/// The built-in personas with `dir`'s over them; a missing `dir` leaves the built-in ones. An
/// invalid file (bad front matter, an unknown action in `deny`) is an error naming it.
pub fn load(dir: &Path) -> anyhow::Result<Personas> {
    Ok(Personas::load(dir)?)
}

/// `loom persona list`.
pub fn list(dir: &Path) -> anyhow::Result<()> {
    for (p, source) in load(dir)?.iter() {
        let from = match source {
            PersonaSource::Builtin => "built-in".to_owned(),
            PersonaSource::File(path) => path.display().to_string(),
        };
        let deny = if p.deny.is_empty() { String::new() } else { format!(" (may not: {})", p.deny.join(", ")) };
        println!("{:<18} {}{deny}  [{from}]", p.name, p.description);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAMES: [&str; 6] = ["devops", "docs", "engineer", "project-manager", "qa", "reviewer"];

    fn names(p: &Personas) -> Vec<String> {
        p.iter().map(|(p, _)| p.name.clone()).collect()
    }

    #[test]
    fn an_empty_directory_or_none_has_the_built_in_personas() {
        let empty = tempfile::tempdir().unwrap();
        for dir in [empty.path().to_path_buf(), empty.path().join("personas")] {
            let personas = load(&dir).unwrap();
            assert_eq!(names(&personas), NAMES);
            assert!(personas.iter().all(|(_, s)| *s == PersonaSource::Builtin));
            let reviewer = personas.get("reviewer").unwrap();
            assert!(reviewer.instructions.starts_with("# Reviewer"), "{}", reviewer.instructions);
            assert!(reviewer.denies("push") && reviewer.denies("git_commit"));
        }
    }

    #[test]
    fn a_directory_persona_overrides_one_by_name_and_adds_new_ones() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| {
            std::fs::create_dir(dir.path().join(name)).unwrap();
            std::fs::write(dir.path().join(name).join("SKILL.md"), text).unwrap();
        };
        write("reviewer", "---\nname: reviewer\ndescription: Ours\n---\nOur own review rules.\n");
        write("security", "---\nname: security\ndescription: Audits\ndeny: [push]\n---\nAudit it.\n");
        let personas = load(dir.path()).unwrap();
        let reviewer = personas.get("reviewer").unwrap();
        assert_eq!((reviewer.description.as_str(), reviewer.instructions.as_str()), ("Ours", "Our own review rules."));
        assert!(!reviewer.denies("push"), "the directory's file replaces the built-in one whole");
        assert!(personas.get("security").unwrap().denies("push"));
        assert!(personas.get("engineer").unwrap().instructions.starts_with("# Engineer"), "the others stay built in");
        let from = personas.iter().find(|(p, _)| p.name == "reviewer").unwrap().1;
        assert_eq!(*from, PersonaSource::File(dir.path().join("reviewer/SKILL.md")));
    }

    #[test]
    fn a_broken_persona_names_its_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("bad")).unwrap();
        std::fs::write(dir.path().join("bad/SKILL.md"), "no front matter").unwrap();
        let err = load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("bad/SKILL.md"), "{err}");
    }

    #[test]
    fn a_persona_denying_an_unknown_action_is_a_load_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("reviewer")).unwrap();
        let file = dir.path().join("reviewer/SKILL.md");
        std::fs::write(&file, "---\nname: reviewer\ndescription: d\ndeny: [git_push]\n---\nReview.\n").unwrap();
        let err = load(dir.path()).unwrap_err().to_string();
        assert!(err.contains(&file.display().to_string()), "{err}");
        assert!(err.contains("unknown action \"git_push\""), "{err}");
        assert!(err.contains("push"), "the known names are listed: {err}");
    }
}
