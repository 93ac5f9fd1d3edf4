//! The `colorise` binary as the gateway runs it in fork mode: the picture on stdin, the
//! request's headers in `Http_*` variables, the PNG on stdout.

use std::io::{Cursor, Write};
use std::process::{Command, Stdio};

fn run(body: &[u8], content_type: &str, query: &str) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_colorise"))
        .env("Http_Content_Type", content_type)
        .env("Http_Query", query)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(body).unwrap();
    child.wait_with_output().unwrap()
}

fn gray_png() -> Vec<u8> {
    let img = image::GrayImage::from_fn(40, 10, |x, _| image::Luma([(x * 6) as u8]));
    let mut out = Vec::new();
    image::DynamicImage::ImageLuma8(img)
        .write_to(&mut Cursor::new(&mut out), image::ImageFormat::Png)
        .unwrap();
    out
}

#[test]
fn a_png_in_gives_a_colour_png_out() {
    let out = run(&gray_png(), "image/png", "palette=viridis");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let img = image::load_from_memory(&out.stdout).unwrap().into_rgb8();
    assert_eq!(img.dimensions(), (40, 10));
    assert_eq!(img.get_pixel(0, 0).0, [68, 1, 84], "viridis starts purple");
}

#[test]
fn bad_input_exits_with_the_reason() {
    let out = run(b"hello", "text/plain", "");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a PNG or JPEG"), "{err}");
    let out = run(&gray_png(), "image/png", "palette=rainbow");
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown palette"));
}
