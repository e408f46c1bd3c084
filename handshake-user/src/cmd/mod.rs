//! The commands besides replay: `run`, `check`, `cleanup`.
pub mod check;
pub mod cleanup;
pub mod run;
