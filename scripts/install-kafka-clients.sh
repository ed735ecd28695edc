#!/usr/bin/env bash
#! scripts/install-kafka-clients.sh — installs the unmodified Kafka clients that the tests in
#! tests/tests/kafka_clients.rs, kafka_admin.rs and kafka_client_matrix.rs drive against
#! insync's Kafka listener:
#!  - Debian packages: `kcat` (librdkafka inside), Go (`golang-go`) and the sarama Go client
#!    (`golang-github-shopify-sarama-dev`, its codecs' libraries with it);
#!  - in a virtualenv at target/kafka-clients-venv: `confluent-kafka` (bundles librdkafka and
#!    every codec), `kafka-python` and `aiokafka` with the codec libraries each needs for
#!    gzip/snappy/lz4/zstd (`lz4`, `zstandard`, `cramjam`/`python-snappy`);
#!  - target/kafka-clients-go/sarama-matrix, built offline from tests/clients/go/matrix.go
#!    against Debian's Go sources in GOPATH mode (no module proxy is needed or used).
#! Idempotent and quick when everything is there: each step checks first.
#! Exits non-zero when a client cannot be installed; the tests that need it then fail and say why.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
venv="${INSYNC_KAFKA_VENV:-$PWD/target/kafka-clients-venv}"
go_out="$PWD/target/kafka-clients-go"
status=0

# --- Debian packages --------------------------------------------------------------------
# What each package provides, checked before apt-get is ever called.
declare -A debian_check=(
  [kcat]="command -v kcat"
  [golang-go]="command -v go"
  [golang-github-shopify-sarama-dev]="test -d /usr/share/gocode/src/github.com/Shopify/sarama"
)
missing=()
for pkg in "${!debian_check[@]}"; do
  bash -c "${debian_check[$pkg]}" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "debian: installing ${missing[*]}"
    # apt-get update once: a fresh machine's package lists may be empty or stale.
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }; then
      echo "debian: apt-get could not install ${missing[*]} (the tests that need them will fail)" >&2
      status=1
    fi
  else
    echo "debian: ${missing[*]} missing and apt-get (as root) is unavailable (the tests that need them will fail)" >&2
    status=1
  fi
fi
command -v kcat >/dev/null 2>&1 && echo "kcat: $(command -v kcat)"

# --- the sarama matrix program -----------------------------------------------------------
# GOPATH mode against /usr/share/gocode, where Debian's golang-*-dev packages put their
# sources: the build reaches no network. Rebuilt only when the source is newer.
go_src="$PWD/tests/clients/go/matrix.go"
go_bin="$go_out/sarama-matrix"
if command -v go >/dev/null 2>&1 && [ -f "$go_src" ]; then
  if [ ! -x "$go_bin" ] || [ "$go_src" -nt "$go_bin" ]; then
    mkdir -p "$go_out"
    if GO111MODULE=off GOPATH=/usr/share/gocode GOCACHE="$go_out/cache" GOFLAGS= GOPROXY=off \
      CGO_CFLAGS="-O2 -Wno-deprecated-declarations" \
      go build -o "$go_bin" "$go_src"; then
      echo "sarama: built $go_bin"
    else
      echo "sarama: go build of $go_src failed (the sarama tests will fail)" >&2
      rm -f "$go_bin" # never leave a program built from older source to be tested
      status=1
    fi
  else
    echo "sarama: $go_bin"
  fi
else
  echo "sarama: go or $go_src missing (the sarama tests will fail)" >&2
  status=1
fi

# --- Python clients in a virtualenv -------------------------------------------------------
python=""
for candidate in python3 python; do
  if command -v "$candidate" >/dev/null 2>&1; then python="$candidate"; break; fi
done
if [ -z "$python" ]; then
  echo "python3 not found (the Python client tests will fail)" >&2
  exit 1
fi
# Every module the Python clients need, codecs included (kafka-python and aiokafka find their
# codecs at run time and refuse a codec whose library is missing).
imports='import confluent_kafka, kafka, aiokafka, lz4, zstandard, cramjam'
describe='import confluent_kafka, kafka, aiokafka; print("confluent-kafka", confluent_kafka.version(), "librdkafka", confluent_kafka.libversion()[0], "kafka-python", kafka.__version__, "aiokafka", aiokafka.__version__)'
if "$venv/bin/python" -c "$imports" >/dev/null 2>&1; then
  echo "python clients: $venv ($("$venv/bin/python" -c "$describe"))"
  exit "$status"
fi
if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv" || { echo "cannot create a virtualenv at $venv (the Python client tests will fail)" >&2; exit 1; }
fi
if "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
  "confluent-kafka>=2.3" "kafka-python>=2.0.2" "aiokafka>=0.10" lz4 zstandard cramjam python-snappy; then
  echo "python clients: $venv ($("$venv/bin/python" -c "$describe"))"
else
  echo "pip could not install the Python Kafka clients into $venv (the Python client tests will fail)" >&2
  status=1
fi
exit "$status"
