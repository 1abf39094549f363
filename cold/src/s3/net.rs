//! Where the S3 client connects and whom it trusts: the host it must reach (for the
//! supervisor to resolve), a resolver that only hands out addresses it was given (the hound
//! has no DNS under its sandbox), and the private CA roots.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};

use rusty_s3::{Bucket, UrlStyle};
use ureq::config::Config;
use ureq::http::Uri;
use ureq::unversioned::resolver::{ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::NextTimeout;

use crate::ColdError;
use houndpool_protocol::control::S3Target;

/// Largest CA PEM accepted (it travels in one control message of at most 64 KiB).
pub const MAX_CA_PEM: usize = 48 * 1024;

/// The host name and port an S3 client for `target` connects to: the endpoint's host in
/// path style, `<bucket>.<host>` in virtual-host style. This is the name the supervisor
/// resolves for the hound. Errors as [`super::S3Store::open`] reports them for a bad endpoint.
pub fn connect_host(target: &S3Target) -> Result<(String, u16), ColdError> {
    let bad = |allowed: String| ColdError::InvalidConfig {
        key: "cold.s3.endpoint".into(),
        value: target.endpoint.clone(),
        allowed,
    };
    let endpoint = url::Url::parse(&target.endpoint)
        .map_err(|e| bad(format!("an http:// or https:// URL ({e})")))?;
    let style = if target.path_style {
        UrlStyle::Path
    } else {
        UrlStyle::VirtualHost
    };
    let bucket = Bucket::new(
        endpoint,
        style,
        target.bucket.clone(),
        target.region.clone(),
    )
    .map_err(|e| bad(format!("an http(s) URL with a host ({e:?})")))?;
    let base = bucket.base_url();
    let host = base
        .host_str()
        .ok_or_else(|| bad("an http(s) URL with a host".into()))?;
    let port = base
        .port_or_known_default()
        .ok_or_else(|| bad("an http(s) URL with a known port".into()))?;
    // IPv6 literals come bracketed from the URL.
    Ok((
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned(),
        port,
    ))
}

/// Parses the certificates of a PEM bundle. Fails (naming `cold.ca_file`) when the text is
/// too large, unreadable as PEM, or holds no certificate.
pub fn parse_ca(pem: &str) -> Result<Vec<ureq::tls::Certificate<'static>>, ColdError> {
    let bad = |allowed: String| ColdError::InvalidConfig {
        key: "cold.ca_file".into(),
        value: format!("<{} bytes of PEM>", pem.len()),
        allowed,
    };
    if pem.len() > MAX_CA_PEM {
        return Err(bad(format!("a PEM bundle of at most {MAX_CA_PEM} bytes")));
    }
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(pem.as_bytes()) {
        match item {
            Ok(ureq::tls::PemItem::Certificate(c)) => certs.push(c),
            Ok(_) => {} // keys and other items are ignored
            Err(e) => return Err(bad(format!("PEM certificates ({e})"))),
        }
    }
    if certs.is_empty() {
        return Err(bad("a PEM file with at least one CERTIFICATE".into()));
    }
    Ok(certs)
}

/// Addresses handed to the client from outside.
#[derive(Debug, Default)]
pub(super) struct Pinned {
    /// `None`: look names up with the system resolver (a library user outside the sandbox).
    /// `Some`: use only these addresses for the pinned host (the hound); empty = not known
    /// yet or the name does not resolve now, which is a transient "host not found".
    pub addrs: Option<(String, Vec<SocketAddr>)>,
}

/// The resolver of an [`super::S3Store`]'s agent.
#[derive(Debug, Clone, Default)]
pub(super) struct PinnedResolver {
    pub state: Arc<RwLock<Pinned>>,
}

impl Resolver for PinnedResolver {
    fn resolve(
        &self,
        uri: &Uri,
        config: &Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let (Some(host), Some(port)) = (
            uri.host(),
            uri.port_u16().or_else(|| match uri.scheme_str() {
                Some("https") => Some(443),
                Some("http") => Some(80),
                _ => None,
            }),
        ) else {
            return Err(ureq::Error::HostNotFound);
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let mut out = self.empty();
        // An IP literal needs no resolver at all.
        if let Ok(ip) = host.parse::<IpAddr>() {
            out.push(SocketAddr::new(ip, port));
            return Ok(out);
        }
        // A poisoned lock only means another thread panicked while swapping the set.
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        match &state.addrs {
            None => {
                drop(state);
                ureq::unversioned::resolver::DefaultResolver::default()
                    .resolve(uri, config, timeout)
            }
            Some((pinned, addrs)) if pinned.eq_ignore_ascii_case(host) && !addrs.is_empty() => {
                for a in addrs.iter().take(16) {
                    // The port of the URL: the supervisor resolved the same host and port.
                    out.push(SocketAddr::new(a.ip(), port));
                }
                Ok(out)
            }
            Some(_) => Err(ureq::Error::HostNotFound),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(endpoint: &str, path_style: bool) -> S3Target {
        S3Target {
            endpoint: endpoint.into(),
            bucket: "houndpool".into(),
            prefix: String::new(),
            region: "us-east-1".into(),
            path_style,
            access_key: "a".into(),
            secret_key: "s".into(),
            session_token: None,
            spool_dir: None,
            spool_limit_bytes: 0,
        }
    }

    #[test]
    fn connect_host_follows_the_url_style() {
        assert_eq!(
            connect_host(&target("http://localhost:9000", true)).unwrap(),
            ("localhost".into(), 9000)
        );
        assert_eq!(
            connect_host(&target("https://s3.example.com", false)).unwrap(),
            ("houndpool.s3.example.com".into(), 443)
        );
        assert_eq!(
            connect_host(&target("http://[::1]:9", true)).unwrap(),
            ("::1".into(), 9)
        );
        assert!(connect_host(&target("nonsense", true)).is_err());
    }

    #[test]
    fn ca_bundles_are_checked() {
        assert!(parse_ca("").is_err());
        assert!(parse_ca("-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----\n").is_err());
        assert!(parse_ca(&"x".repeat(MAX_CA_PEM + 1)).is_err());
    }
}
