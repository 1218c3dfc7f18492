//! Black-box tests: the real app on port 0 with a temp sled directory,
//! talked to over HTTP. One test binary keeps link times down.

mod browser;
mod cli;
mod clock;
mod config_refusals;
mod crash;
mod disk_full;
mod durability;
mod exactly_once;
mod failpoints;
mod helpers;
mod ingest;
mod ingress;
mod methods;
mod newcomer;
mod ordering;
mod payments;
mod presets;
mod quarantine_bounds;
mod relay_crash;
mod relay_delivery;
mod relay_endpoints;
mod relay_helpers;
mod relay_limits;
mod relay_ordering;
mod relay_ssrf;
mod relay_tenancy;
mod returns;
mod schemes;
mod sink;
mod store_full;
mod systemd_unit;
mod tasks;
mod tenancy;
mod trigger;
mod unauthenticated;
