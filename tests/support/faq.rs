//! The fake Mistral's knowledge: a tiny hospital FAQ matched by keywords, so tests know exactly
//! which reply (and therefore which TTS text and audio) each caller question produces.

/// Opening hours.
pub const HOURS: &str = "The front desk and outpatient clinics are open Monday to Friday \
from 8 AM to 6 PM. Is there anything else I can help you with?";

/// The address, with Markdown the server must strip before speaking it.
pub const ADDRESS: &str = "City General Hospital is at **100 Main Street**, Springfield, next \
to the central bus station. You can [see it on the map](https://example.com/map). Is there \
anything else I can help you with?";

/// Directions: long on purpose (several sentences, well over 5 s of speech) for barge-in tests.
pub const DIRECTIONS: &str = "From the central bus station, walk north along Main Street for \
about five minutes, past the public library and the old fire station. The main entrance of the \
hospital is on your right, just after the pharmacy. If you are driving, take exit twelve from \
the highway and follow the blue signs marked City General. Parking is in the garage behind the \
building, and the first hour is free. Is there anything else I can help you with?";

/// Weekends.
pub const WEEKEND: &str = "The front desk and clinics are closed on Saturdays and Sundays, \
but visiting hours still run every day from 10 AM to 8 PM. Is there anything else?";

/// Visiting hours.
pub const VISITING: &str = "Visiting hours are every day from 10 AM to 8 PM. Is there anything \
else I can help you with?";

/// The farewell.
pub const GOODBYE: &str = "Thank you for calling City General Hospital. Goodbye!";

/// XML's special characters and Markdown in one reply, for the TwiML escaping tests.
pub const SPECIAL: &str = "**Fish & chips** cost <5 dollars> at the \"Café\" & it's \
[open late](https://example.com/?a=1&b=2).
- Ask for 'Tom'.";

/// Keywords (lowercase) → answer, checked in this order; the first match wins.
const RULES: &[(&[&str], &str)] = &[
    (&["special characters"], SPECIAL),
    (&["goodbye", "that is all"], GOODBYE),
    (&["visiting"], VISITING),
    (&["weekend", "saturday", "sunday"], WEEKEND),
    (&["get to"], DIRECTIONS),
    (&["address", "where is"], ADDRESS),
    (&["opening hours", "open on monday", "what time"], HOURS),
];

/// The reply the fake gives when `user_text` is the last user message.
pub fn answer_for(user_text: &str) -> String {
    let lower = user_text.to_lowercase();
    RULES
        .iter()
        .find(|(keys, _)| keys.iter().any(|k| lower.contains(k)))
        .map_or_else(
            || format!("You said: {user_text}"),
            |(_, a)| (*a).to_owned(),
        )
}
