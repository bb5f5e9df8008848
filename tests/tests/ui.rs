//! The web UI in a real headless Chromium (see `browser/`) against a real scitqd and agent:
//! log in (a worker token cannot), watch a running task's lines arrive, stop and restart a
//! batch, relaunch a failed task with a new command, change a worker's concurrency and see
//! its agent run that many, a task printing `<script>` shown as text, and a POST without
//! its CSRF token refused. Each page's screenshot goes to `target/ui-screenshots/`.

mod browser;

use std::time::Duration;

use browser::{Driver, click, eventually, find, http, log_in, post, screenshot, shows};
use fantoccini::Locator;
use scitq_tests::{Agent, Server, ServerOpts, poll, touch, wait_for_file_sh};

const CONNECT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_ui_in_a_browser() {
    let server = Server::start(ServerOpts::default());
    let c = server.client();
    let port = server.port();
    let base = format!("http://127.0.0.1:{port}");
    // One slot and no prefetch, so the order tasks run in is the test's.
    let _agent = Agent::start(
        &server,
        "ui-agent",
        1,
        &["--prefetch", "0", "--heartbeat", "1s"],
    );
    let worker_id = c.wait_worker_online("ui-agent", CONNECT);

    let driver = Driver::start();
    let browser = driver.browser().await;

    // --- Logging in: a worker token is refused, an admin token opens the batches.
    log_in(&browser, &base, server.worker_token()).await;
    shows(&browser, "p.error", "worker token cannot log in").await;
    screenshot(&browser, "login").await;
    log_in(&browser, &base, server.admin_token()).await;
    shows(&browser, "h1", "Batches").await;

    // --- Live output: a task prints a line, waits, prints another.
    let gate = c.scratch_path("gate");
    let live_script = format!(
        "echo first-line; echo '<script>alert(1)</script>'; {}; echo second-line",
        wait_for_file_sh(&gate)
    );
    let live = c.create_sh("live", &live_script, &[]);
    c.wait_task(live, "running", CONNECT);
    browser
        .goto(&format!("{base}/ui/tasks/{live}"))
        .await
        .unwrap();
    shows(&browser, "#output", "first-line").await;
    // Shown as text: the tags are in the text, no script element was made of them, and no
    // alert is open.
    let shown = shows(&browser, "#output", "<script>alert(1)</script>").await;
    assert!(shown.contains("<script>alert(1)</script>"), "{shown}");
    let scripts = browser
        .find_all(Locator::Css("#output script"))
        .await
        .unwrap();
    assert!(scripts.is_empty(), "a <script> element in the output");
    assert!(browser.get_alert_text().await.is_err(), "an alert is open");

    // Batch "steer" queues behind the live task; stopped from the page, it starts nothing.
    let steer: Vec<i64> = (0..2)
        .map(|i| c.create_sh("steer", &format!("echo steer-{i}"), &[]))
        .collect();
    browser.goto(&format!("{base}/ui/")).await.unwrap();
    click(&browser, "tr[data-batch='steer'] button[value=stop]").await;
    shows(&browser, "p.note", "batch steer stopped").await;
    shows(&browser, "tr[data-batch='steer'] td.state", "stopped").await;

    // The live task's second line arrives in the open page, with no reload.
    browser
        .goto(&format!("{base}/ui/tasks/{live}"))
        .await
        .unwrap();
    shows(&browser, "#output", "first-line").await;
    shows(&browser, "#output-live", "live").await;
    touch(&gate);
    shows(&browser, "#output", "second-line").await;
    shows(&browser, "#output-live", "ended").await;
    c.wait_task(live, "succeeded", CONNECT);
    // Search within the output.
    find(&browser, "#output-search")
        .await
        .send_keys("second")
        .await
        .unwrap();
    shows(&browser, "#output-matches", "1 matching line").await;
    shows(&browser, "#output-found", "second-line").await;
    screenshot(&browser, "task").await;

    // The worker is free now; another batch's task runs while "steer" waits.
    let probe = c.create_sh("probe", "echo probe", &[]);
    c.wait_task(probe, "succeeded", CONNECT);
    for id in &steer {
        assert_eq!(c.status(*id), "pending", "task {id} of the stopped batch");
    }
    browser.goto(&format!("{base}/ui/")).await.unwrap();
    screenshot(&browser, "batches").await;
    click(&browser, "tr[data-batch='steer'] button[value=go]").await;
    shows(&browser, "p.note", "batch steer goes on").await;
    for id in &steer {
        c.wait_task(*id, "succeeded", CONNECT);
    }
    shows(&browser, "tr[data-batch='steer'] .done", "100% done").await;

    // --- A failed task relaunched from its page with a new command.
    let failed = c.create_sh("fix", "echo broken; exit 3", &[]);
    c.wait_task(failed, "failed", CONNECT);
    browser
        .goto(&format!("{base}/ui/tasks/{failed}"))
        .await
        .unwrap();
    shows(&browser, "#output", "broken").await;
    let command = find(&browser, "#relaunch-command").await;
    command.clear().await.unwrap();
    command.send_keys("echo fixed").await.unwrap();
    click(&browser, "form.relaunch button[type=submit]").await;
    shows(&browser, "p.note", "relaunched with the new command").await;
    c.wait_task(failed, "succeeded", CONNECT);
    browser.refresh().await.unwrap();
    shows(&browser, "#output", "fixed").await;
    let rows = browser
        .find_all(Locator::Css("table.executions tbody tr"))
        .await
        .unwrap();
    assert_eq!(rows.len(), 2, "both executions are listed");
    assert_eq!(c.task(failed)["command"], "echo fixed");

    // --- The tasks page lists them, filtered by batch.
    browser
        .goto(&format!("{base}/ui/tasks?batch=steer"))
        .await
        .unwrap();
    let listed = browser
        .find_all(Locator::Css("table.tasks tbody tr"))
        .await
        .unwrap();
    assert_eq!(listed.len(), steer.len(), "the tasks of batch steer");
    screenshot(&browser, "tasks").await;

    // --- Concurrency 3 from the workers page: three waiting tasks then run at once.
    browser.goto(&format!("{base}/ui/workers")).await.unwrap();
    shows(&browser, "tr[data-worker='ui-agent']", "free of").await;
    let field = find(
        &browser,
        "tr[data-worker='ui-agent'] input[name=concurrency]",
    )
    .await;
    field.clear().await.unwrap();
    field.send_keys("3").await.unwrap();
    click(&browser, "tr[data-worker='ui-agent'] form.settings button").await;
    shows(&browser, "p.note", "now runs 3 task(s) at once").await;
    let hold = c.scratch_path("hold");
    let held: Vec<i64> = (0..3)
        .map(|_| c.create_sh("wide", &wait_for_file_sh(&hold), &[]))
        .collect();
    poll(CONNECT, "three tasks running at once", || {
        let running = held.iter().filter(|id| c.status(**id) == "running").count();
        if running == 3 {
            Ok(())
        } else {
            Err(format!("{running} running"))
        }
    });
    browser.refresh().await.unwrap();
    shows(&browser, "tr[data-worker='ui-agent'] td.active", "3").await;
    screenshot(&browser, "workers").await;
    touch(&hold);
    for id in &held {
        c.wait_task(*id, "succeeded", CONNECT);
    }

    // --- A POST with the session but without its CSRF token is refused and changes nothing.
    let cookie = browser
        .get_named_cookie("scitq_session")
        .await
        .expect("the session cookie");
    assert_eq!(cookie.http_only(), Some(true));
    assert_eq!(format!("{:?}", cookie.same_site()), "Some(Strict)");
    let session = format!("scitq_session={}", cookie.value());
    let (head, _) = post(port, "/ui/batches/act", &session, "name=steer&action=stop");
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    let (head, _) = post(
        port,
        "/ui/batches/act",
        &session,
        "name=steer&action=stop&csrf=guess",
    );
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    let batches = c.batches();
    let steer_batch = batches
        .iter()
        .find(|b| b["name"] == "steer")
        .expect("batch steer");
    assert_ne!(steer_batch["stopped"], true, "{steer_batch}");
    // The worker settings form too.
    let (head, _) = post(
        port,
        &format!("/ui/workers/{worker_id}/settings"),
        &session,
        "concurrency=9",
    );
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");

    // Pages carry a policy without inline script; without a session they send to log in.
    let (head, _) = http(
        port,
        &format!("GET /ui/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"),
    );
    let lower = head.to_lowercase();
    assert!(lower.contains("location: /ui/login"), "{head}");
    assert!(
        lower.contains("content-security-policy: default-src 'none'; script-src 'self';"),
        "{head}"
    );
    assert!(!lower.contains("unsafe-inline"), "{head}");

    // On a phone's width the pages still fit: the tables scroll inside their box, the page
    // itself does not scroll sideways.
    browser.set_window_size(390, 844).await.unwrap();
    browser.goto(&format!("{base}/ui/")).await.unwrap();
    shows(&browser, "h1", "Batches").await;
    let overflow = browser
        .execute(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        overflow.as_i64(),
        Some(0),
        "the page scrolls sideways on a phone"
    );
    screenshot(&browser, "batches-phone").await;

    // Logging out ends the session: the old cookie no longer opens a page.
    // The click returns when the form is submitted, not when the next page has loaded.
    click(&browser, "form.logout button").await;
    eventually("the login page after logging out", || async {
        let url = browser.current_url().await.map_err(|e| e.to_string())?;
        if url.path().ends_with("/ui/login") {
            Ok(())
        } else {
            Err(url.to_string())
        }
    })
    .await;
    let (head, _) = http(
        port,
        &format!(
            "GET /ui/workers HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nCookie: {session}\r\n\
             Connection: close\r\n\r\n"
        ),
    );
    assert!(
        head.to_lowercase().contains("location: /ui/login"),
        "{head}"
    );

    browser.close().await.unwrap();
    drop(driver);
}
