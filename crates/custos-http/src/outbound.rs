//! Where the server may send things (issue 10 §6): streams to SIEMs, webhooks of alerts,
//! processes and plug-in steps, and the activity feed's webhook reach only public addresses,
//! unless the operator started the server with `--allow-private-targets` (a SIEM on this
//! machine or the local network). A name is resolved when the connection is made and only its
//! public addresses are tried, so a name that resolves to an inner address later (DNS
//! rebinding) is refused then too; redirects are not followed and proxies from the environment
//! are not used. What a refused or failed connection looked like is logged for the operator,
//! never shown to API callers, who see one coarse message: an Audit Reader cannot use a stream's
//! status as a port scanner.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use crate::error::AppError;

/// What a caller is told about any failure to reach a target.
pub const UNREACHABLE: &str = "could not reach the receiver";

/// Whether `ip` is a public unicast address (not loopback, private, link-local, shared,
/// multicast, broadcast, reserved or documentation).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public_v4(v4),
            None => is_public_v6(v6),
        },
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_unspecified()
        || a == 0
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a >= 240
        || (a == 100 && (64..128).contains(&b))
        || (a == 198 && (18..20).contains(&b))
        || (a == 192 && b == 0 && c == 0))
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00
        || (first & 0xffc0) == 0xfe80
        || (first & 0xffc0) == 0xfec0
        || (first == 0x2001 && ip.segments()[1] == 0x0db8)
        || (first == 0x0100 && ip.segments()[1..4] == [0, 0, 0]))
}

/// The rule for one target: whether private addresses are allowed.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    /// Whether loopback, link-local and private addresses may be reached
    /// (`--allow-private-targets`).
    pub allow_private: bool,
}

impl Rule {
    fn admits(self, ip: IpAddr) -> bool {
        self.allow_private || is_public(ip)
    }

    /// Refuses a host that is a literal inner address or an inner name (`localhost`); other
    /// names are checked each time they are resolved.
    pub fn check_host(self, host: &str) -> Result<(), AppError> {
        let host = host.trim_matches(['[', ']']);
        let inner = match host.parse::<IpAddr>() {
            Ok(ip) => !self.admits(ip),
            Err(_) => {
                let name = host.trim_end_matches('.').to_ascii_lowercase();
                !self.allow_private && (name == "localhost" || name.ends_with(".localhost"))
            }
        };
        if inner {
            return Err(AppError::bad_request(format!(
                "'{host}' is a loopback, link-local or private address; the server reaches those only when started with --allow-private-targets"
            )));
        }
        Ok(())
    }

    /// Checks an http(s) target: the scheme, no credentials in the URL, and its host.
    pub fn check_url(self, url: &str, what: &str) -> Result<reqwest::Url, AppError> {
        let parsed = reqwest::Url::parse(url)
            .map_err(|_| AppError::bad_request(format!("{what} '{url}' is not a URL")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(AppError::bad_request(format!(
                "{what} must be an http or https URL"
            )));
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(AppError::bad_request(format!(
                "{what} must not carry credentials in the URL (they would be shown and recorded)"
            )));
        }
        let host = parsed
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| AppError::bad_request(format!("{what} '{url}' has no host")))?;
        self.check_host(host)?;
        Ok(parsed)
    }

    /// The addresses of `host` this rule admits, for a connection to `port`.
    pub async fn resolve(self, host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
        let host = host.trim_matches(['[', ']']);
        let found: Vec<SocketAddr> = tokio::net::lookup_host((host, port)).await?.collect();
        let admitted: Vec<SocketAddr> = found
            .iter()
            .copied()
            .filter(|a| self.admits(a.ip()))
            .collect();
        if admitted.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!("{host} resolves to no address the server may reach: {found:?}"),
            ));
        }
        Ok(admitted)
    }

    /// Connects to the first admitted address of `host` that answers.
    pub async fn connect(self, host: &str, port: u16) -> std::io::Result<tokio::net::TcpStream> {
        let mut last = None;
        for address in self.resolve(host, port).await? {
            match tokio::net::TcpStream::connect(address).await {
                Ok(stream) => return Ok(stream),
                Err(error) => last = Some(error),
            }
        }
        Err(last.unwrap_or_else(|| std::io::Error::other("no address")))
    }

    /// An HTTP client that reaches only what this rule admits: names resolved through it,
    /// no redirects, no proxy.
    pub fn http_client(self, user_agent: &str, timeout: Duration) -> reqwest::ClientBuilder {
        reqwest::Client::builder()
            .timeout(timeout)
            .user_agent(user_agent)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(Arc::new(Resolver(self)))
    }
}

/// reqwest's name resolution through a [`Rule`].
struct Resolver(Rule);

impl reqwest::dns::Resolve for Resolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let rule = self.0;
        Box::pin(async move {
            let addresses = rule.resolve(name.as_str(), 0).await?;
            Ok(Box::new(addresses.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// A target URL as it may be shown and recorded: the value of every query parameter (where
/// collectors take tokens) replaced by `(set)`.
pub fn shown_url(url: &str) -> String {
    let Ok(mut parsed) = reqwest::Url::parse(url) else {
        return url.to_string();
    };
    if parsed.query().is_none() {
        return url.to_string();
    }
    let names: Vec<String> = parsed.query_pairs().map(|(k, _)| k.into_owned()).collect();
    parsed
        .query_pairs_mut()
        .clear()
        .extend_pairs(names.iter().map(|k| (k.as_str(), "(set)")));
    parsed.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_are_public() {
        for inner in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "2001:db8::1",
        ] {
            assert!(!is_public(inner.parse().unwrap()), "{inner}");
        }
        for public in ["8.8.8.8", "1.1.1.1", "2606:4700::1111", "::ffff:8.8.8.8"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[tokio::test]
    async fn names_resolve_only_to_admitted_addresses() {
        let strict = Rule {
            allow_private: false,
        };
        let open = Rule {
            allow_private: true,
        };
        // A name (not caught by its spelling) that resolves to loopback is refused when it is
        // resolved, as a rebinding name would be.
        assert!(strict.resolve("localhost.", 80).await.is_err());
        assert!(strict.resolve("127.0.0.1", 80).await.is_err());
        let found = open.resolve("127.0.0.1", 80).await.unwrap();
        assert_eq!(found, vec!["127.0.0.1:80".parse().unwrap()]);
    }

    #[test]
    fn urls_are_checked_and_shown_without_their_secrets() {
        let strict = Rule {
            allow_private: false,
        };
        let open = Rule {
            allow_private: true,
        };
        for bad in [
            "http://127.0.0.1:8080/hook",
            "http://[::1]/",
            "http://localhost:9000/",
            "http://LOCALHOST./",
            "http://169.254.169.254/latest/meta-data",
            "https://user:pass@siem.example/",
            "ftp://siem.example/",
        ] {
            assert!(strict.check_url(bad, "webhook").is_err(), "{bad}");
        }
        assert!(
            open.check_url("http://127.0.0.1:8080/hook", "webhook")
                .is_ok()
        );
        assert!(
            open.check_url("https://u:p@siem.example/", "webhook")
                .is_err()
        );
        assert!(
            strict
                .check_url("https://siem.example/hook?x=1", "webhook")
                .is_ok()
        );
        assert_eq!(
            shown_url("https://siem.example/raw?token=abc&channel=7"),
            "https://siem.example/raw?token=%28set%29&channel=%28set%29"
        );
        assert_eq!(
            shown_url("tcp://siem.example:514"),
            "tcp://siem.example:514"
        );
    }
}
