//! {{ name }}: a fork-mode Hark function. The request body comes in on stdin; what is
//! written to stdout is the response. The request's method, path, query and headers are
//! in `Http_*` environment variables (`Http_Method`, `Http_Path`, `Http_Query`,
//! `Http_Content_Type`). A non-zero exit answers 500 with the end of stderr.

use std::io::{Read, Write};

/// Answers one call.
fn handle(body: &str) -> String {
    let who = body.trim();
    let who = if who.is_empty() { "world" } else { who };
    format!("Hello from {{ name }}, {who}!\n")
}

fn main() -> std::io::Result<()> {
    let mut body = Vec::new();
    std::io::stdin().read_to_end(&mut body)?;
    let answer = handle(&String::from_utf8_lossy(&body));
    std::io::stdout().write_all(answer.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::handle;

    #[test]
    fn greets_the_body_or_the_world() {
        assert_eq!(handle("Ada\n"), "Hello from {{ name }}, Ada!\n");
        assert_eq!(handle(""), "Hello from {{ name }}, world!\n");
    }
}
