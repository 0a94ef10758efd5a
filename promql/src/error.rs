//! [`QueryError`]: every way parsing or evaluating a query fails, with Prometheus' texts.

use crate::storage::StorageError;

/// Why a query was refused or failed. Texts are Prometheus 2.42's where it has one.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The text is not valid PromQL.
    #[error("parse error: {0}")]
    Parse(String),
    /// Valid PromQL that this version cannot evaluate; names the construct.
    #[error("unsupported expression: {0}; this version cannot evaluate it yet")]
    Unsupported(String),
    /// A selector that would select every series.
    #[error("vector selector must contain at least one non-empty matcher")]
    EmptySelector,
    /// A `=~`/`!~` matcher whose value is not a regular expression.
    #[error("invalid regular expression {pattern:?} for label {label:?}: {reason}")]
    BadRegex {
        /// The label name.
        label: String,
        /// The value as written.
        pattern: String,
        /// What the regex compiler said.
        reason: String,
    },
    /// Only a series selector is accepted here (e.g. `match[]`): no range, offset or `@`.
    #[error("expected a series selector such as up{{job=\"node\"}}, got {0}")]
    NotASeriesSelector(String),
    /// A range query of an expression that yields a range vector.
    #[error(
        "invalid expression type \"range vector\" for range query, must be Scalar or instant Vector"
    )]
    RangeVectorInRangeQuery,
    /// A range query of a string expression.
    #[error("invalid expression type \"string\" for range query, must be Scalar or instant Vector")]
    StringInRangeQuery,
    /// A failure while evaluating, in Prometheus' words (e.g. many-to-many matching,
    /// duplicate series after a function dropped the metric name, an invalid argument).
    #[error("{0}")]
    Execution(String),
    /// `end` before `start`.
    #[error("end timestamp must not be before start time")]
    EndBeforeStart,
    /// `step` of zero or less.
    #[error(
        "zero or negative query resolution step widths are not accepted. Try a positive integer"
    )]
    NonPositiveStep,
    /// More than [`crate::MAX_STEPS`] steps after the first.
    #[error(
        "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)"
    )]
    TooManySteps,
    /// More than [`crate::MAX_SAMPLES`] points would be loaded.
    #[error("query processing would load too many samples into memory in query execution")]
    TooManySamples,
    /// The caller cancelled the query (its deadline passed), as Prometheus'
    /// `ErrQueryTimeout` during evaluation.
    #[error("query timed out in expression evaluation")]
    Timeout,
    /// The store could not be read.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl QueryError {
    /// True for errors caused by the query text itself (Prometheus reports them against the
    /// `query` parameter); false for range, execution and storage errors, and for a range
    /// query of a range vector or string (Prometheus reports those without naming a
    /// parameter).
    pub fn is_query_text_error(&self) -> bool {
        matches!(
            self,
            QueryError::Parse(_)
                | QueryError::Unsupported(_)
                | QueryError::EmptySelector
                | QueryError::BadRegex { .. }
                | QueryError::NotASeriesSelector(_)
        )
    }
}
