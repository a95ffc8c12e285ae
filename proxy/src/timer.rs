//! A sub-millisecond timer for chunks a toxic delayed.
//!
//! tokio's timer wheel has 1 ms granularity and rounds every deadline up, so a 10 ms latency
//! toxic built on `tokio::time::sleep` adds 10.5 to 11 ms. Our goal is 10.0 ms +/- 0.2 ms, so a
//! link that holds delayed chunks arms a Linux `timerfd` instead (microsecond resolution, woken
//! by the same reactor as the sockets). Created lazily, one per link that ever delays a chunk:
//! links without toxics pay nothing.
//!
//! Waking is late by a fairly steady amount (measured here: about 0.3 ms, the time a virtual
//! CPU takes to come out of idle). The timer learns that lateness (a moving average shared by
//! all timers, capped at [`MAX_SLACK`]), arms that much early, and yields to other tasks until
//! the deadline itself: a chunk is never written early, and the p50 lands on the deadline.

use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rustix::time::{
    Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags, Timespec, timerfd_create,
    timerfd_settime,
};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::time::Instant;

/// The most the timer arms early; beyond that, lateness is not steady enough to learn.
pub const MAX_SLACK: Duration = Duration::from_millis(1);

/// The learned wake-up lateness in nanoseconds (moving average of 1/8 weight).
static SLACK_NS: AtomicU64 = AtomicU64::new(0);

fn learn(lateness: Duration) {
    let sample = lateness.min(MAX_SLACK).as_nanos() as u64;
    let old = SLACK_NS.load(Ordering::Relaxed);
    SLACK_NS.store(old - old / 8 + sample / 8, Ordering::Relaxed);
}

/// A one-shot, re-armable high-resolution timer.
#[derive(Debug)]
pub struct PreciseTimer {
    fd: AsyncFd<OwnedFd>,
}

impl PreciseTimer {
    /// Creates the timer (needs a tokio runtime with I/O enabled).
    pub fn new() -> io::Result<PreciseTimer> {
        let fd = timerfd_create(
            TimerfdClockId::Monotonic,
            TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC,
        )?;
        // SAFETY: `register` needs the fd to stay open and owned by the registration for as long
        // as it is registered; the `OwnedFd` moves into the `AsyncFd` and closes only after it
        // is deregistered on drop.
        #[allow(unsafe_code)]
        let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE)? };
        Ok(PreciseTimer { fd })
    }

    /// Waits until `deadline`, never returning before it. Cancel-safe: re-arming discards an
    /// expiry nobody waited for.
    pub async fn sleep_until(&self, deadline: Instant) -> io::Result<()> {
        let slack = Duration::from_nanos(SLACK_NS.load(Ordering::Relaxed));
        let wake_at = deadline - slack;
        if let Some(wait) = wake_at.checked_duration_since(Instant::now()) {
            self.arm(wait)?;
            self.expired().await?;
            learn(Instant::now().saturating_duration_since(wake_at));
        }
        // Yield (not block) until the deadline, bounded in real time too: under a paused tokio
        // clock the deadline would never come.
        let spin_start = std::time::Instant::now();
        while Instant::now() < deadline && spin_start.elapsed() < MAX_SLACK * 2 {
            tokio::task::yield_now().await;
        }
        Ok(())
    }

    /// Waits until `deadline` without spinning: arms the timer for the deadline itself and
    /// returns when it fires, so it is late by the wake-up latency (tens to hundreds of
    /// microseconds) instead of exact. For callers that wake thousands of times a second and
    /// must not spend a CPU on yielding (the runner's open-model arrivals).
    pub async fn wake_at(&self, deadline: Instant) -> io::Result<()> {
        if let Some(wait) = deadline.checked_duration_since(Instant::now()) {
            self.arm(wait)?;
            self.expired().await?;
        }
        Ok(())
    }

    fn arm(&self, wait: Duration) -> io::Result<()> {
        let zero = Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        let spec = Itimerspec {
            it_interval: zero,
            // A zero it_value would disarm the timer: wait at least 1 ns.
            it_value: Timespec {
                tv_sec: wait.as_secs() as i64,
                tv_nsec: i64::from(wait.subsec_nanos().max(1)),
            },
        };
        timerfd_settime(self.fd.get_ref(), TimerfdTimerFlags::empty(), &spec)?;
        Ok(())
    }

    async fn expired(&self) -> io::Result<()> {
        loop {
            let mut guard = self.fd.readable().await?;
            let mut expirations = [0u8; 8];
            match guard.try_io(|fd| {
                rustix::io::read(fd.get_ref(), &mut expirations).map_err(io::Error::from)
            }) {
                Ok(result) => return result.map(|_| ()),
                Err(_would_block) => continue,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn wakes_close_to_the_deadline() {
        let timer = PreciseTimer::new().unwrap();
        let start = Instant::now();
        timer
            .sleep_until(start + Duration::from_millis(3))
            .await
            .unwrap();
        let slept = start.elapsed();
        // Loose sanity bound only; the precision is measured in the benchmark.
        assert!(slept >= Duration::from_millis(3), "{slept:?}");
        assert!(slept < Duration::from_millis(500), "{slept:?}");
        // A deadline in the past returns at once.
        timer.sleep_until(start).await.unwrap();
        // Without the spin: never early either.
        let start = Instant::now();
        timer
            .wake_at(start + Duration::from_millis(3))
            .await
            .unwrap();
        assert!(start.elapsed() >= Duration::from_millis(3));
        assert!(start.elapsed() < Duration::from_millis(500));
    }
}
