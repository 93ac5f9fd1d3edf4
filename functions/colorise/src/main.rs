//! The `colorise` function's process (fork mode): the picture on stdin, the colour PNG on
//! stdout; `Http_Content_Type` and `Http_Query` (`palette=NAME`) from the gateway. Bad input
//! exits 1 with the reason on stderr, which the gateway answers as a 500 with that text.

use std::io::{Read, Write};
use std::process::ExitCode;

use colorise::{colorise, picture_bytes, Palette};

fn run() -> Result<Vec<u8>, colorise::ColoriseError> {
    let mut body = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut body) {
        eprintln!("colorise: reading stdin: {e}");
    }
    let content_type = std::env::var("Http_Content_Type").ok();
    let query = std::env::var("Http_Query").unwrap_or_default();
    let palette = query
        .split('&')
        .find_map(|pair| pair.strip_prefix("palette="))
        .map(Palette::parse)
        .transpose()?
        .unwrap_or(Palette::Dusk);
    let picture = picture_bytes(&body, content_type.as_deref())?;
    colorise(&picture, palette)
}

fn main() -> ExitCode {
    match run() {
        Ok(png) => {
            if let Err(e) = std::io::stdout().write_all(&png) {
                eprintln!("colorise: writing stdout: {e}");
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("colorise: {e}");
            ExitCode::FAILURE
        }
    }
}
