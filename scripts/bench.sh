#!/usr/bin/env bash
# bench.sh — runs every benchmark under bench/ (each a Go program that prints its figures).
set -euo pipefail
cd "$(dirname "$0")/.."
shopt -s nullglob
benches=(bench/*/)
if [ ${#benches[@]} -eq 0 ]; then
  echo "bench: no benchmarks yet" >&2
  exit 0
fi
for dir in "${benches[@]}"; do
  echo "== ${dir%/}"
  go run "./${dir%/}"
done
