//! Rollups: a series' points summarised per fixed bucket of time (5 minutes, 1 hour), so
//! that functions of long windows read one bucket instead of hundreds of points, and data
//! older than the raw retention can still be queried.
//!
//! A [`Bucket`] covers `[start, start + resolution)` and keeps what the functions below need
//! to give the answer they give over the raw points (stale markers left out, as the range
//! functions leave them out): the count, sum, minimum and maximum, the first and last point
//! (time and value), and the counter-reset correction (the sum of the values just before
//! each drop, which Prometheus' `rate` and `increase` add back).
//!
//! A window `[e - r, e]` whose end `e` and length `r` are multiples of the resolution is the
//! buckets starting in `[e - r, e)` plus the point at exactly `e` (Prometheus 2's windows are
//! closed at both ends), which is the first point of the bucket starting at `e` when its time
//! is `e`. Over such a window [`RollupFunc::apply`] gives:
//! - `count_over_time`, `min_over_time`, `max_over_time`, `last_over_time`: the same value;
//! - `sum_over_time`, `avg_over_time`: the same up to the order of floating-point additions
//!   (sums of bucket sums rather than one running sum);
//! - `rate`, `increase`: Prometheus' extrapolation from the same first and last points and
//!   point count, with the counter resets at bucket boundaries added back too: the same up
//!   to the order of additions when the window holds several resets.

use outpost_shared::Point;
use outpost_shared::model::is_stale;

/// Five minutes in ms: the finer rollup resolution.
pub const RES_5M_MS: i64 = 5 * 60_000;
/// One hour in ms: the coarser rollup resolution.
pub const RES_1H_MS: i64 = 60 * 60_000;

/// The fewest raw points a bucket must summarise on average
/// ([`crate::Querier::points_per_bucket`]) for a query with a long step to read buckets
/// rather than the raw points: a [`Bucket`] takes 80 bytes of memory against a point's 16,
/// and folding one costs more than stepping over a point.
pub const MIN_POINTS_PER_BUCKET: f64 = 4.0;

/// One series' points in `[start, start + resolution)`, summarised; never empty.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bucket {
    /// First ms of the bucket (a multiple of its resolution).
    pub start: i64,
    /// Points in it (stale markers left out).
    pub count: u64,
    /// Their sum (compensated, as `sum_over_time` sums).
    pub sum: f64,
    /// Their minimum, as `min_over_time` takes it (NaN only when every value is NaN).
    pub min: f64,
    /// Their maximum, as `max_over_time` takes it.
    pub max: f64,
    /// The earliest point.
    pub first: Point,
    /// The latest point.
    pub last: Point,
    /// The sum of the value before each drop between consecutive points: what a counter
    /// lost at its resets, added back by `rate` and `increase`.
    pub reset_add: f64,
}

impl Bucket {
    /// A bucket of the single point `p`.
    fn of(start: i64, p: Point) -> Bucket {
        Bucket {
            start,
            count: 1,
            sum: p.value,
            min: p.value,
            max: p.value,
            first: p,
            last: p,
            reset_add: 0.0,
        }
    }

    /// Adds a point later than every point in the bucket.
    fn push(&mut self, p: Point) {
        self.count += 1;
        self.sum += p.value;
        if p.value < self.min || self.min.is_nan() {
            self.min = p.value;
        }
        if p.value > self.max || self.max.is_nan() {
            self.max = p.value;
        }
        if p.value < self.last.value {
            self.reset_add += self.last.value;
        }
        self.last = p;
    }

    /// [`Bucket::push`] with the sum compensated (Kahan), `comp` the compensation so far
    /// (added once the bucket is complete, [`finish_sum`]).
    fn push_compensated(&mut self, p: Point, comp: &mut f64) {
        let sum = self.sum;
        self.push(p);
        (self.sum, *comp) = kahan(sum, *comp, p.value);
    }

    /// Appends `next`, whose points are all later than this bucket's: the summary of both.
    fn append(&mut self, next: &Bucket) {
        self.count += next.count;
        self.sum += next.sum;
        if next.min < self.min || self.min.is_nan() {
            self.min = next.min;
        }
        if next.max > self.max || self.max.is_nan() {
            self.max = next.max;
        }
        if next.first.value < self.last.value {
            self.reset_add += self.last.value;
        }
        self.reset_add += next.reset_add;
        self.last = next.last;
    }
}

/// The buckets of resolution `res_ms` of `points` (sorted by time, one per timestamp),
/// stale markers left out, oldest first; buckets without points are left out.
pub fn buckets_of(points: &[Point], res_ms: i64) -> Vec<Bucket> {
    let mut out: Vec<Bucket> = vec![];
    // Sums are compensated per bucket (Kahan), as `sum_over_time` compensates its sum.
    let mut comp = 0.0;
    for &p in points.iter().filter(|p| !is_stale(p.value)) {
        let start = p.ts - p.ts.rem_euclid(res_ms);
        match out.last_mut() {
            Some(b) if b.start == start => b.push_compensated(p, &mut comp),
            _ => {
                if let Some(b) = out.last_mut() {
                    finish_sum(b, comp);
                }
                comp = 0.0;
                out.push(Bucket::of(start, p));
            }
        }
    }
    if let Some(b) = out.last_mut() {
        finish_sum(b, comp);
    }
    out
}

/// Adds the compensation to a bucket's sum, unless the sum is infinite (as `sum_over_time`).
fn finish_sum(b: &mut Bucket, comp: f64) {
    if !b.sum.is_infinite() {
        b.sum += comp;
    }
}

/// One step of Kahan summation: `sum + v` with compensation `c`.
fn kahan(sum: f64, c: f64, v: f64) -> (f64, f64) {
    let t = sum + v;
    let c = if sum.abs() >= v.abs() {
        c + ((sum - t) + v)
    } else {
        c + ((v - t) + sum)
    };
    (t, c)
}

/// Where a window ending at `end` (ms) ends when read from buckets of `res_ms`: the bucket
/// edge at or before it. On an edge (every window whose answer equals the raw samples'),
/// `end` itself; between edges, which only a window over days whose raw samples are gone
/// reads from buckets, up to `res_ms - 1` earlier.
pub fn window_end(end: i64, res_ms: i64) -> i64 {
    if res_ms > 0 {
        end - end.rem_euclid(res_ms)
    } else {
        end
    }
}

/// The resolutions of a series' buckets as read for a query: `fine` ms throughout, or, when
/// the finer buckets do not reach back far enough, `coarse.0` ms before `coarse.1` (ms: the
/// oldest day held at `fine`, a multiple of both) and `fine` ms from it on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resolution {
    /// The finer resolution, ms.
    pub fine: i64,
    /// The coarser resolution (ms) and where the finer buckets begin (ms).
    pub coarse: Option<(i64, i64)>,
}

impl From<i64> for Resolution {
    fn from(fine: i64) -> Self {
        Resolution { fine, coarse: None }
    }
}

impl Resolution {
    /// The resolution a window `range_ms` long ending at `end` (ms) is read at: the finer
    /// one when the window, taken back to its bucket edge, starts where the finer buckets
    /// are; else the coarser one (whose buckets reach further back) when `range_ms` is a
    /// multiple of it.
    pub fn of_window(&self, end: i64, range_ms: i64) -> i64 {
        match self.coarse {
            Some((coarse, from))
                if window_end(end, self.fine) - range_ms < from
                    && coarse > 0
                    && range_ms % coarse == 0 =>
            {
                coarse
            }
            _ => self.fine,
        }
    }

    /// The coarsest resolution read (ms): where reads begin, windows taken back to its
    /// edges.
    pub fn coarsest(&self) -> i64 {
        self.coarse.map_or(self.fine, |c| c.0.max(self.fine))
    }
}

/// What a store can tell the engine about its rollups ([`crate::Querier::rollups`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RollupInfo {
    /// The resolutions kept, ms, finest first (e.g. `[RES_5M_MS, RES_1H_MS]`).
    pub resolutions: Vec<i64>,
    /// The first ms of the oldest raw point kept; `None` when no raw point is kept.
    /// Windows starting before it can only be answered from rollups.
    pub raw_start_ms: Option<i64>,
    /// The first ms of the oldest bucket kept at any resolution; `None` when the store
    /// cannot tell. Rollups that start no earlier than the raw points know nothing the
    /// raw points do not.
    pub start_ms: Option<i64>,
    /// Per resolution, in the order of `resolutions`: the first ms of the oldest day held
    /// at it (`None`: none held). Empty when the store cannot tell. A window before the raw
    /// points reads a resolution that reaches back to its start where one does (5-minute
    /// buckets are usually kept for less time than 1-hour ones).
    pub starts_ms: Vec<Option<i64>>,
}

/// The functions of a range vector that rollups answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RollupFunc {
    /// `rate`.
    Rate,
    /// `increase`.
    Increase,
    /// `sum_over_time`.
    Sum,
    /// `count_over_time`.
    Count,
    /// `avg_over_time`.
    Avg,
    /// `min_over_time`.
    Min,
    /// `max_over_time`.
    Max,
    /// `last_over_time`.
    Last,
}

impl RollupFunc {
    /// The function called `name`, if rollups answer it.
    pub fn of(name: &str) -> Option<Self> {
        Some(match name {
            "rate" => Self::Rate,
            "increase" => Self::Increase,
            "sum_over_time" => Self::Sum,
            "count_over_time" => Self::Count,
            "avg_over_time" => Self::Avg,
            "min_over_time" => Self::Min,
            "max_over_time" => Self::Max,
            "last_over_time" => Self::Last,
            _ => return None,
        })
    }

    /// The function's value over the window `[range_end - range_ms, range_end]` from
    /// `buckets` (a series' buckets of resolution `res`, oldest first, covering at least
    /// the window); `None` when the window holds no point (or fewer than two for `rate` and
    /// `increase`). `range_ms` must be a multiple of the resolution the window is read at
    /// ([`Resolution::of_window`]). An end between its bucket edges is taken back to the
    /// edge before it ([`window_end`]): whole buckets only, never a point after the end.
    pub fn apply(
        self,
        buckets: &[Bucket],
        range_end: i64,
        range_ms: i64,
        res: impl Into<Resolution>,
    ) -> Option<f64> {
        let res_ms = res.into().of_window(range_end, range_ms);
        let range_end = window_end(range_end, res_ms);
        let lo = buckets.partition_point(|b| b.start < range_end - range_ms);
        let hi = buckets.partition_point(|b| b.start < range_end);
        self.apply_in(buckets, lo, hi, range_end, range_ms)
    }

    /// [`RollupFunc::apply`] at each of `ends` (ascending), appended to `out`: the window's
    /// bucket bounds advance with the ends instead of being searched for at each one, so a
    /// long range costs one pass over the buckets.
    pub fn apply_each(
        self,
        buckets: &[Bucket],
        ends: &[i64],
        range_ms: i64,
        res: impl Into<Resolution>,
        out: &mut Vec<Option<f64>>,
    ) {
        let res = res.into();
        let (mut lo, mut hi) = (0, 0);
        let mut prev = i64::MIN;
        for &end in ends {
            let end = window_end(end, res.of_window(end, range_ms));
            if end < prev {
                // Not ascending: start over.
                (lo, hi) = (0, 0);
            }
            prev = end;
            let start = end - range_ms;
            while lo < buckets.len() && buckets[lo].start < start {
                lo += 1;
            }
            hi = hi.max(lo);
            while hi < buckets.len() && buckets[hi].start < end {
                hi += 1;
            }
            out.push(self.apply_in(buckets, lo, hi, end, range_ms));
        }
    }

    /// The function over `buckets[lo..hi]`, the buckets starting in
    /// `[range_end - range_ms, range_end)`, plus the point at exactly `range_end`.
    fn apply_in(
        self,
        buckets: &[Bucket],
        lo: usize,
        hi: usize,
        range_end: i64,
        range_ms: i64,
    ) -> Option<f64> {
        let range_start = range_end - range_ms;
        // The point at exactly the window's end belongs to the next bucket.
        let edge = buckets
            .get(hi)
            .filter(|b| b.start == range_end && b.first.ts == range_end)
            .map(|b| Bucket::of(range_end, b.first));
        let acc = joined(buckets[lo..hi].iter().chain(edge.as_ref()));
        self.value(acc?, range_start, range_end, range_ms)
    }

    /// The function's value from `a`, the summary of the points in the window
    /// `[range_start, range_end]` (`range_ms` long); `None` for `rate` and `increase` of
    /// fewer than two points.
    fn value(self, a: Bucket, range_start: i64, range_end: i64, range_ms: i64) -> Option<f64> {
        Some(match self {
            Self::Count => a.count as f64,
            Self::Sum => a.sum,
            Self::Avg => a.sum / a.count as f64,
            Self::Min => a.min,
            Self::Max => a.max,
            Self::Last => a.last.value,
            Self::Rate | Self::Increase => {
                if a.count < 2 {
                    return None;
                }
                let result = a.last.value - a.first.value + a.reset_add;
                crate::eval::range_fn::extrapolate(
                    a.first,
                    a.last,
                    a.count as usize,
                    result,
                    range_start,
                    range_end,
                    range_ms as f64 / 1000.0,
                    true,
                    self == Self::Rate,
                )?
            }
        })
    }
}

impl RollupFunc {
    /// The function at each of `ends` (ascending, ms) over a series read as `buckets` of
    /// resolution `res` before `raw_from` (a multiple of every resolution: the oldest raw
    /// day kept) and as its raw `points` from `raw_from` on, appended to `out`. A window
    /// `[end - range_ms, end]`
    /// - wholly before `raw_from` is read as [`RollupFunc::apply`] reads it (taken back to
    ///   the bucket edge before its end when off the edges);
    /// - wholly at or after it is `raw(end)`: the function over the raw points, as over any
    ///   window of raw points;
    /// - across it is the buckets that start in it and the raw points up to its end: the
    ///   same as over the raw points when its start is a bucket edge (up to the order of
    ///   additions, as [`RollupFunc::apply`]), else without the points of the bucket its
    ///   start falls in (never a point before the start; at most one bucket of the
    ///   window).
    ///
    /// The raw points of windows across `raw_from` are summed once as the ends advance,
    /// not again at each end.
    #[allow(clippy::too_many_arguments)]
    pub fn apply_mixed_each(
        self,
        buckets: &[Bucket],
        points: &[Point],
        raw_from: i64,
        ends: &[i64],
        range_ms: i64,
        res: impl Into<Resolution>,
        raw: &mut dyn FnMut(i64) -> Option<f64>,
        out: &mut Vec<Option<f64>>,
    ) {
        let res = res.into();
        let mut run = Running::new(raw_from);
        for &end in ends {
            let start = end - range_ms;
            if end < raw_from {
                out.push(self.apply(buckets, end, range_ms, res));
                continue;
            }
            if start >= raw_from {
                out.push(raw(end));
                continue;
            }
            if end < run.end {
                // Not ascending: start over.
                run = Running::new(raw_from);
            }
            run.advance(points, end);
            let lo = buckets.partition_point(|b| b.start < start);
            let hi = buckets.partition_point(|b| b.start < raw_from);
            let acc = joined(buckets[lo..hi.max(lo)].iter().chain(run.summary().as_ref()));
            out.push(acc.and_then(|a| self.value(a, start, end, range_ms)));
        }
    }
}

/// The summary of consecutive `buckets` (each later than the one before), oldest first;
/// `None` when there are none.
fn joined<'b>(buckets: impl Iterator<Item = &'b Bucket>) -> Option<Bucket> {
    buckets.fold(None, |acc, b| match acc {
        Some(mut a) => {
            a.append(b);
            Some(a)
        }
        None => Some(*b),
    })
}

/// The raw points from `from` up to the latest window end seen, summarised as they come
/// (stale markers left out; the sum compensated, as [`buckets_of`] compensates).
struct Running {
    from: i64,
    acc: Option<Bucket>,
    comp: f64,
    /// Points looked at so far.
    next: usize,
    /// The window end they were looked at up to.
    end: i64,
}

impl Running {
    fn new(from: i64) -> Self {
        Running {
            from,
            acc: None,
            comp: 0.0,
            next: 0,
            end: i64::MIN,
        }
    }

    /// Adds the points up to `end` (ms) not yet added.
    fn advance(&mut self, points: &[Point], end: i64) {
        while let Some(&p) = points.get(self.next)
            && p.ts <= end
        {
            self.next += 1;
            if p.ts < self.from || is_stale(p.value) {
                continue;
            }
            match &mut self.acc {
                Some(b) => b.push_compensated(p, &mut self.comp),
                None => self.acc = Some(Bucket::of(self.from, p)),
            }
        }
        self.end = end;
    }

    /// The points added so far, summarised; `None` when there are none.
    fn summary(&self) -> Option<Bucket> {
        let mut b = self.acc?;
        finish_sum(&mut b, self.comp);
        Some(b)
    }
}

/// The points a store without raw data for a span shows for it: each bucket's last point,
/// so that selectors and functions over unaligned windows still see the series' course.
pub fn points_of(buckets: &[Bucket]) -> Vec<Point> {
    buckets.iter().map(|b| b.last).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pts(v: &[(i64, f64)]) -> Vec<Point> {
        v.iter().map(|&(ts, value)| Point { ts, value }).collect()
    }

    #[test]
    fn buckets_split_at_multiples_of_the_resolution_and_track_resets() {
        let b = buckets_of(
            &pts(&[(0, 5.0), (10, 7.0), (20, 2.0), (30, 4.0), (100, 1.0)]),
            100,
        );
        assert_eq!(b.len(), 2);
        assert_eq!(b[0].count, 4);
        assert_eq!(b[0].sum, 18.0);
        assert_eq!((b[0].min, b[0].max), (2.0, 7.0));
        assert_eq!(b[0].reset_add, 7.0);
        assert_eq!((b[0].first.ts, b[0].last.ts), (0, 30));
        assert_eq!(b[1].start, 100);
        // A drop across the boundary counts when the buckets are joined.
        let mut a = b[0];
        a.append(&b[1]);
        assert_eq!(a.reset_add, 11.0);
    }

    #[test]
    fn a_window_takes_the_point_at_its_end_from_the_next_bucket() {
        let b = buckets_of(&pts(&[(0, 1.0), (50, 2.0), (100, 3.0), (150, 4.0)]), 100);
        assert_eq!(RollupFunc::Count.apply(&b, 100, 100, 100), Some(3.0));
        assert_eq!(RollupFunc::Last.apply(&b, 100, 100, 100), Some(3.0));
        assert_eq!(RollupFunc::Count.apply(&b, 200, 200, 100), Some(4.0));
        assert_eq!(RollupFunc::Count.apply(&b, 400, 100, 100), None);
    }

    use crate::memory::MemStorage;
    use crate::storage::{Matcher, Querier, Queryable, SeriesRef, StorageError};
    use crate::{Steps, Value, parse, range_query};
    use outpost_shared::Labels;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A source that counts the bucket reads its queriers make, and says what it is told
    /// to of its buckets' density and start.
    struct Counting {
        inner: MemStorage,
        buckets: AtomicUsize,
        density: Option<f64>,
        rollup_start: Option<i64>,
    }

    impl Counting {
        fn new(inner: MemStorage) -> Self {
            Counting {
                inner,
                buckets: AtomicUsize::new(0),
                density: None,
                rollup_start: None,
            }
        }
    }

    struct CountingQuerier<'a> {
        inner: Box<dyn Querier + 'a>,
        buckets: &'a AtomicUsize,
        density: Option<f64>,
        rollup_start: Option<i64>,
    }

    impl Queryable for Counting {
        fn querier(&self, a: i64, b: i64) -> Result<Box<dyn Querier + '_>, StorageError> {
            Ok(Box::new(CountingQuerier {
                inner: self.inner.querier(a, b)?,
                buckets: &self.buckets,
                density: self.density,
                rollup_start: self.rollup_start,
            }))
        }
    }

    impl Querier for CountingQuerier<'_> {
        fn select(&self, m: &[Matcher]) -> Result<Vec<(SeriesRef, Arc<Labels>)>, StorageError> {
            self.inner.select(m)
        }
        fn points(&self, id: SeriesRef, a: i64, b: i64) -> Result<Vec<Point>, StorageError> {
            self.inner.points(id, a, b)
        }
        fn rollups(&self) -> Option<RollupInfo> {
            let mut info = self.inner.rollups()?;
            info.start_ms = self.rollup_start;
            Some(info)
        }
        fn points_per_bucket(&self, _: i64, _: i64, _: i64) -> Option<f64> {
            self.density
        }
        fn buckets(
            &self,
            id: SeriesRef,
            a: i64,
            b: i64,
            r: i64,
        ) -> Result<Vec<Bucket>, StorageError> {
            self.buckets.fetch_add(1, Ordering::Relaxed);
            self.inner.buckets(id, a, b, r)
        }
        fn label_names(&self) -> Result<Vec<String>, StorageError> {
            self.inner.label_names()
        }
        fn label_values(&self, n: &str) -> Result<Vec<String>, StorageError> {
            self.inner.label_values(n)
        }
    }

    #[test]
    fn apply_each_walks_the_windows_as_apply_finds_them() {
        let mut pts = vec![];
        let mut c = 0.0;
        for i in 0..500i64 {
            c += (i % 13) as f64;
            if i % 97 == 0 {
                c = 1.0;
            }
            // Every fifth point on a bucket edge, the others off it; a gap in the middle.
            if !(200..260).contains(&i) {
                pts.push(Point {
                    ts: i * 20 + if i % 5 == 0 { 0 } else { 7 },
                    value: c,
                });
            }
        }
        let b = buckets_of(&pts, 100);
        let ends: Vec<i64> = (0..120).map(|k| k * 100).collect();
        for f in FUNCS {
            for range in [100, 200, 500] {
                let mut got = vec![];
                f.apply_each(&b, &ends, range, 100, &mut got);
                let want: Vec<_> = ends.iter().map(|&e| f.apply(&b, e, range, 100)).collect();
                assert_eq!(got, want, "{f:?} over {range}");
                assert!(got.iter().filter(|v| v.is_some()).count() > 50);
                // Ends between bucket edges answer as at the edge before them.
                let off: Vec<i64> = ends.iter().map(|&e| e + 37).collect();
                let mut shifted = vec![];
                f.apply_each(&b, &off, range, 100, &mut shifted);
                assert_eq!(shifted, want, "{f:?} over {range}, ends off the edges");
                let one: Vec<_> = off.iter().map(|&e| f.apply(&b, e, range, 100)).collect();
                assert_eq!(one, want, "{f:?} over {range}, ends off the edges");
            }
            // Ends out of order are still answered.
            let back = [5000, 300, 4000];
            let mut got = vec![];
            f.apply_each(&b, &back, 200, 100, &mut got);
            let want: Vec<_> = back.iter().map(|&e| f.apply(&b, e, 200, 100)).collect();
            assert_eq!(got, want);
        }
    }

    const FUNCS: [RollupFunc; 8] = [
        RollupFunc::Rate,
        RollupFunc::Increase,
        RollupFunc::Sum,
        RollupFunc::Count,
        RollupFunc::Avg,
        RollupFunc::Min,
        RollupFunc::Max,
        RollupFunc::Last,
    ];

    fn name(f: RollupFunc) -> &'static str {
        match f {
            RollupFunc::Rate => "rate",
            RollupFunc::Increase => "increase",
            RollupFunc::Sum => "sum_over_time",
            RollupFunc::Count => "count_over_time",
            RollupFunc::Avg => "avg_over_time",
            RollupFunc::Min => "min_over_time",
            RollupFunc::Max => "max_over_time",
            RollupFunc::Last => "last_over_time",
        }
    }

    /// Coarser buckets before the finer ones begin: each window is read at the finest
    /// resolution that reaches back to its start, so windows over the finer buckets are
    /// exact and earlier ones end at the coarser edge before their end.
    #[test]
    fn each_window_reads_the_finest_buckets_that_reach_back_to_it() {
        let pts: Vec<Point> = (0..200)
            .map(|i| Point {
                ts: i * 10,
                value: ((i * 37) % 11) as f64,
            })
            .collect();
        let split = pts.partition_point(|p| p.ts < 1000);
        let mut b = buckets_of(&pts[..split], 100);
        b.extend(buckets_of(&pts[split..], 20));
        let res = Resolution {
            fine: 20,
            coarse: Some((100, 1000)),
        };
        let ends: Vec<i64> = (40..100).map(|k| k * 20).collect();
        for f in FUNCS {
            let mut got = vec![];
            f.apply_each(&b, &ends, 100, res, &mut got);
            for (&e, g) in ends.iter().zip(got) {
                let at = if e - 100 >= 1000 { e } else { e - e % 100 };
                let want = f.apply(&buckets_of(&pts, 10), at, 100, 10);
                assert_eq!(g, want, "{f:?} at {e}");
                assert_eq!(f.apply(&b, e, 100, res), want, "{f:?} at {e}, alone");
            }
        }
        assert_eq!(res.of_window(1090, 100), 100);
        assert_eq!(res.of_window(1100, 100), 20);
        assert_eq!(
            res.of_window(1090, 40),
            20,
            "the coarser does not divide the window"
        );
    }

    /// Windows across the oldest raw point read the buckets that start in them and the raw
    /// points after: the raw answer when they start on a bucket edge, else the raw answer
    /// without the points of the bucket the start falls in. Windows wholly before read
    /// buckets as `apply`; windows wholly after go to the raw function.
    #[test]
    fn windows_across_the_oldest_raw_point_join_buckets_and_points() {
        let mut pts = vec![];
        let mut c = 0.0;
        for i in 0..300i64 {
            c += (i % 11) as f64;
            if i % 71 == 0 {
                c = 2.0;
            }
            let value = if i == 160 {
                f64::from_bits(outpost_shared::model::STALE_NAN)
            } else {
                c
            };
            pts.push(Point {
                ts: i * 10 + (i % 3),
                value,
            });
        }
        let raw_from = 1500;
        let split = pts.partition_point(|p| p.ts < raw_from);
        let (old, new) = pts.split_at(split);
        let b = buckets_of(old, 100);
        let raw_of = |f: RollupFunc, from: i64, start: i64, end: i64| {
            let w: Vec<Point> = pts
                .iter()
                .filter(|p| p.ts >= from && p.ts <= end && !is_stale(p.value))
                .copied()
                .collect();
            let rf = crate::eval::range_fn::RangeFunc::of(name(f)).unwrap();
            rf.apply(
                &w,
                start,
                end,
                (end - start) as f64 / 1000.0,
                end,
                0.0,
                0.0,
                true,
            )
        };
        for f in FUNCS {
            for range in [300, 700] {
                let ends: Vec<i64> = (0..290).map(|k| 100 + k * 10 + k % 7).collect();
                let mut got = vec![];
                let mut raw_calls = 0;
                f.apply_mixed_each(
                    &b,
                    new,
                    raw_from,
                    &ends,
                    range,
                    100,
                    &mut |end| {
                        raw_calls += 1;
                        raw_of(f, end - range, end - range, end)
                    },
                    &mut got,
                );
                assert_eq!(got.len(), ends.len());
                let mut across = 0;
                for (&end, &g) in ends.iter().zip(&got) {
                    let start = end - range;
                    let want = if end < raw_from {
                        f.apply(&b, end, range, 100)
                    } else if start >= raw_from {
                        raw_of(f, start, start, end)
                    } else {
                        // From the first bucket edge at or after the start.
                        let edge = start + (100 - start.rem_euclid(100)) % 100;
                        across += 1;
                        raw_of(f, edge, start, end)
                    };
                    let same = match (g, want) {
                        (Some(g), Some(w)) => close(g, w),
                        (g, w) => g == w,
                    };
                    assert!(same, "{f:?} over {range} at {end}: {g:?} vs {want:?}");
                }
                assert!(across >= 29, "{f:?} over {range}: {across} windows across");
                assert!(
                    raw_calls > 30,
                    "{f:?} over {range}: {raw_calls} raw windows"
                );
                // One end at a time gives the same as the ends in one pass.
                for (k, &end) in ends.iter().enumerate() {
                    let mut one = vec![];
                    f.apply_mixed_each(
                        &b,
                        new,
                        raw_from,
                        &[end],
                        range,
                        100,
                        &mut |e| raw_of(f, e - range, e - range, e),
                        &mut one,
                    );
                    assert_eq!(one, [got[k]], "{f:?} over {range} at {end}");
                }
            }
        }
    }

    /// Two days of a jittered 10 s counter with resets (some points exactly on bucket
    /// edges), a noisy gauge with a stale marker, and a sparse series.
    fn source() -> MemStorage {
        let (mut counter, mut gauge, mut sparse) = (vec![], vec![], vec![]);
        let mut c = 0.0;
        let mut x: u64 = 42;
        for i in 0..(2 * 8640) {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let jitter = if i % 7 == 0 {
                0
            } else {
                (x >> 33) as i64 % 3000
            };
            let ts = i * 10_000 + jitter;
            c += ((x >> 40) % 100) as f64;
            if i % 5000 == 4999 {
                c = 3.0;
            }
            counter.push((ts, c));
            let g = ((x >> 20) % 1000) as f64 / 7.0;
            gauge.push((
                ts,
                if i == 9000 {
                    f64::from_bits(outpost_shared::model::STALE_NAN)
                } else {
                    g
                },
            ));
            if i % 97 == 0 {
                sparse.push((ts, g));
            }
        }
        MemStorage::default()
            .with(Labels::metric("c_total", [("job", "a")]), &counter)
            .with(Labels::metric("g", [("job", "a")]), &gauge)
            .with(Labels::metric("s", [("job", "a")]), &sparse)
    }

    fn series(v: Value) -> Vec<(Labels, Vec<Point>)> {
        match v {
            Value::Matrix(m) => m.into_iter().map(|s| (s.labels, s.points)).collect(),
            other => panic!("not a matrix: {other:?}"),
        }
    }

    fn close(a: f64, b: f64) -> bool {
        a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs()) || (a.is_nan() && b.is_nan())
    }

    /// Every function rollups answer gives over aligned windows what it gives over the
    /// raw points, at a long step (rollups chosen for speed) and for windows older than
    /// the raw data kept (rollups the only source); unaligned windows read points.
    #[test]
    fn aligned_windows_answer_from_buckets_as_from_points() {
        let day = 86_400_000;
        let queries = [
            "rate(c_total[1h])",
            "increase(c_total[5h])",
            "sum_over_time(g[1h])",
            "count_over_time(g[2h])",
            "avg_over_time(g[1h])",
            "min_over_time(g[1h])",
            "max_over_time(g[1h])",
            "last_over_time(g[1h])",
            "sum(rate(c_total[1h]))",
            "max_over_time(s[1h]) + 1",
            "rate(c_total[5m])",
            "count_over_time(s[10m])",
        ];
        for (step, raw_start, res) in [
            (3_600_000, None, vec![RES_5M_MS, RES_1H_MS]),
            (300_000, Some(2 * day), vec![RES_5M_MS, RES_1H_MS]),
            (3_600_000, Some(2 * day), vec![RES_1H_MS]),
            // Raw points kept for every window and a short step: no buckets read.
            (300_000, Some(-day), vec![RES_5M_MS, RES_1H_MS]),
        ] {
            let raw = source();
            let rolled = Counting::new(source().with_rollups(&res, raw_start));
            for q in queries {
                let e = parse(q).unwrap();
                let steps = Steps::new(3_600_000, 2 * day - 3_600_000, step).unwrap();
                let before = rolled.buckets.load(Ordering::Relaxed);
                let want = series(range_query(&raw, &e, &steps).unwrap());
                let got = series(range_query(&rolled, &e, &steps).unwrap());
                let used = rolled.buckets.load(Ordering::Relaxed) > before;
                // 5m windows at a 1h step use 5m buckets; with only 1h buckets they cannot.
                let alignable = !(q.contains("[5m]") || q.contains("[10m]")) || res[0] == RES_5M_MS;
                let wanted = alignable && (step >= RES_1H_MS || raw_start == Some(2 * day));
                assert_eq!(used, wanted, "{q} step {step} res {res:?}: buckets read");
                assert_eq!(got.len(), want.len(), "{q} step {step}");
                for ((gl, gp), (wl, wp)) in got.iter().zip(&want) {
                    assert_eq!(gl, wl, "{q}");
                    assert_eq!(gp.len(), wp.len(), "{q} {gl:?}");
                    for (g, w) in gp.iter().zip(wp) {
                        assert_eq!(g.ts, w.ts, "{q}");
                        assert!(
                            close(g.value, w.value),
                            "{q} at {}: {} vs {}",
                            g.ts,
                            g.value,
                            w.value
                        );
                    }
                }
            }
        }
        // Windows not on bucket edges read points even at a long step while the points are
        // kept.
        let rolled = Counting::new(source().with_rollups(&[RES_5M_MS, RES_1H_MS], Some(-day)));
        let steps = Steps::new(3_600_000 + 1000, day, 3_600_000).unwrap();
        range_query(&rolled, &parse("rate(c_total[1h])").unwrap(), &steps).unwrap();
        assert_eq!(rolled.buckets.load(Ordering::Relaxed), 0);
        // Windows wholly before the points kept read whole buckets, each window ending at
        // the bucket edge before its end: the raw answer there, not each bucket's last point.
        for (step, q) in [
            (60_000, "count_over_time(g[1h])"),
            (60_000, "sum_over_time(g[1h])"),
            (60_000, "rate(c_total[1h])"),
            (60_000, "last_over_time(g[10m])"),
            (3_600_000, "max_over_time(g[2h])"),
            (3_600_000, "increase(c_total[1h])"),
        ] {
            let rolled =
                Counting::new(source().with_rollups(&[RES_5M_MS, RES_1H_MS], Some(2 * day)));
            let e = parse(q).unwrap();
            let steps = Steps::new(3_600_000 + 30_000, 2 * day - 3_600_000, step).unwrap();
            let got = series(range_query(&rolled, &e, &steps).unwrap());
            assert!(
                rolled.buckets.load(Ordering::Relaxed) > 0,
                "{q}: buckets read"
            );
            let edges = Steps::new(3_600_000, 2 * day - 3_600_000, RES_5M_MS).unwrap();
            let want = series(range_query(&source(), &e, &edges).unwrap());
            assert_eq!(got.len(), want.len(), "{q}");
            let mut compared = 0;
            for ((gl, gp), (wl, wp)) in got.iter().zip(&want) {
                assert_eq!(gl, wl, "{q}");
                let at: std::collections::HashMap<i64, f64> =
                    wp.iter().map(|p| (p.ts, p.value)).collect();
                for g in gp {
                    let edge = window_end(g.ts, RES_5M_MS);
                    let w = at.get(&edge).copied();
                    assert!(
                        w.is_some_and(|w| close(g.value, w)),
                        "{q} at {}: {} vs {w:?} at {edge}",
                        g.ts,
                        g.value
                    );
                    compared += 1;
                }
            }
            assert!(compared > 20, "{q}: {compared} points");
        }
    }

    /// Windows off the bucket edges that begin before the oldest raw day and end after it
    /// read the buckets before it and the raw points after it. The points here sit at 0
    /// and 150 s into each 5-minute bucket and the windows start 200 s into one, so the
    /// bucket a window starts in holds none of its points: every answer is the raw one
    /// (at the bucket edge before the end for windows wholly before the raw day).
    #[test]
    fn windows_across_the_oldest_raw_day_read_buckets_then_points() {
        let day = 86_400_000;
        let (mut counter, mut gauge) = (vec![], vec![]);
        let mut c = 0.0;
        for i in 0..(2 * 576) {
            let ts = i * 150_000;
            c += (i % 17) as f64;
            if i % 400 == 399 {
                c = 1.0;
            }
            counter.push((ts, c));
            gauge.push((ts, ((i * 37) % 101) as f64 / 3.0));
        }
        let source = || {
            MemStorage::default()
                .with(Labels::metric("c_total", [("job", "a")]), &counter)
                .with(Labels::metric("g", [("job", "a")]), &gauge)
        };
        let steps = Steps::new(
            day - 3 * RES_1H_MS + 200_000,
            day + 3 * RES_1H_MS,
            RES_5M_MS,
        )
        .unwrap();
        let edges = Steps::new(day - 3 * RES_1H_MS, day + 3 * RES_1H_MS, RES_5M_MS).unwrap();
        for f in FUNCS {
            let arg = if matches!(f, RollupFunc::Rate | RollupFunc::Increase) {
                "c_total"
            } else {
                "g"
            };
            let q = format!("{}({arg}[1h])", name(f));
            let e = parse(&q).unwrap();
            let rolled = Counting::new(source().with_rollups(&[RES_5M_MS, RES_1H_MS], Some(day)));
            let got = series(range_query(&rolled, &e, &steps).unwrap());
            assert!(
                rolled.buckets.load(Ordering::Relaxed) > 0,
                "{q}: buckets read"
            );
            let want = series(range_query(&source(), &e, &steps).unwrap());
            let at_edges = series(range_query(&source(), &e, &edges).unwrap());
            assert_eq!((got.len(), want.len()), (1, 1), "{q}");
            let edge_values: std::collections::HashMap<i64, f64> =
                at_edges[0].1.iter().map(|p| (p.ts, p.value)).collect();
            assert_eq!(got[0].1.len(), want[0].1.len(), "{q}");
            let mut across = 0;
            for (g, w) in got[0].1.iter().zip(&want[0].1) {
                assert_eq!(g.ts, w.ts, "{q}");
                let w = if g.ts < day {
                    edge_values[&window_end(g.ts, RES_5M_MS)]
                } else {
                    across += usize::from(g.ts - RES_1H_MS < day);
                    w.value
                };
                assert!(close(g.value, w), "{q} at {}: {} vs {w}", g.ts, g.value);
            }
            assert_eq!(across, 12, "{q}");
        }
    }

    /// A long step reads buckets only where they summarise enough points (or the store
    /// cannot tell); a window before the raw points reads them even when sparse, but not
    /// when the rollups start no earlier than the raw points. The answers stay the same.
    #[test]
    fn buckets_are_read_only_where_they_save_something() {
        let day = 86_400_000;
        let e = parse("sum_over_time(g[1h])").unwrap();
        let cases = [
            (3_600_000, Some(-day), None, None, true),
            (3_600_000, Some(-day), Some(360.0), None, true),
            (
                3_600_000,
                Some(-day),
                Some(MIN_POINTS_PER_BUCKET),
                None,
                true,
            ),
            (3_600_000, Some(-day), Some(1.0), None, false),
            (3_600_000, Some(2 * day), Some(1.0), None, true),
            (300_000, Some(2 * day), None, Some(0), true),
            (300_000, Some(2 * day), None, Some(2 * day), false),
        ];
        for (step, raw_start, density, rollup_start, wanted) in cases {
            let rolled = Counting {
                density,
                rollup_start,
                ..Counting::new(source().with_rollups(&[RES_5M_MS, RES_1H_MS], raw_start))
            };
            let steps = Steps::new(3_600_000, 2 * day - 3_600_000, step).unwrap();
            let want = series(range_query(&source(), &e, &steps).unwrap());
            let got = series(range_query(&rolled, &e, &steps).unwrap());
            let case =
                format!("step {step} raw {raw_start:?} density {density:?} start {rollup_start:?}");
            assert_eq!(rolled.buckets.load(Ordering::Relaxed) > 0, wanted, "{case}");
            assert_eq!(got.len(), want.len(), "{case}");
            for ((gl, gp), (wl, wp)) in got.iter().zip(&want) {
                assert_eq!(gl, wl, "{case}");
                assert_eq!(gp.len(), wp.len(), "{case}");
                for (g, w) in gp.iter().zip(wp) {
                    assert!(
                        g.ts == w.ts && close(g.value, w.value),
                        "{case}: {g:?} vs {w:?}"
                    );
                }
            }
        }
    }
}
