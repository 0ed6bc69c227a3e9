//! Code shared by the examples (not an example itself): their command-line
//! conventions and the bodies they answer with.
//!
//! Every example parses its flags with clap (derive), in one style: `--help`
//! lists each flag with its default and its environment variable, every
//! flag can also be set from the environment with the `TJS_` prefix
//! (`--upstream` is `TJS_UPSTREAM`, `--jwks-max-age` is
//! `TJS_JWKS_MAX_AGE`; a flag given on the command line wins over its
//! variable; a repeatable flag takes one value per line of its variable),
//! and a refused value exits with status 2 and a message that names the
//! flag.
#![allow(dead_code)] // each example uses a part

use std::fmt::Display;
use std::time::Duration;

use bytes::Bytes;
use clap::CommandFactory;
use clap::error::ErrorKind;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Full, combinators::UnsyncBoxBody};

/// The line every example's `--help` ends with.
pub(crate) const ENV_HELP: &str = "\
Every flag can also be set with the environment variable shown beside it
(prefix TJS_); the command line wins. A repeatable flag takes one value per
line of its variable.";

/// Errors carried by the examples' bodies.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A response body of any origin (upstream, JWKS, the signer, an error).
pub(crate) type AnyBody = UnsyncBoxBody<Bytes, BoxError>;

/// Boxes any body whose data is `Bytes`.
pub(crate) fn boxed<B>(body: B) -> AnyBody
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed_unsync()
}

/// A small JSON response.
pub(crate) fn json_response(status: StatusCode, value: &serde_json::Value) -> Response<AnyBody> {
    let mut response = Response::new(boxed(Full::new(Bytes::from(value.to_string()))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// A whole number of seconds (`--ttl 60`), for clap's `value_parser`.
pub(crate) fn seconds(text: &str) -> Result<Duration, String> {
    text.parse::<u64>()
        .map(Duration::from_secs)
        .map_err(|err| format!("{err} (whole seconds)"))
}

/// As [`seconds`], at least 1.
pub(crate) fn positive_seconds(text: &str) -> Result<Duration, String> {
    match seconds(text)? {
        Duration::ZERO => Err("must be at least 1".to_owned()),
        duration => Ok(duration),
    }
}

/// Exits with status 2 and `message`, in clap's style (`error: ...`, the
/// usage line, `For more information, try '--help'.`): for what clap
/// cannot check itself (a setting the library refuses).
pub(crate) fn refuse<C: CommandFactory>(message: impl Display) -> ! {
    C::command()
        .error(ErrorKind::ValueValidation, message)
        .exit()
}

/// The flag of a library setting (a [`ConfigError`]'s `setting()`), when
/// the example has one.
///
/// [`ConfigError`]: tower_jwt_signer::ConfigError
pub(crate) fn flag_of(setting: &str) -> Option<&'static str> {
    Some(match setting {
        "ttl" | "token_ttl" => "--ttl",
        "max_age" | "jwks_max_age" => "--jwks-max-age",
        "header_name" => "--header",
        "scheme" => "--scheme",
        "issuer" => "--issuer",
        "audience" | "audiences" => "--audience",
        "subject" => "--subject",
        "claim" | "template_claim" | "claims" => "--claim",
        "rotate_every" | "period" => "--rotate-every",
        "prepublish" => "--prepublish",
        "retain" => "--retain",
        "follower_poll_interval" => "--redis-poll",
        "leeway" => "--leeway",
        "refresh_cooldown" => "--refresh-cooldown",
        "jwks_uri" => "--jwks-uri",
        _ => return None,
    })
}

/// [`refuse`] with a library setting's error, naming its flag.
pub(crate) fn refuse_setting<C: CommandFactory>(err: &tower_jwt_signer::ConfigError) -> ! {
    match flag_of(err.setting()) {
        Some(flag) => refuse::<C>(format!("{err} ({flag})")),
        None => refuse::<C>(err),
    }
}
