//! A problem in a manifest, pointed at by file, line and column, rendered like a compiler error:
//!
//! ```text
//! unknown key `cpu` in [bottles.default]
//!   --> bottle.toml:12:1
//!    |
//! 12 | cpu = 2
//!    | ^^^
//!    = help: did you mean `cpus`?
//! ```

use std::fmt;
use std::ops::Range;

use super::validate::Invalid;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    pub file: String,
    pub message: String,
    pub help: Option<String>,
    pub location: Option<Location>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// 1-based.
    pub line: usize,
    /// 1-based, in characters.
    pub column: usize,
    pub source_line: String,
    /// Characters to underline, at least one.
    pub width: usize,
}

impl SpecError {
    pub fn new(file: &str, message: impl Into<String>) -> Self {
        SpecError {
            file: file.to_owned(),
            message: message.into(),
            help: None,
            location: None,
        }
    }

    pub fn at(file: &str, text: &str, span: Range<usize>, message: impl Into<String>) -> Self {
        SpecError {
            location: Some(Location::of(text, span)),
            ..SpecError::new(file, message)
        }
    }

    pub fn invalid(file: &str, text: &str, span: Range<usize>, invalid: Invalid) -> Self {
        SpecError {
            help: invalid.help,
            ..SpecError::at(file, text, span, invalid.message)
        }
    }

    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
}

impl Location {
    fn of(text: &str, span: Range<usize>) -> Location {
        let start = floor_char_boundary(text, span.start.min(text.len()));
        let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
        let line_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
        let source_line = text[line_start..line_end].trim_end_matches('\r').to_owned();
        let end = floor_char_boundary(text, span.end.clamp(start, line_end));
        Location {
            line: text[..start].matches('\n').count() + 1,
            column: text[line_start..start].chars().count() + 1,
            width: text[start..end].chars().count().max(1),
            source_line,
        }
    }
}

fn floor_char_boundary(text: &str, mut index: usize) -> usize {
    while !text.is_char_boundary(index) {
        index -= 1;
    }
    index
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.message)?;
        match &self.location {
            Some(at) => {
                let gutter = " ".repeat(at.line.to_string().len());
                writeln!(f, "{gutter}--> {}:{}:{}", self.file, at.line, at.column)?;
                writeln!(f, "{gutter} |")?;
                writeln!(f, "{} | {}", at.line, at.source_line)?;
                write!(
                    f,
                    "{gutter} | {}{}",
                    " ".repeat(at.column - 1),
                    "^".repeat(at.width)
                )?;
                if let Some(help) = &self.help {
                    write!(f, "\n{gutter} = help: {help}")?;
                }
            }
            None => {
                write!(f, "  --> {}", self.file)?;
                if let Some(help) = &self.help {
                    write!(f, "\n   = help: {help}")?;
                }
            }
        }
        Ok(())
    }
}

impl std::error::Error for SpecError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_at_line_and_column() {
        let text = "[a]\nx = 1\ncpu = 2\n";
        let e =
            SpecError::at("b.toml", text, 10..13, "unknown key `cpu`").help("did you mean `cpus`?");
        assert_eq!(
            e.to_string(),
            "unknown key `cpu`\n --> b.toml:3:1\n  |\n3 | cpu = 2\n  | ^^^\n  = help: did you mean `cpus`?"
        );
    }

    #[test]
    fn columns_count_characters() {
        let text = "k = \"é\" # x\n";
        let at = Location::of(text, 8..9);
        assert_eq!((at.line, at.column), (1, 8));
    }
}
