//! The web UI's charts through a real `hark up`: after some calls, each function's charts,
//! its row's sparkline and the overview count every call and mark the failed ones.

use serde_json::json;

use crate::history::{signed_in, ui_page};
use crate::util::Gateway;

/// The markup from `open` to the `close` after it, in `html`.
fn element<'a>(html: &'a str, open: &str, close: &str) -> &'a str {
    let start = html
        .find(open)
        .unwrap_or_else(|| panic!("no {open} in the page"));
    let end = html[start..].find(close).expect("a closing tag") + start;
    &html[start..end]
}

/// A chart's line: how many buckets its polylines join, and the calls its dots count.
fn line(html: &str, chart: &str, label: &str) -> (usize, u32) {
    let figure = element(
        html,
        &format!("<figure class=\"chart\" id=\"{chart}\">"),
        "</figure>",
    );
    let series = element(figure, &format!("data-label=\"{label}\">"), "</g>");
    let vertices = series
        .split("<polyline points=\"")
        .skip(1)
        .map(|p| p.split('"').next().unwrap().split(' ').count())
        .sum();
    let calls = series
        .split("data-n=\"")
        .skip(1)
        .map(|p| p.split('"').next().unwrap().parse::<u32>().unwrap())
        .sum();
    (vertices, calls)
}

#[tokio::test]
async fn charts_count_every_call_and_the_overview_names_the_failing_function() {
    let gw = Gateway::start();
    gw.deploy_sh("steady", "cat", json!({})).await;
    gw.deploy_sh("flaky", "cat >/dev/null; exit 3", json!({}))
        .await;
    for i in 0..7 {
        assert_eq!(gw.invoke("steady", &format!("call {i}")).await.0, 200);
    }
    for _ in 0..3 {
        let (status, _) = gw.invoke("flaky", "x").await;
        assert!(status >= 500, "{status}");
    }
    let cookie = signed_in(&gw).await;

    // A function's page: calls per minute over the last hour (a point a minute), its
    // error rate and latency; the dots count the calls of their minute.
    let page = ui_page(&gw, &cookie, "/ui/functions/steady").await;
    assert_eq!(line(&page, "chart-calls", "calls"), (60, 7));
    let (_, failed) = line(&page, "chart-calls", "failed");
    assert_eq!(failed, 0, "no dot on the failed line: none failed");
    assert!(page.contains("7 calls · 0 failed"), "{page}");
    let (points, calls) = line(&page, "chart-latency", "p95");
    assert!((1..=2).contains(&points) && calls == 7, "{points} {calls}");
    let day = ui_page(&gw, &cookie, "/ui/functions/steady?range=day").await;
    assert_eq!(
        line(&day, "chart-calls", "calls"),
        (96, 7),
        "a day by quarter hour"
    );

    let page = ui_page(&gw, &cookie, "/ui/functions/flaky").await;
    assert_eq!(line(&page, "chart-errors", "failed").1, 3);
    assert!(page.contains("3 calls · 3 failed"), "{page}");

    // The functions page: a sparkline per row, failed calls named.
    let list = ui_page(&gw, &cookie, "/ui/").await;
    assert!(list.contains("data-buckets=\"60\""), "{list}");
    assert!(list.contains("Last hour: 7 calls, 0 failed"), "{list}");
    assert!(list.contains("Last hour: 3 calls, 3 failed"), "{list}");
    assert!(list.contains("100% failed"), "{list}");

    // The overview: every call, the busiest first, the failing one named with its rate;
    // the queue and browser pool charts are drawn from the sampled gauges.
    let overview = ui_page(&gw, &cookie, "/ui/overview").await;
    assert_eq!(line(&overview, "chart-rate", "calls"), (60, 10));
    let busiest = element(&overview, "<table id=\"busiest\">", "</table>");
    let steady = busiest.find(">steady<").expect("steady among the busiest");
    let flaky = busiest.find(">flaky<").expect("flaky among the busiest");
    assert!(steady < flaky, "the busiest first: {busiest}");
    let failing = element(&overview, "<table id=\"failing\">", "</table>");
    assert!(
        failing.contains(">flaky<") && failing.contains("3 of 3") && failing.contains("100%"),
        "{failing}"
    );
    assert!(!failing.contains(">steady<"), "{failing}");
    let (sampled, _) = line(&overview, "chart-queue", "waiting or running");
    assert!(sampled >= 1, "the queue's depth now, at least");
    assert!(overview.contains("id=\"total-calls\">10<"), "{overview}");
}
