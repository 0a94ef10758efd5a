//! Alertmanager's inhibition, as Alertmanager 0.25's `inhibit.Inhibitor` decides it: an
//! alert matching a rule's target matchers is muted while a firing alert matching its
//! source matchers has the same values for every label in `equal` (a label both lack counts
//! as equal). An alert that matches both sides is never muted by an alert that also matches
//! both (so an alert cannot inhibit itself). Rules are written in the new form
//! (`source_matchers`, `target_matchers`) or the old one (`source_match`, `source_match_re`,
//! `target_match`, `target_match_re`), or both.

use crate::route::{matcher, matches_all, parse_matchers};
use crate::rule::LabelMap;
use outpost_promql::{MatchOp, Matcher};
use serde::Deserialize;
use std::collections::BTreeMap;

/// One `inhibit_rules:` entry as written in the YAML.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InhibitRuleConfig {
    /// Old-style equality matchers for the source alerts.
    #[serde(default)]
    pub source_match: BTreeMap<String, String>,
    /// Old-style regular-expression matchers for the source alerts.
    #[serde(default)]
    pub source_match_re: BTreeMap<String, String>,
    /// Matcher lists for the source alerts.
    #[serde(default)]
    pub source_matchers: Vec<String>,
    /// Old-style equality matchers for the muted alerts.
    #[serde(default)]
    pub target_match: BTreeMap<String, String>,
    /// Old-style regular-expression matchers for the muted alerts.
    #[serde(default)]
    pub target_match_re: BTreeMap<String, String>,
    /// Matcher lists for the muted alerts.
    #[serde(default)]
    pub target_matchers: Vec<String>,
    /// Labels that must have the same value in source and target.
    #[serde(default)]
    pub equal: Vec<String>,
}

/// An inhibition rule, its matchers parsed.
#[derive(Clone, Debug)]
pub struct InhibitRule {
    /// What a muting alert must match.
    pub source: Vec<Matcher>,
    /// What a muted alert must match.
    pub target: Vec<Matcher>,
    /// Labels that must be equal on both.
    pub equal: Vec<String>,
}

fn matchers(
    eq: &BTreeMap<String, String>,
    re: &BTreeMap<String, String>,
    lists: &[String],
) -> Result<Vec<Matcher>, String> {
    let mut out = Vec::new();
    for (k, v) in eq {
        out.push(matcher(k, MatchOp::Equal, v)?);
    }
    for (k, v) in re {
        out.push(matcher(k, MatchOp::Regex, v)?);
    }
    for l in lists {
        out.extend(parse_matchers(l)?);
    }
    Ok(out)
}

impl InhibitRule {
    /// Parses one rule.
    ///
    /// # Errors
    /// A matcher that does not parse, with the side it is on.
    pub fn new(cfg: &InhibitRuleConfig) -> Result<InhibitRule, String> {
        Ok(InhibitRule {
            source: matchers(
                &cfg.source_match,
                &cfg.source_match_re,
                &cfg.source_matchers,
            )
            .map_err(|e| format!("source: {e}"))?,
            target: matchers(
                &cfg.target_match,
                &cfg.target_match_re,
                &cfg.target_matchers,
            )
            .map_err(|e| format!("target: {e}"))?,
            equal: cfg.equal.clone(),
        })
    }

    /// The firing alert of `firing` that mutes `target` under this rule, if any.
    pub fn muted_by<'a>(&self, firing: &'a [LabelMap], target: &LabelMap) -> Option<&'a LabelMap> {
        if !matches_all(&self.target, target) {
            return None;
        }
        let two_sided = matches_all(&self.source, target);
        firing.iter().find(|s| {
            matches_all(&self.source, s)
                && !(two_sided && matches_all(&self.target, s))
                && self.equal.iter().all(|n| {
                    s.get(n).map_or("", String::as_str) == target.get(n).map_or("", String::as_str)
                })
        })
    }
}

/// Whether any rule mutes `target` while the alerts in `firing` fire.
pub fn inhibited(rules: &[InhibitRule], firing: &[LabelMap], target: &LabelMap) -> bool {
    rules.iter().any(|r| r.muted_by(firing, target).is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(pairs: &[(&str, &str)]) -> LabelMap {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn critical_mutes_warning_of_the_same_cluster_only() {
        let cfg: InhibitRuleConfig = serde_saphyr::from_str(
            "source_matchers: [severity=critical]\ntarget_match: {severity: warning}\nequal: [cluster]\n",
        )
        .unwrap();
        let r = InhibitRule::new(&cfg).unwrap();
        let firing = vec![l(&[("severity", "critical"), ("cluster", "a")])];
        assert!(inhibited(
            std::slice::from_ref(&r),
            &firing,
            &l(&[("severity", "warning"), ("cluster", "a")])
        ));
        assert!(!inhibited(
            std::slice::from_ref(&r),
            &firing,
            &l(&[("severity", "warning"), ("cluster", "b")])
        ));
        // A label both lack is equal.
        let firing = vec![l(&[("severity", "critical")])];
        assert!(inhibited(&[r], &firing, &l(&[("severity", "warning")])));
    }
}
