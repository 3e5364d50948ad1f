//! IP allowlists: addresses and CIDR ranges a connection may be used from.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;

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
        let net: IpNet = s
            .parse()
            .map_err(|_| AllowEntryError::Invalid(s.to_owned()))?;
        if net.trunc() != net {
            return Err(AllowEntryError::HostBitsSet {
                given: s.to_owned(),
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

/// An empty list allows every address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpAllowlist(Vec<AllowEntry>);

impl IpAllowlist {
    pub fn new(entries: Vec<AllowEntry>) -> Self {
        Self(entries)
    }

    pub fn allows(&self, client: IpAddr) -> bool {
        self.0.is_empty() || self.0.iter().any(|e| e.contains(client))
    }

    pub fn to_strings(&self) -> Vec<String> {
        self.0.iter().map(ToString::to_string).collect()
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
        fn parse_never_panics(s in "\\PC{0,40}") {
            let _ = s.parse::<AllowEntry>();
        }
    }
}
