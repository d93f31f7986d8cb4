//! Webhook sources: HTTP POSTs of events from log shippers and CI.
