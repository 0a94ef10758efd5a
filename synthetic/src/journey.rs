//! Multi-step `http` checks (API journeys): steps run in order, each may capture values
//! (JSON path, header, regex) used as `${var}` in later steps; the first failing step stops
//! the journey and is reported by name. `probe_dns_lookup_time_seconds` sums the steps'
//! lookups and `probe_ip_protocol` is the family of the last step's connection.

use crate::assert::{capture, substitute};
use crate::def::{CheckDef, DEFAULT_MAX_BODY};
use crate::http::{Req, evaluate, fetch, merged_headers};
use crate::outcome::{Outcome, StepOutcome};
use std::collections::BTreeMap;
use std::time::Instant;
use tokio::time::timeout_at;

pub(crate) async fn run(def: &CheckDef, deadline: tokio::time::Instant) -> Outcome {
    let mut o = Outcome::new(def);
    let mut vars: BTreeMap<String, String> = BTreeMap::new();
    let max = def.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY);
    let mut lookup = std::time::Duration::ZERO;
    let mut family = None;
    for (i, s) in def.steps.iter().enumerate() {
        let name = s.display_name(i);
        let t0 = Instant::now();
        let res: Result<(), String> = async {
            let url = substitute(&s.url, &vars).map_err(|e| format!("url: {e}"))?;
            let mut headers = Vec::new();
            for (k, v) in merged_headers(&def.headers, &s.headers) {
                headers.push((
                    k,
                    substitute(v, &vars).map_err(|e| format!("header {k}: {e}"))?,
                ));
            }
            let body = match &s.body {
                Some(b) => Some(substitute(b, &vars).map_err(|e| format!("body: {e}"))?),
                None => None,
            };
            let req = Req {
                method: s.method.as_deref().unwrap_or("GET"),
                url,
                headers,
                body,
            };
            let f = match timeout_at(deadline, fetch(def, req, max)).await {
                Err(_) => return Err(crate::timeout_reason(def)),
                Ok(r) => r?,
            };
            lookup += f.phases.resolve;
            family = Some(f.ip_protocol);
            evaluate(&mut o, s.assert.as_ref(), &f)?;
            for (var, c) in &s.capture {
                let v = capture(var, c, &f.response())?;
                vars.insert(var.clone(), v);
            }
            Ok(())
        }
        .await;
        let ok = res.is_ok();
        if i + 1 == def.steps.len() || !ok {
            o.metric("probe_dns_lookup_time_seconds", lookup.as_secs_f64());
            if let Some(f) = family {
                o.metric("probe_ip_protocol", f.number());
            }
        }
        o.steps.push(StepOutcome {
            name: name.clone(),
            success: ok,
            duration: t0.elapsed(),
        });
        if let Err(e) = res {
            o.failed_step = Some(name);
            o.reason = Some(e);
            return o;
        }
    }
    o.success = true;
    o
}
