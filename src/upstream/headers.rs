//! Hop-by-hop headers (RFC 9110, section 7.6.1) and the forwarding headers
//! (`X-Forwarded-For`, `X-Forwarded-Host`, `Forwarded`, RFC 7239).

use std::net::{IpAddr, SocketAddr};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// `Forwarded` (RFC 7239).
pub(crate) static FORWARDED: HeaderName = HeaderName::from_static("forwarded");
/// `X-Forwarded-For`.
pub(crate) static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-Forwarded-Host`.
pub(crate) static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Removes the hop-by-hop headers: every header `Connection` names, then
/// `Connection`, `Proxy-Connection`, `Keep-Alive`, `TE`, `Trailer`,
/// `Transfer-Encoding`, `Upgrade` and every `Proxy-*` header
/// (`Proxy-Authorization` and `Proxy-Authenticate` are the proxy's own,
/// RFC 9110, section 11.7).
pub(crate) fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&b| b == b','))
        .filter_map(|name| HeaderName::from_bytes(name.trim_ascii()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    let proxy: Vec<HeaderName> = headers
        .keys()
        .filter(|name| name.as_str().starts_with("proxy-"))
        .cloned()
        .collect();
    for name in proxy {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        HeaderName::from_static("keep-alive"),
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        headers.remove(name);
    }
}

/// What the forwarder does with the forwarding headers a request arrives
/// with (`X-Forwarded-For`, `X-Forwarded-Host`, `Forwarded`).
///
/// A client can write anything in them: an upstream that reads
/// `X-Forwarded-For` to learn who is calling (rate limits, audit logs,
/// allowlists) trusts whoever could write it. Keep the default unless
/// every request comes through a proxy you run, which writes them itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ForwardedHeaders {
    /// The request's own are removed, and the forwarder writes new ones:
    /// `X-Forwarded-For: <client ip>`, `X-Forwarded-Host: <Host>`,
    /// `Forwarded: for=<client ip>;host=<Host>`. The default: the client
    /// is the first hop.
    #[default]
    Replace,
    /// The clients are trusted proxies: the forwarder appends the address
    /// it received the request from to their `X-Forwarded-For` and
    /// `Forwarded` chains, and keeps their `X-Forwarded-Host` (the host the
    /// first proxy saw).
    Append,
}

/// `for=` of `Forwarded` (RFC 7239, section 6: IPv6 quoted and bracketed).
fn forwarded_node(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("\"[{v6}]\""),
    }
}

/// A `Forwarded` value: a token as it is, anything else quoted.
fn forwarded_value(value: &str) -> String {
    let tchar = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if !value.is_empty() && value.chars().all(tchar) {
        value.to_owned()
    } else {
        let escaped = value.replace('\\', "\\\\").replace('"', "\\\"");
        format!("\"{escaped}\"")
    }
}

/// Writes the forwarding headers of a request from `client` (when known)
/// whose `Host` was `host`, under `policy`. Runs before the forwarder
/// replaces `Host` with the upstream's.
pub(crate) fn add_forwarded(
    headers: &mut HeaderMap,
    policy: ForwardedHeaders,
    client: Option<SocketAddr>,
    host: Option<&HeaderValue>,
) {
    if policy == ForwardedHeaders::Replace {
        headers.remove(&X_FORWARDED_FOR);
        headers.remove(&X_FORWARDED_HOST);
        headers.remove(&FORWARDED);
    }
    let host = host.and_then(|value| value.to_str().ok());
    let mut elements = Vec::with_capacity(2);
    if let Some(client) = client {
        let ip = client.ip().to_canonical();
        append_to_list(headers, &X_FORWARDED_FOR, &ip.to_string());
        elements.push(format!("for={}", forwarded_node(ip)));
    }
    if let Some(host) = host {
        if !headers.contains_key(&X_FORWARDED_HOST)
            && let Ok(value) = HeaderValue::from_str(host)
        {
            headers.insert(X_FORWARDED_HOST.clone(), value);
        }
        elements.push(format!("host={}", forwarded_value(host)));
    }
    if !elements.is_empty() {
        append_to_list(headers, &FORWARDED, &elements.join(";"));
    }
}

/// Appends `item` to the comma-separated list in `name` (one line).
fn append_to_list(headers: &mut HeaderMap, name: &HeaderName, item: &str) {
    let joined = {
        let existing: Vec<&str> = headers
            .get_all(name)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .map(str::trim)
            .filter(|value| !value.is_empty())
            .collect();
        if existing.is_empty() {
            item.to_owned()
        } else {
            format!("{}, {item}", existing.join(", "))
        }
    };
    if let Ok(value) = HeaderValue::from_str(&joined) {
        headers.insert(name.clone(), value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_go() {
        let mut headers = map(&[
            ("connection", "close, X-Hop"),
            ("connection", "x-other"),
            ("x-hop", "1"),
            ("x-other", "2"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("trailer", "x-sum"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("proxy-authorization", "Basic x"),
            ("proxy-connection", "keep-alive"),
            ("x-kept", "3"),
        ]);
        remove_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 1, "{headers:?}");
        assert_eq!(headers["x-kept"], "3");
    }

    #[test]
    fn forwarding_headers_replace_or_append() {
        let client: SocketAddr = "192.0.2.7:5000".parse().unwrap();
        let host = HeaderValue::from_static("gw.example:8080");
        let spoofed = || {
            map(&[
                ("x-forwarded-for", "10.9.9.9"),
                ("x-forwarded-host", "evil.example"),
                ("forwarded", "for=10.9.9.9"),
            ])
        };
        let mut headers = spoofed();
        add_forwarded(
            &mut headers,
            ForwardedHeaders::Replace,
            Some(client),
            Some(&host),
        );
        assert_eq!(headers["x-forwarded-for"], "192.0.2.7");
        assert_eq!(headers["x-forwarded-host"], "gw.example:8080");
        assert_eq!(
            headers["forwarded"],
            "for=192.0.2.7;host=\"gw.example:8080\""
        );

        let mut headers = spoofed();
        add_forwarded(
            &mut headers,
            ForwardedHeaders::Append,
            Some(client),
            Some(&host),
        );
        assert_eq!(headers["x-forwarded-for"], "10.9.9.9, 192.0.2.7");
        assert_eq!(headers["x-forwarded-host"], "evil.example");
        assert_eq!(
            headers["forwarded"],
            "for=10.9.9.9, for=192.0.2.7;host=\"gw.example:8080\""
        );

        let v6: SocketAddr = "[2001:db8::1]:1".parse().unwrap();
        let mut headers = HeaderMap::new();
        add_forwarded(&mut headers, ForwardedHeaders::Replace, Some(v6), None);
        assert_eq!(headers["forwarded"], "for=\"[2001:db8::1]\"");
        assert_eq!(headers["x-forwarded-for"], "2001:db8::1");
    }
}
