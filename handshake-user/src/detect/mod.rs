//! Detection: the background scan of the flow table, counter windows, the
//! signals they give, the built-in detector and its source summaries.
pub mod detector;
pub mod scan;
pub mod signals;
pub mod sources;
pub mod window;
