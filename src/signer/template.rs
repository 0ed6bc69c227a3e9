//! `${...}` claim templates: parsed once at configuration, rendered per
//! request straight into the claims buffer.

use std::fmt;

use http::HeaderName;
use http::request::Parts;

use crate::number::number_keeps_its_value;

/// Where an expression takes its value from.
#[derive(Clone, PartialEq, Eq)]
enum Source {
    /// `req.headers.NAME`: every line of the header, joined with `", "`.
    Header(HeaderName),
    /// `req.query.NAME`: the first parameter with that (decoded) name.
    Query(String),
    /// `req.path`: the URI path as received.
    Path,
    /// `req.method`.
    Method,
    /// `req.host`: the URI authority, else the `Host` header; never the
    /// userinfo.
    Host,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Header(name) => write!(f, "req.headers.{name}"),
            Source::Query(name) => write!(f, "req.query.{name}"),
            Source::Path => f.write_str("req.path"),
            Source::Method => f.write_str("req.method"),
            Source::Host => f.write_str("req.host"),
        }
    }
}

/// One `${...}` expression.
#[derive(Clone, PartialEq, Eq)]
struct Expr {
    source: Source,
    default: Option<String>,
}

#[derive(Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Expr(Expr),
}

/// The JSON type a template renders to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ValueType {
    String,
    Number,
    Boolean,
}

impl ValueType {
    fn name(self) -> &'static str {
        match self {
            ValueType::String => "string",
            ValueType::Number => "number",
            ValueType::Boolean => "boolean",
        }
    }
}

#[derive(Clone, PartialEq, Eq)]
enum Kind {
    /// A string made of literal text and expressions.
    Text(Vec<Part>),
    /// A JSON number from exactly one expression.
    Number(Expr),
    /// A JSON boolean from exactly one expression.
    Boolean(Expr),
}

/// A compiled claim template.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Template {
    source: String,
    kind: Kind,
}

impl fmt::Debug for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Template").field(&self.source).finish()
    }
}

/// Why a claim template was refused at configuration time (the reason of
/// the `ConfigError` the builder returns).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TemplateError {
    /// A `${` without its closing `}`.
    Unterminated {
        /// Byte offset of the `${`.
        at: usize,
    },
    /// The expression is not one of `req.headers.NAME`, `req.query.NAME`,
    /// `req.path`, `req.method` or `req.host`.
    UnknownExpression {
        /// The text between `${` and `}`.
        expression: String,
    },
    /// `req.headers.NAME` with a NAME that is not a valid header name, or
    /// `req.query.` with an empty NAME.
    InvalidName {
        /// The text between `${` and `}`.
        expression: String,
    },
    /// A `number:` or `boolean:` expression that is not the whole template.
    TypedNotAlone {
        /// `"number"` or `"boolean"`.
        expected: &'static str,
    },
    /// The default of a `number:` or `boolean:` expression is not of that
    /// type.
    InvalidDefault {
        /// `"number"` or `"boolean"`.
        expected: &'static str,
        /// The default as written.
        default: String,
    },
    /// The default of a `number:` expression is a number that would not
    /// keep its value (the verifier would refuse every token with it).
    InexactDefault {
        /// The default as written.
        default: String,
    },
}

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TemplateError::Unterminated { at } => {
                write!(f, "the `${{` at byte {at} has no closing `}}`")
            }
            TemplateError::UnknownExpression { expression } => write!(
                f,
                "unknown expression `${{{expression}}}`: expected req.headers.NAME, req.query.NAME, req.path, req.method or req.host"
            ),
            TemplateError::InvalidName { expression } => {
                write!(f, "invalid name in `${{{expression}}}`")
            }
            TemplateError::TypedNotAlone { expected } => write!(
                f,
                "a `${{{expected}:...}}` expression must be the whole template, with no text around it"
            ),
            TemplateError::InvalidDefault { expected, default } => {
                write!(f, "the default {default:?} is not a JSON {expected}")
            }
            TemplateError::InexactDefault { default } => write!(
                f,
                "the default {default:?} is a number that would not keep its value (an integer \
                 beyond 64 bits, or more digits than a double holds), and verifiers refuse such \
                 tokens: use a string (a template without `number:`)"
            ),
        }
    }
}

impl std::error::Error for TemplateError {}

/// Why a template could not be rendered for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RenderError {
    /// The request has no value for the expression and it has no default.
    Missing(String),
    /// The value is not of the expression's type.
    NotA {
        expected: &'static str,
        expression: String,
    },
    /// The value is a JSON number that would not keep its value.
    Inexact(String),
}

impl fmt::Display for RenderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RenderError::Missing(expression) => {
                write!(f, "the request has no value for {expression}")
            }
            RenderError::NotA {
                expected,
                expression,
            } => write!(f, "the value of {expression} is not a JSON {expected}"),
            RenderError::Inexact(expression) => write!(
                f,
                "the value of {expression} is a number that would not keep its value (an \
                 integer beyond 64 bits, or more digits than a double holds): send it as a string"
            ),
        }
    }
}

impl Template {
    /// Parses a template. See the module docs of `signer` for the syntax.
    pub(crate) fn parse(source: &str) -> Result<Template, TemplateError> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = source;
        let mut offset = 0;
        let mut typed = None;
        while let Some(dollar) = rest.find('$') {
            let after = &rest[dollar..];
            if after.starts_with("$${") {
                // `$${` is a literal `${`.
                literal.push_str(&rest[..dollar]);
                literal.push_str("${");
                rest = &rest[dollar + 3..];
                offset += dollar + 3;
                continue;
            }
            if !after.starts_with("${") {
                literal.push_str(&rest[..=dollar]);
                rest = &rest[dollar + 1..];
                offset += dollar + 1;
                continue;
            }
            literal.push_str(&rest[..dollar]);
            let body_start = dollar + 2;
            let Some(close) = rest[body_start..].find('}') else {
                return Err(TemplateError::Unterminated {
                    at: offset + dollar,
                });
            };
            let body = &rest[body_start..body_start + close];
            let (value_type, expr) = parse_expression(body)?;
            if value_type != ValueType::String {
                typed = Some(value_type);
            }
            if !literal.is_empty() {
                parts.push(Part::Literal(std::mem::take(&mut literal)));
            }
            parts.push(Part::Expr(expr));
            let consumed = body_start + close + 1;
            rest = &rest[consumed..];
            offset += consumed;
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }
        let kind = match typed {
            None => Kind::Text(parts),
            Some(expected) => {
                let alone = parts.len() == 1;
                let expr = match parts.pop() {
                    Some(Part::Expr(expr)) if alone => expr,
                    _ => {
                        return Err(TemplateError::TypedNotAlone {
                            expected: expected.name(),
                        });
                    }
                };
                if expected == ValueType::Number {
                    Kind::Number(expr)
                } else {
                    Kind::Boolean(expr)
                }
            }
        };
        Ok(Template {
            source: source.to_owned(),
            kind,
        })
    }

    /// The template as written.
    pub(crate) fn as_str(&self) -> &str {
        &self.source
    }

    /// The JSON type this template renders to.
    pub(crate) fn value_type(&self) -> ValueType {
        match self.kind {
            Kind::Text(_) => ValueType::String,
            Kind::Number(_) => ValueType::Number,
            Kind::Boolean(_) => ValueType::Boolean,
        }
    }

    /// Whether any expression reads the query string.
    pub(crate) fn reads_query(&self) -> bool {
        let is_query = |expr: &Expr| matches!(expr.source, Source::Query(_));
        match &self.kind {
            Kind::Text(parts) => parts
                .iter()
                .any(|part| matches!(part, Part::Expr(expr) if is_query(expr))),
            Kind::Number(expr) | Kind::Boolean(expr) => is_query(expr),
        }
    }

    /// Appends the rendered JSON value (a string, number or boolean) to
    /// `out`. Request values are escaped as JSON string content, so they can
    /// never change the structure around them.
    pub(crate) fn render_json(
        &self,
        request: &RequestValues<'_>,
        out: &mut Vec<u8>,
    ) -> Result<(), RenderError> {
        match &self.kind {
            Kind::Text(parts) => {
                let mut text = String::new();
                for part in parts {
                    match part {
                        Part::Literal(literal) => text.push_str(literal),
                        Part::Expr(expr) => text.push_str(&request.resolve(expr)?),
                    }
                }
                serde_json::to_writer(&mut *out, &text).expect("writing to a Vec cannot fail");
            }
            Kind::Number(expr) => {
                let value = request.resolve(expr)?;
                if parse_number(&value).is_none() {
                    return Err(RenderError::NotA {
                        expected: "number",
                        expression: expr.source.to_string(),
                    });
                }
                // The verifier's rule: a number that would not keep its
                // value as a 64-bit integer or a double is refused, so the
                // signer never makes a token its verifier refuses.
                if !number_keeps_its_value(value.as_bytes()) {
                    return Err(RenderError::Inexact(expr.source.to_string()));
                }
                // The text exactly as received: it is one strict JSON
                // number. Writing it back from an f64 would change its
                // spelling (`1E-3`, `2e+10`).
                out.extend_from_slice(value.as_bytes());
            }
            Kind::Boolean(expr) => {
                let value = request.resolve(expr)?;
                let boolean = parse_boolean(&value).ok_or_else(|| RenderError::NotA {
                    expected: "boolean",
                    expression: expr.source.to_string(),
                })?;
                out.extend_from_slice(if boolean { b"true" } else { b"false" });
            }
        }
        Ok(())
    }
}

/// Parses the text between `${` and `}`.
fn parse_expression(body: &str) -> Result<(ValueType, Expr), TemplateError> {
    let (value_type, rest) = if let Some(rest) = body.strip_prefix("number:") {
        (ValueType::Number, rest)
    } else if let Some(rest) = body.strip_prefix("boolean:") {
        (ValueType::Boolean, rest)
    } else {
        (ValueType::String, body)
    };
    let (path, default) = match rest.split_once(':') {
        Some((path, default)) => (path, Some(default.to_owned())),
        None => (rest, None),
    };
    let invalid_name = || TemplateError::InvalidName {
        expression: body.to_owned(),
    };
    let source = if let Some(name) = path.strip_prefix("req.headers.") {
        Source::Header(HeaderName::from_bytes(name.as_bytes()).map_err(|_| invalid_name())?)
    } else if let Some(name) = path.strip_prefix("req.query.") {
        if name.is_empty() {
            return Err(invalid_name());
        }
        Source::Query(name.to_owned())
    } else {
        match path {
            "req.path" => Source::Path,
            "req.method" => Source::Method,
            "req.host" => Source::Host,
            _ => {
                return Err(TemplateError::UnknownExpression {
                    expression: body.to_owned(),
                });
            }
        }
    };
    if let Some(default) = &default {
        let valid = match value_type {
            ValueType::String => true,
            ValueType::Number => parse_number(default).is_some(),
            ValueType::Boolean => parse_boolean(default).is_some(),
        };
        if !valid {
            return Err(TemplateError::InvalidDefault {
                expected: value_type.name(),
                default: default.clone(),
            });
        }
        if value_type == ValueType::Number && !number_keeps_its_value(default.as_bytes()) {
            return Err(TemplateError::InexactDefault {
                default: default.clone(),
            });
        }
    }
    Ok((value_type, Expr { source, default }))
}

/// A JSON number, exactly as JSON writes it: no whitespace, no `+`, no
/// `NaN` or infinities, finite.
fn parse_number(text: &str) -> Option<serde_json::Number> {
    let json_chars = !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E'));
    if !json_chars {
        return None;
    }
    serde_json::from_str::<serde_json::Number>(text).ok()
}

/// `true` or `false`, lower case.
fn parse_boolean(text: &str) -> Option<bool> {
    match text {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

/// The parts of a request that templates read, with the query string
/// decoded at most once.
pub(crate) struct RequestValues<'a> {
    parts: &'a Parts,
    query: Option<Vec<(String, String)>>,
}

impl<'a> RequestValues<'a> {
    /// Reads `parts`; decodes the query string now if `decode_query`.
    pub(crate) fn new(parts: &'a Parts, decode_query: bool) -> Self {
        let query = decode_query.then(|| {
            parts
                .uri
                .query()
                .map(|query| {
                    form_urlencoded::parse(query.as_bytes())
                        .map(|(name, value)| (name.into_owned(), value.into_owned()))
                        .collect()
                })
                .unwrap_or_default()
        });
        RequestValues { parts, query }
    }

    fn resolve(&self, expr: &Expr) -> Result<std::borrow::Cow<'a, str>, RenderError> {
        use std::borrow::Cow;
        let value: Option<Cow<'a, str>> = match &expr.source {
            Source::Header(name) => {
                let mut lines = self.parts.headers.get_all(name).iter();
                lines.next().map(|first| {
                    let mut value = header_text(first.as_bytes());
                    for line in lines {
                        let owned = value.to_mut();
                        owned.push_str(", ");
                        owned.push_str(&header_text(line.as_bytes()));
                    }
                    value
                })
            }
            Source::Query(name) => self.query.as_ref().and_then(|pairs| {
                pairs
                    .iter()
                    .find(|(key, _)| key == name)
                    .map(|(_, value)| Cow::Owned(value.clone()))
            }),
            Source::Path => Some(Cow::Borrowed(self.parts.uri.path())),
            Source::Method => Some(Cow::Borrowed(self.parts.method.as_str())),
            // The URI's authority wins (RFC 9112, section 3.2.2: a server
            // ignores Host when the request target is in absolute form).
            Source::Host => match self.parts.uri.authority() {
                Some(authority) => Some(Cow::Borrowed(without_userinfo(authority.as_str()))),
                None => self.parts.headers.get(http::header::HOST).map(|host| {
                    match header_text(host.as_bytes()) {
                        Cow::Borrowed(text) => Cow::Borrowed(without_userinfo(text)),
                        Cow::Owned(text) => Cow::Owned(without_userinfo(&text).to_owned()),
                    }
                }),
            },
        };
        match (value, &expr.default) {
            (Some(value), _) => Ok(value),
            (None, Some(default)) => Ok(Cow::Owned(default.clone())),
            (None, None) => Err(RenderError::Missing(expr.source.to_string())),
        }
    }
}

/// `host[:port]` without the `userinfo@` an authority may start with: a
/// password in a URL never becomes a claim.
fn without_userinfo(authority: &str) -> &str {
    authority
        .rsplit_once('@')
        .map_or(authority, |(_userinfo, host)| host)
}

/// A header value as text: UTF-8 when it is, else with U+FFFD for the
/// invalid bytes.
fn header_text(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;

    fn render(template: &str, request: Request<()>) -> Result<serde_json::Value, RenderError> {
        let template = Template::parse(template).unwrap();
        let (parts, ()) = request.into_parts();
        let values = RequestValues::new(&parts, template.reads_query());
        let mut out = Vec::new();
        template.render_json(&values, &mut out)?;
        Ok(serde_json::from_slice(&out).expect("valid JSON"))
    }

    fn request() -> Request<()> {
        Request::post(
            "http://api.example:8443/orders/42?tenant=acme&flag=true&n=-1.5e3&tenant=second",
        )
        .header("x-user", "alice")
        .header("x-multi", "a")
        .header("x-multi", "b")
        .body(())
        .unwrap()
    }

    #[test]
    fn expressions_and_literals() {
        let value = render(
            "${req.method} ${req.host}${req.path} by ${req.headers.X-User} for ${req.query.tenant}",
            request(),
        )
        .unwrap();
        assert_eq!(
            value, "POST api.example:8443/orders/42 by alice for acme",
            "first query value wins"
        );
        assert_eq!(render("${req.headers.x-multi}", request()).unwrap(), "a, b");
        assert_eq!(render("plain text", request()).unwrap(), "plain text");
        assert_eq!(render("", request()).unwrap(), "");
        assert_eq!(
            render("cost: $5, $${req.path} $", request()).unwrap(),
            "cost: $5, ${req.path} $"
        );
    }

    #[test]
    fn host_falls_back_to_the_host_header() {
        let request = Request::get("/x")
            .header("host", "gw.local")
            .body(())
            .unwrap();
        assert_eq!(render("${req.host}", request).unwrap(), "gw.local");
        let request = Request::get("/x").body(()).unwrap();
        assert_eq!(
            render("${req.host}", request),
            Err(RenderError::Missing("req.host".into()))
        );
    }

    /// Issue 16: `${req.host}` copied the absolute-form authority with its
    /// userinfo: `GET http://user:secret@evil.example/` gave
    /// `user:secret@evil.example`.
    #[test]
    fn host_never_copies_userinfo() {
        let request = Request::get("http://user:secret@evil.example:8080/x")
            .header("host", "gw.local")
            .body(())
            .unwrap();
        assert_eq!(
            render("${req.host}", request).unwrap(),
            "evil.example:8080",
            "the authority wins over Host, without its userinfo"
        );
        let request = Request::get("http://user@api.example/").body(()).unwrap();
        assert_eq!(render("${req.host}", request).unwrap(), "api.example");
        let request = Request::get("/x")
            .header("host", "user:secret@gw.local")
            .body(())
            .unwrap();
        assert_eq!(render("${req.host}", request).unwrap(), "gw.local");
    }

    #[test]
    fn defaults_and_missing_values() {
        assert_eq!(
            render("${req.headers.x-tenant:public}", request()).unwrap(),
            "public"
        );
        assert_eq!(
            render("${req.headers.x-tenant:}", request()).unwrap(),
            "",
            "an empty default is a default"
        );
        assert_eq!(
            render("${req.query.missing:a:b}", request()).unwrap(),
            "a:b",
            "the default runs to the closing brace"
        );
        assert_eq!(
            render("${req.headers.x-tenant}", request()),
            Err(RenderError::Missing("req.headers.x-tenant".into()))
        );
    }

    #[test]
    fn typed_values() {
        assert_eq!(
            render("${number:req.query.n}", request()).unwrap(),
            serde_json::json!(-1500.0)
        );
        assert_eq!(
            render("${boolean:req.query.flag}", request()).unwrap(),
            true
        );
        assert_eq!(
            render("${number:req.query.missing:7}", request()).unwrap(),
            7
        );
        assert_eq!(
            render("${boolean:req.query.missing:false}", request()).unwrap(),
            false
        );
        assert_eq!(
            render("${number:req.query.tenant}", request()),
            Err(RenderError::NotA {
                expected: "number",
                expression: "req.query.tenant".into()
            })
        );
    }

    /// A long number used to be parsed to an f64 and written back, so the
    /// backend read a value rounded twice (found by the `claim_template`
    /// fuzz target): `444444444444444444444444` became
    /// `4.444444444444445e23`, which parses to another f64. A number is
    /// written as received, in its own spelling.
    #[test]
    fn numbers_keep_the_text_they_were_given() {
        for text in [
            "18446744073709551615",
            "-9223372036854775808",
            "0.1",
            "-0",
            "1E-3",
            "2e+10",
            "1.7976931348623157e308",
        ] {
            let template = Template::parse("${number:req.headers.x-n}").unwrap();
            let (parts, ()) = Request::builder()
                .header("x-n", text)
                .body(())
                .unwrap()
                .into_parts();
            let mut out = Vec::new();
            template
                .render_json(&RequestValues::new(&parts, false), &mut out)
                .unwrap();
            assert_eq!(out, text.as_bytes());
            let direct: serde_json::Value = serde_json::from_str(text).unwrap();
            let rendered: serde_json::Value = serde_json::from_slice(&out).unwrap();
            assert_eq!(rendered, direct, "{text}");
        }
    }

    /// The verifier refuses a token whose numbers would not keep their
    /// value (`VerifyError::InexactNumber`); the signer applies the same
    /// rule, so it never forwards a token its verifier would refuse: such a
    /// value is a 400 for the request, such a default a configuration
    /// error.
    #[test]
    fn numbers_that_would_not_keep_their_value_are_refused() {
        let template = Template::parse("${number:req.headers.x-n}").unwrap();
        for text in [
            "444444444444444444444444",
            "18446744073709551616",
            "-9223372036854775809",
            "0.1000000000000000055511151231257827",
            "3.14159265358979323846264338327950288",
        ] {
            let (parts, ()) = Request::builder()
                .header("x-n", text)
                .body(())
                .unwrap()
                .into_parts();
            let mut out = Vec::new();
            let err = template
                .render_json(&RequestValues::new(&parts, false), &mut out)
                .unwrap_err();
            assert_eq!(
                err,
                RenderError::Inexact("req.headers.x-n".into()),
                "{text}"
            );
            assert!(err.to_string().contains("send it as a string"), "{err}");
        }
        let err =
            Template::parse("${number:req.headers.x-n:444444444444444444444444}").unwrap_err();
        assert_eq!(
            err,
            TemplateError::InexactDefault {
                default: "444444444444444444444444".into()
            }
        );
        assert!(err.to_string().contains("use a string"), "{err}");
        assert!(Template::parse("${number:req.headers.x-n:18446744073709551615}").is_ok());
    }

    #[test]
    fn numbers_are_strict_json() {
        for good in ["0", "-1", "1.5", "2e10", "1E-3", "18446744073709551616"] {
            assert!(parse_number(good).is_some(), "{good}");
        }
        for bad in [
            "", " 1", "1 ", "+1", "01", "1,2", "1.", ".5", "NaN", "inf", "1e999", "0x10", "1\n",
            "1}", "--1",
        ] {
            assert!(parse_number(bad).is_none(), "{bad:?}");
        }
        for bad in ["True", "1", "yes", " true", ""] {
            assert!(parse_boolean(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn configuration_errors() {
        assert_eq!(
            Template::parse("a ${req.path"),
            Err(TemplateError::Unterminated { at: 2 })
        );
        assert!(matches!(
            Template::parse("${req.body}"),
            Err(TemplateError::UnknownExpression { .. })
        ));
        assert!(matches!(
            Template::parse("${env.HOME}"),
            Err(TemplateError::UnknownExpression { .. })
        ));
        assert!(matches!(
            Template::parse("${req.headers.bad name}"),
            Err(TemplateError::InvalidName { .. })
        ));
        assert!(matches!(
            Template::parse("${req.headers.}"),
            Err(TemplateError::InvalidName { .. })
        ));
        assert!(matches!(
            Template::parse("${req.query.}"),
            Err(TemplateError::InvalidName { .. })
        ));
        assert_eq!(
            Template::parse("n=${number:req.query.n}"),
            Err(TemplateError::TypedNotAlone { expected: "number" })
        );
        assert_eq!(
            Template::parse("${boolean:req.query.a}${req.path}"),
            Err(TemplateError::TypedNotAlone {
                expected: "boolean"
            })
        );
        assert_eq!(
            Template::parse("${number:req.query.n:ten}"),
            Err(TemplateError::InvalidDefault {
                expected: "number",
                default: "ten".into()
            })
        );
        assert!(matches!(
            Template::parse("${boolean:req.query.n:yes}"),
            Err(TemplateError::InvalidDefault { .. })
        ));
    }

    #[test]
    fn value_types() {
        let t = |s| Template::parse(s).unwrap().value_type();
        assert_eq!(t("${req.path}"), ValueType::String);
        assert_eq!(t("${number:req.query.n}"), ValueType::Number);
        assert_eq!(t("${boolean:req.query.n}"), ValueType::Boolean);
        assert!(Template::parse("${req.query.a}").unwrap().reads_query());
        assert!(!Template::parse("${req.path}").unwrap().reads_query());
    }
}
