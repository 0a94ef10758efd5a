//! [`Problem`]: one thing wrong with a configuration, tied to the key it is about.
//!
//! Validation anywhere in Outpost (program configs, TLS files, check definitions) returns a
//! list of these rather than stopping at the first, so a user fixes a file in one pass.
//! Displayed as `key: message`, the form every `check-config` line has always had.

use std::fmt;

/// What is wrong with the value at `key` (a dotted path such as `buffer.max_bytes` or
/// `scrape[1].targets`; empty when the problem is the file as a whole, e.g. a syntax error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted path of the key, as written in the file; empty for the whole file.
    pub key: String,
    /// What is wrong and, where there is one, what to do about it.
    pub message: String,
}

impl Problem {
    /// A problem with the value at `key`.
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Problem {
            key: key.into(),
            message: message.into(),
        }
    }

    /// A problem with the file as a whole (unreadable, not valid syntax).
    pub fn file(message: impl Into<String>) -> Self {
        Problem::new("", message)
    }

    /// The same problem, its key placed below `parent` (`checks[2]` + `url` is
    /// `checks[2].url`).
    pub fn under(mut self, parent: &str) -> Self {
        self.key = if self.key.is_empty() {
            parent.to_string()
        } else {
            format!("{parent}.{}", self.key)
        };
        self
    }
}

/// Problems one per line, as `check-config` prints them without the file.
pub fn lines(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(Problem::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.key, self.message)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_as_key_colon_message() {
        assert_eq!(
            Problem::new("buffer.max_bytes", "too small").to_string(),
            "buffer.max_bytes: too small"
        );
        assert_eq!(
            Problem::file("line 3: expected `=`").to_string(),
            "line 3: expected `=`"
        );
        assert_eq!(
            Problem::new("url", "no host")
                .under("checks[2]")
                .to_string(),
            "checks[2].url: no host"
        );
        assert_eq!(Problem::file("x").under("checks[0]").key, "checks[0]");
    }
}
