#!/usr/bin/env bash
#! scripts/partition.sh — cut one container of the docker-compose cluster off the network and
#! heal it again (`docker network disconnect` / `connect`): the process keeps running, but
#! nothing reaches it and it reaches nothing — a network partition, not a crash. Watch the
#! ISR shrink (the controller fences the silent broker after broker.session.timeout.ms) and
#! grow back once the broker has caught up after `heal`.
#
# Usage:
#   scripts/partition.sh cut SERVICE      e.g. broker-2 (or N for broker-N)
#   scripts/partition.sh heal SERVICE
#   scripts/partition.sh status           which services are attached to the network
# Options (before the command): -p PROJECT   compose project name (default: compose's own,
#   i.e. $COMPOSE_PROJECT_NAME or the directory name), -f FILE   compose file.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
COMPOSE_ARGS=()

die() { echo "partition.sh: $*" >&2; exit 1; }

compose() {
  if command -v docker-compose >/dev/null 2>&1; then
    (cd "$ROOT" && docker-compose "${COMPOSE_ARGS[@]}" "$@")
  else
    (cd "$ROOT" && docker compose "${COMPOSE_ARGS[@]}" "$@")
  fi
}

service_name() {
  case "$1" in
    [0-9]*) echo "broker-$1" ;;
    *) echo "$1" ;;
  esac
}

container_of() {
  local id
  id=$(compose ps -q "$1" 2>/dev/null | head -n1)
  [ -n "$id" ] || die "no container for service '$1' (is the cluster up? try: docker-compose ps)"
  echo "$id"
}

# The project's default network, found by compose's labels (its name is <project>_default,
# but the labels hold even where the project name was normalised).
network_of() {
  local container="$1" project net
  project=$(docker inspect -f '{{index .Config.Labels "com.docker.compose.project"}}' "$container")
  net=$(docker network ls -q --filter "label=com.docker.compose.project=$project" \
    --filter "label=com.docker.compose.network=default" | head -n1)
  [ -n "$net" ] || die "no default network for compose project '$project'"
  docker network inspect -f '{{.Name}}' "$net"
}

attached() { # container network -> 0 if attached
  docker inspect -f '{{range $name, $_ := .NetworkSettings.Networks}}{{$name}} {{end}}' "$1" | tr ' ' '\n' | grep -qx "$2"
}

cmd_cut() {
  local service container net
  service=$(service_name "$1"); container=$(container_of "$service"); net=$(network_of "$container")
  if ! attached "$container" "$net"; then echo "$service is already cut off from $net"; return; fi
  docker network disconnect "$net" "$container"
  echo "$service cut off from $net (the process still runs; nothing reaches it)"
}

cmd_heal() {
  local service container net
  service=$(service_name "$1"); container=$(container_of "$service"); net=$(network_of "$container")
  if attached "$container" "$net"; then echo "$service is attached to $net"; return; fi
  # The service name is its DNS alias on the network: peers dial broker-N:9092 by it.
  docker network connect --alias "$service" "$net" "$container"
  echo "$service reconnected to $net"
}

cmd_status() {
  local service container net
  for service in $(compose ps --services); do
    container=$(compose ps -q "$service" | head -n1)
    [ -n "$container" ] || { echo "$service: no container"; continue; }
    net=$(network_of "$container")
    if attached "$container" "$net"; then echo "$service: attached to $net"; else echo "$service: CUT OFF from $net"; fi
  done
}

while [ $# -gt 0 ]; do
  case "$1" in
    -p|--project-name) COMPOSE_ARGS+=(-p "${2:?$1 needs a name}"); shift 2 ;;
    -f|--file) COMPOSE_ARGS+=(-f "${2:?$1 needs a file}"); shift 2 ;;
    *) break ;;
  esac
done

command -v docker >/dev/null 2>&1 || die "docker not found"
case "${1:-}" in
  cut) [ $# -eq 2 ] || die "usage: partition.sh cut SERVICE"; cmd_cut "$2" ;;
  heal) [ $# -eq 2 ] || die "usage: partition.sh heal SERVICE"; cmd_heal "$2" ;;
  status) cmd_status ;;
  ""|-h|--help|help) sed -n '2,14p' "$0" | sed 's/^#! \{0,1\}//; s/^# \{0,1\}//' ;;
  *) die "unknown command '$1' (try: cut, heal, status)" ;;
esac
