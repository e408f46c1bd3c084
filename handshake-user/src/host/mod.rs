//! The host: its interfaces, listening ports and privileges.
pub mod interfaces;
pub mod listeners;
pub mod privileges;
pub mod sockdiag;
