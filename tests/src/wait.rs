//! Waiting for behaviour, never for a fixed time: poll a check until it passes or a deadline
//! expires, and say how long it took.

use std::thread;
use std::time::{Duration, Instant};

/// How long a test waits for the agent to make a change visible in traffic.
pub const CHANGE_DEADLINE: Duration = Duration::from_secs(15);

/// Pause between two attempts.
const RETRY_PAUSE: Duration = Duration::from_millis(20);

/// Calls `check` until it returns `Ok`, at most until `deadline` has passed; prints how long
/// that took (`waited 412ms for …`) and returns the value.
///
/// # Panics
/// When the deadline passes, with `what` and the last error `check` returned.
#[track_caller]
pub fn eventually<T>(what: &str, deadline: Duration, mut check: impl FnMut() -> Result<T, String>) -> T {
    let started = Instant::now();
    let mut attempts = 0_u32;
    loop {
        attempts += 1;
        match check() {
            Ok(value) => {
                eprintln!("waited {:?} for {what} ({attempts} attempts)", started.elapsed());
                return value;
            }
            Err(last) if started.elapsed() >= deadline => {
                panic!(
                    "gave up after {:?} waiting for {what} ({attempts} attempts); last: {last}",
                    started.elapsed()
                )
            }
            Err(_) => thread::sleep(RETRY_PAUSE),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eventually_should_return_the_first_success() {
        let mut calls = 0;
        let value = eventually("third call", Duration::from_secs(5), || {
            calls += 1;
            if calls == 3 { Ok(calls) } else { Err(format!("call {calls}")) }
        });
        assert_eq!(value, 3);
    }

    #[test]
    #[should_panic(expected = "last: still no")]
    fn eventually_should_panic_with_the_last_error_after_the_deadline() {
        eventually::<()>("never", Duration::from_millis(50), || Err("still no".into()));
    }
}
