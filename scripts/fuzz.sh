#!/usr/bin/env bash
#! scripts/fuzz.sh [MINUTES] [SEED] — a fuzzing campaign on stable Rust over every decoder
#! that reads untrusted bytes (crates/fuzz: Kafka request frames, record batches, segment and
#! index recovery, checkpoint files, gRPC messages). MINUTES (default 10) are split evenly
#! between the targets. Prints each target's iterations, its largest allocation for one
#! input, and its findings; findings are written to target/fuzz-findings/<target>/ and the
#! script exits 1 if there are any. Copy a finding into crates/fuzz/regressions/<target>/
#! once fixed: CI replays every file there.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if ! command -v cargo >/dev/null 2>&1 && [ -f "$HOME/.cargo/env" ]; then . "$HOME/.cargo/env"; fi
minutes="${1:-10}"
seed="${2:-$(date +%s)}"
cargo build --release -p insync-fuzz --bin insync-fuzz
targets=$(target/release/insync-fuzz --list | awk '{print $1}')
count=$(echo "$targets" | wc -l)
seconds=$(( minutes * 60 / count ))
echo "fuzzing ${count} targets for ${seconds} s each (seed ${seed})"
status=0
for t in $targets; do
  target/release/insync-fuzz --target "$t" --seconds "$seconds" --seed "$seed" | grep -v '^total:' || status=1
done
exit "$status"
