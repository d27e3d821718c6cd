//! A relay call that outlives its ConversationRelay session.
//!
//! Twilio does not reconnect a ConversationRelay socket: when it drops, the session ends and
//! Twilio requests the `<Connect action>` (`/stream_ended`) with `SessionStatus=failed`
//! (PROTOCOLS §9.4, §9.5). And a draining instance moves its quiet sessions away: it records
//! [`crate::store::NextStep::Resume`] and sends `end`. Either way the call's whole state is the
//! conversation in the store, by `CallSid`, so `/stream_ended` (on any instance) answers a fresh
//! `<Connect><ConversationRelay>` ([`resume_twiml`]), the same as the webhook's but for its
//! welcome line, and the new session loads the history and goes on.
//!
//! Bounded: a call is resumed at most [`MAX_RESUMPTIONS`] times in a row (the count lapses a
//! few minutes after the latest, [`crate::store::Store::count_resumption`]); past that — a
//! relay that keeps failing, or an instance that keeps refusing — the caller hears
//! [`GIVE_UP_APOLOGY`] and the call ends.

use super::{connect, RelaySettings};
use crate::twilio::twiml::{self, Element};

/// Resumptions of one call in a row before it ends with an apology. Three: a blip and a
/// rolling deploy (a move, then perhaps a failure on a refusing instance) all fit; a relay that
/// fails at every session costs the caller three short lines, not a loop.
pub const MAX_RESUMPTIONS: u32 = 3;

/// Said by Twilio as the new session opens after the previous one failed: the caller heard
/// the line go quiet and may have been cut off mid-sentence.
pub const RESUME_AFTER_FAILURE: &str = "Sorry, we were cut off for a moment. Please go on.";

/// Said by Twilio as the new session opens after a move off a draining instance. The move
/// happens when the assistant has finished speaking, so the floor is the caller's: a short
/// line that hands it back, rather than silence (words said during the switch are lost, and
/// the caller should know the line is alive) or "one moment" (which promises more speech).
pub const RESUME_AFTER_MOVE: &str = "I'm still here. Go ahead.";

/// Said (in `TWILIO_VOICE`) before hanging up when a call has been resumed too often.
pub const GIVE_UP_APOLOGY: &str =
    "Sorry, we are having trouble with this call. Please call again later. Goodbye.";

/// Why a call goes on in a new session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// The session failed with the call still up.
    Failed,
    /// A draining instance moved it at a quiet moment.
    Moved,
}

impl Cause {
    /// The `cause` label of `ivr_bridge_relay_resumptions_total`.
    pub fn label(self) -> &'static str {
        match self {
            Cause::Failed => "failed",
            Cause::Moved => "moved",
        }
    }

    /// What the caller hears as the new session opens.
    pub fn welcome(self) -> &'static str {
        match self {
            Cause::Failed => RESUME_AFTER_FAILURE,
            Cause::Moved => RESUME_AFTER_MOVE,
        }
    }
}

/// What `/stream_ended` needs to write a new session's TwiML (relay mode only).
#[derive(Debug, Clone)]
pub struct Resumer {
    /// Twilio's voice and ears, as the webhook writes them.
    pub settings: RelaySettings,
    /// `LANGUAGE`.
    pub language: String,
}

impl Resumer {
    /// `<Connect action><ConversationRelay>` for a new session of the call, opened with the
    /// welcome line of `cause`: built by the webhook's own [`connect`].
    pub fn resume_twiml(&self, action: String, relay_url: String, cause: Cause) -> String {
        let welcome = cause.welcome();
        let connect = connect(action, relay_url, welcome, &self.settings, &self.language);
        twiml::response([connect])
    }
}

/// The apology and `<Hangup/>` of a call resumed too often; `voice` is `TWILIO_VOICE`.
pub fn give_up(voice: &str) -> String {
    let say = Element::new("Say")
        .attr("voice", voice)
        .text(GIVE_UP_APOLOGY);
    twiml::response([say, Element::new("Hangup")])
}
