#!/usr/bin/env bash
# Side-by-side gateway benchmark: runs the shared harness (run.sh in $SHARED_BENCH, default
# ../shared/bench next to the checkout) with this gateway as the extra `--target`, started by run.sh itself
# (pinned to the SUT CPU, CPU accounted via `exec`). See bench/README.md and docs/performance.md.
#
#   bench/run_side_by_side.sh                    # passthrough, cached, cached-redis (3 rounds each)
#   bench/run_side_by_side.sh passthrough        # one variant: passthrough | features | cached |
#                                                #   cached-redis | cached-bypass
#   bench/run_side_by_side.sh cached -- --quick  # anything after `--` goes to run.sh
#
# Env (defaults in brackets):
#   SHARED_BENCH   the shared harness directory                  [<repo>/../shared/bench]
#   GATEWAY_BIN    the gateway executable                        [<repo>/.venv/bin/gateway]
#   GATEWAY_PORT   port the gateway listens on                   [8000]
#   SYSTEMS        comparison systems (run.sh --systems)         [direct,litellm,fastapi,starlette-aio]
#   REDIS_URL      Redis for the cached-redis variant            [a redis-server this script
#                  starts on a free port and stops at the end; never the machine's own]
#   WAIT_IDLE      run.sh --wait-idle seconds (0 = off)          [60]
#   RESULTS_COPY   also copy each report.txt here (empty = no)   [<repo>/bench/results]
#
# Variants (all: gateway with one worker, access log on, metrics, classifier on every request):
#   passthrough    policies/examples/passthrough.yaml, no cache
#   features       bench/policies/features.yaml: a team's virtual key (sent with --target-auth),
#                  and GATEWAY_CACHE_MAX_ENTRIES=0 so every request is a cache lookup that MISSES
#                  (key, lookup, store offered and dropped): every request-path feature on
#   production     bench/policies/production.yaml with GATEWAY_REDIS_URL: a team's key, limits and a
#                  budget held in Redis (one script call to admit, one to settle), difficulty
#                  routing between two backends, metrics, access log (issue 13's "every feature")
#   cached         bench/policies/cached-hit.yaml (cached.yaml + cache_sampled: true), in-process
#                  LRU: the harness sends one identical body, so every request after the first is
#                  a cache HIT (streams are replayed from the stored answer)
#   cached-redis   the same with GATEWAY_REDIS_URL=$REDIS_URL (Redis GET per request)
#   cached-bypass  policies/examples/cached.yaml as shipped: the harness body has temperature 0.2
#                  and sampled requests are not cached by default, so every request is a BYPASS
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SHARED_BENCH="${SHARED_BENCH:-$REPO/../shared/bench}"
GATEWAY_BIN="${GATEWAY_BIN:-$REPO/.venv/bin/gateway}"
GATEWAY_PORT="${GATEWAY_PORT:-8000}"
SYSTEMS="${SYSTEMS:-direct,litellm,fastapi,starlette-aio}"
REDIS_URL="${REDIS_URL:-}"
own_redis() {
  # A private redis-server for the cached-redis and production variants: a Redis on this
  # machine may hold someone else's data, and the benchmark writes to it. Pinned to CPU 0
  # with the upstream and the load (in production Redis has its own host), so the core under
  # test runs the gateway alone.
  local port dir
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  dir=$(mktemp -d /tmp/bench-redis.XXXXXX)
  taskset -c 0 redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$dir" \
    --daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/redis.log"
  trap 'kill "$(cat '"$dir"'/redis.pid)" 2>/dev/null; rm -rf '"$dir" EXIT
  for _ in $(seq 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
  REDIS_URL="redis://127.0.0.1:$port/0"
}
WAIT_IDLE="${WAIT_IDLE:-60}"
RESULTS_COPY="${RESULTS_COPY-$REPO/bench/results}"
BENCH_WORK="${BENCH_WORK:-/tmp/bench}"

variants=()
while (($#)); do
  case "$1" in
    passthrough|features|production|cached|cached-redis|cached-bypass) variants+=("$1") ;;
    all) variants+=(passthrough features cached cached-redis) ;;
    --) shift; break ;;
    -h|--help) sed -n '2,28p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "run_side_by_side.sh: unknown variant '$1' (passthrough|features|production|cached|cached-redis|cached-bypass|all)" >&2; exit 2 ;;
  esac
  shift
done
((${#variants[@]})) || variants=(passthrough features cached cached-redis)
extra=("$@")   # passed through to run.sh, e.g. --quick or --rounds 5

[[ -x "$SHARED_BENCH/run.sh" ]] || { echo "no run.sh in SHARED_BENCH=$SHARED_BENCH" >&2; exit 2; }
[[ -x "$GATEWAY_BIN" ]] || { echo "no gateway at GATEWAY_BIN=$GATEWAY_BIN" >&2; exit 2; }

"$SHARED_BENCH/setup.sh"   # idempotent; run.sh gets --no-setup below

if [[ -z $REDIS_URL && " ${variants[*]} " =~ " "(cached-redis|production)" " ]]; then
  own_redis
fi

BENCH_TEAM_KEY="sk-bench-$(date +%s)"
for v in "${variants[@]}"; do
  env="" auth=()
  case "$v" in
    passthrough)   policy=policies/examples/passthrough.yaml redis="" name=gateway ;;
    features)      policy=bench/policies/features.yaml redis="" name=gateway-features
                   env="GATEWAY_CACHE_MAX_ENTRIES=0 BENCH_TEAM_KEY=$BENCH_TEAM_KEY"
                   auth=(--target-auth "$BENCH_TEAM_KEY") ;;
    production)    policy=bench/policies/production.yaml redis="$REDIS_URL" name=gateway-production
                   env="BENCH_TEAM_KEY=$BENCH_TEAM_KEY"
                   auth=(--target-auth "$BENCH_TEAM_KEY") ;;
    cached)        policy=bench/policies/cached-hit.yaml redis="" name=gateway-cache-mem ;;
    cached-redis)  policy=bench/policies/cached-hit.yaml redis="$REDIS_URL" name=gateway-cache-redis ;;
    cached-bypass) policy=policies/examples/cached.yaml redis="" name=gateway-cache-bypass ;;
  esac
  # $BENCH_UPSTREAM_BASE (http://127.0.0.1:18080/v1) is exported by run.sh to the target
  # command; single quotes keep it unexpanded here. GATEWAY_REDIS_URL is always set
  # explicitly (empty = in-process cache) so a value from the caller's shell cannot leak in.
  cmd="UPSTREAM_BASE_URL=\$BENCH_UPSTREAM_BASE GATEWAY_REDIS_URL=$redis $env exec $GATEWAY_BIN serve"
  cmd+=" --policy $REPO/$policy --port $GATEWAY_PORT --workers 1"
  out="$BENCH_WORK/results/$(date +%Y%m%d-%H%M%S)-$v"
  args=(--no-setup --systems "$SYSTEMS" --out "$out"
        --target "http://127.0.0.1:$GATEWAY_PORT" --target-name "$name" --target-cmd "$cmd"
        "${auth[@]}")
  ((WAIT_IDLE > 0)) && args+=(--wait-idle "$WAIT_IDLE")
  # Which gateway code ran (read-only git: no index refresh).
  mkdir -p "$out"
  { echo "date: $(date -Is)"; echo "head: $(git -C "$REPO" rev-parse HEAD 2>/dev/null || echo n/a)"
    echo "dirty:"; GIT_OPTIONAL_LOCKS=0 git -C "$REPO" status --porcelain -- gateway policies 2>/dev/null
  } >"$out/gateway-git.txt"
  echo "== $v: $SHARED_BENCH/run.sh ${args[*]} ${extra[*]:-}"
  "$SHARED_BENCH/run.sh" "${args[@]}" "${extra[@]}"
  if [[ -n "$RESULTS_COPY" && -f "$out/report.txt" ]]; then
    mkdir -p "$RESULTS_COPY"
    cp "$out/report.txt" "$RESULTS_COPY/$(basename "$out").report.txt"
    cp "$out/env.txt" "$RESULTS_COPY/$(basename "$out").env.txt"
    cp "$out/gateway-git.txt" "$RESULTS_COPY/$(basename "$out").gateway-git.txt"
  fi
  echo "== $v: results in $out"
done
