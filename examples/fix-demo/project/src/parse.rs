//! Reading durations.

use std::fmt;

/// Why a duration could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// A unit letter with no number before it, as in `h30m`.
    MissingNumber(char),
    /// A number with no unit after it, as in `90`.
    MissingUnit(String),
    /// A letter that is not `s`, `m`, `h` or `d`.
    UnknownUnit(char),
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MissingNumber(u) => write!(f, "`{u}` has no number before it"),
            Self::MissingUnit(n) => write!(f, "`{n}` has no unit after it (s, m, h or d)"),
            Self::UnknownUnit(u) => write!(f, "`{u}` is not a unit (s, m, h or d)"),
        }
    }
}

impl std::error::Error for ParseError {}

/// Seconds in a duration such as `1h30m`; spaces between parts are allowed.
pub fn parse_duration(text: &str) -> Result<u64, ParseError> {
    let mut total = 0u64;
    let mut number = String::new();
    for c in text.chars().filter(|c| !c.is_whitespace()) {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let n: u64 = number.parse().map_err(|_| ParseError::MissingNumber(c))?;
        total += n * unit_seconds(c)?;
        number.clear();
    }
    if !number.is_empty() {
        return Err(ParseError::MissingUnit(number));
    }
    Ok(total)
}

/// Seconds in one of a unit.
fn unit_seconds(unit: char) -> Result<u64, ParseError> {
    match unit {
        's' => Ok(1),
        'm' => Ok(60),
        'h' => Ok(60 * 60),
        'd' => Ok(24 * 60),
        other => Err(ParseError::UnknownUnit(other)),
    }
}
