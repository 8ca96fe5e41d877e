//! Entry paths from an untrusted archive: the only way from raw name bytes to a path we
//! will create on the host.
//!
//! [`ArchivePath::parse`] accepts only relative, `/`-separated UTF-8 paths whose every
//! component is a normal name: no `..`, no absolute paths, no Windows drive prefixes, no
//! backslashes (some extractors treat them as separators, so `a\..\..\x` would escape there),
//! no control characters (they hide names in logs and break the tree digest's framing),
//! and within the depth and component-length limits. `.` components and empty components
//! (`./a`, `a//b`) are dropped, so `./a` and `a` are the same path and count as duplicates.

use super::{Limits, PackageError};

/// A validated, normalised entry path: non-empty components joined by `/`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ArchivePath(String);

/// What a raw name parsed to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedName {
    /// The normalised path, or `None` for the archive root itself (`.`, `./`).
    pub path: Option<ArchivePath>,
    /// The raw name ended with `/` (a directory in zip and old tar conventions).
    pub trailing_slash: bool,
}

/// Escapes a name for error messages: control characters become `\u{..}` and the result is
/// cut to 200 characters, so a hostile name cannot forge log lines or flood them.
pub fn display_name(raw: &[u8]) -> String {
    let lossy = String::from_utf8_lossy(raw);
    let mut out = String::new();
    for (i, c) in lossy.chars().enumerate() {
        if i >= 200 {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

/// True when `path`'s first component starts like a Windows drive (`C:`). Checked on entry
/// paths as stored and again on paths relative to the skill root, where a second-level
/// component (`skill/C:x`) becomes the first.
pub fn has_drive_prefix(path: &str) -> bool {
    let first = path.split('/').next().unwrap_or_default().as_bytes();
    first.len() >= 2 && first[0].is_ascii_alphabetic() && first[1] == b':'
}

impl ArchivePath {
    /// Parses raw entry-name bytes under `limits`.
    pub fn parse(raw: &[u8], limits: &Limits) -> Result<ParsedName, PackageError> {
        let Ok(text) = std::str::from_utf8(raw) else {
            return Err(PackageError::InvalidName {
                path: display_name(raw),
            });
        };
        if text.chars().any(char::is_control) {
            return Err(PackageError::ControlCharacter {
                path: display_name(raw),
            });
        }
        if text.contains('\\') {
            return Err(PackageError::Backslash {
                path: display_name(raw),
            });
        }
        if text.starts_with('/') {
            return Err(PackageError::AbsolutePath {
                path: display_name(raw),
            });
        }
        let mut parts: Vec<&str> = Vec::new();
        for part in text.split('/') {
            match part {
                "" | "." => {}
                ".." => {
                    return Err(PackageError::ParentDir {
                        path: display_name(raw),
                    })
                }
                name => {
                    if name.len() > limits.component_bytes {
                        return Err(PackageError::ComponentTooLong {
                            path: display_name(raw),
                            limit: limits.component_bytes,
                        });
                    }
                    parts.push(name);
                }
            }
        }
        // Checked on the first real component, so `./C:/x` is caught as well as `C:/x`.
        if parts.first().is_some_and(|p| has_drive_prefix(p)) {
            return Err(PackageError::WindowsPrefix {
                path: display_name(raw),
            });
        }
        if parts.len() > limits.depth {
            return Err(PackageError::PathTooDeep {
                path: display_name(raw),
                limit: limits.depth,
            });
        }
        Ok(ParsedName {
            path: (!parts.is_empty()).then(|| ArchivePath(parts.join("/"))),
            trailing_slash: text.ends_with('/'),
        })
    }

    /// The normalised path text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The proper ancestors, shortest first (`a`, `a/b` for `a/b/c`).
    pub fn ancestors(&self) -> impl Iterator<Item = &str> {
        self.0.match_indices('/').map(move |(i, _)| &self.0[..i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &str) -> Result<ParsedName, PackageError> {
        ArchivePath::parse(raw.as_bytes(), &Limits::default())
    }

    #[test]
    fn normalises_dot_and_empty_components() {
        let p = parse("./a//b/./c/").unwrap();
        assert_eq!(p.path.unwrap().as_str(), "a/b/c");
        assert!(p.trailing_slash);
        assert_eq!(parse("./").unwrap().path, None);
    }

    #[test]
    fn ancestors_are_shortest_first() {
        let p = parse("a/b/c").unwrap().path.unwrap();
        assert_eq!(p.ancestors().collect::<Vec<_>>(), ["a", "a/b"]);
    }

    #[test]
    fn refuses_each_bad_shape_with_its_own_error() {
        assert!(matches!(
            parse("/etc/x"),
            Err(PackageError::AbsolutePath { .. })
        ));
        assert!(matches!(
            parse("a/../../x"),
            Err(PackageError::ParentDir { .. })
        ));
        assert!(matches!(
            parse("C:/x"),
            Err(PackageError::WindowsPrefix { .. })
        ));
        assert!(matches!(parse("a\\b"), Err(PackageError::Backslash { .. })));
        assert!(matches!(
            parse("a\nb"),
            Err(PackageError::ControlCharacter { .. })
        ));
        assert!(matches!(
            ArchivePath::parse(b"a\xff", &Limits::default()),
            Err(PackageError::InvalidName { .. })
        ));
        assert!(matches!(
            parse(&"a/".repeat(33)),
            Err(PackageError::PathTooDeep { .. })
        ));
        assert!(matches!(
            parse(&"a".repeat(256)),
            Err(PackageError::ComponentTooLong { .. })
        ));
        // A colon elsewhere is an ordinary character on the host.
        assert!(parse("ab:c/d").is_ok());
    }

    #[test]
    fn display_name_escapes_control_characters() {
        assert_eq!(display_name(b"a\nb"), "a\\u{a}b");
    }
}
