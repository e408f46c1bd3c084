//! The detection suite (`cargo xtask detect`): recorded incidents and benign
//! events, each with its true interval, on which the shipped alert rules
//! and the built-in detector are scored: time to fire, time to resolve,
//! false-alarm time. Network safety as in every test: all traffic between
//! namespaces the suite creates, deleted at the end.
pub mod record;
pub mod report;
pub mod run;
pub mod scenario;
pub mod score;
pub mod traffic;
