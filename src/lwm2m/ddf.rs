//! OMA DDF XML (LWM2M.xsd, LWM2M-v1_1.xsd) parsing and writing.

use super::model::{ObjectModel, Operations, ResourceModel, ResourceType, Version};
use roxmltree::{Document, Node};
use std::fmt;
use std::path::{Path, PathBuf};

/// What a DDF file holds.
#[derive(Debug, Clone, PartialEq)]
pub struct DdfFile {
    /// Object definitions (`ObjectType="MODefinition"`).
    pub objects: Vec<ObjectModel>,
    /// Reusable resources (`ObjectType="CommonResources"`), which define no object.
    pub common_resources: Vec<ResourceModel>,
}

/// Why a DDF file was refused: where and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DdfError {
    /// The file, when parsing from disk.
    pub file: Option<PathBuf>,
    /// 1-based line (0 when the file could not be read).
    pub line: u32,
    /// What was wrong.
    pub message: String,
}

impl DdfError {
    fn at(node: Node, message: impl Into<String>) -> DdfError {
        let pos = node.document().text_pos_at(node.range().start);
        DdfError {
            file: None,
            line: pos.row,
            message: message.into(),
        }
    }
}

impl fmt::Display for DdfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = self
            .file
            .as_deref()
            .map_or("<input>".into(), |p| p.display().to_string());
        write!(f, "{file}:{}: {}", self.line, self.message)
    }
}

impl std::error::Error for DdfError {}

/// Reads and parses a DDF file; errors name the file and line.
pub fn parse_file(path: &Path) -> Result<DdfFile, DdfError> {
    let text = std::fs::read_to_string(path).map_err(|e| DdfError {
        file: Some(path.to_path_buf()),
        line: 0,
        message: format!("cannot read: {e}"),
    })?;
    parse(&text).map_err(|mut e| {
        e.file = Some(path.to_path_buf());
        e
    })
}

/// Parses DDF XML text.
pub fn parse(text: &str) -> Result<DdfFile, DdfError> {
    let opts = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..Default::default()
    };
    let doc = Document::parse_with_options(text, opts).map_err(|e| DdfError {
        file: None,
        line: e.pos().row,
        message: format!("not well-formed XML: {e}"),
    })?;
    let root = doc.root_element();
    if root.tag_name().name() != "LWM2M" {
        return Err(DdfError::at(
            root,
            format!(
                "root element is <{}>, not <LWM2M>: not an object definition file",
                root.tag_name().name()
            ),
        ));
    }
    let mut file = DdfFile {
        objects: Vec::new(),
        common_resources: Vec::new(),
    };
    for obj in root.children().filter(|n| n.has_tag_name("Object")) {
        match obj.attribute("ObjectType").unwrap_or("MODefinition") {
            "MODefinition" => file.objects.push(parse_object(obj)?),
            "CommonResources" => {
                if let Some(res) = child(obj, "Resources") {
                    file.common_resources = parse_resources(res)?;
                }
            }
            other => return Err(DdfError::at(obj, format!("unknown ObjectType {other:?}"))),
        }
    }
    if file.objects.is_empty() && file.common_resources.is_empty() {
        return Err(DdfError::at(root, "no <Object> element"));
    }
    Ok(file)
}

fn child<'a, 'i>(n: Node<'a, 'i>, name: &str) -> Option<Node<'a, 'i>> {
    n.children().find(|c| c.has_tag_name(name))
}

fn text_of(n: Node, name: &str) -> String {
    child(n, name)
        .map(|c| {
            c.descendants()
                .filter(|d| d.is_text())
                .filter_map(|d| d.text())
                .collect::<String>()
        })
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn required<'a, 'i>(n: Node<'a, 'i>, name: &str) -> Result<(Node<'a, 'i>, String), DdfError> {
    let c = child(n, name).ok_or_else(|| DdfError::at(n, format!("missing <{name}>")))?;
    Ok((c, text_of(n, name)))
}

fn flag(n: Node, name: &str, yes: &str, no: &str, default: bool) -> Result<bool, DdfError> {
    let Some(c) = child(n, name) else {
        return Ok(default);
    };
    match text_of(n, name).as_str() {
        s if s == yes => Ok(true),
        s if s == no => Ok(false),
        "" => Ok(default),
        s => Err(DdfError::at(
            c,
            format!("<{name}> must be {yes} or {no}, not {s:?}"),
        )),
    }
}

fn version(n: Node, name: &str) -> Result<Version, DdfError> {
    let t = text_of(n, name);
    if t.is_empty() {
        return Ok(Version::V1_0);
    }
    Version::parse(&t).ok_or_else(|| {
        DdfError::at(
            child(n, name).unwrap_or(n),
            format!("<{name}> {t:?} is not a version like 1.0"),
        )
    })
}

/// An object or resource id: 0 to 65534 (65535 means "no id" in LwM2M).
fn parse_id(node: Node, what: &str, text: &str) -> Result<u16, DdfError> {
    text.parse::<u16>()
        .ok()
        .filter(|v| *v != u16::MAX)
        .ok_or_else(|| {
            DdfError::at(
                node,
                format!("{what} {text:?} is not a number from 0 to 65534"),
            )
        })
}

fn parse_object(obj: Node) -> Result<ObjectModel, DdfError> {
    let (name_node, name) = required(obj, "Name")?;
    if name.is_empty() {
        return Err(DdfError::at(name_node, "empty object <Name>"));
    }
    let (id_node, id_text) = required(obj, "ObjectID")?;
    let id = parse_id(id_node, "<ObjectID>", &id_text)?;
    let resources = match child(obj, "Resources") {
        Some(r) => parse_resources(r)?,
        None => return Err(DdfError::at(obj, "missing <Resources>")),
    };
    let mut description = text_of(obj, "Description1");
    let d2 = text_of(obj, "Description2");
    if !d2.is_empty() {
        description.push_str("\n\n");
        description.push_str(&d2);
    }
    Ok(ObjectModel {
        id,
        name,
        description,
        version: version(obj, "ObjectVersion")?,
        lwm2m_version: version(obj, "LWM2MVersion")?,
        urn: text_of(obj, "ObjectURN"),
        multiple: flag(obj, "MultipleInstances", "Multiple", "Single", false)?,
        mandatory: flag(obj, "Mandatory", "Mandatory", "Optional", false)?,
        resources,
    })
}

fn parse_resources(res: Node) -> Result<Vec<ResourceModel>, DdfError> {
    let mut out: Vec<ResourceModel> = Vec::new();
    for item in res.children().filter(|n| n.has_tag_name("Item")) {
        let id_text = item.attribute("ID").unwrap_or("").trim();
        let id = parse_id(item, "<Item ID>", id_text)?;
        let (name_node, name) = required(item, "Name")?;
        if name.is_empty() {
            return Err(DdfError::at(
                name_node,
                format!("resource {id}: empty <Name>"),
            ));
        }
        let ops_text = text_of(item, "Operations");
        let operations = Operations::parse(&ops_text).ok_or_else(|| {
            DdfError::at(
                child(item, "Operations").unwrap_or(item),
                format!("resource {id}: <Operations> {ops_text:?} is not R, W, RW, E or empty"),
            )
        })?;
        let type_text = text_of(item, "Type");
        let rtype = ResourceType::parse(&type_text).ok_or_else(|| {
            DdfError::at(
                child(item, "Type").unwrap_or(item),
                format!("resource {id}: unknown <Type> {type_text:?}"),
            )
        })?;
        if out.iter().any(|r| r.id == id) {
            return Err(DdfError::at(item, format!("resource {id} defined twice")));
        }
        out.push(ResourceModel {
            id,
            name,
            operations,
            multiple: flag(item, "MultipleInstances", "Multiple", "Single", false)?,
            mandatory: flag(item, "Mandatory", "Mandatory", "Optional", false)?,
            rtype,
            range: text_of(item, "RangeEnumeration"),
            units: text_of(item, "Units"),
            description: text_of(item, "Description"),
        });
    }
    out.sort_by_key(|r| r.id);
    Ok(out)
}

/// Writes one object as a DDF file (LWM2M-v1_1.xsd layout).
pub fn write(obj: &ObjectModel) -> String {
    let mut s = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    s.push_str("<LWM2M xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" xsi:noNamespaceSchemaLocation=\"http://www.openmobilealliance.org/tech/profiles/LWM2M-v1_1.xsd\">\n");
    s.push_str("  <Object ObjectType=\"MODefinition\">\n");
    let el = |s: &mut String, indent: &str, name: &str, v: &str| {
        s.push_str(&format!("{indent}<{name}>{}</{name}>\n", escape(v)));
    };
    el(&mut s, "    ", "Name", &obj.name);
    el(&mut s, "    ", "Description1", &obj.description);
    el(&mut s, "    ", "ObjectID", &obj.id.to_string());
    el(&mut s, "    ", "ObjectURN", &obj.urn);
    el(
        &mut s,
        "    ",
        "LWM2MVersion",
        &obj.lwm2m_version.to_string(),
    );
    el(&mut s, "    ", "ObjectVersion", &obj.version.to_string());
    el(
        &mut s,
        "    ",
        "MultipleInstances",
        if obj.multiple { "Multiple" } else { "Single" },
    );
    el(
        &mut s,
        "    ",
        "Mandatory",
        if obj.mandatory {
            "Mandatory"
        } else {
            "Optional"
        },
    );
    s.push_str("    <Resources>\n");
    for r in &obj.resources {
        s.push_str(&format!("      <Item ID=\"{}\">\n", r.id));
        let i = "        ";
        el(&mut s, i, "Name", &r.name);
        el(&mut s, i, "Operations", r.operations.as_str());
        el(
            &mut s,
            i,
            "MultipleInstances",
            if r.multiple { "Multiple" } else { "Single" },
        );
        el(
            &mut s,
            i,
            "Mandatory",
            if r.mandatory { "Mandatory" } else { "Optional" },
        );
        el(&mut s, i, "Type", r.rtype.as_str());
        el(&mut s, i, "RangeEnumeration", &r.range);
        el(&mut s, i, "Units", &r.units);
        el(&mut s, i, "Description", &r.description);
        s.push_str("      </Item>\n");
    }
    s.push_str("    </Resources>\n  </Object>\n</LWM2M>\n");
    s
}

fn escape(v: &str) -> String {
    v.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: &str = r#"<?xml version="1.0"?>
<LWM2M>
  <Object ObjectType="MODefinition">
    <Name>Thermo</Name>
    <Description1>A test object &amp; more</Description1>
    <ObjectID>33000</ObjectID>
    <ObjectURN>urn:oma:lwm2m:x:33000</ObjectURN>
    <LWM2MVersion>1.1</LWM2MVersion>
    <ObjectVersion>1.2</ObjectVersion>
    <MultipleInstances>Multiple</MultipleInstances>
    <Mandatory>Optional</Mandatory>
    <Resources>
      <Item ID="5700"><Name>Sensor Value</Name><Operations>R</Operations>
        <MultipleInstances>Single</MultipleInstances><Mandatory>Mandatory</Mandatory>
        <Type>Float</Type><RangeEnumeration>-40..85</RangeEnumeration><Units>Cel</Units>
        <Description><![CDATA[Last value]]></Description></Item>
      <Item ID="1"><Name>Reset</Name><Operations>E</Operations>
        <MultipleInstances>Single</MultipleInstances><Mandatory>Optional</Mandatory>
        <Type></Type><RangeEnumeration/><Units/><Description/></Item>
    </Resources>
  </Object>
</LWM2M>"#;

    #[test]
    fn parses_object_with_resources_sorted() {
        let f = parse(SMALL).unwrap();
        let o = &f.objects[0];
        assert_eq!(
            (o.id, o.name.as_str(), o.version, o.lwm2m_version),
            (33000, "Thermo", Version::new(1, 2), Version::new(1, 1))
        );
        assert!(o.multiple && !o.mandatory);
        assert_eq!(o.description, "A test object & more");
        assert_eq!(o.resources[0].id, 1);
        assert_eq!(o.resources[0].rtype, ResourceType::None);
        let v = o.resource(5700).unwrap();
        assert_eq!(
            (v.rtype, v.units.as_str(), v.range.as_str()),
            (ResourceType::Float, "Cel", "-40..85")
        );
        assert_eq!(v.description, "Last value");
        assert!(v.mandatory && v.operations.read && !v.operations.write);
    }

    #[test]
    fn written_ddf_parses_back_to_the_same_model() {
        let o = parse(SMALL).unwrap().objects.remove(0);
        let again = parse(&write(&o)).unwrap().objects.remove(0);
        assert_eq!(again, o);
    }

    #[test]
    fn errors_name_the_line() {
        let bad = SMALL.replace("<Type>Float</Type>", "<Type>Floaty</Type>");
        let e = parse(&bad).unwrap_err();
        assert!(e.message.contains("Floaty"), "{e}");
        assert_eq!(e.line, 15);
        let e = parse("<LWM2M>\n<Object>\n</LWM2M>").unwrap_err();
        assert_eq!(e.line, 3);
        assert!(e.message.contains("not well-formed"));
        let e = parse(&SMALL.replace("<ObjectID>33000</ObjectID>", "<ObjectID>x</ObjectID>"))
            .unwrap_err();
        assert_eq!(e.line, 6);
        assert!(parse(&SMALL.replace("Item ID=\"1\"", "Item ID=\"5700\""))
            .unwrap_err()
            .message
            .contains("twice"));
        assert!(parse("<DDFList/>")
            .unwrap_err()
            .message
            .contains("not an object definition"));
    }

    #[test]
    fn file_errors_carry_the_path() {
        let e = parse_file(Path::new("/nonexistent/x.xml")).unwrap_err();
        assert!(e
            .to_string()
            .starts_with("/nonexistent/x.xml:0: cannot read"));
    }
}
