//! Loading persona files from `personas/<name>/SKILL.md`.

use std::path::Path;

use anyhow::Context;
use loom_domain::Persona;

/// Loads and validates every persona under `dir`, sorted by name.
pub fn load_dir(dir: &Path) -> anyhow::Result<Vec<Persona>> {
    let mut personas = Vec::new();
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("cannot read personas directory {}", dir.display()))?;
    for entry in entries {
        let entry = entry?;
        if !entry.file_type()?.is_dir() {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        let file = entry.path().join("SKILL.md");
        let text = std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
        personas.push(Persona::parse(&name, &text)?);
    }
    personas.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(personas)
}

/// `loom persona list`.
pub fn list(dir: &Path) -> anyhow::Result<()> {
    for p in load_dir(dir)? {
        println!("{:<18} {}", p.name, p.description);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_personas_are_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../personas");
        let names: Vec<String> = load_dir(&dir).unwrap().into_iter().map(|p| p.name).collect();
        assert_eq!(names, ["devops", "docs", "engineer", "project-manager", "qa", "reviewer"]);
    }

    #[test]
    fn a_broken_persona_names_its_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("bad")).unwrap();
        std::fs::write(dir.path().join("bad/SKILL.md"), "no front matter").unwrap();
        let err = load_dir(dir.path()).unwrap_err().to_string();
        assert!(err.contains("bad/SKILL.md"), "{err}");
    }
}
