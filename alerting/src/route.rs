//! Alertmanager's routing tree, as Alertmanager 0.25's `dispatch.Route` builds and walks it:
//! the `route:` section of an Alertmanager configuration, every route inheriting its
//! parent's options and overriding what it sets, and [`Route::matches`] returning the
//! routes an alert with given labels goes to.
//!
//! Matchers come in all of Alertmanager's spellings: `matchers:` entries (`severity="page"`,
//! `team =~ db|infra`, `{a="b", c!~"x.*"}`, several to an entry separated by commas,
//! values quoted or not), and the older `match:` and `match_re:` maps. Regular expressions
//! are anchored at both ends. A label an alert lacks matches as the empty string.

use crate::duration::parse_duration;
use crate::rule::LabelMap;
use outpost_promql::{MatchOp, Matcher};
use serde::Deserialize;
use std::collections::BTreeMap;

/// Alertmanager's defaults for the root route's timings (`dispatch.DefaultRouteOpts`).
pub const DEFAULT_GROUP_WAIT_MS: i64 = 30_000;
/// See [`DEFAULT_GROUP_WAIT_MS`].
pub const DEFAULT_GROUP_INTERVAL_MS: i64 = 5 * 60_000;
/// See [`DEFAULT_GROUP_WAIT_MS`].
pub const DEFAULT_REPEAT_INTERVAL_MS: i64 = 4 * 3_600_000;

/// One `route:` entry as written in the YAML.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// The receiver alerts matching here go to (inherited when absent).
    #[serde(default)]
    pub receiver: Option<String>,
    /// Labels to group alerts by; `['...']` groups by all labels.
    #[serde(default)]
    pub group_by: Option<Vec<String>>,
    /// How long to wait before the first notification of a new group.
    #[serde(default)]
    pub group_wait: Option<String>,
    /// How long to wait before notifying about alerts added to a group.
    #[serde(default)]
    pub group_interval: Option<String>,
    /// How long to wait before repeating a notification.
    #[serde(default)]
    pub repeat_interval: Option<String>,
    /// Go on matching the following siblings after this route matched.
    #[serde(default, rename = "continue")]
    pub continue_: bool,
    /// Matcher lists, as [`parse_matchers`] reads them.
    #[serde(default)]
    pub matchers: Vec<String>,
    /// The older equality matchers (`match:`).
    #[serde(default, rename = "match")]
    pub match_eq: BTreeMap<String, String>,
    /// The older regular-expression matchers (`match_re:`).
    #[serde(default)]
    pub match_re: BTreeMap<String, String>,
    /// Names of time intervals during which notifications are muted.
    #[serde(default)]
    pub mute_time_intervals: Vec<String>,
    /// Names of time intervals outside which notifications are muted.
    #[serde(default)]
    pub active_time_intervals: Vec<String>,
    /// Child routes, in order.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
}

/// Whether every matcher accepts the label set `labels` (a label it lacks matches as the
/// empty string).
pub fn matches_all(matchers: &[Matcher], labels: &LabelMap) -> bool {
    matchers
        .iter()
        .all(|m| m.matches(labels.get(&m.name).map_or("", String::as_str)))
}

/// A matcher as Alertmanager writes it in route keys: `name="value"` (`=~` etc.).
pub fn matcher_text(m: &Matcher) -> String {
    format!("{}{}{:?}", m.name, m.op.as_str(), m.value)
}

/// A matcher, its regular expression's error worded with the matcher.
///
/// # Errors
/// The regular expression does not compile.
pub fn matcher(name: &str, op: MatchOp, value: &str) -> Result<Matcher, String> {
    Matcher::new(name, op, value).map_err(|e| format!("{name}{}{value:?}: {e}", op.as_str()))
}

fn valid_name(s: &str) -> bool {
    let mut c = s.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_' || f == ':')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_' || x == ':')
}

/// Parses one `matchers:` entry as Alertmanager's `labels.ParseMatchers`: optional braces,
/// matchers separated by commas outside quotes, each `name op value` with the value quoted
/// (`\"`, `\\` and `\n` escapes) or bare.
///
/// # Errors
/// A matcher that does not parse, naming it.
pub fn parse_matchers(s: &str) -> Result<Vec<Matcher>, String> {
    let t = s.trim();
    let t = t.strip_prefix('{').unwrap_or(t);
    let t = t.strip_suffix('}').unwrap_or(t);
    let mut tokens = Vec::new();
    let mut token = String::new();
    let (mut quoted, mut escaped) = (false, false);
    for c in t.chars() {
        if !quoted && c == ',' {
            tokens.push(std::mem::take(&mut token));
            continue;
        }
        token.push(c);
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == '"' {
            quoted = !quoted;
        }
    }
    if !token.trim().is_empty() {
        tokens.push(token);
    }
    tokens.iter().map(|t| parse_matcher(t)).collect()
}

fn parse_matcher(s: &str) -> Result<Matcher, String> {
    let bad = || format!("bad matcher format: {}", s.trim());
    let t = s.trim();
    let name_end = t
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(t.len());
    let name = &t[..name_end];
    if !valid_name(name) {
        return Err(bad());
    }
    let rest = t[name_end..].trim_start();
    let (op, rest) = if let Some(r) = rest.strip_prefix("=~") {
        (MatchOp::Regex, r)
    } else if let Some(r) = rest.strip_prefix("!~") {
        (MatchOp::NotRegex, r)
    } else if let Some(r) = rest.strip_prefix("!=") {
        (MatchOp::NotEqual, r)
    } else if let Some(r) = rest.strip_prefix('=') {
        (MatchOp::Equal, r)
    } else {
        return Err(bad());
    };
    let raw = rest.trim();
    let (raw, quoted) = match raw.strip_prefix('"') {
        Some(inner) => (inner.strip_suffix('"').ok_or_else(bad)?, true),
        None => (raw, false),
    };
    let mut value = String::with_capacity(raw.len());
    let mut escaped = false;
    for c in raw.chars() {
        if escaped {
            value.push(if c == 'n' { '\n' } else { c });
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == '"' && quoted {
            return Err(bad());
        } else {
            value.push(c);
        }
    }
    if escaped {
        value.push('\\');
    }
    matcher(name, op, &value)
}

/// A route with its options resolved (its own, else its parent's, else the defaults).
#[derive(Clone, Debug)]
pub struct Route {
    /// The receiver's name.
    pub receiver: String,
    /// Labels alerts are grouped by; `group_by_all` when the list was `['...']`.
    pub group_by: Vec<String>,
    /// Group by every label (`group_by: ['...']`).
    pub group_by_all: bool,
    /// `group_wait`, ms.
    pub group_wait_ms: i64,
    /// `group_interval`, ms.
    pub group_interval_ms: i64,
    /// `repeat_interval`, ms.
    pub repeat_interval_ms: i64,
    /// Whether matching goes on to the next sibling after this route matched.
    pub continue_: bool,
    /// All must match, sorted as Alertmanager sorts them.
    pub matchers: Vec<Matcher>,
    /// Names of time intervals (not inherited).
    pub mute_time_intervals: Vec<String>,
    /// Names of active time intervals (not inherited).
    pub active_time_intervals: Vec<String>,
    /// Child routes, in order.
    pub routes: Vec<Route>,
    /// Alertmanager's route key: the parent's key, `/`, and this route's matchers
    /// (`{}/{severity="page"}`); the root's is `{}`.
    pub key: String,
}

impl Route {
    /// Builds the tree under `cfg` as the root route (no parent).
    ///
    /// # Errors
    /// Every problem: a bad duration or matcher (with its path in the tree, such as
    /// `route.routes[1].matchers`), a root route with matchers or without a receiver.
    pub fn new_root(cfg: &RouteConfig) -> Result<Route, Vec<String>> {
        let mut problems = Vec::new();
        if cfg.receiver.as_deref().unwrap_or("").is_empty() {
            problems.push("route: root route must specify a default receiver".to_string());
        }
        if !cfg.matchers.is_empty() || !cfg.match_eq.is_empty() || !cfg.match_re.is_empty() {
            problems.push("route: root route must not have any matchers".to_string());
        }
        let root = Route {
            receiver: String::new(),
            group_by: Vec::new(),
            group_by_all: false,
            group_wait_ms: DEFAULT_GROUP_WAIT_MS,
            group_interval_ms: DEFAULT_GROUP_INTERVAL_MS,
            repeat_interval_ms: DEFAULT_REPEAT_INTERVAL_MS,
            continue_: false,
            matchers: Vec::new(),
            mute_time_intervals: Vec::new(),
            active_time_intervals: Vec::new(),
            routes: Vec::new(),
            key: String::new(),
        };
        let r = Route::build(cfg, &root, "route", &mut problems);
        if problems.is_empty() {
            Ok(r)
        } else {
            Err(problems)
        }
    }

    fn build(cfg: &RouteConfig, parent: &Route, path: &str, problems: &mut Vec<String>) -> Route {
        let mut dur = |v: &Option<String>, key: &str, inherited: i64| match v {
            None => inherited,
            Some(s) => match parse_duration(s) {
                Ok(ms) => ms,
                Err(e) => {
                    problems.push(format!("{path}.{key}: {e}"));
                    inherited
                }
            },
        };
        let group_wait_ms = dur(&cfg.group_wait, "group_wait", parent.group_wait_ms);
        let group_interval_ms = dur(
            &cfg.group_interval,
            "group_interval",
            parent.group_interval_ms,
        );
        let repeat_interval_ms = dur(
            &cfg.repeat_interval,
            "repeat_interval",
            parent.repeat_interval_ms,
        );
        let (group_by, group_by_all) = match &cfg.group_by {
            None => (parent.group_by.clone(), parent.group_by_all),
            Some(list) if list.iter().any(|l| l == "...") => (Vec::new(), true),
            Some(list) => (list.clone(), false),
        };
        let mut matchers = Vec::new();
        for (k, v) in &cfg.match_eq {
            match matcher(k, MatchOp::Equal, v) {
                Ok(m) => matchers.push(m),
                Err(e) => problems.push(format!("{path}.match: {e}")),
            }
        }
        for (k, v) in &cfg.match_re {
            match matcher(k, MatchOp::Regex, v) {
                Ok(m) => matchers.push(m),
                Err(e) => problems.push(format!("{path}.match_re: {e}")),
            }
        }
        for m in &cfg.matchers {
            match parse_matchers(m) {
                Ok(ms) => matchers.extend(ms),
                Err(e) => problems.push(format!("{path}.matchers: {e}")),
            }
        }
        // Alertmanager's labels.Matchers sort: by name, then type, then value.
        matchers.sort_by(|a, b| {
            (a.name.as_str(), a.op, a.value.as_str()).cmp(&(
                b.name.as_str(),
                b.op,
                b.value.as_str(),
            ))
        });
        let shown: Vec<String> = matchers.iter().map(matcher_text).collect();
        let key = if parent.key.is_empty() {
            format!("{{{}}}", shown.join(","))
        } else {
            format!("{}/{{{}}}", parent.key, shown.join(","))
        };
        let mut route = Route {
            key,
            receiver: cfg
                .receiver
                .clone()
                .filter(|r| !r.is_empty())
                .unwrap_or_else(|| parent.receiver.clone()),
            group_by,
            group_by_all,
            group_wait_ms,
            group_interval_ms,
            repeat_interval_ms,
            continue_: cfg.continue_,
            matchers,
            mute_time_intervals: cfg.mute_time_intervals.clone(),
            active_time_intervals: cfg.active_time_intervals.clone(),
            routes: Vec::new(),
        };
        route.routes = cfg
            .routes
            .iter()
            .enumerate()
            .map(|(i, c)| Route::build(c, &route, &format!("{path}.routes[{i}]"), problems))
            .collect();
        route
    }

    /// The routes an alert with `labels` goes to, as Alertmanager's `Route.Match`: none
    /// when this route's matchers fail; else the matches of its children in order, stopping
    /// after the first child that matched without `continue`; this route itself when no
    /// child matched.
    pub fn matches<'a>(&'a self, labels: &BTreeMap<String, String>) -> Vec<&'a Route> {
        if !matches_all(&self.matchers, labels) {
            return Vec::new();
        }
        let mut all = Vec::new();
        for child in &self.routes {
            let found = child.matches(labels);
            let matched = !found.is_empty();
            all.extend(found);
            if matched && !child.continue_ {
                break;
            }
        }
        if all.is_empty() {
            all.push(self);
        }
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matchers_in_every_spelling() {
        let m = parse_matchers(r#"{a="b", c=~"x,y|z", d!=e ,f!~ "g\"h"}"#).unwrap();
        let shown: Vec<String> = m.iter().map(matcher_text).collect();
        assert_eq!(
            shown,
            vec![r#"a="b""#, r#"c=~"x,y|z""#, r#"d!="e""#, r#"f!~"g\"h""#]
        );
        assert!(m[1].matches("z") && !m[1].matches("zz"));
        assert!(parse_matchers("a").is_err());
        assert!(parse_matchers("1a=b").is_err());
        assert!(parse_matchers("a=~(").is_err());
        assert!(parse_matchers("team =~ front.*").unwrap()[0].matches("frontend"));
    }

    #[test]
    fn options_inherit_and_routes_continue() {
        let cfg: RouteConfig = serde_saphyr::from_str(
            "receiver: r\ngroup_by: [alertname]\ngroup_wait: 10s\nroutes:\n  - matchers: [a=1]\n    receiver: one\n    continue: true\n    repeat_interval: 1h\n  - matchers: [b=2]\n    group_by: ['...']\n",
        )
        .unwrap();
        let root = Route::new_root(&cfg).unwrap();
        let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let got = root.matches(&labels(&[("a", "1"), ("b", "2")]));
        assert_eq!(
            got.iter().map(|r| r.receiver.as_str()).collect::<Vec<_>>(),
            vec!["one", "r"]
        );
        assert_eq!(got[0].group_wait_ms, 10_000);
        assert_eq!(got[0].repeat_interval_ms, 3_600_000);
        assert_eq!(got[0].group_by, vec!["alertname"]);
        assert!(got[1].group_by_all);
        assert_eq!(got[1].repeat_interval_ms, DEFAULT_REPEAT_INTERVAL_MS);
        assert_eq!(root.matches(&labels(&[])).len(), 1);
        let bad: RouteConfig =
            serde_saphyr::from_str("matchers: [a=1]\nroutes:\n  - group_wait: soon\n").unwrap();
        let e = Route::new_root(&bad).unwrap_err().join("\n");
        assert!(
            e.contains("root route must specify a default receiver"),
            "{e}"
        );
        assert!(e.contains("root route must not have any matchers"), "{e}");
        assert!(e.contains("route.routes[0].group_wait:"), "{e}");
    }
}
