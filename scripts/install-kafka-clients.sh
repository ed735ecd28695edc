#!/usr/bin/env bash
#! scripts/install-kafka-clients.sh — installs the unmodified Kafka clients that
#! tests/tests/kafka_clients.rs and kafka_admin.rs drive against insync's Kafka listener: `kcat` (Debian
#! package, librdkafka inside) and, in a virtualenv at target/kafka-clients-venv,
#! `confluent-kafka` (PyPI wheel that bundles its own librdkafka) and `kafka-python`
#! (pure Python). Idempotent and quick when everything is there: each step checks first.
#! Exits non-zero when a client cannot be installed; the tests that need it then fail and say why.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
venv="${INSYNC_KAFKA_VENV:-$PWD/target/kafka-clients-venv}"
status=0

if command -v kcat >/dev/null 2>&1; then
  echo "kcat: $(command -v kcat)"
elif command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "kcat: installing the Debian package"
  # apt-get update once: a fresh machine's package lists may be empty or stale.
  if apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kcat >/dev/null; then
    echo "kcat: $(command -v kcat)"
  else
    echo "kcat: could not be installed with apt-get (the kcat tests will fail)" >&2
    status=1
  fi
else
  echo "kcat: not installed and apt-get (as root) is unavailable (the kcat tests will fail)" >&2
  status=1
fi

python=""
for candidate in python3 python; do
  if command -v "$candidate" >/dev/null 2>&1; then python="$candidate"; break; fi
done
if [ -z "$python" ]; then
  echo "python3 not found (the Python client tests will fail)" >&2
  exit 1
fi
if "$venv/bin/python" -c 'import confluent_kafka, kafka' >/dev/null 2>&1; then
  echo "python clients: $venv ($("$venv/bin/python" -c 'import confluent_kafka, kafka; print("confluent-kafka", confluent_kafka.version(), "librdkafka", confluent_kafka.libversion()[0], "kafka-python", kafka.__version__)'))"
  exit "$status"
fi
if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv" || { echo "cannot create a virtualenv at $venv (the Python client tests will fail)" >&2; exit 1; }
fi
if "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "confluent-kafka>=2.3" "kafka-python>=2.0.2"; then
  echo "python clients: $venv ($("$venv/bin/python" -c 'import confluent_kafka, kafka; print("confluent-kafka", confluent_kafka.version(), "librdkafka", confluent_kafka.libversion()[0], "kafka-python", kafka.__version__)'))"
else
  echo "pip could not install confluent-kafka / kafka-python into $venv (the Python client tests will fail)" >&2
  status=1
fi
exit "$status"
