//! Deadlines on a kernel timer (`timerfd`, `CLOCK_MONOTONIC`) watched by the runtime's
//! reactor, for the timers the uplink sets again every collection cycle.
//!
//! tokio keeps its timers in a hierarchical wheel: a deadline seconds away sits in a coarse
//! slot (about 4 s wide from 4 s on), and the runtime wakes at the start of that slot to move
//! it to a finer one, then again near the deadline. The uplink's deadlines (QUIC's keep-alive,
//! idle and acknowledgement timers, the session's next liveness heartbeat) are pushed back by
//! each cycle's batch before they expire, so with tokio's timers an agent collecting every
//! 10 s woke twice a cycle for nothing, and on this kind of virtual machine a wake-up from
//! idle costs tens of microseconds of CPU. A `timerfd` wakes the reactor once, at the
//! deadline, and re-arming it is one system call.
//!
//! [`QuicRuntime`] is quinn's tokio runtime with its timers made of [`FdTimer`]s.

use std::fmt;
use std::future::Future;
use std::io;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};
use tokio::io::unix::AsyncFd;

/// A one-shot deadline on a `timerfd`, registered with the current tokio runtime's reactor
/// (so it must be made inside one). Setting it again re-arms it. Polling is ready once
/// `Instant::now()` has reached the deadline.
pub struct FdTimer {
    fd: AsyncFd<OwnedFd>,
    deadline: Instant,
}

impl fmt::Debug for FdTimer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FdTimer")
            .field("deadline", &self.deadline)
            .finish()
    }
}

impl FdTimer {
    /// A timer armed for `deadline`.
    ///
    /// # Errors
    /// The kernel refused a `timerfd` (out of file descriptors), or there is no runtime with
    /// an I/O driver to register it with.
    pub fn new(deadline: Instant) -> io::Result<FdTimer> {
        use rustix::time::{TimerfdClockId, TimerfdFlags, timerfd_create};
        // Registering outside a runtime would panic.
        tokio::runtime::Handle::try_current().map_err(io::Error::other)?;
        let fd = timerfd_create(
            TimerfdClockId::Monotonic,
            TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC,
        )?;
        // SAFETY: the `AsyncFd` owns the `OwnedFd`, which stays open, and the same
        // descriptor, until the `AsyncFd` is dropped.
        let fd = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
            .map_err(|e| e.into_parts().1)?;
        let mut t = FdTimer { fd, deadline };
        t.arm();
        Ok(t)
    }

    /// The deadline it is armed for.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Re-arms it for `deadline` (one system call, none when the deadline is unchanged).
    pub fn set(&mut self, deadline: Instant) {
        if deadline != self.deadline {
            self.deadline = deadline;
            self.arm();
        }
    }

    fn arm(&mut self) {
        use rustix::time::{Itimerspec, TimerfdTimerFlags, Timespec, timerfd_settime};
        // Relative to a clock read before the call, so it never fires early; a zero value
        // would disarm it, so a deadline already past fires in a nanosecond.
        let wait = self
            .deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_nanos(1));
        let spec = Itimerspec {
            it_interval: Timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: Timespec {
                tv_sec: wait.as_secs().min(i64::MAX as u64) as i64,
                tv_nsec: wait.subsec_nanos().into(),
            },
        };
        // Cannot fail for a valid timerfd and a normalized value; should it, `poll` still
        // compares the clock with the deadline whenever the task is polled.
        let _ = timerfd_settime(self.fd.get_ref(), TimerfdTimerFlags::empty(), &spec);
    }

    /// Ready once the deadline has passed; otherwise registers the task to be woken when the
    /// timer fires.
    pub fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            if Instant::now() >= self.deadline {
                return Poll::Ready(());
            }
            let mut guard = match ready!(self.fd.poll_read_ready(cx)) {
                Ok(g) => g,
                // The reactor is gone (the runtime is shutting down): nothing will wake it.
                Err(_) => return Poll::Pending,
            };
            let mut count = [0u8; 8];
            match rustix::io::read(guard.get_inner(), &mut count) {
                Ok(_) => {}
                Err(rustix::io::Errno::AGAIN) => guard.clear_ready(),
                Err(_) => return Poll::Ready(()),
            }
        }
    }

    /// Waits until the deadline has passed.
    pub fn expired(&mut self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(|cx| self.poll_expired(cx))
    }
}

impl quinn::AsyncTimer for FdTimer {
    fn reset(self: Pin<&mut Self>, i: Instant) {
        self.get_mut().set(i);
    }

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.get_mut().poll_expired(cx)
    }
}

/// quinn's tokio runtime (tasks and UDP sockets as [`quinn::TokioRuntime`] makes them) with
/// [`FdTimer`]s for timers, falling back to tokio's timer when a `timerfd` cannot be made.
#[derive(Debug)]
pub struct QuicRuntime;

impl quinn::Runtime for QuicRuntime {
    fn new_timer(&self, i: Instant) -> Pin<Box<dyn quinn::AsyncTimer>> {
        match FdTimer::new(i) {
            Ok(t) => Box::pin(t),
            Err(_) => quinn::TokioRuntime.new_timer(i),
        }
    }

    fn spawn(&self, future: Pin<Box<dyn Future<Output = ()> + Send>>) {
        quinn::TokioRuntime.spawn(future)
    }

    fn wrap_udp_socket(
        &self,
        t: std::net::UdpSocket,
    ) -> io::Result<Arc<dyn quinn::AsyncUdpSocket>> {
        quinn::TokioRuntime.wrap_udp_socket(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn fires_at_its_deadline_and_again_after_being_set_later() {
        let start = Instant::now();
        let mut t = FdTimer::new(start + Duration::from_millis(30)).unwrap();
        t.expired().await;
        let first = start.elapsed();
        assert!(first >= Duration::from_millis(30), "{first:?}");
        assert!(first < Duration::from_millis(500), "{first:?}");
        // Pushed back before it fires: it waits for the new deadline, not the old one.
        let again = Instant::now();
        t.set(again + Duration::from_millis(20));
        t.set(again + Duration::from_millis(60));
        t.expired().await;
        assert!(
            again.elapsed() >= Duration::from_millis(60),
            "{:?}",
            again.elapsed()
        );
        // A deadline in the past is ready at once.
        t.set(Instant::now() - Duration::from_millis(5));
        tokio::time::timeout(Duration::from_millis(200), t.expired())
            .await
            .unwrap();
    }

    /// The calling thread's voluntary context switches so far (each one a sleep).
    fn sleeps() -> u64 {
        let status = std::fs::read_to_string("/proc/thread-self/status").unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    /// While its deadline is more than a wheel slot away, the timer does not wake the
    /// runtime's thread before it: one sleep in all. (tokio's own timer wakes the thread at
    /// the start of the deadline's 64 ms slot, then again at the deadline.) A thread can
    /// also sleep on a lock other tests hold, which only adds sleeps: one of three waits
    /// must take exactly one.
    #[tokio::test(flavor = "current_thread")]
    async fn a_far_deadline_wakes_the_thread_once() {
        let mut seen = vec![];
        for _ in 0..3 {
            let mut t = FdTimer::new(Instant::now() + Duration::from_millis(700)).unwrap();
            let before = sleeps();
            t.expired().await;
            seen.push(sleeps() - before);
            if seen.last() == Some(&1) {
                return;
            }
        }
        panic!("woken before its deadline: sleeps per wait {seen:?}");
    }
}
