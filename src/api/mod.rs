//! The daemon's HTTP API.
