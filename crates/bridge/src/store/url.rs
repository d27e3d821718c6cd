//! `REDIS_URL`, which may carry a password: it prints redacted, so it is safe in logs and errors.

use std::fmt;

use reqwest::Url;

/// The Redis URL, which may carry a password (`redis://:pass@host/0`): `Debug` and `Display` show
/// it with the password (and user name) replaced by `***`, so it is safe in logs and errors. Read
/// it with [`RedisUrl::expose`] only to connect.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl(Url);

impl RedisUrl {
    /// Parses `redis://[user[:password]@]host[:port][/db]`; the error names `REDIS_URL` and never
    /// repeats a password.
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.trim().starts_with("rediss://") {
            return Err(
                "REDIS_URL uses rediss:// (TLS), which this build does not support: use redis://"
                    .to_owned(),
            );
        }
        let url = Url::parse(raw.trim()).ok().filter(|url| {
            url.scheme() == "redis" && url.host_str().is_some_and(|host| !host.is_empty())
        });
        match url {
            Some(url) => Ok(Self(url)),
            None => Err(format!(
                "REDIS_URL={:?} is not a valid redis:// URL",
                redact_userinfo(raw.trim())
            )),
        }
    }

    /// The URL itself, password included, for the Redis client.
    pub fn expose(&self) -> &str {
        self.0.as_str()
    }

    /// The URL with any credentials replaced by `***`.
    pub fn redacted(&self) -> String {
        redact_userinfo(self.0.as_str())
    }
}

/// `scheme://user:pass@rest` → `scheme://***@rest`; URLs without credentials are unchanged.
fn redact_userinfo(raw: &str) -> String {
    let Some((scheme, rest)) = raw.split_once("://") else {
        return if raw.contains('@') {
            "***".to_owned()
        } else {
            raw.to_owned()
        };
    };
    match rest.rsplit_once('@') {
        Some((_, host)) => format!("{scheme}://***@{host}"),
        None => raw.to_owned(),
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedisUrl({})", self.redacted())
    }
}

impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_password_never_prints() {
        let url = RedisUrl::parse("redis://:hunter2@cache.internal:6380/2").expect("a Redis URL");
        assert_eq!(url.expose(), "redis://:hunter2@cache.internal:6380/2");
        assert_eq!(url.to_string(), "redis://***@cache.internal:6380/2");
        assert!(!format!("{url:?}").contains("hunter2"));
    }

    #[test]
    fn bad_redis_url_names_the_variable_without_its_password() {
        let err = RedisUrl::parse("http://:hunter2@cache").unwrap_err();
        assert!(err.starts_with("REDIS_URL="), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
        let err = RedisUrl::parse("rediss://:hunter2@cache").unwrap_err();
        assert!(err.starts_with("REDIS_URL uses rediss://"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }
}
