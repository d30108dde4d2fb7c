//! The error every actor returns for a request field outside its limits.

use std::fmt;

/// A request field whose value is outside its limit. Its message names the
/// field, the value and the limit, and it maps to `INVALID_ARGUMENT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidArgument {
    /// Field path in the request, for example `spec.params.width`.
    pub field: String,
    /// The rejected value, as the client sent it.
    pub value: String,
    /// The rule it broke, for example "a multiple of 8 from 8 to 1024".
    pub limit: String,
}

impl InvalidArgument {
    /// Creates the error for `field` with `value`, which must be `limit`.
    pub fn new(
        field: impl Into<String>,
        value: impl fmt::Display,
        limit: impl Into<String>,
    ) -> Self {
        Self {
            field: field.into(),
            value: value.to_string(),
            limit: limit.into(),
        }
    }
}

impl fmt::Display for InvalidArgument {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid {}: {}; it must be {}",
            self.field, self.value, self.limit
        )
    }
}

impl std::error::Error for InvalidArgument {}

impl From<InvalidArgument> for tonic::Status {
    fn from(error: InvalidArgument) -> Self {
        tonic::Status::invalid_argument(error.to_string())
    }
}

/// Checks that a prompt is non-empty and at most `max_chars` characters.
pub fn check_prompt(field: &str, prompt: &str, max_chars: usize) -> Result<(), InvalidArgument> {
    let chars = prompt.chars().count();
    if prompt.trim().is_empty() {
        return Err(InvalidArgument::new(
            field,
            format!("{prompt:?}"),
            format!("non-empty text of at most {max_chars} characters"),
        ));
    }
    if chars > max_chars {
        return Err(InvalidArgument::new(
            field,
            format!("text of {chars} characters"),
            format!("at most {max_chars} characters"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_names_field_value_and_limit() {
        let error = InvalidArgument::new("width", 100, "a multiple of 8");
        assert_eq!(
            error.to_string(),
            "invalid width: 100; it must be a multiple of 8"
        );
    }

    #[test]
    fn empty_and_long_prompts_rejected() {
        assert!(check_prompt("prompt", "  ", 10).is_err());
        let long = check_prompt("prompt", "abcdefghijk", 10).unwrap_err();
        assert_eq!(long.value, "text of 11 characters");
        assert!(check_prompt("prompt", "a red circle", 20).is_ok());
    }
}
