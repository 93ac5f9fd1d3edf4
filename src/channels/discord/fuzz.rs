//! The Discord channel's fuzzing entry point: the target `discord_interaction` (`fuzz/fuzz_targets/`,
//! corpus `fuzz/corpus/discord_interaction/`), registered through [`ChannelTarget`]; see [`crate::fuzzing`].

use super::DiscordRoute;
use crate::fuzzing::{message, ChannelTarget, NOW};
use crate::verify;

/// The seed of the Ed25519 key the Discord target verifies with.
pub const DISCORD_SEED: [u8; 32] = *b"fuzz-discord-application-key-032";

impl ChannelTarget for DiscordRoute {
    const TARGET: &'static str = "discord_interaction";

    fn run(data: &[u8]) {
        discord_interaction(data)
    }
}

/// A Discord interaction: accepted only when `X-Signature-Ed25519` is a valid signature of
/// timestamp + body by [`DISCORD_SEED`]'s key within the window (the report agrees); an
/// interaction parses or fails without a panic.
fn discord_interaction(data: &[u8]) {
    use crate::channels::discord;
    use aws_lc_rs::signature::KeyPair;
    let (headers, body) = message(data);
    let pair = aws_lc_rs::signature::Ed25519KeyPair::from_seed_unchecked(&DISCORD_SEED)
        .expect("a 32-byte seed");
    let key: [u8; 32] = pair.public_key().as_ref().try_into().unwrap();
    let result = discord::verify::verify(&[key], &headers, body, NOW);
    let report = verify::explain(
        verify::Kind::Channel("discord"),
        hex::encode(key).as_bytes(),
        &headers,
        body,
        NOW,
    );
    assert_eq!(report.passed(), result.is_ok());
    if let Ok(verified) = result {
        let at = verified
            .timestamp
            .expect("a verified interaction has a timestamp");
        assert!((at - NOW).abs() <= verify::TOLERANCE_SECS);
    }
    if let Ok(interaction) = serde_json::from_slice::<discord::Interaction>(body) {
        let _ = interaction.route_key();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The signed seed really is accepted, so the fuzzer starts from the accepting path.
    #[test]
    fn the_signed_seed_passes() {
        let data = crate::fuzzing::seed("discord_interaction", "command");
        let (headers, body) = message(&data);
        let pair =
            aws_lc_rs::signature::Ed25519KeyPair::from_seed_unchecked(&DISCORD_SEED).unwrap();
        let key: [u8; 32] = aws_lc_rs::signature::KeyPair::public_key(&pair)
            .as_ref()
            .try_into()
            .unwrap();
        super::super::verify::verify(&[key], &headers, body, NOW).unwrap();
    }
}
