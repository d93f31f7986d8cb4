//! Serving HTTP: hyper with timeouts and a connection cap, graceful shutdown.
