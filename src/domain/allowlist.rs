//! IP allowlists: addresses and CIDR ranges a connection may be used from.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;

use super::echo::echo;

/// One allowlist entry. A single address is kept as such so it reads back as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllowEntry {
    Address(IpAddr),
    Range(IpNet),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllowEntryError {
    #[error("'{0}' is not an IP address or CIDR range")]
    Invalid(String),
    #[error("'{given}' has host bits set; the range is {network}")]
    HostBitsSet { given: String, network: IpNet },
}

impl FromStr for AllowEntry {
    type Err = AllowEntryError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if let Ok(addr) = s.parse::<IpAddr>() {
            return Ok(Self::Address(canonical(addr)));
        }
        let net: IpNet = s.parse().map_err(|_| AllowEntryError::Invalid(echo(s)))?;
        if net.trunc() != net {
            return Err(AllowEntryError::HostBitsSet {
                given: echo(s),
                network: net.trunc(),
            });
        }
        Ok(Self::Range(net))
    }
}

impl fmt::Display for AllowEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Address(a) => a.fmt(f),
            Self::Range(n) => n.fmt(f),
        }
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`) are the IPv4 address they carry.
pub fn canonical(addr: IpAddr) -> IpAddr {
    addr.to_canonical()
}

impl AllowEntry {
    pub fn contains(&self, client: IpAddr) -> bool {
        let client = canonical(client);
        match self {
            Self::Address(a) => *a == client,
            Self::Range(n) => n.contains(&client),
        }
    }
}

/// The most entries one allowlist holds.
pub const MAX_ENTRIES: usize = 1000;

/// An empty list allows every address. Besides the entries as written, the list keeps
/// them as sorted, merged address intervals, so a check is a binary search: its cost does
/// not grow with the list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpAllowlist {
    entries: Vec<AllowEntry>,
    v4: Vec<(u32, u32)>,
    v6: Vec<(u128, u128)>,
}

/// Sorts inclusive intervals and merges the ones that overlap or touch (`next` is the
/// value after one, `None` at the top).
fn merged<T: Copy + Ord>(mut spans: Vec<(T, T)>, next: fn(T) -> Option<T>) -> Vec<(T, T)> {
    spans.sort_unstable();
    let mut out: Vec<(T, T)> = Vec::with_capacity(spans.len());
    for (start, end) in spans {
        match out.last_mut() {
            Some(last) if next(last.1).is_none_or(|after| start <= after) => {
                last.1 = last.1.max(end)
            }
            _ => out.push((start, end)),
        }
    }
    out
}

/// Whether `x` is in one of the sorted, disjoint inclusive `spans`.
fn within<T: Copy + Ord>(spans: &[(T, T)], x: T) -> bool {
    let after = spans.partition_point(|(start, _)| *start <= x);
    after > 0 && x <= spans[after - 1].1
}

impl IpAllowlist {
    pub fn new(entries: Vec<AllowEntry>) -> Self {
        let (mut v4, mut v6) = (Vec::new(), Vec::new());
        for entry in &entries {
            match *entry {
                AllowEntry::Address(IpAddr::V4(a)) => v4.push((u32::from(a), u32::from(a))),
                AllowEntry::Address(IpAddr::V6(a)) => v6.push((u128::from(a), u128::from(a))),
                AllowEntry::Range(IpNet::V4(n)) => {
                    v4.push((u32::from(n.network()), u32::from(n.broadcast())))
                }
                AllowEntry::Range(IpNet::V6(n)) => {
                    v6.push((u128::from(n.network()), u128::from(n.broadcast())))
                }
            }
        }
        Self {
            entries,
            v4: merged(v4, |x| x.checked_add(1)),
            v6: merged(v6, |x| x.checked_add(1)),
        }
    }

    pub fn allows(&self, client: IpAddr) -> bool {
        if self.entries.is_empty() {
            return true;
        }
        match canonical(client) {
            IpAddr::V4(a) => within(&self.v4, u32::from(a)),
            IpAddr::V6(a) => within(&self.v6, u128::from(a)),
        }
    }

    pub fn to_strings(&self) -> Vec<String> {
        self.entries.iter().map(ToString::to_string).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn parses_addresses_and_ranges_and_reads_back_as_written() {
        for s in [
            "10.0.0.1",
            "192.168.1.0/24",
            "::1",
            "2001:db8::/32",
            "0.0.0.0/0",
        ] {
            assert_eq!(s.parse::<AllowEntry>().unwrap().to_string(), s);
        }
    }

    #[test]
    fn rejects_bad_entries_with_a_reason() {
        assert!(matches!(
            "10.0.0.1/33".parse::<AllowEntry>(),
            Err(AllowEntryError::Invalid(_))
        ));
        assert!(matches!(
            "192.168.1.5/24".parse::<AllowEntry>(),
            Err(AllowEntryError::HostBitsSet { .. })
        ));
        for bad in ["", "localhost", "1.2.3", "10.0.0.1/", "::g"] {
            assert!(bad.parse::<AllowEntry>().is_err(), "{bad}");
        }
    }

    #[test]
    fn mapped_ipv6_matches_ipv4_entries() {
        let list = IpAllowlist::new(vec!["127.0.0.1".parse().unwrap()]);
        assert!(list.allows("::ffff:127.0.0.1".parse().unwrap()));
        assert!(list.allows("127.0.0.1".parse().unwrap()));
        assert!(!list.allows("::1".parse().unwrap()));
        let mapped: AllowEntry = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(mapped.to_string(), "10.0.0.1");
    }

    fn v4_mask(len: u8) -> u32 {
        if len == 0 { 0 } else { u32::MAX << (32 - len) }
    }

    fn v6_mask(len: u8) -> u128 {
        if len == 0 {
            0
        } else {
            u128::MAX << (128 - len)
        }
    }

    #[test]
    fn empty_list_allows_everyone() {
        assert!(IpAllowlist::default().allows("8.8.8.8".parse().unwrap()));
    }

    proptest! {
        #[test]
        fn v4_range_membership_matches_mask_arithmetic(net in any::<u32>(), len in 0u8..=32, probe in any::<u32>()) {
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            let base = net & mask;
            let entry: AllowEntry = format!("{}/{}", Ipv4Addr::from(base), len).parse().unwrap();
            let expected = probe & mask == base;
            prop_assert_eq!(entry.contains(IpAddr::V4(Ipv4Addr::from(probe))), expected);
            // The same address, IPv4-mapped, gets the same answer.
            let mapped = IpAddr::V6(Ipv4Addr::from(probe).to_ipv6_mapped());
            prop_assert_eq!(entry.contains(mapped), expected);
        }

        #[test]
        fn v6_range_membership_matches_mask_arithmetic(net in any::<u128>(), len in 0u8..=128, probe in any::<u128>()) {
            let mask = if len == 0 { 0 } else { u128::MAX << (128 - len) };
            let base = net & mask;
            let entry: AllowEntry = format!("{}/{}", Ipv6Addr::from(base), len).parse().unwrap();
            let probe_addr = Ipv6Addr::from(probe);
            // Mapped addresses are compared as IPv4, so skip them here.
            prop_assume!(probe_addr.to_ipv4_mapped().is_none());
            prop_assert_eq!(entry.contains(IpAddr::V6(probe_addr)), probe & mask == base);
        }

        #[test]
        fn the_interval_check_agrees_with_every_entry(
            v4 in proptest::collection::vec((any::<u32>(), 0u8..=32), 0..20),
            v6 in proptest::collection::vec((any::<u128>(), 0u8..=128), 0..20),
            singles in proptest::collection::vec(any::<u32>(), 0..5),
            probes in proptest::collection::vec(any::<u32>(), 1..20),
            probes6 in proptest::collection::vec(any::<u128>(), 1..20),
        ) {
            let mut entries: Vec<AllowEntry> = v4
                .iter()
                .map(|(net, len)| format!("{}/{}", Ipv4Addr::from(net & v4_mask(*len)), len).parse().unwrap())
                .collect();
            entries.extend(v6.iter().map(|(net, len)| {
                format!("{}/{}", Ipv6Addr::from(net & v6_mask(*len)), len).parse::<AllowEntry>().unwrap()
            }));
            entries.extend(singles.iter().map(|a| AllowEntry::Address(IpAddr::V4(Ipv4Addr::from(*a)))));
            let list = IpAllowlist::new(entries.clone());
            // Probes inside the entries too, not only random ones.
            let near = v4.iter().map(|(net, len)| net & v4_mask(*len)).chain(singles.iter().copied());
            for probe in probes.iter().copied().chain(near) {
                let ip = IpAddr::V4(Ipv4Addr::from(probe));
                let linear = entries.is_empty() || entries.iter().any(|e| e.contains(ip));
                prop_assert_eq!(list.allows(ip), linear, "{}", ip);
            }
            for probe in probes6.iter().copied().chain(v6.iter().map(|(net, len)| net & v6_mask(*len))) {
                let ip = IpAddr::V6(Ipv6Addr::from(probe));
                let linear = entries.is_empty() || entries.iter().any(|e| e.contains(ip));
                prop_assert_eq!(list.allows(ip), linear, "{}", ip);
            }
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,40}") {
            let _ = s.parse::<AllowEntry>();
        }
    }
}
