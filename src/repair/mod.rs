//! The repair stage: edits from a model (SEARCH/REPLACE blocks or unified diffs) and the
//! one applier `fix`, `test` and `pr` share.

pub mod apply;
pub mod candidates;
pub mod edits;
pub mod prompt;

pub use apply::{Applied, ApplyError, EditReport, Method, PathGuard, apply};
pub use edits::{Edit, ParseError, parse};
