//! Caps on live log streams (`/events`): at most so many open per client and so many in all.
//! A stream holds its [`StreamSlot`] for as long as it is open; closing it gives it back.
//! IPv6 clients are counted per /64 (what one subscriber usually gets), IPv4 per address.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex, PoisonError};

/// Streams one client may have open at once, by default.
pub const DEFAULT_PER_CLIENT: usize = 8;
/// Streams open at once in all, by default.
pub const DEFAULT_TOTAL: usize = 256;

/// Why a stream was refused; each names the cap that was reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The client has this many open.
    PerClient(usize),
    /// The server has this many open.
    Total(usize),
}

/// The live log streams open, per client.
#[derive(Debug)]
pub struct StreamSlots {
    per_client: usize,
    total: usize,
    open: Mutex<Open>,
}

#[derive(Debug, Default)]
struct Open {
    total: usize,
    by_client: HashMap<IpAddr, usize>,
}

/// The address a client's streams are counted under.
fn client_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from_bits(v6.to_bits() & !u128::from(u64::MAX))),
        },
    }
}

impl StreamSlots {
    /// Slots for `per_client` streams per client and `total` in all.
    pub fn new(per_client: usize, total: usize) -> Arc<Self> {
        Arc::new(Self {
            per_client,
            total,
            open: Mutex::default(),
        })
    }

    /// A slot for one more stream of the client at `ip`, unless a cap is reached.
    pub fn take(self: &Arc<Self>, ip: IpAddr) -> Result<StreamSlot, Refused> {
        let client = client_of(ip);
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if open.total >= self.total {
            return Err(Refused::Total(self.total));
        }
        let mine = open.by_client.entry(client).or_default();
        if *mine >= self.per_client {
            return Err(Refused::PerClient(self.per_client));
        }
        *mine += 1;
        open.total += 1;
        Ok(StreamSlot {
            slots: self.clone(),
            client,
        })
    }

    /// Streams open now.
    pub fn open(&self) -> usize {
        self.open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .total
    }
}

/// One open stream's place; given back when dropped.
#[derive(Debug)]
pub struct StreamSlot {
    slots: Arc<StreamSlots>,
    client: IpAddr,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self
            .slots
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        open.total -= 1;
        if let Some(mine) = open.by_client.get_mut(&self.client) {
            *mine -= 1;
            if *mine == 0 {
                open.by_client.remove(&self.client);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_client_gets_its_share_and_a_closed_stream_frees_its_slot() {
        let slots = StreamSlots::new(2, 10);
        let a = slots.take(ip("10.0.0.1")).unwrap();
        let _b = slots.take(ip("10.0.0.1")).unwrap();
        assert_eq!(
            slots.take(ip("10.0.0.1")).unwrap_err(),
            Refused::PerClient(2)
        );
        let _other = slots.take(ip("10.0.0.2")).unwrap();
        assert_eq!(slots.open(), 3);
        drop(a);
        assert_eq!(slots.open(), 2);
        let _again = slots.take(ip("10.0.0.1")).unwrap();
    }

    #[test]
    fn the_total_caps_every_client_together() {
        let slots = StreamSlots::new(2, 3);
        let held: Vec<_> = ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
            .into_iter()
            .map(|a| slots.take(ip(a)).unwrap())
            .collect();
        assert_eq!(slots.take(ip("10.0.0.4")).unwrap_err(), Refused::Total(3));
        drop(held);
        assert_eq!(slots.open(), 0);
        assert!(slots.take(ip("10.0.0.4")).is_ok());
    }

    #[test]
    fn ipv6_clients_are_counted_per_64_and_mapped_ipv4_as_ipv4() {
        let slots = StreamSlots::new(1, 10);
        let _a = slots.take(ip("2001:db8:1:2::1")).unwrap();
        assert_eq!(
            slots.take(ip("2001:db8:1:2:ffff::9")).unwrap_err(),
            Refused::PerClient(1)
        );
        assert!(slots.take(ip("2001:db8:1:3::1")).is_ok());
        let _v4 = slots.take(ip("192.0.2.7")).unwrap();
        assert_eq!(
            slots.take(ip("::ffff:192.0.2.7")).unwrap_err(),
            Refused::PerClient(1)
        );
    }
}
