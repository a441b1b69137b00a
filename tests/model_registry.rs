//! The model loader against the full OMA object registry in `../shared/lwm2m-registry`.
//! Skipped, with a message, where that directory is absent (a fresh clone).

use lwm2m_gw::lwm2m::{ddf, ModelLibrary};
use std::path::{Path, PathBuf};

fn registry() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/lwm2m-registry");
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!(
            "SKIPPED: {} is absent; the OMA registry tests did not run",
            dir.display()
        );
        None
    }
}

fn xml_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "xml"))
        .collect();
    v.sort();
    v
}

// Index and unit lists that live beside the object files but define no object.
const NOT_OBJECT_FILES: &[&str] = &["DDF.xml", "LWM2M_senml_units.xml"];

#[test]
fn every_registry_file_parses_current_and_version_history() {
    let Some(dir) = registry() else { return };
    let mut files = xml_files(&dir);
    files.extend(xml_files(&dir.join("version_history")));
    assert!(
        files.len() > 700,
        "expected the whole registry, found {} files",
        files.len()
    );
    let mut objects = 0;
    let mut failures = Vec::new();
    for f in &files {
        let name = f.file_name().unwrap().to_str().unwrap();
        match ddf::parse_file(f) {
            Ok(parsed) => objects += parsed.objects.len(),
            Err(e)
                if NOT_OBJECT_FILES.contains(&name)
                    && e.message.contains("not an object definition") =>
            {
                // Well-formed XML, but an index rather than a model.
            }
            Err(e) => failures.push(e.to_string()),
        }
    }
    assert!(
        failures.is_empty(),
        "{} files failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(objects > 700, "{objects} objects parsed");
    eprintln!("parsed {} files, {objects} object definitions", files.len());
}

#[test]
fn shipped_models_agree_with_the_registry() {
    let Some(dir) = registry() else { return };
    let lib = ModelLibrary::embedded();
    for (entry, _) in lib.list() {
        let ours = entry.model().unwrap();
        let theirs = ddf::parse_file(&dir.join(format!("{}.xml", ours.id)))
            .unwrap()
            .objects
            .remove(0);
        assert_eq!(
            (
                ours.name.as_str(),
                ours.version,
                ours.multiple,
                ours.mandatory
            ),
            (
                theirs.name.as_str(),
                theirs.version,
                theirs.multiple,
                theirs.mandatory
            ),
            "object {}",
            ours.id
        );
        assert_eq!(
            ours.resources.len(),
            theirs.resources.len(),
            "object {}",
            ours.id
        );
        for (a, b) in ours.resources.iter().zip(&theirs.resources) {
            assert_eq!(
                (
                    a.id,
                    &a.name,
                    a.operations,
                    a.multiple,
                    a.mandatory,
                    a.rtype,
                    &a.units
                ),
                (
                    b.id,
                    &b.name,
                    b.operations,
                    b.multiple,
                    b.mandatory,
                    b.rtype,
                    &b.units
                ),
                "object {} resource {}",
                ours.id,
                a.id
            );
        }
    }
}

#[test]
fn a_broken_registry_file_is_reported_with_file_and_line() {
    let Some(dir) = registry() else { return };
    let text = std::fs::read_to_string(dir.join("3.xml")).unwrap();
    let broken = text.replacen("<Type>Integer</Type>", "<Type>Integr</Type>", 1);
    let line = broken[..broken.find("Integr").unwrap()].lines().count() as u32;
    let tmp = std::env::temp_dir().join(format!("lwm2m-gw-broken-{}.xml", std::process::id()));
    std::fs::write(&tmp, broken).unwrap();
    let e = ddf::parse_file(&tmp).unwrap_err();
    std::fs::remove_file(&tmp).ok();
    assert_eq!(e.line, line);
    assert!(
        e.to_string()
            .starts_with(&format!("{}:{line}:", tmp.display())),
        "{e}"
    );
}

/// models/ ships the registry's OMA and IPSO objects and the older versions
/// of the built-in ones (scripts/import-registry-models.py): each an
/// unchanged copy, licence header and all.
#[test]
fn registry_files_in_models_are_unchanged_copies() {
    let Some(dir) = registry() else { return };
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    let builtin: Vec<&str> = lwm2m_gw::lwm2m::library::EMBEDDED
        .iter()
        .map(|(n, _)| *n)
        .collect();
    let mut copies = 0;
    for f in std::fs::read_dir(&models).unwrap() {
        let f = f.unwrap().path();
        let name = f.file_name().unwrap().to_str().unwrap().to_string();
        if builtin.contains(&name.as_str()) {
            continue;
        }
        let theirs = [dir.join(&name), dir.join("version_history").join(&name)]
            .into_iter()
            .find(|p| p.exists())
            .unwrap_or_else(|| panic!("models/{name} is in no registry file"));
        assert_eq!(
            std::fs::read(&f).unwrap(),
            std::fs::read(&theirs).unwrap(),
            "models/{name}"
        );
        let text = std::fs::read_to_string(&f).unwrap();
        assert!(
            text.contains("Redistribution and use"),
            "models/{name}: licence header"
        );
        copies += 1;
    }
    assert!(copies > 90, "{copies} registry files in models/");
}
