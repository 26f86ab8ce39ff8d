//! The sim benchmark.

pub async fn run() {
    println!("sim: not implemented yet");
}
