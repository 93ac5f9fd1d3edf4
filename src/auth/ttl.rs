//! Token lifetimes: `30m`, `12h`, `7d` or `never` comes in; a checked [`Ttl`] goes out
//! (never zero, never past a year unless it is `never`, asked for by name).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// Lifetime of a minted token when none is asked for.
pub const DEFAULT_TTL: Duration = Duration::from_secs(24 * 3600);
/// The longest lifetime a token may be given (other than `never`).
pub const MAX_TTL: Duration = Duration::from_secs(365 * 24 * 3600);

/// How long a minted token lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ttl {
    /// Until revoked: only when asked for as `never`.
    Never,
    /// This long (at least a second, at most [`MAX_TTL`]).
    For(Duration),
}

impl Default for Ttl {
    fn default() -> Self {
        Ttl::For(DEFAULT_TTL)
    }
}

/// Why a lifetime was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TtlError {
    #[error("ttl {0:?} is not a lifetime such as 30m, 12h, 7d or never")]
    Malformed(String),
    #[error("ttl {0:?} is zero")]
    Zero(String),
    #[error("ttl {0:?} is longer than a year (use never for a token that does not expire)")]
    TooLong(String),
}

impl Ttl {
    /// The expiry time (unix seconds) of a token issued at `now`; None for `never`.
    /// Checked: a time past what the claims can hold is refused, not wrapped.
    pub fn expiry(self, now: u64) -> Result<Option<u64>, TtlError> {
        match self {
            Ttl::Never => Ok(None),
            Ttl::For(d) => now
                .checked_add(d.as_secs())
                .map(Some)
                .ok_or_else(|| TtlError::TooLong(format!("{}s", d.as_secs()))),
        }
    }

    /// This lifetime, shortened to at most `left` (a token never outlives its minter).
    pub fn at_most(self, left: Duration) -> Ttl {
        let left = left.max(Duration::from_secs(1));
        match self {
            Ttl::Never => Ttl::For(left),
            Ttl::For(d) => Ttl::For(d.min(left)),
        }
    }
}

impl FromStr for Ttl {
    type Err = TtlError;

    fn from_str(text: &str) -> Result<Ttl, TtlError> {
        let s = text.trim();
        if s.eq_ignore_ascii_case("never") {
            return Ok(Ttl::Never);
        }
        let malformed = || TtlError::Malformed(text.to_owned());
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (number, unit) = s.split_at(split);
        if number.is_empty() {
            return Err(malformed());
        }
        // A number too long for u64 is longer than a year in any unit.
        let n: u64 = number
            .parse()
            .map_err(|_| TtlError::TooLong(text.to_owned()))?;
        let unit_secs: u64 = match unit {
            "" | "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 24 * 3600,
            _ => return Err(malformed()),
        };
        let secs = n
            .checked_mul(unit_secs)
            .ok_or_else(|| TtlError::TooLong(text.to_owned()))?;
        if secs == 0 {
            return Err(TtlError::Zero(text.to_owned()));
        }
        if secs > MAX_TTL.as_secs() {
            return Err(TtlError::TooLong(text.to_owned()));
        }
        Ok(Ttl::For(Duration::from_secs(secs)))
    }
}

impl fmt::Display for Ttl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ttl::Never => f.write_str("never"),
            Ttl::For(d) => write!(f, "{}s", d.as_secs()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes_parse_checked_and_capped() {
        assert_eq!("30m".parse(), Ok(Ttl::For(Duration::from_secs(1800))));
        assert_eq!("12h".parse(), Ok(Ttl::For(Duration::from_secs(43_200))));
        assert_eq!("7d".parse(), Ok(Ttl::For(Duration::from_secs(604_800))));
        assert_eq!("90".parse(), Ok(Ttl::For(Duration::from_secs(90))));
        assert_eq!("never".parse(), Ok(Ttl::Never));
        assert_eq!("365d".parse(), Ok(Ttl::For(MAX_TTL)));
        assert!(matches!("366d".parse::<Ttl>(), Err(TtlError::TooLong(_))));
        // Would overflow u64 seconds if multiplied unchecked.
        assert!(matches!(
            "18446744073709551615d".parse::<Ttl>(),
            Err(TtlError::TooLong(_))
        ));
        assert!(matches!(
            "99999999999999999999999h".parse::<Ttl>(),
            Err(TtlError::TooLong(_))
        ));
        assert!(matches!("0h".parse::<Ttl>(), Err(TtlError::Zero(_))));
        for bad in ["", "h", "1.5h", "-1h", "1w", "1 h", "forever"] {
            assert!(
                matches!(bad.parse::<Ttl>(), Err(TtlError::Malformed(_))),
                "{bad:?}"
            );
        }
        assert_eq!(Ttl::default(), Ttl::For(DEFAULT_TTL));
    }

    #[test]
    fn expiry_is_checked_and_a_token_never_outlives_its_minter() {
        let day = Ttl::For(DEFAULT_TTL);
        assert_eq!(day.expiry(100), Ok(Some(100 + 86_400)));
        assert_eq!(Ttl::Never.expiry(100), Ok(None));
        assert!(day.expiry(u64::MAX - 5).is_err());
        let hour = Duration::from_secs(3600);
        assert_eq!(Ttl::Never.at_most(hour), Ttl::For(hour));
        assert_eq!(day.at_most(hour), Ttl::For(hour));
        assert_eq!(
            Ttl::For(Duration::from_secs(60)).at_most(hour),
            Ttl::For(Duration::from_secs(60))
        );
    }
}
