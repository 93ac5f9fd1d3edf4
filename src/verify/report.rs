//! The diagnostic report both offline verifiers print: the steps of one check (named, for
//! Alexa's chain of checks; unnamed, for a webhook scheme's) and the verdict come in; one
//! text layout and one JSON shape go out, whichever of `hark webhook verify` and `hark
//! alexa verify` asked.
//!
//! ```text
//! kind: standard
//!   PASS  the webhook-id, webhook-timestamp and webhook-signature headers are present
//!   FAIL  signature  no signature matches (given v1,AAAAAAAA)
//!   hint  the secret was used base64-decoded; ...
//! result: FAIL (bad_signature): ...
//! ```

use std::fmt;

use chrono::{DateTime, Utc};

/// How one step went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Fail,
    /// Could not run (an earlier step failed, or an input was not given).
    Skip,
    /// A fact worth seeing (what was signed, which secret form was used).
    Info,
    /// A likely cause of a failure, found by trying the usual mistakes.
    Hint,
}

impl Status {
    /// The tag in the text layout: failures and passes in capitals, notes in lower case.
    fn tag(self) -> &'static str {
        match self {
            Status::Pass => "PASS",
            Status::Fail => "FAIL",
            Status::Skip => "SKIP",
            Status::Info => "info",
            Status::Hint => "hint",
        }
    }
}

/// One line of a [`Report`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Step {
    /// The check's name, for reports made of named checks (Alexa's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub check: Option<&'static str>,
    pub status: Status,
    pub text: String,
}

/// What the real verifier answered for the same input: the report never disagrees with
/// the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub passed: bool,
    /// The result in words (`secret #0`, or why it failed).
    pub text: String,
    /// A stable word for a failure (`bad_signature`, `stale`...), as the gateway logs it.
    pub reason: Option<&'static str>,
}

/// Why a request passes or fails, step by step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// What was checked: a webhook kind (`slack`, `hmac-sha256`...) or `alexa`.
    pub kind: String,
    /// The time the check was made at, when it was not now (`--at`).
    pub at: Option<DateTime<Utc>>,
    pub steps: Vec<Step>,
    /// The verifier's own answer; without one, the report passes when no step failed.
    pub verdict: Option<Verdict>,
}

impl Report {
    pub fn new(kind: impl Into<String>) -> Self {
        Report {
            kind: kind.into(),
            at: None,
            steps: Vec::new(),
            verdict: None,
        }
    }

    pub(crate) fn step(&mut self, status: Status, text: impl Into<String>) {
        self.steps.push(Step {
            check: None,
            status,
            text: text.into(),
        });
    }

    pub(crate) fn pass(&mut self, text: impl Into<String>) {
        self.step(Status::Pass, text);
    }

    pub(crate) fn fail(&mut self, text: impl Into<String>) {
        self.step(Status::Fail, text);
    }

    pub(crate) fn info(&mut self, text: impl Into<String>) {
        self.step(Status::Info, text);
    }

    pub(crate) fn hint(&mut self, text: impl Into<String>) {
        self.step(Status::Hint, text);
    }

    /// A named check: passed with what it found, or failed with why.
    pub(crate) fn check(&mut self, check: &'static str, result: Result<String, String>) {
        let (status, text) = match result {
            Ok(text) => (Status::Pass, text),
            Err(text) => (Status::Fail, text),
        };
        self.steps.push(Step {
            check: Some(check),
            status,
            text,
        });
    }

    /// A named check: passed with `ok`, or failed with the error.
    pub(crate) fn check_result<E: fmt::Display>(
        &mut self,
        check: &'static str,
        result: Result<(), E>,
        ok: String,
    ) {
        self.check(check, result.map(|()| ok).map_err(|e| e.to_string()));
    }

    /// A named check that could not run, and why.
    pub(crate) fn skip(&mut self, check: &'static str, why: &str) {
        self.steps.push(Step {
            check: Some(check),
            status: Status::Skip,
            text: why.to_owned(),
        });
    }

    /// The step of the check called `name`.
    pub fn get(&self, name: &str) -> Option<&Step> {
        self.steps.iter().find(|s| s.check == Some(name))
    }

    /// Whether the request verified.
    pub fn passed(&self) -> bool {
        match &self.verdict {
            Some(verdict) => verdict.passed,
            None => self.steps.iter().all(|s| s.status != Status::Fail),
        }
    }

    /// The verdict: the verifier's, or one made of the failed checks' names.
    fn result(&self) -> Verdict {
        if let Some(verdict) = &self.verdict {
            return verdict.clone();
        }
        let failed: Vec<&str> = self
            .steps
            .iter()
            .filter(|s| s.status == Status::Fail)
            .map(|s| s.check.unwrap_or("a step"))
            .collect();
        if failed.is_empty() {
            Verdict {
                passed: true,
                text: "all checks passed".into(),
                reason: None,
            }
        } else {
            Verdict {
                passed: false,
                text: format!("failed: {}", failed.join(", ")),
                reason: None,
            }
        }
    }

    /// The JSON form (`-o json`) of both verifiers.
    pub fn to_json(&self) -> serde_json::Value {
        let verdict = self.result();
        serde_json::json!({
            "kind": self.kind,
            "at": self.at.map(|at| at.to_rfc3339()),
            "passed": verdict.passed,
            "steps": self.steps,
            "result": verdict.text,
            "reason": verdict.reason,
        })
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "kind: {}", self.kind)?;
        if let Some(at) = self.at {
            writeln!(f, "checking at {at}")?;
        }
        let width = self
            .steps
            .iter()
            .filter_map(|s| s.check.map(str::len))
            .max()
            .unwrap_or(0);
        for step in &self.steps {
            match step.check {
                Some(check) => {
                    writeln!(f, "  {}  {check:<width$}  {}", step.status.tag(), step.text)?
                }
                None => writeln!(f, "  {}  {}", step.status.tag(), step.text)?,
            }
        }
        let verdict = self.result();
        let word = if verdict.passed { "PASS" } else { "FAIL" };
        match verdict.reason {
            Some(reason) => write!(f, "result: {word} ({reason}): {}", verdict.text),
            None => write!(f, "result: {word} ({})", verdict.text),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_checks_line_up_and_the_verdict_names_the_failures() {
        let mut report = Report::new("alexa");
        report.check("headers", Ok("present".into()));
        report.check("cert_chain_trust", Err("expired".into()));
        report.skip("signature", "no certificate chain");
        let text = report.to_string();
        assert!(text.contains("  PASS  headers           present"), "{text}");
        assert!(text.contains("  FAIL  cert_chain_trust  expired"), "{text}");
        assert!(
            text.ends_with("result: FAIL (failed: cert_chain_trust)"),
            "{text}"
        );
        assert!(!report.passed());
        assert_eq!(report.get("signature").unwrap().status, Status::Skip);
        let json = report.to_json();
        assert_eq!(json["passed"], false);
        assert_eq!(json["steps"][1]["check"], "cert_chain_trust");
        assert_eq!(json["steps"][1]["status"], "fail");
    }

    #[test]
    fn the_verifiers_verdict_wins_over_the_steps() {
        let mut report = Report::new("slack");
        report.pass("the headers are present");
        report.hint("the secret has a trailing newline");
        report.verdict = Some(Verdict {
            passed: false,
            text: "no signature matches".into(),
            reason: Some("bad_signature"),
        });
        let text = report.to_string();
        assert!(
            text.contains("  hint  the secret has a trailing newline"),
            "{text}"
        );
        assert!(
            text.ends_with("result: FAIL (bad_signature): no signature matches"),
            "{text}"
        );
        assert!(!report.passed());
        assert_eq!(report.to_json()["reason"], "bad_signature");
        assert!(report.to_json()["steps"][0].get("check").is_none());
    }
}
