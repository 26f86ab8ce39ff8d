//! `bench`: the benchmark suite (not tests: it prints figures, it asserts nothing).
//!
//! `cargo run --release --bin bench -- all` runs every scenario against the local MariaDB and
//! RabbitMQ and the embedded simulator and prints one table; `intake`, `e2e` and `sim` run one.

mod e2e;
mod intake;
mod sim;

fn main() {
    let which = std::env::args().nth(1).unwrap_or_else(|| "all".to_string());
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    runtime.block_on(async {
        match which.as_str() {
            "intake" => intake::run().await,
            "e2e" => e2e::run().await,
            "sim" => sim::run().await,
            "all" => {
                intake::run().await;
                e2e::run().await;
                sim::run().await;
            }
            other => eprintln!("unknown scenario {other:?}: intake | e2e | sim | all"),
        }
    });
}
