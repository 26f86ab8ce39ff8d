//! The intake benchmark.

pub async fn run() {
    println!("intake: not implemented yet");
}
