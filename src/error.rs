//! What the crate's errors share.
//!
//! Crate-private for now: the configuration errors will gather here.

/// How many characters of a refused value an error message keeps.
const MAX_REFUSED_CHARS: usize = 200;

/// At most 200 characters of a refused value, for an error message: enough
/// to recognise it, never an unbounded copy of what a caller passed.
pub(crate) fn truncate(value: &str) -> String {
    value.chars().take(MAX_REFUSED_CHARS).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_values_are_cut_to_200_characters_not_bytes() {
        assert_eq!(truncate("short"), "short");
        let long = "é".repeat(300);
        assert_eq!(truncate(&long).chars().count(), 200);
        assert_eq!(truncate(&long), "é".repeat(200));
    }
}
