//! What the STT stand-in's handle, its handshakes and both kinds of connection (live `/v1` and
//! Flux `/v2`) share: the key, the bank, the records and the fault hooks.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::bank::Bank;
use super::probe::Probe;
use super::stt_record::{SttConnection, SttRefusal};
use super::wire::lock;
use super::{Delay, Journal};

/// Deepgram closes a socket that received nothing for this long (NET-0001).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// What the fault hooks make every open Flux connection do.
#[derive(Clone, Debug)]
pub enum FluxFault {
    /// Send this text message as it is (a malformed one, an unknown type…).
    Raw(String),
    /// Send a fatal `Error` and close with 1011, as a Flux failure would.
    Error,
}

/// What the handle, the handshake handler and the connection tasks share.
pub(super) struct Shared {
    /// The `Authorization` value a client must send (`Token <key>`).
    pub(super) expected_auth: String,
    /// The utterances the stand-in recognises.
    pub(super) bank: Arc<Bank>,
    /// Every accepted connection, when recording.
    pub(super) connections: Option<Journal<SttConnection>>,
    /// Every refused handshake, when recording.
    pub(super) refusals: Option<Journal<SttRefusal>>,
    /// Every accepted Flux connection, when recording.
    pub(super) flux_connections: Option<Journal<SttConnection>>,
    /// Every refused Flux handshake, when recording.
    pub(super) flux_refusals: Option<Journal<SttRefusal>>,
    /// Fault hook: what every open Flux connection must do now.
    pub(super) flux_faults: broadcast::Sender<FluxFault>,
    /// Fault hook: refuse every handshake with 503.
    pub(super) refuse_all: AtomicBool,
    /// Fault hook: hold each `Results` this long before sending it.
    pub(super) transcript_delay: Delay,
    /// Fires when the stand-ins shut down: open sockets close with 1001.
    pub(super) shutdown: CancellationToken,
    /// A child of `shutdown`, cancelled and replaced by [`SttStandIn::disconnect_all`].
    pub(super) kill: Mutex<CancellationToken>,
    /// The load generator's observer, when it runs one.
    pub(super) probe: Option<Probe>,
}

impl Shared {
    /// Updates connection `id`'s record, when recording.
    pub(super) fn with_conn(&self, id: Option<usize>, f: impl FnOnce(&mut SttConnection)) {
        if let (Some(journal), Some(id)) = (&self.connections, id) {
            journal.update(id, f);
        }
    }

    /// Whether connections are recorded.
    pub(super) fn recording(&self) -> bool {
        self.connections.is_some()
    }

    /// The transcript delay hook's value (zero unless a test set one).
    pub(super) fn transcript_delay(&self) -> Duration {
        self.transcript_delay.get()
    }

    /// The token that closes every open connection, as of now.
    pub(super) fn kill(&self) -> CancellationToken {
        lock(&self.kill).clone()
    }

    /// Whether the refuse-all fault hook is on.
    pub(super) fn refuses_all(&self) -> bool {
        self.refuse_all.load(Ordering::Relaxed)
    }

    /// Whether `auth` is the `Authorization` value the stand-in expects.
    pub(super) fn authorized(&self, auth: Option<&str>) -> bool {
        auth == Some(self.expected_auth.as_str())
    }

    /// Records a refused Flux handshake, when recording.
    pub(super) fn flux_refused(&self, refusal: SttRefusal) {
        if let Some(journal) = &self.flux_refusals {
            journal.push(refusal);
        }
    }

    /// Records an accepted Flux connection; its index, when recording.
    pub(super) fn flux_opened(&self, conn: SttConnection) -> Option<usize> {
        self.flux_connections.as_ref()?.push(conn)
    }

    /// Updates Flux connection `id`'s record, when recording.
    pub(super) fn with_flux_conn(&self, id: Option<usize>, f: impl FnOnce(&mut SttConnection)) {
        if let (Some(journal), Some(id)) = (&self.flux_connections, id) {
            journal.update(id, f);
        }
    }

    /// Where a Flux connection hears the fault hooks.
    pub(super) fn flux_faults(&self) -> broadcast::Receiver<FluxFault> {
        self.flux_faults.subscribe()
    }
}
