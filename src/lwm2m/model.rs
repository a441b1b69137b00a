//! Object and resource models as defined by OMA DDF files.

use std::fmt;

/// Object or LwM2M version, `major.minor`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct Version {
    /// Major number.
    pub major: u8,
    /// Minor number.
    pub minor: u8,
}

impl Version {
    /// `major.minor`.
    pub const fn new(major: u8, minor: u8) -> Version {
        Version { major, minor }
    }
    /// Version 1.0, the default for objects and for LwM2M.
    pub const V1_0: Version = Version::new(1, 0);

    /// Parses `1.0`; refuses anything else.
    pub fn parse(s: &str) -> Option<Version> {
        let (a, b) = s.trim().split_once('.')?;
        let ok = |x: &str| !x.is_empty() && x.bytes().all(|c| c.is_ascii_digit());
        if !ok(a) || !ok(b) {
            return None;
        }
        Some(Version::new(a.parse().ok()?, b.parse().ok()?))
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// Resource data type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResourceType {
    /// UTF-8 string.
    String,
    /// Signed integer.
    Integer,
    /// Unsigned integer (LwM2M 1.1).
    UnsignedInteger,
    /// Floating point.
    Float,
    /// Boolean.
    Boolean,
    /// Opaque bytes.
    Opaque,
    /// Unix time in seconds.
    Time,
    /// Object link `object:instance`.
    Objlnk,
    /// CoRE link (LwM2M 1.1).
    Corelnk,
    /// No value (executable resources).
    None,
}

impl ResourceType {
    /// Parses the DDF `<Type>` text; empty means `None`.
    pub fn parse(s: &str) -> Option<ResourceType> {
        Some(match s.trim() {
            "String" => ResourceType::String,
            "Integer" => ResourceType::Integer,
            "Unsigned Integer" => ResourceType::UnsignedInteger,
            "Float" => ResourceType::Float,
            "Boolean" => ResourceType::Boolean,
            "Opaque" => ResourceType::Opaque,
            "Time" => ResourceType::Time,
            "Objlnk" => ResourceType::Objlnk,
            "Corelnk" => ResourceType::Corelnk,
            "" | "none" | "None" => ResourceType::None,
            _ => return None,
        })
    }

    /// The DDF spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceType::String => "String",
            ResourceType::Integer => "Integer",
            ResourceType::UnsignedInteger => "Unsigned Integer",
            ResourceType::Float => "Float",
            ResourceType::Boolean => "Boolean",
            ResourceType::Opaque => "Opaque",
            ResourceType::Time => "Time",
            ResourceType::Objlnk => "Objlnk",
            ResourceType::Corelnk => "Corelnk",
            ResourceType::None => "",
        }
    }
}

/// Allowed operations on a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Operations {
    /// Read (R).
    pub read: bool,
    /// Write (W).
    pub write: bool,
    /// Execute (E).
    pub execute: bool,
}

impl Operations {
    /// Parses `R`, `W`, `RW`, `E` or empty.
    pub fn parse(s: &str) -> Option<Operations> {
        let s = s.trim();
        let ops = Operations {
            read: s.contains('R'),
            write: s.contains('W'),
            execute: s.contains('E'),
        };
        if s.chars().any(|c| !"RWE".contains(c)) || (ops.execute && (ops.read || ops.write)) {
            return None;
        }
        Some(ops)
    }

    /// The DDF spelling.
    pub fn as_str(self) -> &'static str {
        match (self.read, self.write, self.execute) {
            (_, _, true) => "E",
            (true, true, _) => "RW",
            (true, false, _) => "R",
            (false, true, _) => "W",
            _ => "",
        }
    }
}

/// One resource of an object.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceModel {
    /// Resource id.
    pub id: u16,
    /// Name as in the DDF (keys are derived from it).
    pub name: String,
    /// Allowed operations.
    pub operations: Operations,
    /// Multiple-instance resource.
    pub multiple: bool,
    /// Mandatory resource.
    pub mandatory: bool,
    /// Data type.
    pub rtype: ResourceType,
    /// Range or enumeration text, as given.
    pub range: String,
    /// Units, as given.
    pub units: String,
    /// Description.
    pub description: String,
}

/// One object definition.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectModel {
    /// Object id.
    pub id: u16,
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Object version (1.0 when the DDF gives none).
    pub version: Version,
    /// Minimum LwM2M version the object needs.
    pub lwm2m_version: Version,
    /// Object URN.
    pub urn: String,
    /// Multiple-instance object.
    pub multiple: bool,
    /// Mandatory object.
    pub mandatory: bool,
    /// Resources sorted by id.
    pub resources: Vec<ResourceModel>,
}

impl ObjectModel {
    /// A resource by id.
    pub fn resource(&self, id: u16) -> Option<&ResourceModel> {
        self.resources
            .binary_search_by_key(&id, |r| r.id)
            .ok()
            .map(|i| &self.resources[i])
    }
}

/// camelCase key from a resource name, as ThingsBoard derives keys
/// ("Battery Level" -> "batteryLevel", "Firmware Update Protocol Support"
/// -> "firmwareUpdateProtocolSupport").
pub fn camel_case_key(name: &str) -> String {
    let mut out = String::new();
    for (i, word) in name
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .enumerate()
    {
        let mut chars = word.chars();
        if let Some(first) = chars.next() {
            if i == 0 {
                out.push(first.to_ascii_lowercase());
            } else {
                out.push(first.to_ascii_uppercase());
            }
            out.extend(chars);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_and_order() {
        assert_eq!(Version::parse("1.2"), Some(Version::new(1, 2)));
        assert!(
            Version::parse("1").is_none()
                && Version::parse("1.x").is_none()
                && Version::parse("1.-1").is_none()
        );
        assert!(Version::new(1, 10) > Version::new(1, 2));
        assert_eq!(Version::new(2, 0).to_string(), "2.0");
    }

    #[test]
    fn operations_parse_ddf_spellings() {
        assert_eq!(Operations::parse("RW").unwrap().as_str(), "RW");
        assert!(Operations::parse("E").unwrap().execute);
        assert_eq!(Operations::parse(""), Some(Operations::default()));
        assert!(Operations::parse("RE").is_none() && Operations::parse("X").is_none());
    }

    #[test]
    fn keys_are_camel_case_of_names() {
        assert_eq!(camel_case_key("Battery Level"), "batteryLevel");
        assert_eq!(
            camel_case_key("Firmware Update Protocol Support"),
            "firmwareUpdateProtocolSupport"
        );
        assert_eq!(camel_case_key("PkgName"), "pkgName");
        assert_eq!(camel_case_key("Short Server ID"), "shortServerID");
    }
}
