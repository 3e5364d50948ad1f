//! What of a client's input an error message repeats: enough to recognise it, never enough
//! to make the answer as large as the request.

/// At most this many characters of one value.
pub const ECHO_CHARS: usize = 64;
/// At most this many names of a list.
pub const ECHO_NAMES: usize = 10;

/// `value` as an error shows it: control characters dropped, cut at [`ECHO_CHARS`] with
/// how long it was.
pub fn echo(value: &str) -> String {
    let clean: String = value.chars().filter(|c| !c.is_control()).collect();
    let length = clean.chars().count();
    if length <= ECHO_CHARS {
        clean
    } else {
        let kept: String = clean.chars().take(ECHO_CHARS).collect();
        format!("{kept}... ({length} characters)")
    }
}

/// The first [`ECHO_NAMES`] of `names`, each echoed, and how many more there are.
pub fn echo_names<S: AsRef<str>>(names: &[S]) -> String {
    let shown: Vec<String> = names
        .iter()
        .take(ECHO_NAMES)
        .map(|n| echo(n.as_ref()))
        .collect();
    match names.len().saturating_sub(ECHO_NAMES) {
        0 => shown.join(", "),
        more => format!("{} and {more} more", shown.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_values_and_lists_are_cut() {
        assert_eq!(echo("short"), "short");
        assert_eq!(echo("a\u{0}b\nc"), "abc");
        let long = "x".repeat(1_000_000);
        let shown = echo(&long);
        assert!(
            shown.len() < 100 && shown.ends_with("(1000000 characters)"),
            "{shown}"
        );
        let names: Vec<String> = (0..50_000).map(|i| format!("f{i}")).collect();
        let listed = echo_names(&names);
        assert!(
            listed.ends_with("and 49990 more") && listed.len() < 200,
            "{listed}"
        );
        assert_eq!(echo_names(&["a", "b"]), "a, b");
    }
}
