//! LwM2M paths (`/3/0/9/1`) and versioned object ids (`/3_1.2/0/9`).

use super::model::Version;
use std::fmt;

/// A path from an object down to a resource instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Path {
    /// Object id.
    pub object: u16,
    /// Object instance id.
    pub instance: Option<u16>,
    /// Resource id.
    pub resource: Option<u16>,
    /// Resource instance id.
    pub resource_instance: Option<u16>,
}

/// Why a path string was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathError(pub String);

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid LwM2M path: {}", self.0)
    }
}

impl std::error::Error for PathError {}

impl Path {
    /// Path to a whole object.
    pub fn object(object: u16) -> Path {
        Path {
            object,
            instance: None,
            resource: None,
            resource_instance: None,
        }
    }

    /// Parses `/3/0/9`; ids must be 0..=65534 (65535 is reserved as "no id").
    pub fn parse(s: &str) -> Result<Path, PathError> {
        Path::parse_versioned(s).and_then(|(p, v)| match v {
            None => Ok(p),
            Some(_) => Err(PathError(format!("{s}: version not allowed here"))),
        })
    }

    /// Parses `/3/0/9` or `/3_1.2/0/9`, returning the object version if given.
    pub fn parse_versioned(s: &str) -> Result<(Path, Option<Version>), PathError> {
        let body = s.strip_prefix('/').unwrap_or(s);
        // No allocation: payload decoders parse a path per value.
        let mut segs = [""; 4];
        let mut n = 0;
        for seg in body.split('/') {
            if n == 4 {
                n = 5;
                break;
            }
            segs[n] = seg;
            n += 1;
        }
        if body.is_empty() || n > 4 {
            return Err(PathError(format!("{s:?}: expected 1 to 4 segments")));
        }
        let segs = &segs[..n];
        let (obj, version) = match segs[0].split_once('_') {
            Some((o, v)) => (
                o,
                Some(
                    Version::parse(v)
                        .ok_or_else(|| PathError(format!("{s}: bad object version {v:?}")))?,
                ),
            ),
            None => (segs[0], None),
        };
        let id = |x: &str| -> Result<u16, PathError> {
            match x.parse::<u16>() {
                Ok(v) if v != u16::MAX && !x.starts_with('+') => Ok(v),
                _ => Err(PathError(format!(
                    "{s}: {x:?} is not an id from 0 to 65534"
                ))),
            }
        };
        let mut p = Path::object(id(obj)?);
        p.instance = segs.get(1).map(|x| id(x)).transpose()?;
        p.resource = segs.get(2).map(|x| id(x)).transpose()?;
        p.resource_instance = segs.get(3).map(|x| id(x)).transpose()?;
        Ok((p, version))
    }

    /// Number of segments (1 for an object, 4 for a resource instance).
    pub fn depth(&self) -> usize {
        1 + self.instance.is_some() as usize
            + self.resource.is_some() as usize
            + self.resource_instance.is_some() as usize
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "/{}", self.object)?;
        for x in [self.instance, self.resource, self.resource_instance]
            .into_iter()
            .flatten()
        {
            write!(f, "/{x}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_versioned_paths() {
        let p = Path::parse("/3/0/9").unwrap();
        assert_eq!((p.object, p.instance, p.resource), (3, Some(0), Some(9)));
        assert_eq!(p.to_string(), "/3/0/9");
        assert_eq!(p.depth(), 3);
        let (p, v) = Path::parse_versioned("/3_1.2/0/9").unwrap();
        assert_eq!(p, Path::parse("3/0/9").unwrap());
        assert_eq!(v, Some(Version::new(1, 2)));
        assert_eq!(Path::parse("/5/0/1/2").unwrap().depth(), 4);
    }

    #[test]
    fn refuses_malformed_paths() {
        for bad in [
            "",
            "/",
            "/a",
            "/3//9",
            "/3/0/9/1/2",
            "/65535",
            "/3_x/0",
            "/-1",
            "/+3",
            "/3_1.0/0",
        ] {
            assert!(Path::parse(bad).is_err(), "{bad}");
        }
    }
}
