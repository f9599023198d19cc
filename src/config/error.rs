//! Configuration errors, each located as `FILE:LINE:COL`.

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: cannot read the configuration: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file was read but is not a valid configuration: one entry per problem found,
    /// in source order.
    #[error("{}", join_lines(.0))]
    Invalid(Vec<Diagnostic>),
}

impl ConfigError {
    /// The located problems (empty for [`ConfigError::Read`]).
    pub fn diagnostics(&self) -> &[Diagnostic] {
        match self {
            ConfigError::Read { .. } => &[],
            ConfigError::Invalid(diagnostics) => diagnostics,
        }
    }
}

/// One problem in a configuration file, displayed as `FILE:LINE:COL: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file name (or other origin) given to the parser.
    pub origin: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// What is wrong, in lower case, without a final period.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.origin, self.line, self.column, self.message
        )
    }
}

fn join_lines(diagnostics: &[Diagnostic]) -> String {
    diagnostics
        .iter()
        .map(Diagnostic::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Turns byte offsets of one source text into [`Diagnostic`]s.
pub(crate) struct SourceMap<'a> {
    origin: &'a str,
    text: &'a str,
    line_starts: Vec<usize>,
}

impl<'a> SourceMap<'a> {
    pub(crate) fn new(origin: &'a str, text: &'a str) -> Self {
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        SourceMap {
            origin,
            text,
            line_starts,
        }
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub(crate) fn locate(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let line = self.line_starts.partition_point(|&start| start <= offset);
        let start = self
            .line_starts
            .get(line.saturating_sub(1))
            .copied()
            .unwrap_or(0);
        let column = match self.text.get(start..offset) {
            Some(prefix) => prefix.chars().count(),
            None => offset - start,
        };
        (line.max(1), column + 1)
    }

    pub(crate) fn diagnostic(&self, span: Range<usize>, message: impl Into<String>) -> Diagnostic {
        let (line, column) = self.locate(span.start);
        Diagnostic {
            origin: self.origin.to_owned(),
            line,
            column,
            message: message.into(),
        }
    }

    /// A TOML syntax or shape error (unknown key, wrong type, bad enum value...).
    pub(crate) fn toml_error(&self, error: &toml::de::Error) -> Diagnostic {
        let span = error.span().unwrap_or(0..0);
        self.diagnostic(span, error.message().trim_end())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locates_lines_and_character_columns() {
        let map = SourceMap::new("f.toml", "ab\néé = 1\n\nx");
        assert_eq!(map.locate(0), (1, 1));
        assert_eq!(map.locate(1), (1, 2));
        assert_eq!(map.locate(2), (1, 3));
        assert_eq!(map.locate(3), (2, 1));
        // `=` is after two 2-byte characters and a space.
        assert_eq!(map.locate(8), (2, 4));
        assert_eq!(map.locate(12), (3, 1));
        assert_eq!(map.locate(13), (4, 1));
        assert_eq!(map.locate(999), (4, 2));
    }

    #[test]
    fn joins_diagnostics_one_per_line() {
        let map = SourceMap::new("f.toml", "a\nb");
        let error = ConfigError::Invalid(vec![
            map.diagnostic(0..1, "first"),
            map.diagnostic(2..3, "second"),
        ]);
        assert_eq!(error.to_string(), "f.toml:1:1: first\nf.toml:2:1: second");
    }
}
