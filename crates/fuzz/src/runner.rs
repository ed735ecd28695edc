//! Runs a target over mutants of its seeds for a number of iterations or a time, catching
//! panics and measuring what each input made the decoder allocate.
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::mutate::mutate;
use crate::targets::{files_in, workspace_root, Target};

/// Allocation allowed for any input regardless of its size (error messages, a temporary
/// directory, a log's fixed-size buffers): small, so that an input of a few hundred bytes
/// allocating a thousand times its size is a finding.
const FIXED_ALLOWANCE_BYTES: usize = 64 * 1024;

/// How long a campaign runs.
#[derive(Debug, Clone, Copy)]
pub enum Budget {
    Iterations(u64),
    Time(Duration),
}

/// An input that panicked or allocated too much.
#[derive(Debug, Clone)]
pub struct Finding {
    pub input: Vec<u8>,
    pub what: String,
}

#[derive(Debug)]
pub struct Report {
    pub target: &'static str,
    pub iterations: u64,
    pub elapsed: Duration,
    /// The most bytes any one input made the target allocate, and that input's size.
    pub max_alloc_bytes: usize,
    pub max_alloc_input_len: usize,
    pub findings: Vec<Finding>,
}

/// The inputs found before, replayed first in every campaign (`crates/fuzz/regressions/<target>/`).
pub fn regressions_dir(target: &Target) -> PathBuf {
    workspace_root().join("crates/fuzz/regressions").join(target.name)
}

/// `total_allocated` reads the global allocator's running total of bytes allocated.
pub fn run(target: &Target, budget: Budget, seed: u64, total_allocated: &dyn Fn() -> usize) -> Report {
    let mut pool: Vec<Vec<u8>> = (target.seeds)();
    pool.extend(files_in(&regressions_dir(target)).into_iter().map(|(_, bytes)| bytes));
    if pool.is_empty() {
        pool.push(Vec::new());
    }
    let started = Instant::now();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut report = Report {
        target: target.name,
        iterations: 0,
        elapsed: Duration::ZERO,
        max_alloc_bytes: 0,
        max_alloc_input_len: 0,
        findings: Vec::new(),
    };
    let previous_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let mut last = Vec::new();
    let originals = pool.len() as u64;
    loop {
        let done = match budget {
            Budget::Iterations(n) => report.iterations >= n.max(originals),
            Budget::Time(limit) => report.iterations >= originals && started.elapsed() >= limit,
        };
        if done {
            break;
        }
        // Every seed and regression as it is first, then mutants (sometimes of a mutant).
        let input = if report.iterations < originals {
            pool[report.iterations as usize].clone()
        } else {
            let base = if !last.is_empty() && rng.gen_bool(0.2) { &last } else { &pool[rng.gen_range(0..pool.len())] };
            let other = &pool[rng.gen_range(0..pool.len())];
            mutate(base, other, &mut rng)
        };
        check(target, &input, total_allocated, &mut report);
        last = input;
        report.iterations += 1;
    }
    std::panic::set_hook(previous_hook);
    report.elapsed = started.elapsed();
    report
}

fn check(target: &Target, input: &[u8], total_allocated: &dyn Fn() -> usize, report: &mut Report) {
    let before = total_allocated();
    let outcome = catch_unwind(AssertUnwindSafe(|| (target.run)(input)));
    let allocated = total_allocated().saturating_sub(before);
    if let Err(panic) = outcome {
        let what = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "a panic".into());
        report.findings.push(Finding { input: input.to_vec(), what: format!("panicked: {what}") });
        return;
    }
    if allocated > report.max_alloc_bytes {
        report.max_alloc_bytes = allocated;
        report.max_alloc_input_len = input.len();
    }
    if allocated.saturating_sub(FIXED_ALLOWANCE_BYTES) > target.alloc_per_byte.saturating_mul(input.len()) {
        report.findings.push(Finding {
            input: input.to_vec(),
            what: format!("allocated {allocated} bytes for a {}-byte input", input.len()),
        });
    }
}

/// A stable name for a finding's file.
pub fn finding_name(input: &[u8]) -> String {
    // FNV-1a: short and stable across runs and platforms.
    let hash = input.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3));
    format!("{hash:016x}.bin")
}
