//! Black-box tests: the real app on port 0 with a temp sled directory,
//! talked to over HTTP. One test binary keeps link times down.

mod crash;
mod helpers;
mod ingest;
mod cli;
mod ingress;
mod schemes;
mod store_full;
mod tasks;
