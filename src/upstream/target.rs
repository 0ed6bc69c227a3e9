//! The request target as the forwarder accepts it: a path, its
//! dot-segments removed, that cannot climb above the upstream's base path.

use http::{Method, Request, Uri};

use super::error::ForwardError;

/// A request path with its dot-segments removed (RFC 3986, section 5.2.4),
/// `%2e` read as `.` (section 6.2.2.2), or why it is refused:
///
/// * a dot-segment that would climb above the root: forwarded under the
///   upstream's base path, `/../admin` would leave it (`/api/../admin` is
///   `/admin` to the upstream);
/// * an encoded slash or backslash (`%2f`, `%5c`) or a backslash: an
///   upstream that decodes them sees other segments than this check did;
/// * a dot-segment with parameters (`..;/`), which some servers read as
///   `..`;
/// * a target that is not a path (`*`).
///
/// The query is not part of `path` and is left alone.
pub(crate) fn normalise_path(path: &str) -> Result<String, &'static str> {
    let Some(rest) = path.strip_prefix('/') else {
        return Err("the request target is not a path");
    };
    let lower = path.to_ascii_lowercase();
    if lower.contains("%2f") || lower.contains("%5c") || path.contains('\\') {
        return Err("the path holds an encoded slash or a backslash");
    }
    let segments: Vec<&str> = rest.split('/').collect();
    let last = segments.len() - 1;
    let mut kept: Vec<&str> = Vec::with_capacity(segments.len());
    for (i, segment) in segments.iter().enumerate() {
        let decoded = segment.to_ascii_lowercase().replace("%2e", ".");
        let name = decoded.split(';').next().unwrap_or_default();
        match (name, decoded.contains(';')) {
            ("." | "..", true) => return Err("the path holds a dot-segment with parameters"),
            (".", false) => {}
            ("..", false) => {
                if kept.pop().is_none() {
                    return Err("the path climbs above the base path");
                }
            }
            _ => {
                kept.push(segment);
                continue;
            }
        }
        // A final `.` or `..` leaves the path ending in `/`.
        if i == last {
            kept.push("");
        }
    }
    Ok(format!("/{}", kept.join("/")))
}

/// The request, its path normalised, or why the forwarder does not forward
/// it: [`ForwardError::MethodNotAllowed`] (405) for `CONNECT` (a tunnel is
/// not a request to forward), [`ForwardError::BadTarget`] (400) for a
/// target that is not a path (`OPTIONS *`) or a path that climbs above the
/// root, holds `%2f`, `%5c` or a backslash, or a dot-segment with
/// parameters (`..;`). Dot-segments that stay inside are removed
/// (RFC 3986, section 5.2.4; `%2e` is a `.`); the query is left alone.
///
/// [`Forwarder`](super::Forwarder) runs this on every request. Run it
/// also *before* the signer, so that what is signed (a `${req.path}`
/// claim) is what is forwarded and nothing refused is signed:
///
/// ```
/// use http::{Request, StatusCode};
/// use tower_jwt_signer::upstream::check_target;
///
/// let request = Request::get("/a/./b/../c?q=../x").body(()).unwrap();
/// assert_eq!(check_target(request).unwrap().uri(), "/a/c?q=../x");
///
/// let climbing = Request::get("/api/%2e%2e/%2e%2e/admin").body(()).unwrap();
/// assert_eq!(check_target(climbing).unwrap_err().status(), StatusCode::BAD_REQUEST);
/// ```
///
/// # Errors
///
/// The [`ForwardError`] to answer with.
pub fn check_target<B>(request: Request<B>) -> Result<Request<B>, ForwardError> {
    if request.method() == Method::CONNECT {
        return Err(ForwardError::MethodNotAllowed);
    }
    let path = normalise_path(request.uri().path()).map_err(ForwardError::bad_target)?;
    if path == request.uri().path() {
        return Ok(request);
    }
    let (mut parts, body) = request.into_parts();
    let path_and_query = match parts.uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path,
    };
    let mut uri = Uri::builder();
    if let Some(scheme) = parts.uri.scheme() {
        uri = uri.scheme(scheme.clone());
    }
    if let Some(authority) = parts.uri.authority() {
        uri = uri.authority(authority.clone());
    }
    parts.uri = uri
        .path_and_query(path_and_query)
        .build()
        .map_err(|_| ForwardError::bad_target("the normalised path is not a valid URI"))?;
    Ok(Request::from_parts(parts, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_segments_are_removed_or_refused() {
        for (path, expected) in [
            ("/a/./b/../c", Ok("/a/c")),
            ("/docs/..", Ok("/")),
            ("/a/%2e/b/%2E%2E/c/", Ok("/a/c/")),
            ("/plain/path", Ok("/plain/path")),
            ("/", Ok("/")),
            ("/..", Err("the path climbs above the base path")),
            ("/a/../../admin", Err("the path climbs above the base path")),
            ("/.%2e/admin", Err("the path climbs above the base path")),
            (
                "/..%2fadmin",
                Err("the path holds an encoded slash or a backslash"),
            ),
            (
                "/..%5Cadmin",
                Err("the path holds an encoded slash or a backslash"),
            ),
            (
                "/a\\b",
                Err("the path holds an encoded slash or a backslash"),
            ),
            (
                "/..;/admin",
                Err("the path holds a dot-segment with parameters"),
            ),
            ("*", Err("the request target is not a path")),
        ] {
            assert_eq!(
                normalise_path(path).as_deref().map_err(|e| *e),
                expected,
                "{path}"
            );
        }
    }

    #[test]
    fn connect_is_not_forwarded_and_absolute_forms_keep_their_authority() {
        let connect = Request::connect("127.0.0.1:443").body(()).unwrap();
        assert_eq!(
            check_target(connect).unwrap_err(),
            ForwardError::MethodNotAllowed
        );
        let absolute = Request::get("http://h.test/a/../b?x").body(()).unwrap();
        assert_eq!(check_target(absolute).unwrap().uri(), "http://h.test/b?x");
    }
}
