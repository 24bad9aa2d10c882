//! Connection limits shared by every listener of a server: in total and per client address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// How many sessions may be open at once.
#[derive(Debug)]
pub struct ConnectionLimits {
    max_total: usize,
    max_per_ip: usize,
    open: Mutex<(usize, HashMap<IpAddr, usize>)>,
    /// The most sessions open at once since `take_peak` was last called.
    peak: AtomicUsize,
}

/// Which limit refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("too many connections")]
    Total,
    #[error("too many connections from {0}")]
    PerIp(IpAddr),
}

impl Refused {
    /// The `reason` label of `sealpost_connections_refused_total`.
    pub fn class(&self) -> &'static str {
        match self {
            Refused::Total => "total",
            Refused::PerIp(_) => "per_ip",
        }
    }
}

/// An admitted connection; dropping it frees its place.
#[derive(Debug)]
pub struct Admission {
    limits: Arc<ConnectionLimits>,
    ip: IpAddr,
}

impl ConnectionLimits {
    pub fn new(max_total: usize, max_per_ip: usize) -> Arc<Self> {
        Arc::new(ConnectionLimits {
            max_total,
            max_per_ip,
            open: Mutex::new((0, HashMap::new())),
            peak: AtomicUsize::new(0),
        })
    }

    /// Admits a connection from `ip`, or says which limit it hits.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Admission, Refused> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if open.0 >= self.max_total {
            return Err(Refused::Total);
        }
        let from_ip = open.1.get(&ip).copied().unwrap_or(0);
        if from_ip >= self.max_per_ip {
            return Err(Refused::PerIp(ip));
        }
        open.0 += 1;
        self.peak.fetch_max(open.0, Ordering::Relaxed);
        open.1.insert(ip, from_ip + 1);
        Ok(Admission {
            limits: self.clone(),
            ip,
        })
    }

    /// Sessions open now, on every listener.
    pub fn open(&self) -> usize {
        self.open.lock().unwrap_or_else(|p| p.into_inner()).0
    }

    /// The most sessions open at once since the last call (or the start), however briefly;
    /// starts the next period at the count open now.
    pub fn take_peak(&self) -> usize {
        let open = self.open();
        self.peak.swap(open, Ordering::Relaxed).max(open)
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        let mut open = self.limits.open.lock().unwrap_or_else(|p| p.into_inner());
        open.0 = open.0.saturating_sub(1);
        if let Some(n) = open.1.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.1.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_per_ip_and_in_total_and_places_come_back() {
        let limits = ConnectionLimits::new(3, 2);
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        let a1 = limits.admit(a).unwrap();
        let _a2 = limits.admit(a).unwrap();
        assert_eq!(
            limits.admit(a).unwrap_err().to_string(),
            "too many connections from 192.0.2.1"
        );
        let _b1 = limits.admit(b).unwrap();
        assert_eq!(limits.admit(b).unwrap_err(), Refused::Total);
        assert_eq!(Refused::Total.class(), "total");
        drop(a1);
        assert!(limits.admit(a).is_ok(), "a freed place is reusable");
        assert_eq!(limits.take_peak(), 3);
        assert_eq!(
            limits.take_peak(),
            2,
            "the next period starts at the count open now"
        );
    }
}
