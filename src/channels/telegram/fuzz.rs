//! The Telegram channel's fuzzing entry point: the target `telegram_update` (`fuzz/fuzz_targets/`,
//! corpus `fuzz/corpus/telegram_update/`), registered through [`ChannelTarget`]; see [`crate::fuzzing`].

use super::TelegramRoute;
use crate::fuzzing::{header_text, message, ChannelTarget, NOW};
use crate::verify;

/// The Telegram webhook's secret token.
pub const TELEGRAM_TOKEN: &[u8] = b"fuzz-secret_token";

impl ChannelTarget for TelegramRoute {
    const TARGET: &'static str = "telegram_update";

    fn run(data: &[u8]) {
        telegram_update(data)
    }
}

/// A Telegram update: accepted only with the exact secret token [`TELEGRAM_TOKEN`] (the
/// report agrees); an update parses or fails without a panic, and a command keeps no bot
/// name and no upper case.
fn telegram_update(data: &[u8]) {
    use crate::channels::telegram;
    let (headers, body) = message(data);
    let result = telegram::verify::verify(&[TELEGRAM_TOKEN.to_vec()], &headers);
    let report = verify::explain(
        verify::Kind::Channel("telegram"),
        TELEGRAM_TOKEN,
        &headers,
        body,
        NOW,
    );
    assert_eq!(report.passed(), result.is_ok());
    if result.is_ok() {
        assert_eq!(
            header_text(&headers, telegram::verify::SECRET_TOKEN).as_bytes(),
            TELEGRAM_TOKEN
        );
    }
    if let Ok(update) = serde_json::from_slice::<telegram::Update>(body) {
        if let Some(text) = update.message().and_then(|m| m.text.as_deref()) {
            if let Some((command, _)) = telegram::command(text) {
                assert!(command.starts_with('/'));
                assert!(!command.contains('@'), "{command:?}");
                assert_eq!(command.to_lowercase(), command);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The signed seed really is accepted, so the fuzzer starts from the accepting path.
    #[test]
    fn the_signed_seed_passes() {
        let data = crate::fuzzing::seed("telegram_update", "command");
        let (headers, _) = message(&data);
        super::super::verify::verify(&[TELEGRAM_TOKEN.to_vec()], &headers).unwrap();
    }
}
