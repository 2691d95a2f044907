//! What every target checks of an error message, beyond "no panic".
#![allow(dead_code)]

/// Unicode's mandatory line breaks (UAX #14 classes BK, CR, LF, NL): a message holding one of them is not
/// one line in a log, a terminal or the journal.
const LINE_BREAKS: [char; 7] = [
    '\n', '\r', '\u{0b}', '\u{0c}', '\u{85}', '\u{2028}', '\u{2029}',
];

/// The project's rule for errors: one line, not empty.
pub fn assert_one_line(message: &str) {
    assert!(!message.trim().is_empty(), "an empty error message");
    assert!(
        !message.contains(LINE_BREAKS),
        "an error message spans lines: {message:?}"
    );
}

/// One line, and no control character either (an escape sequence from hostile input must not reach a
/// terminal or a log viewer): for errors about input that containers or servers control.
pub fn assert_clean_line(message: &str) {
    assert_one_line(message);
    assert!(
        !message.chars().any(|c| c.is_control() && c != '\t'),
        "an error message carries a control character: {message:?}"
    );
}

/// The message is at most `max` bytes: hostile input is quoted, never copied whole.
pub fn assert_bounded(message: &str, max: usize) {
    assert!(
        message.len() <= max,
        "an error message of {} bytes (more than {max}): {:?}",
        message.len(),
        message.chars().take(200).collect::<String>()
    );
}

