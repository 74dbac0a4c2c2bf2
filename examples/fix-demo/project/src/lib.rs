//! Durations written the way people write them: `90s`, `1h30m`, `2d 4h`.

mod format;
mod parse;

pub use format::format_duration;
pub use parse::{parse_duration, ParseError};
