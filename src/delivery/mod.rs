//! Delivery: the queue runner, and getting each recipient's mail where routing sends it (see
//! [`crate::config::routing`]).

pub mod remote;
pub mod runner;

pub use crate::config::routing::{route, route_via, Destination, NextHop, Route};
