//! Mapping tests against payloads modelled on each provider's documentation.

mod config;
mod providers;
mod robustness;
