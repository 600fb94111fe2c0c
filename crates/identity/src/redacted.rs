//! A wrapper that keeps a value out of logs and error messages.

use std::fmt;

/// Holds a secret; `Debug` and `Display` print `***`. Reach the value only
/// through [`Redacted::expose`], so every use is visible in review.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Redacted<T>(T);

impl<T> Redacted<T> {
    pub fn new(value: T) -> Redacted<T> {
        Redacted(value)
    }

    pub fn expose(&self) -> &T {
        &self.0
    }

    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> From<T> for Redacted<T> {
    fn from(value: T) -> Redacted<T> {
        Redacted(value)
    }
}

impl<T> fmt::Debug for Redacted<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl<T> fmt::Display for Redacted<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_stars() {
        let r = Redacted::new(String::from("sk-live-123"));
        assert_eq!(format!("{r:?} {r}"), "*** ***");
        assert_eq!(r.expose(), "sk-live-123");
    }
}
