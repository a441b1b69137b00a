//! The model library: shipped (system) models overlaid by site models.
//!
//! The system layer is the models built into the binary plus the files of
//! the models directory (a file there replaces the built-in one of the same
//! id and version). The site layer is what `model import` stored under the
//! data directory; a site model hides the system model of the same id and
//! version, and removing it brings the system model back. System models
//! cannot be removed.
//!
//! Models are parsed when first asked for: at start only each file's head
//! is read for its object id and version, so a models directory with the
//! whole registry costs the gateway what its devices use, not every file.

use super::ddf::{self, DdfError};
use super::model::{ObjectModel, ResourceModel, ResourceType, Version};
use super::node::Schema;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

/// The models shipped with the gateway (the repository's `models/`).
pub const EMBEDDED: &[(&str, &str)] = &[
    ("0.xml", include_str!("../../models/0.xml")),
    ("1.xml", include_str!("../../models/1.xml")),
    ("2.xml", include_str!("../../models/2.xml")),
    ("3.xml", include_str!("../../models/3.xml")),
    ("4.xml", include_str!("../../models/4.xml")),
    ("5.xml", include_str!("../../models/5.xml")),
    ("6.xml", include_str!("../../models/6.xml")),
    ("7.xml", include_str!("../../models/7.xml")),
    ("9.xml", include_str!("../../models/9.xml")),
    ("19.xml", include_str!("../../models/19.xml")),
    ("3303.xml", include_str!("../../models/3303.xml")),
];

/// Which layer a model comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layer {
    /// Shipped with the gateway.
    System,
    /// Imported by the site operator.
    Site,
}

impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Layer::System => "system",
            Layer::Site => "site",
        })
    }
}

/// A model and where it came from.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Object id.
    pub id: u16,
    /// Object version.
    pub version: Version,
    /// Its layer.
    pub layer: Layer,
    /// File it was read from (`embedded:NAME` for built-in models).
    pub source: PathBuf,
    /// The built-in text; none: the file at `source`.
    text: Option<&'static str>,
    /// Parsed on first use; none when the text no longer parses.
    model: OnceLock<Option<Arc<ObjectModel>>>,
}

impl Entry {
    fn parsed(m: Arc<ObjectModel>, layer: Layer, source: PathBuf) -> Entry {
        Entry {
            id: m.id,
            version: m.version,
            layer,
            source,
            text: None,
            model: OnceLock::from(Some(m)),
        }
    }

    /// The model, parsed on first use. None when its file changed since
    /// start and no longer holds it (logged once).
    pub fn model(&self) -> Option<&Arc<ObjectModel>> {
        self.model
            .get_or_init(|| {
                let file = match self.text {
                    Some(t) => ddf::parse(t),
                    None => ddf::parse_file(&self.source),
                };
                let found = file.map(|f| {
                    f.objects
                        .into_iter()
                        .find(|m| m.id == self.id && m.version == self.version)
                });
                match found {
                    Ok(Some(m)) => Some(Arc::new(m)),
                    Ok(None) => {
                        log::error!(
                            "model {} {}: {} no longer defines it; the object has no model",
                            self.id,
                            self.version,
                            self.source.display()
                        );
                        None
                    }
                    Err(e) => {
                        log::error!(
                            "model {} {}: {e}; the object has no model",
                            self.id,
                            self.version
                        );
                        None
                    }
                }
            })
            .as_ref()
    }
}

/// The id and version of the one object a DDF text defines, from its
/// head, without parsing it; none when that is not plain (several objects,
/// no id): the caller parses the whole file then.
fn peek(text: &str) -> Option<(u16, Version)> {
    // Comments (the licence header) may mention anything.
    let mut body = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("<!--") {
        body.push_str(&rest[..i]);
        rest = &rest[i..];
        rest = &rest[rest.find("-->")? + 3..];
    }
    body.push_str(rest);
    let objects = body.match_indices("<Object").filter(|(i, _)| {
        matches!(
            body.as_bytes().get(i + 7),
            Some(b'>' | b' ' | b'\t' | b'\r' | b'\n')
        )
    });
    if objects.count() != 1 {
        return None;
    }
    let element = |tag: &str| {
        let open = format!("<{tag}>");
        let start = body.find(&open)? + open.len();
        let end = start + body[start..].find('<')?;
        Some(body[start..end].trim().to_string())
    };
    let id = element("ObjectID")?.parse().ok()?;
    let resources = body.find("<Resources").unwrap_or(body.len());
    let version = match body.find("<ObjectVersion>") {
        Some(i) if i < resources => Version::parse(&element("ObjectVersion")?)?,
        _ => Version::new(1, 0),
    };
    Some((id, version))
}

/// The head of a DDF file: up to its resources, where the object's id and
/// version have been said; at most 64 KiB.
fn read_head(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut head = Vec::new();
    let mut buf = [0u8; 8192];
    while head.len() < 64 << 10 {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
        if head.windows(10).any(|w| w == b"<Resources") {
            break;
        }
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

/// Errors of library operations.
#[derive(Debug)]
pub enum LibraryError {
    /// A model file is broken.
    Ddf(DdfError),
    /// Reading or writing the site directory failed.
    Io(PathBuf, std::io::Error),
    /// No site model with that id (and version).
    NotFound(String),
    /// Only a system model matches; those cannot be removed.
    SystemModel(String),
}

impl fmt::Display for LibraryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LibraryError::Ddf(e) => write!(f, "{e}"),
            LibraryError::Io(p, e) => write!(f, "{}: {e}", p.display()),
            LibraryError::NotFound(what) => write!(f, "no site model {what}"),
            LibraryError::SystemModel(what) => {
                write!(
                    f,
                    "model {what} is a shipped system model and cannot be removed"
                )
            }
        }
    }
}

impl std::error::Error for LibraryError {}

impl From<DdfError> for LibraryError {
    fn from(e: DdfError) -> Self {
        LibraryError::Ddf(e)
    }
}

/// The layered library.
#[derive(Debug, Default, Clone)]
pub struct ModelLibrary {
    system: BTreeMap<(u16, Version), Entry>,
    site: BTreeMap<(u16, Version), Entry>,
}

impl ModelLibrary {
    /// A library with only the built-in models.
    pub fn embedded() -> ModelLibrary {
        let mut lib = ModelLibrary::default();
        for (name, text) in EMBEDDED {
            let source = PathBuf::from(format!("embedded:{name}"));
            // Built-in models are checked by a unit test; a broken one is a build defect.
            let (id, version) =
                peek(text).unwrap_or_else(|| panic!("built-in model {name}: no single object"));
            let entry = Entry {
                id,
                version,
                layer: Layer::System,
                source,
                text: Some(text),
                model: OnceLock::new(),
            };
            lib.system.insert((id, version), entry);
        }
        lib
    }

    /// The built-in models, parsed once per process and shared: a server
    /// made for each test or fuzz input need not parse them again.
    pub fn embedded_shared() -> std::sync::Arc<ModelLibrary> {
        static LIB: std::sync::OnceLock<std::sync::Arc<ModelLibrary>> = std::sync::OnceLock::new();
        LIB.get_or_init(|| std::sync::Arc::new(ModelLibrary::embedded()))
            .clone()
    }

    /// The built-in models, the system models directory and the site
    /// directory, in that order. Broken files are skipped with a warning
    /// naming file and line; they never stop the caller.
    pub fn load(system_dir: &Path, site_dir: &Path) -> ModelLibrary {
        let mut lib = ModelLibrary::embedded();
        for e in lib.load_system_dir(system_dir) {
            log::warn!("model skipped: {e}");
        }
        for e in lib.load_site_dir(site_dir) {
            log::warn!("site model skipped: {e}");
        }
        lib
    }

    /// Loads the system layer from a models directory (missing is fine).
    /// Broken files are skipped and returned, so one bad file does not stop the gateway.
    pub fn load_system_dir(&mut self, dir: &Path) -> Vec<DdfError> {
        self.load_dir(Layer::System, dir)
    }

    /// Loads the site layer from the site directory (missing is fine).
    pub fn load_site_dir(&mut self, dir: &Path) -> Vec<DdfError> {
        self.load_dir(Layer::Site, dir)
    }

    fn load_dir(&mut self, layer: Layer, dir: &Path) -> Vec<DdfError> {
        let mut errors = Vec::new();
        for path in xml_files(dir) {
            if let Some((id, version)) = read_head(&path).ok().as_deref().and_then(peek) {
                let entry = Entry {
                    id,
                    version,
                    layer,
                    source: path,
                    text: None,
                    model: OnceLock::new(),
                };
                match layer {
                    Layer::System => self.system.insert((id, version), entry),
                    Layer::Site => self.site.insert((id, version), entry),
                };
                continue;
            }
            // Not plain from its head: parsed now, and a broken file is
            // reported with its line.
            match ddf::parse_file(&path) {
                Ok(f) => {
                    for m in f.objects {
                        self.insert(layer, m, path.clone());
                    }
                }
                Err(e) => errors.push(e),
            }
        }
        errors
    }

    fn insert(&mut self, layer: Layer, m: ObjectModel, source: PathBuf) {
        let key = (m.id, m.version);
        let entry = Entry::parsed(Arc::new(m), layer, source);
        match layer {
            Layer::System => self.system.insert(key, entry),
            Layer::Site => self.site.insert(key, entry),
        };
    }

    /// The model in force for an object: the given version, or the highest
    /// version known when none is given. Site models win over system ones.
    pub fn get(&self, id: u16, version: Option<Version>) -> Option<&Arc<ObjectModel>> {
        self.entry(id, version)?.model()
    }

    /// The model for a device that announced `version` of object `id`: that
    /// version, else the newest one below it of the same major version
    /// (minor versions only add to an object), else the oldest one above
    /// it of that major (whose extra resources the device will not have),
    /// else none.
    pub fn get_compatible(&self, id: u16, version: Version) -> Option<&Arc<ObjectModel>> {
        if let Some(m) = self.get(id, Some(version)) {
            return Some(m);
        }
        let floor = Version::new(version.major, 0);
        let ceiling = Version::new(version.major, u8::MAX);
        let below = |m: &BTreeMap<(u16, Version), Entry>| {
            m.range((id, floor)..(id, version))
                .next_back()
                .map(|(k, _)| k.1)
        };
        let above = |m: &BTreeMap<(u16, Version), Entry>| {
            m.range((id, version)..=(id, ceiling))
                .next()
                .map(|(k, _)| k.1)
        };
        let v = match below(&self.site).max(below(&self.system)) {
            Some(v) => v,
            None => match (above(&self.site), above(&self.system)) {
                (Some(a), Some(b)) => a.min(b),
                (a, b) => a.or(b)?,
            },
        };
        self.get(id, Some(v))
    }

    /// A resource of the newest model of `object`.
    pub fn resource(&self, object: u16, resource: u16) -> Option<&ResourceModel> {
        self.get(object, None)?.resource(resource)
    }

    /// Like `get`, with the layer and source.
    pub fn entry(&self, id: u16, version: Option<Version>) -> Option<&Entry> {
        match version {
            Some(v) => self
                .site
                .get(&(id, v))
                .or_else(|| self.system.get(&(id, v))),
            None => {
                let best = |m: &BTreeMap<(u16, Version), Entry>| {
                    m.range((id, Version::new(0, 0))..=(id, Version::new(255, 255)))
                        .next_back()
                        .map(|(k, _)| k.1)
                };
                let v = best(&self.site).max(best(&self.system))?;
                self.entry(id, Some(v))
            }
        }
    }

    /// Every model in force, by id and version, with a flag for site
    /// models that hide a system model.
    pub fn list(&self) -> Vec<(&Entry, bool)> {
        let mut keys: Vec<&(u16, Version)> = self.system.keys().chain(self.site.keys()).collect();
        keys.sort();
        keys.dedup();
        keys.into_iter()
            .map(|k| match self.site.get(k) {
                Some(e) => (e, self.system.contains_key(k)),
                None => (&self.system[k], false),
            })
            .collect()
    }

    /// Number of models in force.
    pub fn len(&self) -> usize {
        let hidden = self
            .site
            .keys()
            .filter(|k| self.system.contains_key(k))
            .count();
        self.system.len() + self.site.len() - hidden
    }

    /// True when no model is known.
    pub fn is_empty(&self) -> bool {
        self.system.is_empty() && self.site.is_empty()
    }

    /// Validates DDF files and stores their objects in the site directory,
    /// one normalised file per object and version. Nothing is written unless
    /// every file is valid.
    pub fn import_site(
        &mut self,
        site_dir: &Path,
        files: &[PathBuf],
    ) -> Result<Vec<Arc<ObjectModel>>, LibraryError> {
        let mut models = Vec::new();
        for f in files {
            let parsed = ddf::parse_file(f)?;
            if parsed.objects.is_empty() {
                return Err(LibraryError::Ddf(DdfError {
                    file: Some(f.clone()),
                    line: 1,
                    message: "defines no object".into(),
                }));
            }
            models.extend(parsed.objects);
        }
        std::fs::create_dir_all(site_dir)
            .map_err(|e| LibraryError::Io(site_dir.to_path_buf(), e))?;
        let mut out = Vec::new();
        for m in models {
            let key = (m.id, m.version);
            let path = site_dir.join(site_file_name(m.id, m.version));
            write_atomically(&path, ddf::write(&m).as_bytes())
                .map_err(|e| LibraryError::Io(path.clone(), e))?;
            let m = Arc::new(m);
            out.push(m.clone());
            self.site.insert(key, Entry::parsed(m, Layer::Site, path));
        }
        Ok(out)
    }

    /// Removes site models: one version, or every version of the id.
    pub fn remove_site(
        &mut self,
        site_dir: &Path,
        id: u16,
        version: Option<Version>,
    ) -> Result<Vec<(u16, Version)>, LibraryError> {
        let what = match version {
            Some(v) => format!("{id}_{v}"),
            None => id.to_string(),
        };
        let keys: Vec<(u16, Version)> = self
            .site
            .keys()
            .filter(|(i, v)| *i == id && version.is_none_or(|want| want == *v))
            .copied()
            .collect();
        if keys.is_empty() {
            let system = self
                .system
                .keys()
                .any(|(i, v)| *i == id && version.is_none_or(|want| want == *v));
            return Err(if system {
                LibraryError::SystemModel(what)
            } else {
                LibraryError::NotFound(what)
            });
        }
        for k in &keys {
            let path = site_dir.join(site_file_name(k.0, k.1));
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(LibraryError::Io(path, e)),
            }
            self.site.remove(k);
        }
        Ok(keys)
    }
}

/// Types from the newest model of each object.
impl Schema for ModelLibrary {
    fn resource(&self, object: u16, resource: u16) -> Option<(ResourceType, bool)> {
        ModelLibrary::resource(self, object, resource).map(|r| (r.rtype, r.multiple))
    }
}

/// The file name a site model is stored under.
pub fn site_file_name(id: u16, v: Version) -> String {
    format!("{id}-{}_{}.xml", v.major, v.minor)
}

fn xml_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x.eq_ignore_ascii_case("xml")) && p.is_file())
        .collect();
    files.sort();
    files
}

/// Writes a file so that a power cut leaves either the old or the new one.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("lwm2m-gw-lib-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn built_in_models_cover_the_core_objects() {
        let lib = ModelLibrary::embedded();
        for id in [0u16, 1, 2, 3, 4, 5, 6, 7, 9, 19, 3303] {
            let e = lib
                .entry(id, None)
                .unwrap_or_else(|| panic!("object {id} missing"));
            assert_eq!(e.layer, Layer::System);
            assert!(!e.model().unwrap().resources.is_empty());
        }
        assert_eq!(
            lib.get(3, None).unwrap().resource(9).unwrap().name,
            "Battery Level"
        );
    }

    #[test]
    fn site_model_overrides_system_and_removal_restores_it() {
        let dir = tmpdir("override");
        let site = dir.join("site");
        let mut lib = ModelLibrary::embedded();
        let sys = lib.get(3303, None).unwrap().clone();
        let mut changed = (*sys).clone();
        changed.name = "Site Temperature".into();
        let f = dir.join("t.xml");
        std::fs::write(&f, ddf::write(&changed)).unwrap();
        let before = lib.len();
        lib.import_site(&site, &[f]).unwrap();
        assert_eq!(lib.len(), before, "an override adds no model");
        assert_eq!(lib.len(), lib.list().len());
        assert_eq!(
            lib.get(3303, Some(sys.version)).unwrap().name,
            "Site Temperature"
        );
        assert!(lib
            .list()
            .iter()
            .any(|(e, hides)| e.id == 3303 && *hides && e.layer == Layer::Site));
        // A fresh library reading the same directories sees the same thing.
        let mut again = ModelLibrary::embedded();
        assert!(again.load_site_dir(&site).is_empty());
        assert_eq!(again.get(3303, None).unwrap().name, "Site Temperature");
        lib.remove_site(&site, 3303, None).unwrap();
        assert_eq!(lib.get(3303, None).unwrap().name, sys.name);
        assert!(matches!(
            lib.remove_site(&site, 3303, None),
            Err(LibraryError::SystemModel(_))
        ));
        assert!(matches!(
            lib.remove_site(&site, 4444, None),
            Err(LibraryError::NotFound(_))
        ));
    }

    #[test]
    fn versions_coexist_and_unversioned_lookup_takes_the_highest() {
        let dir = tmpdir("versions");
        let site = dir.join("site");
        let mut lib = ModelLibrary::embedded();
        let mut old = (**lib.get(3, None).unwrap()).clone();
        let newest = old.version;
        old.version = Version::new(1, 0);
        old.name = "Device 1.0".into();
        let mut future = old.clone();
        future.version = Version::new(9, 9);
        future.name = "Device 9.9".into();
        std::fs::write(dir.join("a.xml"), ddf::write(&old)).unwrap();
        std::fs::write(dir.join("b.xml"), ddf::write(&future)).unwrap();
        lib.import_site(&site, &[dir.join("a.xml"), dir.join("b.xml")])
            .unwrap();
        assert_eq!(
            lib.get(3, Some(Version::new(1, 0))).unwrap().name,
            "Device 1.0"
        );
        assert_eq!(lib.get(3, Some(newest)).unwrap().name, "Device");
        assert_eq!(lib.get(3, None).unwrap().name, "Device 9.9");
        lib.remove_site(&site, 3, Some(Version::new(9, 9))).unwrap();
        assert_eq!(
            lib.get(3, None).unwrap().version,
            newest.max(Version::new(1, 0))
        );
    }

    #[test]
    fn a_models_directory_is_indexed_at_start_and_parsed_when_used() {
        let dir = tmpdir("lazy");
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
        for f in xml_files(&shipped) {
            std::fs::copy(&f, dir.join(f.file_name().unwrap())).unwrap();
        }
        let mut lib = ModelLibrary::embedded();
        assert!(lib.load_system_dir(&dir).is_empty());
        assert!(lib.len() > 90, "{}", lib.len());
        assert!(
            lib.system.values().all(|e| e.model.get().is_none()),
            "nothing parsed yet"
        );
        // Object 3347 (IPSO Push button) comes from the directory.
        let m = lib.get(3347, None).unwrap();
        assert_eq!((m.id, m.name.as_str()), (3347, "Push button"));
        let parsed = lib
            .system
            .values()
            .filter(|e| e.model.get().is_some())
            .count();
        assert_eq!(parsed, 1);
        // Each older version of a core object is its own model.
        for (id, v) in [(3, (1, 0)), (3, (1, 1)), (1, (1, 1)), (5, (1, 0))] {
            let v = Version::new(v.0, v.1);
            assert_eq!(lib.get(id, Some(v)).unwrap().version, v);
        }
        // A file that changes under the gateway into something else is no
        // model, said in the log, not a panic.
        std::fs::write(dir.join("3348.xml"), "<LWM2M><Object>").unwrap();
        assert!(lib.get(3348, None).is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_unknown_minor_version_takes_the_newest_model_below_it_of_its_major() {
        let lib = ModelLibrary::embedded();
        let m = lib.get_compatible(19, Version::new(1, 1)).unwrap();
        assert_eq!(m.version, Version::new(1, 0));
        assert!(lib.get_compatible(19, Version::new(2, 0)).is_none());
        assert!(lib.get_compatible(3, Version::new(0, 9)).is_none());
        // Only 1.2 built in: a 1.0 device gets it (it lacks what 1.2 added).
        let m = lib.get_compatible(3, Version::new(1, 0)).unwrap();
        assert_eq!(m.version, Version::new(1, 2));
    }

    #[test]
    fn the_id_and_version_come_from_a_files_head_not_its_comments() {
        let text = "<?xml version=\"1.0\"?>\n<!-- <Object><ObjectID>99</ObjectID> -->\n\
            <LWM2M><Object ObjectType=\"MODefinition\"><Name>x</Name>\
            <ObjectID> 3303 </ObjectID><ObjectVersion>1.1</ObjectVersion>\
            <Resources></Resources></Object></LWM2M>";
        assert_eq!(peek(text), Some((3303, Version::new(1, 1))));
        let no_version = text.replace("<ObjectVersion>1.1</ObjectVersion>", "");
        assert_eq!(peek(&no_version), Some((3303, Version::new(1, 0))));
        let two = text.replace("</Object></LWM2M>", "</Object><Object></Object></LWM2M>");
        assert_eq!(peek(&two), None);
        assert_eq!(peek("<LWM2M><Object>"), None);
        assert_eq!(peek("<!-- unterminated"), None);
    }

    #[test]
    fn import_of_a_broken_file_writes_nothing() {
        let dir = tmpdir("broken");
        let site = dir.join("site");
        let good = dir.join("good.xml");
        std::fs::write(
            &good,
            ddf::write(&ModelLibrary::embedded().get(19, None).unwrap().clone()),
        )
        .unwrap();
        let bad = dir.join("bad.xml");
        std::fs::write(&bad, "<LWM2M><Object>").unwrap();
        let mut lib = ModelLibrary::embedded();
        let e = lib.import_site(&site, &[good, bad.clone()]).unwrap_err();
        assert!(e.to_string().contains("bad.xml"), "{e}");
        assert!(!site.exists() || std::fs::read_dir(&site).unwrap().next().is_none());
    }

    #[test]
    fn broken_file_in_models_dir_is_reported_and_skipped() {
        let dir = tmpdir("sysdir");
        std::fs::write(dir.join("x.xml"), "<LWM2M>").unwrap();
        let mut lib = ModelLibrary::embedded();
        let n = lib.len();
        let errs = lib.load_system_dir(&dir);
        assert_eq!(errs.len(), 1);
        assert_eq!(lib.len(), n);
    }
}
