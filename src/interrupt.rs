//! Ctrl-C handling.
//!
//! The first Ctrl-C sets a flag that long loops (batch imports) poll so they can roll
//! back and stop cleanly; outside such a loop, or on a second Ctrl-C, the process exits
//! at once with 130.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);
// How many sections poll now (parallel batch jobs each hold one).
static POLLING: AtomicUsize = AtomicUsize::new(0);

/// Install the handler once, at start-up.
pub fn install() {
    // Failing to install (e.g. a handler already set in tests) only loses graceful
    // stopping; default signal behaviour still ends the process.
    let _ = ctrlc::set_handler(|| {
        if POLLING.load(Ordering::SeqCst) == 0 || INTERRUPTED.swap(true, Ordering::SeqCst) {
            crate::verify::sandbox::kill_all();
            std::process::exit(130);
        }
    });
}

/// True once Ctrl-C was pressed inside a [`Polling`] section.
pub fn requested() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// While alive, Ctrl-C sets a flag instead of exiting; the holder must poll
/// [`requested`].
pub struct Polling(());

impl Polling {
    /// Enter a section that polls for interruption.
    pub fn enter() -> Self {
        POLLING.fetch_add(1, Ordering::SeqCst);
        Polling(())
    }
}

impl Drop for Polling {
    fn drop(&mut self) {
        POLLING.fetch_sub(1, Ordering::SeqCst);
    }
}
