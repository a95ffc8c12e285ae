//! A sub-millisecond timer for chunks a toxic delayed.
//!
//! tokio's timer wheel has 1 ms granularity and rounds every deadline up, so a 10 ms latency
//! toxic built on `tokio::time::sleep` adds 10.5 to 11 ms. Our goal is 10.0 ms +/- 0.2 ms, so a
//! link that holds delayed chunks arms a Linux `timerfd` instead (microsecond resolution, woken
//! by the same reactor as the sockets). Created lazily, one per link that ever delays a chunk:
//! links without toxics pay nothing.

use std::io;
use std::os::fd::OwnedFd;

use rustix::time::{
    Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags, Timespec, timerfd_create,
    timerfd_settime,
};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::time::Instant;

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

    /// Waits until `deadline`. Cancel-safe: re-arming discards an expiry nobody waited for.
    pub async fn sleep_until(&self, deadline: Instant) -> io::Result<()> {
        let Some(wait) = deadline.checked_duration_since(Instant::now()) else {
            return Ok(());
        };
        if wait.is_zero() {
            return Ok(());
        }
        let zero = Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        let spec = Itimerspec {
            it_interval: zero,
            it_value: Timespec {
                tv_sec: wait.as_secs() as i64,
                tv_nsec: i64::from(wait.subsec_nanos()),
            },
        };
        timerfd_settime(self.fd.get_ref(), TimerfdTimerFlags::empty(), &spec)?;
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
    use std::time::Duration;

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
    }
}
