//! Replica addresses: static gRPC URLs, or DNS names (for example a
//! Kubernetes headless Service) that are re-resolved to follow replicas as
//! they come and go.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;

/// Future returned by [`Resolver::resolve`].
pub type ResolveFuture<'a> =
    Pin<Box<dyn Future<Output = std::io::Result<Vec<SocketAddr>>> + Send + 'a>>;

/// Resolves a host name and port to socket addresses.
pub trait Resolver: Send + Sync {
    /// Every address `host:port` resolves to now.
    fn resolve<'a>(&'a self, host: &'a str, port: u16) -> ResolveFuture<'a>;
}

/// The system resolver (`getaddrinfo` through tokio).
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemResolver;

impl Resolver for SystemResolver {
    fn resolve<'a>(&'a self, host: &'a str, port: u16) -> ResolveFuture<'a> {
        Box::pin(async move { Ok(tokio::net::lookup_host((host, port)).await?.collect()) })
    }
}

/// One configured replica address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A gRPC URL used as it is, for example `http://10.0.0.7:50051`.
    Static(String),
    /// A DNS name whose every address is a replica, written `dns:///HOST:PORT`
    /// (gRPC's name syntax) or `dns://HOST:PORT`.
    Dns {
        /// Host name to resolve.
        host: String,
        /// gRPC port of every replica.
        port: u16,
    },
}

impl Target {
    /// Parses a `--generator` or `--critic` value. Addresses without a
    /// scheme get `http://`.
    pub fn parse(value: &str) -> Result<Self, String> {
        let value = value.trim();
        if let Some(rest) = value.strip_prefix("dns://") {
            let rest = rest.trim_start_matches('/');
            let (host, port) = rest.rsplit_once(':').ok_or_else(|| {
                format!("invalid DNS target {value:?}: expected dns:///HOST:PORT")
            })?;
            let port = port.parse().map_err(|_| {
                format!(
                    "invalid DNS target {value:?}: port {port:?} is not a number from 0 to 65535"
                )
            })?;
            if host.is_empty() {
                return Err(format!("invalid DNS target {value:?}: the host is empty"));
            }
            return Ok(Self::Dns {
                host: host.to_string(),
                port,
            });
        }
        if value.is_empty() {
            return Err("invalid replica address \"\": it is empty".to_string());
        }
        if value.contains("://") {
            Ok(Self::Static(value.to_string()))
        } else {
            Ok(Self::Static(format!("http://{value}")))
        }
    }
}

/// The gRPC URL of a resolved socket address.
pub fn url_of(address: SocketAddr) -> String {
    format!("http://{address}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse() {
        assert_eq!(
            Target::parse("127.0.0.1:5000"),
            Ok(Target::Static("http://127.0.0.1:5000".into()))
        );
        assert_eq!(
            Target::parse("http://a:1"),
            Ok(Target::Static("http://a:1".into()))
        );
        let dns = Target::Dns {
            host: "redraft-critic".into(),
            port: 50052,
        };
        assert_eq!(
            Target::parse("dns:///redraft-critic:50052"),
            Ok(dns.clone())
        );
        assert_eq!(Target::parse("dns://redraft-critic:50052"), Ok(dns));
    }

    #[test]
    fn bad_targets_named() {
        assert!(
            Target::parse("dns:///redraft-critic")
                .unwrap_err()
                .contains("dns:///HOST:PORT")
        );
        assert!(
            Target::parse("dns:///host:http")
                .unwrap_err()
                .contains("\"http\"")
        );
        assert!(Target::parse("").is_err());
    }

    #[test]
    fn socket_addresses_become_urls() {
        assert_eq!(
            url_of("10.1.2.3:50051".parse().unwrap()),
            "http://10.1.2.3:50051"
        );
        assert_eq!(url_of("[::1]:50051".parse().unwrap()), "http://[::1]:50051");
    }
}
