//! HTTP API on a unix socket: Docker Engine API paths and shapes for networks, netctl's own for
//! containers and counters. The daemon serves it (`server`), the CLI calls it (`client`).

pub mod client;
pub mod server;
pub mod types;
