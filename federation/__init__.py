"""Federation: peers and upstream servers, catalog sync, health checks, failover, stdio supervision."""
