//! DNS lookups for routing.
