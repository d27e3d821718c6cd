//! The LLM stand-in's knowledge: a small hospital front-desk FAQ matched by keywords. Answers are
//! short on purpose, so a demo call's replies fit between the caller's questions.

/// Opening hours.
pub const HOURS: &str = "We are open Monday to Friday, from 8 AM to 6 PM.";
/// Where the hospital is.
pub const ADDRESS: &str = "We are at 100 Main Street, Springfield.";
/// How to get there.
pub const DIRECTIONS: &str = "From the bus station, walk north on Main Street for five minutes. \
The entrance is on your right, just after the pharmacy.";
/// Weekends.
pub const WEEKEND: &str = "The front desk is closed on Saturdays and Sundays.";
/// Visiting hours.
pub const VISITING: &str = "Visiting hours are every day from 10 AM to 8 PM.";
/// The farewell.
pub const GOODBYE: &str = "Thank you for calling. Goodbye!";
/// Anything else.
pub const FALLBACK: &str =
    "I can help with opening hours, the address, directions and visiting hours.";

/// Keywords (lowercase) → answer, checked in order; the first match wins.
const RULES: &[(&[&str], &str)] = &[
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
        assert_eq!(answer("When can I visit my mother?"), VISITING);
        assert_eq!(answer("Are you open on Saturday?"), WEEKEND);
        assert_eq!(answer("How do I get to the hospital?"), DIRECTIONS);
        assert_eq!(answer("Thank you, that is all. Goodbye."), GOODBYE);
        assert_eq!(answer("Can you sing?"), FALLBACK);
    }
}
