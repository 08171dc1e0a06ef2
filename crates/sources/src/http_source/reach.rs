//! Where an HTTP source may lead tiercache: which redirects it follows ([`Redirects`]) and which
//! addresses it may connect to ([`AddressPolicy`]).
//!
//! Link-local and cloud metadata addresses are refused unless allowed explicitly, at three points:
//! a literal address in a source URL (when the namespace is defined) or in a redirect's target
//! (before it is followed), and every address a host name resolves to (the client's resolver keeps
//! only allowed addresses, so a name that resolves, or is re-pointed later, to a metadata address
//! never reaches it). Loopback and private ranges stay allowed: tests and on-premises sources use
//! them.
//!
//! This module decides; it does not send requests (`http_source.rs` does) or choose statuses.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;

use ipnet::IpNet;
use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use tiercache_core::redact_url;

/// Most redirects one request follows.
pub(crate) const MAX_REDIRECTS: usize = 5;

/// Which redirects an HTTP source's answers may lead to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Redirects {
    /// Only to the source's own origin: the same scheme, host and port (the default).
    #[default]
    SameOrigin,
    /// Anywhere (still never to a refused address).
    Any,
    /// None: a redirect is a source error.
    None,
}

impl Redirects {
    /// Its name in settings: `same-origin`, `any` or `none`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Redirects::SameOrigin => "same-origin",
            Redirects::Any => "any",
            Redirects::None => "none",
        }
    }
}

impl FromStr for Redirects {
    type Err = String;

    fn from_str(s: &str) -> Result<Redirects, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "same-origin" => Ok(Redirects::SameOrigin),
            "any" => Ok(Redirects::Any),
            "none" => Ok(Redirects::None),
            _ => Err(format!("{s:?} is not a redirect policy: expected same-origin, any or none")),
        }
    }
}

/// A range of addresses, written as a CIDR block (`169.254.169.254/32`, `fe80::/10`) or a single
/// address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressRange(IpNet);

impl AddressRange {
    /// Whether `ip` is in the range.
    pub fn contains(&self, ip: &IpAddr) -> bool {
        self.0.contains(ip)
    }
}

impl FromStr for AddressRange {
    type Err = String;

    fn from_str(s: &str) -> Result<AddressRange, String> {
        let t = s.trim();
        let net = match t.parse::<IpNet>() {
            Ok(net) => net,
            Err(_) => t
                .parse::<IpAddr>()
                .map(IpNet::from)
                .map_err(|_| format!("{s:?} is not an address or a CIDR block like 169.254.169.254/32"))?,
        };
        Ok(AddressRange(net.trunc()))
    }
}

impl std::fmt::Display for AddressRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Ranges no source may reach unless allowed: link-local (where every cloud's metadata service
/// answers: 169.254.169.254, ECS's 169.254.170.2, …), AWS's IPv6 metadata address, Alibaba Cloud's
/// metadata address, and the link-local range as NAT64 reaches it. The rest of 100.64.0.0/10 stays
/// allowed: it is shared address space that on-premises networks (and VPN overlays) use.
const REFUSED: &[&str] =
    &["169.254.0.0/16", "fe80::/10", "fd00:ec2::254/128", "100.100.100.200/32", "64:ff9b::a9fe:0/112"];

/// Host names of metadata services, refused by name (with a clearer message than their address
/// would give) unless an allowed range holds the address they stand for.
const REFUSED_NAMES: &[(&str, IpAddr)] =
    &[("metadata.google.internal", IpAddr::V4(std::net::Ipv4Addr::new(169, 254, 169, 254)))];

/// Which addresses sources may reach: all but the refused ranges, except those allowed.
#[derive(Debug, Clone)]
pub(crate) struct AddressPolicy {
    refused: Vec<IpNet>,
    allowed: Vec<AddressRange>,
}

impl AddressPolicy {
    /// The built-in refused ranges, less `allowed`.
    pub(crate) fn new(allowed: &[AddressRange]) -> AddressPolicy {
        let refused = REFUSED.iter().map(|r| r.parse().expect("a valid built-in range")).collect();
        AddressPolicy { refused, allowed: allowed.to_vec() }
    }

    /// The same, also refusing `range` (tests refuse loopback to see the resolver's filter at work
    /// without a network).
    #[cfg(test)]
    pub(crate) fn also_refusing(mut self, ranges: &[&str]) -> AddressPolicy {
        self.refused.extend(ranges.iter().map(|r| r.parse::<IpNet>().expect("a valid range")));
        self
    }

    /// Whether `ip` may be reached. An IPv4 address written as IPv6 (`::ffff:169.254.169.254`)
    /// is judged as the IPv4 address it is.
    pub(crate) fn allows(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.allowed.iter().any(|a| a.contains(&ip)) || !self.refused.iter().any(|r| r.contains(&ip))
    }

    /// Refuses `url` if its host is a refused address written literally (which no resolver sees:
    /// the connector uses it as it is) or a refused metadata host name.
    pub(crate) fn check_url(&self, url: &Url) -> Result<(), AddressRefused> {
        let host = url.host_str().unwrap_or("");
        // An IPv6 literal comes bracketed; Url has normalised both kinds of literal already.
        if let Ok(addr) = host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
            return if self.allows(addr) { Ok(()) } else { Err(AddressRefused { host: host.to_owned(), addr }) };
        }
        let name = host.trim_end_matches('.').to_ascii_lowercase();
        match REFUSED_NAMES.iter().find(|(n, _)| *n == name) {
            Some((_, addr)) if !self.allows(*addr) => Err(AddressRefused { host: name, addr: *addr }),
            _ => Ok(()),
        }
    }

    /// The addresses of `addrs` that may be reached; [`AddressRefused`] (naming the first refused
    /// one) if there were some and none may.
    pub(crate) fn filter(&self, host: &str, addrs: Vec<SocketAddr>) -> Result<Vec<SocketAddr>, AddressRefused> {
        let first = addrs.first().copied();
        let kept: Vec<SocketAddr> = addrs.into_iter().filter(|a| self.allows(a.ip())).collect();
        match first {
            Some(a) if kept.is_empty() => Err(AddressRefused { host: host.to_owned(), addr: a.ip() }),
            _ => Ok(kept),
        }
    }
}

/// A source, or a redirect's target, at an address sources may not reach.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{host} is at {addr}, a link-local or cloud metadata address that sources may not reach")]
pub(crate) struct AddressRefused {
    /// The host as written (a name or an address).
    pub(crate) host: String,
    /// The refused address.
    pub(crate) addr: IpAddr,
}

/// A redirect the policy does not follow.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum RedirectRefused {
    /// Out of the source's origin, under [`Redirects::SameOrigin`].
    #[error("the redirect to {to} left the source's origin {origin} (`--source-redirects any` would follow it)")]
    LeftOrigin {
        /// The target, credentials redacted.
        to: String,
        /// The source's origin.
        origin: String,
    },
    /// Any redirect, under [`Redirects::None`].
    #[error("the source redirected to {to}, and redirects are off (`--source-redirects none`)")]
    Off {
        /// The target, credentials redacted.
        to: String,
    },
    /// More than [`MAX_REDIRECTS`].
    #[error("more than {MAX_REDIRECTS} redirects")]
    TooMany,
}

/// `scheme://host:port` of `url`.
fn origin_of(url: &Url) -> String {
    let port = url.port_or_known_default().map(|p| format!(":{p}")).unwrap_or_default();
    format!("{}://{}{port}", url.scheme(), url.host_str().unwrap_or(""))
}

/// The client's redirect policy: `redirects`, at most [`MAX_REDIRECTS`] hops, never to a refused
/// address.
pub(crate) fn redirect_policy(redirects: Redirects, addresses: Arc<AddressPolicy>) -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(move |attempt| {
        let to = attempt.url();
        let first = attempt.previous().first().unwrap_or(to);
        let shown = || redact_url(to.as_str()).into_owned();
        if attempt.previous().len() > MAX_REDIRECTS {
            return attempt.error(RedirectRefused::TooMany);
        }
        let refusal = match redirects {
            Redirects::None => Some(RedirectRefused::Off { to: shown() }),
            Redirects::SameOrigin if origin_of(to) != origin_of(first) => {
                Some(RedirectRefused::LeftOrigin { to: shown(), origin: origin_of(first) })
            }
            _ => None,
        };
        if let Some(r) = refusal {
            return attempt.error(r);
        }
        match addresses.check_url(to) {
            Ok(()) => attempt.follow(),
            Err(refused) => attempt.error(refused),
        }
    })
}

/// The client's resolver: the system's, keeping only the addresses the policy allows.
#[derive(Debug)]
pub(crate) struct FilteringResolver(pub(crate) Arc<AddressPolicy>);

impl Resolve for FilteringResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = Arc::clone(&self.0);
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let kept = policy.filter(&host, found)?;
            Ok(Box::new(kept.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(allowed: &[&str]) -> AddressPolicy {
        AddressPolicy::new(&allowed.iter().map(|a| a.parse().unwrap()).collect::<Vec<_>>())
    }

    #[test]
    fn link_local_and_metadata_addresses_are_refused_loopback_and_private_ones_allowed() {
        let p = policy(&[]);
        for refused in
            ["169.254.169.254", "169.254.0.1", "fe80::1", "fd00:ec2::254", "100.100.100.200", "::ffff:169.254.169.254"]
        {
            assert!(!p.allows(refused.parse().unwrap()), "{refused}");
        }
        for allowed in ["127.0.0.1", "::1", "10.1.2.3", "192.168.1.1", "172.16.0.1", "100.64.0.1", "fd00::1", "8.8.8.8"]
        {
            assert!(p.allows(allowed.parse().unwrap()), "{allowed}");
        }
        let p = policy(&["169.254.169.254", "fe80::/10"]);
        assert!(p.allows("169.254.169.254".parse().unwrap()) && p.allows("fe80::9".parse().unwrap()));
        assert!(!p.allows("169.254.169.253".parse().unwrap()));
    }

    #[test]
    fn urls_are_refused_by_literal_address_or_metadata_name() {
        let p = policy(&[]);
        let check = |url: &str| p.check_url(&Url::parse(url).unwrap()).map_err(|e| e.to_string());
        assert!(check("http://169.254.169.254/latest/").unwrap_err().contains("169.254.169.254"));
        assert!(check("http://[fe80::1]:8080/").is_err());
        assert!(check("http://[::ffff:a9fe:a9fe]/").is_err());
        assert!(check("http://METADATA.google.internal./computeMetadata/").is_err());
        assert!(check("http://127.0.0.1:1/").is_ok() && check("http://example.com/").is_ok());
        let p = policy(&["169.254.169.254/32"]);
        assert!(p.check_url(&Url::parse("http://metadata.google.internal/").unwrap()).is_ok());
    }

    #[test]
    fn the_resolver_filter_keeps_allowed_addresses_and_refuses_when_none_is_left() {
        let p = policy(&[]);
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        let mixed = vec![a("169.254.169.254:0"), a("10.0.0.1:0")];
        assert_eq!(p.filter("mixed", mixed).unwrap(), vec![a("10.0.0.1:0")]);
        let err = p.filter("rebound.example", vec![a("169.254.169.254:0"), a("[fe80::1]:0")]).unwrap_err();
        assert_eq!((err.host.as_str(), err.addr), ("rebound.example", "169.254.169.254".parse().unwrap()));
        assert_eq!(p.filter("nothing", vec![]).unwrap(), vec![]);
    }

    #[test]
    fn ranges_and_policies_parse() {
        assert_eq!("169.254.169.254".parse::<AddressRange>().unwrap().to_string(), "169.254.169.254/32");
        assert_eq!("10.1.2.3/8".parse::<AddressRange>().unwrap().to_string(), "10.0.0.0/8");
        assert!("10.0.0.0/33".parse::<AddressRange>().is_err() && "nope".parse::<AddressRange>().is_err());
        assert_eq!("Same-Origin".parse::<Redirects>(), Ok(Redirects::SameOrigin));
        assert!("sometimes".parse::<Redirects>().is_err());
    }
}
