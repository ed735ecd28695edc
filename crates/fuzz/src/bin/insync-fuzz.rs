//! `insync-fuzz`: runs a fuzzing campaign over one or every target and prints iterations,
//! allocation high-water marks and findings; findings are written under
//! `target/fuzz-findings/<target>/` to become regression inputs.
use std::time::Duration;

use clap::Parser;
use insync_fuzz::runner::{finding_name, run, Budget};
use insync_fuzz::targets::{target, workspace_root, TARGETS};

#[global_allocator]
static ALLOCATOR: cap::Cap<std::alloc::System> = cap::Cap::new(std::alloc::System, 4 << 30);

#[derive(Parser)]
#[command(about = "Fuzz insync's decoders on stable Rust")]
struct Args {
    /// A target name, or `all`.
    #[arg(long, default_value = "all")]
    target: String,
    /// Seconds per target (default: 10).
    #[arg(long)]
    seconds: Option<u64>,
    /// Iterations per target instead of a time.
    #[arg(long)]
    iterations: Option<u64>,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// List the targets and exit.
    #[arg(long)]
    list: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.list {
        for t in TARGETS {
            println!("{:18} {}", t.name, t.about);
        }
        return Ok(());
    }
    let targets: Vec<_> = if args.target == "all" {
        TARGETS.iter().collect()
    } else {
        vec![target(&args.target).ok_or_else(|| anyhow::anyhow!("no target {} (see --list)", args.target))?]
    };
    let budget = match (args.iterations, args.seconds) {
        (Some(n), _) => Budget::Iterations(n),
        (None, seconds) => Budget::Time(Duration::from_secs(seconds.unwrap_or(10))),
    };
    let mut total_iterations = 0;
    let mut total_findings = 0;
    for t in targets {
        let report = run(t, budget, args.seed, &|| ALLOCATOR.total_allocated());
        println!(
            "{:18} {:>10} iterations in {:>6.1} s ({:>7.0}/s), most allocated by one input: {} bytes (a {}-byte input), findings: {}",
            report.target,
            report.iterations,
            report.elapsed.as_secs_f64(),
            report.iterations as f64 / report.elapsed.as_secs_f64().max(1e-9),
            report.max_alloc_bytes,
            report.max_alloc_input_len,
            report.findings.len()
        );
        let dir = workspace_root().join("target/fuzz-findings").join(t.name);
        for finding in &report.findings {
            std::fs::create_dir_all(&dir)?;
            let path = dir.join(finding_name(&finding.input));
            std::fs::write(&path, &finding.input)?;
            println!("  finding {}: {}", path.display(), finding.what);
        }
        total_iterations += report.iterations;
        total_findings += report.findings.len();
    }
    println!("total: {total_iterations} iterations, {total_findings} findings");
    if total_findings > 0 {
        std::process::exit(1);
    }
    Ok(())
}
