//! Repeated identical warnings are rate-limited with a count: a flood of forged deliveries
//! logs the first refusal in full, holds the repeats back, and reports them in one line
//! (`N more like this suppressed`) when the interval ends; another kind of refusal is
//! still logged at once.

use std::time::{Duration, Instant};

use crate::util::{strip_ansi, Gateway};

/// Posts a delivery to `/hooks/{route}` with a signature made up by the sender.
async fn forged(gw: &Gateway, route: &str, id: usize) -> u16 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    gw.client
        .post(format!("{}/hooks/{route}", gw.url))
        .header("webhook-id", format!("msg-{id}"))
        .header("webhook-timestamp", now.to_string())
        .header(
            "webhook-signature",
            "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        )
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// The log lines holding every one of `needles`.
fn lines_with(gw: &Gateway, needles: &[&str]) -> Vec<String> {
    strip_ansi(&gw.output())
        .lines()
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .map(str::to_owned)
        .collect()
}

/// The log lines holding every one of `needles`, once there is one; the test fails after
/// `within` without.
async fn lines_within(gw: &Gateway, needles: &[&str], within: Duration) -> Vec<String> {
    let deadline = Instant::now() + within;
    loop {
        let found = lines_with(gw, needles);
        if !found.is_empty() {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "no line with {needles:?} in {within:?}:\n{}",
            gw.output()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_flood_of_forged_deliveries_logs_one_line_and_then_a_count() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("hark.yml"),
        "functions:\n  ok:\n    fprocess: echo ok\nchannels:\n  hooks:\n    deploy:\n      standard_webhooks_secrets: [deploy-hook]\n      function: ok\n    other:\n      standard_webhooks_secrets: [deploy-hook]\n      function: ok\n",
    )
    .unwrap();
    let gw = Gateway::start_in_with_env(
        dir.path(),
        &[],
        &[("HARK_SECRET_DEPLOY_HOOK", "whsec_ZW52aXJvbm1lbnQgdmFsdWU=")],
    );
    for id in 0..30 {
        assert_eq!(forged(&gw, "deploy", id).await, 401);
    }
    // Another route's refusal is its own kind: logged at once, in full.
    assert_eq!(forged(&gw, "other", 99).await, 401);
    // Not `output_containing("route=other")`: the start-up line "route ready" holds that
    // too, and the refusal is written a moment after the 401 (on a loaded machine, after
    // the check: the test failed that way twice).
    let other = lines_within(
        &gw,
        &["delivery refused", "route=other"],
        Duration::from_secs(10),
    )
    .await;
    let first = lines_with(&gw, &["delivery refused", "route=deploy"]);
    assert_eq!(first.len(), 1, "{first:#?}");
    assert!(first[0].contains("signature"), "{}", first[0]);
    assert_eq!(other.len(), 1, "{other:#?}");
    // When the interval ends, one line counts the 29 held back.
    let summary = lines_within(&gw, &["more like this suppressed"], Duration::from_secs(20))
        .await
        .remove(0);
    assert!(
        summary.contains("29 more like this suppressed") && summary.contains("route=hooks/deploy"),
        "{summary}"
    );
}
