//! Busy-polling (`--busy-poll`): the load generator keeps its one core awake instead of
//! sleeping in `epoll_wait` between events.
//!
//! Asleep, the generator pays a wake-up for every event that finds it idle, and it is late by
//! that much; worse for the measure, every server send to a sleeping stand-in also wakes the
//! stand-in's process on the other core (an inter-processor interrupt, in a virtual machine a
//! hypervisor exit), a cost a real provider across a network never puts on the server. Polling
//! takes both away. The core is then always busy, so the generator's CPU no longer says how
//! loaded it is; its send lateness still does.

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Keeps the runtime polling its sockets and timers until `stop` fires. On the current-thread
/// runtime the generator uses on one core, a task that yields is run again only after the
/// runtime has polled its I/O driver without waiting (and run whatever that woke), so this loop
/// turns every sleep into a poll and costs the other tasks nothing when they have work.
pub fn start(stop: CancellationToken) -> JoinHandle<()> {
    tokio::spawn(async move {
        while !stop.is_cancelled() {
            tokio::task::yield_now().await;
        }
    })
}
