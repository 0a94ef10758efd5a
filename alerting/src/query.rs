//! The query function rules are evaluated through, and an implementation over Outpost's
//! PromQL engine for any [`Queryable`] (Prometheus' `rules.EngineQueryFunc`).

use outpost_promql::{Queryable, Sample, Value, instant_query};
use outpost_shared::{Labels, Point};
use std::sync::Arc;

/// Evaluates a PromQL expression (as written in the rule file, or in a template's `query`)
/// at a time in ms since the Unix epoch, to an instant vector. A scalar result is one
/// sample with no labels; the `Err` text becomes the rule's last error or the template's
/// error. This is all rule evaluation knows of storage.
pub type QueryFn<'a> = dyn Fn(&str, i64) -> Result<Vec<Sample>, String> + 'a;

/// A [`QueryFn`] over Outpost's engine reading `store`, as Prometheus'
/// `EngineQueryFunc`: vectors as they are, scalars as one unlabelled sample, anything else
/// `rule result is not a vector or scalar`.
pub fn engine_query(
    store: &dyn Queryable,
) -> impl Fn(&str, i64) -> Result<Vec<Sample>, String> + '_ {
    move |text: &str, t_ms: i64| {
        let expr = outpost_promql::parse(text).map_err(|e| e.to_string())?;
        match instant_query(store, &expr, t_ms).map_err(|e| e.to_string())? {
            Value::Vector(v) => Ok(v),
            Value::Scalar(p) => Ok(vec![Sample {
                labels: Arc::new(Labels::default()),
                point: Point {
                    ts: t_ms,
                    value: p.value,
                },
            }]),
            _ => Err("rule result is not a vector or scalar".into()),
        }
    }
}
