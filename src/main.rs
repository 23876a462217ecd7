use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    memberd::cli::run().await
}
