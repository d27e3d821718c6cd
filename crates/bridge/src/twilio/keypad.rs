//! The caller's keypad, for every mode that hears key presses (a Media Stream's `dtmf`, a
//! ConversationRelay `dtmf`): digits collect until `#`, which makes them one turn for the model
//! ("The caller pressed: 1 2 3"), so a prompt can ask for keypad input; `*` clears them.
//!
//! Sans-IO: keys in, at most one turn out.

/// Most digits kept before a `#`; a stuck key cannot grow the turn without bound.
pub const MAX_DIGITS: usize = 32;
/// Most keys kept in the call's record of every key pressed.
const MAX_KEYED: usize = 4 * MAX_DIGITS;

/// Digits pressed since the last `#`, and every key of the call.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Keypad {
    /// Digits since the last `#` or `*`.
    digits: Vec<char>,
    /// Every key pressed in this call, for the call's record.
    keyed: String,
}

impl Keypad {
    /// One key (`"0"`–`"9"`, `"*"`, `"#"`; anything else is recorded and ignored). Returns the
    /// caller's turn when `#` ends a run of digits.
    pub fn press(&mut self, key: &str) -> Option<String> {
        if self.keyed.len() < MAX_KEYED {
            self.keyed.push_str(key);
        }
        match key {
            "#" if !self.digits.is_empty() => {
                let digits: Vec<String> = self.digits.drain(..).map(String::from).collect();
                Some(format!("The caller pressed: {}", digits.join(" ")))
            }
            "*" => {
                self.digits.clear();
                None
            }
            digit if digit.len() == 1 && digit.chars().all(|c| c.is_ascii_digit()) => {
                if self.digits.len() < MAX_DIGITS {
                    self.digits.extend(digit.chars());
                }
                None
            }
            _ => None,
        }
    }

    /// Digits are waiting for their `#`: the caller is in the middle of keying a turn.
    pub fn pending(&self) -> bool {
        !self.digits.is_empty()
    }

    /// Every key the caller pressed, in order.
    pub fn keyed(&self) -> &str {
        &self.keyed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_become_a_turn_at_the_hash_and_star_clears_them() {
        let mut keypad = Keypad::default();
        for key in ["1", "2", "*", "4", "5", "6"] {
            assert_eq!(keypad.press(key), None);
        }
        assert_eq!(
            keypad.press("#").as_deref(),
            Some("The caller pressed: 4 5 6")
        );
        assert_eq!(keypad.press("#"), None, "# alone sends nothing");
        assert_eq!(keypad.press("A"), None);
        assert_eq!(keypad.keyed(), "12*456##A");
    }

    #[test]
    fn a_stuck_key_is_bounded() {
        let mut keypad = Keypad::default();
        for _ in 0..1000 {
            keypad.press("7");
        }
        let turn = keypad.press("#").expect("a turn");
        assert_eq!(turn.matches('7').count(), MAX_DIGITS);
        assert!(keypad.keyed().len() <= MAX_KEYED);
    }
}
