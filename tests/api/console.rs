//! Tests: the operator console (`/ui`) in a real headless Chromium (Debian's `chromium` driven
//! through `chromedriver` with fantoccini), against a worker running on the real MariaDB and
//! RabbitMQ and the simulator; and its guards (CSRF, roles, absent without users) over plain
//! HTTP.
//!
//! The browser test saves the screenshots of docs/console.md (docs/img/console-*.png). Without
//! chromium and chromedriver it fails and says how to install them; it never skips.

use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use openstack_provisioner::config::{Secret, UiRole, UiUser};
use openstack_provisioner::http::ui::auth::hash_password;
use openstack_provisioner::http::{self, HttpState};
use openstack_provisioner::sim::{ACME_PROJECT_ID, DEMO_PROJECT_ID, QuotaPatch};
use openstack_provisioner::store::Store;
use tokio_util::sync::CancellationToken;

use crate::engine::stack::{Stack, fast, order};

const XSS_ORDER: &str = "<script>window.__xss=1</script>\"'&<b>bold</b>";

fn users() -> Vec<UiUser> {
    vec![
        UiUser {
            name: "alice".into(),
            role: UiRole::Operator,
            password_hash: Secret::new(hash_password("alice-pw").unwrap()),
        },
        UiUser {
            name: "bob".into(),
            role: UiRole::ReadOnly,
            password_hash: Secret::new(hash_password("bob-pw").unwrap()),
        },
    ]
}

/// chromedriver on a free port, stopped when dropped.
struct Driver {
    child: tokio::process::Child,
    url: String,
}

impl Driver {
    async fn start() -> Driver {
        let exe = std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into());
        let have_chromium = ["chromium", "chromium-browser", "google-chrome"].iter().any(|b| {
            std::process::Command::new(b).arg("--version").output().is_ok_and(|o| o.status.success())
        });
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let child = tokio::process::Command::new(&exe)
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn();
        let child = match (child, have_chromium) {
            (Ok(c), true) => c,
            (r, _) => panic!(
                "the console browser test needs Debian's chromium and chromium-driver \
                 (`apt-get install -y chromium chromium-driver`; .ci/run installs them): \
                 chromedriver {exe:?}: {}, chromium found: {have_chromium}",
                r.map(|_| "started".to_string()).unwrap_or_else(|e| e.to_string())
            ),
        };
        let url = format!("http://127.0.0.1:{port}");
        let status = format!("{url}/status");
        let http = reqwest::Client::new();
        let ready = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                if http.get(&status).send().await.is_ok_and(|r| r.status().is_success()) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        assert!(ready.is_ok(), "chromedriver did not answer on {url} within 20 s");
        Driver { child, url }
    }

    async fn browser(&self) -> Client {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1400,1500", "--hide-scrollbars"]
            }),
        );
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&self.url)
            .await
            .expect("a Chromium session through chromedriver")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// The text of the first `css` element, waiting (10 s at most) for it to appear.
async fn text(c: &Client, css: &str) -> String {
    match c.wait().at_most(Duration::from_secs(10)).for_element(Locator::Css(css)).await {
        Ok(el) => el.text().await.unwrap(),
        Err(e) => panic!("no {css} on {:?}: {e}", c.current_url().await.ok()),
    }
}

/// Waits (at most 10 s) until the browser's URL contains `needle`: a click that navigates returns
/// before the new page is there, and reading the old page then is a race.
async fn await_url(c: &Client, needle: &str) {
    let mut last = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::time::Instant::now() < deadline {
        last = c.current_url().await.map(|u| u.to_string()).unwrap_or_default();
        if last.contains(needle) {
            // The URL changes when the navigation starts; the document is ours once it is loaded.
            let ready = c.execute("return document.readyState;", vec![]).await.unwrap();
            if ready == serde_json::json!("complete") {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the browser is at {last}, not at a URL with {needle}");
}

async fn has(c: &Client, css: &str) -> bool {
    !c.find_all(Locator::Css(css)).await.unwrap().is_empty()
}

async fn login(c: &Client, base: &str, name: &str, password: &str) {
    c.goto(&format!("{base}/ui")).await.unwrap();
    // Not logged in: the console sends the browser to its login form.
    assert!(c.current_url().await.unwrap().path().ends_with("/ui/login"));
    c.find(Locator::Css("#name")).await.unwrap().send_keys(name).await.unwrap();
    c.find(Locator::Css("#password")).await.unwrap().send_keys(password).await.unwrap();
    c.find(Locator::Css("#login-button")).await.unwrap().click().await.unwrap();
    let who = text(c, "#viewer").await;
    assert!(who.starts_with(name), "logged in as {who:?}");
}

async fn logout(c: &Client) {
    c.find(Locator::Css("form[action='/ui/logout'] button")).await.unwrap().click().await.unwrap();
    await_url(c, "/ui/login").await;
    assert!(c.current_url().await.unwrap().path().ends_with("/ui/login"));
}

fn screenshot_path(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/img").join(name)
}

async fn wait_jobs_final(store: &Store, n: i64) {
    crate::helpers::wait_until(Duration::from_secs(60), "the jobs end", || async {
        let rows = store.count_jobs_by_state().await.unwrap_or_default();
        rows.iter()
            .filter(|(s, _)| ["completed", "failed", "cancelled"].contains(&s.as_str()))
            .map(|(_, n)| n)
            .sum::<i64>()
            >= n
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_in_a_browser_finds_a_quota_failure_and_replays_it() {
    let mut stack = Stack::new(fast()).await;
    stack.env.settings.http.addr = "127.0.0.1:0".into();
    stack.env.settings.ui.users = users();
    let app = stack.app().await;
    let base = format!("http://{}", app.http_addr().expect("the HTTP listener"));
    let stop = app.shutdown_token();
    let run = tokio::spawn(async move { app.run_until_stopped().await.expect("the worker stops cleanly") });

    // acme may run 2 instances: of 4 orders, 2 complete and 2 fail on Nova's quota. One more
    // order, for the demo project, has markup in its order id.
    let bodies: Vec<Vec<u8>> = (0..4).map(|i| order(&format!("acme-{i}"), ACME_PROJECT_ID, false)).collect();
    stack.env.publish_all(bodies).await;
    let mut xss: serde_json::Value = serde_json::from_slice(&order("x", DEMO_PROJECT_ID, false)).unwrap();
    xss["order_id"] = XSS_ORDER.into();
    xss["server"]["name"] = "vm-xss".into();
    stack.env.publish(xss.to_string().as_bytes()).await;
    wait_jobs_final(&stack.env.store, 5).await;

    let driver = Driver::start().await;
    let c = driver.browser().await;
    login(&c, &base, "alice", "alice-pw").await;

    // The dashboard: failures by class name quota_exceeded; throughput and workers are drawn.
    let failures = text(&c, "#failures").await;
    assert!(failures.contains("quota_exceeded"), "{failures}");
    assert!(has(&c, "#throughput svg rect.bar").await);
    assert!(text(&c, "#workers").await.contains("test-"), "the in-process worker is listed");
    assert!(has(&c, "#dead-letters").await);
    std::fs::create_dir_all(screenshot_path("")).unwrap();
    std::fs::write(screenshot_path("console-dashboard.png"), c.screenshot().await.unwrap()).unwrap();

    // The jobs list, filtered as a new user would: state failed, class quota_exceeded.
    c.find(Locator::Css("header nav a[href='/ui/jobs']")).await.unwrap().click().await.unwrap();
    await_url(&c, "/ui/jobs").await;
    c.find(Locator::Css("select[name=state]")).await.unwrap().select_by_value("failed").await.unwrap();
    c.find(Locator::Css("input[name=class]")).await.unwrap().send_keys("quota_exceeded").await.unwrap();
    c.find(Locator::Css("form.filters button[type=submit]")).await.unwrap().click().await.unwrap();
    await_url(&c, "class=quota_exceeded").await;
    let rows = c.find_all(Locator::Css("#jobs tr.job")).await.unwrap();
    assert_eq!(rows.len(), 2, "two quota failures listed");
    assert!(has(&c, "#replay-all").await, "an operator is offered the bulk replay");
    c.find(Locator::Css("#jobs tr.job a.order")).await.unwrap().click().await.unwrap();

    // The job page: Nova's error, the history, the events; a replay button.
    let error = text(&c, "#error").await;
    assert!(error.contains("quota_exceeded") && error.contains("create_server"), "{error}");
    assert!(error.contains("Quota exceeded for instances"), "Nova's message is shown: {error}");
    let history = text(&c, "#history").await;
    assert!(history.contains("failed/"), "{history}");
    assert!(text(&c, "#events").await.contains("job.failed"));
    let job_id = text(&c, "#job-id").await;
    let order_id = text(&c, "#order-id").await;

    // Raise the quota (the simulator's quota API), press replay, see the job complete.
    stack
        .sim
        .control()
        .set_quotas(ACME_PROJECT_ID, QuotaPatch { instances: Some(10), ..QuotaPatch::default() })
        .unwrap();
    c.find(Locator::Css("#replay-button")).await.unwrap().click().await.unwrap();
    assert!(text(&c, "#notice").await.starts_with("Replayed"));
    let mut last = String::new();
    let done = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            c.goto(&format!("{base}/ui/jobs/{job_id}")).await.unwrap();
            last = text(&c, "#state").await;
            if last == "completed" {
                return;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    })
    .await;
    assert!(done.is_ok(), "the replayed job is {last}, not completed");
    let history = text(&c, "#history").await;
    assert!(history.contains("replay by alice"), "the operator is in the history: {history}");
    assert!(history.contains("previous error: quota_exceeded"), "{history}");
    assert!(text(&c, "#audit").await.contains("replayed"));
    assert_ne!(text(&c, "#server-id").await, "—");
    std::fs::write(screenshot_path("console-job.png"), c.screenshot().await.unwrap()).unwrap();
    let audited: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM ui_audit WHERE operator = 'alice' AND action = 'replay' AND outcome = 'replayed' AND target = ?",
    )
    .bind(&job_id)
    .fetch_one(stack.env.store.pool())
    .await
    .unwrap();
    assert_eq!(audited, 1, "{order_id}: one audit row");

    // An order id with markup is text: found by the search box, shown verbatim, never run.
    c.find(Locator::Css("header input[name=q]")).await.unwrap().send_keys(XSS_ORDER).await.unwrap();
    c.find(Locator::Css("header form.search button")).await.unwrap().click().await.unwrap();
    await_url(&c, "q=").await;
    c.find(Locator::Css("#jobs tr.job a.order")).await.unwrap().click().await.unwrap();
    assert_eq!(text(&c, "#order-id").await, XSS_ORDER);
    assert!(!has(&c, "#order-id b").await, "no element made from the order id");
    let ran = c.execute("return window.__xss === undefined ? 0 : 1;", vec![]).await.unwrap();
    assert_eq!(ran, serde_json::json!(0), "the order id's script ran");
    assert!(c.source().await.unwrap().contains("&lt;script&gt;window.__xss"));

    // A read-only user sees the same pages and no button.
    logout(&c).await;
    login(&c, &base, "bob", "bob-pw").await;
    assert!(!has(&c, "#failures a[href^='/ui/replay-failed']").await);
    c.goto(&format!("{base}/ui/jobs?state=failed&class=quota_exceeded")).await.unwrap();
    assert_eq!(c.find_all(Locator::Css("#jobs tr.job")).await.unwrap().len(), 1, "one left failed");
    assert!(!has(&c, "#replay-all").await);
    c.find(Locator::Css("#jobs tr.job a.order")).await.unwrap().click().await.unwrap();
    await_url(&c, "/ui/jobs/").await;
    assert!(has(&c, "#error").await);
    assert!(!has(&c, "form#replay").await && !has(&c, "button#replay-button").await, "no replay button");
    assert!(!has(&c, "form#cancel").await);
    c.close().await.unwrap();

    stop.cancel();
    run.await.unwrap();
    stack.cleanup().await;
}

/// A server on `store` with these console users, on `addr` as far as the console knows.
struct Server {
    base: String,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), http::HttpError>>,
}

async fn serve(store: Store, users: Vec<UiUser>, loopback: bool) -> Server {
    let listener = http::bind("127.0.0.1:0", None).await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let console = http::ui::Console {
        users: std::sync::Arc::new(users),
        loopback,
        job_deadline: Duration::from_secs(600),
        dead_letters: None,
    };
    let state = HttpState {
        store,
        token: None,
        broker: http::tcp_probe("amqp://guest:guest@127.0.0.1:5672/%2f"),
        console,
        cloud: None,
    };
    let stop = CancellationToken::new();
    let task = tokio::spawn(http::serve(listener, state, stop.clone()));
    Server { base, stop, task }
}

/// A form body (`application/x-www-form-urlencoded`), as a browser sends it.
trait FormBody {
    fn form_body(self, pairs: &[(&str, &str)]) -> Self;
}

impl FormBody for reqwest::RequestBuilder {
    fn form_body(self, pairs: &[(&str, &str)]) -> Self {
        self.header("content-type", "application/x-www-form-urlencoded")
            .body(serde_urlencoded::to_string(pairs).unwrap())
    }
}

fn form_value(html: &str, name: &str) -> String {
    let at = html.find(&format!("name=\"{name}\" value=\"")).unwrap_or_else(|| panic!("no {name} in {html}"));
    let rest = &html[at + name.len() + 15..];
    rest[..rest.find('"').unwrap()].to_string()
}

fn cookie_of(r: &reqwest::Response, name: &str) -> String {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix(&format!("{name}=")).map(|v| v.split(';').next().unwrap().to_string()))
        .unwrap_or_else(|| panic!("no {name} cookie"))
}

#[tokio::test]
async fn console_refuses_posts_without_csrf_or_role_and_is_absent_without_users() {
    let env = crate::helpers::TestEnv::new().await;
    let store = env.store.clone();
    // A failed job to replay.
    let id = uuid::Uuid::new_v4();
    sqlx::query(
        "INSERT INTO jobs (id, order_id, project_id, order_body, order_digest, state, step, next_run_at, \
         error_class, error_step, error_message, finished_at) VALUES (?, 'csrf-1', 'p1', '{}', ?, 'failed', 'failed', \
         NOW(6), 'quota_exceeded', 'create_server', 'Quota exceeded for instances', NOW(6))",
    )
    .bind(id.to_string())
    .bind("0".repeat(64))
    .execute(store.pool())
    .await
    .unwrap();
    let d = store.dashboard().await.unwrap();
    assert_eq!(d.failures, vec![("quota_exceeded".to_string(), 1, 1)]);
    assert_eq!(d.finished_day, vec![("failed".to_string(), 1)]);
    assert_eq!(d.finished_per_minute.iter().sum::<u64>(), 1);
    assert_eq!(d.orders_per_minute.iter().sum::<u64>(), 1, "taken in within the hour");
    let found = store.search_jobs("csrf-1").await.unwrap();
    assert_eq!(found.len(), 1, "search by order id");
    assert_eq!(store.search_jobs(&id.to_string()).await.unwrap().len(), 1, "search by job id");
    assert!(store.search_jobs("nothing").await.unwrap().is_empty());
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();

    let server = serve(store.clone(), users(), false).await;
    let base = &server.base;
    // Not logged in: pages send to the login form, posts are refused the same way.
    let r = http.get(format!("{base}/ui")).send().await.unwrap();
    assert_eq!((r.status().as_u16(), r.headers()["location"].to_str().unwrap()), (303, "/ui/login"));
    let r =
        http.post(format!("{base}/ui/jobs/{id}/replay")).form_body(&[("csrf", "x")]).send().await.unwrap();
    assert_eq!(r.status(), 303);

    // The login form's own CSRF token (double submit) is required.
    let r = http.get(format!("{base}/ui/login")).send().await.unwrap();
    let login_cookie = cookie_of(&r, "prov_login_csrf");
    assert!(r.headers()["set-cookie"].to_str().unwrap().contains("HttpOnly; SameSite=Strict"));
    let page = r.text().await.unwrap();
    let login_csrf = form_value(&page, "csrf");
    let r = http
        .post(format!("{base}/ui/login"))
        .form_body(&[("name", "alice"), ("password", "alice-pw")])
        .header("cookie", format!("prov_login_csrf={login_cookie}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "a login without the form's token");
    let r = http
        .post(format!("{base}/ui/login"))
        .form_body(&[("name", "alice"), ("password", "wrong"), ("csrf", login_csrf.as_str())])
        .header("cookie", format!("prov_login_csrf={login_cookie}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    let session_of = |name: &'static str, pw: &'static str| {
        let http = http.clone();
        let base = base.clone();
        async move {
            let r = http.get(format!("{base}/ui/login")).send().await.unwrap();
            let cookie = cookie_of(&r, "prov_login_csrf");
            let csrf = form_value(&r.text().await.unwrap(), "csrf");
            let r = http
                .post(format!("{base}/ui/login"))
                .header("x-forwarded-proto", "https")
                .header("cookie", format!("prov_login_csrf={cookie}"))
                .form_body(&[("name", name), ("password", pw), ("csrf", csrf.as_str())])
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 303, "{name} logs in");
            let set = r
                .headers()
                .get_all("set-cookie")
                .iter()
                .map(|v| v.to_str().unwrap().to_string())
                .collect::<Vec<_>>();
            assert!(
                set.iter().any(|c| c.starts_with("prov_session=")
                    && c.contains("HttpOnly; SameSite=Strict")
                    && c.contains("Secure")),
                "{set:?}"
            );
            let session = format!("prov_session={}", cookie_of(&r, "prov_session"));
            let page =
                http.get(format!("{base}/ui/jobs/{id}")).header("cookie", &session).send().await.unwrap();
            assert_eq!(page.status(), 200);
            let csp = page.headers()["content-security-policy"].to_str().unwrap().to_string();
            assert!(csp.contains("script-src 'self'"), "{csp}");
            let html = page.text().await.unwrap();
            (session, html)
        }
    };
    let (alice, html) = session_of("alice", "alice-pw").await;
    let csrf = form_value(&html, "csrf");
    assert!(html.contains("id=\"replay-button\""), "an operator sees the button");

    // Without the token, or with another one: 403, and the job is untouched.
    for form in [vec![("reason", "x")], vec![("csrf", "not-the-token"), ("reason", "x")]] {
        let r = http
            .post(format!("{base}/ui/jobs/{id}/replay"))
            .header("cookie", &alice)
            .form_body(&form)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{form:?}");
        assert!(r.text().await.unwrap().contains("CSRF"));
    }
    let state: String = sqlx::query_scalar("SELECT state FROM jobs WHERE id = ?")
        .bind(id.to_string())
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(state, "failed");

    // A read-only user with their own valid token: 403 as well, and no button shown.
    let (bob, html) = session_of("bob", "bob-pw").await;
    assert!(!html.contains("replay-button"));
    let bob_csrf = form_value(&html, "csrf");
    let r = http
        .post(format!("{base}/ui/jobs/{id}/replay"))
        .header("cookie", &bob)
        .form_body(&[("csrf", bob_csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    // The bulk replay counts, then replays only while the count holds.
    let r = http
        .get(format!("{base}/ui/replay-failed?class=quota_exceeded&since=1h"))
        .header("cookie", &alice)
        .send()
        .await
        .unwrap();
    let page = r.text().await.unwrap();
    assert!(page.contains("<b>1</b> job(s) failed with"), "{page}");
    let since = form_value(&page, "since");
    let r = http
        .post(format!("{base}/ui/replay-failed"))
        .header("cookie", &alice)
        .form_body(&[
            ("csrf", csrf.as_str()),
            ("class", "quota_exceeded"),
            ("since", since.as_str()),
            ("expected", "2"),
        ])
        .send()
        .await
        .unwrap();
    assert!(r.text().await.unwrap().contains("Nothing was replayed"), "a stale count replays nothing");
    let r = http
        .post(format!("{base}/ui/replay-failed"))
        .header("cookie", &alice)
        .form_body(&[
            ("csrf", csrf.as_str()),
            ("class", "quota_exceeded"),
            ("since", since.as_str()),
            ("expected", "1"),
        ])
        .send()
        .await
        .unwrap();
    assert!(r.text().await.unwrap().contains("1 job(s) replayed"));
    let (state, actor): (String, String) = sqlx::query_as(
        "SELECT j.state, h.actor FROM jobs j JOIN job_history h ON h.job_id = j.id WHERE j.id = ? ORDER BY h.id DESC LIMIT 1",
    )
    .bind(id.to_string())
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert_eq!((state.as_str(), actor.as_str()), ("queued", "alice"));
    let audit: Vec<(String, String)> = sqlx::query_as("SELECT operator, action FROM ui_audit ORDER BY id")
        .fetch_all(store.pool())
        .await
        .unwrap();
    assert!(audit.contains(&("alice".into(), "replay_failed".into())), "{audit:?}");
    assert!(audit.contains(&("alice".into(), "login".into())));

    // Cancel of a queued job that made nothing: it ends at once, with its event, in the name of
    // the operator.
    let queued = uuid::Uuid::new_v4();
    sqlx::query(
        "INSERT INTO jobs (id, order_id, project_id, order_body, order_digest, state, step, next_run_at) \
         VALUES (?, 'csrf-2', 'p1', '{}', ?, 'queued', 'resolve', NOW(6) + INTERVAL 1 HOUR)",
    )
    .bind(queued.to_string())
    .bind("0".repeat(64))
    .execute(store.pool())
    .await
    .unwrap();
    let r = http
        .post(format!("{base}/ui/jobs/{queued}/cancel"))
        .header("cookie", &alice)
        .form_body(&[("csrf", csrf.as_str()), ("reason", "customer asked")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"].to_str().unwrap(), format!("/ui/jobs/{queued}?done=cancelled"));
    let (state, detail): (String, String) = sqlx::query_as(
        "SELECT j.state, h.detail FROM jobs j JOIN job_history h ON h.job_id = j.id WHERE j.id = ? ORDER BY h.id DESC LIMIT 1",
    )
    .bind(queued.to_string())
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert_eq!(state, "cancelled");
    assert!(detail.contains("by alice: customer asked (web console)"), "{detail}");
    let events: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE job_id = ? AND routing_key = 'job.cancelled'")
            .bind(queued.to_string())
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert_eq!(events, 1);

    // Logged out: the session no longer works.
    let r = http
        .post(format!("{base}/ui/logout"))
        .header("cookie", &alice)
        .form_body(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let r = http.get(format!("{base}/ui")).header("cookie", &alice).send().await.unwrap();
    assert_eq!(r.status(), 303);
    server.stop.cancel();
    server.task.await.unwrap().unwrap();

    // No users: absent on a listener beyond loopback, read-only (no forms at all) on loopback.
    let server = serve(store.clone(), vec![], false).await;
    assert_eq!(http.get(format!("{}/ui", server.base)).send().await.unwrap().status(), 404);
    assert_eq!(http.get(format!("{}/ui/jobs/{id}", server.base)).send().await.unwrap().status(), 404);
    server.stop.cancel();
    server.task.await.unwrap().unwrap();
    let server = serve(store.clone(), vec![], true).await;
    let r = http.get(format!("{}/ui/jobs/{id}", server.base)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let html = r.text().await.unwrap();
    assert!(html.contains("loopback (read-only)") && !html.contains("method=\"post\""), "{html}");
    let r = http
        .post(format!("{}/ui/jobs/{id}/cancel", server.base))
        .form_body(&[("csrf", "")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = http.get(format!("{}/ui", server.base)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("id=\"open-findings\""));

    // The reconciler's findings, escaped like everything else.
    sqlx::query(
        "INSERT INTO reconcile_findings (kind, resource_type, resource_id, project_id, reason, action) \
         VALUES ('orphan', 'server', '<i>srv</i>', 'p1', 'job_missing', 'reported')",
    )
    .execute(store.pool())
    .await
    .unwrap();
    let html = http
        .get(format!("{}/ui/findings?kind=orphan", server.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("&lt;i&gt;srv&lt;/i&gt;") && !html.contains("<i>srv"), "{html}");
    assert!(html.contains("job_missing"));
    server.stop.cancel();
    server.task.await.unwrap().unwrap();
    env.cleanup().await;
}
