//! The JSON answer a layer gives instead of passing a request on: the
//! signer's refusals and the forwarder's errors share one shape.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};

/// `status` with `{"error": code, "reason": reason}`, `Content-Type:
/// application/json`, its `Content-Length` and `Cache-Control: no-store`;
/// `body` wraps the bytes in the caller's body type.
pub(crate) fn json_error<B>(
    status: StatusCode,
    code: &str,
    reason: &str,
    body: impl FnOnce(Bytes) -> B,
) -> Response<B> {
    let bytes = serde_json::to_vec(&serde_json::json!({ "error": code, "reason": reason }))
        .expect("a JSON object of strings serialises");
    let len = bytes.len();
    let mut response = Response::new(body(Bytes::from(bytes)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reason_is_escaped_json_and_the_length_is_the_bodys() {
        let response = json_error(
            StatusCode::BAD_GATEWAY,
            "upstream",
            "a \"quoted\"\nline",
            |b| b,
        );
        assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
        let value: serde_json::Value = serde_json::from_slice(response.body()).unwrap();
        assert_eq!(value["error"], "upstream");
        assert_eq!(value["reason"], "a \"quoted\"\nline");
        assert_eq!(
            response.headers()[header::CONTENT_LENGTH],
            response.body().len().to_string()
        );
        assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
    }
}
