//! Redis URLs with their credentials redacted, for logs, errors and
//! `Debug`.

/// `url` with the password of its user information replaced by `***`, and
/// the values of `password`/`pass` query parameters too. The user name
/// stays (it names the ACL user, which helps to debug a refused login).
pub(super) fn redact(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, url),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{user}:***@{host}"),
            // A lone `user@`: Redis takes it as the password.
            None if !userinfo.is_empty() => format!("***@{host}"),
            None => format!("@{host}"),
        },
        None => authority.to_owned(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((name, _)) if matches!(name, "password" | "pass") => {
                        format!("{name}=***")
                    }
                    _ => pair.to_owned(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => tail.to_owned(),
    };
    match scheme {
        Some(scheme) => format!("{scheme}://{authority}{tail}"),
        None => format!("{authority}{tail}"),
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn passwords_are_redacted_and_the_rest_kept() {
        for (url, redacted) in [
            ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
            (
                "redis://gw:s3cret@host:6379/1",
                "redis://gw:***@host:6379/1",
            ),
            ("rediss://:s3cret@host", "rediss://:***@host"),
            ("redis://s3cret@host/", "redis://***@host/"),
            ("redis://gw:p@ss:w@rd@host/", "redis://gw:***@host/"),
            (
                "redis://host/?password=s3cret&protocol=resp3",
                "redis://host/?password=***&protocol=resp3",
            ),
            ("gw:s3cret@host", "gw:***@host"),
        ] {
            assert_eq!(redact(url), redacted, "{url}");
        }
    }
}
