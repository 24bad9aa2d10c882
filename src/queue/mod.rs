//! Durable mail queue.
