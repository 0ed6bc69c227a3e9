//! The HTTP side every published document shares (the JWKS, the discovery
//! document): one exact path, `GET` and `HEAD`, a strong `ETag` with
//! `If-None-Match` answered `304`, `Cache-Control: public, max-age=N`, and
//! the checks of those settings.

use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode};
use http_body_util::Full;

use crate::error::ConfigError;

/// Where and how a document is served. Built once, by a service's builder.
#[derive(Debug)]
pub(crate) struct Endpoint {
    pub(crate) path: String,
    pub(crate) max_age: Duration,
    pub(crate) content_type: HeaderValue,
    cache_control: HeaderValue,
}

impl Endpoint {
    /// Checks `path` and `max_age` (at most `ceiling`, the registries' JWKS
    /// max-age; `None`: the ceiling).
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] for `path` (not an absolute path of visible ASCII
    /// without `?` or `#`), then `max_age` (not whole seconds, or longer
    /// than `ceiling`).
    pub(crate) fn new(
        path: String,
        max_age: Option<Duration>,
        ceiling: Duration,
        content_type: HeaderValue,
    ) -> Result<Self, ConfigError> {
        let valid = path.starts_with('/')
            && path
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'?' && b != b'#');
        if !valid {
            return Err(ConfigError::new(
                "path",
                path,
                "it must start with '/' and hold only visible ASCII, without '?' or '#'",
            ));
        }
        let max_age = max_age.unwrap_or(ceiling);
        if max_age.subsec_nanos() != 0 {
            return Err(ConfigError::new("max_age", max_age, "use whole seconds"));
        }
        if max_age > ceiling {
            return Err(ConfigError::new(
                "max_age",
                max_age,
                format!(
                    "longer than the registry's JWKS max-age ({} s): verifiers would cache the \
                     keys longer than the rotator publishes them ahead; use at most that, or \
                     raise KeyRegistryBuilder::jwks_max_age",
                    ceiling.as_secs()
                ),
            ));
        }
        Ok(Endpoint {
            path,
            max_age,
            content_type,
            cache_control: HeaderValue::from_str(&format!("public, max-age={}", max_age.as_secs()))
                .expect("digits are a valid header value"),
        })
    }

    /// What to do before the document is looked at: `Ok(head)` for `GET`
    /// (`false`) or `HEAD` (`true`) on the path; else the refusal: 404 on
    /// another path (no prefix matching; a query does not count), 405 for
    /// another method.
    pub(crate) fn route(&self, method: &Method, path: &str) -> Result<bool, Refused> {
        if path != self.path {
            return Err(Refused(StatusCode::NOT_FOUND));
        }
        match *method {
            Method::GET => Ok(false),
            Method::HEAD => Ok(true),
            _ => Err(Refused(StatusCode::METHOD_NOT_ALLOWED)),
        }
    }

    /// 200 with `body` (headers only for `head`), or 304 when the request's
    /// `If-None-Match` matches `etag`; both with `Cache-Control` and `ETag`.
    pub(crate) fn serve(
        &self,
        head: bool,
        request: &HeaderMap,
        body: &Bytes,
        etag: &HeaderValue,
    ) -> Response<Full<Bytes>> {
        let mut response = if if_none_match(request, etag) {
            empty(StatusCode::NOT_MODIFIED)
        } else {
            let mut response = Response::new(if head {
                Full::default()
            } else {
                Full::new(body.clone())
            });
            let headers = response.headers_mut();
            headers.insert(header::CONTENT_TYPE, self.content_type.clone());
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
            response
        };
        let headers = response.headers_mut();
        headers.insert(header::CACHE_CONTROL, self.cache_control.clone());
        headers.insert(header::ETAG, etag.clone());
        response
    }

    #[cfg(test)]
    pub(crate) fn cache_control(&self) -> &HeaderValue {
        &self.cache_control
    }
}

/// A request [`Endpoint::route`] refuses: its status.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Refused(StatusCode);

impl Refused {
    /// The empty answer, with `Allow: GET, HEAD` on a 405.
    pub(crate) fn into_response(self) -> Response<Full<Bytes>> {
        let mut response = empty(self.0);
        if self.0 == StatusCode::METHOD_NOT_ALLOWED {
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        }
        response
    }
}

/// RFC 9110 section 13.1.2: whether the request's `If-None-Match` lines
/// hold `*`, or a tag equal to `ours` under weak comparison (a `W/` prefix
/// is ignored).
fn if_none_match(request: &HeaderMap, ours: &HeaderValue) -> bool {
    let ours = ours.as_bytes();
    request.get_all(header::IF_NONE_MATCH).iter().any(|line| {
        line.as_bytes()
            .split(|&b| b == b',')
            .map(|tag| tag.trim_ascii())
            .any(|tag| tag == b"*" || tag.strip_prefix(b"W/").unwrap_or(tag) == ours)
    })
}

fn empty(status: StatusCode) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::default());
    *response.status_mut() = status;
    response
}
