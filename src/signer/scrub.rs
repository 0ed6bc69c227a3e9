//! Clearing the way for the token header: whatever the client sent that
//! could stand in for it at the backend, or have it dropped on the way.
//!
//! * A look-alike: a header whose name equals the token header's when `_`
//!   and `-` are treated alike (and case is ignored), such as `X_JWT_Token`
//!   next to `X-JWT-Token`. Backends that map `_` to `-` (CGI, WSGI and
//!   the servers in front of them) may read it instead of ours.
//! * A `Connection` token naming the header: `Connection: close,
//!   authorization` makes the header hop-by-hop, so that any compliant
//!   proxy between the signer and the backend drops it (RFC 9110, section
//!   7.6.1).

use http::header::{CONNECTION, HeaderMap, HeaderName, HeaderValue};

/// Removes every look-alike of `name` and every `Connection` token naming
/// it (or a look-alike). `name` itself is left alone.
pub(crate) fn clear_the_way(headers: &mut HeaderMap, name: &HeaderName) {
    remove_lookalikes(headers, name);
    unname_in_connection(headers, name);
}

/// Removes every header whose name is `name` with some `_` and `-`
/// swapped, but not `name` itself.
fn remove_lookalikes(headers: &mut HeaderMap, name: &HeaderName) {
    let ours = name.as_str().as_bytes();
    if !ours.iter().any(|&b| b == b'-' || b == b'_') {
        return;
    }
    let lookalikes: Vec<HeaderName> = headers
        .keys()
        .filter(|other| *other != name && alike(other.as_str().as_bytes(), ours))
        .cloned()
        .collect();
    for lookalike in lookalikes {
        headers.remove(&lookalike);
    }
}

/// Removes the tokens naming `name` (or a look-alike) from every
/// `Connection` line; keeps the other tokens, and the other lines as they
/// were; drops a line with nothing left, and the header with no line left.
fn unname_in_connection(headers: &mut HeaderMap, name: &HeaderName) {
    let ours = name.as_str().as_bytes();
    let names_ours = |line: &HeaderValue| tokens(line).any(|token| alike(token, ours));
    if !headers.get_all(CONNECTION).iter().any(names_ours) {
        return;
    }
    let lines: Vec<HeaderValue> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|line| {
            if !names_ours(line) {
                return Some(line.clone());
            }
            let kept: Vec<&[u8]> = tokens(line).filter(|token| !alike(token, ours)).collect();
            // The kept tokens are bytes of a valid value, joined with ", ".
            (!kept.is_empty())
                .then(|| HeaderValue::from_bytes(&kept.join(&b", "[..])).ok())
                .flatten()
        })
        .collect();
    headers.remove(CONNECTION);
    for line in lines {
        headers.append(CONNECTION, line);
    }
}

/// The elements of a comma-separated list (RFC 9110, section 5.6.1),
/// without their optional whitespace; empty elements are skipped.
fn tokens(line: &HeaderValue) -> impl Iterator<Item = &[u8]> {
    line.as_bytes()
        .split(|&b| b == b',')
        .map(|element| element.trim_ascii())
        .filter(|element| !element.is_empty())
}

/// Whether two header names are equal when case is ignored and `_` and
/// `-` are treated alike. `ours` is lower case (a [`HeaderName`]).
fn alike(theirs: &[u8], ours: &[u8]) -> bool {
    let fold = |b: u8| {
        if b == b'_' {
            b'-'
        } else {
            b.to_ascii_lowercase()
        }
    };
    theirs.len() == ours.len() && theirs.iter().zip(ours).all(|(&a, &b)| fold(a) == fold(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    fn connection(map: &HeaderMap) -> Vec<&str> {
        map.get_all(CONNECTION)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect()
    }

    #[test]
    fn names_are_alike_with_underscores_and_any_case() {
        assert!(alike(b"X_JWT_Token", b"x-jwt-token"));
        assert!(alike(b"x-jwt_token", b"x-jwt-token"));
        assert!(alike(b"AUTHORIZATION", b"authorization"));
        assert!(alike(b"x-jwt-token", b"x_jwt_token"));
        assert!(!alike(b"x-jwt-tokens", b"x-jwt-token"));
        assert!(!alike(b"x.jwt.token", b"x-jwt-token"));
    }

    #[test]
    fn only_look_alikes_go() {
        let name = HeaderName::from_static("x-jwt-token");
        let mut map = headers(&[
            ("x-jwt-token", "ours"),
            ("x_jwt_token", "a"),
            ("x-jwt_token", "b"),
            ("x_jwt_token", "c"),
            ("x-jwt-tokens", "other"),
            ("x-user", "alice"),
        ]);
        clear_the_way(&mut map, &name);
        assert_eq!(map["x-jwt-token"], "ours");
        assert!(map.get("x_jwt_token").is_none() && map.get("x-jwt_token").is_none());
        assert_eq!(map["x-jwt-tokens"], "other");
        assert_eq!(map["x-user"], "alice");
        assert_eq!(map.len(), 3);
    }

    #[test]
    fn connection_lines_lose_only_our_name() {
        let name = HeaderName::from_static("x-jwt-token");
        let mut map = headers(&[
            ("connection", "keep-alive ,\tX-JWT-TOKEN , foo"),
            ("connection", "close"),
            ("connection", "x_jwt_token"),
            ("connection", " , x-jwt-token,,"),
        ]);
        clear_the_way(&mut map, &name);
        assert_eq!(connection(&map), ["keep-alive, foo", "close"]);

        let mut map = headers(&[("connection", "Authorization")]);
        clear_the_way(&mut map, &http::header::AUTHORIZATION);
        assert!(map.get(CONNECTION).is_none(), "nothing left: no header");

        let mut map = headers(&[("connection", "close,  upgrade")]);
        clear_the_way(&mut map, &http::header::AUTHORIZATION);
        assert_eq!(connection(&map), ["close,  upgrade"], "untouched");
    }
}
