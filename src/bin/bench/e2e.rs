//! The e2e benchmark.

pub async fn run() {
    println!("e2e: not implemented yet");
}
