//! Recruitment in the web UI, in a real headless Chromium (see `browser/`), against a real
//! scitqd with the local provider (processes on this machine, at most 2): a rule added
//! from the recruiters page for a batch with tasks, its machines shown on the workers page
//! while their agents cannot reach scitqd (a proxy the test cuts), then as workers with
//! their provider, flavor and region once they connect and run the batch; the provisioning
//! jobs with their logs; the rule paused, resumed and deleted from the page, and its
//! machines destroyed once idle. Screenshots go to `target/ui-screenshots/`.

mod browser;

use std::time::Duration;

use browser::{Driver, click, eventually, find, log_in, post, screenshot, shows};
use fantoccini::{Client, Locator};
use scitq_tests::recruiting::{LocalProviderOpts, LocalRecruiting};
use scitq_tests::{poll, touch, wait_for_file_sh};
use serde_json::Value;

const LONG: Duration = Duration::from_secs(120);
const TASKS: usize = 8;

/// scitqd with the local provider (at most 2 machines); its recruited agents reach it
/// through a proxy.
fn start() -> LocalRecruiting {
    LocalRecruiting::start(LocalProviderOpts {
        max_instances: 2,
        deploy_timeout: Duration::from_secs(120),
        interval: Duration::from_millis(300),
    })
}

/// The `attr` of every element `css` matches (an error when the page reloaded meanwhile).
async fn attrs(browser: &Client, css: &str, attr: &str) -> Result<Vec<String>, String> {
    let mut found = Vec::new();
    let elements = browser
        .find_all(Locator::Css(css))
        .await
        .map_err(|e| e.to_string())?;
    for element in elements {
        if let Some(value) = element.attr(attr).await.map_err(|e| e.to_string())? {
            found.push(value);
        }
    }
    Ok(found)
}

async fn fill(browser: &Client, css: &str, value: &str) {
    let field = find(browser, css).await;
    field.clear().await.unwrap();
    field.send_keys(value).await.unwrap();
}

/// Reloads `url` until the element `css` shows `want`.
async fn shows_after_reload(browser: &Client, url: &str, css: &str, want: &str) {
    eventually(&format!("{css} to show {want:?} at {url}"), || async {
        browser.goto(url).await.map_err(|e| e.to_string())?;
        let element = browser
            .find(Locator::Css(css))
            .await
            .map_err(|e| format!("no {css}: {e}"))?;
        let text = element.text().await.map_err(|e| e.to_string())?;
        if text.contains(want) {
            Ok(())
        } else {
            Err(text)
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recruiters_machines_and_jobs_in_the_web_ui() {
    let setup = start();
    let server = &setup.server;
    let c = server.client();
    let base = format!("http://127.0.0.1:{}", server.port());
    // The tasks hold their workers until the test has seen them (idle ones go in 3 s).
    let gate = c.scratch_path("gate");
    let tasks: Vec<i64> = (0..TASKS)
        .map(|i| {
            let script = format!("{}; echo task-{i}", wait_for_file_sh(&gate));
            c.create_sh("rec", &script, &[])
        })
        .collect();
    // The recruited agents cannot reach scitqd yet: their machines stay "deploying".
    setup.proxy.cut();

    let driver = Driver::start();
    let browser = driver.browser().await;
    log_in(&browser, &base, server.admin_token()).await;
    shows(&browser, "h1", "Batches").await;

    // --- A rule added from the page.
    browser
        .goto(&format!("{base}/ui/recruiters"))
        .await
        .unwrap();
    shows(&browser, "main", "No rule yet").await;
    fill(&browser, "form.rule input[name=batch]", "rec").await;
    fill(&browser, "form.rule input[name=max_workers]", "2").await;
    fill(&browser, "form.rule input[name=concurrency]", "2").await;
    fill(&browser, "form.rule input[name=idle_timeout]", "3s").await;
    // A flavor the provider does not offer: refused, the form comes back as it was sent.
    fill(&browser, "form.rule input[name=flavor]", "nope").await;
    click(&browser, "form.rule button[type=submit]").await;
    shows(
        &browser,
        "form.rule p.error",
        "no flavor of provider \"local\" matches nope",
    )
    .await;
    let kept = find(&browser, "form.rule input[name=batch]").await;
    assert_eq!(kept.prop("value").await.unwrap().as_deref(), Some("rec"));
    let kept = find(&browser, "form.rule input[name=idle_timeout]").await;
    assert_eq!(kept.prop("value").await.unwrap().as_deref(), Some("3s"));
    assert_eq!(
        server.ctl_json(["recruiter", "list"]),
        serde_json::json!([])
    );
    screenshot(&browser, "recruiters-refused").await;
    fill(&browser, "form.rule input[name=flavor]", "").await;
    click(&browser, "form.rule button[type=submit]").await;
    shows(
        &browser,
        "p.note",
        "up to 2 machine(s) of local for batch rec",
    )
    .await;
    let rule = shows(&browser, "tr[data-batch='rec'] td.state", "active").await;
    assert!(!rule.contains("paused"), "{rule}");
    let rules = server.ctl_json(["recruiter", "list"]);
    assert_eq!(rules[0]["concurrency"], 2, "{rules}");
    assert_eq!(rules[0]["idle_timeout_s"], 3, "{rules}");
    let rule_id = rules[0]["id"].as_i64().expect("a rule id");

    // --- Its machines, deploying: listed on the workers page with their state.
    let workers_url = format!("{base}/ui/workers");
    let machines = eventually("two machines deploying on the workers page", || async {
        browser
            .goto(&workers_url)
            .await
            .map_err(|e| e.to_string())?;
        let names = attrs(&browser, "table.machines tr[data-machine]", "data-machine").await?;
        let states = attrs(
            &browser,
            "table.machines tr[data-machine] td.state .st",
            "class",
        )
        .await?;
        if names.len() == 2 && states.iter().all(|s| s.contains("st-deploying")) {
            Ok(names)
        } else {
            Err(format!("{names:?} {states:?}"))
        }
    })
    .await;
    shows(&browser, "table.machines", "local").await;
    screenshot(&browser, "workers-deploying").await;

    // --- They connect: workers with their provider, flavor and region; the batch runs.
    setup.proxy.restore();
    for name in &machines {
        let row = format!("tr[data-worker='{name}'] td.machine");
        shows_after_reload(&browser, &workers_url, &row, "local").await;
        for part in ["provider", "flavor", "region"] {
            shows(&browser, &format!("{row} dd.{part}"), "local").await;
        }
        shows(&browser, &row, &format!("rule {rule_id}")).await;
    }
    assert!(
        browser
            .find_all(Locator::Css("table.machines tr[data-machine]"))
            .await
            .unwrap()
            .is_empty(),
        "connected machines are workers, not listed as not connected"
    );
    screenshot(&browser, "workers-recruited").await;
    touch(&gate);
    poll(
        LONG,
        "the batch to succeed on the recruited workers",
        || {
            let done = tasks
                .iter()
                .filter(|id| c.status(**id) == "succeeded")
                .count();
            if done == TASKS {
                Ok(())
            } else {
                Err(format!("{done} of {TASKS} succeeded"))
            }
        },
    );

    // --- The jobs: a create per machine, succeeded, its log a click away.
    let jobs_url = format!("{base}/ui/jobs");
    browser.goto(&jobs_url).await.unwrap();
    for name in &machines {
        let status = format!("tr[data-machine='{name}'][data-kind='create'] td.status");
        shows(&browser, &status, "succeeded").await;
    }
    let stored = setup
        .jobs()
        .into_iter()
        .find(|j| j["machine"] == machines[0].as_str() && j["kind"] == "create")
        .expect("the create job");
    let first_line = stored["log"]
        .as_str()
        .and_then(|l| l.lines().next())
        .unwrap_or_default()
        .to_owned();
    assert!(!first_line.is_empty(), "{stored}");
    // The page reloads itself every 10 s: each probe finds its element again.
    let log = format!("#job-log-{}", stored["id"].as_i64().expect("a job id"));
    eventually("the whole log hidden until asked for", || async {
        let pre = browser
            .find(Locator::Css(&format!("{log} pre")))
            .await
            .map_err(|e| e.to_string())?;
        match pre.is_displayed().await {
            Ok(false) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    click(&browser, &format!("{log} summary")).await;
    shows(&browser, &format!("{log} pre"), &first_line).await;
    screenshot(&browser, "jobs").await;

    // --- Paused and resumed from the page.
    let recruiters_url = format!("{base}/ui/recruiters");
    browser.goto(&recruiters_url).await.unwrap();
    shows(&browser, "tr[data-batch='rec'] td.machines", "of 2").await;
    click(&browser, "tr[data-batch='rec'] button[value=pause]").await;
    shows(&browser, "p.note", &format!("rule {rule_id} paused")).await;
    shows(&browser, "tr[data-batch='rec'] td.state", "by an operator").await;
    assert_eq!(server.ctl_json(["recruiter", "list"])[0]["paused"], true);
    screenshot(&browser, "recruiters").await;
    click(&browser, "tr[data-batch='rec'] button[value=resume]").await;
    shows(&browser, "p.note", "recruits for batch rec again").await;
    shows(&browser, "tr[data-batch='rec'] td.state", "active").await;
    assert_eq!(server.ctl_json(["recruiter", "list"])[0]["paused"], false);

    // A POST without its CSRF token adds no rule.
    let cookie = browser
        .get_named_cookie("scitq_session")
        .await
        .expect("the session cookie");
    let session = format!("scitq_session={}", cookie.value());
    let (head, _) = post(
        server.port(),
        "/ui/recruiters",
        &session,
        "batch=rec&provider=local&max_workers=1",
    );
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    assert_eq!(
        server
            .ctl_json(["recruiter", "list"])
            .as_array()
            .map(Vec::len),
        Some(1)
    );

    // On a phone's width the page fits: its tables scroll inside their box.
    browser.set_window_size(390, 844).await.unwrap();
    browser.goto(&recruiters_url).await.unwrap();
    let overflow = browser
        .execute(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(overflow.as_i64(), Some(0), "the page scrolls sideways");
    screenshot(&browser, "recruiters-phone").await;
    browser.set_window_size(1280, 900).await.unwrap();

    // --- Deleted from the page (it asks first); its idle machines are destroyed.
    click(&browser, "tr[data-batch='rec'] button[value=delete]").await;
    browser.accept_alert().await.expect("the delete asks first");
    shows(&browser, "p.note", &format!("rule {rule_id} deleted")).await;
    shows(&browser, "main", "No rule yet").await;
    for name in &machines {
        let row = format!("tr[data-machine='{name}'][data-kind='destroy'] td.status");
        shows_after_reload(&browser, &jobs_url, &row, "succeeded").await;
    }
    poll(LONG, "the recruited workers forgotten", || {
        let left: Vec<Value> = c
            .workers()
            .into_iter()
            .filter(|w| w["provider"] == "local")
            .collect();
        if left.is_empty() {
            Ok(())
        } else {
            Err(format!("{left:?}"))
        }
    });

    browser.close().await.unwrap();
    drop(driver);
}
