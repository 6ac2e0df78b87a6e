//! Two threads for work too short for rayon's hand-off: the calling thread and one helper that
//! waits for its next job spinning, not sleeping.
//!
//! A decode step is about twenty stages of a few microseconds each. Handing a stage to one of
//! rayon's workers wakes it from sleep first (a futex wake and a thread switch, several
//! microseconds), which costs more than the stage saves. The helper here spins on a counter
//! for [`SPIN_FOR`] after each job, so within a step a hand-off costs about the time a cache
//! line takes to move between two cores; idle longer, it parks, and the next job wakes it.
//! The work is always cut in two parts that do not touch the same memory, so a machine with
//! one core, or a second thread wanting the helper while it is busy, runs both parts in turn on
//! the calling thread with the same results.

use std::cell::UnsafeCell;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

/// How long the helper keeps spinning after a job before it parks: longer than the gap between
/// two decode steps (sampling, the next token's tensors), short enough not to hold a core once
/// decoding stops.
const SPIN_FOR: Duration = Duration::from_millis(2);

type Job = &'static (dyn Fn(usize) + Sync);

struct Shared {
    /// The posted job; written by the caller before `posted`, read by the helper after it.
    job: UnsafeCell<Option<Job>>,
    /// Jobs posted so far.
    posted: AtomicUsize,
    /// Jobs the helper has finished.
    finished: AtomicUsize,
    /// The helper is parked, or about to park: the caller unparks it.
    parked: AtomicBool,
    /// The helper's part panicked.
    panicked: AtomicBool,
}

// SAFETY: `job` is written only by the thread holding `Pair::busy`, before it publishes the
// write with `posted` (release), and read by the helper only after seeing it (acquire).
unsafe impl Sync for Shared {}

struct Pair {
    shared: &'static Shared,
    helper: Thread,
    /// Held by the thread whose job the helper runs.
    busy: Mutex<()>,
}

static PAIR: OnceLock<Option<Pair>> = OnceLock::new();

fn pair() -> Option<&'static Pair> {
    PAIR.get_or_init(|| {
        let cores = thread::available_parallelism().map_or(1, |n| n.get());
        if cores < 2 {
            return None;
        }
        let shared: &'static Shared = Box::leak(Box::new(Shared {
            job: UnsafeCell::new(None),
            posted: AtomicUsize::new(0),
            finished: AtomicUsize::new(0),
            parked: AtomicBool::new(false),
            panicked: AtomicBool::new(false),
        }));
        let handle = thread::Builder::new()
            .name("tinygpt-pair".into())
            .spawn(move || helper(shared))
            .ok()?;
        Some(Pair {
            shared,
            helper: handle.thread().clone(),
            busy: Mutex::new(()),
        })
    })
    .as_ref()
}

/// Run `work(0)` on this thread and `work(1)` on the helper at the same time, and return when
/// both have finished; or both in turn here, when there is no helper or it is busy.
///
/// # Panics
/// If either part panics (after both have finished).
pub fn both(work: &(dyn Fn(usize) + Sync)) {
    let Some(pair) = pair() else {
        return in_turn(work);
    };
    let Ok(_busy) = pair.busy.try_lock() else {
        return in_turn(work);
    };
    let shared = pair.shared;
    // SAFETY: the helper uses the job only between this `posted` and its `finished`, and this
    // function waits for `finished` before it returns, so `work` outlives every use.
    unsafe {
        *shared.job.get() = Some(std::mem::transmute::<&(dyn Fn(usize) + Sync), Job>(work));
    }
    let generation = shared.posted.load(Ordering::Relaxed) + 1;
    shared.posted.store(generation, Ordering::SeqCst);
    if shared.parked.load(Ordering::SeqCst) {
        pair.helper.unpark();
    }
    let mine = catch_unwind(AssertUnwindSafe(|| work(0)));
    while shared.finished.load(Ordering::Acquire) != generation {
        std::hint::spin_loop();
    }
    if let Err(payload) = mine {
        resume_unwind(payload);
    }
    if shared.panicked.swap(false, Ordering::Relaxed) {
        panic!("the second part of a split kernel panicked");
    }
}

fn in_turn(work: &(dyn Fn(usize) + Sync)) {
    work(0);
    work(1);
}

/// The helper's loop: wait for a job (spinning, then parked), run part 1, say it is done.
fn helper(shared: &'static Shared) {
    let mut seen = 0;
    loop {
        let mut idle_since = Instant::now();
        let mut spins = 0u32;
        while shared.posted.load(Ordering::Acquire) == seen {
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(256) && idle_since.elapsed() > SPIN_FOR {
                shared.parked.store(true, Ordering::SeqCst);
                // Checked again after saying so: a job posted in between is either seen here
                // or its poster sees `parked` and unparks this thread.
                if shared.posted.load(Ordering::SeqCst) == seen {
                    thread::park_timeout(Duration::from_millis(100));
                }
                shared.parked.store(false, Ordering::SeqCst);
                idle_since = Instant::now();
            }
            std::hint::spin_loop();
        }
        seen = shared.posted.load(Ordering::Acquire);
        // SAFETY: see `both`; the job was written before `posted` was.
        let job = unsafe { (*shared.job.get()).expect("a job is written before it is posted") };
        if catch_unwind(AssertUnwindSafe(|| job(1))).is_err() {
            shared.panicked.store(true, Ordering::Relaxed);
        }
        shared.finished.store(seen, Ordering::Release);
    }
}
