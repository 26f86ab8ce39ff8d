//! `provisioner demo`: the whole path in one command, against the local MariaDB and RabbitMQ.
//!
//! It starts the embedded OpenStack simulator (with demo timings: a server boots in about a
//! second and a half) and a complete worker in this process, binds a temporary queue to
//! `provisioning.events`, then plays billing: it publishes a handful of orders (one with a
//! volume, one without, one for the small `acme` project whose volume is over its quota, one
//! for an image that does not exist, plus `--extra N`), prints progress while the jobs run, and
//! ends with a table of the jobs and of the events received.
//!
//! It stays out of a real worker's way: its own database (`provisioner_demo` on the configured
//! server, recreated each run) and the AMQP name prefix `demo.` (its queues are emptied first).
//! When MariaDB/MySQL or RabbitMQ is not reachable it says so, and how to start them, before
//! anything else.

use std::collections::{BTreeMap, HashMap};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::{FieldTable, ShortString};
use serde_json::json;

use super::jobs::table;
use crate::amqp::Names;
use crate::amqp::submit::{confirmed, publish_with_key};
use crate::cli::{CliResult, DemoArgs};
use crate::config::{SecretUrl, Settings};
use crate::messages::{Event, EventType};
use crate::openstack::config::CloudConfig;
use crate::sim::{ACME_PROJECT_ID, DEMO_PROJECT_ID, SimConfig, Simulator, Timings};
use crate::startup::App;
use crate::store::status::{JobFilter, JobStatus};

/// The demo's own database and AMQP prefix.
pub const DEMO_DATABASE: &str = "provisioner_demo";
pub const DEMO_PREFIX: &str = "demo.";

/// The demo gives up after this long (it normally takes a few seconds).
const DEMO_TIMEOUT: Duration = Duration::from_secs(50);

/// Simulated cloud timings for the demo: quick, but slow enough to watch.
pub fn demo_timings() -> Timings {
    Timings {
        boot_mean_ms: 1500,
        boot_jitter_ms: 500,
        volume_create_ms: 700,
        attach_ms: 500,
        detach_ms: 300,
        action_ms: 700,
        delete_ms: 500,
        token_lifetime_s: 3600,
    }
}

/// One scripted order and what it should end as.
pub struct DemoOrder {
    pub order_id: String,
    pub body: serde_json::Value,
    /// `completed`, or `failed:<error class>`.
    pub expect: String,
    pub what: String,
}

/// The scripted orders, then `extra` more (every other one with a volume).
pub fn demo_orders(extra: u32) -> Vec<DemoOrder> {
    let order = |id: &str, project: &str, name: &str, image: &str, flavor: &str, volume: Option<u32>| {
        let mut body = json!({
            "version": 1,
            "order_id": id,
            "project_id": project,
            "server": {"name": name, "flavor": flavor, "image": image, "network": "private",
                       "metadata": {"plan": "demo"}}
        });
        if let Some(gb) = volume {
            body["volume"] = json!({"size_gb": gb, "type": "ssd"});
        }
        body
    };
    let mut out = vec![
        DemoOrder {
            order_id: "DEMO-0001".into(),
            body: order("DEMO-0001", DEMO_PROJECT_ID, "web-1", "cirros-0.6.2", "m1.small", Some(10)),
            expect: "completed".into(),
            what: "a server with a 10 GB volume".into(),
        },
        DemoOrder {
            order_id: "DEMO-0002".into(),
            body: order("DEMO-0002", DEMO_PROJECT_ID, "web-2", "ubuntu-24.04", "m1.small", None),
            expect: "completed".into(),
            what: "a server without a volume".into(),
        },
        DemoOrder {
            order_id: "DEMO-0003".into(),
            body: order("DEMO-0003", ACME_PROJECT_ID, "db-1", "cirros-0.6.2", "m1.large", Some(50)),
            expect: "failed:quota_exceeded".into(),
            what: "project acme: a 50 GB volume over its 20 GB quota (the server is rolled back)".into(),
        },
        DemoOrder {
            order_id: "DEMO-0004".into(),
            body: order("DEMO-0004", DEMO_PROJECT_ID, "win-1", "windows-2025", "m1.small", None),
            expect: "failed:not_found".into(),
            what: "an image that does not exist".into(),
        },
    ];
    // A new customer: billing onboards the tenant (Keystone project, user, role, quotas) and
    // orders its first VM by the tenant's ref in the same breath (it waits for the tenant).
    out.push(DemoOrder {
        order_id: "DEMO-T001".into(),
        body: json!({
            "version": 1, "order_id": "DEMO-T001", "action": "tenant_create", "tenant_ref": "CUST-0001",
            "project": {"name": "cust-0001", "domain": "Default", "description": "demo customer, plan S"},
            "user": {"name": "cust-0001-admin", "email": "ops@cust-0001.example"},
            "roles": ["member"],
            "quotas": {"instances": 2, "cores": 4, "ram_mb": 4096, "volumes": 2, "gigabytes": 20,
                       "ports": 10, "networks": 2, "floating_ips": 1}
        }),
        expect: "completed".into(),
        what: "onboard tenant CUST-0001: a Keystone project, user, member role and quotas".into(),
    });
    let mut first = order("DEMO-T002", DEMO_PROJECT_ID, "cust-web-1", "cirros-0.6.2", "m1.tiny", None);
    if let Some(o) = first.as_object_mut() {
        o.remove("project_id");
        o.insert("tenant_ref".into(), json!("CUST-0001"));
    }
    out.push(DemoOrder {
        order_id: "DEMO-T002".into(),
        body: first,
        expect: "completed".into(),
        what: "a server for tenant CUST-0001, named by its tenant_ref (runs once the tenant is active)"
            .into(),
    });
    // Billing's later orders (published once the creates are done): an unpaid invoice suspends
    // web-2, the end of a contract terminates web-1 (volume, server and port deleted).
    let act = |id: &str, action: &str, target: &str| {
        json!({"version": 1, "order_id": id, "action": action, "target_order_id": target,
               "reason": "demo"})
    };
    out.push(DemoOrder {
        order_id: "DEMO-0005".into(),
        body: act("DEMO-0005", "suspend", "DEMO-0002"),
        expect: "completed".into(),
        what: "later: suspend web-2 (invoice unpaid): Nova stops it".into(),
    });
    out.push(DemoOrder {
        order_id: "DEMO-0006".into(),
        body: act("DEMO-0006", "terminate", "DEMO-0001"),
        expect: "completed".into(),
        what: "later: terminate web-1 (contract ended): its volume, server and port are deleted".into(),
    });
    for i in 0..extra {
        let id = format!("DEMO-X{:04}", i + 1);
        let volume = (i % 2 == 0).then_some(1);
        out.push(DemoOrder {
            body: order(&id, DEMO_PROJECT_ID, &format!("extra-{}", i + 1), "cirros-0.6.2", "m1.tiny", volume),
            order_id: id,
            expect: "completed".into(),
            what: "extra".into(),
        });
    }
    out
}

/// `host:port` of a `mysql://user:pw@host:port/db` URL (port 3306 by default).
pub fn database_address(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next()?;
    let hostport = authority.rsplit_once('@').map(|(_, h)| h).unwrap_or(authority);
    if hostport.is_empty() {
        return None;
    }
    Some(if hostport.contains(':') { hostport.to_string() } else { format!("{hostport}:3306") })
}

/// The same URL naming another database.
pub fn with_database(url: &str, db: &str) -> String {
    let (head, rest) = url.split_once("://").unwrap_or(("mysql", url));
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let query = path.split_once('?').map(|(_, q)| format!("?{q}")).unwrap_or_default();
    format!("{head}://{authority}/{db}{query}")
}

/// Checks that a TCP service answers; the error says what to do.
async fn reachable(what: &str, addr: Option<String>, hint: &str) -> Result<(), String> {
    let addr = addr.ok_or_else(|| format!("{what}: the URL names no host"))?;
    match tokio::time::timeout(Duration::from_secs(3), tokio::net::TcpStream::connect(&addr)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("{what} is not reachable at {addr} ({e}).\n{hint}")),
        Err(_) => Err(format!("{what} did not answer at {addr} within 3 s.\n{hint}")),
    }
}

const DB_HINT: &str = "Start MariaDB or MySQL, for example:\n  \
    sudo systemctl start mariadb        (or: sudo service mariadb start)\n  \
    docker run -d --name mysql -p 3306:3306 -e MYSQL_ALLOW_EMPTY_PASSWORD=yes mysql:8.4\n\
    or point PROVISIONER_DATABASE_URL at yours (mysql://user:password@host:3306/any).";

const AMQP_HINT: &str = "Start RabbitMQ, for example:\n  \
    sudo systemctl start rabbitmq-server        (or: rabbitmq-server -detached)\n  \
    docker run -d --name rabbitmq -p 5672:5672 rabbitmq:3.13\n\
    or point PROVISIONER_AMQP_URL at yours (amqp://user:password@host:5672/vhost).";

/// What the demo saw: per order, its event.
type Events = Arc<Mutex<BTreeMap<String, Event>>>;

/// Where a demo runs: its database (on the configured server) and its AMQP name prefix.
#[derive(Debug, Clone)]
pub struct DemoPlace {
    pub database: String,
    pub prefix: String,
    /// The simulated cloud's timings.
    pub timings: Timings,
}

impl Default for DemoPlace {
    fn default() -> Self {
        DemoPlace { database: DEMO_DATABASE.into(), prefix: DEMO_PREFIX.into(), timings: demo_timings() }
    }
}

/// `provisioner demo`.
pub async fn demo(settings: Settings, args: &DemoArgs) -> CliResult {
    run_demo(settings, args, DemoPlace::default()).await
}

/// The demo in `place` (tests run it in a database and prefix of their own).
pub async fn run_demo(settings: Settings, args: &DemoArgs, place: DemoPlace) -> CliResult {
    let started = Instant::now();
    reachable("MariaDB/MySQL", database_address(settings.database.url.expose()), DB_HINT).await?;
    reachable("RabbitMQ", crate::http::broker_address(settings.amqp.url.expose()), AMQP_HINT).await?;

    let mut settings = settings;
    settings.database.url = SecretUrl::new(with_database(settings.database.url.expose(), &place.database));
    settings.amqp.prefix = place.prefix.clone();
    settings.engine.enabled = true;
    settings.http.addr = "127.0.0.1:0".into();
    settings.http.token = None;
    settings.shutdown.grace_secs = 5;
    settings.admin.allowed_users = vec![crate::amqp::admin::url_user(settings.amqp.url.expose())];
    settings.worker.id = Some(format!("demo-{}", std::process::id()));
    let names = Names::new(&place.prefix);

    println!("provisioner demo: billing orders in, OpenStack VMs out, each exactly once.\n");
    crate::store::Store::drop_database(&settings.database).await?;
    let amqp = crate::amqp::connection::connect_once(&settings.amqp.url, "provisioner demo").await?;
    let channel = amqp.create_channel().await?;
    for q in names.queues() {
        // Leftovers of an earlier demo (a fresh database would not know them).
        let _ = channel.queue_delete(ShortString::from(q), QueueDeleteOptions::default()).await;
    }
    let channel = if channel.status().connected() { channel } else { amqp.create_channel().await? };

    let sim = Simulator::start(SimConfig { timings: place.timings, ..SimConfig::default() }).await?;
    let vars: HashMap<String, String> = [
        ("OS_AUTH_URL", sim.auth_url()),
        ("OS_USERNAME", "provisioner".into()),
        ("OS_PASSWORD", "provisioner".into()),
        // The service user's own project, where it holds admin (tenant orders need it).
        ("OS_PROJECT_NAME", "service".into()),
        ("OS_USER_DOMAIN_NAME", "Default".into()),
        ("OS_PROJECT_DOMAIN_NAME", "Default".into()),
        ("OS_REGION_NAME", "RegionOne".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let cloud = CloudConfig::from_vars(&vars)?.ok_or("the simulator's cloud configuration is empty")?;

    let app = App::build_with_cloud(settings.clone(), Some(cloud)).await?;
    let store = app.store().clone();
    println!(
        "  simulator      {} (a server boots in ~{:.1} s, a volume in ~{:.1} s)",
        sim.url(),
        place.timings.boot_mean_ms as f64 / 1000.0,
        place.timings.volume_create_ms as f64 / 1000.0
    );
    println!("  database       {}", settings.database.url);
    println!("  broker         {} (names prefixed `{}`)", settings.amqp.url, place.prefix);
    if let Some(addr) = app.http_addr() {
        println!("  status API     http://{addr}/v1/jobs   (while the demo runs)");
    }

    // Listen to the events before any order goes out.
    let events: Events = Arc::default();
    let queue = channel
        .queue_declare(
            ShortString::from(""),
            QueueDeclareOptions { exclusive: true, auto_delete: true, ..QueueDeclareOptions::default() },
            FieldTable::default(),
        )
        .await?;
    channel
        .queue_bind(
            queue.name().clone(),
            ShortString::from(names.events_exchange.as_str()),
            ShortString::from("job.#"),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let mut consumer = channel
        .basic_consume(
            queue.name().clone(),
            ShortString::from("demo events"),
            BasicConsumeOptions { no_ack: true, ..BasicConsumeOptions::default() },
            FieldTable::default(),
        )
        .await?;
    let listener = {
        let events = events.clone();
        tokio::spawn(async move {
            while let Some(Ok(delivery)) = consumer.next().await {
                if let Ok(event) = serde_json::from_slice::<Event>(&delivery.data) {
                    events.lock().unwrap_or_else(|e| e.into_inner()).insert(event.order_id.clone(), event);
                }
            }
        })
    };

    // Play billing.
    let orders = demo_orders(args.extra);
    println!("\nbilling publishes {} orders to {}:", orders.len(), names.orders_exchange);
    let publisher = amqp.create_channel().await?;
    publisher.confirm_select(lapin::options::ConfirmSelectOptions::default()).await?;
    let mut confirms = Vec::with_capacity(orders.len());
    // Later orders act on services; tenant orders go out with the creates.
    let is_action = |o: &DemoOrder| o.body["action"].as_str().is_some_and(|a| !a.starts_with("tenant_"));
    let key_of = |o: &DemoOrder| match o.body["action"].as_str() {
        Some(a) => match a.strip_prefix("tenant_") {
            Some(t) => format!("order.tenant.{t}"),
            None => format!("order.{a}"),
        },
        None => "order.create".to_string(),
    };
    for o in orders.iter().filter(|o| !is_action(o)) {
        let body = o.body.to_string();
        confirms.push(publish_with_key(&publisher, &names, &key_of(o), body.as_bytes()).await?);
        if o.what != "extra" {
            println!("  {}  {}", o.order_id, o.what);
        }
    }
    if args.extra > 0 {
        println!("  ... and {} extra orders", args.extra);
    }
    for c in confirms {
        confirmed(c, "demo order").await?;
    }
    for o in orders.iter().filter(|o| is_action(o)) {
        println!("  {}  {}", o.order_id, o.what);
    }
    let mut actions_sent = false;

    // Watch.
    println!("\nprogress:");
    let mut last = String::new();
    let deadline = Instant::now() + DEMO_TIMEOUT;
    let jobs = loop {
        let page = store.list_jobs(&JobFilter { limit: 1000, ..JobFilter::default() }).await?;
        let received = events.lock().unwrap_or_else(|e| e.into_inner()).len();
        let mut by_state: BTreeMap<&str, usize> = BTreeMap::new();
        for j in &page.jobs {
            *by_state.entry(j.state.as_str()).or_default() += 1;
        }
        let line = ["queued", "in_progress", "rolling_back", "completed", "failed", "cancelled"]
            .iter()
            .map(|s| format!("{s} {}", by_state.get(s).copied().unwrap_or(0)))
            .collect::<Vec<_>>()
            .join("  ");
        let line = format!("{line}  | events {received}");
        if line != last {
            println!("  t+{:>5.1}s  {line}", started.elapsed().as_secs_f64());
            last = line;
        }
        let finished = page.jobs.iter().filter(|j| is_final(&j.state)).count();
        let creates = orders.iter().filter(|o| !is_action(o)).count();
        if !actions_sent && page.jobs.len() == creates && finished == creates && received >= creates {
            // The creates are done: billing sends its later orders for two of the services.
            actions_sent = true;
            println!("  t+{:>5.1}s  billing sends the later orders", started.elapsed().as_secs_f64());
            for o in orders.iter().filter(|o| is_action(o)) {
                let c =
                    publish_with_key(&publisher, &names, &key_of(o), o.body.to_string().as_bytes()).await?;
                confirmed(c, "demo order").await?;
            }
        }
        if page.jobs.len() == orders.len() && finished == orders.len() && received >= orders.len() {
            break page.jobs;
        }
        if Instant::now() > deadline {
            break page.jobs;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    let events_seen = events.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let resources = sim.control().resources();
    let _ = app.stop().await;
    listener.abort();
    let _ = amqp.close(200, "demo done".into()).await;
    sim.shutdown().await;

    print!("\n{}", render_jobs(&jobs, &events_seen, &orders));
    println!("\nevents received on {} ({}):", names.events_exchange, events_seen.len());
    print!("{}", render_events(&events_seen));
    println!(
        "\nwhat the simulated cloud holds now (the failed orders and the terminated web-1 left nothing behind):"
    );
    for p in resources.projects.values() {
        let n = |m: &BTreeMap<String, usize>| m.values().sum::<usize>();
        println!(
            "  project {:<6} {} servers, {} ports, {} volumes ({} attached)",
            p.name,
            n(&p.servers),
            n(&p.ports),
            n(&p.volumes),
            p.attached_volumes
        );
    }

    let mismatches: Vec<String> = orders
        .iter()
        .filter_map(|o| {
            let got = jobs
                .iter()
                .find(|j| j.order_id == o.order_id)
                .map(outcome)
                .unwrap_or_else(|| "missing".into());
            (got != o.expect).then(|| format!("{}: expected {}, got {got}", o.order_id, o.expect))
        })
        .collect();
    println!("\ntook {:.1} s. Look closer:", started.elapsed().as_secs_f64());
    println!(
        "  PROVISIONER_DATABASE_URL={} provisioner jobs show DEMO-0003",
        crate::config::redact_url(settings.database.url.expose())
    );
    if mismatches.is_empty() && events_seen.len() == orders.len() {
        println!("every order ended as expected.");
        Ok(ExitCode::SUCCESS)
    } else {
        for m in &mismatches {
            println!("UNEXPECTED {m}");
        }
        if events_seen.len() != orders.len() {
            println!("UNEXPECTED {} events for {} orders", events_seen.len(), orders.len());
        }
        Err(format!("the demo did not end as expected ({} differences)", mismatches.len()).into())
    }
}

fn is_final(state: &str) -> bool {
    matches!(state, "completed" | "failed" | "cancelled")
}

/// `completed`, or `failed:<class>`.
fn outcome(j: &JobStatus) -> String {
    match (&*j.state, &j.error_class) {
        ("completed", _) => "completed".into(),
        (state, Some(class)) => format!("{state}:{class}"),
        (state, None) => state.to_string(),
    }
}

/// The jobs, in order id order, with the address and volume device from their events.
pub fn render_jobs(jobs: &[JobStatus], events: &BTreeMap<String, Event>, orders: &[DemoOrder]) -> String {
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut sorted: Vec<&JobStatus> = jobs.iter().collect();
    sorted.sort_by(|a, b| a.order_id.cmp(&b.order_id));
    for j in sorted {
        let event = events.get(&j.order_id);
        let ip = event
            .and_then(|e| e.server.as_ref())
            .and_then(|s| s.addresses.first())
            .map(|a| a.ip.clone())
            .unwrap_or_else(|| "-".into());
        let volume = event
            .and_then(|e| e.volume.as_ref())
            .map(|v| format!("{} {}", short(&v.id), v.device.as_deref().unwrap_or("")))
            .unwrap_or_else(|| "-".into());
        let expected =
            orders.iter().find(|o| o.order_id == j.order_id).map(|o| o.expect.as_str()).unwrap_or("");
        let got = outcome(j);
        let error = match (&j.error_class, &j.error_message) {
            (Some(c), Some(m)) => format!("{c}: {}", truncate(m, 60)),
            (Some(c), None) => c.clone(),
            _ => "-".into(),
        };
        rows.push(vec![
            j.order_id.clone(),
            j.state.clone(),
            if got == expected { "yes".into() } else { format!("NO (expected {expected})") },
            // A failed job keeps the ids of what it created and then deleted: show live ones only.
            if j.state == "completed" { j.server_id.as_deref().map(short) } else { None }
                .unwrap_or_else(|| "-".into()),
            ip,
            volume,
            j.attempts.to_string(),
            error,
        ]);
    }
    table(&["ORDER", "STATE", "AS EXPECTED", "SERVER", "IP", "VOLUME", "ATTEMPTS", "ERROR"], &rows)
}

/// The events, one line each.
pub fn render_events(events: &BTreeMap<String, Event>) -> String {
    let rows: Vec<Vec<String>> = events
        .values()
        .map(|e| {
            let what = match e.event_type {
                EventType::Completed => {
                    let server = e.server.as_ref().map(|s| format!("server {} {}", short(&s.id), s.status));
                    let volume = e.volume.as_ref().map(|v| format!("volume {}", short(&v.id)));
                    [server, volume].into_iter().flatten().collect::<Vec<_>>().join(", ")
                }
                _ => e.error.as_ref().map(|x| format!("{} at {}", x.class, x.step)).unwrap_or_default(),
            };
            vec![
                e.event_type.routing_key().to_string(),
                e.order_id.clone(),
                short(&e.event_id.to_string()),
                what,
            ]
        })
        .collect();
    table(&["TYPE", "ORDER", "EVENT ID", "WHAT"], &rows)
}

fn short(id: &str) -> String {
    id.chars().take(8).collect()
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}...", s.chars().take(n).collect::<String>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_orders_are_valid_orders() {
        let schemas = crate::messages::Schemas::new();
        for o in demo_orders(3) {
            let key = match o.body["action"].as_str() {
                Some(a) => match a.strip_prefix("tenant_") {
                    Some(t) => format!("order.tenant.{t}"),
                    None => format!("order.{a}"),
                },
                None => "order.create".to_string(),
            };
            schemas
                .parse_incoming(&key, o.body.to_string().as_bytes())
                .unwrap_or_else(|e| panic!("{}: {e}", o.order_id));
        }
    }

    #[test]
    fn urls_are_rewritten_for_the_demo() {
        assert_eq!(
            with_database("mysql://root@127.0.0.1:3306/provisioner", "provisioner_demo"),
            "mysql://root@127.0.0.1:3306/provisioner_demo"
        );
        assert_eq!(
            with_database("mysql://u:p@db/x?ssl-mode=required", "d"),
            "mysql://u:p@db/d?ssl-mode=required"
        );
        assert_eq!(database_address("mysql://u:p@db.example:3307/x").as_deref(), Some("db.example:3307"));
        assert_eq!(database_address("mysql://root@localhost/x").as_deref(), Some("localhost:3306"));
    }
}
