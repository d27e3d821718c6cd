//! The LLM stand-in's knowledge: a small hospital front-desk FAQ matched by keywords, the one
//! table the demo, the load generator and the tests all hear. Most answers are short, so a demo
//! call's replies fit between the caller's questions; [`DIRECTIONS`] is long on purpose (the
//! barge-in recording interrupts it), [`ADDRESS`] carries Markdown the server must strip before
//! speaking, and [`SPECIAL`] carries XML's special characters for the TwiML escaping tests.

/// Opening hours.
pub const HOURS: &str = "We are open Monday to Friday, from 8 AM to 6 PM.";
/// Where the hospital is, with Markdown the server must strip before speaking it.
pub const ADDRESS: &str =
    "We are at **100 Main Street**. You can [see it on the map](https://example.com/map).";
/// Directions: long on purpose (several sentences, well over 5 s of speech) for barge-in.
pub const DIRECTIONS: &str = "From the central bus station, walk north along Main Street for \
about five minutes, past the public library and the old fire station. The main entrance of the \
hospital is on your right, just after the pharmacy. If you are driving, take exit twelve from \
the highway and follow the blue signs marked City General. Parking is in the garage behind the \
building, and the first hour is free. Is there anything else I can help you with?";
/// Weekends.
pub const WEEKEND: &str = "The front desk is closed on Saturdays and Sundays.";
/// Visiting hours.
pub const VISITING: &str = "Visiting hours are every day from 10 AM to 8 PM.";
/// The farewell.
pub const GOODBYE: &str = "Thank you for calling. Goodbye!";
/// XML's special characters and Markdown in one reply, for the TwiML escaping tests.
pub const SPECIAL: &str = "**Fish & chips** cost <5 dollars> at the \"Café\" & it's \
[open late](https://example.com/?a=1&b=2).
- Ask for 'Tom'.";
/// Anything else.
pub const FALLBACK: &str =
    "I can help with opening hours, the address, directions and visiting hours.";

/// Keywords (lowercase) → answer, checked in order; the first match wins.
const RULES: &[(&[&str], &str)] = &[
    (&["special characters"], SPECIAL),
    (&["goodbye", "that is all", "bye"], GOODBYE),
    (&["visit"], VISITING),
    (&["weekend", "saturday", "sunday"], WEEKEND),
    (&["get to", "direction", "how do i find"], DIRECTIONS),
    (&["address", "where is", "where are"], ADDRESS),
    (&["hours", "open", "what time", "close"], HOURS),
];

/// The answer to the caller's last words.
pub fn answer(user_text: &str) -> &'static str {
    let lower = user_text.to_lowercase();
    RULES
        .iter()
        .find(|(keys, _)| keys.iter().any(|k| lower.contains(k)))
        .map_or(FALLBACK, |(_, answer)| answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn questions_find_their_answers() {
        assert_eq!(answer("What are the hospital's opening hours?"), HOURS);
        assert_eq!(answer("What time do you open on Monday?"), HOURS);
        assert_eq!(answer("What is your address?"), ADDRESS);
        assert_eq!(answer("Where is the hospital?"), ADDRESS);
        assert_eq!(answer("When can I visit my mother?"), VISITING);
        assert_eq!(answer("When are visiting hours?"), VISITING);
        assert_eq!(answer("Are you open on Saturday?"), WEEKEND);
        assert_eq!(answer("Sorry, are you open on weekends?"), WEEKEND);
        assert_eq!(answer("How do I get to the hospital?"), DIRECTIONS);
        assert_eq!(
            answer("Say something with special characters & <tags>"),
            SPECIAL
        );
        assert_eq!(answer("Thank you, that is all. Goodbye."), GOODBYE);
        assert_eq!(answer("Can you sing?"), FALLBACK);
    }
}
