//! The automatic prefetch (the agent's default): how many tasks beyond its running slots the
//! agent asks the server for, from what it measures.
//!
//! A slot that frees waits for the server's refill, one dispatch round trip (the result
//! held for `--result-hold`, sent, committed, a new task assigned): prefetched tasks keep the
//! slots busy meanwhile. With tasks that last `T` and a round trip `R`, `C` slots finish
//! `C·R/T` tasks in one round trip: that many queued tasks (twice that, for the jitter) are
//! enough, and more only hoard work that another agent could run. So the prefetch grows
//! while tasks finish faster than a round trip, and is 0 once they last longer than a couple
//! of round trips per slot (`sleep 5` at concurrency 2 keeps 0: two agents share four such
//! tasks two each). `T` and `R` are moving averages; one long task among short ones brings
//! the prefetch down at once, short ones raise it back over some tens of tasks.
//!
//! The measures lag on a loaded machine (a task's time is then mostly waiting for a core), so
//! a starved slot also counts: while tasks are shorter than a round trip, a slot that frees
//! with no task queued doubles the prefetch (at least to `C`), and it does not fall below
//! that until tasks last longer than a round trip.
//!
//! When the prefetch falls and tasks have turned long, the agent gives back the queued tasks
//! past its slots and the new value (as a recall would, `agent/mod.rs`), so that an agent
//! that ran tiny tasks does not keep a queue of long ones that an idle agent could run. The
//! moving average is too quick for that decision: on a loaded machine a few `true`s held up
//! behind a busy agent loop bring it near a round trip, and an agent running 10,000 `true`s
//! gave back a queue of some 200 tasks every second (a third of the executions it was sent
//! were recalled). So tasks count as long only when each of the last [`RECENT`] held its slot
//! for at least a round trip, or the last one for [`LONG_ROUND_TRIPS`] round trips: what a
//! stalled loop does to a few short tasks is no reason, one task of seconds is.

use std::time::Duration;

/// The most the automatic prefetch asks for.
pub const MAX_AUTO: u32 = 256;
/// Weight of a new sample in the moving averages: of a task longer than the mean, of one
/// shorter, and of a round trip. Long tasks count more: hoarding is what must not last, a
/// prefetch too small only costs a little throughput.
const WEIGHT_UP: f64 = 0.5;
const WEIGHT_DOWN: f64 = 0.1;
const WEIGHT: f64 = 0.2;
/// Queued tasks per task a slot ends in one round trip.
const HEADROOM: f64 = 2.0;
/// How many of the last tasks must each have held a slot for a round trip before the tasks
/// count as long.
const RECENT: usize = 16;
/// One task that held its slot this many round trips is enough to count tasks as long.
const LONG_ROUND_TRIPS: f64 = 10.0;

#[derive(Debug, Clone)]
pub struct AutoPrefetch {
    /// Mean time a task holds its slot, in seconds; none before the first one ends.
    run: Option<f64>,
    /// Mean dispatch round trip (result hold, then commit and acknowledgement), in seconds.
    round_trip: f64,
    /// The prefetch in force (told to the server).
    current: u32,
    /// What starved slots asked for (see [`AutoPrefetch::starved`]).
    boost: u32,
    /// How long the last tasks (at most [`RECENT`]) held their slots, in seconds, the newest last.
    recent: std::collections::VecDeque<f64>,
}

impl AutoPrefetch {
    /// Starts at `start` (the server keeps the value of the last session), with a round trip
    /// guessed from the result hold until one is measured.
    pub fn new(start: u32, result_hold: Duration) -> AutoPrefetch {
        AutoPrefetch {
            run: None,
            round_trip: result_hold.as_secs_f64() + 0.01,
            current: start.min(MAX_AUTO),
            boost: 0,
            recent: std::collections::VecDeque::with_capacity(RECENT),
        }
    }

    #[cfg(test)]
    pub fn current(&self) -> u32 {
        self.current
    }

    /// The server says which value is in force (a `worker set --prefetch auto`).
    pub fn set_current(&mut self, prefetch: u32) {
        self.current = prefetch.min(MAX_AUTO);
    }

    /// A task held its slot for `time`.
    pub fn ran(&mut self, time: Duration) {
        let t = time.as_secs_f64();
        self.run = Some(match self.run {
            None => t,
            Some(mean) if t > mean => mean + WEIGHT_UP * (t - mean),
            Some(mean) => mean + WEIGHT_DOWN * (t - mean),
        });
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(t);
        if !self.short() {
            self.boost = 0;
        }
    }

    /// Tasks end faster than a round trip.
    fn short(&self) -> bool {
        self.run.is_some_and(|run| run < self.round_trip)
    }

    /// Tasks have turned long: a queue held here is work an idle agent could run. The last
    /// task held its slot for [`LONG_ROUND_TRIPS`] round trips, or each of the last [`RECENT`]
    /// for one.
    pub fn long(&self) -> bool {
        let round_trip = self.round_trip;
        match self.recent.back() {
            None => false,
            Some(&last) if last >= LONG_ROUND_TRIPS * round_trip => true,
            Some(_) => self.recent.len() == RECENT && self.recent.iter().all(|&t| t >= round_trip),
        }
    }

    /// A slot freed and no task was queued for it: while tasks are short, the prefetch was
    /// too small.
    pub fn starved(&mut self, concurrency: u32) {
        if self.short() {
            self.boost = (self.boost.max(self.current).saturating_mul(2))
                .max(concurrency)
                .min(MAX_AUTO);
        }
    }

    /// A result reached the server and was committed `time` after it ended.
    pub fn round_trip(&mut self, time: Duration) {
        self.round_trip += WEIGHT * (time.as_secs_f64() - self.round_trip);
    }

    /// The prefetch the measures call for.
    pub fn target(&self, concurrency: u32) -> u32 {
        let Some(run) = self.run else {
            return self.current;
        };
        let want = HEADROOM * f64::from(concurrency) * self.round_trip / run.max(1e-4);
        let want = (want.floor() as u32).min(MAX_AUTO);
        if self.short() {
            want.max(self.boost)
        } else {
            want
        }
    }

    /// Moves to the target when it differs enough from the value in force (a quarter, or to
    /// or from 0), so that the server hears of a new value only now and then. Returns the
    /// new value to tell it.
    pub fn update(&mut self, concurrency: u32) -> Option<u32> {
        let target = self.target(concurrency);
        let current = self.current;
        let far = target.abs_diff(current) * 4 >= current.max(1);
        if target == current || !(far || target == 0 || current == 0) {
            return None;
        }
        self.current = target;
        Some(target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOLD: Duration = Duration::from_millis(50);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn starts_where_it_was_and_waits_for_a_measure() {
        let mut auto = AutoPrefetch::new(0, HOLD);
        assert_eq!(auto.update(4), None);
        assert_eq!(auto.current(), 0);
        let auto = AutoPrefetch::new(10_000, HOLD);
        assert_eq!(auto.current(), MAX_AUTO);
    }

    #[test]
    fn grows_while_tasks_end_faster_than_a_round_trip() {
        let mut auto = AutoPrefetch::new(0, HOLD);
        for _ in 0..20 {
            auto.ran(ms(2));
            auto.update(4);
        }
        // 2 × 4 slots × 60 ms / 2 ms.
        assert_eq!(auto.current(), MAX_AUTO.min(240));
        // A longer round trip (measured) asks for more, up to the bound.
        for _ in 0..20 {
            auto.round_trip(ms(200));
        }
        assert_eq!(auto.target(4), MAX_AUTO);
        // Within a quarter of the value in force: not worth a message.
        assert_eq!(auto.update(4), None);
        assert_eq!(auto.current(), 240);
    }

    #[test]
    fn stays_at_zero_for_long_tasks() {
        let mut auto = AutoPrefetch::new(0, HOLD);
        auto.ran(Duration::from_secs(5));
        assert_eq!(auto.update(2), None);
        assert_eq!(auto.current(), 0);
        // Tasks as long as a few round trips per slot need none either.
        let mut auto = AutoPrefetch::new(0, HOLD);
        auto.ran(ms(500));
        assert_eq!(auto.update(2), None);
    }

    #[test]
    fn one_long_task_brings_it_down_at_once_and_short_ones_raise_it_back() {
        let mut auto = AutoPrefetch::new(0, HOLD);
        for _ in 0..20 {
            auto.ran(ms(2));
            auto.update(4);
        }
        assert!(auto.current() > 100, "{auto:?}");
        auto.ran(Duration::from_secs(5));
        assert_eq!(auto.update(4), Some(0));
        let mut steps = 0;
        while auto.current() < 100 {
            auto.ran(ms(2));
            auto.update(4);
            steps += 1;
            assert!(steps < 100, "{auto:?}");
        }
    }

    #[test]
    fn a_slow_short_task_is_no_reason_to_give_back_a_long_task_is() {
        let mut auto = AutoPrefetch::new(0, HOLD);
        assert!(!auto.long(), "nothing measured yet");
        for _ in 0..20 {
            auto.ran(ms(2));
            auto.update(4);
        }
        // One `true` slowed to 20 ms on a loaded machine: the prefetch falls, tasks are
        // still shorter than a round trip.
        auto.ran(ms(20));
        assert!(auto.update(4).is_some_and(|p| p < 240), "{auto:?}");
        assert!(!auto.long(), "{auto:?}");
        auto.ran(Duration::from_secs(5));
        assert_eq!(auto.update(4), Some(0));
        assert!(auto.long(), "{auto:?}");
    }

    #[test]
    fn a_few_short_tasks_held_up_are_no_reason_to_give_back() {
        let mut auto = AutoPrefetch::new(0, HOLD);
        for _ in 0..20 {
            auto.ran(ms(2));
            auto.update(4);
        }
        // A busy agent loop holds a few `true`s past a round trip (60 ms): the prefetch
        // falls, but that is no reason to send the queue back.
        for _ in 0..RECENT - 1 {
            auto.ran(ms(100));
        }
        assert!(auto.update(4).is_some_and(|p| p < 20), "{auto:?}");
        assert!(!auto.long(), "{auto:?}");
        // Short tasks again, then a whole run of tasks past a round trip: they are long.
        auto.ran(ms(2));
        assert!(!auto.long(), "{auto:?}");
        for _ in 0..RECENT {
            auto.ran(ms(100));
        }
        assert!(auto.long(), "{auto:?}");
    }

    #[test]
    fn a_starved_slot_doubles_it_while_tasks_are_short() {
        let mut auto = AutoPrefetch::new(0, HOLD);
        // Slow tasks on a loaded machine: 50 ms against a 60 ms round trip.
        auto.ran(ms(50));
        assert_eq!(auto.update(4), Some(9));
        auto.starved(4);
        assert_eq!(auto.update(4), Some(18));
        auto.starved(4);
        assert_eq!(auto.update(4), Some(36));
        for _ in 0..10 {
            auto.starved(4);
        }
        assert_eq!(auto.update(4), Some(MAX_AUTO));
        // Tasks longer than a round trip: the measures alone, 0 for long ones.
        auto.ran(Duration::from_secs(5));
        assert_eq!(auto.update(4), Some(0));
        auto.starved(4);
        assert_eq!(auto.update(4), None);
    }

    #[test]
    fn small_changes_are_not_sent() {
        let mut auto = AutoPrefetch::new(0, HOLD);
        auto.ran(ms(10));
        // 2 × 4 × 60 / 10 = 48.
        assert_eq!(auto.update(4), Some(48));
        auto.ran(ms(11));
        assert_eq!(auto.update(4), None, "{auto:?}");
        assert_eq!(auto.current(), 48);
    }
}
