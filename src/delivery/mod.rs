//! The relay half: applied changes → signed notifications to merchant endpoints.

pub mod patterns;
pub mod retry;
pub mod signing;
pub mod ssrf;
