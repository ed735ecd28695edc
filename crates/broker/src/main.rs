//! `insync-broker`: runs a broker and/or controller node until SIGTERM or Ctrl-C.
use clap::Parser;
use insync_broker::config::BrokerArgs;
use tracing_subscriber::EnvFilter;

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("INSYNC_LOG")
                .unwrap_or_else(|_| EnvFilter::new("info,openraft=warn,h2=warn,tower=warn")),
        )
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = BrokerArgs::parse();
    // Built by hand (not #[tokio::main]) so that --worker-threads sizes it.
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if args.worker_threads > 0 {
        runtime.worker_threads(usize::from(args.worker_threads));
    }
    runtime.enable_all().build()?.block_on(run(args))
}

async fn run(args: BrokerArgs) -> anyhow::Result<()> {
    insync_broker::server::run(args, async {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return std::future::pending().await,
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    })
    .await
}
