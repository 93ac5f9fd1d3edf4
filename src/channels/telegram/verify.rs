//! Telegram's webhook check: no signature, but the secret token given to `setWebhook`
//! comes back in `X-Telegram-Bot-Api-Secret-Token` on every update, compared here in
//! constant time.

use http::HeaderMap;

use crate::verify::{constant_time_eq, Report, Verified, VerifyError};

/// The header carrying the secret token.
pub const SECRET_TOKEN: &str = "x-telegram-bot-api-secret-token";

/// Whether `token` is one Telegram accepts: 1–256 of `A-Z a-z 0-9 _ -`.
pub fn check_token(token: &[u8]) -> Result<(), &'static str> {
    if token.is_empty() || token.len() > 256 {
        return Err("must hold 1 to 256 characters");
    }
    if !token
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-')
    {
        return Err("may hold only A-Z, a-z, 0-9, _ and -");
    }
    Ok(())
}

/// Checks the update's secret token against the route's (more than one while a new one
/// is being set).
pub fn verify(tokens: &[Vec<u8>], headers: &HeaderMap) -> Result<Verified, VerifyError> {
    // No token yet (before `set-webhook`): nothing can match.
    if tokens.is_empty() {
        return Err(VerifyError::Mismatch);
    }
    // Not `verify::single_header`: the token is compared exactly as sent (no trimming),
    // and an empty one is a wrong token (401), not a malformed header.
    let mut values = headers.get_all(SECRET_TOKEN).iter();
    let sent = values.next().ok_or(VerifyError::MissingHeader {
        header: SECRET_TOKEN.into(),
    })?;
    if values.next().is_some() {
        return Err(VerifyError::DuplicateHeader {
            header: SECRET_TOKEN.into(),
        });
    }
    // Every token is compared, so the time taken does not say which one matched.
    let mut matched = None;
    for (index, token) in tokens.iter().enumerate() {
        if constant_time_eq(sent.as_bytes(), token) && matched.is_none() {
            matched = Some(index);
        }
    }
    match matched {
        Some(secret_index) => Ok(Verified {
            secret_index,
            timestamp: None,
            id: None,
        }),
        None => Err(VerifyError::Mismatch),
    }
}

/// `hark webhook verify --kind telegram`: the same check, with the reason in words.
pub fn explain_into(report: &mut Report, token: &[u8], headers: &HeaderMap) {
    match check_token(token) {
        Ok(()) => report.pass(format!(
            "the secret token has {} valid characters",
            token.len()
        )),
        Err(problem) => report.fail(format!("the secret token {problem}")),
    }
    let outcome = verify(&[token.to_vec()], headers);
    match &outcome {
        Ok(_) => report.pass("X-Telegram-Bot-Api-Secret-Token matches"),
        Err(VerifyError::Mismatch) => {
            report.fail("X-Telegram-Bot-Api-Secret-Token is not the secret token");
            report.hint(
                "the token is the secret_token of the last setWebhook; `hark telegram \
                 set-webhook` sets a new one and stores it",
            );
        }
        Err(e) => report.fail(e.to_string()),
    }
    crate::verify::conclude(report, outcome);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(token: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(SECRET_TOKEN, token.parse().unwrap());
        headers
    }

    #[test]
    fn only_the_exact_token_passes() {
        let tokens = [b"old-token".to_vec(), b"new_token".to_vec()];
        assert_eq!(
            verify(&tokens, &headers("new_token")).unwrap().secret_index,
            1
        );
        assert_eq!(
            verify(&tokens, &headers("new_tokeN")),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            verify(&tokens, &headers("new_token ")),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(verify(&tokens, &headers("")), Err(VerifyError::Mismatch));
        assert_eq!(
            verify(&tokens, &HeaderMap::new()).unwrap_err().reason(),
            "missing_header"
        );
        assert_eq!(verify(&[], &headers("x")), Err(VerifyError::Mismatch));
    }

    #[test]
    fn tokens_telegram_refuses_are_refused() {
        assert!(check_token(b"abc_DEF-123").is_ok());
        assert!(check_token(b"").is_err());
        assert!(check_token(b"with space").is_err());
        assert!(check_token(&[b'a'; 257]).is_err());
    }
}
